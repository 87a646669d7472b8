#![no_main]
//! MPTCP option parsing never panics, whether the bytes are one option or a segment's
//! whole TCP option list; every parsed option re-emits to bytes that parse to the same
//! value, of the length it claims.
use libfuzzer_sys::fuzz_target;
use stack::wire::mptcp::{mptcp_options, MptcpOption, MptcpRepr};

fn round_trip(r: &MptcpRepr) {
    let mut out = [0u8; 40];
    let n = r.emit(&mut out);
    assert_eq!(n, r.buffer_len());
    assert_eq!(out[1] as usize, n);
    let o = MptcpOption::new_checked(&out[..n]).expect("emitted option is well formed");
    assert_eq!(&MptcpRepr::parse(&o).expect("re-parse"), r);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = MptcpRepr::parse_bytes(data) {
        round_trip(&r);
    }
    for o in mptcp_options(data).flatten() {
        let _ = (o.subtype(), o.subtype_bits(), o.byte3(), o.dss_flags());
        if let Ok(r) = MptcpRepr::parse(&o) {
            round_trip(&r);
        }
    }
});
