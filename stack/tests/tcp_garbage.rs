//! Random and mutated segments thrown at live connections and listeners: the layer must
//! not panic (debug builds check arithmetic overflow) and must keep working.

mod tcp_common;
use tcp_common::*;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use stack::sim::{TcpPair, ADDR_A, ADDR_B};
use stack::tcp::State;
use stack::time::Duration;
use stack::wire::tcp::{SackBlocks, SeqNumber, TcpRepr};

#[derive(Debug, Clone)]
struct Junk {
    flags: u16,
    seq_delta: i64,
    ack_delta: i64,
    window: u16,
    mss: Option<u16>,
    ws: Option<u8>,
    sack_perm: bool,
    sack: Vec<(i64, i64)>,
    ts: Option<(u32, u32)>,
    payload: usize,
    to_listener: bool,
    raw: Option<Vec<u8>>,
}

fn junk() -> impl Strategy<Value = Junk> {
    (
        (
            0u16..0x100,
            -70_000i64..70_000,
            -70_000i64..70_000,
            any::<u16>(),
        ),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..20),
            any::<bool>(),
        ),
        proptest::collection::vec((-70_000i64..70_000, -70_000i64..70_000), 0..4),
        proptest::option::of((any::<u32>(), any::<u32>())),
        (
            0usize..3000,
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
        ),
    )
        .prop_map(
            |(
                (flags, seq_delta, ack_delta, window),
                (mss, ws, sack_perm),
                sack,
                ts,
                (payload, to_listener, raw),
            )| Junk {
                flags,
                seq_delta,
                ack_delta,
                window,
                mss,
                ws,
                sack_perm,
                sack,
                ts,
                payload,
                to_listener,
                raw,
            },
        )
}

fn at(base: u32, d: i64) -> SeqNumber {
    SeqNumber(base.wrapping_add(d as u32))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, rng_seed: RngSeed::Fixed(77), failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn junk_never_panics(seed in any::<u64>(), junks in proptest::collection::vec(junk(), 1..40)) {
        let mut p = TcpPair::new(cfg(), lossless(), seed);
        let (_l, c, s) = establish(&mut p);
        p.a.send(c, &pattern(20_000, 1)).unwrap();
        p.b.send(s, &pattern(20_000, 2)).unwrap();
        for j in junks {
            p.run_for(Duration::from_millis(1));
            let info = match p.a.info(c) {
                Ok(i) => i,
                Err(_) => break,
            };
            let seg = match &j.raw {
                Some(raw) => raw.clone(),
                None => {
                    let mut sack = SackBlocks::default();
                    for &(l, r) in &j.sack {
                        sack.push(at(info.rcv_nxt, l), at(info.rcv_nxt, r));
                    }
                    let mut repr = TcpRepr {
                        src_port: p.a.local_addr(c).unwrap().port(),
                        dst_port: if j.to_listener { SERVER_PORT } else { SERVER_PORT + 1 },
                        seq: at(info.snd_nxt, j.seq_delta),
                        ack: at(info.rcv_nxt, j.ack_delta),
                        flags: j.flags,
                        window: j.window,
                        mss: j.mss,
                        window_scale: j.ws,
                        sack_permitted: j.sack_perm,
                        sack,
                        timestamps: j.ts,
                        payload_len: j.payload,
                    };
                    if repr.header_len() > 60 {
                        repr.sack = SackBlocks::default();
                    }
                    segment(&repr, &vec![0xee; j.payload])
                }
            };
            let now = p.now;
            p.b.receive(now, ADDR_A, ADDR_B, &seg);
            // And the mirror image at the client (ports swapped, so it hits a's socket).
            let mut mirror = seg.clone();
            if mirror.len() >= 4 && j.raw.is_none() {
                let (sp, dp) = (mirror[0..2].to_vec(), mirror[2..4].to_vec());
                mirror[0..2].copy_from_slice(&dp);
                mirror[2..4].copy_from_slice(&sp);
            }
            p.a.receive(now, ADDR_B, ADDR_A, &mirror);
        }
        p.run_for(secs(300));
        // Whatever happened, the layers still answer calls and can make a fresh connection.
        let st = p.b.state(s);
        prop_assert!(st.is_ok());
        let l2 = p.b.listen(TcpPair::addr_b(9999), 4).unwrap();
        let c2 = p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(9999)).unwrap();
        let limit = later(&p, secs(10));
        let mut s2 = None;
        let ok = p.run_until(limit, |p| {
            s2 = s2.or_else(|| p.b.accept(l2).ok());
            s2.is_some() && p.a.state(c2).unwrap() == State::Established
        });
        prop_assert!(ok, "fresh connection failed");
    }
}
