//! Byte-exact transfers both ways under loss, reordering and duplication, over many
//! seeds (proptest), with CUBIC and NewReno, with and without SACK and timestamps.

mod tcp_common;
use tcp_common::*;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use stack::sim::{LinkConfig, TcpPair};
use stack::tcp::{CongestionAlgorithm, TcpConfig};

fn run(seed: u64, cfg: TcpConfig, link: LinkConfig, a_len: usize, b_len: usize) -> TcpPair {
    let mut p = TcpPair::new(cfg, link, seed);
    let (_l, c, s) = establish(&mut p);
    let a_data = pattern(a_len, seed as u8);
    let b_data = pattern(b_len, !(seed as u8));
    let (a_got, b_got) = exchange(&mut p, c, s, &a_data, &b_data, secs(600));
    assert!(b_got == a_data, "a->b data differs (seed {seed})");
    assert!(a_got == b_data, "b->a data differs (seed {seed})");
    p
}

#[test]
fn five_percent_loss_with_sack_recovers_by_fast_retransmit() {
    let p = run(7, cfg(), LinkConfig::lossy(0.05), 400_000, 400_000);
    let st = p.a.stats();
    assert!(st.retransmits > 0 && st.fast_retransmits > 0, "{st:?}");
    assert!(
        p.a_to_b.stats.lost > 0 && p.a_to_b.stats.reordered > 0 && p.a_to_b.stats.duplicated > 0
    );
}

#[test]
fn newreno_without_sack_or_timestamps() {
    let c = TcpConfig {
        sack: false,
        timestamps: false,
        congestion: CongestionAlgorithm::NewReno,
        ..cfg()
    };
    let p = run(11, c, LinkConfig::lossy(0.05), 200_000, 200_000);
    assert!(p.a.stats().fast_retransmits > 0);
}

#[test]
fn heavy_loss_still_completes() {
    run(3, cfg(), LinkConfig::lossy(0.2), 50_000, 50_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: RngSeed::Fixed(24325), failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn byte_exact_both_ways_under_loss(seed in any::<u64>(), a_len in 0usize..150_000, b_len in 0usize..150_000,
                                        sack in any::<bool>(), ts in any::<bool>(), reno in any::<bool>()) {
        let c = TcpConfig {
            sack,
            timestamps: ts,
            congestion: if reno { CongestionAlgorithm::NewReno } else { CongestionAlgorithm::Cubic },
            ..cfg()
        };
        run(seed, c, LinkConfig::lossy(0.05), a_len, b_len);
    }
}

#[test]
fn a_device_that_refuses_packets_only_slows_things_down() {
    // Every dispatch may send at most 2 packets on each side (a full TX ring): the
    // rest must wait in the stack and go out on later dispatches, byte-exact.
    let mut p = TcpPair::new(cfg(), LinkConfig::lossy(0.02), 31);
    p.budget = [Some(2), Some(2)];
    let (_l, c, s) = establish(&mut p);
    let a_data = pattern(200_000, 1);
    let b_data = pattern(150_000, 2);
    let (x, y) = exchange(&mut p, c, s, &a_data, &b_data, secs(600));
    assert!(y == a_data && x == b_data);
    assert!(p.a.stats().tx_blocked > 0 && p.b.stats().tx_blocked > 0);
    // Connection-less answers (RSTs) queue up the same way.
    p.a_to_b.cfg.loss = 0.0;
    p.b_to_a.cfg.loss = 0.0;
    p.budget = [None, Some(0)];
    let refused: Vec<_> = (1..=5)
        .map(|port| {
            p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(port))
                .unwrap()
        })
        .collect();
    p.run_for(stack::time::Duration::from_millis(50));
    assert_eq!(p.b.stats().resets_sent, 0);
    assert!(p.b.stats().tx_blocked > 0);
    p.budget = [None, None];
    p.run_for(stack::time::Duration::from_millis(50));
    assert_eq!(p.b.stats().resets_sent, 5);
    for h in refused {
        assert_eq!(
            p.a.take_error(h).unwrap(),
            Some(stack::error::Error::ConnectionRefused)
        );
    }
}
