#![no_main]
//! Ethernet II (and VLAN tag) parsing never panics; what parses re-emits identically.
use libfuzzer_sys::fuzz_target;
use stack::wire::{EthernetFrame, EthernetRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = EthernetFrame::new_checked(data) {
        let _ = (f.dst(), f.src(), f.ethertype(), f.vlan_id(), f.payload());
        if let Ok(r) = EthernetRepr::parse(&f) {
            let mut out = vec![0u8; r.header_len()];
            r.emit(&mut out);
            let g = EthernetFrame::new_checked(&out[..]).expect("emitted header parses");
            assert_eq!(EthernetRepr::parse(&g).expect("re-parse"), r);
        }
    }
});
