//! The IPv6 receive path: header and extension-header checks with a drop reason each;
//! TCP segments to the TCP layer; Neighbor Solicitations for our addresses answered,
//! and neighbours learned from solicitations and advertisements (RFC 4861 §7.2.3 and
//! §7.2.5); echo requests answered. The path is on only when the interface has IPv6
//! addresses ([`super::InterfaceConfig::ipv6_addrs`]).

use super::{Core, DropReason, Interface};
use crate::time::Instant;
use crate::wire::icmpv6::{self, NaFlags};
use crate::wire::ipv6::{self, next_header};
use crate::wire::ipv6_ext::{self, WalkLimits};
use crate::wire::{checksum, tcp};
use crate::wire::{
    EtherType, EthernetRepr, Icmpv6Packet, Icmpv6Repr, Ipv6Packet, Ipv6Repr, MacAddr, WireError,
};
use core::net::Ipv6Addr;

impl Core {
    pub fn is_own_ipv6(&self, ip: Ipv6Addr) -> bool {
        self.ipv6_addrs.iter().any(|c| c.addr == ip)
    }
    /// Source address toward `dst`: the address whose prefix holds it; for a
    /// link-local `dst`, a link-local address; else, with an IPv6 gateway, the first
    /// that is not link-local. None without a route or an address.
    pub fn ipv6_source_for(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        let link_local = ipv6::is_link_local(dst);
        if let Some(c) = self.ipv6_addrs.iter().find(|c| c.contains(dst)) {
            return Some(c.addr);
        }
        if !link_local && self.ipv6_gateway.is_none() {
            return None;
        }
        self.ipv6_addrs
            .iter()
            .find(|c| ipv6::is_link_local(c.addr) == link_local)
            .map(|c| c.addr)
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
        if ipv6::is_multicast(ip.src)
            || core.is_own_ipv6(ip.src)
            || ip.src.to_ipv4_mapped().is_some()
        {
            return core.stats.drop(DropReason::Ipv6BadSource);
        }
        let payload = packet.payload();
        let chain = match ipv6_ext::walk(ip.next_header, payload, WalkLimits::DEFAULT) {
            Ok(c) => c,
            Err(_) => return core.stats.drop(DropReason::Ipv6ExtHeaders),
        };
        if chain.fragment.is_some() {
            return core.stats.drop(DropReason::Ipv6Fragment);
        }
        let l4 = &payload[chain.upper_offset..];
        match chain.upper_protocol {
            next_header::ICMPV6 => self.receive_icmpv6(now, eth, &ip, unicast, l4, verify),
            next_header::TCP => {
                if !unicast || l4.len() < tcp::HEADER_LEN || ipv6::is_unspecified(ip.src) {
                    return core.stats.drop(DropReason::TcpMalformed);
                }
                if verify && checksum::transport_checksum(ip.src, ip.dst, 6, l4) != 0 {
                    return core.stats.drop(DropReason::TcpBadChecksum);
                }
                core.stats.tcp_segments_received += 1;
                self.tcp.receive(now, ip.src, ip.dst, l4);
            }
            _ => core.stats.drop(DropReason::Ipv6UnknownProtocol),
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
                if let (Some(mac), false) = (source_lladdr, ipv6::is_unspecified(ip.src)) {
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
            // Only a resolution in progress (or an entry held) is updated: an
            // advertisement nobody asked for creates nothing (RFC 4861 §7.2.5).
            Icmpv6Repr::NeighborAdvert {
                target,
                target_lladdr: Some(mac),
                ..
            } if !core.is_own_ipv6(target) => {
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
