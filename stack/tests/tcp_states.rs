//! State transitions, resets, half-close, simultaneous open/close, timers.

mod tcp_common;
use tcp_common::*;

use stack::error::Error;
use stack::sim::{TcpPair, ADDR_A, ADDR_B};
use stack::socket::Readiness;
use stack::tcp::{Keepalive, Shutdown, State, TcpConfig};
use stack::time::Duration;
use stack::wire::tcp::{flags, SeqNumber, TcpRepr};

fn pair(seed: u64) -> TcpPair {
    TcpPair::new(cfg(), lossless(), seed)
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut p = pair(1);
    let c = p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(9)).unwrap();
    assert_eq!(p.a.state(c).unwrap(), State::SynSent);
    assert_eq!(p.a.send(c, b"x"), Err(Error::WouldBlock));
    let limit = later(&p, secs(5));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::Closed));
    let r = p.a.readiness(c);
    assert!(r.error() && r.hangup() && r.readable(), "{r:?}");
    assert_eq!(p.a.take_error(c).unwrap(), Some(Error::ConnectionRefused));
    assert_eq!(p.a.take_error(c).unwrap(), None, "SO_ERROR is taken once");
    assert_eq!(p.a.send(c, b"x"), Err(Error::BrokenPipe));
    assert_eq!(p.b.stats().resets_sent, 1);
    assert_eq!(p.b.stats().drops_no_socket, 1);
    assert_eq!(p.a.stats().resets_received, 1);
}

#[test]
fn connect_times_out_on_a_black_hole() {
    let c = TcpConfig {
        syn_retries: 3,
        ..cfg()
    };
    let mut p = TcpPair::new(c, lossless(), 2);
    cut(&mut p, true);
    let h =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(80))
            .unwrap();
    let start = p.now;
    let limit = later(&p, secs(60));
    assert!(p.run_until(limit, |p| p.a.state(h).unwrap() == State::Closed));
    // 1 + 2 + 4 + 8 s of backoff.
    let took = p.now.saturating_since(start);
    assert!(took >= secs(15) && took < secs(16), "{took:?}");
    assert_eq!(p.a.recv(h, &mut [0u8; 4]), Err(Error::TimedOut));
    assert_eq!(p.a.stats().retransmits, 3);
}

#[test]
fn established_then_peer_reset() {
    let mut p = pair(3);
    let (_l, c, s) = establish(&mut p);
    assert!(p.a.readiness(c).writable());
    p.b.abort(s).unwrap();
    let limit = later(&p, secs(1));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::Closed));
    assert!(p
        .a
        .readiness(c)
        .contains(Readiness::ERROR | Readiness::HANGUP));
    assert_eq!(p.a.recv(c, &mut [0u8; 4]), Err(Error::ConnectionReset));
    assert_eq!(p.a.recv(c, &mut [0u8; 4]), Ok(0));
    assert_eq!(p.a.send(c, b"x"), Err(Error::BrokenPipe));
    assert_eq!(
        p.b.send(s, b"x"),
        Err(Error::BadHandle),
        "aborted handle is gone"
    );
}

#[test]
fn close_with_unread_data_resets() {
    let mut p = pair(4);
    let (_l, c, s) = establish(&mut p);
    p.a.send(c, b"unread").unwrap();
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.b.recv_queued(s).unwrap(), 6);
    p.b.close(s).unwrap();
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.a.state(c).unwrap(), State::Closed);
    assert_eq!(p.a.take_error(c).unwrap(), Some(Error::ConnectionReset));
}

#[test]
fn linger_zero_close_resets() {
    let mut p = pair(5);
    let (_l, c, s) = establish(&mut p);
    p.a.set_linger(c, Some(Duration::ZERO)).unwrap();
    p.a.close(c).unwrap();
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.b.state(s).unwrap(), State::Closed);
    assert_eq!(p.b.recv(s, &mut [0u8; 1]), Err(Error::ConnectionReset));
}

#[test]
fn half_close_both_directions_and_every_closing_state() {
    let mut p = pair(6);
    let (_l, c, s) = establish(&mut p);
    p.a.send(c, b"request").unwrap();
    p.a.shutdown(c, Shutdown::Write).unwrap();
    assert_eq!(p.a.state(c).unwrap(), State::FinWait1);
    assert_eq!(p.a.send(c, b"more"), Err(Error::BrokenPipe));
    let mut got = Vec::new();
    let limit = later(&p, secs(1));
    assert!(p.run_until(limit, |p| read_all(&mut p.b, s, &mut got).unwrap()));
    assert_eq!(got, b"request");
    assert_eq!(p.b.state(s).unwrap(), State::CloseWait);
    assert!(p.b.readiness(s).read_hangup());
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.a.state(c).unwrap(), State::FinWait2);
    // The server still answers over its open half.
    let reply = pattern(100_000, 9);
    let mut sent = 0;
    let mut back = Vec::new();
    let limit = later(&p, secs(10));
    assert!(p.run_until(limit, |p| {
        if sent < reply.len() {
            sent += p.b.send(s, &reply[sent..]).unwrap_or(0);
        }
        read_all(&mut p.a, c, &mut back).unwrap();
        back.len() == reply.len()
    }));
    assert_eq!(back, reply);
    p.b.close(s).unwrap();
    assert_eq!(p.b.stats().resets_sent, 0);
    assert_eq!(p.b.connections_by_state()[State::LastAck.index()], 1);
    let limit = later(&p, secs(1));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::TimeWait));
    assert_eq!(read_all(&mut p.a, c, &mut back), Ok(true));
    p.run_for(Duration::from_millis(10));
    // The server's slot went through LAST-ACK to CLOSED and was freed.
    assert_eq!(p.b.connections_by_state()[State::LastAck.index()], 0);
    assert_eq!(p.b.connections_by_state()[State::Established.index()], 0);
    // TIME-WAIT lasts 2 MSL (60 s by default), then the slot frees once closed.
    p.a.close(c).unwrap();
    p.run_for(secs(59));
    assert_eq!(p.a.connections_by_state()[State::TimeWait.index()], 1);
    p.run_for(secs(2));
    assert_eq!(p.a.connections_by_state()[State::TimeWait.index()], 0);
}

#[test]
fn simultaneous_open() {
    let mut p = pair(7);
    let a =
        p.a.connect(TcpPair::addr_a(5000), TcpPair::addr_b(6000))
            .unwrap();
    let b =
        p.b.connect(TcpPair::addr_b(6000), TcpPair::addr_a(5000))
            .unwrap();
    let limit = later(&p, secs(5));
    assert!(p.run_until(limit, |p| {
        p.a.state(a).unwrap() == State::Established && p.b.state(b).unwrap() == State::Established
    }));
    let (x, y) = exchange(&mut p, a, b, b"from a", b"from b", secs(5));
    assert_eq!(x, b"from b");
    assert_eq!(y, b"from a");
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut p = pair(8);
    let (_l, c, s) = establish(&mut p);
    p.a.shutdown(c, Shutdown::Write).unwrap();
    p.b.shutdown(s, Shutdown::Write).unwrap();
    // Both FINs are in flight at once: each side sees the other's FIN in FIN-WAIT-1.
    p.dispatch();
    let limit = later(&p, Duration::from_micros(1500));
    p.run_until(limit, |_| false);
    assert_eq!(p.a.state(c).unwrap(), State::Closing);
    assert_eq!(p.b.state(s).unwrap(), State::Closing);
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.a.state(c).unwrap(), State::TimeWait);
    assert_eq!(p.b.state(s).unwrap(), State::TimeWait);
}

fn inject(p: &mut TcpPair, repr: TcpRepr, payload: &[u8]) {
    let seg = segment(&repr, payload);
    let now = p.now;
    p.b.receive(now, ADDR_A, ADDR_B, &seg);
}

#[test]
fn rst_outside_exact_sequence_gets_a_challenge_ack() {
    let mut p = TcpPair::new(
        TcpConfig {
            timestamps: false,
            ..cfg()
        },
        lossless(),
        9,
    );
    let (_l, c, s) = establish(&mut p);
    let ia = p.a.info(c).unwrap();
    let base = TcpRepr {
        src_port: p.a.local_addr(c).unwrap().port(),
        dst_port: SERVER_PORT,
        flags: flags::RST,
        ..TcpRepr::default()
    };
    // In the window but not RCV.NXT: challenge ACK, connection survives.
    inject(
        &mut p,
        TcpRepr {
            seq: SeqNumber(ia.snd_nxt) + 100u32,
            ..base
        },
        b"",
    );
    assert_eq!(p.b.stats().challenge_acks, 1);
    assert_eq!(p.b.state(s).unwrap(), State::Established);
    // Outside the window: ignored silently.
    inject(
        &mut p,
        TcpRepr {
            seq: SeqNumber(ia.snd_nxt) + 10_000_000u32,
            ..base
        },
        b"",
    );
    assert_eq!(p.b.stats().challenge_acks, 1);
    // A SYN on an established connection: challenge ACK too (RFC 5961 4.2).
    inject(
        &mut p,
        TcpRepr {
            seq: SeqNumber(12345),
            flags: flags::SYN,
            ..base
        },
        b"",
    );
    assert_eq!(p.b.stats().challenge_acks, 2);
    assert_eq!(p.b.state(s).unwrap(), State::Established);
    // An ACK for data never sent: challenge ACK, dropped.
    inject(
        &mut p,
        TcpRepr {
            seq: SeqNumber(ia.snd_nxt),
            ack: SeqNumber(ia.rcv_nxt) + 1_000_000u32,
            flags: flags::ACK,
            ..base
        },
        b"junk",
    );
    assert_eq!(p.b.stats().challenge_acks, 3);
    assert_eq!(p.b.recv_queued(s).unwrap(), 0);
    // Exactly RCV.NXT: reset.
    inject(
        &mut p,
        TcpRepr {
            seq: SeqNumber(ia.snd_nxt),
            ..base
        },
        b"",
    );
    assert_eq!(p.b.state(s).unwrap(), State::Closed);
    assert_eq!(p.b.take_error(s).unwrap(), Some(Error::ConnectionReset));
}

#[test]
fn stray_ack_to_listener_and_to_closed_port_get_rst() {
    let mut p = pair(10);
    let _l = p.b.listen(TcpPair::addr_b(SERVER_PORT), 4).unwrap();
    let ack = TcpRepr {
        src_port: 4444,
        dst_port: SERVER_PORT,
        seq: SeqNumber(1),
        ack: SeqNumber(77),
        flags: flags::ACK,
        ..TcpRepr::default()
    };
    inject(&mut p, ack, b"");
    inject(&mut p, TcpRepr { dst_port: 1, ..ack }, b"");
    inject(
        &mut p,
        TcpRepr {
            flags: flags::RST,
            ..ack
        },
        b"",
    );
    p.dispatch();
    assert_eq!(p.b.stats().resets_sent, 2, "no RST answers a RST");
    assert_eq!(p.b.stats().syn_cookies_rejected, 1);
    // Malformed segments are counted and dropped.
    let now = p.now;
    p.b.receive(now, ADDR_A, ADDR_B, &[0u8; 10]);
    assert_eq!(p.b.stats().drops_malformed, 1);
}

#[test]
fn data_after_close_is_answered_with_rst() {
    let mut p = pair(11);
    let (_l, c, s) = establish(&mut p);
    p.b.close(s).unwrap(); // FIN to a; b's slot is now an orphan in FIN-WAIT
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.a.state(c).unwrap(), State::CloseWait);
    p.a.send(c, b"anyone there?").unwrap();
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.a.state(c).unwrap(), State::Closed);
    assert_eq!(p.a.take_error(c).unwrap(), Some(Error::ConnectionReset));
}

#[test]
fn retransmissions_run_out_with_etimedout() {
    let c = TcpConfig {
        max_retries: 4,
        ..cfg()
    };
    let mut p = TcpPair::new(c, lossless(), 12);
    let (_l, c, _s) = establish(&mut p);
    cut(&mut p, true);
    p.a.send(c, b"lost forever").unwrap();
    let limit = later(&p, secs(120));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::Closed));
    assert_eq!(p.a.take_error(c).unwrap(), Some(Error::TimedOut));
    assert_eq!(p.a.stats().timeouts, 4);
    assert_eq!(p.a.stats().timeouts_fatal, 1);
}

#[test]
fn keepalive_probes_keep_an_idle_connection_and_detect_a_dead_peer() {
    let mut p = pair(13);
    let (_l, c, s) = establish(&mut p);
    let ka = Keepalive {
        idle: secs(10),
        interval: secs(1),
        count: 3,
    };
    p.a.set_keepalive(c, Some(ka)).unwrap();
    p.run_for(secs(35));
    assert!(p.a.stats().keepalive_probes >= 3, "{:?}", p.a.stats());
    assert_eq!(p.a.state(c).unwrap(), State::Established);
    assert_eq!(p.a.stats().keepalive_timeouts, 0);
    // Peer vanishes.
    cut(&mut p, true);
    let start = p.now;
    let limit = later(&p, secs(60));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::Closed));
    let took = p.now.saturating_since(start);
    assert!(took <= secs(14), "{took:?}");
    assert_eq!(p.a.take_error(c).unwrap(), Some(Error::TimedOut));
    assert_eq!(p.a.stats().keepalive_timeouts, 1);
    let _ = s;
}

#[test]
fn zero_window_is_probed_until_the_reader_drains() {
    let mut p = pair(14);
    let l = p.b.listen(TcpPair::addr_b(SERVER_PORT), 4).unwrap();
    p.b.set_rcvbuf(l, 4096).unwrap();
    let c =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    let limit = later(&p, secs(2));
    let mut s = None;
    assert!(p.run_until(limit, |p| {
        s = s.or_else(|| p.b.accept(l).ok());
        s.is_some()
    }));
    let s = s.unwrap();
    let data = pattern(50_000, 3);
    let mut sent = 0;
    sent += p.a.send(c, &data).unwrap();
    // Nobody reads for 30 s: the window closes and a probes it.
    let end = later(&p, secs(30));
    p.run_until(end, |p| {
        if sent < data.len() {
            sent += p.a.send(c, &data[sent..]).unwrap_or(0);
        }
        false
    });
    assert_eq!(p.b.recv_queued(s).unwrap(), 4096);
    assert!(p.a.stats().window_probes >= 3, "{:?}", p.a.stats());
    assert_eq!(p.a.state(c).unwrap(), State::Established);
    let mut got = Vec::new();
    let limit = later(&p, secs(60));
    assert!(p.run_until(limit, |p| {
        if sent < data.len() {
            sent += p.a.send(c, &data[sent..]).unwrap_or(0);
        }
        read_all(&mut p.b, s, &mut got).unwrap();
        got.len() == data.len()
    }));
    assert_eq!(got, data);
}

#[test]
fn nagle_coalesces_small_writes_and_nodelay_does_not() {
    for nodelay in [false, true] {
        let mut p = pair(15);
        let (_l, c, s) = establish(&mut p);
        p.a.set_nodelay(c, nodelay).unwrap();
        let before = p.a.stats().segments_out;
        for _ in 0..20 {
            p.a.send(c, b"x").unwrap();
            p.dispatch();
            p.now += Duration::from_micros(10);
        }
        let limit = later(&p, secs(1));
        let mut got = Vec::new();
        assert!(p.run_until(limit, |p| {
            read_all(&mut p.b, s, &mut got).unwrap();
            got.len() == 20
        }));
        let segs = p.a.stats().segments_out - before;
        if nodelay {
            assert!(segs >= 20, "nodelay sent {segs}");
        } else {
            assert!(segs <= 3, "nagle sent {segs}");
        }
    }
}

#[test]
fn delayed_ack_acks_every_second_segment_or_after_the_timer() {
    // 10 Mbit/s: segments arrive one by one, not in one batch.
    let link = stack::sim::LinkConfig {
        bandwidth: Some(1_250_000),
        ..lossless()
    };
    let mut p = TcpPair::new(cfg(), link, 16);
    let (_l, c, _s) = establish(&mut p);
    let before = p.b.stats().segments_out;
    p.a.send(c, &pattern(1448 * 20, 1)).unwrap();
    p.run_for(Duration::from_millis(40));
    let acks = p.b.stats().segments_out - before;
    assert!((10..=11).contains(&acks), "{acks} ACKs for 20 segments");
    // A lone small segment is acknowledged only when the delayed-ACK timer fires.
    let before = p.b.stats().segments_out;
    p.a.send(c, b"ping").unwrap();
    p.run_for(Duration::from_millis(30));
    assert_eq!(p.b.stats().segments_out, before);
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.b.stats().segments_out, before + 1);
}

#[test]
fn readiness_changes_are_reported_once() {
    let mut p = pair(17);
    let (l, c, s) = establish(&mut p);
    let mut changed = Vec::new();
    p.a.drain_changed(|h| changed.push(h));
    assert!(changed.contains(&c));
    changed.clear();
    p.a.drain_changed(|h| changed.push(h));
    assert!(changed.is_empty());
    p.a.send(c, b"hello").unwrap();
    p.run_for(Duration::from_millis(10));
    let mut bc = Vec::new();
    p.b.drain_changed(|h| bc.push(h));
    assert!(bc.contains(&s) && bc.contains(&l));
    assert!(p.b.readiness(s).readable());
    assert_eq!(p.b.peek(s, &mut [0u8; 2]), Ok(2));
    let mut buf = [0u8; 10];
    assert_eq!(p.b.recv(s, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    assert!(!p.b.readiness(s).readable());
    assert_eq!(p.b.recv(s, &mut buf), Err(Error::WouldBlock));
    assert_eq!(p.a.local_addr(c).unwrap().ip(), ADDR_A);
    assert_eq!(
        p.a.peer_addr(c).unwrap(),
        TcpPair::addr_b(SERVER_PORT).into()
    );
    assert_eq!(p.b.accept(l), Err(Error::WouldBlock));
    assert_eq!(
        p.b.listen(TcpPair::addr_b(SERVER_PORT), 1),
        Err(Error::AddrInUse)
    );
    let local = p.a.local_addr(c).unwrap();
    assert_eq!(
        p.a.connect(local, TcpPair::addr_b(SERVER_PORT)),
        Err(Error::AddrInUse)
    );
}

#[test]
fn closing_a_listener_resets_connections_not_yet_accepted() {
    let mut p = pair(18);
    let l = p.b.listen(TcpPair::addr_b(SERVER_PORT), 4).unwrap();
    let c =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    let limit = later(&p, secs(1));
    assert!(p.run_until(limit, |p| p.a.state(c).unwrap() == State::Established));
    p.run_for(Duration::from_millis(10));
    assert!(
        p.b.readiness(l).readable(),
        "a connection waits in the accept queue"
    );
    p.b.close(l).unwrap();
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.a.take_error(c).unwrap(), Some(Error::ConnectionReset));
    assert_eq!(
        p.b.connections_by_state().iter().sum::<usize>(),
        0,
        "everything freed"
    );
    // The port is free again.
    assert!(p.b.listen(TcpPair::addr_b(SERVER_PORT), 4).is_ok());
}

#[test]
fn shutdown_read_gives_eof_and_shutdown_both_sends_fin() {
    let mut p = pair(19);
    let (_l, c, s) = establish(&mut p);
    p.a.send(c, b"early").unwrap();
    p.run_for(Duration::from_millis(10));
    p.b.shutdown(s, Shutdown::Read).unwrap();
    let mut got = Vec::new();
    assert_eq!(
        read_all(&mut p.b, s, &mut got),
        Ok(true),
        "queued data, then EOF"
    );
    assert_eq!(got, b"early");
    assert!(p.b.readiness(s).read_hangup());
    p.b.shutdown(s, Shutdown::Both).unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.a.state(c).unwrap(), State::CloseWait);
    assert_eq!(read_all(&mut p.a, c, &mut got), Ok(true));
    assert_eq!(
        p.b.shutdown(TcpPair::addr_b(0).port().into_handle(), Shutdown::Both)
            .ok(),
        None
    );
}

trait IntoHandle {
    fn into_handle(self) -> stack::socket::SocketHandle;
}
impl IntoHandle for u16 {
    fn into_handle(self) -> stack::socket::SocketHandle {
        stack::socket::SocketHandle::tcp(1000 + self as u32)
    }
}

#[test]
fn writable_again_only_when_a_third_of_the_send_buffer_is_free() {
    let mut p = pair(23);
    let (_l, c, s) = establish(&mut p);
    p.a.drain_changed(|_| {});
    // The receiver reads nothing: the send buffer fills (64 KiB window + 64 KiB buffer).
    let chunk = [7u8; 4096];
    loop {
        match p.a.send(c, &chunk) {
            Ok(_) => p.run_for(Duration::from_millis(1)),
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    p.run_for(Duration::from_millis(50));
    assert!(!p.a.readiness(c).writable());
    p.a.drain_changed(|_| {});
    // The receiver frees a little: the ACKs free under a third of the buffer.
    let mut buf = [0u8; 8192];
    assert_eq!(p.b.recv(s, &mut buf), Ok(8192));
    p.run_for(Duration::from_millis(50));
    let mut woke = false;
    p.a.drain_changed(|h| woke |= h == c);
    assert!(
        !p.a.readiness(c).writable(),
        "writable with under a third free"
    );
    assert!(!woke, "a writer would be woken for 8 KiB");
    // Data can still be queued into what is free, as Linux accepts it.
    assert!(p.a.send(c, &chunk).is_ok());
    // Reading more frees over a third: writable again, reported once.
    let mut out = Vec::new();
    read_all(&mut p.b, s, &mut out).unwrap();
    p.run_for(Duration::from_millis(50));
    let mut woke = false;
    p.a.drain_changed(|h| woke |= h == c);
    assert!(p.a.readiness(c).writable());
    assert!(woke, "the writer is woken when room came back");
}

#[test]
fn discard_drops_what_a_peek_saw_and_send_room_is_what_send_takes() {
    let mut p = pair(23);
    let (_l, c, s) = establish(&mut p);
    let data = pattern(3000, 7);
    p.a.send(c, &data).unwrap();
    p.run_for(Duration::from_millis(10));
    let mut head = [0u8; 1000];
    assert_eq!(p.b.peek(s, &mut head), Ok(1000));
    assert_eq!(p.b.discard(s, 1000), Ok(1000));
    assert_eq!(p.b.recv_queued(s), Ok(2000));
    let mut rest = vec![0u8; 4000];
    assert_eq!(p.b.recv(s, &mut rest), Ok(2000));
    assert_eq!(&rest[..2000], &data[1000..]);
    assert_eq!(p.b.discard(s, 10), Err(Error::WouldBlock));
    assert_eq!(p.b.discard(s, 0), Err(Error::WouldBlock));
    // The send buffer (64 KiB in this pair) takes exactly its room.
    let room = p.b.send_room(s).unwrap();
    assert_eq!(room, 64 * 1024);
    let big = pattern(room + 500, 3);
    assert_eq!(p.b.send(s, &big), Ok(room));
    assert_eq!(p.b.send_room(s), Ok(0));
    // After the peer's FIN, a discard says end of stream as a read does.
    p.a.shutdown(c, Shutdown::Write).unwrap();
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.b.discard(s, 10), Ok(0));
}
