//! Export and import of a whole connection (for handoff between processes or to and
//! from the kernel's TCP_REPAIR). Out-of-order data and the SACK scoreboard are not
//! carried: the peer retransmits what it has not seen acknowledged.

use core::net::SocketAddr;

use super::cc::{Congestion, CongestionAlgorithm};
use super::conn::State;
use super::{SlotKind, SocketOptions, TcpLayer};
use crate::error::{Error, Result};
use crate::socket::SocketHandle;
use crate::time::{Duration, Instant};
use crate::wire::tcp::SeqNumber;

/// Everything needed to continue a connection elsewhere. Plain data: serialize it as
/// you like. Sequence numbers are raw u32 values; timers are relative to export time.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionState {
    pub state: State,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub iss: u32,
    pub irs: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub snd_max: u32,
    pub snd_wnd: u32,
    pub snd_wl1: u32,
    pub snd_wl2: u32,
    pub max_snd_wnd: u32,
    pub rcv_nxt: u32,
    pub rcv_adv: u32,
    /// Window-scale shifts, `None` when scaling was not negotiated.
    pub snd_wscale: Option<u8>,
    pub rcv_wscale: Option<u8>,
    pub peer_mss: u16,
    pub our_mss: u16,
    /// Timestamps: `Some((our current TSval, TS.Recent))` when negotiated.
    pub timestamps: Option<(u32, u32)>,
    pub sack: bool,
    /// Unacknowledged and unsent data, starting at SND.UNA.
    pub send_queue: Vec<u8>,
    /// Received, not yet read data, ending at RCV.NXT (less a received FIN).
    pub recv_queue: Vec<u8>,
    /// Our FIN is queued after `send_queue`.
    pub fin_queued: bool,
    pub read_shut: bool,
    pub srtt_us: u64,
    pub rttvar_us: u64,
    pub rto_us: u64,
    pub backoff: u32,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub congestion: CongestionAlgorithm,
    pub options: SocketOptions,
    /// Time left on the retransmission timer / TIME-WAIT (or FIN-WAIT-2) timer.
    pub rto_in: Option<Duration>,
    pub close_in: Option<Duration>,
}

impl TcpLayer {
    /// The open connection with these addresses (one the app has a handle to).
    pub fn find(
        &self,
        local: impl Into<SocketAddr>,
        remote: impl Into<SocketAddr>,
    ) -> Option<SocketHandle> {
        let key = super::conn_key(local.into(), remote.into());
        let idx = *self.conns.get(&key)?;
        let h = SocketHandle::tcp(idx);
        self.conn_slot(h).ok().map(|_| h)
    }

    /// A listener's backlog (to listen the same way in another process's stack).
    pub fn backlog(&self, h: SocketHandle) -> Result<usize> {
        let idx = self.slot_of(h)?;
        self.slots[idx as usize]
            .listener
            .as_ref()
            .map(|l| l.backlog)
            .ok_or(Error::InvalidInput)
    }

    /// The connections still in their handshake under listener `l` (SYN-RECEIVED), by
    /// their addresses: another process taking over the listener's new connections
    /// must leave these to this one until they are established.
    pub fn handshakes_of(&self, l: SocketHandle) -> Vec<(SocketAddr, SocketAddr)> {
        let Ok(lidx) = self.slot_of(l) else {
            return Vec::new();
        };
        self.slots
            .iter()
            .filter(|s| {
                s.kind == SlotKind::Conn
                    && s.tcb.state == State::SynReceived
                    && s.tcb.parent == Some(lidx)
            })
            .map(|s| (s.tcb.local, s.tcb.remote))
            .collect()
    }

    /// Starts telling (through [`TcpLayer::take_handshakes`]) of every passive
    /// handshake begun: a host whose flows another process could be handed (a listener
    /// group whose membership changes) pins each at once.
    pub fn record_handshakes(&mut self) {
        self.handshakes.get_or_insert_with(Vec::new);
    }

    /// The handshakes begun since the last call, by handle and addresses (those still
    /// in SYN-RECEIVED, or past it).
    pub fn take_handshakes(&mut self) -> Vec<(SocketHandle, SocketAddr, SocketAddr)> {
        let Some(log) = self.handshakes.as_mut() else {
            return Vec::new();
        };
        let hs = std::mem::take(log);
        hs.into_iter()
            .filter_map(|h| {
                let s = self.slots.get(h.index as usize)?;
                (s.kind == SlotKind::Conn).then_some((h, s.tcb.local, s.tcb.remote))
            })
            .collect()
    }

    /// The listener that takes connections to `local` (its address, or the wildcard).
    pub fn listener_for(&self, local: impl Into<SocketAddr>) -> Option<SocketHandle> {
        let idx = self.listener_at(local.into())?;
        Some(SocketHandle::tcp(idx))
    }

    /// Installs an exported connection in listener `l`'s accept queue, as if its
    /// handshake had completed here (a connection another process queued but never
    /// accepted).
    pub fn import_queued(
        &mut self,
        now: Instant,
        l: SocketHandle,
        st: &ConnectionState,
    ) -> Result<SocketHandle> {
        let lidx = self.slot_of(l)?;
        if self.slots[lidx as usize].listener.is_none() {
            return Err(Error::InvalidInput);
        }
        let h = self.import(now, st)?;
        let s = &mut self.slots[h.index as usize];
        s.user_open = false;
        s.tcb.parent = Some(lidx);
        s.tcb.passive = true;
        self.enqueue_accept(h.index);
        Ok(h)
    }

    /// Takes a connection out of this stack: returns its state and frees the handle
    /// without sending anything. Only connections past the handshake can move.
    pub fn export(&mut self, now: Instant, h: SocketHandle) -> Result<ConnectionState> {
        let st = self.snapshot(now, h)?;
        let idx = self.conn_slot(h)?;
        let s = &mut self.slots[idx as usize];
        s.user_open = false;
        s.tcb.set_closed_quietly();
        self.readiness.forget(h);
        self.on_conn_closed(idx);
        Ok(st)
    }

    /// A connection's state as [`TcpLayer::export`] would give it, leaving the
    /// connection where it is (to try a move that may fail before committing to it).
    pub fn snapshot(&mut self, now: Instant, h: SocketHandle) -> Result<ConnectionState> {
        let idx = self.conn_slot(h)?;
        self.now = self.now.max(now);
        let s = &self.slots[idx as usize];
        let t = &s.tcb;
        if matches!(
            t.state,
            State::Closed | State::SynSent | State::SynReceived | State::Listen
        ) {
            return Err(Error::InvalidInput);
        }
        let left = |d: Option<Instant>| d.map(|d| d.saturating_since(now));
        let st = ConnectionState {
            state: t.state,
            local: t.local,
            remote: t.remote,
            iss: t.iss.0,
            irs: t.irs.0,
            snd_una: t.snd_una.0,
            snd_nxt: t.snd_nxt.0,
            snd_max: t.snd_max.0,
            snd_wnd: t.snd_wnd,
            snd_wl1: t.snd_wl1.0,
            snd_wl2: t.snd_wl2.0,
            max_snd_wnd: t.max_snd_wnd,
            rcv_nxt: t.rcv_nxt.0,
            rcv_adv: t.rcv_adv.0,
            snd_wscale: t.ws_ok.then_some(t.snd_wscale),
            rcv_wscale: t.ws_ok.then_some(t.rcv_wscale),
            peer_mss: t.peer_mss,
            our_mss: t.our_mss,
            timestamps: t.ts_ok.then(|| (t.ts_now(now), t.ts_recent)),
            sack: t.sack_ok,
            send_queue: t.send_buf.to_vec(),
            recv_queue: t.recv_buf.to_vec(),
            fin_queued: t.fin_queued,
            read_shut: t.rd_shut,
            srtt_us: t.rtt.srtt,
            rttvar_us: t.rtt.rttvar,
            rto_us: t.rtt.rto,
            backoff: t.backoff,
            cwnd: t.cc.cwnd,
            ssthresh: t.cc.ssthresh,
            congestion: t.cc.algorithm,
            options: s.opts,
            rto_in: left(t.rto_at),
            close_in: left(t.close_at),
        };
        Ok(st)
    }

    /// Installs an exported connection; it continues from where it was exported.
    pub fn import(&mut self, now: Instant, st: &ConnectionState) -> Result<SocketHandle> {
        self.now = self.now.max(now);
        if let Some(&old) = self.conns.get(&super::conn_key(st.local, st.remote)) {
            // A TIME-WAIT of an earlier incarnation, which the app let go of: the peer
            // opened the 4-tuple again and another holder accepted it (a listener
            // group's member forwarding what it queued), as a SYN here would have.
            let s = &self.slots[old as usize];
            if s.tcb.state != State::TimeWait || s.user_open {
                return Err(Error::AddrInUse);
            }
            self.stats.time_wait_reused += 1;
            self.slots[old as usize].tcb.set_closed_quietly();
            self.on_conn_closed(old);
        }
        if matches!(
            st.state,
            State::Closed | State::SynSent | State::SynReceived | State::Listen
        ) {
            return Err(Error::InvalidInput);
        }
        // Room for the unread data and for all of the window the former holder offered
        // beyond it (a kernel's buffer counts both): the peer may send all of it.
        let offered = st.rcv_adv.wrapping_sub(st.rcv_nxt);
        let offered = if (offered as i32) > 0 {
            offered as usize
        } else {
            0
        };
        let opts = SocketOptions {
            rcvbuf: st.options.rcvbuf.max(st.recv_queue.len() + offered),
            sndbuf: st.options.sndbuf.max(st.send_queue.len()),
            ..st.options
        };
        let idx = self
            .alloc_slot(SlotKind::Conn, opts)
            .ok_or(Error::NoBufferSpace)?;
        let now = self.now;
        let s = &mut self.slots[idx as usize];
        s.user_open = true;
        s.in_table = true;
        let t = &mut s.tcb;
        t.state = st.state;
        t.local = st.local;
        t.remote = st.remote;
        t.iss = SeqNumber(st.iss);
        t.irs = SeqNumber(st.irs);
        t.snd_una = SeqNumber(st.snd_una);
        t.snd_nxt = SeqNumber(st.snd_nxt);
        t.snd_max = SeqNumber(st.snd_max);
        t.snd_wnd = st.snd_wnd;
        t.snd_wl1 = SeqNumber(st.snd_wl1);
        t.snd_wl2 = SeqNumber(st.snd_wl2);
        t.max_snd_wnd = st.max_snd_wnd;
        t.rcv_nxt = SeqNumber(st.rcv_nxt);
        t.rcv_adv = SeqNumber(st.rcv_adv);
        t.ws_ok = st.snd_wscale.is_some();
        t.snd_wscale = st.snd_wscale.unwrap_or(0);
        t.rcv_wscale = st.rcv_wscale.unwrap_or(0);
        t.peer_mss = st.peer_mss;
        t.our_mss = st.our_mss;
        match st.timestamps {
            Some((val, recent)) => {
                t.ts_ok = true;
                t.ts_recent = recent;
                t.ts_offset = val.wrapping_sub(now.millis() as u32);
            }
            None => t.ts_ok = false,
        }
        t.sack_ok = st.sack;
        t.send_buf.write(&st.send_queue);
        t.recv_buf.write(&st.recv_queue);
        t.fin_queued = st.fin_queued;
        t.fin_acked = st.fin_queued && matches!(st.state, State::FinWait2 | State::TimeWait);
        t.rd_shut = st.read_shut;
        t.rtt.srtt = st.srtt_us;
        t.rtt.rttvar = st.rttvar_us;
        t.rtt.rto = st.rto_us;
        t.backoff = st.backoff;
        t.cc = Congestion::new(st.congestion, 536);
        t.update_smss();
        t.cc.cwnd = st.cwnd;
        t.cc.ssthresh = st.ssthresh;
        t.rto_at = st.rto_in.map(|d| now + d);
        if t.rto_at.is_none() && t.snd_una != t.snd_max {
            t.rto_at = Some(now + t.rtt.timeout(t.backoff));
        }
        t.close_at = st.close_in.map(|d| now + d);
        t.last_rcv = now;
        t.take_options(&opts);
        self.conns.insert(super::conn_key(st.local, st.remote), idx);
        self.mark_tx(idx);
        self.update_readiness(idx);
        self.after_time_wait_change(idx);
        Ok(SocketHandle::tcp(idx))
    }
}
