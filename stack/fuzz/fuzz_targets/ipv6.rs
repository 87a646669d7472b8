#![no_main]
//! IPv6 header parsing and the extension-header walk never panic, stay inside the
//! payload, and agree with each other.
use libfuzzer_sys::fuzz_target;
use stack::wire::ipv6_ext::{self, ExtHeaders, WalkLimits};
use stack::wire::{Ipv6Packet, Ipv6Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    let payload = p.payload();
    assert_eq!(p.packet_bytes().len(), 40 + payload.len());
    if let Ok(r) = Ipv6Repr::parse(&p) {
        assert_eq!(r.payload_len, payload.len());
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out);
        out[40..].copy_from_slice(payload);
        let q = Ipv6Packet::new_checked(&out[..]).expect("emitted IPv6 parses");
        assert_eq!(Ipv6Repr::parse(&q).expect("re-parse"), r);
    }
    for limits in [
        WalkLimits::DEFAULT,
        WalkLimits {
            max_headers: 2,
            max_bytes: 64,
        },
    ] {
        let walked = ipv6_ext::walk(p.next_header(), payload, limits);
        let mut headers = 0;
        let mut it = ExtHeaders::new(p.next_header(), payload, limits);
        for h in it.by_ref() {
            let Ok(h) = h else { break };
            headers += 1;
            assert!(h.offset + h.bytes.len() <= payload.len());
            for o in h.options().flatten() {
                assert!(
                    o.offset + 2 + o.data.len() <= h.offset + h.bytes.len() || o.data.is_empty()
                );
            }
            let _ = h.fragment();
        }
        assert!(headers <= limits.max_headers);
        match walked {
            Ok(c) => {
                assert!(c.upper_offset <= payload.len());
                assert_eq!(c.header_count, headers);
                assert_eq!((c.upper_protocol, c.upper_offset), it.upper());
            }
            Err(e) => {
                if let Some((code, pointer)) = e.param_problem(false) {
                    assert!(code <= 2);
                    assert!((pointer as usize) < 40 + payload.len());
                }
            }
        }
    }
});
