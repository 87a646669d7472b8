//! The interface: Ethernet, ARP and neighbours, IPv4, ICMP echo, UDP sockets; TCP
//! segments go to [`crate::tcp::TcpLayer`], whose output comes back through [`IpTx`].
//!
//! The host drives it: `receive(now, frame)` for each received frame, then
//! `dispatch(now, device)` to send what is due, and again at `poll_at()`.

mod ip_out;
mod ipv6_out;
mod ipv6_rx;
mod loopback;
mod neighbor;
mod packet_ring;
pub mod reassembly;
mod stats;
pub mod udp;

pub use ip_out::IpOut;
pub use neighbor::{Lookup, NeighborCache, NeighborConfig, EXTERNAL_FIRST_RECHECK};
pub use stats::{DropReason, Stats};
pub use udp::{RxInfo, UdpConfig, UdpLayer, UdpRecv};

use crate::device::{ChecksumOffload, Device};
use crate::socket::ReadinessChange;
use crate::tcp::{TcpConfig, TcpLayer};
use crate::time::Instant;
use crate::wire::{
    arp, checksum, ethernet, icmp, ipv4, tcp, ArpOperation, ArpPacket, ArpRepr, EtherType,
    EthernetFrame, EthernetRepr, IcmpPacket, IcmpRepr, Ipv4Cidr, Ipv4Packet, Ipv4Repr, Ipv6Cidr,
    MacAddr, UdpPacket, UdpRepr, WireError,
};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::collections::VecDeque;

/// Who resolves next hops to MACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborMode {
    /// The stack speaks ARP itself (TAP, simulator).
    OwnArp,
    /// The host provides neighbours (`set_neighbor`), e.g. from the kernel's table on
    /// AF_XDP where the kernel owns ARP; the stack ignores ARP frames and lists the next
    /// hops it lacks in `missing_neighbors`.
    External,
}

/// An interface's configuration.
#[derive(Clone, Debug)]
pub struct InterfaceConfig {
    pub mac: MacAddr,
    /// Addresses with their prefixes; the first is the primary (source via gateway).
    pub addrs: Vec<Ipv4Cidr>,
    /// IPv6 addresses. Empty (the default): IPv6 frames are dropped as an unknown
    /// EtherType. Otherwise the interface answers Neighbor Solicitations for them and
    /// echo requests to them (see `ipv6_rx`).
    pub ipv6_addrs: Vec<Ipv6Cidr>,
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 next hop for destinations outside `ipv6_addrs`' prefixes (link-local ones
    /// are always on-link). None: those are unreachable.
    pub ipv6_gateway: Option<Ipv6Addr>,
    pub neighbor_mode: NeighborMode,
    pub neighbor: NeighborConfig,
    /// 802.1Q VLAN id: received frames must carry it, sent frames get it. None: untagged.
    pub vlan: Option<u16>,
    /// IP MTU (the device's caps may lower it further at dispatch).
    pub mtu: usize,
    /// TTL of packets the stack originates.
    pub ttl: u8,
    /// `rx_verified`: received checksums were checked by the NIC; skip verifying them.
    /// (Transmit offload comes from the device's caps at dispatch.)
    pub checksum: ChecksumOffload,
    pub udp: UdpConfig,
    /// Control replies (ARP replies, ICMP) waiting for the next dispatch.
    pub reply_slots: usize,
    /// Frames held while their next hop is resolved (Linux's unresolved queue).
    pub held_frames: usize,
    /// Seeds everything random (ephemeral ports, TCP ISNs): same seed, same run.
    pub seed: u64,
    /// Limits of the IPv6 fragment reassembly buffer.
    pub reassembly: reassembly::ReassemblyConfig,
    /// `Some(mtu)`: packets to the interface's own addresses and to all of
    /// 127.0.0.0/8 are delivered to itself with this MTU, never to the device (see
    /// `loopback`). None: everything goes to the device.
    pub loopback_mtu: Option<usize>,
}

impl InterfaceConfig {
    /// Defaults: own ARP, MTU 1500, TTL 64, software checksums, no VLAN, no gateway.
    pub fn new(mac: MacAddr, addr: Ipv4Cidr) -> Self {
        InterfaceConfig {
            mac,
            addrs: vec![addr],
            ipv6_addrs: Vec::new(),
            gateway: None,
            ipv6_gateway: None,
            neighbor_mode: NeighborMode::OwnArp,
            neighbor: NeighborConfig::default(),
            vlan: None,
            mtu: 1500,
            ttl: 64,
            checksum: ChecksumOffload::default(),
            udp: UdpConfig::default(),
            reply_slots: 32,
            held_frames: 64,
            seed: 0,
            reassembly: reassembly::ReassemblyConfig::default(),
            loopback_mtu: None,
        }
    }
}

/// Whole frames built on receive (ARP replies, ICMP) and sent on the next dispatch.
/// Buffers are allocated once and recycled.
#[derive(Debug)]
pub(crate) struct ReplyQueue {
    ready: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl ReplyQueue {
    fn new(slots: usize, frame_len: usize) -> Self {
        ReplyQueue {
            ready: VecDeque::with_capacity(slots),
            spare: (0..slots).map(|_| Vec::with_capacity(frame_len)).collect(),
        }
    }
    /// A cleared buffer to build a frame in, or None when all are queued.
    fn take(&mut self) -> Option<Vec<u8>> {
        let mut b = self.spare.pop()?;
        b.clear();
        Some(b)
    }
    fn push(&mut self, b: Vec<u8>) {
        self.ready.push_back(b);
    }
}

/// Frames built for a next hop whose MAC is not known yet, oldest first; sent (with
/// the MAC filled in) once it resolves. Buffers allocated once and recycled.
#[derive(Debug)]
pub(crate) struct HeldFrames {
    /// Each frame with the next hop it waits for.
    pub frames: VecDeque<(IpAddr, Vec<u8>)>,
    pub spare: Vec<Vec<u8>>,
}

impl HeldFrames {
    fn new(slots: usize, frame_len: usize) -> Self {
        HeldFrames {
            frames: VecDeque::with_capacity(slots),
            spare: (0..slots).map(|_| Vec::with_capacity(frame_len)).collect(),
        }
    }
    /// A cleared buffer, or None when all are holding frames.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        let mut b = self.spare.pop()?;
        b.clear();
        Some(b)
    }
}

/// State `IpOut` needs: everything of the interface but the sockets.
#[derive(Debug)]
pub(crate) struct Core {
    pub mac: MacAddr,
    pub addrs: Vec<Ipv4Cidr>,
    pub ipv6_addrs: Vec<Ipv6Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub ipv6_gateway: Option<Ipv6Addr>,
    pub neighbor_mode: NeighborMode,
    pub neighbors: NeighborCache,
    /// IPv6 neighbours (Neighbor Discovery, or the host's in External mode).
    pub neighbors6: NeighborCache<Ipv6Addr>,
    pub vlan: Option<u16>,
    pub mtu: usize,
    pub ttl: u8,
    /// TOS byte / traffic class of the packet being built (its socket's IP_TOS or
    /// IPV6_TCLASS); 0 outside a transport's send.
    pub tx_tos: u8,
    pub rx_checksum_verified: bool,
    pub stats: Stats,
    pub next_ident: u16,
    /// Identification of the next IPv6 datagram sent in fragments.
    pub next_ident6: u32,
    /// Keys the IPv6 flow labels (`ipv6_out::flow_label`).
    pub flow_secret: u64,
    pub replies: ReplyQueue,
    pub held: HeldFrames,
    /// Something became sendable (a neighbour resolved): dispatch soon.
    pub wake: bool,
    /// The device refused a frame at the last dispatch.
    pub device_full: bool,
    /// The last unicast destination routed and its next hop; forgotten when the
    /// addresses or the gateway change.
    pub last_route: Option<(Ipv4Addr, Ipv4Addr)>,
    /// See [`InterfaceConfig::loopback_mtu`].
    pub loopback_mtu: Option<usize>,
    /// Frames to local addresses, delivered at the end of a dispatch.
    pub looped: loopback::LoopedFrames,
    /// IPv6 fragments being put back together.
    pub reassembly: reassembly::Reassembler,
}

impl Core {
    pub fn is_own_addr(&self, ip: Ipv4Addr) -> bool {
        self.addrs.iter().any(|c| c.addr == ip)
    }
    /// True when packets to `ip` are delivered locally (loopback on, and `ip` is one of
    /// ours or in 127.0.0.0/8).
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.loopback_mtu.is_some() && (ip.is_loopback() || self.is_own_addr(ip))
    }
    pub fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip.is_broadcast() || self.addrs.iter().any(|c| c.broadcast() == Some(ip))
    }
    /// Source address toward `dst`: the address on its network, else the primary.
    pub fn source_for(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addrs
            .iter()
            .find(|c| c.contains(dst))
            .or(self.addrs.first())
            .map(|c| c.addr)
    }
    /// The IPv4 header of the next packet the stack originates (its ident is
    /// `next_ident`; the caller advances it once the packet is built).
    fn ipv4_header(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload_len: usize,
        dont_frag: bool,
    ) -> Ipv4Repr {
        Ipv4Repr {
            src,
            dst,
            protocol,
            payload_len,
            ttl: self.ttl,
            ident: self.next_ident,
            dont_frag,
            dscp_ecn: self.tx_tos,
        }
    }
    fn eth_header(&self, dst: MacAddr, ethertype: EtherType) -> EthernetRepr {
        EthernetRepr {
            src: self.mac,
            dst,
            vlan: self.vlan,
            ethertype,
        }
    }
}

/// One network interface of the stack.
pub struct Interface {
    core: Core,
    pub udp: UdpLayer,
    pub tcp: TcpLayer,
}

impl Interface {
    pub fn new(config: InterfaceConfig, tcp: TcpConfig) -> Interface {
        let frame_len = config.mtu + ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN;
        let mut udp = UdpLayer::new(config.udp, config.seed);
        udp.local_addrs = config.addrs.clone();
        udp.gateway = config.gateway;
        udp.local_addrs6 = config.ipv6_addrs.clone();
        udp.gateway6 = config.ipv6_gateway;
        udp.mtu = config.mtu;
        udp.loopback = config.loopback_mtu.is_some();
        Interface {
            core: Core {
                mac: config.mac,
                addrs: config.addrs,
                ipv6_addrs: config.ipv6_addrs,
                gateway: config.gateway,
                ipv6_gateway: config.ipv6_gateway,
                neighbor_mode: config.neighbor_mode,
                neighbors: NeighborCache::new(config.neighbor),
                neighbors6: NeighborCache::new(config.neighbor),
                vlan: config.vlan,
                mtu: config.mtu,
                ttl: config.ttl,
                tx_tos: 0,
                rx_checksum_verified: config.checksum.rx_verified,
                stats: Stats::default(),
                next_ident: (config.seed >> 16) as u16,
                next_ident6: (config.seed >> 32) as u32,
                flow_secret: config.seed.rotate_left(17) ^ 0x666c_6f77_6c61_6265,
                replies: ReplyQueue::new(config.reply_slots.max(1), frame_len),
                held: HeldFrames::new(config.held_frames, frame_len),
                wake: false,
                device_full: false,
                last_route: None,
                loopback_mtu: config.loopback_mtu,
                looped: Default::default(),
                reassembly: reassembly::Reassembler::new(config.reassembly),
            },
            udp,
            tcp: TcpLayer::new(tcp, config.seed),
        }
    }

    pub fn mac(&self) -> MacAddr {
        self.core.mac
    }
    pub fn addrs(&self) -> &[Ipv4Cidr] {
        &self.core.addrs
    }
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.core.gateway
    }
    pub fn mtu(&self) -> usize {
        self.core.mtu
    }
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }
    /// Counters of the IPv6 fragment reassembly (datagrams put together, fragments
    /// dropped by reason).
    pub fn reassembly_stats(&self) -> &reassembly::ReassemblyStats {
        self.core.reassembly.stats()
    }
    /// Whether `ip` is one of the interface's addresses.
    pub fn has_addr(&self, ip: Ipv4Addr) -> bool {
        self.core.is_own_addr(ip)
    }
    /// The source address the interface uses toward `dst` (for connect without bind);
    /// None when `dst` is off-link and there is no gateway, or there is no address.
    pub fn source_addr(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        match self.udp.source_for(dst.into()) {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        }
    }

    /// connect(2) for TCP: like [`TcpLayer::connect`], but an unspecified local address
    /// (or none) becomes the source address toward `remote`, as the kernel's route
    /// lookup would pick it. ENETUNREACH without a route, EADDRNOTAVAIL for a local
    /// address that is not the interface's.
    pub fn tcp_connect(
        &mut self,
        local: Option<SocketAddr>,
        remote: impl Into<SocketAddr>,
    ) -> crate::error::Result<crate::socket::SocketHandle> {
        use crate::error::Error;
        let remote = remote.into();
        let unspecified = match remote {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let local = local.unwrap_or(SocketAddr::new(unspecified, 0));
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(Error::InvalidInput);
        }
        let ip = match (local.ip(), remote.ip()) {
            (l, r) if l.is_unspecified() => self
                .source_ip(r)
                .ok_or(crate::error::Error::NetworkUnreachable)?,
            (IpAddr::V4(l), _) if self.has_addr(l) => l.into(),
            (IpAddr::V6(l), _) if self.core.is_own_ipv6(l) => l.into(),
            _ => return Err(Error::AddrNotAvailable),
        };
        self.tcp.connect(SocketAddr::new(ip, local.port()), remote)
    }

    /// [`Interface::source_addr`] for either family: for IPv6, the address whose
    /// prefix holds `dst`, else (link-local `dst`: a link-local address) the first.
    pub fn source_ip(&self, dst: IpAddr) -> Option<IpAddr> {
        self.udp.source_for(dst)
    }

    pub fn ipv6_addrs(&self) -> &[Ipv6Cidr] {
        &self.core.ipv6_addrs
    }
    pub fn set_ipv6_addrs(&mut self, addrs: Vec<Ipv6Cidr>) {
        self.udp.local_addrs6 = addrs.clone();
        self.core.ipv6_addrs = addrs;
    }

    pub fn set_addrs(&mut self, addrs: Vec<Ipv4Cidr>) {
        self.udp.local_addrs = addrs.clone();
        self.core.addrs = addrs;
        self.core.last_route = None;
    }
    pub fn set_gateway(&mut self, gateway: Option<Ipv4Addr>) {
        self.core.gateway = gateway;
        self.udp.gateway = gateway;
        self.core.last_route = None;
    }

    /// Sets a neighbour (from the kernel's table, or a static entry). It does not expire.
    pub fn set_neighbor(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.core.neighbors.insert(ip, mac, Instant::ZERO, false);
        self.core.wake = true;
    }
    pub fn remove_neighbor(&mut self, ip: Ipv4Addr) {
        self.core.neighbors.remove(ip);
    }
    /// The host could not resolve next hop `ip` at `now` (External mode: the kernel's
    /// entry went FAILED): what waits for it is dropped at the next dispatch, as Linux
    /// drops its unresolved queue, and it leaves `missing_neighbors`; after the failed
    /// hold a new send asks for it again.
    pub fn neighbor_failed(&mut self, ip: Ipv4Addr, now: Instant) {
        self.core.neighbors.fail(ip, now);
        self.core.wake = true;
    }
    /// The MAC the stack would use for next hop `ip` at `now`.
    pub fn neighbor(&self, ip: Ipv4Addr, now: Instant) -> Option<MacAddr> {
        self.core.neighbors.get(ip, now)
    }
    /// Next hops the stack wanted to send to but has no MAC for.
    pub fn missing_neighbors(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.core.neighbors.missing()
    }

    /// [`Interface::set_neighbor`] for an IPv6 next hop.
    pub fn set_neighbor6(&mut self, ip: Ipv6Addr, mac: MacAddr) {
        self.core.neighbors6.insert(ip, mac, Instant::ZERO, false);
        self.core.wake = true;
    }
    /// [`Interface::neighbor`] for an IPv6 next hop (learned from NS/NA or set).
    pub fn neighbor6(&self, ip: Ipv6Addr, now: Instant) -> Option<MacAddr> {
        self.core.neighbors6.get(ip, now)
    }
    /// [`Interface::missing_neighbors`] for IPv6.
    pub fn missing_neighbors6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.core.neighbors6.missing()
    }
    /// [`Interface::neighbor_failed`] for an IPv6 next hop.
    pub fn neighbor_failed6(&mut self, ip: Ipv6Addr, now: Instant) {
        self.core.neighbors6.fail(ip, now);
        self.core.wake = true;
    }
    pub fn ipv6_gateway(&self) -> Option<Ipv6Addr> {
        self.core.ipv6_gateway
    }
    pub fn set_ipv6_gateway(&mut self, gateway: Option<Ipv6Addr>) {
        self.core.ipv6_gateway = gateway;
        self.udp.gateway6 = gateway;
    }

    /// The oldest readiness change not yet taken: UDP sockets first, then TCP.
    pub fn pop_readiness_change(&mut self) -> Option<ReadinessChange> {
        self.udp
            .pop_readiness_change()
            .or_else(|| self.tcp.readiness_queue().pop())
    }

    /// When `dispatch` should next run: `Instant::ZERO` means "now" (something is
    /// queued), None means "only after the next receive or socket call".
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.core.replies.ready.is_empty()
            || !self.core.looped.ready.is_empty()
            || self.core.wake
            || self.core.device_full
            || self.udp.kicked
        {
            return Some(Instant::ZERO);
        }
        let mut at = self.tcp.poll_at();
        // The reassembly deadline frees the memory of an unfinished datagram.
        for n in [
            self.core.neighbors.poll_at(),
            self.core.neighbors6.poll_at(),
            self.core.reassembly.next_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            at = Some(at.map_or(n, |t| t.min(n)));
        }
        at
    }

    /// Sends what is due: control replies, then TCP, then UDP datagrams. Stops when the
    /// device is full; what is left goes on the next call. Packets to local addresses
    /// (loopback on) are received here, within a few rounds of send and receive.
    pub fn dispatch(&mut self, now: Instant, dev: &mut dyn Device) {
        for _ in 0..loopback::DISPATCH_ROUNDS {
            self.dispatch_once(now, dev);
            if self.core.looped.ready.is_empty() {
                return;
            }
            self.deliver_looped(now, dev);
        }
    }

    /// Receives the frames sent to local addresses. Their checksums are not verified:
    /// they never left this memory.
    fn deliver_looped(&mut self, now: Instant, dev: &mut dyn Device) {
        for _ in 0..self.core.looped.ready.len() {
            let Some(frame) = self.core.looped.ready.pop_front() else {
                return;
            };
            if dev.take_local(&frame) {
                // Another stack on this host serves that port (host loopback).
                self.core.stats.host_frames += 1;
                self.core.stats.host_bytes += frame.len() as u64;
            } else {
                self.core.stats.looped_frames += 1;
                self.core.stats.looped_bytes += frame.len() as u64;
                self.receive_frame(now, &frame, false);
            }
            self.core.looped.recycle(frame);
        }
    }

    /// Takes a frame another stack on this host sent to one of our local addresses
    /// (host loopback): like `receive`, but its transport checksums are not verified
    /// (they were never filled: the frame never left memory).
    pub fn receive_local(&mut self, now: Instant, frame: &[u8]) {
        self.receive_frame(now, frame, false);
    }

    fn dispatch_once(&mut self, now: Instant, dev: &mut dyn Device) {
        self.core.wake = false;
        self.core.device_full = false;
        self.udp.kicked = false;
        while let Some(frame) = self.core.replies.ready.front() {
            let len = frame.len();
            if !dev.transmit(len, &mut |buf| buf.copy_from_slice(frame)) {
                self.core.stats.tx_device_full += 1;
                self.core.device_full = true;
                return;
            }
            self.core.stats.tx_frames += 1;
            self.core.stats.tx_bytes += len as u64;
            let b = self.core.replies.ready.pop_front().expect("front exists");
            self.core.replies.spare.push(b);
        }
        let held = !self.core.held.frames.is_empty();
        let mut out = IpOut::new(&mut self.core, dev, now);
        if held {
            out.flush_held();
        }
        self.tcp.dispatch(now, &mut out);
        if !out.device_full() {
            dispatch_udp(&mut self.udp, &mut out);
        }
        self.core.neighbors.retire_unwanted(now);
        self.core.neighbors6.retire_unwanted(now);
        if self
            .core
            .reassembly
            .next_deadline()
            .is_some_and(|t| t <= now)
        {
            self.core.reassembly.expire(now);
        }
    }

    /// Takes one received Ethernet frame (without FCS).
    pub fn receive(&mut self, now: Instant, frame: &[u8]) {
        let verify = !self.core.rx_checksum_verified;
        self.receive_frame(now, frame, verify);
    }

    fn receive_frame(&mut self, now: Instant, frame: &[u8], verify: bool) {
        self.core.stats.rx_frames += 1;
        self.core.stats.rx_bytes += frame.len() as u64;
        if !self.receive_tcp_predicted(now, frame, verify) {
            self.receive_general(now, frame, verify);
        }
    }

    /// Header prediction for the receive path: a well-formed, untagged IPv4 packet
    /// without options or fragmentation, carrying TCP, sent to our MAC and one of our
    /// addresses from an ordinary source, with correct checksums. Such a frame goes
    /// straight to TCP, with the checks of the general path but not its dispatching;
    /// anything else (including every frame the general path would drop) returns false
    /// untouched, and the general path takes it.
    #[inline]
    fn receive_tcp_predicted(&mut self, now: Instant, frame: &[u8], verify: bool) -> bool {
        const HEADERS: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
        let Some(head) = frame.first_chunk::<HEADERS>() else {
            return false;
        };
        let (eth_bytes, ip_bytes) = head.split_at(ethernet::HEADER_LEN);
        let eth = EthernetFrame::new_unchecked(eth_bytes);
        let ip = Ipv4Packet::new_unchecked(ip_bytes);
        let core = &mut self.core;
        if core.vlan.is_some()
            || eth.outer_ethertype() != EtherType::Ipv4
            || eth.dst() != core.mac
            || ip.version() != 4
            || ip.header_len() as usize != ipv4::HEADER_LEN
            || ip.protocol() != 6
            || ip.is_fragment()
        {
            return false;
        }
        let total = ip.total_len() as usize;
        if total < ipv4::HEADER_LEN + tcp::HEADER_LEN || ethernet::HEADER_LEN + total > frame.len()
        {
            return false;
        }
        if verify && !ip.verify_checksum() {
            return false;
        }
        let (src, dst) = (ip.src(), ip.dst());
        if !core.is_own_addr(dst)
            || src.is_broadcast()
            || src.is_multicast()
            || core.is_broadcast(src)
        {
            return false;
        }
        let l4 = &frame[HEADERS..ethernet::HEADER_LEN + total];
        if verify && checksum::transport_checksum(src, dst, 6, l4) != 0 {
            return false;
        }
        core.stats.tcp_segments_received += 1;
        self.tcp.receive(now, src, dst, l4);
        true
    }

    /// The general receive path: every frame type, every check, drops by reason.
    fn receive_general(&mut self, now: Instant, frame: &[u8], verify: bool) {
        let st = &mut self.core.stats;
        let eth_frame = match EthernetFrame::new_checked(frame) {
            Ok(f) => f,
            Err(_) => return st.drop(DropReason::EthernetTruncated),
        };
        let eth = match EthernetRepr::parse(&eth_frame) {
            Ok(r) => r,
            Err(_) => return st.drop(DropReason::VlanMismatch),
        };
        // IPv6 multicast (ND) comes to 33:33 MACs of the groups we listen to.
        if eth.dst != self.core.mac
            && !eth.dst.is_broadcast()
            && !(eth.ethertype == EtherType::Ipv6 && self.core.accepts_ipv6_mac(eth.dst))
        {
            return self.core.stats.drop(DropReason::EthernetNotForUs);
        }
        if eth.vlan != self.core.vlan {
            return self.core.stats.drop(DropReason::VlanMismatch);
        }
        match eth.ethertype {
            EtherType::Arp => self.receive_arp(now, eth_frame.payload()),
            EtherType::Ipv4 => self.receive_ipv4(now, &eth, eth_frame.payload(), verify),
            EtherType::Ipv6 if !self.core.ipv6_addrs.is_empty() => {
                self.receive_ipv6(now, &eth, eth_frame.payload(), verify)
            }
            _ => self.core.stats.drop(DropReason::UnknownEthertype),
        }
    }

    fn receive_arp(&mut self, now: Instant, payload: &[u8]) {
        let core = &mut self.core;
        if core.neighbor_mode == NeighborMode::External {
            return core.stats.drop(DropReason::ArpIgnored);
        }
        let arp = match ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
            Ok(a) => a,
            Err(_) => return core.stats.drop(DropReason::ArpMalformed),
        };
        if arp.source_mac.is_multicast()
            || !matches!(arp.operation, ArpOperation::Request | ArpOperation::Reply)
        {
            return core.stats.drop(DropReason::ArpMalformed);
        }
        let for_us = core.is_own_addr(arp.target_ip);
        if !arp.source_ip.is_unspecified() && !core.is_own_addr(arp.source_ip) {
            if for_us {
                core.neighbors
                    .insert(arp.source_ip, arp.source_mac, now, true);
                core.wake = true;
            } else if core.neighbors.refresh(arp.source_ip, arp.source_mac, now) {
                core.wake = true;
            }
        }
        if for_us && arp.operation == ArpOperation::Request {
            let Some(mut b) = core.replies.take() else {
                return core.stats.drop(DropReason::ReplyQueueFull);
            };
            let eth = core.eth_header(arp.source_mac, EtherType::Arp);
            let reply = ArpRepr {
                operation: ArpOperation::Reply,
                source_mac: core.mac,
                source_ip: arp.target_ip,
                target_mac: arp.source_mac,
                target_ip: arp.source_ip,
            };
            b.resize(eth.header_len() + arp::PACKET_LEN, 0);
            eth.emit(&mut b);
            reply.emit(&mut b[eth.header_len()..]);
            core.replies.push(b);
            core.stats.arp_replies_sent += 1;
        }
    }

    fn receive_ipv4(&mut self, now: Instant, eth: &EthernetRepr, payload: &[u8], verify: bool) {
        let core = &mut self.core;
        let packet = match Ipv4Packet::new_checked(payload) {
            Ok(p) => p,
            Err(WireError::Truncated) => return core.stats.drop(DropReason::Ipv4Truncated),
            Err(_) => return core.stats.drop(DropReason::Ipv4Malformed),
        };
        let ip = match Ipv4Repr::parse(&packet, verify) {
            Ok(r) => r,
            Err(WireError::Checksum) => return core.stats.drop(DropReason::Ipv4BadChecksum),
            Err(WireError::Fragment) => return core.stats.drop(DropReason::Ipv4Fragment),
            Err(WireError::Truncated) => return core.stats.drop(DropReason::Ipv4Truncated),
            Err(_) => return core.stats.drop(DropReason::Ipv4Malformed),
        };
        let unicast = core.is_own_addr(ip.dst) || core.is_local(ip.dst);
        if !unicast && !core.is_broadcast(ip.dst) {
            return core.stats.drop(DropReason::Ipv4NotForUs);
        }
        if ip.src.is_broadcast() || ip.src.is_multicast() || core.is_broadcast(ip.src) {
            return core.stats.drop(DropReason::Ipv4BadSource);
        }
        let l4 = packet.payload();
        match ip.protocol {
            1 => self.receive_icmp(eth, &ip, unicast, l4, verify),
            6 => {
                if !unicast || l4.len() < 20 {
                    return core.stats.drop(DropReason::TcpMalformed);
                }
                if verify && checksum::transport_checksum(ip.src, ip.dst, 6, l4) != 0 {
                    return core.stats.drop(DropReason::TcpBadChecksum);
                }
                core.stats.tcp_segments_received += 1;
                self.tcp.receive(now, ip.src, ip.dst, l4);
            }
            17 => self.receive_udp(now, eth, &ip, unicast, packet.packet_bytes(), verify),
            _ => core.stats.drop(DropReason::UnknownProtocol),
        }
    }

    fn receive_icmp(
        &mut self,
        eth: &EthernetRepr,
        ip: &Ipv4Repr,
        unicast: bool,
        l4: &[u8],
        verify: bool,
    ) {
        let core = &mut self.core;
        let packet = match IcmpPacket::new_checked(l4) {
            Ok(p) => p,
            Err(_) => return core.stats.drop(DropReason::IcmpMalformed),
        };
        let msg = match IcmpRepr::parse(&packet, verify) {
            Ok(m) => m,
            Err(WireError::Checksum) => return core.stats.drop(DropReason::IcmpBadChecksum),
            Err(WireError::Unsupported) => return core.stats.drop(DropReason::IcmpIgnored),
            Err(_) => return core.stats.drop(DropReason::IcmpMalformed),
        };
        match msg {
            // Like Linux (icmp_echo_ignore_broadcasts=1): only unicast pings are answered.
            IcmpRepr::EchoRequest { ident, seq, data } if unicast => {
                let reply = IcmpRepr::EchoReply { ident, seq, data };
                if queue_ip_reply(
                    core,
                    eth.src,
                    ip.dst,
                    ip.src,
                    1,
                    &|b| reply.emit(b),
                    reply.buffer_len(),
                ) {
                    core.stats.icmp_echo_replies_sent += 1;
                }
            }
            IcmpRepr::DstUnreachable { code, original } => {
                // The quoted packet: our IPv4 header and the first 8 bytes of UDP.
                let hl = (original[0] & 0x0f) as usize * 4;
                if hl < ipv4::HEADER_LEN || original.len() < hl + 8 || original[9] != 17 {
                    return core.stats.drop(DropReason::IcmpIgnored);
                }
                let q_src = Ipv4Addr::new(original[12], original[13], original[14], original[15]);
                let q_dst = Ipv4Addr::new(original[16], original[17], original[18], original[19]);
                let sport = u16::from_be_bytes([original[hl], original[hl + 1]]);
                let dport = u16::from_be_bytes([original[hl + 2], original[hl + 3]]);
                if !core.is_own_addr(q_src) && !core.is_local(q_src) {
                    return core.stats.drop(DropReason::IcmpIgnored);
                }
                let error = if code == icmp::CODE_PORT_UNREACHABLE {
                    crate::error::Error::ConnectionRefused
                } else {
                    crate::error::Error::HostUnreachable
                };
                self.udp.icmp_unreachable(
                    SocketAddrV4::new(q_src, sport).into(),
                    SocketAddrV4::new(q_dst, dport).into(),
                    error,
                );
            }
            _ => core.stats.drop(DropReason::IcmpIgnored),
        }
    }

    /// `ip_packet` is the whole IPv4 packet (quoted in a port unreachable).
    fn receive_udp(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        ip: &Ipv4Repr,
        unicast: bool,
        ip_packet: &[u8],
        verify: bool,
    ) {
        let core = &mut self.core;
        let hl = ip_packet.len() - ip.payload_len;
        let l4 = &ip_packet[hl..];
        let packet = match UdpPacket::new_checked(l4) {
            Ok(p) => p,
            Err(_) => return core.stats.drop(DropReason::UdpMalformed),
        };
        let udp = match UdpRepr::parse(&packet, ip.src, ip.dst, verify) {
            Ok(u) => u,
            Err(WireError::Checksum) => return core.stats.drop(DropReason::UdpBadChecksum),
            Err(_) => return core.stats.drop(DropReason::UdpMalformed),
        };
        let src = SocketAddrV4::new(ip.src, udp.src_port);
        let dst = SocketAddrV4::new(ip.dst, udp.dst_port);
        let info = RxInfo {
            to: dst.into(),
            tos: ip.dscp_ecn,
            ttl: ip.ttl,
            arrival: now,
        };
        if self.deliver_udp(src.into(), info, packet.payload(), !unicast) {
            return;
        }
        let core = &mut self.core;
        if unicast {
            // ICMP port unreachable quoting the IP header and 8 bytes (RFC 792/1122).
            let quote = &ip_packet[..(hl + 8).min(ip_packet.len())];
            let msg = IcmpRepr::DstUnreachable {
                code: icmp::CODE_PORT_UNREACHABLE,
                original: quote,
            };
            if queue_ip_reply(
                core,
                eth.src,
                ip.dst,
                ip.src,
                1,
                &|b| msg.emit(b),
                msg.buffer_len(),
            ) {
                core.stats.icmp_unreachables_sent += 1;
            }
        }
    }
}

impl Interface {
    /// Hands a received datagram to its socket, counted; false (counted) when no
    /// socket takes it.
    fn deliver_udp(&mut self, src: SocketAddr, info: RxInfo, payload: &[u8], bcast: bool) -> bool {
        let full_before = self.udp.rx_buffer_full;
        if self.udp.deliver(src, info, payload, bcast) {
            if self.udp.rx_buffer_full != full_before {
                self.core.stats.drop(DropReason::UdpBufferFull);
            } else {
                self.core.stats.udp_datagrams_received += 1;
            }
            return true;
        }
        self.core.stats.drop(DropReason::UdpNoSocket);
        false
    }
}

/// Builds a whole IPv4 reply frame into the reply queue, to `dst_mac` (the sender of
/// what we answer). Returns false (counted) when the queue is full.
fn queue_ip_reply(
    core: &mut Core,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    emit: &dyn Fn(&mut [u8]),
    len: usize,
) -> bool {
    // A reply to one of our own addresses (loopback on) is delivered locally.
    let local = core.is_local(dst);
    let mtu = if local {
        core.loopback_mtu.unwrap_or(core.mtu)
    } else {
        core.mtu
    };
    if ipv4::HEADER_LEN + len > mtu {
        core.stats.drop(DropReason::TxTooBig);
        return false;
    }
    let taken = if local {
        core.looped.take()
    } else {
        core.replies.take()
    };
    let Some(mut b) = taken else {
        core.stats.drop(DropReason::ReplyQueueFull);
        return false;
    };
    let dst_mac = if local { core.mac } else { dst_mac };
    let eth = core.eth_header(dst_mac, EtherType::Ipv4);
    let ip = core.ipv4_header(src, dst, protocol, len, false);
    core.next_ident = core.next_ident.wrapping_add(1);
    let hl = eth.header_len();
    b.resize(hl + ipv4::HEADER_LEN + len, 0);
    eth.emit(&mut b);
    ip.emit(&mut b[hl..], true);
    emit(&mut b[hl + ipv4::HEADER_LEN..]);
    if local {
        core.looped.ready.push_back(b);
    } else {
        core.replies.push(b);
    }
    true
}

/// Sends queued UDP datagrams until the device is full or every waiting socket is
/// blocked on neighbour resolution.
fn dispatch_udp(udp: &mut UdpLayer, out: &mut IpOut<'_>) {
    let mut deferred = 0usize;
    while let Some((i, meta, payload)) = udp.peek_tx() {
        out.core.tx_tos = meta.tos;
        let sent = out.send_udp(meta.src, meta.dst, payload);
        out.core.tx_tos = 0;
        match sent {
            ip_out::Outcome::Sent => {
                out.stats().udp_datagrams_sent += 1;
                udp.pop_tx(i);
            }
            ip_out::Outcome::DeviceFull => return,
            ip_out::Outcome::Pending => {
                udp.defer_tx(i);
                deferred += 1;
                if deferred >= udp.tx_pending_count() {
                    return;
                }
            }
            ip_out::Outcome::Dropped(reason) => {
                out.stats().drop(reason);
                udp.pop_tx(i);
            }
            ip_out::Outcome::Held => unreachable!("UDP keeps its datagrams in the socket"),
        }
    }
}

#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod loopback_tests;
#[cfg(test)]
mod tests;
