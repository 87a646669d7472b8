#![no_main]
//! The stack's frame input: any sequence of frames never panics, and whatever the
//! interface sends in answer is well-formed Ethernet.
//!
//! Input: records of `kind, len (2 bytes), bytes`. Kind 0 hands `bytes` over as a raw
//! frame; the other kinds wrap `bytes` in valid Ethernet/IPv4 headers with correct
//! checksums (as a TCP segment to the listener, a UDP datagram, an ICMP message, an
//! ARP packet; over IPv6 an ICMPv6 message to our address or our solicited-node group,
//! a TCP segment to the IPv6 listener, a UDP datagram to the IPv6 socket, or any next
//! header and payload, fragments included), so the fuzzer reaches the layers behind
//! the checksums.
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use libfuzzer_sys::fuzz_target;
use stack::device::QueueDevice;
use stack::iface::{Interface, InterfaceConfig};
use stack::tcp::TcpConfig;
use stack::time::Instant;
use stack::wire::checksum;
use stack::wire::ipv6::{self, next_header};
use stack::wire::{
    EtherType, EthernetFrame, EthernetRepr, Ipv4Cidr, Ipv4Repr, Ipv6Cidr, Ipv6Repr, MacAddr,
};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

fn frame(ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
    let e = EthernetRepr {
        src: PEER_MAC,
        dst: MAC,
        vlan: None,
        ethertype,
    };
    let mut f = vec![0u8; 14 + payload.len()];
    e.emit(&mut f);
    f[14..].copy_from_slice(payload);
    f
}

/// An IPv4 frame carrying `l4`, whose checksum field at `csum_at` is fixed up
/// (`pseudo`: with the pseudo-header).
fn ip_frame(protocol: u8, mut l4: Vec<u8>, csum_at: usize, pseudo: bool) -> Vec<u8> {
    if l4.len() >= csum_at + 2 {
        l4[csum_at] = 0;
        l4[csum_at + 1] = 0;
        let c = if pseudo {
            checksum::transport_checksum(PEER, IP, protocol, &l4)
        } else {
            checksum::checksum(&l4)
        };
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let ip = Ipv4Repr {
        src: PEER,
        dst: IP,
        protocol,
        payload_len: l4.len(),
        ttl: 64,
        ident: 0,
        dont_frag: true,
        dscp_ecn: 0,
    };
    let mut p = vec![0u8; 20 + l4.len()];
    ip.emit(&mut p, true);
    p[20..].copy_from_slice(&l4);
    frame(EtherType::Ipv4, &p)
}

/// `l4` with its checksum at `csum_at` fixed for the peer → IP6 pseudo-header.
fn with_checksum6(protocol: u8, mut l4: Vec<u8>, csum_at: usize) -> Vec<u8> {
    if l4.len() >= csum_at + 2 {
        l4[csum_at..csum_at + 2].fill(0);
        let c = checksum::transport_checksum(PEER6, IP6, protocol, &l4);
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    l4
}

/// An IPv6 frame from the peer to `dst` (at its MAC), hop limit 255.
fn ipv6_frame(dst: Ipv6Addr, first_header: u8, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv6Repr {
        src: PEER6,
        dst,
        next_header: first_header,
        payload_len: payload.len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut p = vec![0u8; ip.buffer_len()];
    ip.emit(&mut p);
    p[40..].copy_from_slice(payload);
    let mut f = frame(EtherType::Ipv6, &p);
    if ipv6::is_multicast(dst) {
        f[..6].copy_from_slice(&ipv6::multicast_mac(dst).0);
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = InterfaceConfig::new(MAC, Ipv4Cidr::new(IP, 24));
    cfg.ipv6_addrs = vec![Ipv6Cidr::new(IP6, 64)];
    cfg.udp.max_sockets = 4;
    cfg.udp.rx_buffer = 4096;
    cfg.udp.tx_buffer = 4096;
    // Small pools: the interface is rebuilt for every input.
    let tcp = TcpConfig {
        max_sockets: 8,
        rcvbuf: 8192,
        sndbuf: 8192,
        ..TcpConfig::default()
    };
    let mut iface = Interface::new(cfg, tcp);
    let u = iface.udp.open().unwrap();
    iface
        .udp
        .bind(u, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53))
        .unwrap();
    let listener = iface.tcp.listen(SocketAddrV4::new(IP, 80), 4).ok();
    let u6 = iface.udp.open().unwrap();
    iface
        .udp
        .bind(u6, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 53))
        .unwrap();
    let listener6 = iface
        .tcp
        .listen(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 80), 4)
        .ok();
    let mut dev = QueueDevice::new(1500);
    let mut now = Instant::from_millis(1);
    let mut rest = data;
    let mut buf = [0u8; 2048];
    while rest.len() >= 3 {
        let kind = rest[0] % 9;
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let f = match kind {
            0 => bytes.to_vec(),
            1 => {
                // TCP to the listener's port: keep the fuzzer's header but fix ports.
                let mut l4 = bytes.to_vec();
                if l4.len() >= 4 {
                    l4[2] = 0;
                    l4[3] = 80;
                }
                ip_frame(6, l4, 16, true)
            }
            2 => {
                let mut l4 = vec![0, 9, 0, 53, 0, 0, 0, 0];
                l4.extend_from_slice(bytes);
                let n = l4.len() as u16;
                l4[4..6].copy_from_slice(&n.to_be_bytes());
                ip_frame(17, l4, 6, true)
            }
            3 => ip_frame(1, bytes.to_vec(), 2, false),
            4 => frame(EtherType::Arp, bytes),
            5 => {
                // ICMPv6 with a correct checksum, to us or our solicited-node group.
                let dst = if rest.len() % 2 == 0 {
                    IP6
                } else {
                    ipv6::solicited_node(IP6)
                };
                let mut l4 = bytes.to_vec();
                if l4.len() >= 4 {
                    l4[2..4].fill(0);
                    let c = checksum::transport_checksum(PEER6, dst, next_header::ICMPV6, &l4);
                    l4[2..4].copy_from_slice(&c.to_be_bytes());
                }
                ipv6_frame(dst, next_header::ICMPV6, &l4)
            }
            7 => {
                // TCP over IPv6 to the listener's port, checksum fixed.
                let mut l4 = bytes.to_vec();
                if l4.len() >= 4 {
                    l4[2] = 0;
                    l4[3] = 80;
                }
                ipv6_frame(IP6, next_header::TCP, &with_checksum6(6, l4, 16))
            }
            8 => {
                let mut l4 = vec![0, 9, 0, 53, 0, 0, 0, 0];
                l4.extend_from_slice(bytes);
                let n = l4.len() as u16;
                l4[4..6].copy_from_slice(&n.to_be_bytes());
                ipv6_frame(IP6, next_header::UDP, &with_checksum6(17, l4, 6))
            }
            _ => match bytes.split_first() {
                Some((&nh, payload)) => ipv6_frame(IP6, nh, payload),
                None => ipv6_frame(IP6, next_header::NO_NEXT_HEADER, &[]),
            },
        };
        iface.receive(now, &f);
        iface.dispatch(now, &mut dev);
        while iface.udp.recv_from(u, &mut buf).is_ok() {}
        while let Ok(r) = iface.udp.recv_from(u6, &mut buf) {
            let _ = iface.udp.send_to(u6, &buf[..r.len], Some(r.from));
        }
        for l in [listener, listener6].into_iter().flatten() {
            while let Ok(c) = iface.tcp.accept(l) {
                let _ = iface.tcp.recv(c, &mut buf);
                let _ = iface.tcp.send(c, b"reply");
            }
        }
        now = Instant::from_micros(now.micros() + 50_000);
    }
    if let Some(t) = iface.poll_at() {
        iface.dispatch(t.max(now), &mut dev);
    }
    for out in &dev.frames {
        let f = EthernetFrame::new_checked(&out[..]).expect("sent frame has a header");
        EthernetRepr::parse(&f).expect("sent frame parses");
    }
});
