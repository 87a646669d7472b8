#![no_main]
//! ICMPv6 and ND parsing never panics; every parsed message re-emits to one that parses
//! to the same value. The first 32 bytes are the pseudo-header's addresses.
use core::net::Ipv6Addr;
use libfuzzer_sys::fuzz_target;
use stack::wire::{Icmpv6Packet, Icmpv6Repr};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let addr = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"));
    let (src, dst) = (addr(&data[..16]), addr(&data[16..32]));
    let Ok(p) = Icmpv6Packet::new_checked(&data[32..]) else {
        return;
    };
    for o in p.nd_options().flatten() {
        let _ = o.lladdr();
    }
    for verify in [true, false] {
        if let Ok(r) = Icmpv6Repr::parse(&p, src, dst, verify) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out, src, dst);
            let q = Icmpv6Packet::new_checked(&out[..]).expect("emitted ICMPv6 is long enough");
            assert!(q.verify_checksum(src, dst));
            assert_eq!(Icmpv6Repr::parse(&q, src, dst, true).expect("re-parse"), r);
        }
    }
});
