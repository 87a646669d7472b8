#![no_main]
//! UDP parsing never panics; parsed datagrams re-emit with a valid checksum.
use core::net::Ipv4Addr;
use libfuzzer_sys::fuzz_target;
use stack::wire::{UdpPacket, UdpRepr};

const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = UdpPacket::new_checked(data) {
        if let Ok(r) = UdpRepr::parse(&p, SRC, DST, false) {
            let payload = p.payload();
            let mut out = vec![0u8; 8 + payload.len()];
            r.emit(&mut out, SRC, DST, payload, true);
            let q = UdpPacket::new_checked(&out[..]).expect("emitted UDP parses");
            assert_eq!(UdpRepr::parse(&q, SRC, DST, true).expect("checksum verifies"), r);
            assert_eq!(q.payload(), payload);
        }
    }
});
