//! Listeners: the SYN queue and accept queue, SYN-RECEIVED connections, stateless
//! answers (SYN cookies) when the queue or the pool is full, and the calls that
//! create, accept from and close a listener.

use core::net::SocketAddr;
use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::socket::SocketHandle;
use crate::wire::tcp::TcpRepr;

use super::conn::{default_mss, window_shift_for};
use super::demux::{endpoint, listen_key};
use super::{conn_key, Control, Listener, SlotKind, SocketOptions, State, TcpConfig, TcpLayer};

/// Handshakes `take_handshakes` keeps between two calls at most.
const HANDSHAKE_LOG: usize = 4096;
/// SYNs of a full pool kept for the host at most (`take_overflow`).
const OVERFLOW_LOG: usize = 4096;

impl TcpLayer {
    pub(super) fn listen_input(
        &mut self,
        lidx: u32,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr,
        payload: &[u8],
    ) {
        if seg.rst() {
            return;
        }
        let (backlog, queued, pending, opts) = {
            let l = self.slots[lidx as usize]
                .listener
                .as_ref()
                .expect("listener");
            (l.backlog, l.accept_queue.len(), l.syn_pending, l.opts)
        };
        if seg.has_ack() {
            if !seg.syn() && self.cfg.syn_cookies {
                if let Some(mss) = self.check_cookie(local, remote, seg) {
                    // Not dropped when the accept queue is full (the SYN was checked
                    // against it): the client's next segments, past the ISN the cookie
                    // was made with, could not be checked any more and would draw a
                    // RST. A completed handshake joins the queue, as SYN-RECEIVED
                    // ones do.
                    self.stats.syn_cookies_accepted += 1;
                    self.cookie_connection(lidx, local, remote, seg, payload, mss, opts);
                    return;
                }
                self.stats.syn_cookies_rejected += 1;
            }
            self.reset_for(local, remote, seg);
            return;
        }
        if !seg.syn() {
            return;
        }
        if queued >= backlog {
            self.stats.drops_listen_overflow += 1;
            return;
        }
        // A full pool first gives up a TIME-WAIT nobody refers to: cookies (or a drop)
        // only when the pool is full of live connections.
        let pool_full = pending < backlog && !self.has_free_slot() && !self.recycle_time_wait();
        if pool_full && self.cfg.overflow_to_host {
            if self.overflow.len() < OVERFLOW_LOG && !self.overflow.contains(&(local, remote)) {
                self.overflow.push((local, remote));
            }
            self.stats.syn_overflow += 1;
            return;
        }
        if pending >= backlog || pool_full {
            if !self.cfg.syn_cookies {
                self.stats.drops_listen_overflow += 1;
                return;
            }
            // Stateless answer: everything we need later is in the cookie (and in the
            // low bits of our timestamp: peer window scale and SACK-permitted).
            let iss = self.make_cookie(
                local,
                remote,
                seg.seq,
                seg.mss.unwrap_or(default_mss(remote)),
            );
            let ws = seg.window_scale.filter(|_| self.cfg.window_scaling);
            let ts = seg
                .timestamps
                .filter(|_| self.cfg.timestamps)
                .map(|(val, _)| {
                    let bits = ws.map_or(0xf, |w| w as u32)
                        | ((seg.sack_permitted && self.cfg.sack) as u32) << 4;
                    let clock =
                        (self.now.millis() as u32).wrapping_add(self.ts_offset(local, remote));
                    // The low bits carry the options, so round down, never up: a
                    // timestamp ahead of the connection's clock would make the peer
                    // drop our next segments as old (PAWS) until the clock caught up.
                    let mut ours = (clock & !0x1f) | bits;
                    if (ours.wrapping_sub(clock) as i32) > 0 {
                        ours = ours.wrapping_sub(0x20);
                    }
                    (ours, val)
                });
            self.stats.syn_cookies_sent += 1;
            self.queue_control(Control::CookieSynAck {
                local,
                remote,
                iss,
                ack: seg.seq + 1u32,
                window_scale: ws.map(|_| window_shift_for(opts.rcvbuf)),
                sack: ts.is_some() && seg.sack_permitted && self.cfg.sack,
                timestamps: ts,
                rcvbuf: opts.rcvbuf,
            });
            return;
        }
        let Some(idx) = self.alloc_slot(SlotKind::Conn, opts) else {
            self.stats.drops_listen_overflow += 1;
            return;
        };
        let iss = self.isn(local, remote);
        let cfg = self.conn_cfg(opts);
        let ts_offset = self.ts_offset(local, remote);
        let t = &mut self.slots[idx as usize].tcb;
        t.ts_offset = ts_offset;
        t.local = local;
        t.remote = remote;
        t.iss = iss;
        t.snd_una = iss;
        t.snd_nxt = iss;
        t.snd_max = iss;
        t.irs = seg.seq;
        t.rcv_nxt = seg.seq + 1u32;
        t.take_syn_options(seg, &cfg);
        t.snd_wnd = seg.window as u32;
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = seg.seq;
        t.state = State::SynReceived;
        t.passive = true;
        t.parent = Some(lidx);
        t.counters.segs_in = 1; // the SYN (the listener took it), as Linux counts it
        t.last_rcv = self.now;
        self.stats.passive_opens += 1;
        self.slots[idx as usize].in_table = true;
        self.conns.insert(conn_key(local, remote), idx);
        if let Some(l) = self.slots[lidx as usize].listener.as_mut() {
            l.syn_pending += 1;
        }
        if let Some(log) = self.handshakes.as_mut().filter(|l| l.len() < HANDSHAKE_LOG) {
            log.push(Self::handle(idx));
        }
        self.mark_tx(idx);
    }

    /// The SYNs the full pool reported since the last call (see `overflow_to_host`).
    pub fn take_overflow(&mut self) -> Vec<(SocketAddr, SocketAddr)> {
        std::mem::take(&mut self.overflow)
    }

    pub(super) fn conn_cfg(&self, opts: SocketOptions) -> TcpConfig {
        TcpConfig {
            rcvbuf: opts.rcvbuf,
            sndbuf: opts.sndbuf,
            ..self.cfg.clone()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn cookie_connection(
        &mut self,
        lidx: u32,
        local: SocketAddr,
        remote: SocketAddr,
        seg: &TcpRepr,
        payload: &[u8],
        mss: u16,
        opts: SocketOptions,
    ) {
        let Some(idx) = self.alloc_slot(SlotKind::Conn, opts) else {
            self.stats.drops_listen_overflow += 1;
            return;
        };
        let cfg = self.conn_cfg(opts);
        let ts_offset = self.ts_offset(local, remote);
        let t = &mut self.slots[idx as usize].tcb;
        t.ts_offset = ts_offset;
        t.local = local;
        t.remote = remote;
        t.iss = seg.ack - 1u32;
        t.snd_una = seg.ack;
        t.snd_nxt = seg.ack;
        t.snd_max = seg.ack;
        t.irs = seg.seq - 1u32;
        t.rcv_nxt = seg.seq;
        t.peer_mss = mss;
        // Options come back in the echoed timestamp's low bits (if timestamps were on).
        match seg.timestamps.filter(|_| cfg.timestamps) {
            Some((val, ecr)) => {
                t.ts_ok = true;
                t.ts_recent = val;
                let ws = ecr & 0xf;
                if ws != 0xf && cfg.window_scaling {
                    t.ws_ok = true;
                    t.snd_wscale = ws as u8;
                    t.rcv_wscale = window_shift_for(opts.rcvbuf);
                }
                t.sack_ok = (ecr >> 4) & 1 == 1 && cfg.sack;
            }
            None => t.ts_ok = false,
        }
        t.our_mss = 0; // recomputed from the path at the next transmission
        t.smss = (mss as u32).max(64);
        t.cc.set_mss(t.payload_mss());
        t.our_mss = cfg.mss.min(mss.max(536));
        t.snd_wnd = (seg.window as u32) << t.snd_wscale;
        t.max_snd_wnd = t.snd_wnd;
        t.snd_wl1 = seg.seq;
        t.snd_wl2 = seg.ack;
        t.rcv_adv = t.rcv_nxt;
        t.state = State::Established;
        t.passive = true;
        t.parent = Some(lidx);
        t.last_rcv = self.now;
        self.stats.passive_opens += 1;
        let s = &mut self.slots[idx as usize];
        s.in_table = true;
        s.in_accept_queue = true;
        self.conns.insert(conn_key(local, remote), idx);
        let l = self.slots[lidx as usize]
            .listener
            .as_mut()
            .expect("listener");
        l.accept_queue.push_back(idx);
        self.update_readiness(lidx);
        // The ACK may already carry data (or a FIN).
        if !payload.is_empty() || seg.fin() {
            self.conn_input(idx, seg, payload);
        }
    }

    /// Whether a listener would take a SYN to `local` (bound to its address or to any).
    pub fn has_listener(&self, local: impl Into<SocketAddr>) -> bool {
        self.listener_at(local.into()).is_some()
    }

    /// Listens on `local` (0.0.0.0 = every IPv4 address, :: = every IPv6 one: the
    /// families are separate, as with IPV6_V6ONLY) with default options.
    pub fn listen(&mut self, local: impl Into<SocketAddr>, backlog: usize) -> Result<SocketHandle> {
        let opts = self.cfg.default_options();
        self.listen_with(local, backlog, opts)
    }

    /// Listens with options that accepted connections inherit.
    pub fn listen_with(
        &mut self,
        local: impl Into<SocketAddr>,
        backlog: usize,
        opts: SocketOptions,
    ) -> Result<SocketHandle> {
        let local = endpoint(local.into());
        if local.port() == 0 {
            return Err(Error::InvalidInput);
        }
        let key = listen_key(local);
        if self.listeners.contains_key(&key) {
            return Err(Error::AddrInUse);
        }
        let idx = self
            .alloc_slot(SlotKind::Listener, opts)
            .ok_or(Error::NoBufferSpace)?;
        let backlog = backlog.clamp(1, self.cfg.max_sockets);
        let s = &mut self.slots[idx as usize];
        s.user_open = true;
        s.tcb.local = local;
        s.listener = Some(Listener {
            addr: local,
            backlog,
            accept_queue: VecDeque::with_capacity(backlog),
            syn_pending: 0,
            opts,
        });
        self.listeners.insert(key, idx);
        Ok(Self::handle(idx))
    }

    /// Makes listener `h` take connections to `local` too (another address of its own
    /// or the other family's: a dual-stack `::` socket listens on IPv4 and IPv6 with one
    /// accept queue, as Linux's does). The port must be the listener's; EADDRINUSE when
    /// another listener has `local`.
    pub fn listen_also(&mut self, h: SocketHandle, local: impl Into<SocketAddr>) -> Result<()> {
        let idx = self.slot_of(h)?;
        let local = endpoint(local.into());
        let Some(l) = self.slots[idx as usize].listener.as_ref() else {
            return Err(Error::InvalidInput);
        };
        if local.port() != l.addr.port() {
            return Err(Error::InvalidInput);
        }
        let key = listen_key(local);
        match self.listeners.get(&key) {
            Some(&other) if other == idx => Ok(()),
            Some(_) => Err(Error::AddrInUse),
            None => {
                self.listeners.insert(key, idx);
                Ok(())
            }
        }
    }

    /// Takes one established connection from a listener's queue.
    pub fn accept(&mut self, listener: SocketHandle) -> Result<SocketHandle> {
        let l = self.slot_of(listener)?;
        let Some(lst) = self.slots[l as usize].listener.as_mut() else {
            return Err(Error::InvalidInput);
        };
        let idx = lst.accept_queue.pop_front().ok_or(Error::WouldBlock)?;
        self.update_readiness(l);
        let s = &mut self.slots[idx as usize];
        s.in_accept_queue = false;
        s.user_open = true;
        s.tcb.parent = None;
        self.update_readiness(idx);
        Ok(Self::handle(idx))
    }

    pub(super) fn close_listener(&mut self, idx: u32) {
        let l = self.slots[idx as usize].listener.take().expect("listener");
        self.listeners.remove(&listen_key(l.addr));
        // And the addresses `listen_also` added.
        self.listeners.retain(|_, &mut i| i != idx);
        // Connections still in the handshake or waiting for accept are reset.
        let mut children = Vec::new();
        for &i in &self.active {
            let s = &self.slots[i as usize];
            if s.kind == SlotKind::Conn && s.tcb.parent == Some(idx) && !s.user_open {
                children.push(i);
            }
        }
        for c in children {
            let s = &mut self.slots[c as usize];
            s.in_accept_queue = false;
            s.tcb.parent = None;
            s.tcb.orphan = true;
            self.reset_conn(c);
        }
        self.slots[idx as usize].user_open = false;
        self.free_slot(idx);
    }
}
