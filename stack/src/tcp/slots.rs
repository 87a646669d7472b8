//! The socket pool: slots taken and freed, their buffer storage reused, TIME-WAITs
//! recycled when the pool is full, handles checked, connections queued to transmit.

use crate::error::{Error, Result};
use crate::socket::{Readiness, SocketHandle, SocketKind};

use super::ring::Ring;
use super::{conn_key, Slot, SlotKind, SocketOptions, State, Tcb, TcpConfig, TcpLayer};

impl TcpLayer {
    /// A free slot can be had without ending a TIME-WAIT: one was freed, or the pool
    /// has not made all of its `max_sockets` yet.
    pub(super) fn has_free_slot(&self) -> bool {
        !self.free.is_empty() || self.slots.len() < self.cfg.max_sockets
    }

    pub(super) fn alloc_slot(&mut self, kind: SlotKind, opts: SocketOptions) -> Option<u32> {
        if self.free.is_empty() {
            if self.slots.len() < self.cfg.max_sockets {
                self.free.push(self.slots.len() as u32);
                let slot = self.fresh_slot();
                self.slots.push(slot);
            } else {
                self.recycle_time_wait();
            }
        }
        let idx = self.free.pop()?;
        let pos = self.active.len();
        self.active.push(idx);
        self.deadlines.push(u64::MAX);
        if kind == SlotKind::Conn {
            let cfg = self.conn_cfg(opts);
            let send = self.take_ring(opts.sndbuf);
            let recv = self.take_ring(opts.rcvbuf);
            let t = &mut self.slots[idx as usize].tcb;
            t.reset(&cfg);
            t.send_buf = send;
            t.recv_buf = recv;
            t.take_options(&opts);
        }
        let s = &mut self.slots[idx as usize];
        s.kind = kind;
        s.opts = opts;
        s.user_open = false;
        s.in_accept_queue = false;
        s.in_table = false;
        s.active_pos = pos;
        s.last_ready = Readiness::EMPTY;
        s.tw_recyclable = false;
        Some(idx)
    }

    /// An empty ring of `capacity` bytes: from the spare storage when one of that size
    /// is among the last few returned, else the last one resized (so the storage never
    /// exceeds two rings per slot), else a new one.
    fn take_ring(&mut self, capacity: usize) -> Ring {
        let n = self.spare_rings.len();
        let near = self.spare_rings[n.saturating_sub(8)..]
            .iter()
            .rposition(|r| r.capacity() == capacity);
        match near {
            Some(k) => self.spare_rings.swap_remove(n.saturating_sub(8) + k),
            None => match self.spare_rings.pop() {
                Some(mut r) => {
                    r.resize(capacity);
                    r
                }
                None => Ring::new(capacity),
            },
        }
    }

    /// Gives a connection's buffer storage back to the spare pool.
    fn release_rings(&mut self, idx: u32) {
        let t = &mut self.slots[idx as usize].tcb;
        for r in [&mut t.send_buf, &mut t.recv_buf] {
            if r.capacity() > 0 {
                let mut r = core::mem::take(r);
                r.clear();
                self.spare_rings.push(r);
            }
        }
    }

    /// After the layer touched a connection that may be in TIME-WAIT: its buffers go back
    /// to the pool once nothing is left to read, and it becomes recyclable once nobody
    /// refers to it.
    #[inline]
    pub(super) fn after_time_wait_change(&mut self, idx: u32) {
        if self.slots[idx as usize].tcb.state == State::TimeWait {
            self.in_time_wait(idx);
        }
    }

    #[cold]
    fn in_time_wait(&mut self, idx: u32) {
        if self.slots[idx as usize].tcb.buffers_releasable() {
            self.release_rings(idx);
        }
        let s = &mut self.slots[idx as usize];
        if !s.tw_recyclable && !s.user_open && !s.in_accept_queue {
            s.tw_recyclable = true;
            self.tw_recyclable += 1;
        }
    }

    /// The pool is full: end one TIME-WAIT nobody refers to (as Linux does past
    /// `tcp_max_tw_buckets`), the first found from a cursor that moves on each time, so
    /// successive calls cost about one slot each when TIME-WAITs fill the pool. A server
    /// that closes first at a high rate (nginx with `Connection: close`) would otherwise
    /// fill the pool with TIME-WAITs and answer new SYNs with cookies or not at all.
    /// Returns whether a slot was freed.
    pub(super) fn recycle_time_wait(&mut self) -> bool {
        if self.tw_recyclable == 0 {
            return false;
        }
        let n = self.slots.len();
        let mut i = self.tw_cursor.min(n - 1);
        for _ in 0..n {
            if self.slots[i].tw_recyclable {
                self.tw_cursor = if i + 1 == n { 0 } else { i + 1 };
                self.stats.time_wait_recycled += 1;
                self.slots[i].tcb.set_closed_quietly();
                self.on_conn_closed(i as u32);
                return true;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        debug_assert!(false, "tw_recyclable count without a recyclable slot");
        false
    }

    /// A slot never used: no buffers (a connection takes them in `alloc_slot`).
    fn fresh_slot(&self) -> Slot {
        let empty = TcpConfig {
            rcvbuf: 0,
            sndbuf: 0,
            ..self.cfg.clone()
        };
        Slot {
            kind: SlotKind::Free,
            tcb: Tcb::new(&empty),
            listener: None,
            opts: self.cfg.default_options(),
            user_open: false,
            in_accept_queue: false,
            in_table: false,
            in_tx_queue: false,
            active_pos: 0,
            last_ready: Readiness::EMPTY,
            tw_recyclable: false,
        }
    }

    pub(super) fn free_slot(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if s.kind == SlotKind::Free {
            return;
        }
        if s.in_table {
            let key = conn_key(s.tcb.local, s.tcb.remote);
            self.conns.remove(&key);
            s.in_table = false;
        }
        if s.tw_recyclable {
            s.tw_recyclable = false;
            self.tw_recyclable -= 1;
        }
        s.kind = SlotKind::Free;
        s.listener = None;
        s.user_open = false;
        s.in_accept_queue = false;
        s.tcb.state = State::Closed;
        self.release_rings(idx);
        let s = &mut self.slots[idx as usize];
        let pos = s.active_pos;
        self.active.swap_remove(pos);
        self.deadlines.swap_remove(pos);
        if let Some(&moved) = self.active.get(pos) {
            self.slots[moved as usize].active_pos = pos;
        }
        self.free.push(idx);
        self.readiness.forget(SocketHandle::tcp(idx));
    }

    pub(super) fn handle(idx: u32) -> SocketHandle {
        SocketHandle::tcp(idx)
    }

    pub(super) fn slot_of(&self, h: SocketHandle) -> Result<u32> {
        if h.kind != SocketKind::Tcp {
            return Err(Error::BadHandle);
        }
        match self.slots.get(h.index as usize) {
            Some(s) if s.kind != SlotKind::Free && s.user_open => Ok(h.index),
            _ => Err(Error::BadHandle),
        }
    }

    pub(super) fn conn_slot(&self, h: SocketHandle) -> Result<u32> {
        let i = self.slot_of(h)?;
        if self.slots[i as usize].kind != SlotKind::Conn {
            return Err(Error::NotConnected);
        }
        Ok(i)
    }

    pub(super) fn mark_tx(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if !s.in_tx_queue {
            s.in_tx_queue = true;
            self.tx_queue.push(idx);
        }
    }

    /// A connection moved to CLOSED: leave the table; free the slot if nobody holds it.
    pub(super) fn on_conn_closed(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if s.tw_recyclable {
            s.tw_recyclable = false;
            self.tw_recyclable -= 1;
        }
        if s.in_table {
            self.conns.remove(&conn_key(s.tcb.local, s.tcb.remote));
            s.in_table = false;
        }
        if let Some(p) = s.tcb.parent.take() {
            // A deferred connection (TCP_DEFER_ACCEPT) left the SYN count already.
            if !s.in_accept_queue && !s.tcb.defer_pending {
                if let Some(l) = self.slots[p as usize].listener.as_mut() {
                    l.syn_pending = l.syn_pending.saturating_sub(1);
                }
            } else {
                s.tcb.parent = Some(p);
            }
        }
        let s = &self.slots[idx as usize];
        if !s.user_open && !s.in_accept_queue {
            self.free_slot(idx);
        } else {
            self.update_readiness(idx);
        }
    }
}

#[cfg(test)]
mod time_wait_tests {
    use super::*;
    use crate::sim::{LinkConfig, TcpPair};
    use crate::tcp::TcpConfig;
    use crate::time::Duration;

    /// Ring storages the layer holds: installed in slots, and spare.
    fn rings(t: &TcpLayer) -> (usize, usize) {
        let live = t
            .slots
            .iter()
            .map(|s| {
                (s.tcb.send_buf.capacity() > 0) as usize + (s.tcb.recv_buf.capacity() > 0) as usize
            })
            .sum();
        (live, t.spare_rings.len())
    }

    #[test]
    fn time_wait_gives_its_buffers_back() {
        let cfg = TcpConfig {
            max_sockets: 64,
            rcvbuf: 64 * 1024,
            sndbuf: 64 * 1024,
            ..TcpConfig::default()
        };
        let mut p = TcpPair::with_configs(
            cfg.clone(),
            cfg,
            LinkConfig::default(),
            LinkConfig::default(),
            3,
        );
        let l = p.b.listen(TcpPair::addr_b(80), 8).unwrap();
        // One connection at a time, the server closing first: 40 TIME-WAITs on b.
        for i in 0..40u8 {
            let c =
                p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(80))
                    .unwrap();
            let mut s = None;
            let limit = p.now + Duration::from_secs(1);
            assert!(p.run_until(limit, |p| {
                s = s.or_else(|| p.b.accept(l).ok());
                s.is_some()
            }));
            let s = s.unwrap();
            p.b.send(s, &[i]).unwrap();
            p.b.close(s).unwrap();
            p.run_for(Duration::from_millis(20));
            let mut one = [0u8; 1];
            assert_eq!(p.a.recv(c, &mut one), Ok(1));
            p.a.close(c).unwrap();
            p.run_for(Duration::from_millis(20));
        }
        assert_eq!(p.b.connections_by_state()[State::TimeWait.index()], 40);
        assert_eq!(p.b.tw_recyclable, 40);
        // The TIME-WAITs hold no storage; one connection's pair serves them all.
        let (live, spare) = rings(&p.b);
        assert_eq!((live, spare), (0, 2));
        // A retransmitted FIN in TIME-WAIT is still acknowledged with a window.
        let idx =
            p.b.active
                .iter()
                .copied()
                .find(|&i| p.b.slots[i as usize].kind == SlotKind::Conn)
                .unwrap();
        let t = &p.b.slots[idx as usize].tcb;
        assert!(t.rcv_adv > t.rcv_nxt, "{}", t.summary());
    }
}
