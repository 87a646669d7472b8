//! The socket API for connections: connect, send, recv, shutdown, close, abort,
//! addresses, errors, options, and what `ss -ti` would show.

use core::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};
use crate::socket::{Readiness, SocketHandle};
use crate::time::Duration;

use super::demux::endpoint;
use super::{
    conn_key, Control, Keepalive, MoveProbe, Shutdown, SlotKind, SocketOptions, State, TcpLayer,
};

fn is_v4_mapped(a: SocketAddr) -> bool {
    matches!(a, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some())
}

impl TcpLayer {
    /// Starts an active open from `local` (a concrete address of this host; port 0
    /// picks an ephemeral port) to `remote`. The handle becomes writable once
    /// established; failures show as an error ([`TcpLayer::take_error`]).
    pub fn connect(
        &mut self,
        local: impl Into<SocketAddr>,
        remote: impl Into<SocketAddr>,
    ) -> Result<SocketHandle> {
        let opts = self.cfg.default_options();
        self.connect_with(local, remote, opts)
    }

    pub fn connect_with(
        &mut self,
        local: impl Into<SocketAddr>,
        remote: impl Into<SocketAddr>,
        opts: SocketOptions,
    ) -> Result<SocketHandle> {
        let (local, remote) = (endpoint(local.into()), endpoint(remote.into()));
        if local.ip().is_unspecified() {
            return Err(Error::AddrNotAvailable);
        }
        // Both ends unicast: `receive` relies on it to skip address checks for a
        // segment that finds its connection.
        let broadcast = |a: SocketAddr| matches!(a.ip(), IpAddr::V4(a) if a.is_broadcast());
        if remote.port() == 0
            || remote.ip().is_unspecified()
            || broadcast(remote)
            || remote.ip().is_multicast()
            || broadcast(local)
            || local.ip().is_multicast()
        {
            return Err(Error::InvalidInput);
        }
        // v4-mapped addresses are IPv4 (the socket layer maps them); never on the wire.
        if local.is_ipv4() != remote.is_ipv4() || is_v4_mapped(local) || is_v4_mapped(remote) {
            return Err(Error::InvalidInput);
        }
        let local = if local.port() == 0 {
            SocketAddr::new(local.ip(), self.ephemeral_port(local, remote)?)
        } else {
            if let Some(&old) = self.conns.get(&conn_key(local, remote)) {
                // A TIME-WAIT leftover with timestamps may be reused (tcp_tw_reuse).
                let s = &self.slots[old as usize];
                if s.tcb.state == State::TimeWait && s.tcb.ts_ok && !s.user_open {
                    self.stats.time_wait_reused += 1;
                    self.slots[old as usize].tcb.state = State::Closed;
                    self.on_conn_closed(old);
                } else {
                    return Err(Error::AddrInUse);
                }
            }
            local
        };
        let idx = self
            .alloc_slot(SlotKind::Conn, opts)
            .ok_or(Error::NoBufferSpace)?;
        let iss = self.isn(local, remote);
        let ts_offset = self.ts_offset(local, remote);
        let now = self.now;
        let s = &mut self.slots[idx as usize];
        s.user_open = true;
        let t = &mut s.tcb;
        t.ts_offset = ts_offset;
        t.local = local;
        t.remote = remote;
        t.iss = iss;
        t.snd_una = iss;
        t.snd_nxt = iss;
        t.snd_max = iss;
        t.state = State::SynSent;
        t.last_rcv = now;
        s.in_table = true;
        self.conns.insert(conn_key(local, remote), idx);
        self.stats.active_opens += 1;
        self.mark_tx(idx);
        Ok(Self::handle(idx))
    }

    fn ephemeral_port(&mut self, local: SocketAddr, remote: SocketAddr) -> Result<u16> {
        let (lo, hi) = self.cfg.ephemeral_ports;
        if lo == 0 || lo > hi {
            return Err(Error::AddrNotAvailable);
        }
        let n = (hi - lo) as u64 + 1;
        let start = self.prng.below(n);
        for k in 0..n {
            let port = lo + ((start + k) % n) as u16;
            let l = SocketAddr::new(local.ip(), port);
            if self.conns.contains_key(&conn_key(l, remote)) || self.listener_at(l).is_some() {
                continue;
            }
            return Ok(port);
        }
        Err(Error::AddrNotAvailable)
    }

    /// Queues data; returns how much was taken (0 only for empty `data`).
    pub fn send(&mut self, h: SocketHandle, data: &[u8]) -> Result<usize> {
        let idx = self.conn_slot(h)?;
        let t = &mut self.slots[idx as usize].tcb;
        if let Some(e) = t.error.take() {
            self.update_readiness(idx);
            return Err(e);
        }
        if t.broken || t.fin_queued {
            return Err(Error::BrokenPipe);
        }
        match t.state {
            State::SynSent | State::SynReceived => return Err(Error::WouldBlock),
            State::Established | State::CloseWait => {}
            State::Closed => return Err(Error::NotConnected),
            _ => return Err(Error::BrokenPipe),
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = t.send_buf.write(data);
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        // Queuing data can only lose writability (timers move at dispatch): record the
        // loss cheaply instead of recomputing everything.
        let full = !t.send_write_space();
        let s = &mut self.slots[idx as usize];
        if full {
            s.last_ready.set(Readiness::WRITABLE, false);
        }
        self.mark_tx(idx);
        Ok(n)
    }

    /// Reads received data. `Ok(0)` is end of stream (FIN received, or read side shut).
    pub fn recv(&mut self, h: SocketHandle, buf: &mut [u8]) -> Result<usize> {
        self.recv_inner(h, buf, false)
    }

    /// Like [`TcpLayer::recv`] but leaves the data queued (MSG_PEEK).
    pub fn peek(&mut self, h: SocketHandle, buf: &mut [u8]) -> Result<usize> {
        self.recv_inner(h, buf, true)
    }

    /// Drops up to `n` received bytes as a read would (after a peek, once their copy
    /// went elsewhere: a splice into a pipe); returns how many. `Ok(0)` for `n == 0`
    /// or end of stream.
    pub fn discard(&mut self, h: SocketHandle, n: usize) -> Result<usize> {
        self.take_received(h, Take::Discard(n))
    }

    /// Room in the send buffer: what a [`TcpLayer::send`] now would take at most.
    pub fn send_room(&self, h: SocketHandle) -> Result<usize> {
        let idx = self.conn_slot(h)?;
        Ok(self.slots[idx as usize].tcb.send_buf.free())
    }

    fn recv_inner(&mut self, h: SocketHandle, buf: &mut [u8], peek: bool) -> Result<usize> {
        if peek {
            self.take_received(h, Take::Peek(buf))
        } else {
            self.take_received(h, Take::Read(buf))
        }
    }

    fn take_received(&mut self, h: SocketHandle, take: Take<'_>) -> Result<usize> {
        let idx = self.conn_slot(h)?;
        let t = &mut self.slots[idx as usize].tcb;
        if !t.recv_buf.is_empty() {
            let peek = matches!(take, Take::Peek(_));
            let n = match take {
                Take::Peek(buf) => t.recv_buf.peek_at(0, buf),
                Take::Read(buf) => t.recv_buf.read(buf),
                Take::Discard(n) => {
                    let n = n.min(t.recv_buf.len());
                    t.recv_buf.consume(n);
                    n
                }
            };
            if n == 0 {
                return Ok(0);
            }
            if !peek {
                t.on_app_read();
                let ack = t.ack_now;
                // Reading can only lose readability (unless EOF or an error keeps it).
                let lost = t.recv_buf.is_empty() && !t.readable_without_data();
                if lost {
                    self.slots[idx as usize]
                        .last_ready
                        .set(Readiness::READABLE, false);
                }
                if ack {
                    self.mark_tx(idx);
                }
                self.after_time_wait_change(idx);
            }
            return Ok(n);
        }
        if let Some(e) = t.error.take() {
            self.update_readiness(idx);
            return Err(e);
        }
        if t.state.fin_received() || t.rd_shut || t.broken {
            return Ok(0);
        }
        match t.state {
            State::Closed => Err(Error::NotConnected),
            _ => Err(Error::WouldBlock),
        }
    }

    /// Shuts down reading, writing (sends FIN after queued data) or both.
    pub fn shutdown(&mut self, h: SocketHandle, how: Shutdown) -> Result<()> {
        let idx = self.conn_slot(h)?;
        let t = &mut self.slots[idx as usize].tcb;
        if t.state == State::Closed && !t.broken {
            return Err(Error::NotConnected);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            t.rd_shut = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.shutdown_write(idx);
        }
        self.mark_tx(idx);
        self.update_readiness(idx);
        Ok(())
    }

    fn shutdown_write(&mut self, idx: u32) {
        let t = &mut self.slots[idx as usize].tcb;
        match t.state {
            State::SynSent => {
                t.set_closed_quietly();
                self.on_conn_closed(idx);
            }
            State::SynReceived => t.fin_queued = true,
            State::Established => {
                t.fin_queued = true;
                t.state = State::FinWait1;
            }
            State::CloseWait => {
                t.fin_queued = true;
                t.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Closes the handle. Listeners stop (pending connections are reset); connections
    /// finish gracefully in the background (FIN after queued data), unless unread data
    /// remains or linger is zero, which resets them (as Linux does).
    pub fn close(&mut self, h: SocketHandle) -> Result<()> {
        let idx = self.slot_of(h)?;
        if self.slots[idx as usize].kind == SlotKind::Listener {
            self.close_listener(idx);
            return Ok(());
        }
        let s = &mut self.slots[idx as usize];
        s.user_open = false;
        s.tcb.orphan = true;
        self.readiness.forget(h);
        let t = &self.slots[idx as usize].tcb;
        let unread = !t.recv_buf.is_empty();
        let linger0 = t.linger == Some(Duration::ZERO);
        match t.state {
            State::Closed | State::SynSent => {
                self.slots[idx as usize].tcb.set_closed_quietly();
                self.on_conn_closed(idx);
            }
            State::TimeWait => self.after_time_wait_change(idx),
            State::LastAck | State::Closing => {}
            _ if unread || linger0 => self.reset_conn(idx),
            State::FinWait2 => {
                let now = self.now;
                let t = &mut self.slots[idx as usize].tcb;
                t.close_at = Some(now + self.cfg.fin_wait2_timeout);
                self.update_readiness(idx);
            }
            _ => {
                self.shutdown_write(idx);
                self.mark_tx(idx);
            }
        }
        Ok(())
    }

    /// Resets the connection (RST to the peer) and releases the handle.
    pub fn abort(&mut self, h: SocketHandle) -> Result<()> {
        let idx = self.slot_of(h)?;
        if self.slots[idx as usize].kind == SlotKind::Listener {
            self.close_listener(idx);
            return Ok(());
        }
        self.slots[idx as usize].user_open = false;
        self.slots[idx as usize].tcb.orphan = true;
        self.readiness.forget(h);
        self.reset_conn(idx);
        Ok(())
    }

    /// Sends RST (in synchronized states) and closes.
    pub(super) fn reset_conn(&mut self, idx: u32) {
        let t = &mut self.slots[idx as usize].tcb;
        if !matches!(t.state, State::Closed | State::SynSent | State::TimeWait) {
            let c = Control::Rst {
                local: t.local,
                remote: t.remote,
                seq: t.snd_max,
                ack: None,
            };
            self.queue_control(c);
        }
        let t = &mut self.slots[idx as usize].tcb;
        t.set_closed_quietly();
        t.broken = true;
        self.on_conn_closed(idx);
    }

    pub fn local_addr(&self, h: SocketHandle) -> Result<SocketAddr> {
        let idx = self.slot_of(h)?;
        Ok(self.slots[idx as usize].tcb.local)
    }

    pub fn peer_addr(&self, h: SocketHandle) -> Result<SocketAddr> {
        let idx = self.conn_slot(h)?;
        let t = &self.slots[idx as usize].tcb;
        if t.state == State::Closed && !t.broken {
            return Err(Error::NotConnected);
        }
        Ok(t.remote)
    }

    pub fn state(&self, h: SocketHandle) -> Result<State> {
        let idx = self.slot_of(h)?;
        let s = &self.slots[idx as usize];
        Ok(match s.kind {
            SlotKind::Listener => State::Listen,
            _ => s.tcb.state,
        })
    }

    /// SO_ERROR: the pending error, cleared by reading it.
    pub fn take_error(&mut self, h: SocketHandle) -> Result<Option<Error>> {
        let idx = self.slot_of(h)?;
        let e = self.slots[idx as usize].tcb.error.take();
        self.update_readiness(idx);
        Ok(e)
    }

    /// Bytes waiting to be read (FIONREAD).
    pub fn recv_queued(&self, h: SocketHandle) -> Result<usize> {
        let idx = self.conn_slot(h)?;
        Ok(self.slots[idx as usize].tcb.recv_buf.len())
    }

    /// Around a move: the connection's next segment makes the peer answer at once
    /// (see `Tcb::probe_peer`). Returns whether a segment is due.
    pub fn probe_peer(&mut self, h: SocketHandle, probe: MoveProbe) -> Result<bool> {
        let idx = self.conn_slot(h)?;
        let due = self.slots[idx as usize].tcb.probe_peer(probe);
        if due {
            self.mark_tx(idx);
        }
        Ok(due)
    }

    /// Bytes sent but not acknowledged plus not yet sent (SIOCOUTQ).
    pub fn send_queued(&self, h: SocketHandle) -> Result<usize> {
        let idx = self.conn_slot(h)?;
        Ok(self.slots[idx as usize].tcb.send_buf.len())
    }

    pub fn options(&self, h: SocketHandle) -> Result<SocketOptions> {
        let idx = self.slot_of(h)?;
        Ok(self.slots[idx as usize].opts)
    }

    /// Applies socket options. Buffer sizes resize the rings (never below what they
    /// hold); the window scale, fixed at the handshake, limits what can be advertised.
    pub fn set_options(&mut self, h: SocketHandle, opts: SocketOptions) -> Result<()> {
        let idx = self.slot_of(h)?;
        let s = &mut self.slots[idx as usize];
        let opts = SocketOptions {
            rcvbuf: opts.rcvbuf.max(1024),
            sndbuf: opts.sndbuf.max(1024),
            ..opts
        };
        s.opts = opts;
        if let Some(l) = s.listener.as_mut() {
            l.opts = opts;
        }
        if s.kind == SlotKind::Conn {
            let t = &mut s.tcb;
            if t.keepalive != opts.keepalive {
                t.ka_probes = 0;
                t.last_rcv = self.now;
            }
            t.take_options(&opts);
            // Buffers given back in TIME-WAIT stay given back.
            if t.ooo.is_empty() && t.recv_buf.capacity() > 0 {
                t.recv_buf.resize(opts.rcvbuf.max(t.recv_buf.len()));
            }
            if t.send_buf.capacity() > 0 {
                t.send_buf.resize(opts.sndbuf.max(t.send_buf.len()));
            }
            self.mark_tx(idx);
            self.update_readiness(idx);
        }
        Ok(())
    }

    /// An ACK goes out with the next dispatch even if TCP has nothing to acknowledge:
    /// for a layer above TCP whose peer waits for an answer TCP does not see (MPTCP's
    /// data ACK of a DATA_FIN that came without a FIN).
    pub fn send_ack(&mut self, h: SocketHandle) -> Result<()> {
        let idx = self.conn_slot(h)?;
        self.slots[idx as usize].tcb.ack_now = true;
        self.mark_tx(idx);
        Ok(())
    }

    /// TCP_QUICKACK set: a delayed ACK that is pending goes out with the next dispatch.
    pub fn quick_ack(&mut self, h: SocketHandle) -> Result<()> {
        let idx = self.conn_slot(h)?;
        let t = &mut self.slots[idx as usize].tcb;
        if t.delack_at.is_some() {
            t.ack_now = true;
            self.mark_tx(idx);
        }
        Ok(())
    }

    pub fn set_nodelay(&mut self, h: SocketHandle, on: bool) -> Result<()> {
        let o = self.options(h)?;
        self.set_options(h, SocketOptions { nodelay: on, ..o })
    }

    pub fn set_keepalive(&mut self, h: SocketHandle, ka: Option<Keepalive>) -> Result<()> {
        let o = self.options(h)?;
        self.set_options(h, SocketOptions { keepalive: ka, ..o })
    }

    pub fn set_linger(&mut self, h: SocketHandle, linger: Option<Duration>) -> Result<()> {
        let o = self.options(h)?;
        self.set_options(h, SocketOptions { linger, ..o })
    }

    pub fn set_rcvbuf(&mut self, h: SocketHandle, bytes: usize) -> Result<()> {
        let o = self.options(h)?;
        self.set_options(h, SocketOptions { rcvbuf: bytes, ..o })
    }

    pub fn set_sndbuf(&mut self, h: SocketHandle, bytes: usize) -> Result<()> {
        let o = self.options(h)?;
        self.set_options(h, SocketOptions { sndbuf: bytes, ..o })
    }

    /// Round-trip estimate and window of a connection (for TCP_INFO-like reporting).
    pub fn info(&self, h: SocketHandle) -> Result<ConnectionInfo> {
        let idx = self.conn_slot(h)?;
        let t = &self.slots[idx as usize].tcb;
        Ok(ConnectionInfo {
            state: t.state,
            srtt: Duration(t.rtt.srtt),
            rto: t.rtt.timeout(t.backoff),
            cwnd: t.cc.cwnd,
            ssthresh: t.cc.ssthresh,
            snd_wnd: t.snd_wnd,
            mss: t.payload_mss(),
            snd_wscale: t.ws_ok.then_some(t.snd_wscale),
            rcv_wscale: t.ws_ok.then_some(t.rcv_wscale),
            timestamps: t.ts_ok,
            sack: t.sack_ok,
            in_recovery: t.recovery.is_some(),
            snd_una: t.snd_una.0,
            snd_nxt: t.snd_max.0,
            rcv_nxt: t.rcv_nxt.0,
            retransmits_pending: t.snd_una != t.snd_max,
        })
    }
}

/// A connection's negotiated options and congestion state (like `ss -ti`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub state: State,
    pub srtt: Duration,
    pub rto: Duration,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub snd_wnd: u32,
    /// Payload bytes per full segment.
    pub mss: u32,
    pub snd_wscale: Option<u8>,
    pub rcv_wscale: Option<u8>,
    pub timestamps: bool,
    pub sack: bool,
    pub in_recovery: bool,
    /// Oldest unacknowledged and next new sequence number we send.
    pub snd_una: u32,
    pub snd_nxt: u32,
    /// Next sequence number expected from the peer.
    pub rcv_nxt: u32,
    /// Data or a FIN is in flight (unacknowledged).
    pub retransmits_pending: bool,
}

impl TcpLayer {
    /// One line describing a connection's internals (for debugging and test failures).
    pub fn debug_summary(&self, h: SocketHandle) -> String {
        match self.conn_slot(h) {
            Ok(i) => self.slots[i as usize].tcb.summary(),
            Err(e) => format!("{e}"),
        }
    }
}

/// What a receive does with the queued bytes.
enum Take<'a> {
    /// Copies them out and drops them (recv).
    Read(&'a mut [u8]),
    /// Copies them out and leaves them queued (MSG_PEEK).
    Peek(&'a mut [u8]),
    /// Drops up to this many without copying.
    Discard(usize),
}
