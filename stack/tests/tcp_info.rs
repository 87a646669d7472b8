//! TCP_INFO: what `TcpLayer::tcp_info` reports against what the simulated link did.

mod tcp_common;
use tcp_common::*;

use stack::sim::{LinkConfig, TcpPair};
use stack::tcp::{CongestionState, State};
use stack::time::Duration;

#[test]
fn a_lossless_transfer_reports_options_rtt_and_byte_counts() {
    let link = LinkConfig {
        delay: Duration::from_millis(2),
        ..LinkConfig::default()
    };
    let mut p = TcpPair::new(cfg(), link, 5);
    let (_l, c, s) = establish(&mut p);
    let hello = p.a.tcp_info(c).unwrap();
    assert_eq!(hello.state, State::Established);
    assert!(hello.timestamps && hello.sack);
    assert!(hello.snd_wscale.is_some() && hello.rcv_wscale.is_some());
    assert_eq!(hello.bytes_acked, 1, "the SYN, as Linux counts it");
    assert_eq!(p.b.tcp_info(s).unwrap().bytes_acked, 0);
    assert_eq!(hello.bytes_received, 0);
    // 1500-byte MTU: 1460 advertised, 12 bytes of timestamps on every segment.
    assert_eq!(
        (hello.snd_mss, hello.advmss, hello.pmtu),
        (1448, 1448, 1500)
    );

    let a_data = pattern(300_000, 1);
    let b_data = pattern(20_000, 2);
    let (a_got, b_got) = exchange(&mut p, c, s, &a_data, &b_data, secs(60));
    assert!(a_got == b_data && b_got == a_data);
    p.run_for(Duration::from_millis(100)); // the last ACKs
    let ia = p.a.tcp_info(c).unwrap();
    let ib = p.b.tcp_info(s).unwrap();
    // Data, the SYN and the FIN acknowledged; data and the FIN received.
    assert_eq!(ia.bytes_acked, a_data.len() as u64 + 2);
    // The server's SYN-ACK is not counted (Linux counts the SYN on the opening side).
    assert_eq!(ib.bytes_acked, b_data.len() as u64 + 1);
    assert_eq!(ib.bytes_received, a_data.len() as u64 + 1);
    assert_eq!(ia.bytes_received, b_data.len() as u64 + 1);
    assert_eq!(ia.bytes_sent, a_data.len() as u64);
    assert_eq!(
        (ia.total_retrans, ia.bytes_retrans, ia.total_rto),
        (0, 0, 0)
    );
    assert_eq!(ia.ca_state, CongestionState::Open);
    // Nothing lost, duplicated or reordered: each side got what the other sent.
    assert_eq!(ia.segs_out, ib.segs_in);
    assert_eq!(ib.segs_out, ia.segs_in);
    assert_eq!(ia.data_segs_out, ib.data_segs_in);
    assert!(ia.data_segs_out as usize >= a_data.len() / 1448);
    assert_eq!(ib.rcv_mss, 1448, "the largest segment a sent");
    // The link's round trip is 4 ms; the estimate and the minimum see it.
    let rtt = ia.srtt.micros();
    assert!((4_000..=4_800).contains(&rtt), "srtt {rtt} us");
    assert!((4_000..=4_800).contains(&ia.min_rtt.micros()));
    assert!(ia.delivery_rate > 0 && ia.pacing_rate > 0);
    assert_eq!((ia.unacked, ia.notsent_bytes), (0, 0));
    assert!(ia.busy_time.micros() > 0);
}

#[test]
fn total_retrans_is_the_retransmission_counter_of_the_connection() {
    let mut p = TcpPair::new(cfg(), LinkConfig::lossy(0.05), 9);
    let (_l, c, s) = establish(&mut p);
    let a_data = pattern(400_000, 3);
    let b_data = pattern(200_000, 4);
    let (a_got, b_got) = exchange(&mut p, c, s, &a_data, &b_data, secs(600));
    assert!(a_got == b_data && b_got == a_data);
    p.run_for(secs(5)); // the last ACKs and retransmissions
    let ia = p.a.tcp_info(c).unwrap();
    let ib = p.b.tcp_info(s).unwrap();
    assert!(ia.total_retrans > 0 && ib.total_retrans > 0);
    assert_eq!(ia.total_retrans as u64, p.a.stats().retransmits);
    assert_eq!(ib.total_retrans as u64, p.b.stats().retransmits);
    assert!(ia.bytes_retrans > 0);
    // A retransmission that runs past what was sent before counts whole (as in Linux).
    let (sent, len) = (ia.bytes_sent, a_data.len() as u64);
    assert!(sent > len && sent <= len + ia.bytes_retrans, "{ia:?}");
    assert_eq!(ib.bytes_received, a_data.len() as u64 + 1);
    assert!(ia.rcv_ooopack + ib.rcv_ooopack > 0);
}

#[test]
fn defer_accept_waits_for_data_or_the_deadline() {
    use stack::tcp::SocketOptions;
    let mut p = TcpPair::new(cfg(), LinkConfig::default(), 12);
    let l = p.b.listen(TcpPair::addr_b(SERVER_PORT), 8).unwrap();
    let deferred = SocketOptions {
        defer_accept: Some(secs(5)),
        ..p.b.options(l).unwrap()
    };
    p.b.set_options(l, deferred).unwrap();
    // A client that sends at once is accepted with its data there.
    let c1 =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.a.state(c1).unwrap(), State::Established);
    assert!(p.b.accept(l).is_err(), "no data yet: not accepted");
    p.a.send(c1, b"GET /").unwrap();
    p.run_for(Duration::from_millis(50));
    let s1 = p.b.accept(l).expect("accepted once data came");
    assert_eq!(p.b.recv_queued(s1).unwrap(), 5);
    // A silent client is accepted when the deferral ends.
    let c2 =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    p.run_for(secs(4));
    assert_eq!(p.a.state(c2).unwrap(), State::Established);
    assert!(p.b.accept(l).is_err());
    p.run_for(secs(2));
    let s2 = p.b.accept(l).expect("accepted after the deferral");
    assert_eq!(p.b.recv_queued(s2).unwrap(), 0);
}

#[test]
fn user_timeout_ends_a_connection_whose_data_is_never_acknowledged() {
    use stack::tcp::SocketOptions;
    let mut p = TcpPair::new(cfg(), LinkConfig::default(), 13);
    let (_l, c, _s) = establish(&mut p);
    let o = SocketOptions {
        user_timeout: Some(secs(3)),
        ..p.a.options(c).unwrap()
    };
    p.a.set_options(c, o).unwrap();
    cut(&mut p, true);
    let sent_at = p.now;
    p.a.send(c, &pattern(1000, 1)).unwrap();
    let limit = later(&p, secs(60));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::Closed));
    let took = p.now.saturating_since(sent_at);
    // Without the option, 15 retries with backoff would take many minutes.
    assert!(
        took >= secs(3) && took <= secs(4),
        "failed after {} ms",
        took.millis()
    );
    assert_eq!(
        p.a.take_error(c).unwrap(),
        Some(stack::error::Error::TimedOut)
    );
}
