//! IPv6 receive tests: Neighbor Solicitations and echo requests answered, every drop
//! counted by its reason.

use super::*;
use crate::device::QueueDevice;
use crate::error::Error;
use crate::wire::icmpv6::{NaFlags, ND_HOP_LIMIT};
use crate::wire::ipv6::{self, next_header};
use crate::wire::{Icmpv6Packet, Icmpv6Repr, Ipv6Cidr, Ipv6Packet, Ipv6Repr};
use core::net::Ipv6Addr;
use core::net::SocketAddr;

const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
const IP6_A: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const IP6_B: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const T0: Instant = Instant::from_millis(1000);

fn iface6() -> Interface {
    let mut c = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 1), 24));
    c.ipv6_addrs = vec![Ipv6Cidr::new(IP6_A, 64)];
    Interface::new(c, TcpConfig::default())
}

/// An Ethernet frame from B with an IPv6 packet: `ext` (extension headers, whose first
/// byte chain the caller built) then `l4`.
fn frame6(
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    first_header: u8,
    ext: &[u8],
    l4: &[u8],
) -> Vec<u8> {
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: first_header,
        payload_len: ext.len() + l4.len(),
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    let e = EthernetRepr {
        src: MAC_B,
        dst: dst_mac,
        vlan: None,
        ethertype: EtherType::Ipv6,
    };
    let mut f = vec![0u8; 14 + ip.buffer_len()];
    e.emit(&mut f);
    ip.emit(&mut f[14..]);
    f[54..54 + ext.len()].copy_from_slice(ext);
    f[54 + ext.len()..].copy_from_slice(l4);
    f
}

/// An ICMPv6 frame from B, to our MAC or to the 33:33 MAC of a multicast `dst`.
fn icmp_frame(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, l4: &[u8]) -> Vec<u8> {
    let mac = if ipv6::is_multicast(dst) {
        ipv6::multicast_mac(dst)
    } else {
        MAC_A
    };
    frame6(mac, src, dst, hop_limit, next_header::ICMPV6, &[], l4)
}

fn icmp6(msg: &Icmpv6Repr<'_>, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut b = vec![0u8; msg.buffer_len()];
    msg.emit(&mut b, src, dst);
    b
}

/// A frame sent by the interface, as Ethernet, IPv6 and the ICMPv6 bytes.
fn sent6(frame: &[u8]) -> (EthernetRepr, Ipv6Repr, Vec<u8>) {
    let f = EthernetFrame::new_checked(frame).unwrap();
    let e = EthernetRepr::parse(&f).unwrap();
    assert_eq!(e.ethertype, EtherType::Ipv6);
    let p = Ipv6Packet::new_checked(f.payload()).unwrap();
    let ip = Ipv6Repr::parse(&p).unwrap();
    (e, ip, p.payload().to_vec())
}

fn ns(target: Ipv6Addr, source_lladdr: Option<MacAddr>) -> Icmpv6Repr<'static> {
    Icmpv6Repr::NeighborSolicit {
        target,
        source_lladdr,
    }
}

#[test]
fn neighbor_solicitation_for_our_address_is_answered() {
    let mut i = iface6();
    let mut dev = QueueDevice::new(1500);
    let sn = ipv6::solicited_node(IP6_A);
    let l4 = icmp6(&ns(IP6_A, Some(MAC_B)), IP6_B, sn);
    let f = frame6(
        ipv6::multicast_mac(sn),
        IP6_B,
        sn,
        255,
        next_header::ICMPV6,
        &[],
        &l4,
    );
    i.receive(T0, &f);
    i.dispatch(T0, &mut dev);
    let (e, ip, l4r) = sent6(&dev.frames.pop_front().unwrap());
    assert_eq!((e.src, e.dst), (MAC_A, MAC_B));
    assert_eq!((ip.src, ip.dst, ip.hop_limit), (IP6_A, IP6_B, ND_HOP_LIMIT));
    assert_eq!(ip.next_header, next_header::ICMPV6);
    let p = Icmpv6Packet::new_checked(&l4r[..]).unwrap();
    assert_eq!(
        Icmpv6Repr::parse(&p, IP6_A, IP6_B, true).unwrap(),
        Icmpv6Repr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited: true,
                override_: true
            },
            target: IP6_A,
            target_lladdr: Some(MAC_A),
        }
    );
    assert_eq!(i.stats().nd_advertisements_sent, 1);

    // Unicast NS (reachability check) without a source option: answered to the
    // frame's sender.
    let l4 = icmp6(&ns(IP6_A, None), IP6_B, IP6_A);
    i.receive(T0, &icmp_frame(IP6_B, IP6_A, 255, &l4));
    i.dispatch(T0, &mut dev);
    let (e, ip, _) = sent6(&dev.frames.pop_front().unwrap());
    assert_eq!((e.dst, ip.dst), (MAC_B, IP6_B));

    // DAD probe for our address (from ::): defended to all-nodes, not solicited.
    let u = Ipv6Addr::UNSPECIFIED;
    let l4 = icmp6(&ns(IP6_A, None), u, sn);
    i.receive(T0, &icmp_frame(u, sn, 255, &l4));
    i.dispatch(T0, &mut dev);
    let (e, ip, l4r) = sent6(&dev.frames.pop_front().unwrap());
    assert_eq!(e.dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(ip.dst, ipv6::ALL_NODES);
    let p = Icmpv6Packet::new_checked(&l4r[..]).unwrap();
    let Icmpv6Repr::NeighborAdvert { flags, .. } =
        Icmpv6Repr::parse(&p, IP6_A, ipv6::ALL_NODES, true).unwrap()
    else {
        panic!("not an NA");
    };
    assert!(!flags.solicited && flags.override_);
    assert_eq!(i.stats().nd_advertisements_sent, 3);
    assert_eq!(i.stats().dropped_total(), 0, "{}", i.stats());
}

#[test]
fn neighbor_solicitations_not_answered() {
    let mut i = iface6();
    let mut dev = QueueDevice::new(1500);
    // For another address, to its group: not a MAC we listen to.
    let other: Ipv6Addr = "fd77::99".parse().unwrap();
    let sn = ipv6::solicited_node(other);
    let l4 = icmp6(&ns(other, Some(MAC_B)), IP6_B, sn);
    i.receive(T0, &icmp_frame(IP6_B, sn, 255, &l4));
    assert_eq!(i.stats().dropped(DropReason::EthernetNotForUs), 1);
    // For another address, sent to ours: ignored.
    let l4 = icmp6(&ns(other, Some(MAC_B)), IP6_B, IP6_A);
    i.receive(T0, &icmp_frame(IP6_B, IP6_A, 255, &l4));
    assert_eq!(i.stats().dropped(DropReason::Icmpv6Ignored), 1);
    // Hop limit not 255: from off-link, forged.
    let l4 = icmp6(&ns(IP6_A, Some(MAC_B)), IP6_B, IP6_A);
    i.receive(T0, &icmp_frame(IP6_B, IP6_A, 254, &l4));
    assert_eq!(i.stats().dropped(DropReason::Icmpv6Malformed), 1);
    i.dispatch(T0, &mut dev);
    assert!(dev.frames.is_empty());
    assert_eq!(i.stats().nd_advertisements_sent, 0);
}

#[test]
fn echo_request_is_answered_through_extension_headers() {
    let mut i = iface6();
    let mut dev = QueueDevice::new(1500);
    let req = Icmpv6Repr::EchoRequest {
        ident: 9,
        seq: 4,
        data: b"ping over v6",
    };
    let l4 = icmp6(&req, IP6_B, IP6_A);
    // Hop-by-Hop (PadN) then Destination Options (PadN) then ICMPv6.
    let ext = [
        next_header::DST_OPTIONS,
        0,
        1,
        4,
        0,
        0,
        0,
        0, //
        next_header::ICMPV6,
        0,
        1,
        4,
        0,
        0,
        0,
        0,
    ];
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::HOP_BY_HOP, &ext, &l4),
    );
    i.dispatch(T0, &mut dev);
    let (e, ip, l4r) = sent6(&dev.frames.pop_front().unwrap());
    assert_eq!(
        (e.dst, ip.src, ip.dst, ip.hop_limit),
        (MAC_B, IP6_A, IP6_B, 64)
    );
    let p = Icmpv6Packet::new_checked(&l4r[..]).unwrap();
    assert_eq!(
        Icmpv6Repr::parse(&p, IP6_A, IP6_B, true).unwrap(),
        Icmpv6Repr::EchoReply {
            ident: 9,
            seq: 4,
            data: b"ping over v6"
        }
    );
    assert_eq!(i.stats().icmpv6_echo_replies_sent, 1);
    // Bad checksum: counted, no reply.
    let mut bad = l4.clone();
    bad[8] ^= 1;
    i.receive(T0, &icmp_frame(IP6_B, IP6_A, 64, &bad));
    assert_eq!(i.stats().dropped(DropReason::Icmpv6BadChecksum), 1);
    // To all-nodes: not answered.
    let l4 = icmp6(&req, IP6_B, ipv6::ALL_NODES);
    i.receive(T0, &icmp_frame(IP6_B, ipv6::ALL_NODES, 64, &l4));
    assert_eq!(i.stats().dropped(DropReason::Icmpv6Ignored), 1);
    i.dispatch(T0, &mut dev);
    assert!(dev.frames.is_empty());
}

#[test]
fn ipv6_drops_are_counted_by_reason() {
    let mut i = iface6();
    let echo = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq: 1,
        data: b"",
    };
    let l4 = icmp6(&echo, IP6_B, IP6_A);
    let good = frame6(MAC_A, IP6_B, IP6_A, 64, next_header::ICMPV6, &[], &l4);
    let expect = |i: &Interface, reason: DropReason| {
        assert_eq!(i.stats().dropped(reason), 1, "{reason:?}: {}", i.stats());
    };
    i.receive(T0, &good[..14 + 39]);
    expect(&i, DropReason::Ipv6Truncated);
    i.receive(T0, &good[..good.len() - 1]);
    assert_eq!(i.stats().dropped(DropReason::Ipv6Truncated), 2);
    let mut v = good.clone();
    v[14] = 0x40;
    i.receive(T0, &v);
    expect(&i, DropReason::Ipv6Malformed);
    let other: Ipv6Addr = "fd77::5".parse().unwrap();
    i.receive(T0, &icmp_frame(IP6_B, other, 64, &l4));
    expect(&i, DropReason::Ipv6NotForUs);
    i.receive(T0, &icmp_frame(ipv6::ALL_NODES, IP6_A, 64, &l4));
    expect(&i, DropReason::Ipv6BadSource);
    // Hop-by-Hop after Destination Options: a malformed chain.
    let ext = [
        next_header::HOP_BY_HOP,
        0,
        1,
        4,
        0,
        0,
        0,
        0,
        next_header::ICMPV6,
        0,
        1,
        4,
        0,
        0,
        0,
        0,
    ];
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::DST_OPTIONS, &ext, &l4),
    );
    expect(&i, DropReason::Ipv6ExtHeaders);
    // A first fragment with more to come whose length is not a multiple of 8.
    let frag = [next_header::ICMPV6, 0, 0, 1, 0, 0, 0, 7];
    i.receive(
        T0,
        &frame6(
            MAC_A,
            IP6_B,
            IP6_A,
            64,
            next_header::FRAGMENT,
            &frag,
            &l4[..6],
        ),
    );
    expect(&i, DropReason::Ipv6Fragment);
    assert_eq!(i.reassembly_stats().unaligned, 1);
    const SCTP: u8 = 132;
    i.receive(T0, &frame6(MAC_A, IP6_B, IP6_A, 64, SCTP, &[], &[0u8; 8]));
    expect(&i, DropReason::Ipv6UnknownProtocol);
    i.receive(T0, &icmp_frame(IP6_B, IP6_A, 64, &l4[..4]));
    expect(&i, DropReason::Icmpv6Malformed);
    // A 33:33 MAC of a group we are not in.
    i.receive(T0, &icmp_frame(IP6_B, ipv6::ALL_ROUTERS, 64, &l4));
    expect(&i, DropReason::EthernetNotForUs);
    assert_eq!(i.stats().dropped_total(), 10, "{}", i.stats());
    assert_eq!(i.stats().icmpv6_echo_replies_sent, 0);
    // And the good frame is answered.
    i.receive(T0, &good);
    assert_eq!(i.stats().icmpv6_echo_replies_sent, 1);
}

#[test]
fn without_ipv6_addresses_ipv6_stays_unknown() {
    let mut c = InterfaceConfig::new(MAC_A, Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 1), 24));
    c.ipv6_addrs.clear();
    let mut i = Interface::new(c, TcpConfig::default());
    let sn = ipv6::solicited_node(IP6_A);
    let l4 = icmp6(&ns(IP6_A, Some(MAC_B)), IP6_B, sn);
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, sn, 255, next_header::ICMPV6, &[], &l4),
    );
    assert_eq!(i.stats().dropped(DropReason::UnknownEthertype), 1);
    i.receive(T0, &icmp_frame(IP6_B, sn, 255, &l4));
    assert_eq!(i.stats().dropped(DropReason::EthernetNotForUs), 1);
    assert_eq!(i.stats().nd_advertisements_sent, 0);
}

/// A 20-byte TCP header (SYN from B's port 40000 to A's `port`) with the checksum
/// of B → A over IPv6.
fn tcp_syn6(src: Ipv6Addr, dst: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s[0..2].copy_from_slice(&40000u16.to_be_bytes());
    s[2..4].copy_from_slice(&port.to_be_bytes());
    s[4..8].copy_from_slice(&1000u32.to_be_bytes());
    s[12] = 5 << 4;
    s[13] = 0x02;
    s[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let c = checksum::transport_checksum(src, dst, 6, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A UDP datagram from B's port 5000 to A's `port` over IPv6, with its checksum.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 8 + payload.len()];
    let repr = UdpRepr {
        src_port: 5000,
        dst_port: port,
    };
    repr.emit(&mut b, src, dst, payload, true);
    b
}

/// Malformed TCP and UDP over IPv6: each dropped and counted by its reason, nothing
/// reaching the transports; then well-formed ones do.
#[test]
fn malformed_ipv6_tcp_and_udp_are_counted_and_dropped() {
    let mut i = iface6();
    let l = i.tcp.listen(SocketAddr::new(IP6_A.into(), 80), 4).unwrap();
    let u = i.udp.open().unwrap();
    i.udp.bind(u, SocketAddr::new(IP6_A.into(), 53)).unwrap();
    let tcp = |i: &mut Interface, src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]| {
        let mac = if ipv6::is_multicast(dst) {
            ipv6::multicast_mac(dst)
        } else {
            MAC_A
        };
        i.receive(T0, &frame6(mac, src, dst, 64, next_header::TCP, &[], l4));
    };
    let udp = |i: &mut Interface, l4: &[u8]| {
        i.receive(
            T0,
            &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::UDP, &[], l4),
        );
    };
    let count = |i: &Interface, r: DropReason| i.stats().dropped(r);
    let syn = tcp_syn6(IP6_B, IP6_A, 80);
    tcp(&mut i, IP6_B, IP6_A, &syn[..12]);
    assert_eq!(count(&i, DropReason::TcpMalformed), 1);
    let mut bad = syn.clone();
    bad[16] ^= 0x55;
    tcp(&mut i, IP6_B, IP6_A, &bad);
    assert_eq!(count(&i, DropReason::TcpBadChecksum), 1);
    let to_group = tcp_syn6(IP6_B, ipv6::ALL_NODES, 80);
    tcp(&mut i, IP6_B, ipv6::ALL_NODES, &to_group);
    assert_eq!(
        count(&i, DropReason::TcpMalformed),
        2,
        "TCP to a multicast group"
    );
    let mapped = Ipv4Addr::new(10, 77, 0, 9).to_ipv6_mapped();
    tcp(&mut i, mapped, IP6_A, &tcp_syn6(mapped, IP6_A, 80));
    assert_eq!(
        count(&i, DropReason::Ipv6BadSource),
        1,
        "a v4-mapped source"
    );

    let dgram = udp6(IP6_B, IP6_A, 53, b"query");
    udp(&mut i, &dgram[..6]);
    assert_eq!(count(&i, DropReason::UdpMalformed), 1);
    let mut zero = dgram.clone();
    zero[6..8].copy_from_slice(&[0, 0]);
    udp(&mut i, &zero);
    assert_eq!(
        count(&i, DropReason::UdpBadChecksum),
        1,
        "no checksum over IPv6"
    );
    let mut bad = dgram.clone();
    bad[9] ^= 1;
    udp(&mut i, &bad);
    assert_eq!(count(&i, DropReason::UdpBadChecksum), 2);
    udp(&mut i, &udp6(IP6_B, IP6_A, 0, b"query"));
    assert_eq!(count(&i, DropReason::UdpMalformed), 2, "destination port 0");
    let mut long = dgram.clone();
    long[4..6].copy_from_slice(&40u16.to_be_bytes());
    udp(&mut i, &long);
    assert_eq!(
        count(&i, DropReason::UdpMalformed),
        3,
        "length past the packet"
    );
    assert_eq!(i.stats().dropped_total(), 9, "{}", i.stats());
    assert_eq!(i.tcp.stats().segments_in, 0);
    assert_eq!(i.udp.next_datagram_len(u), Ok(0));

    // The well-formed ones arrive.
    tcp(&mut i, IP6_B, IP6_A, &syn);
    udp(&mut i, &dgram);
    assert_eq!(i.tcp.stats().segments_in, 1);
    let mut buf = [0u8; 16];
    let r = i.udp.recv_from(u, &mut buf).unwrap();
    assert_eq!(&buf[..r.len], b"query");
    assert_eq!(r.from, SocketAddr::new(IP6_B.into(), 5000));
    // The SYN is answered with a SYN-ACK over IPv6, MSS 1500 - 60.
    i.set_neighbor6(IP6_B, MAC_B);
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    let (e, ip, seg) = sent6(&dev.frames.pop_front().unwrap());
    assert_eq!((e.dst, ip.src, ip.dst), (MAC_B, IP6_A, IP6_B));
    assert_eq!(ip.next_header, next_header::TCP);
    assert_eq!(checksum::transport_checksum(IP6_A, IP6_B, 6, &seg), 0);
    assert_eq!(seg[13], 0x12, "SYN-ACK");
    assert_eq!(&seg[20..24], &[2, 4, 0x05, 0xa0], "MSS option 1440");
    let _ = l;
}

/// An overlapping fragment drops the whole datagram (RFC 5722), its later fragments
/// too; counted by reason.
#[test]
fn overlapping_ipv6_fragments_drop_the_datagram() {
    let mut i = iface6();
    let u = i.udp.open().unwrap();
    i.udp.bind(u, SocketAddr::new(IP6_A.into(), 53)).unwrap();
    let dgram = udp6(IP6_B, IP6_A, 53, &[7u8; 40]);
    let frag = |offset: u16, more: bool| {
        let mut h = [0u8; 8];
        crate::wire::ipv6_ext::FragmentRepr {
            next_header: next_header::UDP,
            offset,
            more_fragments: more,
            ident: 99,
        }
        .emit(&mut h);
        h
    };
    let send = |i: &mut Interface, h: [u8; 8], data: &[u8]| {
        i.receive(
            T0,
            &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::FRAGMENT, &h, data),
        );
    };
    send(&mut i, frag(0, true), &dgram[..24]);
    send(&mut i, frag(16, true), &dgram[16..32]);
    assert_eq!(i.reassembly_stats().overlap, 1);
    send(&mut i, frag(24, false), &dgram[24..]);
    assert_eq!(i.reassembly_stats().datagram_dropped, 1);
    assert_eq!(i.stats().dropped(DropReason::Ipv6Fragment), 2);
    assert_eq!(i.udp.next_datagram_len(u), Ok(0));
    // The same datagram under another identification, in order, arrives whole.
    let frag2 = |offset: u16, more: bool| {
        let mut h = frag(offset, more);
        h[7] = 100;
        h
    };
    send(&mut i, frag2(24, false), &dgram[24..]);
    send(&mut i, frag2(0, true), &dgram[..24]);
    assert_eq!(i.reassembly_stats().reassembled, 1);
    assert_eq!(i.udp.next_datagram_len(u), Ok(40));
}

/// Every packet of a TCP connection over IPv6 carries the same non-zero flow label
/// (RFC 6437), and another connection (another source port) another one.
#[test]
fn a_connection_keeps_its_flow_label() {
    let mut i = iface6();
    i.tcp.listen(SocketAddr::new(IP6_A.into(), 80), 4).unwrap();
    i.set_neighbor6(IP6_B, MAC_B);
    let mut dev = QueueDevice::new(1500);
    let label = |f: &[u8]| Ipv6Packet::new_checked(&f[14..]).unwrap().flow_label();
    let syn = tcp_syn6(IP6_B, IP6_A, 80);
    let frame = frame6(MAC_A, IP6_B, IP6_A, 64, next_header::TCP, &[], &syn);
    i.receive(T0, &frame);
    i.dispatch(T0, &mut dev);
    let first = label(&dev.frames.pop_front().unwrap());
    assert_ne!(first, 0);
    // The SYN-ACK's retransmission: the same flow, the same label.
    let later = T0 + crate::time::Duration::from_secs(3);
    i.dispatch(later, &mut dev);
    let again = dev.frames.pop_front().expect("a retransmitted SYN-ACK");
    assert_eq!(sent6(&again).2[13], 0x12);
    assert_eq!(label(&again), first);
    // Another source port: another flow.
    let mut other = syn.clone();
    other[0..2].copy_from_slice(&40001u16.to_be_bytes());
    other[16..18].fill(0);
    let c = checksum::transport_checksum(IP6_B, IP6_A, 6, &other);
    other[16..18].copy_from_slice(&c.to_be_bytes());
    let frame = frame6(MAC_A, IP6_B, IP6_A, 64, next_header::TCP, &[], &other);
    i.receive(later, &frame);
    i.dispatch(later, &mut dev);
    let second = label(&dev.frames.pop_back().unwrap());
    assert_ne!(second, 0);
    assert_ne!(second, first);
}

/// One listener on an IPv4 and an IPv6 address (a dual-stack `::` socket's shape): a
/// SYN over IPv6 is answered from the same listener; the other port or an address
/// another listener has are refused; closing it frees every address.
#[test]
fn a_listener_takes_connections_on_a_second_address() {
    let mut i = iface6();
    let v4 = SocketAddr::new(Ipv4Addr::new(10, 77, 0, 1).into(), 80);
    let v6 = SocketAddr::new(IP6_A.into(), 80);
    let l = i.tcp.listen(v4, 4).unwrap();
    assert!(!i.tcp.has_listener(v6));
    i.tcp.listen_also(l, v6).unwrap();
    i.tcp.listen_also(l, v6).unwrap(); // again: nothing changes
    assert!(i.tcp.has_listener(v6) && i.tcp.has_listener(v4));
    assert_eq!(
        i.tcp.listen_also(l, SocketAddr::new(IP6_A.into(), 81)),
        Err(Error::InvalidInput)
    );
    let also = SocketAddr::new(IP6_A.into(), 90);
    let l2 = i
        .tcp
        .listen(SocketAddr::new(Ipv4Addr::new(10, 77, 0, 1).into(), 90), 4)
        .unwrap();
    i.tcp.listen(also, 4).unwrap();
    assert_eq!(i.tcp.listen_also(l2, also), Err(Error::AddrInUse));
    i.set_neighbor6(IP6_B, MAC_B);
    let mut dev = QueueDevice::new(1500);
    let syn = tcp_syn6(IP6_B, IP6_A, 80);
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::TCP, &[], &syn),
    );
    i.dispatch(T0, &mut dev);
    let (_, ip, tcp) = sent6(&dev.frames.pop_front().expect("a SYN-ACK"));
    assert_eq!((ip.src, ip.dst, tcp[13]), (IP6_A, IP6_B, 0x12));
    i.tcp.close(l).unwrap();
    assert!(!i.tcp.has_listener(v6) && !i.tcp.has_listener(v4));
    assert!(i.tcp.has_listener(also));
}

/// A dual-stack UDP socket on `::` takes IPv4 datagrams too and sends to IPv4 peers;
/// without the flag an IPv6 socket takes IPv6 only, as with IPV6_V6ONLY.
#[test]
fn a_dual_stack_udp_socket_takes_both_families() {
    let mut i = iface6();
    let v4_dst = SocketAddr::new(Ipv4Addr::new(10, 77, 0, 1).into(), 5353);
    let v6_dst = SocketAddr::new(IP6_A.into(), 5353);
    let h = i.udp.open().unwrap();
    i.udp
        .bind(h, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 5353))
        .unwrap();
    assert!(i.udp.has_receiver(v6_dst) && !i.udp.has_receiver(v4_dst));
    let peer4 = SocketAddr::new(Ipv4Addr::new(10, 77, 0, 2).into(), 7);
    assert_eq!(
        i.udp.send_to(h, b"x", Some(peer4)),
        Err(Error::InvalidInput)
    );
    i.udp.set_dual_stack(h, true).unwrap();
    assert!(i.udp.has_receiver(v6_dst) && i.udp.has_receiver(v4_dst));
    assert_eq!(i.udp.send_to(h, b"x", Some(peer4)), Ok(1));
    i.set_neighbor(Ipv4Addr::new(10, 77, 0, 2), MAC_B);
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    let f = dev.frames.pop_front().expect("the datagram");
    assert_eq!(&f[12..14], &[0x08, 0x00], "sent over IPv4");
    assert_eq!(
        &f[26..30],
        &[10, 77, 0, 1],
        "from the interface's IPv4 address"
    );
}

/// IPV6_TCLASS / IP_TOS: a TCP listener's option reaches its connection's segments
/// (the SYN-ACK's traffic class) and a UDP socket's its datagrams; a packet of no
/// socket sent right after (a RST) carries 0 again.
#[test]
fn traffic_class_of_a_socket_marks_its_packets_only() {
    let mut i = iface6();
    let mut opts = i.tcp.config().default_socket_options();
    opts.tos = 0xb8;
    i.tcp
        .listen_with(SocketAddr::new(IP6_A.into(), 80), 4, opts)
        .unwrap();
    i.set_neighbor6(IP6_B, MAC_B);
    let mut dev = QueueDevice::new(1500);
    let class = |f: &[u8]| Ipv6Packet::new_checked(&f[14..]).unwrap().traffic_class();
    let syn = tcp_syn6(IP6_B, IP6_A, 80);
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::TCP, &[], &syn),
    );
    // A SYN to a closed port in the same dispatch: answered with a RST.
    let closed = tcp_syn6(IP6_B, IP6_A, 81);
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::TCP, &[], &closed),
    );
    i.dispatch(T0, &mut dev);
    let mut got: Vec<(u8, u8)> = dev
        .frames
        .drain(..)
        .map(|f| (sent6(&f).2[13], class(&f)))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(0x12, 0xb8), (0x14, 0)],
        "SYN-ACK marked, RST not"
    );
    let h = i.udp.open().unwrap();
    i.udp.bind(h, SocketAddr::new(IP6_A.into(), 5000)).unwrap();
    i.udp.set_tos(h, 0x28).unwrap();
    i.udp
        .send_to(h, b"x", Some(SocketAddr::new(IP6_B.into(), 7)))
        .unwrap();
    i.dispatch(T0, &mut dev);
    assert_eq!(class(&dev.frames.pop_front().expect("datagram")), 0x28);
}

/// IP_TOS over IPv4: the datagram's TOS byte, with a valid header checksum.
#[test]
fn ip_tos_marks_ipv4_datagrams() {
    let mut i = iface6();
    let peer = Ipv4Addr::new(10, 77, 0, 2);
    i.set_neighbor(peer, MAC_B);
    let h = i.udp.open().unwrap();
    i.udp
        .bind(h, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 5000))
        .unwrap();
    i.udp.set_dual_stack(h, true).unwrap();
    i.udp.set_tos(h, 0x28).unwrap();
    i.udp
        .send_to(h, b"x", Some(SocketAddr::new(peer.into(), 7)))
        .unwrap();
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    let f = dev.frames.pop_front().expect("datagram");
    assert_eq!(f[15], 0x28);
    assert_eq!(
        crate::wire::checksum::checksum(&f[14..34]),
        0,
        "header checksum"
    );
}

/// A dual-stack UDP socket answers an IPv6 peer, then receives from an IPv4 one.
#[test]
fn a_dual_stack_udp_socket_receives_ipv4_after_ipv6() {
    let mut i = iface6();
    let h = i.udp.open().unwrap();
    i.udp.set_dual_stack(h, true).unwrap();
    i.udp
        .bind(h, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 5353))
        .unwrap();
    i.set_neighbor6(IP6_B, MAC_B);
    let l4 = udp6(IP6_B, IP6_A, 5353, b"six");
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::UDP, &[], &l4),
    );
    let mut buf = [0u8; 64];
    let got = i.udp.recv_from(h, &mut buf).unwrap();
    assert_eq!(got.from, SocketAddr::new(IP6_B.into(), 5000));
    i.udp.send_to(h, b"six", Some(got.from)).unwrap();
    let mut dev = QueueDevice::new(1500);
    i.dispatch(T0, &mut dev);
    assert_eq!(dev.frames.len(), 1);
    let (a, b) = (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 1));
    let mut l4 = vec![0u8; 8 + 4];
    UdpRepr {
        src_port: 5001,
        dst_port: 5353,
    }
    .emit(&mut l4, a, b, b"four", true);
    let ip = crate::wire::Ipv4Repr {
        src: a,
        dst: b,
        protocol: 17,
        payload_len: l4.len(),
        ttl: 64,
        ident: 1,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut f = vec![0u8; 14 + 20 + l4.len()];
    EthernetRepr {
        src: MAC_B,
        dst: MAC_A,
        vlan: None,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut f);
    ip.emit(&mut f[14..], true);
    f[34..].copy_from_slice(&l4);
    i.receive(T0, &f);
    let got = i.udp.recv_from(h, &mut buf).expect("the IPv4 datagram");
    assert_eq!(got.from, SocketAddr::new(a.into(), 5001));
}
