#![no_main]
//! TCP header and option parsing never panics.
use core::net::Ipv4Addr;
use libfuzzer_sys::fuzz_target;
use stack::wire::tcp::{TcpPacket, TcpRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = TcpPacket::new_checked(data) {
        let _ = p.verify_checksum(Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2));
        let _ = TcpRepr::parse(&p);
    }
});
