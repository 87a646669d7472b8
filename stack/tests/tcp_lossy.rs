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

/// An IP layer that records each packet's source port and payload length, then puts
/// it on the link as the simulator's own does.
struct Recording<'a> {
    tx: stack::sim::SimIpTx<'a>,
    sent: Vec<(u16, usize)>,
}

impl stack::ip_tx::IpTx for Recording<'_> {
    fn max_segment(&self, dst: std::net::IpAddr) -> usize {
        self.tx.max_segment(dst)
    }
    fn send(
        &mut self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        proto: stack::ip_tx::IpProtocol,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        let mut rec = (0, 0);
        let ok = self.tx.send(src, dst, proto, len, &mut |seg: &mut [u8]| {
            fill(seg);
            let header = (seg[12] >> 4) as usize * 4;
            rec = (u16::from_be_bytes([seg[0], seg[1]]), seg.len() - header);
        });
        if ok {
            self.sent.push(rec);
        }
        ok
    }
}

/// One dispatch of `p.a`, recorded.
fn dispatch_a(p: &mut TcpPair) -> Vec<(u16, usize)> {
    let now = p.now;
    let mut rec = Recording {
        tx: stack::sim::SimIpTx {
            link: &mut p.a_to_b,
            now,
            budget: None,
        },
        sent: Vec::new(),
    };
    p.a.dispatch(now, &mut rec);
    rec.sent
}

#[test]
fn a_connection_sends_one_burst_per_dispatch_then_yields_to_the_others() {
    let burst = 4 * 1448;
    let c = TcpConfig {
        tx_burst: burst as u32,
        ..cfg()
    };
    let mut p = TcpPair::new(c, lossless(), 5);
    let (l, big, big_server) = establish(&mut p);
    let small =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    let limit = later(&p, secs(1));
    assert!(p.run_until(limit, |p| {
        let _ = p.b.accept(l);
        p.a.state(small) == Ok(stack::tcp::State::Established)
    }));
    let big_port = p.a.local_addr(big).unwrap().port();
    let small_port = p.a.local_addr(small).unwrap().port();
    // Grow the congestion window past a burst, and let everything be acknowledged.
    let warm = pattern(40_000, 9);
    let mut sent = 0;
    let mut got = Vec::new();
    let limit = later(&p, secs(10));
    assert!(p.run_until(limit, |p| {
        if let Ok(n) = p.a.send(big, &warm[sent..]) {
            sent += n;
        }
        read_all(&mut p.b, big_server, &mut got).unwrap();
        got.len() == warm.len() && p.a.send_queued(big) == Ok(0)
    }));
    assert_eq!(got, warm);
    assert!(p.a.info(big).unwrap().cwnd as usize > 2 * burst);
    let data = pattern(60_000, 3);
    assert_eq!(p.a.send(big, &data), Ok(data.len()));
    assert_eq!(p.a.send(small, b"hello"), Ok(5));
    let first = dispatch_a(&mut p);
    let bytes = |sent: &[(u16, usize)], port| -> usize {
        sent.iter().filter(|s| s.0 == port).map(|s| s.1).sum()
    };
    // A burst of whole segments from the big sender, then the small one's bytes.
    assert_eq!(bytes(&first, big_port), burst, "{first:?}");
    assert_eq!(bytes(&first, small_port), 5, "{first:?}");
    assert_eq!(first.last().map(|s| s.0), Some(small_port), "{first:?}");
    // More is due at once, and the next dispatch sends the next burst.
    assert_eq!(p.a.poll_at(), Some(p.now));
    let second = dispatch_a(&mut p);
    assert_eq!(bytes(&second, big_port), burst, "{second:?}");
    assert_eq!(bytes(&second, small_port), 0, "{second:?}");
    // The rest arrives intact.
    let mut got = Vec::new();
    let limit = later(&p, secs(10));
    assert!(p.run_until(limit, |p| {
        read_all(&mut p.b, big_server, &mut got).unwrap();
        got.len() == data.len()
    }));
    assert_eq!(got, data);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, rng_seed: RngSeed::Fixed(2323), failure_persistence: None, .. ProptestConfig::default() })]
    /// Bursts from one byte (one segment per dispatch) up: the rest of what is due
    /// always goes on later dispatches, byte-exact under loss, reordering and
    /// duplication.
    #[test]
    fn byte_exact_under_loss_with_any_burst(seed in any::<u64>(), burst in 1u32..100_000,
                                            a_len in 0usize..120_000, b_len in 0usize..120_000) {
        let c = TcpConfig { tx_burst: burst, ..cfg() };
        run(seed, c, LinkConfig::lossy(0.05), a_len, b_len);
    }
}
