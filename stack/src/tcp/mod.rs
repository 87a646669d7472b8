//! TCP (RFC 9293): the connection table, listeners, SYN cookies and the socket API.
//!
//! [`TcpLayer`] is driven by the IP layer: [`TcpLayer::receive`] for each segment whose
//! checksum was verified, [`TcpLayer::dispatch`] to emit what is due (data, ACKs,
//! retransmissions, RSTs), [`TcpLayer::poll_at`] for the next timer. The application
//! side (the shim) uses handles ([`SocketHandle`]) into a pool of socket slots sized at
//! start. Socket calls take their notion of "now" from the last `receive`/`dispatch`
//! (export/import take it explicitly).
//!
//! What is implemented, and where:
//! - `conn.rs`: the state machine (simultaneous open/close, half-close, TIME-WAIT),
//!   RFC 5961 challenge ACKs, PAWS and timestamps (RFC 7323), window scaling, SACK
//!   generation, delayed ACK, Nagle, sender/receiver SWS avoidance, zero-window probes,
//!   keepalive, RTO (RFC 6298, Karn), fast retransmit/recovery (RFC 6675 with SACK,
//!   RFC 6582 NewReno without), a header-prediction fast path.
//! - `cc.rs`: CUBIC (RFC 9438, default) and NewReno. `sack.rs`: the sender scoreboard.
//! - this file: demultiplexing, listeners with a SYN queue and SYN cookies, TIME-WAIT
//!   reuse, RFC 6528 ISNs, RSTs for closed ports, the socket API, readiness, stats.
//! - `export.rs`: a connection's whole state as plain data, and back.
//!
//! Not implemented: ECN, urgent data (URG is ignored; the bytes are ordinary data),
//! RFC 7323 RTT measurement from timestamps (Karn's timed segment is used), ICMP
//! errors (PMTU, unreachable), TCP Fast Open, lingering close that blocks (the shim's
//! job; only `SO_LINGER` 0 changes the stack's behaviour).

pub mod cc;
mod conn;
mod export;
pub mod hash;
mod info;
mod ring;
mod rtt;
mod sack;
mod state_codec;

use core::hash::{BuildHasherDefault, Hasher};
use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::{HashMap, VecDeque};

pub use cc::CongestionAlgorithm;
pub use conn::State;
use conn::{window_shift_for, Tcb, Verdict};
pub use export::ConnectionState;
use hash::{siphash, Prng};
pub use info::{CongestionState, TcpInfo};
use ring::Ring;

use crate::error::{Error, Result};
use crate::ip_tx::{IpProtocol, IpTx};
use crate::socket::{Readiness, ReadinessQueue, SocketHandle, SocketKind};
use crate::time::{Duration, Instant};
use crate::wire::tcp::{flags, SeqNumber, TcpPacket, TcpRepr};

/// Keepalive parameters (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Default for Keepalive {
    /// Linux defaults: 2 h idle, 75 s interval, 9 probes.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            count: 9,
        }
    }
}

/// Per-socket options (setsockopt). Listeners pass theirs to accepted connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    pub rcvbuf: usize,
    pub sndbuf: usize,
    /// TCP_NODELAY: disable Nagle.
    pub nodelay: bool,
    /// SO_KEEPALIVE with its parameters.
    pub keepalive: Option<Keepalive>,
    /// SO_LINGER: `Some(0)` makes close send RST; other values are kept for the shim.
    pub linger: Option<Duration>,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the
    /// connection fails with ETIMEDOUT (instead of counting retransmissions).
    pub user_timeout: Option<Duration>,
    /// TCP_DEFER_ACCEPT (listeners): a connection is handed to `accept` only once data
    /// (or a FIN) arrived, or this long after the handshake.
    pub defer_accept: Option<Duration>,
    /// TCP_QUICKACK as last set (see [`TcpLayer::quick_ack`]; Linux's quick-ACK mode
    /// falls back to delayed ACKs, as this stack always does).
    pub quickack: bool,
}

/// Layer-wide configuration, fixed at start.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Socket slots (listeners + connections, incl. TIME-WAIT): the pool size.
    pub max_sockets: usize,
    /// Default buffer sizes (bytes) for new sockets.
    pub rcvbuf: usize,
    pub sndbuf: usize,
    /// Upper bound of the MSS we advertise (the path gives the real one).
    pub mss: u16,
    pub window_scaling: bool,
    pub timestamps: bool,
    pub sack: bool,
    pub congestion: CongestionAlgorithm,
    pub initial_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub delayed_ack: Duration,
    /// Maximum segment lifetime: TIME-WAIT lasts 2 × MSL.
    pub msl: Duration,
    /// How long an orphaned connection may sit in FIN-WAIT-2.
    pub fin_wait2_timeout: Duration,
    pub syn_retries: u32,
    pub synack_retries: u32,
    /// Retransmissions of data before the connection fails with ETIMEDOUT.
    pub max_retries: u32,
    /// Inclusive range for ephemeral local ports.
    pub ephemeral_ports: (u16, u16),
    /// Answer SYNs with cookies when a listener's SYN queue (or the pool) is full.
    pub syn_cookies: bool,
    /// RFC 6528 secret for ISNs and cookies; `None` derives one from the seed.
    pub isn_secret: Option<[u64; 2]>,
    /// Challenge ACKs per connection per second (RFC 5961 7).
    pub challenge_ack_limit: u32,
    /// Room for RSTs and cookie SYN-ACKs waiting for `dispatch`.
    pub control_queue: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_sockets: 1024,
            rcvbuf: 256 * 1024,
            sndbuf: 256 * 1024,
            mss: 65495,
            window_scaling: true,
            timestamps: true,
            sack: true,
            congestion: CongestionAlgorithm::Cubic,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            delayed_ack: Duration::from_millis(40),
            msl: Duration::from_secs(30),
            fin_wait2_timeout: Duration::from_secs(60),
            syn_retries: 6,
            synack_retries: 5,
            max_retries: 15,
            ephemeral_ports: (32768, 60999),
            syn_cookies: true,
            isn_secret: None,
            challenge_ack_limit: 10,
            control_queue: 256,
        }
    }
}

impl TcpConfig {
    /// Options a new socket starts with (buffer sizes from this config).
    pub fn default_socket_options(&self) -> SocketOptions {
        self.default_options()
    }

    fn default_options(&self) -> SocketOptions {
        SocketOptions {
            rcvbuf: self.rcvbuf,
            sndbuf: self.sndbuf,
            nodelay: false,
            keepalive: None,
            linger: None,
            user_timeout: None,
            defer_accept: None,
            quickack: true,
        }
    }
}

/// How to shut a connection down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// Counters (monotonic). Connection counts by state come from
/// [`TcpLayer::connections_by_state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub segments_in: u64,
    pub segments_out: u64,
    /// Segments sent again (any cause).
    pub retransmits: u64,
    /// Entries into fast recovery.
    pub fast_retransmits: u64,
    /// Retransmission-timer expiries.
    pub timeouts: u64,
    /// Connections that failed because retransmissions ran out.
    pub timeouts_fatal: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub active_opens: u64,
    pub passive_opens: u64,
    pub challenge_acks: u64,
    pub window_probes: u64,
    pub keepalive_probes: u64,
    pub keepalive_timeouts: u64,
    pub syn_cookies_sent: u64,
    pub syn_cookies_accepted: u64,
    pub syn_cookies_rejected: u64,
    pub time_wait_reused: u64,
    /// TIME-WAITs ended early because the socket pool was full.
    pub time_wait_recycled: u64,
    /// The IP layer refused a packet (retried later).
    pub tx_blocked: u64,
    /// Drops, by reason.
    pub drops_malformed: u64,
    pub drops_no_socket: u64,
    pub drops_out_of_window: u64,
    pub drops_paws: u64,
    pub drops_bad_ack: u64,
    pub drops_listen_overflow: u64,
    pub drops_control_queue: u64,
}

/// A segment the layer emits without a connection: RSTs and cookie SYN-ACKs.
#[derive(Clone, Copy, Debug)]
enum Control {
    Rst {
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
    },
    CookieSynAck {
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: SeqNumber,
        ack: SeqNumber,
        window_scale: Option<u8>,
        sack: bool,
        timestamps: Option<(u32, u32)>,
        rcvbuf: usize,
    },
}

#[derive(Debug)]
struct Listener {
    addr: SocketAddrV4,
    backlog: usize,
    accept_queue: VecDeque<u32>,
    syn_pending: usize,
    opts: SocketOptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    Free,
    Listener,
    Conn,
}

#[derive(Debug)]
struct Slot {
    kind: SlotKind,
    tcb: Tcb,
    listener: Option<Listener>,
    opts: SocketOptions,
    /// The app holds this handle.
    user_open: bool,
    in_accept_queue: bool,
    /// In the connection table (not yet CLOSED).
    in_table: bool,
    in_tx_queue: bool,
    active_pos: usize,
    /// Readiness when last recorded (see `update_readiness`).
    last_ready: Readiness,
    /// In TIME-WAIT with nobody referring to it (no app handle, not in an accept
    /// queue): [`TcpLayer::recycle_time_wait`] may end it early. Counted in
    /// `TcpLayer::tw_recyclable`.
    tw_recyclable: bool,
}

/// FxHash: the connection table's keys are not attacker-chosen in a way that matters
/// more than speed here (a SYN flood is bounded by the pool, not by hashing).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

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

type FxBuild = BuildHasherDefault<FxHasher>;
type ConnKey = (u32, u16, u32, u16);

fn conn_key(local: SocketAddrV4, remote: SocketAddrV4) -> ConnKey {
    (
        u32::from(*local.ip()),
        local.port(),
        u32::from(*remote.ip()),
        remote.port(),
    )
}

/// Handshakes `take_handshakes` keeps between two calls at most.
const HANDSHAKE_LOG: usize = 4096;

/// MSS values a SYN cookie can carry (3 bits).
const COOKIE_MSS: [u16; 8] = [536, 1200, 1360, 1440, 1460, 4312, 8960, 9000];

/// The TCP layer: all TCP sockets of one stack.
pub struct TcpLayer {
    cfg: TcpConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots in use (listeners and connections), for timers and `poll_at`.
    active: Vec<u32>,
    /// Next timer of `active[i]` in microseconds (`u64::MAX`: none), kept dense so the
    /// timer scan in `dispatch` and `poll_at` touches one array, not every TCB.
    deadlines: Vec<u64>,
    /// No entry of `deadlines` is earlier than this (it may be earlier than all of
    /// them: a deadline that moved later or went away is noticed at the next scan).
    /// `dispatch` scans the timers only once it has passed, so a dispatch with nothing
    /// due costs the same with 10 connections or 10000.
    next_timer: u64,
    conns: HashMap<ConnKey, u32, FxBuild>,
    /// The 4-tuple and slot of the last connection `receive` found (see `lookup_conn`).
    last_conn: (ConnKey, u32),
    listeners: HashMap<(u32, u16), u32, FxBuild>,
    control: VecDeque<Control>,
    tx_queue: Vec<u32>,
    readiness: ReadinessQueue,
    /// Handshakes begun since the host last asked (`take_handshakes`), when it asked
    /// to be told (`record_handshakes`); at most `HANDSHAKE_LOG` are kept.
    handshakes: Option<Vec<SocketHandle>>,
    /// Buffer storage of connections that no longer need it (freed, or in TIME-WAIT),
    /// for the next connections: a server that closes first keeps buffers for the
    /// connections it serves at once, not for every TIME-WAIT too.
    spare_rings: Vec<Ring>,
    /// Slots with `tw_recyclable` set.
    tw_recyclable: usize,
    /// Where the next [`TcpLayer::recycle_time_wait`] scan starts.
    tw_cursor: usize,
    stats: TcpStats,
    prng: Prng,
    secret: [u64; 2],
    now: Instant,
}

impl TcpLayer {
    /// A layer with `cfg.max_sockets` slots. `seed` drives every random choice (ISN
    /// secret unless configured, ephemeral ports, timestamp offsets): the same seed
    /// and inputs give the same outputs.
    pub fn new(cfg: TcpConfig, seed: u64) -> TcpLayer {
        let mut prng = Prng::new(seed);
        let secret = cfg
            .isn_secret
            .unwrap_or_else(|| [prng.next_u64(), prng.next_u64()]);
        let n = cfg.max_sockets;
        let mut slots = Vec::with_capacity(n);
        let empty = TcpConfig {
            rcvbuf: 0,
            sndbuf: 0,
            ..cfg.clone()
        };
        for i in 0..n {
            slots.push(Slot {
                kind: SlotKind::Free,
                tcb: Tcb::new(&empty),
                listener: None,
                opts: cfg.default_options(),
                user_open: false,
                in_accept_queue: false,
                in_table: false,
                in_tx_queue: false,
                active_pos: 0,
                last_ready: Readiness::EMPTY,
                tw_recyclable: false,
            });
            let _ = i;
        }
        TcpLayer {
            slots,
            free: (0..n as u32).rev().collect(),
            active: Vec::with_capacity(n),
            deadlines: Vec::with_capacity(n),
            next_timer: u64::MAX,
            conns: HashMap::with_capacity_and_hasher(2 * n, FxBuild::default()),
            last_conn: ((0, 0, 0, 0), 0),
            listeners: HashMap::with_capacity_and_hasher(64, FxBuild::default()),
            control: VecDeque::with_capacity(cfg.control_queue),
            tx_queue: Vec::with_capacity(n),
            readiness: ReadinessQueue::with_capacity(n),
            handshakes: None,
            spare_rings: Vec::with_capacity(2 * n),
            tw_recyclable: 0,
            tw_cursor: 0,
            stats: TcpStats::default(),
            prng,
            secret,
            now: Instant::ZERO,
            cfg,
        }
    }

    pub fn config(&self) -> &TcpConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Sockets per state, indexed by [`State::index`] (listeners count as LISTEN).
    pub fn connections_by_state(&self) -> [usize; 11] {
        let mut n = [0usize; 11];
        for &i in &self.active {
            let s = &self.slots[i as usize];
            match s.kind {
                SlotKind::Listener => n[State::Listen.index()] += 1,
                SlotKind::Conn => n[s.tcb.state.index()] += 1,
                SlotKind::Free => {}
            }
        }
        n
    }

    // ----- slots -----

    fn alloc_slot(&mut self, kind: SlotKind, opts: SocketOptions) -> Option<u32> {
        if self.free.is_empty() {
            self.recycle_time_wait();
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
    fn after_time_wait_change(&mut self, idx: u32) {
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
    fn recycle_time_wait(&mut self) -> bool {
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

    fn free_slot(&mut self, idx: u32) {
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

    fn handle(idx: u32) -> SocketHandle {
        SocketHandle::tcp(idx)
    }

    fn slot_of(&self, h: SocketHandle) -> Result<u32> {
        if h.kind != SocketKind::Tcp {
            return Err(Error::BadHandle);
        }
        match self.slots.get(h.index as usize) {
            Some(s) if s.kind != SlotKind::Free && s.user_open => Ok(h.index),
            _ => Err(Error::BadHandle),
        }
    }

    fn conn_slot(&self, h: SocketHandle) -> Result<u32> {
        let i = self.slot_of(h)?;
        if self.slots[i as usize].kind != SlotKind::Conn {
            return Err(Error::NotConnected);
        }
        Ok(i)
    }

    fn mark_tx(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if !s.in_tx_queue {
            s.in_tx_queue = true;
            self.tx_queue.push(idx);
        }
    }

    /// Records a connection's next timer after it sent: sending moves timers but never
    /// readiness (what the app can read or write, errors, shutdowns), so this is all
    /// `update_readiness` would find changed.
    fn update_deadline(&mut self, idx: u32) {
        let s = &self.slots[idx as usize];
        if s.kind == SlotKind::Conn {
            let d = s.tcb.deadline_micros();
            self.deadlines[s.active_pos] = d;
            self.next_timer = self.next_timer.min(d);
        }
    }

    /// Records what changed after the layer touched a socket: its next timer, and its
    /// readiness (queued for the host when it gained something).
    fn update_readiness(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if s.kind == SlotKind::Conn {
            let d = s.tcb.deadline_micros();
            self.deadlines[s.active_pos] = d;
            self.next_timer = self.next_timer.min(d);
        }
        if !s.user_open && s.kind != SlotKind::Listener {
            return;
        }
        let r = match s.kind {
            SlotKind::Conn => s.tcb.readiness(),
            SlotKind::Listener => {
                let l = s.listener.as_ref().expect("listener slot");
                if l.accept_queue.is_empty() {
                    Readiness::EMPTY
                } else {
                    Readiness::READABLE
                }
            }
            SlotKind::Free => return,
        };
        // Queue only readiness gained: epoll wakes on a socket becoming ready, and the
        // host re-reads the current readiness anyway. Losses just update the record.
        let gained = r.epoll_bits() & !s.last_ready.epoll_bits();
        s.last_ready = r;
        if gained != 0 {
            self.readiness.push(Self::handle(idx), r);
        }
    }

    /// A connection moved to CLOSED: leave the table; free the slot if nobody holds it.
    fn on_conn_closed(&mut self, idx: u32) {
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

    fn queue_control(&mut self, c: Control) {
        if self.control.len() >= self.cfg.control_queue {
            self.stats.drops_control_queue += 1;
        } else {
            self.control.push_back(c);
        }
    }

    /// The RST answering `seg` (RFC 9293 3.10.7.1), for a port with no socket.
    fn reset_for(&mut self, local: SocketAddrV4, remote: SocketAddrV4, seg: &TcpRepr) {
        if seg.rst() {
            return;
        }
        let c = if seg.has_ack() {
            Control::Rst {
                local,
                remote,
                seq: seg.ack,
                ack: None,
            }
        } else {
            Control::Rst {
                local,
                remote,
                seq: SeqNumber(0),
                ack: Some(seg.seq + seg.segment_len()),
            }
        };
        self.queue_control(c);
    }

    fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4) -> SeqNumber {
        // RFC 6528: M (a 4 µs clock) + F(4-tuple, secret).
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&local.ip().octets());
        b[4..6].copy_from_slice(&local.port().to_be_bytes());
        b[6..10].copy_from_slice(&remote.ip().octets());
        b[10..12].copy_from_slice(&remote.port().to_be_bytes());
        let f = siphash(self.secret[0], self.secret[1], &b) as u32;
        SeqNumber(((self.now.micros() / 4) as u32).wrapping_add(f))
    }

    /// Timestamp clock offset per address pair (as Linux): random to observers, but the
    /// same for every connection between two hosts, so a new connection's timestamps
    /// exceed an old TIME-WAIT's and it may reuse the 4-tuple.
    fn ts_offset(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&local.ip().octets());
        b[4..8].copy_from_slice(&remote.ip().octets());
        siphash(self.secret[0] ^ 0x7473, self.secret[1], &b) as u32
    }

    // ----- SYN cookies -----

    fn cookie_hash(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNumber,
        t: u32,
    ) -> u32 {
        let mut b = [0u8; 20];
        b[0..4].copy_from_slice(&local.ip().octets());
        b[4..6].copy_from_slice(&local.port().to_be_bytes());
        b[6..10].copy_from_slice(&remote.ip().octets());
        b[10..12].copy_from_slice(&remote.port().to_be_bytes());
        b[12..16].copy_from_slice(&peer_isn.0.to_be_bytes());
        b[16..20].copy_from_slice(&t.to_be_bytes());
        siphash(self.secret[1], self.secret[0] ^ 0x636f6f6b6965, &b) as u32
    }

    fn cookie_time(&self) -> u32 {
        (self.now.micros() / 64_000_000) as u32
    }

    /// Cookie ISN: 5 bits of time (64 s units), 3 bits of MSS index, 24 bits of MAC.
    fn make_cookie(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNumber,
        mss: u16,
    ) -> SeqNumber {
        let t = self.cookie_time();
        let idx = COOKIE_MSS.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        let mac = self.cookie_hash(local, remote, peer_isn, t) & 0x00ff_ffff;
        SeqNumber(((t & 0x1f) << 27) | (idx << 24) | mac)
    }

    /// Checks the cookie an ACK returns; gives the peer's MSS when it is ours and fresh.
    fn check_cookie(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr,
    ) -> Option<u16> {
        let cookie = (seg.ack - 1u32).0;
        let peer_isn = seg.seq - 1u32;
        let now_t = self.cookie_time();
        for age in 0..2u32 {
            let t = now_t.wrapping_sub(age);
            if t & 0x1f != cookie >> 27 {
                continue;
            }
            let mac = self.cookie_hash(local, remote, peer_isn, t) & 0x00ff_ffff;
            if mac == cookie & 0x00ff_ffff {
                return Some(COOKIE_MSS[((cookie >> 24) & 7) as usize]);
            }
        }
        None
    }

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

    fn conn_input(&mut self, idx: u32, seg: &TcpRepr, payload: &[u8]) {
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
    fn enqueue_accept(&mut self, idx: u32) {
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
    fn release_deferred(&mut self, idx: u32) {
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

    fn listen_input(
        &mut self,
        lidx: u32,
        local: SocketAddrV4,
        remote: SocketAddrV4,
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
        if pending >= backlog || (self.free.is_empty() && !self.recycle_time_wait()) {
            if !self.cfg.syn_cookies {
                self.stats.drops_listen_overflow += 1;
                return;
            }
            // Stateless answer: everything we need later is in the cookie (and in the
            // low bits of our timestamp: peer window scale and SACK-permitted).
            let iss = self.make_cookie(local, remote, seg.seq, seg.mss.unwrap_or(536));
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

    fn conn_cfg(&self, opts: SocketOptions) -> TcpConfig {
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
        local: SocketAddrV4,
        remote: SocketAddrV4,
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

    // ----- output -----

    /// Emits everything due at `now`: control segments, expired timers' work, data and
    /// ACKs. Stops early when `out` refuses a packet; the rest goes on the next call.
    pub fn dispatch(&mut self, now: Instant, out: &mut dyn IpTx) {
        self.now = now;
        while let Some(c) = self.control.front().copied() {
            if !self.emit_control(now, c, out) {
                return;
            }
            self.control.pop_front();
        }
        // Timers (only when one may be due; the scan also finds the next one).
        if self.next_timer <= now.micros() {
            self.run_timers(now);
        }
        self.output(now, out);
    }

    /// Runs every timer that is due at `now`, then records the next one.
    fn run_timers(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.active.len() {
            if self.deadlines[i] > now.micros() {
                i += 1;
                continue;
            }
            let idx = self.active[i];
            let s = &mut self.slots[idx as usize];
            if s.kind == SlotKind::Conn && s.tcb.next_deadline().is_some_and(|d| d <= now) {
                let was_synced = !matches!(
                    s.tcb.state,
                    State::SynSent | State::SynReceived | State::Closed
                );
                let ended = s.tcb.on_timers(now, &self.cfg, &mut self.stats);
                if ended {
                    let (local, remote, seq) = (s.tcb.local, s.tcb.remote, s.tcb.snd_max);
                    let timed_out = s.tcb.error == Some(Error::TimedOut);
                    if timed_out && was_synced && s.tcb.keepalive.is_some() {
                        // Keepalive failure tells the peer, as Linux does.
                        self.queue_control(Control::Rst {
                            local,
                            remote,
                            seq,
                            ack: None,
                        });
                    }
                    self.on_conn_closed(idx);
                    if self.active.get(i) != Some(&idx) {
                        continue; // freed: another slot moved into position i
                    }
                } else {
                    self.release_deferred(idx);
                    self.mark_tx(idx);
                }
                self.update_readiness(idx);
            } else {
                // Stale entry (the timer moved): refresh it.
                self.update_readiness(idx);
            }
            i += 1;
        }
        self.next_timer = self.deadlines.iter().copied().min().unwrap_or(u64::MAX);
    }

    /// Emits what the connections in the transmit queue have to send.
    fn output(&mut self, now: Instant, out: &mut dyn IpTx) {
        // In place: the connections that could not send (the IP layer refused a packet)
        // keep their order at the front; anything queued meanwhile stays behind them.
        let n = self.tx_queue.len();
        let mut kept = 0;
        let mut blocked = false;
        for k in 0..n {
            let idx = self.tx_queue[k];
            let s = &mut self.slots[idx as usize];
            if blocked {
                self.tx_queue[kept] = idx;
                kept += 1;
                continue;
            }
            s.in_tx_queue = false;
            if s.kind != SlotKind::Conn {
                continue;
            }
            if !s.tcb.output(now, out, &self.cfg, &mut self.stats) {
                blocked = true;
                s.in_tx_queue = true;
                self.tx_queue[kept] = idx;
                kept += 1;
            }
            self.update_deadline(idx);
        }
        if self.tx_queue.len() == n {
            self.tx_queue.truncate(kept);
        } else {
            self.tx_queue.drain(kept..n);
        }
    }

    fn emit_control(&mut self, now: Instant, c: Control, out: &mut dyn IpTx) -> bool {
        let (local, remote, repr) = match c {
            Control::Rst {
                local,
                remote,
                seq,
                ack,
            } => {
                let repr = TcpRepr {
                    src_port: local.port(),
                    dst_port: remote.port(),
                    seq,
                    ack: ack.unwrap_or(SeqNumber(0)),
                    flags: flags::RST | if ack.is_some() { flags::ACK } else { 0 },
                    ..TcpRepr::default()
                };
                (local, remote, repr)
            }
            Control::CookieSynAck {
                local,
                remote,
                iss,
                ack,
                window_scale,
                sack,
                timestamps,
                rcvbuf,
            } => {
                let path = out.max_segment(*remote.ip()).saturating_sub(20).min(65535) as u16;
                let repr = TcpRepr {
                    src_port: local.port(),
                    dst_port: remote.port(),
                    seq: iss,
                    ack,
                    flags: flags::SYN | flags::ACK,
                    window: rcvbuf.min(65535) as u16,
                    mss: Some(path.min(self.cfg.mss)),
                    window_scale,
                    sack_permitted: sack,
                    timestamps,
                    ..TcpRepr::default()
                };
                (local, remote, repr)
            }
        };
        let _ = now;
        let len = repr.header_len();
        let ok = out.send(
            *local.ip(),
            *remote.ip(),
            IpProtocol::Tcp,
            len,
            &mut |b: &mut [u8]| {
                repr.emit(b);
            },
        );
        if ok {
            self.stats.segments_out += 1;
            if repr.rst() {
                self.stats.resets_sent += 1;
            }
        } else {
            self.stats.tx_blocked += 1;
        }
        ok
    }

    /// When `dispatch` should next run: now if anything is queued, else the earliest timer.
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.control.is_empty() || !self.tx_queue.is_empty() {
            return Some(self.now);
        }
        // Exact after a dispatch; between dispatches possibly early, never late.
        let best = self.next_timer;
        (best != u64::MAX).then_some(Instant(best))
    }

    // ----- socket API -----

    /// Listens on `local` (IP 0.0.0.0 = every address) with default options.
    /// Whether a listener would take a SYN to `local` (bound to its address or to any).
    pub fn has_listener(&self, local: SocketAddrV4) -> bool {
        self.listeners
            .contains_key(&(u32::from(*local.ip()), local.port()))
            || self.listeners.contains_key(&(0, local.port()))
    }

    pub fn listen(&mut self, local: SocketAddrV4, backlog: usize) -> Result<SocketHandle> {
        let opts = self.cfg.default_options();
        self.listen_with(local, backlog, opts)
    }

    /// Listens with options that accepted connections inherit.
    pub fn listen_with(
        &mut self,
        local: SocketAddrV4,
        backlog: usize,
        opts: SocketOptions,
    ) -> Result<SocketHandle> {
        if local.port() == 0 {
            return Err(Error::InvalidInput);
        }
        let key = (u32::from(*local.ip()), local.port());
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

    /// Starts an active open from `local` (a concrete address of this host; port 0
    /// picks an ephemeral port) to `remote`. The handle becomes writable once
    /// established; failures show as an error ([`TcpLayer::take_error`]).
    pub fn connect(&mut self, local: SocketAddrV4, remote: SocketAddrV4) -> Result<SocketHandle> {
        let opts = self.cfg.default_options();
        self.connect_with(local, remote, opts)
    }

    pub fn connect_with(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        opts: SocketOptions,
    ) -> Result<SocketHandle> {
        if local.ip().is_unspecified() {
            return Err(Error::AddrNotAvailable);
        }
        if remote.port() == 0
            || remote.ip().is_unspecified()
            || remote.ip().is_broadcast()
            || remote.ip().is_multicast()
        {
            return Err(Error::InvalidInput);
        }
        let local = if local.port() == 0 {
            SocketAddrV4::new(*local.ip(), self.ephemeral_port(local, remote)?)
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

    fn ephemeral_port(&mut self, local: SocketAddrV4, remote: SocketAddrV4) -> Result<u16> {
        let (lo, hi) = self.cfg.ephemeral_ports;
        if lo == 0 || lo > hi {
            return Err(Error::AddrNotAvailable);
        }
        let n = (hi - lo) as u64 + 1;
        let start = self.prng.below(n);
        for k in 0..n {
            let port = lo + ((start + k) % n) as u16;
            let l = SocketAddrV4::new(*local.ip(), port);
            if self.conns.contains_key(&conn_key(l, remote))
                || self.listeners.contains_key(&(u32::from(*local.ip()), port))
                || self.listeners.contains_key(&(0, port))
            {
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

    fn recv_inner(&mut self, h: SocketHandle, buf: &mut [u8], peek: bool) -> Result<usize> {
        let idx = self.conn_slot(h)?;
        let t = &mut self.slots[idx as usize].tcb;
        if !t.recv_buf.is_empty() {
            if buf.is_empty() {
                return Ok(0);
            }
            let n = if peek {
                t.recv_buf.peek_at(0, buf)
            } else {
                t.recv_buf.read(buf)
            };
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
    fn reset_conn(&mut self, idx: u32) {
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

    fn close_listener(&mut self, idx: u32) {
        let l = self.slots[idx as usize].listener.take().expect("listener");
        self.listeners
            .remove(&(u32::from(*l.addr.ip()), l.addr.port()));
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

    /// Current readiness (empty for an unknown handle).
    pub fn readiness(&self, h: SocketHandle) -> Readiness {
        let Ok(idx) = self.slot_of(h) else {
            return Readiness::EMPTY;
        };
        let s = &self.slots[idx as usize];
        match s.kind {
            SlotKind::Conn => s.tcb.readiness(),
            SlotKind::Listener => {
                if s.listener
                    .as_ref()
                    .is_some_and(|l| !l.accept_queue.is_empty())
                {
                    Readiness::READABLE
                } else {
                    Readiness::EMPTY
                }
            }
            SlotKind::Free => Readiness::EMPTY,
        }
    }

    /// Calls `f` for every handle that gained readiness (became readable, writable,
    /// errored or hung up) since the last drain. Losing readiness is not reported: a
    /// host re-reads [`TcpLayer::readiness`] when it acts, as epoll does.
    pub fn drain_changed(&mut self, mut f: impl FnMut(SocketHandle)) {
        while let Some(c) = self.readiness.pop() {
            f(c.handle);
        }
    }

    /// The queue behind [`TcpLayer::drain_changed`], with the readiness recorded.
    pub fn readiness_queue(&mut self) -> &mut ReadinessQueue {
        &mut self.readiness
    }

    pub fn local_addr(&self, h: SocketHandle) -> Result<SocketAddrV4> {
        let idx = self.slot_of(h)?;
        Ok(self.slots[idx as usize].tcb.local)
    }

    pub fn peer_addr(&self, h: SocketHandle) -> Result<SocketAddrV4> {
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

#[cfg(test)]
mod size_tests {
    #[test]
    fn slot_size_is_modest() {
        let n = core::mem::size_of::<super::Slot>();
        eprintln!("slot {n} bytes, tcb {}", core::mem::size_of::<super::Tcb>());
        assert!(n < 1536, "{n}");
    }
}

#[cfg(test)]
mod time_wait_tests {
    use super::*;
    use crate::sim::{LinkConfig, TcpPair};

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

#[cfg(test)]
mod timer_tests {
    use super::*;
    use crate::sim::{LinkConfig, TcpPair};

    /// `next_timer` may run early but never late: no connection's timer is earlier.
    fn check(t: &TcpLayer) {
        let exact = t
            .active
            .iter()
            .filter(|&&i| t.slots[i as usize].kind == SlotKind::Conn)
            .map(|&i| t.slots[i as usize].tcb.deadline_micros())
            .min()
            .unwrap_or(u64::MAX);
        assert!(t.next_timer <= exact, "{} > {exact}", t.next_timer);
    }

    #[test]
    fn the_timer_hint_is_never_late_under_loss() {
        let cfg = TcpConfig {
            max_sockets: 64,
            rcvbuf: 32 * 1024,
            sndbuf: 32 * 1024,
            ..TcpConfig::default()
        };
        let mut p = TcpPair::new(cfg, LinkConfig::lossy(0.05), 11);
        let l = p.b.listen(TcpPair::addr_b(80), 16).unwrap();
        let data = vec![7u8; 200_000];
        let mut conns = Vec::new();
        for _ in 0..8 {
            conns.push(
                p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(80))
                    .unwrap(),
            );
        }
        let mut server = Vec::new();
        let mut sent = [0usize; 8];
        let mut got = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        let limit = p.now + Duration::from_secs(600);
        assert!(p.run_until(limit, |p| {
            check(&p.a);
            check(&p.b);
            while let Ok(s) = p.b.accept(l) {
                server.push(s);
            }
            for (k, &c) in conns.iter().enumerate() {
                if sent[k] < data.len() {
                    if let Ok(n) = p.a.send(c, &data[sent[k]..]) {
                        sent[k] += n;
                    }
                }
            }
            for &s in &server {
                while let Ok(n) = p.b.recv(s, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
            got == 8 * data.len()
        }));
        assert!(p.a.stats().timeouts + p.a.stats().fast_retransmits > 0);
    }
}
