//! TCP over IPv6 between two interfaces on one simulated Ethernet segment: neighbours
//! found by Neighbor Discovery, byte-exact transfers through loss and reordering, IPv4
//! and IPv6 connections side by side, RSTs for closed ports.

mod tcp_common;
use tcp_common::*;

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use stack::error::Error;
use stack::iface::{Interface, NeighborMode};
use stack::sim::{IfacePair, LinkConfig, ADDR6_A, ADDR6_B, ADDR_B, MAC_A, MAC_B};
use stack::socket::SocketHandle;
use stack::tcp::State;

fn v6(ip: std::net::Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
}

fn pair(link: LinkConfig, seed: u64) -> IfacePair {
    IfacePair::new(NeighborMode::OwnArp, cfg(), link, seed).with_ipv6()
}

/// One connection's two ends and what each has to send and has received.
struct Flow {
    client: SocketHandle,
    listener: SocketHandle,
    server: Option<SocketHandle>,
    up: Vec<u8>,
    down: Vec<u8>,
    sent_up: usize,
    sent_down: usize,
    got_up: Vec<u8>,
    got_down: Vec<u8>,
}

impl Flow {
    fn new(client: SocketHandle, listener: SocketHandle, up: usize, down: usize, salt: u8) -> Flow {
        Flow {
            client,
            listener,
            server: None,
            up: pattern(up, salt),
            down: pattern(down, salt.wrapping_add(1)),
            sent_up: 0,
            sent_down: 0,
            got_up: Vec::new(),
            got_down: Vec::new(),
        }
    }

    /// Moves what the sockets take now; true once both directions arrived whole.
    fn step(&mut self, a: &mut Interface, b: &mut Interface) -> bool {
        if self.server.is_none() {
            self.server = b.tcp.accept(self.listener).ok();
        }
        if a.tcp.state(self.client) == Ok(State::Established) && self.sent_up < self.up.len() {
            if let Ok(n) = a.tcp.send(self.client, &self.up[self.sent_up..]) {
                self.sent_up += n;
            }
        }
        let _ = read_all(&mut a.tcp, self.client, &mut self.got_down);
        if let Some(s) = self.server {
            if self.sent_down < self.down.len() {
                if let Ok(n) = b.tcp.send(s, &self.down[self.sent_down..]) {
                    self.sent_down += n;
                }
            }
            let _ = read_all(&mut b.tcp, s, &mut self.got_up);
        }
        self.got_up.len() == self.up.len() && self.got_down.len() == self.down.len()
    }

    fn assert_exact(&self) {
        assert!(self.got_up == self.up, "upstream bytes differ");
        assert!(self.got_down == self.down, "downstream bytes differ");
    }
}

/// 1 MB each way over IPv6 through 3% loss, duplication and reordering: byte-exact,
/// with the MSS IPv6 allows (MTU 1500 - 60), and each side's MAC learned by Neighbor
/// Discovery (the client solicited, the server learned it from the solicitation).
#[test]
fn tcp_over_ipv6_survives_loss_and_reordering_byte_exact() {
    let mut p = pair(LinkConfig::lossy(0.03), 61);
    let l = p.b.tcp.listen(v6(ADDR6_B, SERVER_PORT), 8).unwrap();
    let c = p.a.tcp_connect(None, v6(ADDR6_B, SERVER_PORT)).unwrap();
    assert_eq!(p.a.tcp.local_addr(c).unwrap().ip(), IpAddr::V6(ADDR6_A));
    let mut f = Flow::new(c, l, 1 << 20, 1 << 20, 3);
    let limit = p.now + secs(120);
    let done = p.run_until(limit, |p| f.step(&mut p.a, &mut p.b));
    assert!(done, "a {:?}\nb {:?}", p.a.tcp.stats(), p.b.tcp.stats());
    f.assert_exact();
    let s = f.server.unwrap();
    assert_eq!(
        p.b.tcp.peer_addr(s).unwrap(),
        p.a.tcp.local_addr(c).unwrap()
    );
    assert_eq!(p.b.tcp.local_addr(s).unwrap(), v6(ADDR6_B, SERVER_PORT));
    assert_eq!(
        p.a.tcp.tcp_info(c).unwrap().snd_mss,
        1440 - 12,
        "MSS minus timestamps"
    );
    assert!(p.a.tcp.stats().retransmits > 0, "the loss was felt");
    assert!(p.a_to_b.stats.reordered > 0 && p.b_to_a.stats.reordered > 0);
    assert!(p.a.stats().nd_solicitations_sent >= 1);
    assert_eq!(p.a.neighbor6(ADDR6_B, p.now), Some(MAC_B));
    assert_eq!(p.b.neighbor6(ADDR6_A, p.now), Some(MAC_A));
    assert_eq!(p.a.stats().arp_requests_sent, 0, "no IPv4 was spoken");
}

/// An IPv4 and an IPv6 connection to the same port of one stack at once: each listener
/// gets only its family's connection, and both transfers are byte-exact.
#[test]
fn ipv4_and_ipv6_connections_at_once_on_one_stack() {
    let mut p = pair(LinkConfig::lossy(0.01), 62);
    let l4 =
        p.b.tcp
            .listen(SocketAddrV4::new([0, 0, 0, 0].into(), SERVER_PORT), 8)
            .unwrap();
    let l6 =
        p.b.tcp
            .listen(v6(std::net::Ipv6Addr::UNSPECIFIED, SERVER_PORT), 8)
            .unwrap();
    let c4 =
        p.a.tcp_connect(None, SocketAddrV4::new(ADDR_B, SERVER_PORT))
            .unwrap();
    let c6 = p.a.tcp_connect(None, v6(ADDR6_B, SERVER_PORT)).unwrap();
    let mut f4 = Flow::new(c4, l4, 300_000, 200_000, 40);
    let mut f6 = Flow::new(c6, l6, 200_000, 300_000, 60);
    let limit = p.now + secs(60);
    let done = p.run_until(limit, |p| {
        let d4 = f4.step(&mut p.a, &mut p.b);
        let d6 = f6.step(&mut p.a, &mut p.b);
        d4 && d6
    });
    assert!(done, "a {:?}\nb {:?}", p.a.tcp.stats(), p.b.tcp.stats());
    f4.assert_exact();
    f6.assert_exact();
    let (s4, s6) = (f4.server.unwrap(), f6.server.unwrap());
    assert!(p.b.tcp.peer_addr(s4).unwrap().is_ipv4());
    assert_eq!(p.b.tcp.peer_addr(s6).unwrap().ip(), IpAddr::V6(ADDR6_A));
    assert_eq!(p.b.tcp.accept(l4), Err(Error::WouldBlock));
    assert_eq!(p.b.tcp.accept(l6), Err(Error::WouldBlock));
    // One segment of each family: both resolutions happened.
    assert!(p.a.stats().arp_requests_sent >= 1);
    assert!(p.a.stats().nd_solicitations_sent >= 1);
}

/// A SYN over IPv6 to a port nobody listens on is answered with a RST: the client's
/// connect fails with ECONNREFUSED at once, not after its retransmissions.
#[test]
fn ipv6_syn_to_a_closed_port_gets_a_reset() {
    let mut p = pair(LinkConfig::default(), 63);
    let c = p.a.tcp_connect(None, v6(ADDR6_B, 9)).unwrap();
    let limit = p.now + secs(1);
    let refused = p.run_until(limit, |p| p.a.tcp.state(c) == Ok(State::Closed));
    assert!(refused, "{:?}", p.a.tcp.state(c));
    assert_eq!(p.a.tcp.take_error(c), Ok(Some(Error::ConnectionRefused)));
    assert_eq!(p.b.tcp.stats().resets_sent, 1);
    assert_eq!(p.b.tcp.stats().drops_no_socket, 1);
    assert_eq!(p.a.tcp.stats().retransmits, 0);
}

/// The families do not mix: an IPv6 connect from an IPv4 address, a connect to a
/// v4-mapped address, and a connect to an IPv6 destination off every prefix without
/// an IPv6 gateway are refused with the errors the kernel gives.
#[test]
fn ipv6_connect_errors() {
    let mut p = pair(LinkConfig::default(), 64);
    let local4 = SocketAddr::V4(SocketAddrV4::new(stack::sim::ADDR_A, 0));
    assert_eq!(
        p.a.tcp_connect(Some(local4), v6(ADDR6_B, 80)),
        Err(Error::InvalidInput)
    );
    let far: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        p.a.tcp_connect(None, v6(far, 80)),
        Err(Error::NetworkUnreachable)
    );
    let not_ours: std::net::Ipv6Addr = "fd77::99".parse().unwrap();
    assert_eq!(
        p.a.tcp_connect(Some(v6(not_ours, 0)), v6(ADDR6_B, 80)),
        Err(Error::AddrNotAvailable)
    );
    let mapped = ADDR_B.to_ipv6_mapped();
    assert_eq!(
        p.a.tcp.connect(v6(ADDR6_A, 0), v6(mapped, 80)),
        Err(Error::InvalidInput)
    );
    // With a gateway the far destination has a route (and a source address).
    p.a.set_ipv6_gateway(Some(ADDR6_B));
    let c = p.a.tcp_connect(None, v6(far, 80)).unwrap();
    assert_eq!(p.a.tcp.local_addr(c).unwrap().ip(), IpAddr::V6(ADDR6_A));
}

/// Runs the pair until `cond` holds, for at most `s` simulated seconds.
fn run(p: &mut IfacePair, s: u64, cond: impl FnMut(&mut IfacePair) -> bool) -> bool {
    let limit = p.now + secs(s);
    p.run_until(limit, cond)
}

/// UDP echo over IPv6: a datagram to b's socket on [::]:7 is sent back to where it
/// came from; b sees a's IPv6 address and port, a gets the echo from b's address. An
/// IPv4 wildcard socket on the same port gets nothing of it.
#[test]
fn udp_echo_over_ipv6() {
    let mut p = pair(LinkConfig::default(), 65);
    let echo = p.b.udp.open().unwrap();
    p.b.udp
        .bind(echo, v6(std::net::Ipv6Addr::UNSPECIFIED, 7))
        .unwrap();
    let echo4 = p.b.udp.open().unwrap();
    p.b.udp
        .bind(echo4, SocketAddrV4::new([0, 0, 0, 0].into(), 7))
        .unwrap();
    let c = p.a.udp.open().unwrap();
    p.a.udp.connect(c, v6(ADDR6_B, 7)).unwrap();
    let local = p.a.udp.local_addr(c).unwrap().unwrap();
    assert!(local.is_ipv6() && local.port() != 0, "{local}");
    assert_eq!(p.a.udp.send_to(c, b"hello over v6", None), Ok(13));
    let mut buf = [0u8; 64];
    let got = run(&mut p, 1, |p| {
        if let Ok(r) = p.b.udp.recv_from(echo, &mut buf) {
            assert_eq!(r.from, SocketAddr::new(ADDR6_A.into(), local.port()));
            assert_eq!(r.info.to, v6(ADDR6_B, 7));
            assert_eq!(r.info.ttl, 64, "the hop limit");
            let n = r.len;
            let data = buf[..n].to_vec();
            assert_eq!(p.b.udp.send_to(echo, &data, Some(r.from)), Ok(n));
        }
        p.a.udp.next_datagram_len(c) == Ok(13)
    });
    assert!(got, "a {}\nb {}", p.a.stats(), p.b.stats());
    let r = p.a.udp.recv_from(c, &mut buf).unwrap();
    assert_eq!(&buf[..r.len], b"hello over v6");
    assert_eq!(r.from, v6(ADDR6_B, 7));
    assert_eq!(p.b.udp.recv_from(echo4, &mut buf), Err(Error::WouldBlock));
    assert_eq!(p.b.stats().udp_datagrams_received, 1);
    assert_eq!(p.a.stats().udp_datagrams_received, 1);
}

/// A datagram larger than the MTU leaves in IPv6 fragments, which arrive reordered
/// and are put back together byte-exact at the other end.
#[test]
fn large_udp_datagram_over_ipv6_is_fragmented_and_reassembled() {
    let link = LinkConfig {
        reorder: 0.5,
        ..LinkConfig::default()
    };
    let mut p = pair(link, 66);
    let rx = p.b.udp.open().unwrap();
    p.b.udp.bind(rx, v6(ADDR6_B, 9000)).unwrap();
    let tx = p.a.udp.open().unwrap();
    let data = pattern(20_000, 9);
    // 1500 - 40 - 8 = 1452, rounded down to 1448 bytes of the datagram a fragment.
    let fragments = (8 + data.len()).div_ceil(1448) as u64;
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    for round in 0..4 {
        assert_eq!(
            p.a.udp.send_to(tx, &data, Some(v6(ADDR6_B, 9000))),
            Ok(data.len())
        );
        let done = run(&mut p, 1, |p| match p.b.udp.recv_from(rx, &mut buf) {
            Ok(r) => {
                got = buf[..r.len].to_vec();
                true
            }
            Err(_) => false,
        });
        assert!(
            done,
            "round {round}: {:?}\n{}",
            p.b.reassembly_stats(),
            p.b.stats()
        );
        assert!(got == data, "round {round}: bytes differ");
    }
    assert_eq!(p.a.stats().ipv6_fragments_sent, 4 * fragments);
    assert_eq!(p.b.reassembly_stats().reassembled, 4);
    assert!(p.a_to_b.stats.reordered > 0);
    assert_eq!(
        p.b.reassembly_stats().overlap + p.b.reassembly_stats().timed_out,
        0
    );
}

/// UDP to an IPv6 port without a socket is answered with an ICMPv6 port unreachable,
/// which the sender's connected socket reports as ECONNREFUSED.
#[test]
fn udp_to_a_closed_ipv6_port_is_refused() {
    let mut p = pair(LinkConfig::default(), 67);
    let c = p.a.udp.open().unwrap();
    p.a.udp.connect(c, v6(ADDR6_B, 4444)).unwrap();
    p.a.udp.send_to(c, b"anyone?", None).unwrap();
    let refused = run(&mut p, 1, |p| p.a.udp.readiness(c).unwrap().error());
    assert!(refused, "a {}\nb {}", p.a.stats(), p.b.stats());
    assert_eq!(p.b.stats().icmpv6_unreachables_sent, 1);
    assert_eq!(p.a.udp.take_error(c), Ok(Some(Error::ConnectionRefused)));
}

/// The families do not mix on one UDP socket either: a socket bound to IPv4 cannot
/// send to an IPv6 address; v4-mapped addresses are the socket layer's to map.
#[test]
fn udp_family_errors() {
    let mut p = pair(LinkConfig::default(), 68);
    let s = p.a.udp.open().unwrap();
    p.a.udp
        .bind(s, SocketAddrV4::new([0, 0, 0, 0].into(), 5353))
        .unwrap();
    assert_eq!(
        p.a.udp.send_to(s, b"x", Some(v6(ADDR6_B, 53))),
        Err(Error::InvalidInput)
    );
    let t = p.a.udp.open().unwrap();
    assert_eq!(
        p.a.udp.bind(t, v6(ADDR_B.to_ipv6_mapped(), 53)),
        Err(Error::InvalidInput)
    );
    // The IPv6 wildcard on the same port is another socket's, as with IPV6_V6ONLY.
    assert_eq!(
        p.a.udp.bind(t, v6(std::net::Ipv6Addr::UNSPECIFIED, 5353)),
        Ok(())
    );
    let far: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        p.a.udp.send_to(t, b"x", Some(v6(far, 53))),
        Err(Error::NetworkUnreachable)
    );
}

/// External neighbours (AF_XDP: the kernel owns Neighbor Discovery): the interface
/// sends no solicitation, lists the IPv6 next hop it lacks for its host, and the SYN
/// held meanwhile leaves once the host has set it, without a retransmission.
#[test]
fn tcp_over_ipv6_with_neighbours_from_the_host() {
    let mut p = IfacePair::new(NeighborMode::External, cfg(), lossless(), 69).with_ipv6();
    let l = p.b.tcp.listen(v6(ADDR6_B, SERVER_PORT), 8).unwrap();
    let c = p.a.tcp_connect(None, v6(ADDR6_B, SERVER_PORT)).unwrap();
    let mut f = Flow::new(c, l, 100_000, 50_000, 5);
    let done = run(&mut p, 10, |p| f.step(&mut p.a, &mut p.b));
    assert!(done, "a {:?}\nb {:?}", p.a.tcp.stats(), p.b.tcp.stats());
    f.assert_exact();
    assert_eq!(p.a.neighbor6(ADDR6_B, p.now), Some(MAC_B));
    assert_eq!(p.b.neighbor6(ADDR6_A, p.now), Some(MAC_A));
    assert_eq!(p.a.missing_neighbors6().count(), 0);
    assert_eq!(p.a.stats().nd_solicitations_sent, 0);
    assert_eq!(p.b.stats().nd_solicitations_sent, 0);
    assert_eq!(p.a.tcp.stats().retransmits, 0, "{:?}", p.a.tcp.stats());
    assert_eq!(p.b.tcp.stats().retransmits, 0, "{:?}", p.b.tcp.stats());
}
