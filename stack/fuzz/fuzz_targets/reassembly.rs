#![no_main]
//! The IPv6 reassembly buffer fed arbitrary fragments: never panics, stays within its
//! limits, and every datagram it returns holds the bytes its fragments carried.
//!
//! Input: records of 6 bytes — ident (1, of 4 possible), offset (2, in 8-byte units),
//! length (1), flags (1: bit 0 more fragments, bit 1 corrupt the bytes, bits 2..7 time
//! step in seconds), next header (1). A fragment's byte at datagram position i is
//! f(ident, i) unless corrupted, so a correct datagram is known without a model.
use core::net::Ipv6Addr;
use libfuzzer_sys::fuzz_target;
use stack::iface::reassembly::{FragmentKey, Reassembler, ReassemblyConfig};
use stack::time::Instant;
use stack::wire::FragmentRepr;

fn byte(ident: u32, i: usize) -> u8 {
    (i as u32).wrapping_mul(31).wrapping_add(ident * 7) as u8
}

fuzz_target!(|data: &[u8]| {
    let config = ReassemblyConfig {
        max_datagrams: 3,
        max_total_bytes: 4096,
        max_fragments: 16,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    let mut now = Instant::ZERO;
    let src: Ipv6Addr = "fd77::1".parse().unwrap();
    let dst: Ipv6Addr = "fd77::2".parse().unwrap();
    let mut corrupted = [false; 4];
    for rec in data.chunks_exact(6) {
        let ident = (rec[0] % 4) as u32;
        let offset = u16::from_be_bytes([rec[1], rec[2]]) & 0x1fff;
        let len = rec[3] as usize;
        let (more, corrupt) = (rec[4] & 1 != 0, rec[4] & 2 != 0);
        now = Instant::from_micros(now.micros() + (rec[4] >> 2) as u64 * 1_000_000);
        let frag = FragmentRepr {
            next_header: rec[5],
            offset: offset * 8,
            more_fragments: more,
            ident,
        };
        let start = offset as usize * 8;
        let bytes: Vec<u8> = (start..start + len)
            .map(|i| {
                if corrupt {
                    !byte(ident, i)
                } else {
                    byte(ident, i)
                }
            })
            .collect();
        let key = FragmentKey { src, dst, ident };
        let out = r.insert(now, key, &frag, &bytes);
        if frag.is_atomic() {
            // Passed through whole, apart from any datagram in progress.
            let d = out
                .expect("atomic fragments are never dropped")
                .expect("whole");
            assert_eq!((d.key, &d.payload), (key, &bytes));
            continue;
        }
        // A datagram with a corrupted fragment in it gives no byte check.
        corrupted[ident as usize] |= corrupt && out.is_ok();
        if let Ok(Some(d)) = out {
            assert_eq!(d.key, key);
            if !corrupted[ident as usize] {
                for (i, &b) in d.payload.iter().enumerate() {
                    assert_eq!(b, byte(ident, i), "byte {i} of datagram {ident}");
                }
            }
            corrupted[ident as usize] = false;
        }
        assert!(r.in_progress() <= config.max_datagrams);
        assert!(r.held_bytes() <= config.max_total_bytes);
    }
    r.expire(Instant::from_micros(now.micros() + 61_000_000));
    assert_eq!((r.in_progress(), r.held_bytes()), (0, 0));
});
