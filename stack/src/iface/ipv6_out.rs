//! The IPv6 output path: on-link or via the IPv6 gateway, the next hop's MAC from the
//! IPv6 neighbour cache (resolved with Neighbor Solicitations, RFC 4861 §7.2.2, when
//! we own neighbour discovery), the IPv6 and Ethernet headers, transport checksums with
//! the IPv6 pseudo-header. The only extension header sent is the Fragment header of a
//! UDP datagram larger than the MTU (TCP's MSS fits the MTU: MTU − 60).

use super::ip_out::{
    copy_datagram_part, fill_transport_checksum, udp_header_summed, IpOut, Outcome, TransportSum,
};
use super::{DropReason, Lookup, NeighborMode};
use crate::wire::icmpv6::{self, Icmpv6Repr};
use crate::wire::ipv6::{self, next_header};
use crate::wire::ipv6_ext::{FragmentRepr, FRAGMENT_HEADER_LEN};
use crate::wire::{udp, EtherType, Ipv6Packet, Ipv6Repr, MacAddr, UdpRepr};
use core::net::{IpAddr, Ipv6Addr};

impl super::Core {
    /// The IPv6 header of a packet the stack originates (flow label 0: the caller
    /// sets it once it knows the flow).
    fn ipv6_header(&self, src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, len: usize) -> Ipv6Repr {
        Ipv6Repr {
            src,
            dst,
            next_header: protocol,
            payload_len: len,
            hop_limit: self.ttl,
            traffic_class: self.tx_tos,
            flow_label: 0,
        }
    }
}

impl IpOut<'_> {
    /// The destination MAC for `dst`, resolving it if needed; `Err(Pending)` comes with
    /// the next hop being resolved in `self.unresolved6`.
    fn resolve6(&mut self, dst: Ipv6Addr) -> Result<MacAddr, Outcome> {
        if ipv6::is_multicast(dst) {
            return Ok(ipv6::multicast_mac(dst));
        }
        let core = &mut *self.core;
        let on_link = ipv6::is_link_local(dst) || core.ipv6_addrs.iter().any(|c| c.contains(dst));
        let hop = match (on_link, core.ipv6_gateway) {
            (true, _) => dst,
            (false, Some(g)) => g,
            (false, None) => return Err(Outcome::Dropped(DropReason::NoRoute)),
        };
        let own_nd = core.neighbor_mode == NeighborMode::OwnArp;
        match core.neighbors6.lookup(hop, self.now, own_nd) {
            Lookup::Found(mac) => Ok(mac),
            Lookup::Pending { send_request } => {
                if send_request {
                    self.send_neighbor_solicit(hop);
                }
                self.unresolved6 = hop;
                Err(Outcome::Pending)
            }
            Lookup::Failed => Err(Outcome::Dropped(DropReason::NeighborFailed)),
        }
    }

    /// A Neighbor Solicitation for `target` to its solicited-node group, from our
    /// address on its link, with our MAC (RFC 4861 §7.2.2).
    pub(super) fn send_neighbor_solicit(&mut self, target: Ipv6Addr) {
        let Some(src) = self.core.ipv6_source_for(target) else {
            return;
        };
        let dst = ipv6::solicited_node(target);
        let msg = Icmpv6Repr::NeighborSolicit {
            target,
            source_lladdr: Some(self.core.mac),
        };
        let eth = self
            .core
            .eth_header(ipv6::multicast_mac(dst), EtherType::Ipv6);
        let ip = Ipv6Repr {
            hop_limit: icmpv6::ND_HOP_LIMIT,
            ..self
                .core
                .ipv6_header(src, dst, next_header::ICMPV6, msg.buffer_len())
        };
        let hl = eth.header_len();
        let len = hl + ipv6::HEADER_LEN + msg.buffer_len();
        if self.dev.transmit(len, &mut |b| {
            eth.emit(b);
            ip.emit(&mut b[hl..]);
            msg.emit(&mut b[hl + ipv6::HEADER_LEN..], src, dst);
        }) {
            self.core.stats.tx_frames += 1;
            self.core.stats.tx_bytes += len as u64;
            self.core.stats.nd_solicitations_sent += 1;
        } else {
            self.core.stats.tx_device_full += 1;
            self.core.device_full = true;
        }
    }

    /// `send_ip` for IPv6: one packet whose transport part (`len` bytes) `fill` writes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_ip6(
        &mut self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: u8,
        len: usize,
        transport_sum: TransportSum,
        hold: bool,
        mut fill: impl FnMut(&mut [u8]) -> u16,
    ) -> Outcome {
        if self.core.is_local6(dst) {
            return self.send_local6(src, dst, protocol, len, &mut fill);
        }
        if self.core.device_full {
            return Outcome::DeviceFull;
        }
        if ipv6::HEADER_LEN + len > self.mtu() {
            return Outcome::Dropped(DropReason::TxTooBig);
        }
        let (mac, held_for) = match self.resolve6(dst) {
            Ok(m) => (m, None),
            Err(Outcome::Pending) if hold => (MacAddr::ZERO, Some(self.unresolved6)),
            Err(o) => return o,
        };
        if self.core.device_full && held_for.is_none() {
            return Outcome::DeviceFull;
        }
        let eth = self.core.eth_header(mac, EtherType::Ipv6);
        let ip = self.core.ipv6_header(src, dst, protocol, len);
        let hl = eth.header_len();
        let total = hl + ipv6::HEADER_LEN + len;
        let offload = self.caps.checksum.tx_fill;
        let secret = self.core.flow_secret;
        let class = self.core.tx_tos;
        let mut build = |b: &mut [u8]| {
            eth.emit(b);
            ip.emit(&mut b[hl..]);
            let seg = &mut b[hl + ipv6::HEADER_LEN..];
            let tail_sum = fill(seg);
            if !offload {
                fill_transport_checksum(seg, src, dst, protocol, transport_sum, tail_sum);
            }
            // The ports are known once the transport wrote its header.
            if let Some(ports) = seg.first_chunk::<4>().map(|p| u32::from_be_bytes(*p)) {
                let label = flow_label(secret, src, dst, protocol, ports);
                Ipv6Packet::new_unchecked(&mut b[hl..]).set_version_class_flow(class, label);
            }
        };
        self.emit_frame(total, held_for.map(IpAddr::V6), &mut build)
    }

    /// `send_ip6` to a local address (loopback on): into the looped queue, delivered at
    /// the end of the dispatch, transport checksum left zero (never verified there).
    fn send_local6(
        &mut self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        protocol: u8,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> u16,
    ) -> Outcome {
        if ipv6::HEADER_LEN + len > self.mtu6_to(dst) {
            return Outcome::Dropped(DropReason::TxTooBig);
        }
        let Some(mut b) = self.core.looped.take() else {
            // As a full device ring: the transport keeps the data for the next dispatch.
            self.core.stats.tx_device_full += 1;
            return Outcome::DeviceFull;
        };
        let eth = self.core.eth_header(self.core.mac, EtherType::Ipv6);
        let ip = self.core.ipv6_header(src, dst, protocol, len);
        let hl = eth.header_len();
        let total = hl + ipv6::HEADER_LEN + len;
        b.resize(total, 0);
        eth.emit(&mut b);
        ip.emit(&mut b[hl..]);
        fill(&mut b[hl + ipv6::HEADER_LEN..]);
        self.core.looped.ready.push_back(b);
        self.core.stats.tx_frames += 1;
        self.core.stats.tx_bytes += total as u64;
        Outcome::Sent
    }

    /// The MTU toward IPv6 `dst`: local delivery has its own (loopback on).
    pub(super) fn mtu6_to(&self, dst: Ipv6Addr) -> usize {
        match self.core.loopback_mtu {
            Some(m) if self.core.is_local6(dst) => m,
            _ => self.mtu(),
        }
    }

    /// Sends one UDP datagram over IPv6; larger than the MTU, in fragments (RFC 8200
    /// §4.5: every fragment but the last a multiple of 8 bytes, one identification).
    pub(crate) fn send_udp6(
        &mut self,
        repr: UdpRepr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        payload: &[u8],
    ) -> Outcome {
        let len = udp::HEADER_LEN + payload.len();
        if ipv6::HEADER_LEN + len <= self.mtu6_to(dst) {
            let fill_checksum = !self.caps.checksum.tx_fill && !self.core.is_local6(dst);
            return self.send_ip6(src, dst, 17, len, TransportSum::Filled, false, |seg| {
                repr.emit(seg, src, dst, payload, fill_checksum);
                0
            });
        }
        if self.core.is_local6(dst) {
            // Local delivery does not reassemble: its MTU is sized so no datagram needs it.
            return Outcome::Dropped(DropReason::TxTooBig);
        }
        if self.core.device_full {
            return Outcome::DeviceFull;
        }
        let mac = match self.resolve6(dst) {
            Ok(m) => m,
            Err(o) => return o,
        };
        if self.core.device_full {
            return Outcome::DeviceFull;
        }
        let header = udp_header_summed(repr, src, dst, payload);
        let eth = self.core.eth_header(mac, EtherType::Ipv6);
        let hl = eth.header_len();
        let per_frag = (self.mtu() - ipv6::HEADER_LEN - FRAGMENT_HEADER_LEN) & !7;
        let ident = self.core.next_ident6;
        self.core.next_ident6 = ident.wrapping_add(1);
        let mut off = 0usize;
        while off < len {
            let n = per_frag.min(len - off);
            let ports = (repr.src_port as u32) << 16 | repr.dst_port as u32;
            let ip = Ipv6Repr {
                flow_label: flow_label(self.core.flow_secret, src, dst, 17, ports),
                ..self
                    .core
                    .ipv6_header(src, dst, next_header::FRAGMENT, FRAGMENT_HEADER_LEN + n)
            };
            let frag = FragmentRepr {
                next_header: next_header::UDP,
                offset: off as u16,
                more_fragments: off + n < len,
                ident,
            };
            let frame_len = hl + ipv6::HEADER_LEN + FRAGMENT_HEADER_LEN + n;
            let o = self.emit_frame(frame_len, None, &mut |b| {
                eth.emit(b);
                ip.emit(&mut b[hl..]);
                let at = hl + ipv6::HEADER_LEN;
                frag.emit(&mut b[at..]);
                copy_datagram_part(&mut b[at + FRAGMENT_HEADER_LEN..], &header, payload, off, n);
            });
            if o != Outcome::Sent {
                // Fragments already sent are wasted; the datagram is retried whole.
                return o;
            }
            self.core.stats.ipv6_fragments_sent += 1;
            off += n;
        }
        Outcome::Sent
    }
}

/// The flow label of a transport flow (RFC 6437): a keyed hash of its addresses,
/// protocol and ports (`ports`: source port in the high half), the same for every
/// packet of the flow, never 0, unpredictable without the interface's seed.
fn flow_label(secret: u64, src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, ports: u32) -> u32 {
    let (s, d) = (src.to_bits(), dst.to_bits());
    let words = [s as u64, (s >> 64) as u64, d as u64, (d >> 64) as u64];
    let mut h = secret ^ ((protocol as u64) << 32 | ports as u64);
    for w in words {
        h = (h.rotate_left(23) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let label = ((h ^ (h >> 29)) >> 40) as u32 & 0xf_ffff;
    label.max(1)
}
