//! UDP sockets: bind/connect/send_to/recv_from with per-socket buffers, readiness, and
//! errors as Linux gives them. IPv4 and IPv6: a socket takes the family of the
//! address it is bound to (or, unbound, of its first destination); the families'
//! wildcards (0.0.0.0, ::) are separate, as with IPV6_V6ONLY.
//!
//! Sends are queued in the socket's send buffer and leave on the next
//! `Interface::dispatch`; received datagrams wait in the receive buffer.

use super::packet_ring::PacketRing;
use crate::error::{Error, Result};
use crate::socket::{Readiness, ReadinessChange, ReadinessQueue, ReadinessTracker, SocketHandle};
use crate::tcp::endpoint;
use crate::time::Instant;
use crate::wire::{ipv4, udp, Ipv6Cidr};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::{HashMap, VecDeque};

/// Linux's default ephemeral port range (net.ipv4.ip_local_port_range).
pub const EPHEMERAL_PORTS: core::ops::RangeInclusive<u16> = 32768..=60999;
/// Largest UDP payload in an IPv4 packet.
pub const MAX_PAYLOAD: usize = 65535 - ipv4::HEADER_LEN - udp::HEADER_LEN;
/// Largest UDP payload in an IPv6 packet (no jumbograms): the IPv6 payload length
/// does not count the IPv6 header.
pub const MAX_PAYLOAD_V6: usize = 65535 - udp::HEADER_LEN;

/// Sizes of the UDP layer, fixed at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    pub max_sockets: usize,
    /// Default receive buffer (SO_RCVBUF), bytes of payload.
    pub rx_buffer: usize,
    /// Default send buffer (SO_SNDBUF), bytes of payload.
    pub tx_buffer: usize,
    /// Most datagrams one buffer holds (bounds per-datagram metadata).
    pub max_datagrams: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            max_sockets: 1024,
            rx_buffer: 212_992,
            tx_buffer: 212_992,
            max_datagrams: 1024,
        }
    }
}

/// What `recv_from` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRecv {
    /// Bytes copied into the caller's buffer.
    pub len: usize,
    /// The datagram's full length (larger than `len` when it was truncated: MSG_TRUNC).
    pub datagram_len: usize,
    pub from: SocketAddr,
    /// What the datagram's headers said on arrival (the ancillary data of recvmsg).
    pub info: RxInfo,
}

/// Per-datagram facts kept for recvmsg's ancillary data (IP_PKTINFO, IP_RECVTOS,
/// IP_RECVTTL, IP_RECVORIGDSTADDR, SO_TIMESTAMP*), as Linux keeps them with the skb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxInfo {
    /// The destination address and port the datagram carried (a broadcast address for
    /// a broadcast).
    pub to: SocketAddr,
    /// The IPv4 header's TOS byte, or IPv6's traffic class (DSCP and ECN).
    pub tos: u8,
    /// TTL, or IPv6's hop limit.
    pub ttl: u8,
    /// When the stack received it (the host's clock, as passed in).
    pub arrival: Instant,
}

#[derive(Clone, Copy, Debug)]
struct RxMeta {
    from: SocketAddr,
    info: RxInfo,
}

/// Send-queue metadata: the chosen source address and the destination.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxMeta {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The socket's IP_TOS / IPV6_TCLASS when it was queued.
    pub tos: u8,
}

#[derive(Debug)]
struct UdpSocket {
    /// Bound address (IP may be unspecified); None until bound.
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    rx: PacketRing<RxMeta>,
    tx: PacketRing<TxMeta>,
    /// Pending error (SO_ERROR), e.g. ECONNREFUSED from an ICMP port unreachable.
    error: Option<Error>,
    broadcast: bool,
    reuse_addr: bool,
    /// IP_TOS / IPV6_TCLASS of its datagrams.
    tos: u8,
    /// Bound to `::` and taking IPv4 too (an IPv6 socket without IPV6_V6ONLY): IPv4
    /// datagrams to the port reach it and it may send to IPv4 peers.
    dual_stack: bool,
    in_tx_pending: bool,
    tracker: ReadinessTracker,
}

/// The UDP sockets of one interface.
#[derive(Debug)]
pub struct UdpLayer {
    cfg: UdpConfig,
    sockets: Vec<Option<UdpSocket>>,
    free: Vec<u32>,
    /// Local port → sockets bound to it.
    ports: HashMap<u16, Vec<u32>>,
    /// Sockets with datagrams queued to send, in the order they queued.
    tx_pending: VecDeque<u32>,
    readiness: ReadinessQueue,
    next_ephemeral: u16,
    /// The interface's addresses and MTU (kept in sync by the interface).
    pub(crate) local_addrs: Vec<ipv4::Ipv4Cidr>,
    pub(crate) gateway: Option<Ipv4Addr>,
    pub(crate) local_addrs6: Vec<Ipv6Cidr>,
    pub(crate) gateway6: Option<Ipv6Addr>,
    pub(crate) mtu: usize,
    /// Loopback on: every 127.0.0.0/8 address is local (bind may name any of them).
    pub(crate) loopback: bool,
    /// Datagrams dropped because the receive buffer was full (all sockets).
    pub(crate) rx_buffer_full: u64,
    /// A datagram was queued since the last dispatch.
    pub(crate) kicked: bool,
}

impl UdpLayer {
    pub(crate) fn new(cfg: UdpConfig, seed: u64) -> Self {
        let n = cfg.max_sockets;
        let span = (*EPHEMERAL_PORTS.end() - *EPHEMERAL_PORTS.start()) as u64 + 1;
        UdpLayer {
            cfg,
            sockets: (0..n).map(|_| None).collect(),
            free: (0..n as u32).rev().collect(),
            ports: HashMap::with_capacity(n),
            tx_pending: VecDeque::with_capacity(n),
            readiness: ReadinessQueue::with_capacity(n),
            next_ephemeral: *EPHEMERAL_PORTS.start() + (seed % span) as u16,
            local_addrs: Vec::new(),
            gateway: None,
            local_addrs6: Vec::new(),
            gateway6: None,
            mtu: 1500,
            loopback: false,
            rx_buffer_full: 0,
            kicked: false,
        }
    }

    fn socket(&self, h: SocketHandle) -> Result<&UdpSocket> {
        if h.kind != crate::socket::SocketKind::Udp {
            return Err(Error::BadHandle);
        }
        self.sockets
            .get(h.index as usize)
            .and_then(|s| s.as_ref())
            .ok_or(Error::BadHandle)
    }

    fn socket_mut(&mut self, h: SocketHandle) -> Result<&mut UdpSocket> {
        if h.kind != crate::socket::SocketKind::Udp {
            return Err(Error::BadHandle);
        }
        self.sockets
            .get_mut(h.index as usize)
            .and_then(|s| s.as_mut())
            .ok_or(Error::BadHandle)
    }

    /// Creates an unbound socket (socket(AF_INET, SOCK_DGRAM)). ENOBUFS when the table
    /// is full.
    pub fn open(&mut self) -> Result<SocketHandle> {
        let i = self.free.pop().ok_or(Error::NoBufferSpace)?;
        self.sockets[i as usize] = Some(UdpSocket {
            local: None,
            remote: None,
            rx: PacketRing::new(self.cfg.rx_buffer, self.cfg.max_datagrams),
            tx: PacketRing::new(self.cfg.tx_buffer, self.cfg.max_datagrams),
            error: None,
            broadcast: false,
            reuse_addr: false,
            dual_stack: false,
            tos: 0,
            in_tx_pending: false,
            tracker: ReadinessTracker::default(),
        });
        let h = SocketHandle::udp(i);
        self.update_readiness(h);
        Ok(h)
    }

    /// Closes the socket; queued datagrams are discarded.
    pub fn close(&mut self, h: SocketHandle) -> Result<()> {
        let s = self.socket(h)?;
        if let Some(local) = s.local {
            self.unindex(local.port(), h.index);
        }
        self.sockets[h.index as usize] = None;
        self.tx_pending.retain(|&i| i != h.index);
        self.readiness.forget(h);
        self.free.push(h.index);
        Ok(())
    }

    fn unindex(&mut self, port: u16, index: u32) {
        if let Some(v) = self.ports.get_mut(&port) {
            v.retain(|&i| i != index);
            if v.is_empty() {
                self.ports.remove(&port);
            }
        }
    }

    fn is_local_addr(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => {
                (self.loopback && ip.is_loopback()) || self.local_addrs.iter().any(|c| c.addr == ip)
            }
            IpAddr::V6(ip) => self.local_addrs6.iter().any(|c| c.addr == ip),
        }
    }

    fn port_conflicts(&self, ip: IpAddr, port: u16, reuse: bool) -> bool {
        let Some(v) = self.ports.get(&port) else {
            return false;
        };
        v.iter().any(|&i| {
            let Some(their) = self.sockets[i as usize].as_ref().and_then(|s| s.local) else {
                return false;
            };
            let reuses = reuse
                && self.sockets[i as usize]
                    .as_ref()
                    .is_some_and(|s| s.reuse_addr);
            let their = their.ip();
            let overlap = their.is_ipv4() == ip.is_ipv4()
                && (their == ip || their.is_unspecified() || ip.is_unspecified());
            overlap && !reuses
        })
    }

    fn pick_ephemeral(&mut self, ip: IpAddr, reuse: bool) -> Result<u16> {
        let start = *EPHEMERAL_PORTS.start();
        let span = *EPHEMERAL_PORTS.end() - start + 1;
        for _ in 0..span {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= *EPHEMERAL_PORTS.end() {
                start
            } else {
                p + 1
            };
            if !self.port_conflicts(ip, p, reuse) {
                return Ok(p);
            }
        }
        Err(Error::AddrInUse)
    }

    /// bind(2). Port 0 picks an ephemeral port. EINVAL if already bound (or for a
    /// v4-mapped IPv6 address: the socket layer maps those to IPv4), EADDRNOTAVAIL for
    /// an address not on the interface, EADDRINUSE on conflict (unless both sockets
    /// set SO_REUSEADDR).
    pub fn bind(&mut self, h: SocketHandle, addr: impl Into<SocketAddr>) -> Result<()> {
        let addr = endpoint(addr.into());
        let s = self.socket(h)?;
        if s.local.is_some() || is_v4_mapped(addr.ip()) {
            return Err(Error::InvalidInput);
        }
        let reuse = s.reuse_addr;
        let ip = addr.ip();
        if !ip.is_unspecified() && !self.is_local_addr(ip) && !is_v4_broadcast(ip) {
            return Err(Error::AddrNotAvailable);
        }
        let port = if addr.port() == 0 {
            self.pick_ephemeral(ip, reuse)?
        } else {
            if self.port_conflicts(ip, addr.port(), reuse) {
                return Err(Error::AddrInUse);
            }
            addr.port()
        };
        self.socket_mut(h)?.local = Some(SocketAddr::new(ip, port));
        self.ports.entry(port).or_default().push(h.index);
        Ok(())
    }

    /// The socket's local address, bound now (to the wildcard of `peer`'s family) if
    /// it was not; EINVAL when it is bound to the other family.
    fn autobind(&mut self, h: SocketHandle, peer: IpAddr) -> Result<SocketAddr> {
        let local = match self.socket(h)?.local {
            Some(a) => a,
            None => {
                self.bind(h, SocketAddr::new(unspecified_like(peer), 0))?;
                self.socket(h)?.local.expect("just bound")
            }
        };
        let dual = self.socket(h)?.dual_stack && local.ip() == Ipv6Addr::UNSPECIFIED;
        if local.is_ipv4() != peer.is_ipv4() && !(dual && peer.is_ipv4()) {
            return Err(Error::InvalidInput);
        }
        Ok(local)
    }

    /// The source address the interface uses toward `dst`: the address on `dst`'s
    /// network, else the first address (via the gateway). None without a route.
    pub fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        let dst = match dst {
            IpAddr::V4(d) => d,
            IpAddr::V6(d) => {
                return ipv6_source(&self.local_addrs6, self.gateway6, d).map(IpAddr::V6)
            }
        };
        if let Some(c) = self.local_addrs.iter().find(|c| c.contains(dst)) {
            return Some(c.addr.into());
        }
        if dst.is_broadcast() {
            return self.local_addrs.first().map(|c| c.addr.into());
        }
        self.gateway?;
        self.local_addrs.first().map(|c| c.addr.into())
    }

    fn is_broadcast_dst(&self, dst: IpAddr) -> bool {
        match dst {
            IpAddr::V4(d) => {
                d.is_broadcast() || self.local_addrs.iter().any(|c| c.broadcast() == Some(d))
            }
            IpAddr::V6(_) => false,
        }
    }

    /// connect(2): sets the default destination and filters received datagrams to it.
    /// Binds an ephemeral port first if unbound. An unspecified address disconnects.
    pub fn connect(&mut self, h: SocketHandle, remote: impl Into<SocketAddr>) -> Result<()> {
        let remote = endpoint(remote.into());
        self.socket(h)?;
        if remote.ip().is_unspecified() {
            return self.disconnect(h);
        }
        if remote.port() == 0 || is_v4_mapped(remote.ip()) {
            return Err(Error::InvalidInput);
        }
        if self.source_for(remote.ip()).is_none() {
            return Err(Error::NetworkUnreachable);
        }
        if self.is_broadcast_dst(remote.ip()) && !self.socket(h)?.broadcast {
            return Err(Error::PermissionDenied);
        }
        self.autobind(h, remote.ip())?;
        let s = self.socket_mut(h)?;
        s.remote = Some(remote);
        s.error = None;
        Ok(())
    }

    /// connect(AF_UNSPEC): forgets the default destination.
    pub fn disconnect(&mut self, h: SocketHandle) -> Result<()> {
        self.socket_mut(h)?.remote = None;
        Ok(())
    }

    /// sendto(2)/send(2): queues one datagram. `dst` None uses the connected peer.
    /// Datagrams larger than the MTU leave as IPv4 or IPv6 fragments.
    /// Errors: EDESTADDRREQ (no destination), EMSGSIZE (over 65507 bytes, 65527 over
    /// IPv6, or larger than the send buffer), ENETUNREACH, EACCES (broadcast without
    /// SO_BROADCAST), EINVAL (a destination of the other family than the socket's),
    /// EAGAIN (send buffer full), or a pending error (ECONNREFUSED).
    pub fn send_to(
        &mut self,
        h: SocketHandle,
        data: &[u8],
        dst: Option<SocketAddr>,
    ) -> Result<usize> {
        self.send_to_from(h, data, dst, None)
    }

    /// sendmsg(2) with an IP_PKTINFO control message: like `send_to`, but `src` (its
    /// `ipi_spec_dst`, when not unspecified) is the datagram's source address, as Linux
    /// takes it; ENETUNREACH when it is not one of the interface's addresses.
    pub fn send_to_from(
        &mut self,
        h: SocketHandle,
        data: &[u8],
        dst: Option<SocketAddr>,
        src: Option<IpAddr>,
    ) -> Result<usize> {
        let src = src.filter(|ip| !ip.is_unspecified());
        if let Some(ip) = src {
            // Linux's output route lookup: EINVAL for a multicast or limited-broadcast
            // source, ENETUNREACH for one that is not local.
            if ip.is_multicast() || is_v4_broadcast(ip) {
                return Err(Error::InvalidInput);
            }
            if !self.is_local_addr(ip) {
                return Err(Error::NetworkUnreachable);
            }
        }
        let s = self.socket_mut(h)?;
        if let Some(e) = s.error.take() {
            self.update_readiness(h);
            return Err(e);
        }
        let s = self.socket(h)?;
        let dst = endpoint(dst.or(s.remote).ok_or(Error::DestinationRequired)?);
        if dst.port() == 0
            || is_v4_mapped(dst.ip())
            || src.is_some_and(|ip| ip.is_ipv4() != dst.is_ipv4())
        {
            return Err(Error::InvalidInput);
        }
        let max = if dst.is_ipv4() {
            MAX_PAYLOAD
        } else {
            MAX_PAYLOAD_V6
        };
        if data.len() > max || data.len() > s.tx.capacity() {
            return Err(Error::MessageTooLong);
        }
        let bcast = self.is_broadcast_dst(dst.ip());
        if bcast && !s.broadcast {
            return Err(Error::PermissionDenied);
        }
        let route_src = self.source_for(dst.ip()).ok_or(Error::NetworkUnreachable)?;
        if !s.tx.can_push(data.len()) {
            return Err(Error::WouldBlock);
        }
        let local = self.autobind(h, dst.ip())?;
        let src_ip = if let Some(ip) = src {
            ip
        } else if local.ip().is_unspecified() || is_v4_broadcast(local.ip()) {
            route_src
        } else {
            local.ip()
        };
        let meta = TxMeta {
            src: SocketAddr::new(src_ip, local.port()),
            dst,
            tos: self.socket(h)?.tos,
        };
        let s = self.socket_mut(h)?;
        let buf = s.tx.push(meta, data.len()).ok_or(Error::WouldBlock)?;
        buf.copy_from_slice(data);
        if !s.in_tx_pending {
            s.in_tx_pending = true;
            self.tx_pending.push_back(h.index);
        }
        self.kicked = true;
        self.update_readiness(h);
        Ok(data.len())
    }

    /// recvfrom(2): takes the oldest datagram (truncating it to `buf`, like Linux).
    /// EAGAIN when none; a pending error is returned (and cleared) first.
    pub fn recv_from(&mut self, h: SocketHandle, buf: &mut [u8]) -> Result<UdpRecv> {
        let r = self.peek_from(h, buf)?;
        self.socket_mut(h)?.rx.pop();
        self.update_readiness(h);
        Ok(r)
    }

    /// recvfrom(2) with MSG_PEEK: like `recv_from` but leaves the datagram queued.
    pub fn peek_from(&mut self, h: SocketHandle, buf: &mut [u8]) -> Result<UdpRecv> {
        let s = self.socket_mut(h)?;
        if let Some(e) = s.error.take() {
            self.update_readiness(h);
            return Err(e);
        }
        let (meta, data) = s.rx.front().ok_or(Error::WouldBlock)?;
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        Ok(UdpRecv {
            len,
            datagram_len: data.len(),
            from: meta.from,
            info: meta.info,
        })
    }

    /// Length of the next datagram (FIONREAD on a UDP socket), 0 if none.
    pub fn next_datagram_len(&self, h: SocketHandle) -> Result<usize> {
        Ok(self.socket(h)?.rx.front().map_or(0, |(_, d)| d.len()))
    }

    /// Payload bytes queued to send and not yet handed to the device (SIOCOUTQ).
    pub fn send_queued(&self, h: SocketHandle) -> Result<usize> {
        Ok(self.socket(h)?.tx.queued_bytes())
    }

    pub fn local_addr(&self, h: SocketHandle) -> Result<Option<SocketAddr>> {
        Ok(self.socket(h)?.local)
    }

    /// getpeername(2): ENOTCONN when not connected.
    pub fn peer_addr(&self, h: SocketHandle) -> Result<SocketAddr> {
        self.socket(h)?.remote.ok_or(Error::NotConnected)
    }

    /// SO_ERROR: takes the pending error.
    pub fn take_error(&mut self, h: SocketHandle) -> Result<Option<Error>> {
        let e = self.socket_mut(h)?.error.take();
        self.update_readiness(h);
        Ok(e)
    }

    /// SO_BROADCAST.
    pub fn set_broadcast(&mut self, h: SocketHandle, on: bool) -> Result<()> {
        self.socket_mut(h)?.broadcast = on;
        Ok(())
    }

    /// SO_REUSEADDR / SO_REUSEPORT (either lets two sockets that both set it share a
    /// port; the first bound receives unicast).
    pub fn set_reuse_addr(&mut self, h: SocketHandle, on: bool) -> Result<()> {
        self.socket_mut(h)?.reuse_addr = on;
        Ok(())
    }

    /// IP_TOS / IPV6_TCLASS: the TOS byte (IPv4) or traffic class (IPv6) of the
    /// datagrams it sends from now on.
    pub fn set_tos(&mut self, h: SocketHandle, tos: u8) -> Result<()> {
        self.socket_mut(h)?.tos = tos;
        Ok(())
    }

    /// An IPv6 socket without IPV6_V6ONLY: bound to `::`, it takes IPv4 datagrams to
    /// its port too and may send to IPv4 peers (the addresses stay IPv4 here; the
    /// socket layer shows them v4-mapped).
    pub fn set_dual_stack(&mut self, h: SocketHandle, on: bool) -> Result<()> {
        self.socket_mut(h)?.dual_stack = on;
        Ok(())
    }

    /// SO_RCVBUF: resizes the receive buffer; queued datagrams that fit are kept.
    pub fn set_recv_buffer_size(&mut self, h: SocketHandle, bytes: usize) -> Result<()> {
        let max = self.cfg.max_datagrams;
        let s = self.socket_mut(h)?;
        let mut ring = PacketRing::new(bytes.max(256), max);
        while let Some((m, d)) = s.rx.front() {
            if let Some(b) = ring.push(m, d.len()) {
                b.copy_from_slice(d);
            }
            s.rx.pop();
        }
        s.rx = ring;
        self.update_readiness(h);
        Ok(())
    }

    /// SO_SNDBUF: resizes the send buffer; queued datagrams that fit are kept.
    pub fn set_send_buffer_size(&mut self, h: SocketHandle, bytes: usize) -> Result<()> {
        let max = self.cfg.max_datagrams;
        let s = self.socket_mut(h)?;
        let mut ring = PacketRing::new(bytes.max(256), max);
        while let Some((m, d)) = s.tx.front() {
            if let Some(b) = ring.push(m, d.len()) {
                b.copy_from_slice(d);
            }
            s.tx.pop();
        }
        s.tx = ring;
        self.update_readiness(h);
        Ok(())
    }

    pub fn recv_buffer_size(&self, h: SocketHandle) -> Result<usize> {
        Ok(self.socket(h)?.rx.capacity())
    }
    pub fn send_buffer_size(&self, h: SocketHandle) -> Result<usize> {
        Ok(self.socket(h)?.tx.capacity())
    }

    /// The socket's readiness now.
    pub fn readiness(&self, h: SocketHandle) -> Result<Readiness> {
        Ok(self.compute_readiness(self.socket(h)?))
    }

    fn compute_readiness(&self, s: &UdpSocket) -> Readiness {
        let mut r = Readiness::empty();
        if !s.rx.is_empty() || s.error.is_some() {
            r |= Readiness::READABLE;
        }
        // Writable while a full-MTU datagram still fits, as Linux's sock_writeable
        // wants half the send buffer free.
        let probe = self
            .mtu
            .saturating_sub(ipv4::HEADER_LEN + udp::HEADER_LEN)
            .min(s.tx.capacity());
        if s.tx.can_push(probe) {
            r |= Readiness::WRITABLE;
        }
        if s.error.is_some() {
            r |= Readiness::ERROR;
        }
        r
    }

    fn update_readiness(&mut self, h: SocketHandle) {
        let Some(Some(s)) = self.sockets.get(h.index as usize) else {
            return;
        };
        let r = self.compute_readiness(s);
        let s = self.sockets[h.index as usize].as_mut().expect("checked");
        s.tracker.update(h, r, &mut self.readiness);
    }

    /// The oldest readiness change not yet taken.
    pub fn pop_readiness_change(&mut self) -> Option<ReadinessChange> {
        self.readiness.pop()
    }

    /// Whether any socket has datagrams waiting to leave.
    pub fn has_pending_tx(&self) -> bool {
        !self.tx_pending.is_empty()
    }

    /// Finds the socket that takes a datagram: a connected socket matching the source
    /// beats one bound to the exact address, which beats a wildcard bind.
    /// Whether a datagram to `dst` would find a socket here (from any source).
    pub fn has_receiver(&self, dst: impl Into<SocketAddr>) -> bool {
        let dst = dst.into();
        self.ports.get(&dst.port()).is_some_and(|v| {
            v.iter().any(|&i| {
                self.sockets[i as usize].as_ref().is_some_and(|s| {
                    s.local
                        .is_some_and(|l| takes_address(l.ip(), dst.ip(), s.dual_stack))
                })
            })
        })
    }

    fn demux(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let v = self.ports.get(&dst.port())?;
        let mut best: Option<(u8, u32)> = None;
        for &i in v {
            let Some(s) = self.sockets[i as usize].as_ref() else {
                continue;
            };
            let Some(local) = s.local else { continue };
            if !takes_address(local.ip(), dst.ip(), s.dual_stack) {
                continue;
            }
            let mut score = 0u8;
            if !local.ip().is_unspecified() {
                score += 1;
            }
            if let Some(remote) = s.remote {
                if remote != src {
                    continue;
                }
                score += 2;
            }
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Delivers a received datagram. Returns false when no socket is bound to it.
    /// A full receive buffer drops the datagram (counted) but still returns true.
    /// A broadcast goes, as on Linux, to every socket bound to the port on the wildcard
    /// (or that broadcast) address whose peer, if connected, is the sender.
    pub(crate) fn deliver(
        &mut self,
        src: SocketAddr,
        info: RxInfo,
        payload: &[u8],
        broadcast: bool,
    ) -> bool {
        let dst = info.to;
        let meta = RxMeta { from: src, info };
        if !broadcast {
            let Some(i) = self.demux(src, dst) else {
                return false;
            };
            self.push_rx(i, meta, payload);
            return true;
        }
        let n = self.ports.get(&dst.port()).map_or(0, |v| v.len());
        let mut any = false;
        for k in 0..n {
            let i = self.ports[&dst.port()][k];
            let Some(s) = self.sockets[i as usize].as_ref() else {
                continue;
            };
            let Some(local) = s.local else { continue };
            let addr_ok = takes_address(local.ip(), dst.ip(), s.dual_stack);
            if addr_ok && s.remote.is_none_or(|r| r == src) {
                self.push_rx(i, meta, payload);
                any = true;
            }
        }
        any
    }

    fn push_rx(&mut self, i: u32, meta: RxMeta, payload: &[u8]) {
        let s = self.sockets[i as usize]
            .as_mut()
            .expect("indexed sockets exist");
        match s.rx.push(meta, payload.len()) {
            Some(b) => {
                b.copy_from_slice(payload);
                self.update_readiness(SocketHandle::udp(i));
            }
            None => self.rx_buffer_full += 1,
        }
    }

    /// An ICMP destination unreachable quoted a datagram we sent from `local` to
    /// `remote`: a socket connected to `remote` gets `error` (ECONNREFUSED for a port
    /// unreachable, else EHOSTUNREACH), as Linux reports it only on connected sockets.
    pub(crate) fn icmp_unreachable(&mut self, local: SocketAddr, remote: SocketAddr, error: Error) {
        let Some(i) = self.demux(remote, local) else {
            return;
        };
        let s = self.sockets[i as usize]
            .as_mut()
            .expect("indexed sockets exist");
        if s.remote != Some(remote) {
            return;
        }
        s.error = Some(error);
        self.update_readiness(SocketHandle::udp(i));
    }

    /// The next datagram to send: (socket index, metadata, payload).
    pub(crate) fn peek_tx(&self) -> Option<(u32, TxMeta, &[u8])> {
        let &i = self.tx_pending.front()?;
        let s = self.sockets[i as usize].as_ref()?;
        let (m, d) = s.tx.front()?;
        Some((i, m, d))
    }

    /// The datagram `peek_tx` returned left (or was dropped): pop it.
    pub(crate) fn pop_tx(&mut self, i: u32) {
        if let Some(s) = self.sockets[i as usize].as_mut() {
            s.tx.pop();
            if s.tx.is_empty() {
                s.in_tx_pending = false;
                if self.tx_pending.front() == Some(&i) {
                    self.tx_pending.pop_front();
                } else {
                    self.tx_pending.retain(|&x| x != i);
                }
            }
            self.update_readiness(SocketHandle::udp(i));
        } else {
            self.tx_pending.retain(|&x| x != i);
        }
    }

    /// The socket at the head of the send list cannot send now (next hop unresolved):
    /// move it to the back so others can go.
    pub(crate) fn defer_tx(&mut self, i: u32) {
        if self.tx_pending.front() == Some(&i) {
            self.tx_pending.pop_front();
            self.tx_pending.push_back(i);
        }
    }

    pub(crate) fn tx_pending_count(&self) -> usize {
        self.tx_pending.len()
    }
}

/// Whether a socket bound to `local` takes a datagram to `dst`: the same address, or
/// the wildcard of `dst`'s family, or `::` of a dual-stack socket.
fn takes_address(local: IpAddr, dst: IpAddr, dual_stack: bool) -> bool {
    local == dst
        || (local.is_unspecified()
            && (local.is_ipv4() == dst.is_ipv4() || dual_stack && local.is_ipv6()))
}

/// The unspecified address of `ip`'s family.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn is_v4_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if a.is_broadcast())
}

fn is_v4_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.to_ipv4_mapped().is_some())
}

/// Source address toward IPv6 `dst` among `addrs`: the one whose prefix holds it;
/// for a link-local `dst`, a link-local one; else, with a gateway, the first that is
/// not link-local. None without a route or an address.
pub(crate) fn ipv6_source(
    addrs: &[Ipv6Cidr],
    gateway: Option<Ipv6Addr>,
    dst: Ipv6Addr,
) -> Option<Ipv6Addr> {
    use crate::wire::ipv6::is_link_local;
    if let Some(c) = addrs.iter().find(|c| c.contains(dst)) {
        return Some(c.addr);
    }
    let link_local = is_link_local(dst);
    if !link_local && gateway.is_none() {
        return None;
    }
    addrs
        .iter()
        .find(|c| is_link_local(c.addr) == link_local)
        .map(|c| c.addr)
}
