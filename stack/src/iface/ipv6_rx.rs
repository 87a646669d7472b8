//! The IPv6 receive path: header and extension-header checks with a drop reason each;
//! TCP segments to the TCP layer; Neighbor Solicitations for our addresses answered,
//! and neighbours learned from solicitations and advertisements (RFC 4861 §7.2.3 and
//! §7.2.5); echo requests answered. The path is on only when the interface has IPv6
//! addresses ([`super::InterfaceConfig::ipv6_addrs`]).

use super::reassembly::FragmentKey;
use super::{Core, DropReason, Interface, NeighborMode, RxInfo};
use crate::time::Instant;
use crate::wire::icmpv6::{self, NaFlags};
use crate::wire::ipv6::{self, next_header};
use crate::wire::ipv6_ext::FragmentRepr;
use crate::wire::ipv6_ext::{self, WalkLimits};
use crate::wire::{checksum, tcp};
use crate::wire::{
    EtherType, EthernetRepr, Icmpv6Packet, Icmpv6Repr, Ipv6Packet, Ipv6Repr, MacAddr, WireError,
};
use crate::wire::{UdpPacket, UdpRepr};
use core::net::{Ipv6Addr, SocketAddr};

/// The IPv6 minimum link MTU (RFC 8200 §5).
const MIN_MTU: usize = 1280;

impl Core {
    pub fn is_own_ipv6(&self, ip: Ipv6Addr) -> bool {
        self.ipv6_addrs.iter().any(|c| c.addr == ip)
    }
    /// True when packets to `ip` are delivered locally (loopback on, and `ip` one of
    /// ours: give the interface ::1 to have it).
    pub fn is_local6(&self, ip: Ipv6Addr) -> bool {
        self.loopback_mtu.is_some() && self.is_own_ipv6(ip)
    }
    /// Source address toward `dst` (see [`super::udp::ipv6_source`]).
    pub fn ipv6_source_for(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        super::udp::ipv6_source(&self.ipv6_addrs, self.ipv6_gateway, dst)
    }
    /// Multicast groups the interface listens to: all-nodes and the solicited-node
    /// group of each of its addresses.
    pub fn is_ipv6_group(&self, ip: Ipv6Addr) -> bool {
        ip == ipv6::ALL_NODES
            || self
                .ipv6_addrs
                .iter()
                .any(|c| ipv6::solicited_node(c.addr) == ip)
    }
    /// Whether a frame to `mac` may carry IPv6 for us: ours, or the 33:33 MAC of one of
    /// our groups.
    pub fn accepts_ipv6_mac(&self, mac: MacAddr) -> bool {
        !self.ipv6_addrs.is_empty()
            && (mac == self.mac
                || mac == ipv6::multicast_mac(ipv6::ALL_NODES)
                || self
                    .ipv6_addrs
                    .iter()
                    .any(|c| mac == ipv6::multicast_mac(ipv6::solicited_node(c.addr))))
    }
}

impl Interface {
    pub(super) fn receive_ipv6(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        payload: &[u8],
        verify: bool,
    ) {
        let core = &mut self.core;
        let packet = match Ipv6Packet::new_checked(payload) {
            Ok(p) => p,
            Err(_) => return core.stats.drop(DropReason::Ipv6Truncated),
        };
        let ip = match Ipv6Repr::parse(&packet) {
            Ok(r) => r,
            Err(WireError::Truncated) => return core.stats.drop(DropReason::Ipv6Truncated),
            Err(_) => return core.stats.drop(DropReason::Ipv6Malformed),
        };
        let unicast = core.is_own_ipv6(ip.dst);
        if !unicast && !core.is_ipv6_group(ip.dst) {
            return core.stats.drop(DropReason::Ipv6NotForUs);
        }
        // A v4-mapped address is never on the wire (RFC 4291 §2.5.5.2); accepting one
        // would let a packet pose as an IPv4 peer.
        // Our own source comes only from local delivery (loopback on).
        if ipv6::is_multicast(ip.src)
            || (core.is_own_ipv6(ip.src) && core.loopback_mtu.is_none())
            || ip.src.to_ipv4_mapped().is_some()
        {
            return core.stats.drop(DropReason::Ipv6BadSource);
        }
        let payload = packet.payload();
        let chain = match ipv6_ext::walk(ip.next_header, payload, WalkLimits::DEFAULT) {
            Ok(c) => c,
            Err(_) => return core.stats.drop(DropReason::Ipv6ExtHeaders),
        };
        let l4 = &payload[chain.upper_offset..];
        if let Some(frag) = chain.fragment {
            return self.receive_fragment(now, eth, &ip, unicast, &frag, l4, verify);
        }
        match chain.upper_protocol {
            next_header::ICMPV6 => self.receive_icmpv6(now, eth, &ip, unicast, l4, verify),
            next_header::TCP => self.receive_tcp6(now, &ip, unicast, l4, verify),
            next_header::UDP => {
                let whole = packet.packet_bytes();
                self.receive_udp6(now, eth, &ip, unicast, l4, verify, Some(whole))
            }
            _ => core.stats.drop(DropReason::Ipv6UnknownProtocol),
        }
    }

    fn receive_tcp6(
        &mut self,
        now: Instant,
        ip: &Ipv6Repr,
        unicast: bool,
        l4: &[u8],
        verify: bool,
    ) {
        let st = &mut self.core.stats;
        if !unicast || l4.len() < tcp::HEADER_LEN || ipv6::is_unspecified(ip.src) {
            return st.drop(DropReason::TcpMalformed);
        }
        if verify && checksum::transport_checksum(ip.src, ip.dst, 6, l4) != 0 {
            return st.drop(DropReason::TcpBadChecksum);
        }
        st.tcp_segments_received += 1;
        self.tcp.receive(now, ip.src, ip.dst, l4);
    }

    /// A UDP datagram over IPv6. `whole` is the IPv6 packet it came in (quoted in a
    /// port unreachable), None for one put together from fragments (not answered).
    #[allow(clippy::too_many_arguments)]
    fn receive_udp6(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        unicast: bool,
        l4: &[u8],
        verify: bool,
        whole: Option<&[u8]>,
    ) {
        let st = &mut self.core.stats;
        let packet = match UdpPacket::new_checked(l4) {
            Ok(p) => p,
            Err(_) => return st.drop(DropReason::UdpMalformed),
        };
        // Only unicast: the stack joins no multicast group but ND's.
        if !unicast {
            return st.drop(DropReason::UdpNoSocket);
        }
        let udp = match UdpRepr::parse(&packet, ip.src, ip.dst, verify) {
            Ok(u) => u,
            Err(WireError::Checksum) => return st.drop(DropReason::UdpBadChecksum),
            Err(_) => return st.drop(DropReason::UdpMalformed),
        };
        let info = RxInfo {
            to: SocketAddr::new(ip.dst.into(), udp.dst_port),
            tos: ip.traffic_class,
            ttl: ip.hop_limit,
            arrival: now,
        };
        let src = SocketAddr::new(ip.src.into(), udp.src_port);
        if self.deliver_udp(src, info, packet.payload(), false) {
            return;
        }
        let Some(whole) = whole else { return };
        // ICMPv6 port unreachable quoting as much of the packet as the minimum MTU
        // takes (RFC 4443 §2.4, §3.1).
        let room = MIN_MTU - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
        let msg = Icmpv6Repr::DstUnreachable {
            code: icmpv6::unreachable::PORT_UNREACHABLE,
            invoking: &whole[..whole.len().min(room)],
        };
        let core = &mut self.core;
        let hop_limit = core.ttl;
        if queue_ipv6_reply(core, eth.src, ip.dst, ip.src, hop_limit, &msg) {
            core.stats.icmpv6_unreachables_sent += 1;
        }
    }

    /// A fragment: into the reassembly buffer; a datagram it completes is received
    /// (UDP and TCP: the stack sends no other fragmented traffic it expects back).
    #[allow(clippy::too_many_arguments)]
    fn receive_fragment(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        unicast: bool,
        frag: &FragmentRepr,
        data: &[u8],
        verify: bool,
    ) {
        let key = FragmentKey {
            src: ip.src,
            dst: ip.dst,
            ident: frag.ident,
        };
        let whole = match self.core.reassembly.insert(now, key, frag, data) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            // The reason is counted in `reassembly_stats`.
            Err(_) => return self.core.stats.drop(DropReason::Ipv6Fragment),
        };
        // The fragmentable part may start with more extension headers.
        let chain = match ipv6_ext::walk(whole.next_header, &whole.payload, WalkLimits::DEFAULT) {
            Ok(c) if c.fragment.is_none() => c,
            _ => return self.core.stats.drop(DropReason::Ipv6ExtHeaders),
        };
        let l4 = &whole.payload[chain.upper_offset..];
        match chain.upper_protocol {
            next_header::UDP => self.receive_udp6(now, eth, ip, unicast, l4, verify, None),
            next_header::TCP => self.receive_tcp6(now, ip, unicast, l4, verify),
            _ => self.core.stats.drop(DropReason::Ipv6Fragment),
        }
    }

    fn receive_icmpv6(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        unicast: bool,
        l4: &[u8],
        verify: bool,
    ) {
        let core = &mut self.core;
        let packet = match Icmpv6Packet::new_checked(l4) {
            Ok(p) => p,
            Err(_) => return core.stats.drop(DropReason::Icmpv6Malformed),
        };
        let msg = match Icmpv6Repr::parse(&packet, ip.src, ip.dst, verify) {
            Ok(m) => m,
            Err(WireError::Checksum) => return core.stats.drop(DropReason::Icmpv6BadChecksum),
            Err(WireError::Unsupported) => return core.stats.drop(DropReason::Icmpv6Ignored),
            Err(_) => return core.stats.drop(DropReason::Icmpv6Malformed),
        };
        let is_nd = matches!(
            msg,
            Icmpv6Repr::NeighborSolicit { .. }
                | Icmpv6Repr::NeighborAdvert { .. }
                | Icmpv6Repr::RouterAdvert { .. }
        );
        // ND messages from off-link are forged (RFC 4861 §7.1).
        if is_nd && ip.hop_limit != icmpv6::ND_HOP_LIMIT {
            return core.stats.drop(DropReason::Icmpv6Malformed);
        }
        match msg {
            // Like Linux, only unicast pings are answered here.
            Icmpv6Repr::EchoRequest { ident, seq, data } if unicast => {
                let reply = Icmpv6Repr::EchoReply { ident, seq, data };
                let hop_limit = core.ttl;
                if queue_ipv6_reply(core, eth.src, ip.dst, ip.src, hop_limit, &reply) {
                    core.stats.icmpv6_echo_replies_sent += 1;
                }
            }
            Icmpv6Repr::NeighborSolicit {
                target,
                source_lladdr,
            } if core.is_own_ipv6(target) => {
                // The solicitor's MAC (RFC 4861 §7.2.3): it is about to talk to us.
                // (External neighbours: the host's table is the only source.)
                let own_nd = core.neighbor_mode == NeighborMode::OwnArp;
                if let (Some(mac), false, true) =
                    (source_lladdr, ipv6::is_unspecified(ip.src), own_nd)
                {
                    core.neighbors6.insert(ip.src, mac, now, true);
                    core.wake = true;
                }
                // A DAD probe (from ::) is answered to all-nodes, unsolicited (RFC 4861
                // §7.2.4); the kernel owns DAD for the address, so this only defends it.
                let dad = ipv6::is_unspecified(ip.src);
                let (dst, dst_mac) = if dad {
                    (ipv6::ALL_NODES, ipv6::multicast_mac(ipv6::ALL_NODES))
                } else {
                    (ip.src, source_lladdr.unwrap_or(eth.src))
                };
                let reply = Icmpv6Repr::NeighborAdvert {
                    flags: NaFlags {
                        router: false,
                        solicited: !dad,
                        override_: true,
                    },
                    target,
                    target_lladdr: Some(core.mac),
                };
                if queue_ipv6_reply(core, dst_mac, target, dst, icmpv6::ND_HOP_LIMIT, &reply) {
                    core.stats.nd_advertisements_sent += 1;
                }
            }
            // The quoted packet: our IPv6 header, then UDP's ports (a quote with
            // extension headers is not looked into).
            Icmpv6Repr::DstUnreachable { code, invoking } => {
                let quoted = Ipv6Packet::new_checked(invoking)
                    .ok()
                    .and_then(|p| Ipv6Repr::parse(&p).ok())
                    .filter(|q| q.next_header == next_header::UDP && core.is_own_ipv6(q.src));
                let (Some(q), Some(ports)) =
                    (quoted, invoking.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + 4))
                else {
                    return core.stats.drop(DropReason::Icmpv6Ignored);
                };
                let sport = u16::from_be_bytes([ports[0], ports[1]]);
                let dport = u16::from_be_bytes([ports[2], ports[3]]);
                let error = if code == icmpv6::unreachable::PORT_UNREACHABLE {
                    crate::error::Error::ConnectionRefused
                } else {
                    crate::error::Error::HostUnreachable
                };
                self.udp.icmp_unreachable(
                    SocketAddr::new(q.src.into(), sport),
                    SocketAddr::new(q.dst.into(), dport),
                    error,
                );
            }
            // Only a resolution in progress (or an entry held) is updated: an
            // advertisement nobody asked for creates nothing (RFC 4861 §7.2.5).
            Icmpv6Repr::NeighborAdvert {
                target,
                target_lladdr: Some(mac),
                ..
            } if !core.is_own_ipv6(target) && core.neighbor_mode == NeighborMode::OwnArp => {
                if core.neighbors6.refresh(target, mac, now) {
                    core.wake = true;
                } else {
                    core.stats.drop(DropReason::Icmpv6Ignored);
                }
            }
            _ => core.stats.drop(DropReason::Icmpv6Ignored),
        }
    }
}

/// Builds a whole IPv6/ICMPv6 frame into the reply queue. Returns false (counted) when
/// it would not fit the MTU or the queue is full.
fn queue_ipv6_reply(
    core: &mut Core,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    msg: &Icmpv6Repr<'_>,
) -> bool {
    let len = msg.buffer_len();
    if ipv6::HEADER_LEN + len > core.mtu {
        core.stats.drop(DropReason::TxTooBig);
        return false;
    }
    let Some(mut b) = core.replies.take() else {
        core.stats.drop(DropReason::ReplyQueueFull);
        return false;
    };
    let eth = core.eth_header(dst_mac, EtherType::Ipv6);
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: next_header::ICMPV6,
        payload_len: len,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    let hl = eth.header_len();
    b.resize(hl + ipv6::HEADER_LEN + len, 0);
    eth.emit(&mut b);
    ip.emit(&mut b[hl..]);
    msg.emit(&mut b[hl + ipv6::HEADER_LEN..], src, dst);
    core.replies.push(b);
    true
}
