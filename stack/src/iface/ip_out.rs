//! The IPv4 output path: routing, neighbour lookup (sending ARP requests when we own
//! ARP), the IPv4 and Ethernet headers, transport checksums, and the device. IPv6's
//! (Neighbor Discovery instead of ARP) is in `ipv6_out`; the [`IpTx`] here takes both.

use super::{Core, DropReason, NeighborMode, Stats};
use crate::device::{Device, DeviceCaps};
use crate::ip_tx::{IpProtocol, IpTx};
use crate::time::Instant;
use crate::wire::{
    arp, checksum, ipv4, ipv6, udp, ArpOperation, ArpRepr, EtherType, MacAddr, UdpRepr,
};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What happened to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    /// The device has no room: stop dispatching, retry later.
    DeviceFull,
    /// The next hop's MAC is being resolved: keep the packet.
    Pending,
    /// Built and held until the next hop resolves (sent by a later dispatch).
    Held,
    /// Cannot be sent (no route, neighbour failed, too big): drop it.
    Dropped(DropReason),
}

/// Who fills the transport checksum of a packet `send_ip` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportSum {
    /// The caller's `fill` wrote it (or the device fills it).
    Filled,
    /// `send_ip` computes it over the whole segment.
    Compute,
    /// `send_ip` computes it, taking the sum of the bytes from this (even) offset on
    /// from `fill`'s return value.
    SummedFrom(usize),
}

/// The interface's transmit side for one dispatch: the [`IpTx`] TCP sends through.
pub struct IpOut<'a> {
    pub(super) core: &'a mut Core,
    pub(super) dev: &'a mut dyn Device,
    pub(super) caps: DeviceCaps,
    pub(super) now: Instant,
    /// The next hop of the last `resolve` that returned `Pending`.
    unresolved: Ipv4Addr,
    /// The same for `resolve6`.
    pub(super) unresolved6: Ipv6Addr,
}

impl<'a> IpOut<'a> {
    pub(crate) fn new(core: &'a mut Core, dev: &'a mut dyn Device, now: Instant) -> Self {
        let caps = dev.caps();
        IpOut {
            core,
            dev,
            caps,
            now,
            unresolved: Ipv4Addr::UNSPECIFIED,
            unresolved6: Ipv6Addr::UNSPECIFIED,
        }
    }

    pub(crate) fn stats(&mut self) -> &mut Stats {
        &mut self.core.stats
    }

    pub(crate) fn device_full(&self) -> bool {
        self.core.device_full
    }

    pub(super) fn mtu(&self) -> usize {
        self.core.mtu.min(self.caps.mtu)
    }

    /// The MTU toward `dst`: local delivery has its own (loopback on).
    fn mtu_to(&self, dst: Ipv4Addr) -> usize {
        match self.core.loopback_mtu {
            Some(m) if self.core.is_local(dst) => m,
            _ => self.mtu(),
        }
    }

    /// The destination MAC for `dst`, resolving it if needed. `Err(Pending)` comes
    /// with the next hop being resolved in `self.unresolved`.
    #[inline]
    fn resolve(&mut self, dst: Ipv4Addr) -> Result<MacAddr, Outcome> {
        let next_hop = match self.core.last_route {
            // Most packets go where the last one went.
            Some((d, hop)) if d == dst => hop,
            _ => {
                if self.core.is_broadcast(dst) {
                    return Ok(MacAddr::BROADCAST);
                }
                let hop = if self.core.addrs.iter().any(|c| c.contains(dst)) {
                    dst
                } else {
                    match self.core.gateway {
                        Some(g) => g,
                        None => return Err(Outcome::Dropped(DropReason::NoRoute)),
                    }
                };
                self.core.last_route = Some((dst, hop));
                hop
            }
        };
        let own_arp = self.core.neighbor_mode == NeighborMode::OwnArp;
        match self.core.neighbors.lookup(next_hop, self.now, own_arp) {
            super::Lookup::Found(mac) => Ok(mac),
            super::Lookup::Pending { send_request } => {
                if send_request {
                    self.send_arp_request(next_hop);
                }
                self.unresolved = next_hop;
                Err(Outcome::Pending)
            }
            super::Lookup::Failed => Err(Outcome::Dropped(DropReason::NeighborFailed)),
        }
    }

    /// Sends the frames held for next hops that resolved since; drops those whose
    /// resolution failed; keeps (and keeps resolving) the rest.
    pub(crate) fn flush_held(&mut self) {
        let own_arp = self.core.neighbor_mode == NeighborMode::OwnArp;
        for _ in 0..self.core.held.frames.len() {
            if self.core.device_full {
                return;
            }
            let Some((hop, mut frame)) = self.core.held.frames.pop_front() else {
                return;
            };
            let lookup = match hop {
                IpAddr::V4(h) => self.core.neighbors.lookup(h, self.now, own_arp),
                IpAddr::V6(h) => self.core.neighbors6.lookup(h, self.now, own_arp),
            };
            match lookup {
                super::Lookup::Found(mac) => {
                    frame[0..6].copy_from_slice(&mac.0);
                    let len = frame.len();
                    if self.dev.transmit(len, &mut |b| b.copy_from_slice(&frame)) {
                        self.core.stats.tx_frames += 1;
                        self.core.stats.tx_bytes += len as u64;
                        self.core.held.spare.push(frame);
                    } else {
                        self.core.stats.tx_device_full += 1;
                        self.core.device_full = true;
                        self.core.held.frames.push_front((hop, frame));
                    }
                }
                super::Lookup::Pending { send_request } => {
                    if send_request {
                        self.send_request(hop);
                    }
                    self.core.held.frames.push_back((hop, frame));
                }
                super::Lookup::Failed => {
                    self.core.stats.drop(DropReason::NeighborFailed);
                    self.core.held.spare.push(frame);
                }
            }
        }
    }

    /// Asks for `hop`'s MAC: an ARP request, or a Neighbor Solicitation.
    fn send_request(&mut self, hop: IpAddr) {
        match hop {
            IpAddr::V4(h) => self.send_arp_request(h),
            IpAddr::V6(h) => self.send_neighbor_solicit(h),
        }
    }

    fn send_arp_request(&mut self, target: Ipv4Addr) {
        let Some(src_ip) = self.core.source_for(target) else {
            return;
        };
        let eth = self.core.eth_header(MacAddr::BROADCAST, EtherType::Arp);
        let req = ArpRepr {
            operation: ArpOperation::Request,
            source_mac: self.core.mac,
            source_ip: src_ip,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        };
        let hl = eth.header_len();
        let len = hl + arp::PACKET_LEN;
        if self.dev.transmit(len, &mut |b| {
            eth.emit(b);
            req.emit(&mut b[hl..]);
        }) {
            self.core.stats.tx_frames += 1;
            self.core.stats.tx_bytes += len as u64;
            self.core.stats.arp_requests_sent += 1;
        } else {
            self.core.stats.tx_device_full += 1;
            self.core.device_full = true;
        }
    }

    /// Sends one IPv4 packet whose transport part (`len` bytes) `fill` writes. Unless
    /// `transport_sum` is `Filled`, the checksum at the protocol's offset is computed
    /// here (unless the device fills it). With `hold`, a packet whose next hop is still being
    /// resolved is built now and held until it resolves (`Outcome::Held`), as Linux
    /// queues packets on an unresolved neighbour.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_ip(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        len: usize,
        transport_sum: TransportSum,
        hold: bool,
        mut fill: impl FnMut(&mut [u8]) -> u16,
    ) -> Outcome {
        if self.core.is_local(dst) {
            return self.send_local(src, dst, protocol, len, transport_sum, &mut fill);
        }
        if self.core.device_full {
            return Outcome::DeviceFull;
        }
        if ipv4::HEADER_LEN + len > self.mtu() {
            return Outcome::Dropped(DropReason::TxTooBig);
        }
        let (mac, held_for) = match self.resolve(dst) {
            Ok(m) => (m, None),
            Err(Outcome::Pending) if hold => (MacAddr::ZERO, Some(self.unresolved)),
            Err(o) => return o,
        };
        if self.core.device_full && held_for.is_none() {
            return Outcome::DeviceFull;
        }
        let eth = self.core.eth_header(mac, EtherType::Ipv4);
        let ip = self.core.ipv4_header(src, dst, protocol, len, true);
        let hl = eth.header_len();
        let total = hl + ipv4::HEADER_LEN + len;
        let offload = self.caps.checksum.tx_fill;
        let mut build = |b: &mut [u8]| {
            eth.emit(b);
            ip.emit(&mut b[hl..], !offload);
            let seg = &mut b[hl + ipv4::HEADER_LEN..];
            let tail_sum = fill(seg);
            if protocol == 1 && transport_sum != TransportSum::Filled {
                // ICMP: no pseudo-header, never offloaded.
                fill_icmp_checksum(seg);
            } else if !offload {
                fill_transport_checksum(seg, src, dst, protocol, transport_sum, tail_sum);
            }
        };
        let o = self.emit_frame(total, held_for.map(IpAddr::V4), &mut build);
        if matches!(o, Outcome::Sent | Outcome::Held) {
            self.core.next_ident = self.core.next_ident.wrapping_add(1);
        }
        o
    }

    /// Transmits the frame `build` writes (`total` bytes), or with `held_for`, builds
    /// it into the queue of frames waiting for that next hop to resolve.
    pub(super) fn emit_frame(
        &mut self,
        total: usize,
        held_for: Option<IpAddr>,
        build: &mut dyn FnMut(&mut [u8]),
    ) -> Outcome {
        if let Some(hop) = held_for {
            let Some(mut b) = self.core.held.take() else {
                return Outcome::Dropped(DropReason::NeighborQueueFull);
            };
            b.resize(total, 0);
            build(&mut b);
            self.core.held.frames.push_back((hop, b));
            return Outcome::Held;
        }
        if !self.dev.transmit(total, build) {
            self.core.stats.tx_device_full += 1;
            self.core.device_full = true;
            return Outcome::DeviceFull;
        }
        self.core.stats.tx_frames += 1;
        self.core.stats.tx_bytes += total as u64;
        Outcome::Sent
    }

    /// `send_ip` to a local address: the frame goes to the looped queue, delivered
    /// at the end of the dispatch. Transport checksums are left zero: the receiver
    /// does not verify looped frames (they never left this memory).
    fn send_local(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        len: usize,
        transport_sum: TransportSum,
        fill: &mut dyn FnMut(&mut [u8]) -> u16,
    ) -> Outcome {
        if ipv4::HEADER_LEN + len > self.mtu_to(dst) {
            return Outcome::Dropped(DropReason::TxTooBig);
        }
        let Some(mut b) = self.core.looped.take() else {
            // As a full device ring: the transport keeps the data for the next dispatch.
            self.core.stats.tx_device_full += 1;
            return Outcome::DeviceFull;
        };
        let eth = self.core.eth_header(self.core.mac, EtherType::Ipv4);
        let ip = self.core.ipv4_header(src, dst, protocol, len, true);
        self.core.next_ident = self.core.next_ident.wrapping_add(1);
        let hl = eth.header_len();
        let total = hl + ipv4::HEADER_LEN + len;
        b.resize(total, 0);
        eth.emit(&mut b);
        ip.emit(&mut b[hl..], true);
        let seg = &mut b[hl + ipv4::HEADER_LEN..];
        fill(seg);
        if transport_sum != TransportSum::Filled && protocol == 1 {
            // ICMP has no pseudo-header and is cheap: keep it a valid message.
            fill_icmp_checksum(seg);
        }
        self.core.looped.ready.push_back(b);
        self.core.stats.tx_frames += 1;
        self.core.stats.tx_bytes += total as u64;
        Outcome::Sent
    }

    /// Sends one UDP datagram, checksumming the payload while copying it; larger than
    /// the MTU, as IPv4 or IPv6 fragments (as Linux does for UDP without
    /// IP_PMTUDISC_DO / IPV6_DONTFRAG).
    pub(crate) fn send_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Outcome {
        let repr = UdpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
        };
        let (s, d) = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => return self.send_udp6(repr, s, d, payload),
            _ => return Outcome::Dropped(DropReason::NoRoute),
        };
        let fill_checksum = !self.caps.checksum.tx_fill && !self.core.is_local(d);
        if ipv4::HEADER_LEN + udp::HEADER_LEN + payload.len() > self.mtu_to(d) {
            return self.send_udp_fragments(repr, s, d, payload);
        }
        self.send_ip(
            s,
            d,
            17,
            udp::HEADER_LEN + payload.len(),
            TransportSum::Filled,
            false,
            |seg: &mut [u8]| {
                repr.emit(seg, s, d, payload, fill_checksum);
                0
            },
        )
    }
}

impl IpOut<'_> {
    /// A UDP datagram in IPv4 fragments: the UDP header and checksum (over the whole
    /// datagram, computed in software: NICs do not checksum fragments) in the first;
    /// every fragment but the last carries a multiple of 8 bytes.
    fn send_udp_fragments(
        &mut self,
        repr: UdpRepr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
    ) -> Outcome {
        if self.core.is_local(dst) {
            // Local delivery does not reassemble: its MTU is sized so no datagram needs it.
            return Outcome::Dropped(DropReason::TxTooBig);
        }
        if self.core.device_full {
            return Outcome::DeviceFull;
        }
        let mac = match self.resolve(dst) {
            Ok(m) => m,
            Err(o) => return o,
        };
        if self.core.device_full {
            return Outcome::DeviceFull;
        }
        let total = udp::HEADER_LEN + payload.len();
        let header = udp_header_summed(repr, src, dst, payload);
        let eth = self.core.eth_header(mac, EtherType::Ipv4);
        let hl = eth.header_len();
        let per_frag = (self.mtu() - ipv4::HEADER_LEN) & !7;
        let ident = self.core.next_ident;
        self.core.next_ident = ident.wrapping_add(1);
        let mut off = 0usize;
        while off < total {
            let len = per_frag.min(total - off);
            let more = off + len < total;
            let ip = ipv4::Ipv4Repr {
                src,
                dst,
                protocol: 17,
                payload_len: len,
                ttl: self.core.ttl,
                ident,
                dont_frag: false,
                dscp_ecn: self.core.tx_tos,
            };
            let frame_len = hl + ipv4::HEADER_LEN + len;
            let o = self.emit_frame(frame_len, None, &mut |b| {
                eth.emit(b);
                ip.emit(&mut b[hl..], false);
                let flags_offset = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
                b[hl + 6..hl + 8].copy_from_slice(&flags_offset.to_be_bytes());
                let c = checksum::checksum(&b[hl..hl + ipv4::HEADER_LEN]);
                b[hl + 10..hl + 12].copy_from_slice(&c.to_be_bytes());
                copy_datagram_part(&mut b[hl + ipv4::HEADER_LEN..], &header, payload, off, len);
            });
            if o != Outcome::Sent {
                // Fragments already sent are wasted; the datagram is retried whole.
                return o;
            }
            self.core.stats.ipv4_fragments_sent += 1;
            off += len;
        }
        Outcome::Sent
    }
}

/// The UDP header of a datagram sent in fragments, with its checksum over the whole
/// datagram (computed in software: NICs do not checksum fragments).
pub(super) fn udp_header_summed<A: checksum::PseudoHeaderAddr>(
    repr: UdpRepr,
    src: A,
    dst: A,
    payload: &[u8],
) -> [u8; udp::HEADER_LEN] {
    let total = udp::HEADER_LEN + payload.len();
    let mut header = [0u8; udp::HEADER_LEN];
    repr.emit_header(&mut header, payload.len());
    let mut acc =
        checksum::Accumulator::with_sum(checksum::pseudo_header_sum(src, dst, 17, total as u16));
    acc.add_bytes(&header);
    acc.add_bytes(payload);
    header[udp::CHECKSUM_OFFSET..]
        .copy_from_slice(&udp::nonzero_checksum(acc.finish()).to_be_bytes());
    header
}

/// Writes bytes `[off, off + len)` of a UDP datagram (`header`, then `payload`) to the
/// start of `out`: one fragment's share.
pub(super) fn copy_datagram_part(
    out: &mut [u8],
    header: &[u8; udp::HEADER_LEN],
    payload: &[u8],
    off: usize,
    len: usize,
) {
    for (k, byte) in out.iter_mut().enumerate().take(len) {
        let at = off + k;
        if at < udp::HEADER_LEN {
            *byte = header[at];
        } else {
            break;
        }
    }
    let from = off.max(udp::HEADER_LEN);
    let skip = from - off;
    out[skip..len].copy_from_slice(&payload[from - udp::HEADER_LEN..off + len - udp::HEADER_LEN]);
}

/// Writes the TCP or UDP checksum of `seg` (with the pseudo-header of `src` and `dst`,
/// IPv4 or IPv6) unless `transport_sum` says the caller did. With `SummedFrom(from)`,
/// `tail_sum` is the sum of the bytes from `from` on, which are not read again.
pub(super) fn fill_transport_checksum<A: checksum::PseudoHeaderAddr>(
    seg: &mut [u8],
    src: A,
    dst: A,
    protocol: u8,
    transport_sum: TransportSum,
    tail_sum: u16,
) {
    let at = match protocol {
        6 => 16,
        17 => udp::CHECKSUM_OFFSET,
        _ => return,
    };
    if transport_sum == TransportSum::Filled || seg.len() < at + 2 {
        return;
    }
    seg[at] = 0;
    seg[at + 1] = 0;
    let mut c = match transport_sum {
        // The caller summed the bytes from `from` on while copying them: only the
        // header is read again here.
        TransportSum::SummedFrom(from) if from >= at + 2 && from <= seg.len() => {
            let pseudo = checksum::pseudo_header_sum(src, dst, protocol, seg.len() as u16);
            let head = checksum::sum(&seg[..from]);
            !checksum::add(checksum::add(pseudo, head), tail_sum)
        }
        _ => checksum::transport_checksum(src, dst, protocol, seg),
    };
    if protocol == 17 {
        c = udp::nonzero_checksum(c);
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Writes the checksum of the ICMP message `seg` (no pseudo-header).
fn fill_icmp_checksum(seg: &mut [u8]) {
    seg[2] = 0;
    seg[3] = 0;
    let c = checksum::checksum(seg);
    seg[2..4].copy_from_slice(&c.to_be_bytes());
}

impl IpTx for IpOut<'_> {
    fn max_segment(&self, dst: IpAddr) -> usize {
        match dst {
            IpAddr::V4(d) => self.mtu_to(d) - ipv4::HEADER_LEN,
            IpAddr::V6(d) => self.mtu6_to(d) - ipv6::HEADER_LEN,
        }
    }

    fn send(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        self.send_summed(src, dst, proto, len, usize::MAX, &mut |b| {
            fill(b);
            0
        })
    }

    fn set_tos(&mut self, tos: u8) {
        self.core.tx_tos = tos;
    }

    fn send_summed(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        summed_from: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> u16,
    ) -> bool {
        // An odd start would need the sum byte-swapped; no transport header is odd.
        // (`send` passes usize::MAX: nothing summed.)
        let sum = if summed_from != usize::MAX && summed_from.is_multiple_of(2) {
            TransportSum::SummedFrom(summed_from)
        } else {
            TransportSum::Compute
        };
        let o = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.send_ip(s, d, proto.number(), len, sum, true, fill)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.send_ip6(s, d, proto.number(), len, sum, true, fill)
            }
            _ => Outcome::Dropped(DropReason::NoRoute),
        };
        self.core.tx_tos = 0;
        self.transport_outcome(o)
    }
}

impl IpOut<'_> {
    /// What a transport's `send` returns for an outcome.
    fn transport_outcome(&mut self, o: Outcome) -> bool {
        // Only a full device makes the transport wait: a packet held for ARP, or lost
        // (no route, neighbour failed) is "sent" as on Linux, where TCP's retransmission
        // and timeouts take over, and other connections are not held up behind it.
        match o {
            Outcome::Sent | Outcome::Held => true,
            Outcome::Dropped(reason) => {
                self.core.stats.drop(reason);
                true
            }
            Outcome::DeviceFull => false,
            Outcome::Pending => unreachable!("held packets are never Pending"),
        }
    }
}
