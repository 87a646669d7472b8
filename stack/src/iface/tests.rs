//! Interface tests: frames in, frames out, counters and socket results checked.

use super::*;
use crate::device::QueueDevice;
use crate::error::Error;
use crate::socket::{Readiness, SocketHandle};
use crate::time::Duration;
use crate::wire::{udp as wudp, IcmpPacket, UdpPacket};
use proptest::prelude::*;

const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const T0: Instant = Instant::from_millis(1000);

fn iface(mac: MacAddr, ip: Ipv4Addr) -> Interface {
    Interface::new(
        InterfaceConfig::new(mac, Ipv4Cidr::new(ip, 24)),
        TcpConfig::default(),
    )
}

fn eth(dst: MacAddr, ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
    let e = EthernetRepr {
        src: MAC_B,
        dst,
        vlan: None,
        ethertype,
    };
    let mut f = vec![0u8; 14 + payload.len()];
    e.emit(&mut f);
    f[14..].copy_from_slice(payload);
    f
}

fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let r = Ipv4Repr {
        src,
        dst,
        protocol,
        payload_len: l4.len(),
        ttl: 64,
        ident: 1,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut p = vec![0u8; 20 + l4.len()];
    r.emit(&mut p, true);
    p[20..].copy_from_slice(l4);
    p
}

fn udp_frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload.len()];
    UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    }
    .emit(&mut l4, *src.ip(), *dst.ip(), payload, true);
    eth(
        MAC_A,
        EtherType::Ipv4,
        &ip_packet(*src.ip(), *dst.ip(), 17, &l4),
    )
}

fn arp_frame(op: ArpOperation, src_ip: Ipv4Addr, target_ip: Ipv4Addr, dst: MacAddr) -> Vec<u8> {
    let mut p = [0u8; 28];
    ArpRepr {
        operation: op,
        source_mac: MAC_B,
        source_ip: src_ip,
        target_mac: if op == ArpOperation::Reply {
            MAC_A
        } else {
            MacAddr::ZERO
        },
        target_ip,
    }
    .emit(&mut p);
    eth(dst, EtherType::Arp, &p)
}

/// Parses a sent frame down to IPv4, asserting the IPv4 header checksum.
fn sent_ipv4(frame: &[u8]) -> (EthernetRepr, Ipv4Repr, Vec<u8>) {
    let f = EthernetFrame::new_checked(frame).unwrap();
    let e = EthernetRepr::parse(&f).unwrap();
    assert_eq!(e.ethertype, EtherType::Ipv4);
    let p = Ipv4Packet::new_checked(f.payload()).unwrap();
    let r = Ipv4Repr::parse(&p, true).expect("valid IPv4 with checksum");
    (e, r, p.payload().to_vec())
}

fn sent_arp(frame: &[u8]) -> (EthernetRepr, ArpRepr) {
    let f = EthernetFrame::new_checked(frame).unwrap();
    let e = EthernetRepr::parse(&f).unwrap();
    assert_eq!(e.ethertype, EtherType::Arp);
    let a = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
    (e, a)
}

#[test]
fn arp_request_for_us_is_answered_and_sender_learned() {
    let mut i = iface(MAC_A, IP_A);
    let mut dev = QueueDevice::new(1500);
    i.receive(
        T0,
        &arp_frame(ArpOperation::Request, IP_B, IP_A, MacAddr::BROADCAST),
    );
    assert_eq!(i.poll_at(), Some(Instant::ZERO));
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    let (e, a) = sent_arp(&dev.frames[0]);
    assert_eq!((e.src, e.dst), (MAC_A, MAC_B));
    assert_eq!(a.operation, ArpOperation::Reply);
    assert_eq!((a.source_mac, a.source_ip), (MAC_A, IP_A));
    assert_eq!((a.target_mac, a.target_ip), (MAC_B, IP_B));
    assert_eq!(i.neighbor(IP_B, T0), Some(MAC_B));
    assert_eq!(i.stats().arp_replies_sent, 1);
    assert_eq!(i.poll_at(), None);

    // A request for someone else: no reply, nothing learned about an unknown sender.
    let mut j = iface(MAC_A, IP_A);
    j.receive(
        T0,
        &arp_frame(
            ArpOperation::Request,
            IP_B,
            Ipv4Addr::new(10, 77, 0, 9),
            MacAddr::BROADCAST,
        ),
    );
    j.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    assert_eq!(j.neighbor(IP_B, T0), None);
}

#[test]
fn learned_neighbor_expires() {
    let mut i = iface(MAC_A, IP_A);
    i.receive(T0, &arp_frame(ArpOperation::Reply, IP_B, IP_A, MAC_A));
    assert_eq!(i.neighbor(IP_B, T0 + Duration::from_secs(59)), Some(MAC_B));
    assert_eq!(i.neighbor(IP_B, T0 + Duration::from_secs(60)), None);
}

#[test]
fn udp_send_resolves_neighbor_then_sends_with_checksum() {
    let mut i = iface(MAC_A, IP_A);
    let mut dev = QueueDevice::new(1500);
    let s = i.udp.open().unwrap();
    let dst = SocketAddrV4::new(IP_B, 9000);
    assert_eq!(i.udp.send_to(s, b"hello", Some(dst.into())), Ok(5));
    assert_eq!(i.poll_at(), Some(Instant::ZERO));
    i.dispatch(T0, &mut dev);
    // Only an ARP request so far; the datagram waits.
    assert_eq!(dev.frames.len(), 1);
    let (e, a) = sent_arp(&dev.frames.pop_front().unwrap());
    assert_eq!(e.dst, MacAddr::BROADCAST);
    assert_eq!(
        (a.operation, a.target_ip, a.source_ip),
        (ArpOperation::Request, IP_B, IP_A)
    );
    assert_eq!(i.udp.send_queued(s), Ok(5));
    // The ARP retry timer is the next deadline.
    assert_eq!(i.poll_at(), Some(T0 + Duration::from_secs(1)));
    i.receive(T0, &arp_frame(ArpOperation::Reply, IP_B, IP_A, MAC_A));
    assert_eq!(i.poll_at(), Some(Instant::ZERO));
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    let (e, ip, l4) = sent_ipv4(&dev.frames[0]);
    assert_eq!((e.src, e.dst), (MAC_A, MAC_B));
    assert_eq!((ip.src, ip.dst, ip.protocol, ip.ttl), (IP_A, IP_B, 17, 64));
    let u = UdpPacket::new_checked(&l4[..]).unwrap();
    assert!(u.checksum() != 0 && u.verify_checksum(IP_A, IP_B));
    assert_eq!(u.dst_port(), 9000);
    let local = i.udp.local_addr(s).unwrap().unwrap();
    assert_eq!(u.src_port(), local.port());
    assert!(udp::EPHEMERAL_PORTS.contains(&local.port()));
    assert_eq!(u.payload(), b"hello");
    assert_eq!(i.udp.send_queued(s), Ok(0));
    assert_eq!(i.stats().udp_datagrams_sent, 1);
    assert_eq!(i.stats().arp_requests_sent, 1);
}

#[test]
fn arp_gives_up_after_three_probes_and_drops_datagram() {
    let mut i = iface(MAC_A, IP_A);
    let mut dev = QueueDevice::new(1500);
    let s = i.udp.open().unwrap();
    i.udp
        .send_to(s, b"x", Some(SocketAddrV4::new(IP_B, 1).into()))
        .unwrap();
    let mut now = T0;
    for _ in 0..3 {
        i.dispatch(now, &mut dev);
        now = i.poll_at().unwrap();
    }
    i.dispatch(now, &mut dev);
    assert_eq!(i.stats().arp_requests_sent, 3);
    assert_eq!(i.stats().dropped(DropReason::NeighborFailed), 1);
    assert_eq!(i.udp.send_queued(s), Ok(0));
    assert_eq!(i.poll_at(), None);
}

#[test]
fn udp_receive_bind_connect_and_errors() {
    let mut i = iface(MAC_A, IP_A);
    let s = i.udp.open().unwrap();
    assert_eq!(
        i.udp
            .bind(s, SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 1), 53)),
        Err(Error::AddrNotAvailable)
    );
    i.udp.bind(s, SocketAddrV4::new(IP_A, 5353)).unwrap();
    assert_eq!(
        i.udp.bind(s, SocketAddrV4::new(IP_A, 5354)),
        Err(Error::InvalidInput)
    );
    let t = i.udp.open().unwrap();
    assert_eq!(
        i.udp
            .bind(t, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5353)),
        Err(Error::AddrInUse)
    );
    assert_eq!(
        i.udp.send_to(t, b"x", None),
        Err(Error::DestinationRequired)
    );
    assert_eq!(i.udp.peer_addr(t), Err(Error::NotConnected));
    let mut buf = [0u8; 4];
    assert_eq!(i.udp.recv_from(s, &mut buf), Err(Error::WouldBlock));
    assert_eq!(i.udp.readiness(s), Ok(Readiness::WRITABLE));
    while i.pop_readiness_change().is_some() {}

    let from = SocketAddrV4::new(IP_B, 4444);
    i.receive(
        T0,
        &udp_frame(from, SocketAddrV4::new(IP_A, 5353), b"abcdefg"),
    );
    assert_eq!(i.stats().udp_datagrams_received, 1);
    let ch = i.pop_readiness_change().unwrap();
    assert_eq!(ch.handle, s);
    assert!(ch.readiness.readable());
    assert_eq!(i.udp.next_datagram_len(s), Ok(7));
    // Truncated like Linux: 4 bytes copied, the datagram was 7, and it is consumed.
    let r = i.udp.recv_from(s, &mut buf).unwrap();
    assert_eq!((r.len, r.datagram_len, r.from), (4, 7, from.into()));
    assert_eq!(&buf, b"abcd");
    assert_eq!(i.udp.recv_from(s, &mut buf), Err(Error::WouldBlock));
    assert!(!i.pop_readiness_change().unwrap().readiness.readable());

    // Connected: datagrams from other peers are not delivered to it.
    i.udp.connect(s, SocketAddrV4::new(IP_B, 7777)).unwrap();
    i.receive(T0, &udp_frame(from, SocketAddrV4::new(IP_A, 5353), b"zz"));
    assert_eq!(i.udp.next_datagram_len(s), Ok(0));
    assert_eq!(i.stats().dropped(DropReason::UdpNoSocket), 1);
    i.receive(
        T0,
        &udp_frame(
            SocketAddrV4::new(IP_B, 7777),
            SocketAddrV4::new(IP_A, 5353),
            b"ok",
        ),
    );
    assert_eq!(i.udp.next_datagram_len(s), Ok(2));

    // Sizes and broadcast.
    let big = vec![0u8; udp::MAX_PAYLOAD + 1];
    assert_eq!(i.udp.send_to(s, &big, None), Err(Error::MessageTooLong));
    assert_eq!(i.udp.send_to(s, &big[..1472], None), Ok(1472));
    let bc = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 255), 9);
    assert_eq!(
        i.udp.send_to(t, b"b", Some(bc.into())),
        Err(Error::PermissionDenied)
    );
    i.udp.set_broadcast(t, true).unwrap();
    assert_eq!(i.udp.send_to(t, b"b", Some(bc.into())), Ok(1));
    assert_eq!(
        i.udp.send_to(
            t,
            b"x",
            Some(SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 53).into())
        ),
        Err(Error::NetworkUnreachable)
    );
    i.udp.close(t).unwrap();
    assert_eq!(i.udp.readiness(t), Err(Error::BadHandle));
    assert_eq!(
        i.udp.readiness(SocketHandle::tcp(s.index)),
        Err(Error::BadHandle)
    );
}

#[test]
fn broadcast_reaches_every_wildcard_socket_on_the_port() {
    let mut i = iface(MAC_A, IP_A);
    let mut socks = Vec::new();
    for bind_ip in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, IP_A] {
        let s = i.udp.open().unwrap();
        i.udp.set_reuse_addr(s, true).unwrap();
        i.udp.bind(s, SocketAddrV4::new(bind_ip, 67)).unwrap();
        socks.push(s);
    }
    let from = SocketAddrV4::new(IP_B, 68);
    let bcast = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 255), 67);
    let mut f = udp_frame(from, bcast, b"discover");
    f[0..6].copy_from_slice(&[0xff; 6]);
    i.receive(T0, &f);
    let lens: Vec<usize> = socks
        .iter()
        .map(|&s| i.udp.next_datagram_len(s).unwrap())
        .collect();
    // The two wildcard sockets get it; the one bound to the unicast address does not.
    assert_eq!(lens, vec![8, 8, 0]);
    // Unicast goes to one socket only (the most specific: bound to the address).
    i.receive(
        T0,
        &udp_frame(from, SocketAddrV4::new(IP_A, 67), b"unicast"),
    );
    assert_eq!(i.udp.next_datagram_len(socks[2]), Ok(7));
    let mut buf = [0u8; 16];
    i.udp.recv_from(socks[0], &mut buf).unwrap();
    assert_eq!(i.udp.next_datagram_len(socks[0]), Ok(0));
}

#[test]
fn large_datagram_leaves_as_fragments_that_reassemble() {
    let mut i = iface(MAC_A, IP_A);
    i.set_neighbor(IP_B, MAC_B);
    let s = i.udp.open().unwrap();
    let data: Vec<u8> = (0..4000u32).map(|k| (k * 31 + 7) as u8).collect();
    i.udp
        .send_to(s, &data, Some(SocketAddrV4::new(IP_B, 9).into()))
        .unwrap();
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 3);
    assert_eq!(i.stats().ipv4_fragments_sent, 3);
    let mut datagram = vec![0u8; 8 + data.len()];
    let mut ident = None;
    for (n, f) in dev.frames.iter().enumerate() {
        assert!(f.len() <= 1514);
        let p = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.more_frags(), n < 2);
        assert!(!p.dont_frag());
        assert_eq!(*ident.get_or_insert(p.ident()), p.ident());
        let off = p.frag_offset() as usize;
        assert_eq!(off, n * 1480);
        datagram[off..off + p.payload().len()].copy_from_slice(p.payload());
    }
    let u = UdpPacket::new_checked(&datagram[..]).unwrap();
    assert_eq!(u.len() as usize, datagram.len());
    assert!(u.verify_checksum(IP_A, IP_B));
    assert_eq!(u.payload(), &data[..]);
}

#[test]
fn udp_send_buffer_full_is_eagain_and_not_writable() {
    let mut i = iface(MAC_A, IP_A);
    let s = i.udp.open().unwrap();
    i.udp.set_send_buffer_size(s, 4096).unwrap();
    let dst = Some(SocketAddrV4::new(IP_B, 9).into());
    let d = [7u8; 1000];
    for _ in 0..4 {
        assert_eq!(i.udp.send_to(s, &d, dst), Ok(1000));
    }
    assert_eq!(i.udp.send_to(s, &d, dst), Err(Error::WouldBlock));
    assert!(!i.udp.readiness(s).unwrap().writable());
    // Once sent, writable again.
    i.set_neighbor(IP_B, MAC_B);
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 4);
    assert!(i.udp.readiness(s).unwrap().writable());
}

#[test]
fn udp_receive_buffer_full_drops_and_counts() {
    let mut i = iface(MAC_A, IP_A);
    let s = i.udp.open().unwrap();
    i.udp.bind(s, SocketAddrV4::new(IP_A, 9)).unwrap();
    i.udp.set_recv_buffer_size(s, 1000).unwrap();
    let f = udp_frame(
        SocketAddrV4::new(IP_B, 1),
        SocketAddrV4::new(IP_A, 9),
        &[1u8; 400],
    );
    for _ in 0..3 {
        i.receive(T0, &f);
    }
    assert_eq!(i.stats().udp_datagrams_received, 2);
    assert_eq!(i.stats().dropped(DropReason::UdpBufferFull), 1);
}

#[test]
fn closed_port_gets_icmp_unreachable_and_peer_sees_econnrefused() {
    // A sends to B's closed port; B answers port unreachable; A's connected socket
    // reports ECONNREFUSED, as Linux does.
    let mut a = iface(MAC_A, IP_A);
    let mut b = iface(MAC_B, IP_B);
    a.set_neighbor(IP_B, MAC_B);
    b.set_neighbor(IP_A, MAC_A);
    let mut dev = QueueDevice::new(1500);
    let s = a.udp.open().unwrap();
    a.udp.connect(s, SocketAddrV4::new(IP_B, 9999)).unwrap();
    a.udp.send_to(s, b"anyone?", None).unwrap();
    a.dispatch(T0, &mut dev);
    let f = dev.frames.pop_front().unwrap();
    b.receive(T0, &f);
    assert_eq!(b.stats().dropped(DropReason::UdpNoSocket), 1);
    b.dispatch(T0, &mut dev);
    let reply = dev.frames.pop_front().unwrap();
    let (_, ip, l4) = sent_ipv4(&reply);
    assert_eq!((ip.src, ip.dst, ip.protocol), (IP_B, IP_A, 1));
    let p = IcmpPacket::new_checked(&l4[..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!((p.msg_type(), p.code()), (3, 3));
    assert_eq!(b.stats().icmp_unreachables_sent, 1);
    a.receive(T0, &reply);
    let r = a.udp.readiness(s).unwrap();
    assert!(r.error() && r.readable());
    let mut buf = [0u8; 8];
    assert_eq!(a.udp.recv_from(s, &mut buf), Err(Error::ConnectionRefused));
    assert_eq!(a.udp.recv_from(s, &mut buf), Err(Error::WouldBlock));
}

#[test]
fn two_interfaces_exchange_udp_with_own_arp() {
    let mut a = iface(MAC_A, IP_A);
    let mut b = iface(MAC_B, IP_B);
    let mut ab = QueueDevice::new(1500);
    let mut ba = QueueDevice::new(1500);
    let sa = a.udp.open().unwrap();
    let sb = b.udp.open().unwrap();
    b.udp
        .bind(sb, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53))
        .unwrap();
    for n in 0..10u8 {
        a.udp
            .send_to(sa, &[n; 100], Some(SocketAddrV4::new(IP_B, 53).into()))
            .unwrap();
    }
    let mut now = T0;
    for _ in 0..10 {
        a.dispatch(now, &mut ab);
        while let Some(f) = ab.frames.pop_front() {
            b.receive(now, &f);
        }
        b.dispatch(now, &mut ba);
        while let Some(f) = ba.frames.pop_front() {
            a.receive(now, &f);
        }
        now += Duration::from_millis(1);
    }
    let mut buf = [0u8; 200];
    for n in 0..10u8 {
        let r = b.udp.recv_from(sb, &mut buf).unwrap();
        assert_eq!(r.len, 100);
        assert_eq!(r.from.ip(), IP_A);
        assert!(buf[..100].iter().all(|&x| x == n));
    }
    assert_eq!(a.stats().arp_requests_sent, 1);
    assert_eq!(b.stats().arp_replies_sent, 1);
    assert_eq!(a.stats().dropped_total(), 0);
    assert_eq!(b.stats().dropped_total(), 0);
}

#[test]
fn echo_request_is_answered() {
    let mut i = iface(MAC_A, IP_A);
    let mut dev = QueueDevice::new(1500);
    let req = IcmpRepr::EchoRequest {
        ident: 77,
        seq: 3,
        data: b"0123456789",
    };
    let mut l4 = vec![0u8; req.buffer_len()];
    req.emit(&mut l4);
    i.receive(
        T0,
        &eth(MAC_A, EtherType::Ipv4, &ip_packet(IP_B, IP_A, 1, &l4)),
    );
    i.dispatch(T0, &mut dev);
    let (e, ip, l4r) = sent_ipv4(&dev.frames.pop_front().unwrap());
    assert_eq!(e.dst, MAC_B);
    assert_eq!((ip.src, ip.dst), (IP_A, IP_B));
    let p = IcmpPacket::new_checked(&l4r[..]).unwrap();
    assert_eq!(
        IcmpRepr::parse(&p, true).unwrap(),
        IcmpRepr::EchoReply {
            ident: 77,
            seq: 3,
            data: b"0123456789"
        }
    );
    assert_eq!(i.stats().icmp_echo_replies_sent, 1);

    // Bad ICMP checksum: counted, no reply.
    l4[9] ^= 0xff;
    i.receive(
        T0,
        &eth(MAC_A, EtherType::Ipv4, &ip_packet(IP_B, IP_A, 1, &l4)),
    );
    assert_eq!(i.stats().dropped(DropReason::IcmpBadChecksum), 1);
    l4[9] ^= 0xff;
    // Broadcast ping: ignored like Linux's default.
    i.receive(
        T0,
        &eth(
            MacAddr::BROADCAST,
            EtherType::Ipv4,
            &ip_packet(IP_B, Ipv4Addr::new(10, 77, 0, 255), 1, &l4),
        ),
    );
    i.dispatch(T0, &mut dev);
    assert!(dev.frames.is_empty());
    assert_eq!(i.stats().dropped(DropReason::IcmpIgnored), 1);
}

#[test]
fn malformed_and_foreign_frames_are_counted_by_reason() {
    let mut i = iface(MAC_A, IP_A);
    let udp_ok = udp_frame(SocketAddrV4::new(IP_B, 1), SocketAddrV4::new(IP_A, 2), b"x");
    i.receive(T0, &udp_ok[..10]);
    assert_eq!(i.stats().dropped(DropReason::EthernetTruncated), 1);

    let mut other_mac = udp_ok.clone();
    other_mac[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    i.receive(T0, &other_mac);
    assert_eq!(i.stats().dropped(DropReason::EthernetNotForUs), 1);

    i.receive(T0, &eth(MAC_A, EtherType::Ipv6, &[0u8; 40]));
    assert_eq!(i.stats().dropped(DropReason::UnknownEthertype), 1);

    let mut bad_sum = udp_ok.clone();
    bad_sum[14 + 8] = 1; // TTL changed: IPv4 header checksum wrong
    i.receive(T0, &bad_sum);
    assert_eq!(i.stats().dropped(DropReason::Ipv4BadChecksum), 1);

    let mut ip = ip_packet(IP_B, IP_A, 17, &[0u8; 16]);
    ip[6] = 0x20; // MF
    Ipv4Packet::new_checked(&mut ip[..])
        .unwrap()
        .fill_checksum();
    i.receive(T0, &eth(MAC_A, EtherType::Ipv4, &ip));
    assert_eq!(i.stats().dropped(DropReason::Ipv4Fragment), 1);

    let not_ours = ip_packet(IP_B, Ipv4Addr::new(10, 77, 0, 3), 17, &[0u8; 16]);
    i.receive(T0, &eth(MAC_A, EtherType::Ipv4, &not_ours));
    assert_eq!(i.stats().dropped(DropReason::Ipv4NotForUs), 1);

    let mut trunc = ip_packet(IP_B, IP_A, 17, &[0u8; 16]);
    trunc.truncate(30);
    i.receive(T0, &eth(MAC_A, EtherType::Ipv4, &trunc));
    assert_eq!(i.stats().dropped(DropReason::Ipv4Truncated), 1);

    i.receive(
        T0,
        &eth(
            MAC_A,
            EtherType::Ipv4,
            &ip_packet(IP_B, IP_A, 47, &[0u8; 8]),
        ),
    );
    assert_eq!(i.stats().dropped(DropReason::UnknownProtocol), 1);

    let mut udp_bad = udp_ok.clone();
    let n = udp_bad.len();
    udp_bad[n - 1] ^= 0x55;
    i.receive(T0, &udp_bad);
    assert_eq!(i.stats().dropped(DropReason::UdpBadChecksum), 1);

    // A TCP segment with a wrong checksum never reaches TCP.
    let mut seg = [0u8; 20];
    seg[12] = 0x50;
    seg[16] = 0xde;
    i.receive(
        T0,
        &eth(MAC_A, EtherType::Ipv4, &ip_packet(IP_B, IP_A, 6, &seg)),
    );
    assert_eq!(i.stats().dropped(DropReason::TcpBadChecksum), 1);
    assert_eq!(i.stats().tcp_segments_received, 0);
    seg[16] = 0;
    seg[17] = 0;
    let c = checksum::transport_checksum(IP_B, IP_A, 6, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    i.receive(
        T0,
        &eth(MAC_A, EtherType::Ipv4, &ip_packet(IP_B, IP_A, 6, &seg)),
    );
    assert_eq!(i.stats().tcp_segments_received, 1);

    assert_eq!(i.stats().rx_frames, 11);
    assert_eq!(i.stats().dropped_total(), 10);
}

#[test]
fn ip_options_and_ethernet_padding_are_skipped() {
    let mut i = iface(MAC_A, IP_A);
    let s = i.udp.open().unwrap();
    i.udp.bind(s, SocketAddrV4::new(IP_A, 7)).unwrap();
    let mut l4 = vec![0u8; 8 + 3];
    UdpRepr {
        src_port: 1,
        dst_port: 7,
    }
    .emit(&mut l4, IP_B, IP_A, b"opt", true);
    let plain = ip_packet(IP_B, IP_A, 17, &l4);
    // Insert 8 bytes of options (NOP NOP NOP NOP, then EOL + padding).
    let mut ip = plain[..20].to_vec();
    ip.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0]);
    ip.extend_from_slice(&l4);
    ip[0] = 0x47;
    let tl = ip.len() as u16;
    ip[2..4].copy_from_slice(&tl.to_be_bytes());
    Ipv4Packet::new_checked(&mut ip[..])
        .unwrap()
        .fill_checksum();
    let mut f = eth(MAC_A, EtherType::Ipv4, &ip);
    f.resize(60.max(f.len()) + 6, 0xee); // trailing padding beyond total length
    i.receive(T0, &f);
    let mut buf = [0u8; 8];
    let r = i.udp.recv_from(s, &mut buf).unwrap();
    assert_eq!(&buf[..r.len], b"opt");
}

#[test]
fn external_neighbors_list_missing_next_hop_via_gateway() {
    let mut cfg = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(IP_A, 24));
    cfg.neighbor_mode = NeighborMode::External;
    let gw = Ipv4Addr::new(10, 77, 0, 254);
    cfg.gateway = Some(gw);
    let mut i = Interface::new(cfg, TcpConfig::default());
    let mut dev = QueueDevice::new(1500);
    let s = i.udp.open().unwrap();
    let far = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 53);
    i.udp.send_to(s, b"q", Some(far.into())).unwrap();
    i.dispatch(T0, &mut dev);
    assert!(dev.frames.is_empty(), "no ARP in external mode");
    assert_eq!(i.missing_neighbors().collect::<Vec<_>>(), vec![gw]);
    // Nothing tells the host when the kernel resolves it: it is asked to look again
    // soon, then less and less often while the next hop stays unknown.
    let recheck = T0 + EXTERNAL_FIRST_RECHECK;
    assert_eq!(i.poll_at(), Some(recheck));
    i.dispatch(recheck, &mut dev);
    assert_eq!(
        i.poll_at(),
        Some(recheck + EXTERNAL_FIRST_RECHECK + EXTERNAL_FIRST_RECHECK)
    );
    assert!(dev.frames.is_empty());
    // ARP frames are the kernel's business here.
    i.receive(
        T0,
        &arp_frame(ArpOperation::Request, IP_B, IP_A, MacAddr::BROADCAST),
    );
    assert_eq!(i.stats().dropped(DropReason::ArpIgnored), 1);
    i.set_neighbor(gw, MAC_B);
    assert_eq!(i.poll_at(), Some(Instant::ZERO));
    i.dispatch(T0, &mut dev);
    let (e, ip, _) = sent_ipv4(&dev.frames[0]);
    assert_eq!(e.dst, MAC_B);
    assert_eq!(ip.dst, *far.ip());
    assert_eq!(i.missing_neighbors().count(), 0);
}

#[test]
fn external_neighbor_failure_drops_the_held_frames() {
    let mut cfg = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(IP_A, 24));
    cfg.neighbor_mode = NeighborMode::External;
    let mut i = Interface::new(cfg, TcpConfig::default());
    let mut dev = QueueDevice::new(1500);
    let s = i.udp.open().unwrap();
    let t = i.udp.open().unwrap();
    let dead = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 99), 53);
    let alive = SocketAddrV4::new(IP_B, 53);
    i.udp.send_to(s, b"1", Some(dead.into())).unwrap();
    i.udp.send_to(t, b"2", Some(alive.into())).unwrap();
    i.dispatch(T0, &mut dev);
    assert!(dev.frames.is_empty());
    assert_eq!(i.missing_neighbors().count(), 2);
    i.neighbor_failed(*dead.ip(), T0);
    assert_eq!(i.missing_neighbors().collect::<Vec<_>>(), vec![IP_B]);
    assert_eq!(i.poll_at(), Some(Instant::ZERO));
    i.dispatch(T0, &mut dev);
    assert_eq!(i.stats().dropped(DropReason::NeighborFailed), 1);
    assert!(dev.frames.is_empty());
    // The other next hop's frame still waits, and leaves once it resolves.
    i.set_neighbor(IP_B, MAC_B);
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    let (_, ip, _) = sent_ipv4(&dev.frames[0]);
    assert_eq!(ip.dst, IP_B);
    // A later datagram to the failed hop, after the hold, asks for it again.
    let later = T0 + Duration::from_secs(60);
    i.udp.send_to(s, b"3", Some(dead.into())).unwrap();
    i.dispatch(later, &mut dev);
    assert_eq!(i.missing_neighbors().collect::<Vec<_>>(), vec![*dead.ip()]);
}

#[test]
fn tcp_connect_picks_the_source_and_resolves_the_peer() {
    let mut i = iface(MAC_A, IP_A);
    let far = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80);
    assert_eq!(i.tcp_connect(None, far), Err(Error::NetworkUnreachable));
    assert_eq!(
        i.tcp_connect(
            Some(SocketAddrV4::new(IP_B, 0).into()),
            SocketAddrV4::new(IP_B, 80)
        ),
        Err(Error::AddrNotAvailable)
    );
    let h = i.tcp_connect(None, SocketAddrV4::new(IP_B, 80)).unwrap();
    assert_eq!(i.tcp.local_addr(h).unwrap().ip(), IP_A);
    // The SYN waits for ARP: the first dispatch sends the request only.
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    let (_, a) = sent_arp(&dev.frames.pop_front().unwrap());
    assert_eq!((a.operation, a.target_ip), (ArpOperation::Request, IP_B));
    // The SYN is held by the interface, so nothing is due before the ARP retry: the
    // host does not spin while the neighbour resolves.
    let next = i.poll_at().unwrap();
    assert!(next > T0, "{next:?}");
    i.receive(T0, &arp_frame(ArpOperation::Reply, IP_B, IP_A, MAC_A));
    i.dispatch(T0, &mut dev);
    let (e, ip, seg) = sent_ipv4(&dev.frames[0]);
    assert_eq!((e.dst, ip.protocol, ip.dst), (MAC_B, 6, IP_B));
    assert_eq!(seg[13] & 0x02, 0x02, "a SYN");
    assert_eq!(checksum::transport_checksum(IP_A, IP_B, 6, &seg), 0);
}

/// Runs both interfaces until neither has anything to send.
fn exchange(a: &mut Interface, b: &mut Interface, now: Instant) {
    let mut ab = QueueDevice::new(1500);
    let mut ba = QueueDevice::new(1500);
    for _ in 0..20 {
        a.dispatch(now, &mut ab);
        while let Some(f) = ab.frames.pop_front() {
            b.receive(now, &f);
        }
        b.dispatch(now, &mut ba);
        while let Some(f) = ba.frames.pop_front() {
            a.receive(now, &f);
        }
    }
}

#[test]
fn readiness_changes_of_udp_and_tcp_come_through_one_queue() {
    let mut a = iface(MAC_A, IP_A);
    let mut b = iface(MAC_B, IP_B);
    let l = b.tcp.listen(SocketAddrV4::new(IP_B, 80), 4).unwrap();
    let u = b.udp.open().unwrap();
    b.udp.bind(u, SocketAddrV4::new(IP_B, 53)).unwrap();
    while b.pop_readiness_change().is_some() {}
    let c = a.tcp_connect(None, SocketAddrV4::new(IP_B, 80)).unwrap();
    let s = a.udp.open().unwrap();
    a.udp
        .send_to(s, b"q", Some(SocketAddrV4::new(IP_B, 53).into()))
        .unwrap();
    exchange(&mut a, &mut b, T0);
    let mut changed = Vec::new();
    while let Some(ch) = b.pop_readiness_change() {
        changed.push(ch);
    }
    // The listener became readable (a connection to accept), the UDP socket too.
    assert!(changed
        .iter()
        .any(|ch| ch.handle == l && ch.readiness.readable()));
    assert!(changed
        .iter()
        .any(|ch| ch.handle == u && ch.readiness.readable()));
    let mut seen_writable = false;
    while let Some(ch) = a.pop_readiness_change() {
        seen_writable |= ch.handle == c && ch.readiness.writable();
    }
    assert!(seen_writable, "the connecting socket became writable");
}

#[test]
fn unresolved_peer_does_not_hold_up_other_connections() {
    let mut i = iface(MAC_A, IP_A);
    let ip_c = Ipv4Addr::new(10, 77, 0, 3);
    i.set_neighbor(ip_c, MacAddr([2, 0, 0, 0, 0, 0xc]));
    let slow = i.tcp_connect(None, SocketAddrV4::new(IP_B, 80)).unwrap();
    let fast = i.tcp_connect(None, SocketAddrV4::new(ip_c, 80)).unwrap();
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    // The SYN to the known neighbour left; the other waits for ARP, held.
    let syns: Vec<Ipv4Addr> = dev
        .frames
        .iter()
        .filter(|f| f[12..14] == [0x08, 0x00])
        .map(|f| sent_ipv4(f).1.dst)
        .collect();
    assert_eq!(syns, vec![ip_c]);
    assert_eq!(i.stats().arp_requests_sent, 1);
    let _ = (slow, fast);
    // B never answers: after the probes the held SYN is dropped, counted.
    let mut now = T0;
    for _ in 0..4 {
        now += Duration::from_secs(1);
        i.dispatch(now, &mut dev);
    }
    assert_eq!(i.stats().arp_requests_sent, 3);
    assert!(i.stats().dropped(DropReason::NeighborFailed) >= 1);
}

#[test]
fn vlan_tag_must_match_and_replies_are_tagged() {
    let mut cfg = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(IP_A, 24));
    cfg.vlan = Some(100);
    let mut i = Interface::new(cfg, TcpConfig::default());
    let mut dev = QueueDevice::new(1500);
    let untagged = arp_frame(ArpOperation::Request, IP_B, IP_A, MacAddr::BROADCAST);
    i.receive(T0, &untagged);
    assert_eq!(i.stats().dropped(DropReason::VlanMismatch), 1);
    let mut tagged = untagged[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
    tagged.extend_from_slice(&untagged[12..]);
    i.receive(T0, &tagged);
    i.dispatch(T0, &mut dev);
    let f = EthernetFrame::new_checked(&dev.frames[0][..]).unwrap();
    assert_eq!(f.vlan_id(), Some(100));
    assert_eq!(f.ethertype(), EtherType::Arp);
}

#[test]
fn device_full_keeps_work_for_later() {
    let mut i = iface(MAC_A, IP_A);
    i.set_neighbor(IP_B, MAC_B);
    let s = i.udp.open().unwrap();
    for _ in 0..3 {
        i.udp
            .send_to(s, b"d", Some(SocketAddrV4::new(IP_B, 5).into()))
            .unwrap();
    }
    let mut dev = QueueDevice::new(1500);
    dev.limit = Some(2);
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 2);
    assert_eq!(i.stats().tx_device_full, 1);
    assert_eq!(i.poll_at(), Some(Instant::ZERO));
    dev.frames.clear();
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    assert_eq!(i.stats().udp_datagrams_sent, 3);
}

#[test]
fn checksum_offload_leaves_fields_zero() {
    let mut i = iface(MAC_A, IP_A);
    i.set_neighbor(IP_B, MAC_B);
    let s = i.udp.open().unwrap();
    i.udp
        .send_to(s, b"off", Some(SocketAddrV4::new(IP_B, 5).into()))
        .unwrap();
    let mut dev = QueueDevice::new(1500);
    dev.checksum.tx_fill = true;
    i.dispatch(T0, &mut dev);
    let f = &dev.frames[0];
    assert_eq!(
        &f[14 + 10..14 + 12],
        &[0, 0],
        "IPv4 checksum left to the NIC"
    );
    assert_eq!(&f[34 + wudp::CHECKSUM_OFFSET..34 + 8], &[0, 0]);
}

proptest! {
    #[test]
    fn receive_never_panics_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut i = iface(MAC_A, IP_A);
        let s = i.udp.open().unwrap();
        i.udp.bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
        i.receive(T0, &data);
        let mut dev = QueueDevice::new(1500);
        i.dispatch(T0, &mut dev);
        prop_assert_eq!(i.stats().rx_frames, 1);
    }

    /// Valid frames with a few bytes flipped: every path past the Ethernet header.
    #[test]
    fn receive_never_panics_on_mutated_frames(
        kind in 0u8..4,
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6),
        cut in 0usize..130,
    ) {
        let mut f = match kind {
            0 => udp_frame(SocketAddrV4::new(IP_B, 1), SocketAddrV4::new(IP_A, 53), b"payload!"),
            1 => arp_frame(ArpOperation::Request, IP_B, IP_A, MacAddr::BROADCAST),
            2 => {
                let req = IcmpRepr::EchoRequest { ident: 1, seq: 1, data: b"abcdefgh" };
                let mut l4 = vec![0u8; req.buffer_len()];
                req.emit(&mut l4);
                eth(MAC_A, EtherType::Ipv4, &ip_packet(IP_B, IP_A, 1, &l4))
            }
            _ => {
                let mut quote = ip_packet(IP_A, IP_B, 17, &[0u8; 8]);
                quote[20..22].copy_from_slice(&53u16.to_be_bytes());
                let m = IcmpRepr::DstUnreachable { code: 3, original: &quote };
                let mut l4 = vec![0u8; m.buffer_len()];
                m.emit(&mut l4);
                eth(MAC_A, EtherType::Ipv4, &ip_packet(IP_B, IP_A, 1, &l4))
            }
        };
        for (at, v) in flips {
            if at < f.len() {
                f[at] = v;
            }
        }
        f.truncate(cut.max(1));
        let mut i = iface(MAC_A, IP_A);
        let s = i.udp.open().unwrap();
        i.udp.bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
        i.receive(T0, &f);
        let mut dev = QueueDevice::new(1500);
        i.dispatch(T0, &mut dev);
        for out in &dev.frames {
            // Whatever we answer is well formed.
            let e = EthernetRepr::parse(&EthernetFrame::new_checked(&out[..]).unwrap()).unwrap();
            if e.ethertype == EtherType::Ipv4 {
                let _ = sent_ipv4(out);
            }
        }
    }
}

/// TCP sums the payload while copying it out of the send ring (`IpTx::send_summed`) and
/// the IP layer adds only the header: every segment must still carry the checksum
/// computed over the whole segment, for payloads of every length and for data that
/// wraps around the ring (an odd-length first piece included).
#[test]
fn tcp_checksums_summed_while_copying_are_whole_segment_checksums() {
    let small = TcpConfig {
        sndbuf: 4000,
        rcvbuf: 4000,
        ..TcpConfig::default()
    };
    let mk = |mac, ip| {
        let mut i = Interface::new(
            InterfaceConfig::new(mac, Ipv4Cidr::new(ip, 24)),
            small.clone(),
        );
        i.set_neighbor(
            if ip == IP_A { IP_B } else { IP_A },
            if ip == IP_A { MAC_B } else { MAC_A },
        );
        i
    };
    let (mut a, mut b) = (mk(MAC_A, IP_A), mk(MAC_B, IP_B));
    let l = b.tcp.listen(SocketAddrV4::new(IP_B, 80), 1).unwrap();
    let c = a.tcp_connect(None, SocketAddrV4::new(IP_B, 80)).unwrap();
    exchange(&mut a, &mut b, T0);
    let s = b.tcp.accept(l).unwrap();
    // No Nagle: with the clock standing still, a held tail would wait for a delayed ACK.
    a.tcp.set_nodelay(c, true).unwrap();
    let mut sent = Vec::new();
    let mut got = Vec::new();
    let mut segments = 0;
    // Lengths 1..=1600 in odd steps move the ring's head through odd offsets.
    for (k, len) in (1..=1600usize).step_by(37).enumerate() {
        let data: Vec<u8> = (0..len).map(|j| (j * 7 + k) as u8).collect();
        let n = a.tcp.send(c, &data).unwrap();
        sent.extend_from_slice(&data[..n]);
        let mut dev = QueueDevice::new(1500);
        a.dispatch(T0, &mut dev);
        for f in dev.frames.drain(..) {
            let (_, ip, seg) = sent_ipv4(&f);
            assert_eq!(ip.protocol, 6);
            assert_eq!(checksum::transport_checksum(IP_A, IP_B, 6, &seg), 0);
            segments += 1;
            b.receive(T0, &f);
        }
        exchange(&mut a, &mut b, T0);
        let mut buf = [0u8; 4000];
        while let Ok(n) = b.tcp.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    exchange(&mut a, &mut b, T0);
    let mut buf = [0u8; 4000];
    while let Ok(n) = b.tcp.recv(s, &mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(segments >= 10, "{segments}");
    assert_eq!(b.stats().dropped(DropReason::TcpBadChecksum), 0);
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "bytes differ");
}

/// An established connection from `a` to `b` (same seed and inputs every time), and a
/// data frame `a` sent on it that `b` has not seen.
fn tcp_pair_with_frame() -> (Interface, Vec<u8>) {
    let mk = |mac, ip: Ipv4Addr| {
        let mut i = Interface::new(
            InterfaceConfig::new(mac, Ipv4Cidr::new(ip, 24)),
            TcpConfig::default(),
        );
        i.set_neighbor(
            if ip == IP_A { IP_B } else { IP_A },
            if ip == IP_A { MAC_B } else { MAC_A },
        );
        i
    };
    let (mut a, mut b) = (mk(MAC_A, IP_A), mk(MAC_B, IP_B));
    let l = b.tcp.listen(SocketAddrV4::new(IP_B, 80), 1).unwrap();
    let c = a.tcp_connect(None, SocketAddrV4::new(IP_B, 80)).unwrap();
    exchange(&mut a, &mut b, T0);
    b.tcp.accept(l).unwrap();
    a.tcp.send(c, b"hello, predicted path").unwrap();
    let mut dev = QueueDevice::new(1500);
    a.dispatch(T0, &mut dev);
    (b, dev.frames.pop_front().unwrap())
}

/// Feeds `frame` (changed: byte `at` xored, `cut` bytes cut off, `pad` zeros added,
/// checksums optionally made right again) to one interface through `receive` and to an
/// identical one through the general path alone; both must end up the same.
fn check_prediction(at: usize, xor: u8, cut: usize, pad: usize, fix_ip: bool, fix_tcp: bool) {
    let (mut b1, frame) = tcp_pair_with_frame();
    let (mut b2, _) = tcp_pair_with_frame();
    let mut f = frame.clone();
    if at < f.len() {
        f[at] ^= xor;
    }
    // Checksums made right again after the change, so it reaches the checks behind
    // them (options, fragments, addresses, TCP itself).
    if fix_tcp && f.len() >= 54 {
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        f[50] = 0;
        f[51] = 0;
        let c = checksum::transport_checksum(src, dst, 6, &f[34..]);
        f[50..52].copy_from_slice(&c.to_be_bytes());
    }
    if fix_ip && f.len() >= 34 {
        f[24] = 0;
        f[25] = 0;
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let cut = cut.min(f.len());
    f.truncate(f.len() - cut);
    f.extend(std::iter::repeat_n(0u8, pad));
    b1.receive(T0, &f);
    b2.core.stats.rx_frames += 1;
    b2.core.stats.rx_bytes += f.len() as u64;
    b2.receive_general(T0, &f, true);
    let case =
        format!("at {at} xor {xor:#x} cut {cut} pad {pad} fix_ip {fix_ip} fix_tcp {fix_tcp}");
    assert_eq!(
        format!("{:?}", b1.stats()),
        format!("{:?}", b2.stats()),
        "{case}"
    );
    assert_eq!(b1.tcp.stats(), b2.tcp.stats(), "{case}");
    let mut d1 = QueueDevice::new(1500);
    let mut d2 = QueueDevice::new(1500);
    b1.dispatch(T0, &mut d1);
    b2.dispatch(T0, &mut d2);
    assert_eq!(d1.frames, d2.frames, "{case}");
}

/// The receive path's header prediction changes nothing: every header byte of a TCP
/// data frame flipped in a few ways, with and without checksums repaired.
#[test]
fn predicted_receive_matches_the_general_path() {
    for at in 0..80 {
        for xor in [0x01, 0x08, 0x20, 0x40, 0x80, 0xff] {
            for fixes in 0..4 {
                check_prediction(at, xor, 0, 0, fixes & 1 != 0, fixes & 2 != 0);
            }
        }
    }
}

proptest! {
    /// ... and frames cut short or padded, with random changes.
    #[test]
    fn predicted_receive_matches_the_general_path_when_cut_or_padded(
        at in 0usize..80, xor in 0u8..=255, cut in 0usize..4, pad in 0usize..3,
        fix_ip: bool, fix_tcp: bool,
    ) {
        check_prediction(at, xor, [0, 1, 30, 40][cut], [0, 1, 6][pad], fix_ip, fix_tcp);
    }
}

#[test]
fn a_tcp_data_frame_takes_the_predicted_path() {
    let (mut b, frame) = tcp_pair_with_frame();
    let before = b.tcp.stats().segments_in;
    assert!(b.receive_tcp_predicted(T0, &frame, true));
    assert_eq!(b.tcp.stats().segments_in, before + 1);
}

/// The interface remembers the last destination's next hop; changing the gateway or
/// the addresses must route the next packet afresh.
#[test]
fn next_hop_follows_gateway_and_address_changes() {
    let mut cfg = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(IP_A, 24));
    cfg.neighbor_mode = NeighborMode::External;
    let (gw1, gw2) = (Ipv4Addr::new(10, 77, 0, 254), Ipv4Addr::new(10, 77, 0, 253));
    let (mac1, mac2, mac_far) = (
        MacAddr([2, 0, 0, 0, 1, 1]),
        MacAddr([2, 0, 0, 0, 1, 2]),
        MacAddr([2, 0, 0, 0, 1, 3]),
    );
    cfg.gateway = Some(gw1);
    let mut i = Interface::new(cfg, TcpConfig::default());
    let far_ip = Ipv4Addr::new(192, 0, 2, 1);
    i.set_neighbor(gw1, mac1);
    i.set_neighbor(gw2, mac2);
    i.set_neighbor(far_ip, mac_far);
    let s = i.udp.open().unwrap();
    let far = SocketAddrV4::new(far_ip, 53);
    let send_and_see = |i: &mut Interface| {
        i.udp.send_to(s, b"q", Some(far.into())).unwrap();
        let mut dev = QueueDevice::new(1500);
        i.dispatch(T0, &mut dev);
        assert_eq!(dev.frames.len(), 1);
        let (e, ip, _) = sent_ipv4(&dev.frames[0]);
        assert_eq!(ip.dst, far_ip);
        e.dst
    };
    assert_eq!(send_and_see(&mut i), mac1);
    assert_eq!(send_and_see(&mut i), mac1);
    i.set_gateway(Some(gw2));
    assert_eq!(send_and_see(&mut i), mac2);
    // Now on-link: straight to its own MAC.
    i.set_addrs(vec![
        Ipv4Cidr::new(IP_A, 24),
        Ipv4Cidr::new(Ipv4Addr::new(192, 0, 2, 9), 24),
    ]);
    assert_eq!(send_and_see(&mut i), mac_far);
    i.set_addrs(vec![Ipv4Cidr::new(IP_A, 24)]);
    assert_eq!(send_and_see(&mut i), mac2);
    // A TCP connection's retransmitted SYN after the route is gone: dropped, not sent
    // to the old gateway.
    i.tcp_connect(None, SocketAddrV4::new(far_ip, 80)).unwrap();
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    assert_eq!(sent_ipv4(&dev.frames[0]).0.dst, mac2);
    i.set_gateway(None);
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0 + Duration::from_secs(5), &mut dev);
    assert!(dev.frames.is_empty(), "no route: nothing sent");
    assert!(i.stats().dropped(DropReason::NoRoute) >= 1);
}

#[test]
fn udp_datagram_keeps_destination_tos_ttl_and_arrival() {
    let mut i = iface(MAC_A, IP_A);
    let s = i.udp.open().unwrap();
    i.udp
        .bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5353))
        .unwrap();
    let from = SocketAddrV4::new(IP_B, 4444);
    let to = SocketAddrV4::new(IP_A, 5353);
    let mut frame = udp_frame(from, to, b"q");
    // TOS 0xb8 (DSCP EF), TTL 17: rewrite the IPv4 header and its checksum.
    {
        let mut p = Ipv4Packet::new_checked(&mut frame[14..]).unwrap();
        p.set_ttl(17);
    }
    frame[15] = 0xb8;
    Ipv4Packet::new_checked(&mut frame[14..])
        .unwrap()
        .fill_checksum();
    let at = T0 + Duration::from_micros(1234);
    i.receive(at, &frame);
    let mut buf = [0u8; 8];
    let peeked = i.udp.peek_from(s, &mut buf).unwrap();
    let r = i.udp.recv_from(s, &mut buf).unwrap();
    assert_eq!(peeked, r);
    assert_eq!(r.from, from.into());
    assert_eq!(
        r.info,
        RxInfo {
            to: to.into(),
            tos: 0xb8,
            ttl: 17,
            arrival: at
        }
    );
}

#[test]
fn udp_send_with_chosen_source_address() {
    let mut cfg = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(IP_A, 24));
    let second = Ipv4Addr::new(10, 77, 1, 1);
    cfg.addrs.push(Ipv4Cidr::new(second, 24));
    let mut i = Interface::new(cfg, TcpConfig::default());
    let mut dev = QueueDevice::new(1500);
    i.receive(T0, &arp_frame(ArpOperation::Reply, IP_B, IP_A, MAC_A));
    let s = i.udp.open().unwrap();
    i.udp
        .bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5353))
        .unwrap();
    let dst = SocketAddrV4::new(IP_B, 9000);
    // Not an address of this interface, or not a unicast one: as Linux's route lookup
    // answers.
    assert_eq!(
        i.udp.send_to_from(
            s,
            b"x",
            Some(dst.into()),
            Some(Ipv4Addr::new(10, 9, 9, 9).into())
        ),
        Err(Error::NetworkUnreachable)
    );
    assert_eq!(
        i.udp.send_to_from(
            s,
            b"x",
            Some(dst.into()),
            Some(Ipv4Addr::new(224, 0, 0, 1).into())
        ),
        Err(Error::InvalidInput)
    );
    assert_eq!(
        i.udp
            .send_to_from(s, b"a", Some(dst.into()), Some(second.into())),
        Ok(1)
    );
    // Unspecified: the route's source, as without the control message.
    assert_eq!(
        i.udp.send_to_from(
            s,
            b"b",
            Some(dst.into()),
            Some(Ipv4Addr::UNSPECIFIED.into())
        ),
        Ok(1)
    );
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 2);
    let (_, ip, l4) = sent_ipv4(&dev.frames[0]);
    assert_eq!((ip.src, ip.dst), (second, IP_B));
    let u = UdpPacket::new_checked(&l4[..]).unwrap();
    assert!(u.verify_checksum(second, IP_B));
    assert_eq!((u.src_port(), u.payload()), (5353, &b"a"[..]));
    let (_, ip, _) = sent_ipv4(&dev.frames[1]);
    assert_eq!(ip.src, IP_A);
}
