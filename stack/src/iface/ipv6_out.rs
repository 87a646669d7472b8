//! The IPv6 output path: on-link or via the IPv6 gateway, the next hop's MAC from the
//! IPv6 neighbour cache (resolved with Neighbor Solicitations, RFC 4861 §7.2.2, when
//! we own neighbour discovery), the IPv6 and Ethernet headers, transport checksums with
//! the IPv6 pseudo-header. No extension headers and no fragmentation are sent: TCP's
//! MSS fits the MTU (MTU − 60), and a UDP datagram larger than the MTU is dropped
//! (EMSGSIZE is the socket layer's to give).

use super::ip_out::{fill_transport_checksum, IpOut, Outcome, TransportSum};
use super::{DropReason, Lookup, NeighborMode};
use crate::wire::icmpv6::{self, Icmpv6Repr};
use crate::wire::ipv6::{self, next_header};
use crate::wire::{EtherType, Ipv6Repr, MacAddr};
use core::net::{IpAddr, Ipv6Addr};

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
            src,
            dst,
            next_header: next_header::ICMPV6,
            payload_len: msg.buffer_len(),
            hop_limit: icmpv6::ND_HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
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
        let ip = Ipv6Repr {
            src,
            dst,
            next_header: protocol,
            payload_len: len,
            hop_limit: self.core.ttl,
            traffic_class: 0,
            flow_label: 0,
        };
        let hl = eth.header_len();
        let total = hl + ipv6::HEADER_LEN + len;
        let offload = self.caps.checksum.tx_fill;
        let mut build = |b: &mut [u8]| {
            eth.emit(b);
            ip.emit(&mut b[hl..]);
            let seg = &mut b[hl + ipv6::HEADER_LEN..];
            let tail_sum = fill(seg);
            if !offload {
                fill_transport_checksum(seg, src, dst, protocol, transport_sum, tail_sum);
            }
        };
        self.emit_frame(total, held_for.map(IpAddr::V6), &mut build)
    }
}
