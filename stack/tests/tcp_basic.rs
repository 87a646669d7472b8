//! Handshake, data, close on a clean simulated link.

mod tcp_common;
use tcp_common::*;

use stack::sim::TcpPair;
use stack::tcp::State;

#[test]
fn handshake_transfer_and_close() {
    let mut p = TcpPair::new(cfg(), lossless(), 1);
    let (_l, c, s) = establish(&mut p);
    let info = p.a.info(c).unwrap();
    assert!(info.timestamps && info.sack);
    assert!(info.snd_wscale.is_some());
    let a_data = pattern(300_000, 1);
    let b_data = pattern(200_000, 2);
    let (a_got, b_got) = exchange(&mut p, c, s, &a_data, &b_data, secs(30));
    assert_eq!(b_got, a_data);
    assert_eq!(a_got, b_data);
    // Both shut down writing and read EOF: one side is in TIME-WAIT eventually.
    p.run_for(secs(1));
    let sa = p.a.state(c).unwrap();
    let sb = p.b.state(s).unwrap();
    assert!(
        matches!(
            (sa, sb),
            (State::TimeWait, State::Closed)
                | (State::Closed, State::TimeWait)
                | (State::TimeWait, State::TimeWait)
        ),
        "{sa:?} {sb:?}"
    );
    assert_eq!(p.a.stats().retransmits, 0);
}
