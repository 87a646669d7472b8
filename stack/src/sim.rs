//! A deterministic network simulator for tests and benchmarks.
//!
//! [`Link`] is a one-way link that carries whole packets (IP packets or Ethernet frames
//! as byte vectors) with seeded loss, duplication, reordering, delay and jitter, a
//! bandwidth limit with a finite queue, and an MTU. [`TcpPair`] joins two
//! [`TcpLayer`]s through a pair of links with a minimal IPv4 framing, so TCP can be
//! tested without the interface; [`IfacePair`] runs two [`Interface`]s over the same
//! [`Link`]s, each driven only when the shim would drive it.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::collections::BinaryHeap;

use crate::device::{ChecksumOffload, Device, DeviceCaps};
use crate::iface::{Interface, InterfaceConfig, NeighborMode};
use crate::ip_tx::{IpProtocol, IpTx};
use crate::tcp::hash::Prng;
use crate::tcp::{TcpConfig, TcpLayer};
use crate::time::{Duration, Instant};
use crate::wire::checksum::transport_checksum;
use crate::wire::{Ipv4Cidr, Ipv6Cidr, MacAddr};

/// How a link misbehaves. Probabilities are per packet.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]` (reorders packets when large).
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a packet is held back by `reorder_delay` (overtaken).
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Bytes per second; `None` is infinitely fast.
    pub bandwidth: Option<u64>,
    /// Bytes the bottleneck queue holds before tail-dropping (with `bandwidth`).
    pub queue_bytes: usize,
    /// Largest packet carried; larger ones are dropped.
    pub mtu: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(3),
            bandwidth: None,
            queue_bytes: 1 << 20,
            mtu: 1500,
        }
    }
}

impl LinkConfig {
    /// The "hostile" profile of the issue: 5% loss, reordering, duplication.
    pub fn lossy(loss: f64) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_millis(2),
            jitter: Duration::from_micros(500),
            loss,
            duplicate: 0.02,
            reorder: 0.05,
            reorder_delay: Duration::from_millis(3),
            ..LinkConfig::default()
        }
    }
}

/// What a link did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub too_big: u64,
    pub queue_drops: u64,
}

struct InFlight {
    at: Instant,
    order: u64,
    packet: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    /// Reversed: the heap pops the earliest delivery first.
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (o.at, o.order).cmp(&(self.at, self.order))
    }
}

/// One direction of a simulated wire.
pub struct Link {
    pub cfg: LinkConfig,
    pub stats: LinkStats,
    prng: Prng,
    queue: BinaryHeap<InFlight>,
    order: u64,
    busy_until: Instant,
    pool: Vec<Vec<u8>>,
}

impl Link {
    pub fn new(cfg: LinkConfig, seed: u64) -> Link {
        Link {
            cfg,
            stats: LinkStats::default(),
            prng: Prng::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            busy_until: Instant::ZERO,
            pool: Vec::new(),
        }
    }

    /// A cleared buffer to build a packet in (recycled when possible).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v
    }

    /// Gives a delivered packet's buffer back for reuse.
    pub fn recycle(&mut self, v: Vec<u8>) {
        if self.pool.len() < 1024 {
            self.pool.push(v);
        }
    }

    /// Puts a packet on the wire at `now`.
    pub fn send(&mut self, now: Instant, packet: Vec<u8>) {
        self.stats.sent += 1;
        if packet.len() > self.cfg.mtu {
            self.stats.too_big += 1;
            return self.recycle(packet);
        }
        let mut depart = now;
        if let Some(bw) = self.cfg.bandwidth {
            let start = self.busy_until.max(now);
            let backlog = (start.micros() - now.micros()) as u128 * bw as u128 / 1_000_000;
            if backlog as usize + packet.len() > self.cfg.queue_bytes {
                self.stats.queue_drops += 1;
                return self.recycle(packet);
            }
            let tx = (packet.len() as u128 * 1_000_000).div_ceil(bw as u128) as u64;
            depart = start + Duration(tx);
            self.busy_until = depart;
        }
        if self.prng.chance(self.cfg.loss) {
            self.stats.lost += 1;
            return self.recycle(packet);
        }
        if self.prng.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            let mut copy = self.buffer();
            copy.extend_from_slice(&packet);
            let at = self.arrival(depart);
            self.push(at, copy);
        }
        let at = self.arrival(depart);
        self.push(at, packet);
    }

    fn arrival(&mut self, depart: Instant) -> Instant {
        let mut at = depart + self.cfg.delay;
        if self.cfg.jitter > Duration::ZERO {
            at += Duration(self.prng.below(self.cfg.jitter.micros() + 1));
        }
        if self.prng.chance(self.cfg.reorder) {
            self.stats.reordered += 1;
            at += self.cfg.reorder_delay;
        }
        at
    }

    fn push(&mut self, at: Instant, packet: Vec<u8>) {
        self.order += 1;
        self.queue.push(InFlight {
            at,
            order: self.order,
            packet,
        });
    }

    /// When the next packet arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|p| p.at)
    }

    /// The next packet due at or before `now`.
    pub fn deliver(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.peek()?.at > now {
            return None;
        }
        self.stats.delivered += 1;
        self.queue.pop().map(|p| p.packet)
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

/// Minimal IPv4 framing for [`TcpPair`]: 20-byte header, no options.
pub mod ipv4 {
    use core::net::Ipv4Addr;

    pub const HEADER: usize = 20;

    pub fn write_header(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total: usize) {
        buf[0] = 0x45;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        buf[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
        buf[8] = 64;
        buf[9] = proto;
        buf[10..12].copy_from_slice(&[0, 0]);
        buf[12..16].copy_from_slice(&src.octets());
        buf[16..20].copy_from_slice(&dst.octets());
        let c = crate::wire::checksum::checksum(&buf[..HEADER]);
        buf[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// `(src, dst, protocol, payload)` of a well-formed packet.
    pub fn parse(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
        if p.len() < HEADER || p[0] != 0x45 {
            return None;
        }
        let total = u16::from_be_bytes([p[2], p[3]]) as usize;
        if total < HEADER || total > p.len() || crate::wire::checksum::checksum(&p[..HEADER]) != 0 {
            return None;
        }
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        Some((src, dst, p[9], &p[HEADER..total]))
    }
}

/// The IP layer of one simulated host: frames TCP segments into IPv4 packets onto a link.
pub struct SimIpTx<'a> {
    pub link: &'a mut Link,
    pub now: Instant,
    /// When set, refuse sends after this many packets (tests "device full").
    pub budget: Option<usize>,
}

impl IpTx for SimIpTx<'_> {
    fn max_segment(&self, _dst: IpAddr) -> usize {
        self.link.cfg.mtu - ipv4::HEADER
    }

    /// IPv4 only: [`IfacePair`] carries IPv6.
    fn send(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
            self.link.stats.lost += 1;
            return true;
        };
        if let Some(b) = self.budget.as_mut() {
            if *b == 0 {
                return false;
            }
            *b -= 1;
        }
        let mut p = self.link.buffer();
        p.resize(ipv4::HEADER + len, 0);
        ipv4::write_header(&mut p, src, dst, proto.number(), ipv4::HEADER + len);
        let seg = &mut p[ipv4::HEADER..];
        fill(seg);
        if proto == IpProtocol::Tcp {
            seg[16..18].copy_from_slice(&[0, 0]);
            let c = transport_checksum(src, dst, 6, seg);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
        }
        self.link.send(self.now, p);
        true
    }
}

/// Moves `now` to the next event `next` unless it is past `limit` (then to `limit`, and
/// false). An event due "now" again (a stack that the budget kept from sending all it
/// wanted) moves time on by a microsecond, so a simulation cannot spin.
fn advance(now: &mut Instant, next: Option<Instant>, limit: Instant) -> bool {
    let t = match next {
        Some(t) if t <= limit => t,
        _ => {
            *now = (*now).max(limit);
            return false;
        }
    };
    *now = if t <= *now { *now + Duration(1) } else { t };
    if *now > limit {
        *now = limit;
        return false;
    }
    true
}

/// The earliest of two stacks' timers and two links' next deliveries.
fn earliest(timers: [Option<Instant>; 2], links: [&Link; 2]) -> Option<Instant> {
    timers
        .into_iter()
        .chain(links.map(Link::next_delivery))
        .flatten()
        .min()
}

/// Dispatches, then steps `sim` until `cond` holds (checked after every step) or
/// `limit` passes. Returns whether `cond` held.
fn run_until<S>(
    sim: &mut S,
    dispatch: fn(&mut S),
    step: fn(&mut S, Instant) -> bool,
    limit: Instant,
    mut cond: impl FnMut(&mut S) -> bool,
) -> bool {
    dispatch(sim);
    loop {
        if cond(sim) {
            return true;
        }
        if !step(sim, limit) {
            return cond(sim);
        }
    }
}

/// Two TCP layers, `a` at 10.0.0.1 and `b` at 10.0.0.2, joined by two links.
pub struct TcpPair {
    pub now: Instant,
    pub a: TcpLayer,
    pub b: TcpLayer,
    pub a_to_b: Link,
    pub b_to_a: Link,
    /// Packet budget per dispatch for each side (None: unlimited).
    pub budget: [Option<usize>; 2],
    /// Segments each side received with a bad IP header or checksum.
    pub corrupt: [u64; 2],
}

pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

impl TcpPair {
    pub fn new(cfg: TcpConfig, link: LinkConfig, seed: u64) -> TcpPair {
        Self::with_configs(cfg.clone(), cfg, link.clone(), link, seed)
    }

    pub fn with_configs(
        cfg_a: TcpConfig,
        cfg_b: TcpConfig,
        ab: LinkConfig,
        ba: LinkConfig,
        seed: u64,
    ) -> TcpPair {
        let mut p = Prng::new(seed);
        TcpPair {
            now: Instant::from_millis(1),
            a: TcpLayer::new(cfg_a, p.next_u64()),
            b: TcpLayer::new(cfg_b, p.next_u64()),
            a_to_b: Link::new(ab, p.next_u64()),
            b_to_a: Link::new(ba, p.next_u64()),
            budget: [None, None],
            corrupt: [0, 0],
        }
    }

    pub fn addr_a(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(ADDR_A, port)
    }
    pub fn addr_b(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(ADDR_B, port)
    }

    /// Lets both stacks emit what is due now.
    pub fn dispatch(&mut self) {
        let now = self.now;
        let mut tx = SimIpTx {
            link: &mut self.a_to_b,
            now,
            budget: self.budget[0],
        };
        self.a.dispatch(now, &mut tx);
        let mut tx = SimIpTx {
            link: &mut self.b_to_a,
            now,
            budget: self.budget[1],
        };
        self.b.dispatch(now, &mut tx);
    }

    /// The next time anything happens.
    pub fn next_event(&self) -> Option<Instant> {
        earliest(
            [self.a.poll_at(), self.b.poll_at()],
            [&self.a_to_b, &self.b_to_a],
        )
    }

    /// Advances to the next event (not past `limit`), delivers what arrived and
    /// dispatches. Returns false when nothing is scheduled before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let next = self.next_event();
        if !advance(&mut self.now, next, limit) {
            return false;
        }
        let now = self.now;
        while let Some(p) = self.a_to_b.deliver(now) {
            match ipv4::parse(&p) {
                Some((src, dst, 6, seg)) if transport_checksum(src, dst, 6, seg) == 0 => {
                    self.b.receive(now, src, dst, seg)
                }
                _ => self.corrupt[1] += 1,
            }
            self.a_to_b.recycle(p);
        }
        while let Some(p) = self.b_to_a.deliver(now) {
            match ipv4::parse(&p) {
                Some((src, dst, 6, seg)) if transport_checksum(src, dst, 6, seg) == 0 => {
                    self.a.receive(now, src, dst, seg)
                }
                _ => self.corrupt[0] += 1,
            }
            self.b_to_a.recycle(p);
        }
        self.dispatch();
        true
    }

    /// Runs until `cond` holds (checked after every step) or `limit` passes.
    /// Returns whether `cond` held.
    pub fn run_until(&mut self, limit: Instant, cond: impl FnMut(&mut TcpPair) -> bool) -> bool {
        run_until(self, Self::dispatch, Self::step, limit, cond)
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.dispatch();
        while self.step(end) {}
    }
}

/// A [`Device`] that puts frames on a [`Link`].
pub struct LinkDevice<'a> {
    pub link: &'a mut Link,
    pub now: Instant,
}

impl Device for LinkDevice<'_> {
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.link.cfg.mtu - crate::wire::ethernet::HEADER_LEN,
            checksum: ChecksumOffload::default(),
        }
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let mut f = self.link.buffer();
        f.resize(len, 0);
        fill(&mut f);
        self.link.send(self.now, f);
        true
    }
}

/// Two [`Interface`]s on one Ethernet segment (a veth pair), `a` at 10.0.0.1 and `b` at
/// 10.0.0.2, each driven the way the shim drives its stack: when a frame arrives and
/// at the interface's `poll_at`, never otherwise. With [`NeighborMode::External`] each
/// side's host plays the kernel that owns ARP: before every dispatch it answers the
/// interface's `missing_neighbors` from its table. Asked about the peer, a kernel
/// knows it `resolve_delay` later (the ARP round trip), and the peer's kernel knows
/// the asker from the ARP request on, half-way through. Nothing wakes an interface
/// when its kernel's table fills in.
pub struct IfacePair {
    pub now: Instant,
    pub a: Interface,
    pub b: Interface,
    pub a_to_b: Link,
    pub b_to_a: Link,
    pub resolve_delay: Duration,
    /// Per side and family (IPv4, IPv6): when its kernel's table has the peer (None:
    /// not yet resolving).
    kernel_knows_peer: [[Option<Instant>; 2]; 2],
}

pub const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
pub const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);
/// The IPv6 addresses [`IfacePair::with_ipv6`] gives `a` and `b` (in fd77::/64).
pub const ADDR6_A: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const ADDR6_B: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

impl IfacePair {
    /// Both interfaces with `neighbor_mode` (and otherwise default settings) over two
    /// links with `link`.
    pub fn new(neighbor_mode: NeighborMode, tcp: TcpConfig, link: LinkConfig, seed: u64) -> Self {
        let mut p = Prng::new(seed);
        let mut side = |mac, ip| {
            let mut c = InterfaceConfig::new(mac, Ipv4Cidr::new(ip, 24));
            c.neighbor_mode = neighbor_mode;
            c.seed = p.next_u64();
            Interface::new(c, tcp.clone())
        };
        let (a, b) = (side(MAC_A, ADDR_A), side(MAC_B, ADDR_B));
        // The links carry whole frames: the IP MTU plus the Ethernet header.
        let link = LinkConfig {
            mtu: link.mtu + crate::wire::ethernet::HEADER_LEN,
            ..link
        };
        IfacePair {
            now: Instant::from_millis(1),
            a,
            b,
            a_to_b: Link::new(link.clone(), p.next_u64()),
            b_to_a: Link::new(link, p.next_u64()),
            resolve_delay: Duration::from_micros(100),
            kernel_knows_peer: [[None, None], [None, None]],
        }
    }

    /// Gives `a` and `b` IPv6 addresses too ([`ADDR6_A`], [`ADDR6_B`], one /64): both
    /// then speak IPv4 and IPv6 on the segment; IPv6 neighbours come from Neighbor
    /// Discovery or, in External mode, from the host as IPv4's do.
    pub fn with_ipv6(mut self) -> Self {
        self.a.set_ipv6_addrs(vec![Ipv6Cidr::new(ADDR6_A, 64)]);
        self.b.set_ipv6_addrs(vec![Ipv6Cidr::new(ADDR6_B, 64)]);
        self
    }

    /// The host of one side: answer what the interface misses from the kernel's table,
    /// then dispatch.
    fn drive(&mut self, side: usize) {
        let now = self.now;
        let (iface, link, peer, peer6, peer_mac) = if side == 0 {
            (&mut self.a, &mut self.a_to_b, ADDR_B, ADDR6_B, MAC_B)
        } else {
            (&mut self.b, &mut self.b_to_a, ADDR_A, ADDR6_A, MAC_A)
        };
        let wants = [
            iface.missing_neighbors().any(|ip| ip == peer),
            iface.missing_neighbors6().any(|ip| ip == peer6),
        ];
        for (family, _) in wants.iter().enumerate().filter(|(_, &w)| w) {
            match self.kernel_knows_peer[family][side] {
                Some(at) if now >= at => match family {
                    0 => iface.set_neighbor(peer, peer_mac),
                    _ => iface.set_neighbor6(peer6, peer_mac),
                },
                Some(_) => {}
                None => {
                    // The ARP request (or NS) goes out now; the peer's kernel learns
                    // us from it.
                    let learn = |k: &mut Option<Instant>, at: Instant| {
                        *k = Some(k.map_or(at, |t| t.min(at)));
                    };
                    let d = self.resolve_delay;
                    let known = &mut self.kernel_knows_peer[family];
                    learn(&mut known[side], now + d);
                    learn(&mut known[1 - side], now + Duration(d.0 / 2));
                }
            }
        }
        iface.dispatch(now, &mut LinkDevice { link, now });
    }

    /// Lets both hosts drive their interfaces now.
    pub fn dispatch(&mut self) {
        self.drive(0);
        self.drive(1);
    }

    /// Advances to the next event (an interface's timer or a frame's arrival, not past
    /// `limit`), delivers what arrived and drives both sides. Returns false when
    /// nothing is scheduled before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let timers = [self.a.poll_at(), self.b.poll_at()];
        let next = earliest(timers, [&self.a_to_b, &self.b_to_a]);
        if !advance(&mut self.now, next, limit) {
            return false;
        }
        let now = self.now;
        while let Some(f) = self.a_to_b.deliver(now) {
            self.b.receive(now, &f);
            self.a_to_b.recycle(f);
        }
        while let Some(f) = self.b_to_a.deliver(now) {
            self.a.receive(now, &f);
            self.b_to_a.recycle(f);
        }
        self.dispatch();
        true
    }

    /// Runs until `cond` holds (checked after every step) or `limit` passes.
    /// Returns whether `cond` held.
    pub fn run_until(&mut self, limit: Instant, cond: impl FnMut(&mut IfacePair) -> bool) -> bool {
        run_until(self, Self::dispatch, Self::step, limit, cond)
    }
}
