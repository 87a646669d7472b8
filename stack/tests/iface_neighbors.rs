//! Interfaces whose host owns ARP (AF_XDP: the kernel's neighbour table), driven the
//! way the shim drives them: only when a frame arrives or `poll_at` falls due.

mod tcp_common;
use tcp_common::*;

use stack::iface::NeighborMode;
use stack::sim::{IfacePair, TcpPair};
use stack::tcp::State;
use stack::time::Duration;

/// The first connection to a peer the kernel has not resolved yet (the fast path's
/// frames never pass the kernel, so it has not learned the peer's MAC): the SYN is
/// held while the kernel resolves it. The interface must ask to be driven again soon,
/// so its host looks the next hop up again and sends the SYN once the kernel has it.
/// It asked for nothing (`poll_at` None until the SYN's 1 s retransmission): every
/// first connection of a process cost a retransmission and a second.
#[test]
fn first_connection_waits_for_the_kernels_arp_not_for_a_retransmission() {
    let mut p = IfacePair::new(NeighborMode::External, cfg(), lossless_veth(), 31);
    let l = p.b.tcp.listen(TcpPair::addr_b(SERVER_PORT), 4).unwrap();
    let c = p.a.tcp_connect(None, TcpPair::addr_b(SERVER_PORT)).unwrap();
    let (mut s, mut got, mut sent, mut replied) = (None, Vec::new(), false, false);
    let limit = p.now + secs(5);
    let done = p.run_until(limit, |p| {
        if !sent && p.a.tcp.state(c) == Ok(State::Established) {
            assert_eq!(p.a.tcp.send(c, b"ping"), Ok(4));
            sent = true;
        }
        s = s.or_else(|| p.b.tcp.accept(l).ok());
        if let (Some(s), false) = (s, replied) {
            let mut buf = [0u8; 16];
            if p.b.tcp.recv(s, &mut buf) == Ok(4) {
                assert_eq!(&buf[..4], b"ping");
                assert_eq!(p.b.tcp.send(s, b"pong"), Ok(4));
                replied = true;
            }
        }
        let _ = read_all(&mut p.a.tcp, c, &mut got);
        got == b"pong"
    });
    assert!(
        done,
        "no reply: a {:?} b {:?}",
        p.a.tcp.stats(),
        p.b.tcp.stats()
    );
    // Both neighbours came from the kernels (here: after their 100 µs ARP round trip).
    assert_eq!(p.a.missing_neighbors().count(), 0);
    assert_eq!(p.b.missing_neighbors().count(), 0);
    assert_eq!(p.a.tcp.stats().retransmits, 0, "{:?}", p.a.tcp.stats());
    assert_eq!(p.b.tcp.stats().retransmits, 0, "{:?}", p.b.tcp.stats());
}

/// A next hop the kernel never resolves: the host is asked to look again less and
/// less often, and the interface does not spin (the simulation would not end).
#[test]
fn an_unresolvable_next_hop_is_looked_up_again_with_backoff() {
    let mut p = IfacePair::new(NeighborMode::External, cfg(), lossless_veth(), 32);
    p.resolve_delay = secs(1000);
    let c = p.a.tcp_connect(None, TcpPair::addr_b(SERVER_PORT)).unwrap();
    let limit = p.now + secs(3);
    let mut wakeups = 0;
    p.run_until(limit, |p| {
        wakeups += 1;
        p.a.tcp.state(c) != Ok(State::SynSent)
    });
    assert_eq!(p.a.tcp.state(c), Ok(State::SynSent));
    assert_eq!(p.a.missing_neighbors().count(), 1);
    // 3 s: the SYN's retransmissions (1 s, then 2 s) plus lookups backing off from
    // 1 ms to one a second: a few dozen wake-ups, not thousands.
    assert!(wakeups < 40, "{wakeups} wake-ups");
}

fn lossless_veth() -> stack::sim::LinkConfig {
    stack::sim::LinkConfig {
        delay: Duration::from_micros(20),
        ..lossless()
    }
}
