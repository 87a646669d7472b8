//! Input: a segment's connection found by its 4-tuple (the last one found first), or
//! its listener, or a RST for a closed port; TIME-WAIT assassination by a new SYN;
//! segments handed to the connection and what follows (accept queue, deferred accept).

use core::hash::{BuildHasherDefault, Hasher};
use core::net::{IpAddr, SocketAddr};

use crate::time::Instant;
use crate::wire::tcp::{TcpPacket, TcpRepr};

use super::conn::Verdict;
use super::{Control, State, TcpLayer};

/// FxHash: the connection table's keys are not attacker-chosen in a way that matters
/// more than speed here (a SYN flood is bounded by the pool, not by hashing).
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(n as u64)
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64)
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64)
    }
}

pub(super) type FxBuild = BuildHasherDefault<FxHasher>;
/// A connection's 4-tuple as the tables key it: addresses as 128-bit numbers, IPv4
/// ones in their v4-mapped form (`::ffff:a.b.c.d`), which no IPv6 packet carries (the
/// IPv6 receive path drops them), so the two families never collide.
pub(super) type ConnKey = (u128, u16, u128, u16);

/// An address as the tables key it (see [`ConnKey`]).
#[inline]
pub(super) fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

/// The key of a listener on the wildcard address of `ip`'s family (0.0.0.0 or ::).
#[inline]
pub(super) fn wildcard_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(_) => ip_key(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => 0,
    }
}

/// A listener's key: its address and port.
#[inline]
pub(super) fn listen_key(local: SocketAddr) -> (u128, u16) {
    (ip_key(local.ip()), local.port())
}

/// `a` without what the tables do not compare (an IPv6 flow label and scope id), so
/// an address from the app equals the one built from a packet.
#[inline]
pub(crate) fn endpoint(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) if v6.flowinfo() != 0 || v6.scope_id() != 0 => {
            SocketAddr::new(IpAddr::V6(*v6.ip()), v6.port())
        }
        _ => a,
    }
}

/// Whether `ip` may be a TCP peer's or our own address in a segment: not multicast,
/// broadcast or unspecified (and no v4-mapped IPv6 address, RFC 4291 §2.5.5.2).
fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_broadcast() || a.is_multicast() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.to_ipv4_mapped().is_some()),
    }
}

#[inline]
pub(super) fn conn_key(local: SocketAddr, remote: SocketAddr) -> ConnKey {
    (
        ip_key(local.ip()),
        local.port(),
        ip_key(remote.ip()),
        remote.port(),
    )
}

impl TcpLayer {
    // ----- input -----

    /// Takes one TCP segment (header + payload) whose checksum the IP layer verified.
    /// `src` and `dst` are of one family (IPv4 or IPv6).
    #[inline]
    pub fn receive(
        &mut self,
        now: Instant,
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        segment: &[u8],
    ) {
        self.receive_segment(now, src.into(), dst.into(), segment)
    }

    fn receive_segment(&mut self, now: Instant, src: IpAddr, dst: IpAddr, segment: &[u8]) {
        self.now = now;
        self.stats.segments_in += 1;
        let packet = match TcpPacket::new_checked(segment) {
            Ok(p) => p,
            Err(_) => {
                self.stats.drops_malformed += 1;
                return;
            }
        };
        let mut seg = TcpRepr::default();
        if seg.parse_from(&packet).is_err() {
            self.stats.drops_malformed += 1;
            return;
        }
        let payload = packet.payload();
        // A connection's addresses are unicast and of one family (connect and the
        // listeners check), so a segment that finds one needs no address checks.
        if let Some(idx) = self.lookup_conn(src, seg.src_port, dst, seg.dst_port) {
            // Only a SYN may reuse a TIME-WAIT: the common case decides without a call.
            if !seg.syn() || !self.time_wait_reusable(idx, &seg) {
                self.conn_input(idx, &seg, payload);
                return;
            }
            self.stats.time_wait_reused += 1;
            let s = &mut self.slots[idx as usize];
            s.tcb.state = State::Closed;
            self.on_conn_closed(idx);
        } else if !is_unicast(src) || !is_unicast(dst) || src.is_ipv4() != dst.is_ipv4() {
            self.stats.drops_malformed += 1;
            return;
        }
        let local = SocketAddr::new(dst, seg.dst_port);
        let remote = SocketAddr::new(src, seg.src_port);
        let lidx = self.listener_at(local);
        match lidx {
            Some(l) => self.listen_input(l, local, remote, &seg, payload),
            None => {
                self.stats.drops_no_socket += 1;
                self.reset_for(local, remote, &seg);
            }
        }
    }

    /// The listener a segment to `local` goes to: the one on its address, else the one
    /// on its family's wildcard address.
    #[inline]
    pub(super) fn listener_at(&self, local: SocketAddr) -> Option<u32> {
        let port = local.port();
        self.listeners
            .get(&(ip_key(local.ip()), port))
            .or_else(|| self.listeners.get(&(wildcard_key(local.ip()), port)))
            .copied()
    }

    /// The connection slot for a 4-tuple. The last one found is tried first (most
    /// segments belong to the connection the previous one did), checked against the
    /// slot itself, so a connection that left the table is never returned.
    #[inline]
    fn lookup_conn(
        &mut self,
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
    ) -> Option<u32> {
        // Ports first, then addresses, against the slot's own: no key computed and no
        // socket address built on this path (building and copying `SocketAddr`s here
        // was its hottest spot in the IPv4 benchmark: store-forwarding stalls).
        let last = self.last_conn;
        if let Some(s) = self.slots.get(last as usize) {
            let t = &s.tcb;
            if s.in_table
                && t.local.port() == dst_port
                && t.remote.port() == src_port
                && t.local.ip() == dst
                && t.remote.ip() == src
            {
                return Some(last);
            }
        }
        let key = (ip_key(dst), dst_port, ip_key(src), src_port);
        let idx = *self.conns.get(&key)?;
        self.last_conn = idx;
        Some(idx)
    }

    /// RFC 6191-style TIME-WAIT assassination by a new SYN: allowed when a listener
    /// exists and the SYN's sequence number or timestamp is above the old connection's,
    /// and its timestamp is not older (PAWS), as in Linux's tcp_timewait_state_process.
    /// An equal timestamp is common: a client that reuses the port within the
    /// millisecond of its last segment.
    fn time_wait_reusable(&self, idx: u32, seg: &TcpRepr) -> bool {
        let t = &self.slots[idx as usize].tcb;
        if t.state != State::TimeWait || !seg.syn() || seg.has_ack() || seg.rst() {
            return false;
        }
        if self.listener_at(t.local).is_none() {
            return false;
        }
        match (t.ts_ok, seg.timestamps) {
            (true, Some((val, _))) => match (val.wrapping_sub(t.ts_recent) as i32).cmp(&0) {
                core::cmp::Ordering::Greater => true,
                core::cmp::Ordering::Equal => seg.seq > t.rcv_nxt,
                core::cmp::Ordering::Less => false,
            },
            _ => seg.seq > t.rcv_nxt,
        }
    }

    pub(super) fn conn_input(&mut self, idx: u32, seg: &TcpRepr, payload: &[u8]) {
        let now = self.now;
        let s = &mut self.slots[idx as usize];
        // A completing handshake waits while the listener's accept queue is full.
        if s.tcb.state == State::SynReceived && seg.has_ack() && !seg.rst() && !seg.syn() {
            if let Some(p) = s.tcb.parent {
                let l = self.slots[p as usize]
                    .listener
                    .as_ref()
                    .expect("parent listener");
                if l.accept_queue.len() >= l.backlog {
                    self.stats.drops_listen_overflow += 1;
                    return;
                }
            }
        }
        let s = &mut self.slots[idx as usize];
        let verdict = s
            .tcb
            .on_segment(now, seg, payload, &self.cfg, &mut self.stats);
        match verdict {
            Verdict::Ok => {}
            Verdict::Reset(seq, ack) => {
                let (local, remote) = (s.tcb.local, s.tcb.remote);
                let closed = s.tcb.state == State::Closed;
                self.queue_control(Control::Rst {
                    local,
                    remote,
                    seq,
                    ack,
                });
                if closed {
                    self.on_conn_closed(idx);
                    return;
                }
            }
            Verdict::Established => {
                if let Some(p) = s.tcb.parent {
                    if s.tcb.fin_queued {
                        s.tcb.state = State::FinWait1;
                    }
                    let no_data = s.tcb.recv_buf.is_empty() && !s.tcb.readable_without_data();
                    let l = self.slots[p as usize]
                        .listener
                        .as_mut()
                        .expect("parent listener");
                    l.syn_pending = l.syn_pending.saturating_sub(1);
                    match l.opts.defer_accept {
                        Some(d) if no_data => {
                            let t = &mut self.slots[idx as usize].tcb;
                            t.defer_until = Some(now + d);
                            t.defer_pending = true;
                        }
                        _ => self.enqueue_accept(idx),
                    }
                }
            }
            Verdict::Closed => {
                self.on_conn_closed(idx);
                return;
            }
        }
        self.release_deferred(idx);
        self.mark_tx(idx);
        self.update_readiness(idx);
        self.after_time_wait_change(idx);
    }

    /// Puts a passively opened connection in its listener's accept queue.
    pub(super) fn enqueue_accept(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        let Some(p) = s.tcb.parent else { return };
        s.in_accept_queue = true;
        let l = self.slots[p as usize]
            .listener
            .as_mut()
            .expect("parent listener");
        l.accept_queue.push_back(idx);
        self.update_readiness(p);
    }

    /// TCP_DEFER_ACCEPT: a deferred connection goes to `accept` once data or a FIN
    /// arrived, or its deferral ran out (the timer cleared `defer_until`).
    pub(super) fn release_deferred(&mut self, idx: u32) {
        let t = &mut self.slots[idx as usize].tcb;
        if !t.defer_pending || t.parent.is_none() {
            return;
        }
        let expired = t.defer_until.is_none();
        if expired || !t.recv_buf.is_empty() || t.readable_without_data() {
            t.defer_until = None;
            t.defer_pending = false;
            self.enqueue_accept(idx);
        }
    }
}
