#![no_main]
//! ICMP parsing never panics; parsed echo messages re-emit to the same bytes' meaning.
use libfuzzer_sys::fuzz_target;
use stack::wire::{IcmpPacket, IcmpRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = IcmpPacket::new_checked(data) {
        if let Ok(r) = IcmpRepr::parse(&p, true) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out);
            let q = IcmpPacket::new_checked(&out[..]).expect("emitted ICMP parses");
            assert_eq!(IcmpRepr::parse(&q, true).expect("re-parse"), r);
        }
        let _ = IcmpRepr::parse(&p, false);
    }
});
