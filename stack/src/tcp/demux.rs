//! Input: a segment's connection found by its 4-tuple (the last one found first), or
//! its listener, or a RST for a closed port; TIME-WAIT assassination by a new SYN;
//! segments handed to the connection and what follows (accept queue, deferred accept).

use core::hash::{BuildHasherDefault, Hasher};
use core::net::{Ipv4Addr, SocketAddrV4};

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
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64)
    }
}

pub(super) type FxBuild = BuildHasherDefault<FxHasher>;
pub(super) type ConnKey = (u32, u16, u32, u16);

pub(super) fn conn_key(local: SocketAddrV4, remote: SocketAddrV4) -> ConnKey {
    (
        u32::from(*local.ip()),
        local.port(),
        u32::from(*remote.ip()),
        remote.port(),
    )
}

impl TcpLayer {
    // ----- input -----

    /// Takes one TCP segment (header + payload) whose checksum the IP layer verified.
    pub fn receive(&mut self, now: Instant, src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) {
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
        if src.is_broadcast()
            || src.is_multicast()
            || src.is_unspecified()
            || dst.is_broadcast()
            || dst.is_multicast()
        {
            self.stats.drops_malformed += 1;
            return;
        }
        let payload = packet.payload();
        let local = SocketAddrV4::new(dst, seg.dst_port);
        let remote = SocketAddrV4::new(src, seg.src_port);
        if let Some(idx) = self.lookup_conn(local, remote) {
            if !self.time_wait_reusable(idx, &seg) {
                self.conn_input(idx, &seg, payload);
                return;
            }
            self.stats.time_wait_reused += 1;
            let s = &mut self.slots[idx as usize];
            s.tcb.state = State::Closed;
            self.on_conn_closed(idx);
        }
        let lidx = self
            .listeners
            .get(&(u32::from(dst), seg.dst_port))
            .or_else(|| self.listeners.get(&(0, seg.dst_port)))
            .copied();
        match lidx {
            Some(l) => self.listen_input(l, local, remote, &seg, payload),
            None => {
                self.stats.drops_no_socket += 1;
                self.reset_for(local, remote, &seg);
            }
        }
    }

    /// The connection slot for a 4-tuple. The last one found is tried first (most
    /// segments belong to the connection the previous one did), checked against the
    /// slot itself, so a connection that left the table is never returned.
    #[inline]
    fn lookup_conn(&mut self, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u32> {
        let key = conn_key(local, remote);
        let (last_key, last) = self.last_conn;
        if last_key == key {
            if let Some(s) = self.slots.get(last as usize) {
                if s.in_table && s.tcb.local == local && s.tcb.remote == remote {
                    return Some(last);
                }
            }
        }
        let idx = *self.conns.get(&key)?;
        self.last_conn = (key, idx);
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
        let has_listener = self
            .listeners
            .contains_key(&(u32::from(*t.local.ip()), t.local.port()))
            || self.listeners.contains_key(&(0, t.local.port()));
        if !has_listener {
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
