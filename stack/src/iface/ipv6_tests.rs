//! IPv6 receive tests: Neighbor Solicitations and echo requests answered, every drop
//! counted by its reason.

use super::*;
use crate::device::QueueDevice;
use crate::wire::icmpv6::{NaFlags, ND_HOP_LIMIT};
use crate::wire::ipv6::{self, next_header};
use crate::wire::{Icmpv6Packet, Icmpv6Repr, Ipv6Cidr, Ipv6Packet, Ipv6Repr};
use core::net::Ipv6Addr;

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
    let frag = [next_header::ICMPV6, 0, 0, 1, 0, 0, 0, 7];
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::FRAGMENT, &frag, &l4),
    );
    expect(&i, DropReason::Ipv6Fragment);
    i.receive(
        T0,
        &frame6(MAC_A, IP6_B, IP6_A, 64, next_header::UDP, &[], &[0u8; 8]),
    );
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
