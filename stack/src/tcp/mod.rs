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
//! - this file: the layer's data (the slot pool, the tables, the queues) and its
//!   construction. What the layer does with it, by seam:
//!   - `demux.rs`: input, a segment to its connection or listener, TIME-WAIT reuse,
//!     RSTs for closed ports;
//!   - `listen.rs`: listeners, the SYN and accept queues, SYN cookies when full;
//!   - `cookies.rs`: RFC 6528 ISNs, timestamp offsets and the cookies themselves;
//!   - `output.rs`: control segments, timers, the transmit queue, `poll_at`;
//!   - `slots.rs`: the socket pool, buffer reuse, TIME-WAIT recycling;
//!   - `readiness.rs`: readiness recorded and queued for the host;
//!   - `api.rs`: the connection calls (connect, send, recv, close, options);
//!   - `config.rs`, `stats.rs`: configuration and options; counters.
//! - `export.rs`: a connection's whole state as plain data, and back.
//!
//! Not implemented: ECN, urgent data (URG is ignored; the bytes are ordinary data),
//! RFC 7323 RTT measurement from timestamps (Karn's timed segment is used), ICMP
//! errors (PMTU, unreachable), TCP Fast Open, lingering close that blocks (the shim's
//! job; only `SO_LINGER` 0 changes the stack's behaviour).

mod api;
pub mod cc;
mod config;
mod conn;
mod cookies;
mod demux;
mod export;
pub mod hash;
mod info;
mod listen;
mod output;
mod readiness;
mod ring;
mod rtt;
mod sack;
mod slots;
mod state_codec;
mod stats;

use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};

pub use api::ConnectionInfo;
pub use cc::CongestionAlgorithm;
pub use config::{Keepalive, Shutdown, SocketOptions, TcpConfig};
use conn::Tcb;
pub use conn::{MoveProbe, State};
pub(crate) use demux::endpoint;
use demux::{conn_key, ConnKey, FxBuild};
pub use export::ConnectionState;
use hash::Prng;
pub use info::{CongestionState, TcpInfo};
use ring::Ring;
pub use stats::TcpStats;

use crate::socket::{Readiness, ReadinessQueue, SocketHandle};
use crate::time::Instant;
use crate::wire::tcp::SeqNumber;

/// A segment the layer emits without a connection: RSTs and cookie SYN-ACKs.
#[derive(Clone, Copy, Debug)]
enum Control {
    Rst {
        local: SocketAddr,
        remote: SocketAddr,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
    },
    CookieSynAck {
        local: SocketAddr,
        remote: SocketAddr,
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
    addr: SocketAddr,
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
    /// The slot of the last connection `receive` found (see `lookup_conn`).
    last_conn: u32,
    /// Listeners by (address key, port): see `demux::ip_key`.
    listeners: HashMap<(u128, u16), u32, FxBuild>,
    control: VecDeque<Control>,
    tx_queue: Vec<u32>,
    readiness: ReadinessQueue,
    /// Handshakes begun since the host last asked (`take_handshakes`), when it asked
    /// to be told (`record_handshakes`); at most `HANDSHAKE_LOG` are kept.
    handshakes: Option<Vec<SocketHandle>>,
    /// SYNs of new connections the full pool could not take, by (local, remote), for
    /// the host (`overflow_to_host`); at most `OVERFLOW_LOG` are kept.
    overflow: Vec<(SocketAddr, SocketAddr)>,
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
        // The pool's memory is reserved, not touched: slots are made as connections
        // need them (`alloc_slot`). Filling all of them here cost every new stack
        // (a forking server's child, once per connection) ~12 MB of page faults.
        let slots = Vec::with_capacity(n);
        TcpLayer {
            slots,
            free: Vec::with_capacity(n),
            active: Vec::with_capacity(n),
            deadlines: Vec::with_capacity(n),
            next_timer: u64::MAX,
            conns: HashMap::with_capacity_and_hasher(2 * n, FxBuild::default()),
            last_conn: 0,
            listeners: HashMap::with_capacity_and_hasher(64, FxBuild::default()),
            control: VecDeque::with_capacity(cfg.control_queue),
            tx_queue: Vec::with_capacity(n),
            readiness: ReadinessQueue::with_capacity(n),
            handshakes: None,
            overflow: Vec::new(),
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
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn slot_size_is_modest() {
        let n = core::mem::size_of::<super::Slot>();
        eprintln!("slot {n} bytes, tcb {}", core::mem::size_of::<super::Tcb>());
        assert!(n < 1536, "{n}");
    }

    /// A new layer touches no slot memory (a forked child's fresh stack paid for all
    /// 8192 up front); slots are made one per socket, and a closed one is reused
    /// before another is made.
    #[test]
    fn slots_are_made_as_sockets_need_them() {
        use super::{TcpConfig, TcpLayer};
        use std::net::SocketAddr;
        let cfg = TcpConfig {
            max_sockets: 8192,
            ..TcpConfig::default()
        };
        let mut t = TcpLayer::new(cfg, 7);
        assert_eq!(t.slots.len(), 0);
        assert!(t.slots.capacity() >= 8192);
        let at = |p| SocketAddr::new([10, 0, 0, 1].into(), p);
        let a = t.listen(at(80), 16).unwrap();
        let b = t.listen(at(81), 16).unwrap();
        assert_eq!(t.slots.len(), 2);
        t.close(a).unwrap();
        let c = t.listen(at(82), 16).unwrap();
        assert_eq!(t.slots.len(), 2, "the closed listener's slot is reused");
        assert_ne!(b, c);
    }
}
