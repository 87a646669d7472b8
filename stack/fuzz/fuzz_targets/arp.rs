#![no_main]
//! ARP parsing never panics; what parses re-emits identically.
use libfuzzer_sys::fuzz_target;
use stack::wire::{ArpPacket, ArpRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ArpPacket::new_checked(data) {
        if let Ok(r) = ArpRepr::parse(&p) {
            let mut out = [0u8; 28];
            r.emit(&mut out);
            let q = ArpPacket::new_checked(&out[..]).expect("emitted ARP parses");
            assert_eq!(ArpRepr::parse(&q).expect("re-parse"), r);
        }
    }
});
