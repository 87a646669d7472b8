#![no_main]
//! IPv4 parsing (options, fragments, checksum) never panics.
use libfuzzer_sys::fuzz_target;
use stack::wire::{Ipv4Packet, Ipv4Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = (p.options(), p.payload(), p.packet_bytes(), p.verify_checksum());
        for verify in [true, false] {
            if let Ok(r) = Ipv4Repr::parse(&p, verify) {
                assert_eq!(r.payload_len, p.payload().len());
            }
        }
    }
});
