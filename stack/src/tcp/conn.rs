//! One connection's transmission control block: the RFC 9293 state machine for a
//! synchronizing or synchronized connection, loss recovery and timers. The layer
//! ([`super::TcpLayer`]) finds the connection, handles LISTEN and closed ports, and owns
//! the socket table; this file only knows its own connection.

use core::net::SocketAddr;

use super::cc::Congestion;
use super::ring::{Assembler, Ring};
use super::rtt::RttEstimator;
use super::sack::Scoreboard;
use super::{Keepalive, TcpConfig, TcpStats};
use crate::error::Error;
use crate::ip_tx::{IpProtocol, IpTx};
use crate::socket::Readiness;
use crate::time::{Duration, Instant};
use crate::wire::tcp::{flags, SackBlocks, SeqNumber, TcpRepr};

/// RFC 9293 connection states (LISTEN lives in the layer's listener table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];
    pub fn index(self) -> usize {
        State::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }
    /// States in which our side may still send data.
    fn can_send_data(self) -> bool {
        matches!(
            self,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        )
    }
    /// The peer's FIN has been received.
    pub fn fin_received(self) -> bool {
        matches!(
            self,
            State::CloseWait | State::Closing | State::LastAck | State::TimeWait
        )
    }
}

/// Fast-recovery bookkeeping (RFC 6675 / RFC 6582).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Recovery ends when SND.UNA passes this (the highest sequence sent on entry).
    pub recover: SeqNumber,
    /// The highest sequence retransmitted in this recovery.
    pub high_rxt: SeqNumber,
}

/// What the layer must do after a segment was processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Answer with a RST (unsynchronized or bad-ACK cases): `(seq, ack)`.
    Reset(SeqNumber, Option<SeqNumber>),
    /// A passive open completed (SYN-RECEIVED → ESTABLISHED): queue for accept.
    Established,
    /// The connection ended (moved to CLOSED).
    Closed,
}

/// Which side of a move a connection is on (see [`Tcb::probe_peer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveProbe {
    /// Just imported: the holder before may have missed what the peer said last.
    Arrived,
    /// Exported right after: the next holder (the kernel) knows only the state.
    Leaving,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanSource {
    Normal,
    Retransmit,
    /// A retransmission a move asked for (`probe_peer`), not a loss.
    MoveProbe,
    Probe,
    Keepalive,
    WindowUpdate,
}

/// What [`Tcb::output`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing due any more.
    Done,
    /// The IP layer refused a packet: retry at the next dispatch.
    Blocked,
    /// The burst was used up with more to send: the connection goes again after the
    /// others in the transmit queue.
    MoreDue,
}

#[derive(Clone, Copy, Debug)]
struct SegPlan {
    source: PlanSource,
    seq: SeqNumber,
    len: u32,
    syn: bool,
    fin: bool,
    /// Advance SND.NXT past this segment (false for hole retransmits and probes).
    advance: bool,
}

/// Per-connection counters and times, for TCP_INFO ([`super::TcpInfo`]). Names and
/// meanings follow Linux's `struct tcp_info` (RFC 4898's where Linux uses those).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    pub segs_in: u32,
    pub segs_out: u32,
    /// Segments carrying payload (retransmissions included).
    pub data_segs_in: u32,
    pub data_segs_out: u32,
    /// Segments sent again (SYN and FIN included), as `TcpStats::retransmits` counts them.
    pub total_retrans: u32,
    /// Retransmission-timer expiries.
    pub total_rto: u32,
    /// SND.UNA's advance (the SYN counts, as in Linux).
    pub bytes_acked: u64,
    /// RCV.NXT's advance after the handshake (data, and the FIN, as in Linux).
    pub bytes_received: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    /// Segments that arrived out of order.
    pub rcv_ooopack: u32,
    /// Largest payload received in one segment.
    pub rcv_mss: u32,
    /// Smallest RTT sample, microseconds (0: none yet).
    pub min_rtt: u64,
    /// Bytes acknowledged over the last timed round trip, and its length in
    /// microseconds: the delivery rate, divided out only when asked for (a division
    /// per acknowledgment costs a request/response exchange more than its bookkeeping).
    pub rate_delivered: u64,
    pub rate_interval: u64,
    /// Time with data in flight, microseconds, and since when data has been in flight.
    pub busy_time: u64,
    pub busy_since: Option<Instant>,
    pub last_data_sent: Instant,
    pub last_data_recv: Instant,
    pub last_ack_recv: Instant,
    /// `bytes_acked` when the segment being timed was sent (for `delivery_rate`).
    pub rtt_delivered: u64,
    /// In loss recovery after a retransmission timeout (until SND.UNA passes the
    /// data outstanding when it fired).
    pub in_loss: bool,
}

/// The transmission control block.
#[derive(Debug)]
pub struct Tcb {
    pub state: State,
    pub local: SocketAddr,
    pub remote: SocketAddr,

    pub iss: SeqNumber,
    pub snd_una: SeqNumber,
    pub snd_nxt: SeqNumber,
    /// Highest sequence sent + 1 (SND.NXT goes back to SND.UNA on timeout; this does not).
    pub snd_max: SeqNumber,
    /// Peer's window in bytes (already scaled).
    pub snd_wnd: u32,
    pub snd_wl1: SeqNumber,
    pub snd_wl2: SeqNumber,
    pub max_snd_wnd: u32,
    /// Shift applied to windows the peer sends / we send.
    pub snd_wscale: u8,
    pub rcv_wscale: u8,

    pub irs: SeqNumber,
    pub rcv_nxt: SeqNumber,
    /// Right edge of the window last advertised.
    pub rcv_adv: SeqNumber,

    /// Largest payload+options per segment we may send (min of the peer's MSS and ours).
    pub smss: u32,
    pub peer_mss: u16,
    /// MSS we advertise (from the path MTU, capped by config).
    pub our_mss: u16,

    pub ts_ok: bool,
    pub ts_recent: u32,
    /// Our TSval is `now.millis() + ts_offset`.
    pub ts_offset: u32,
    pub sack_ok: bool,
    /// Window scaling offered/accepted (only meaningful before synchronization).
    pub ws_ok: bool,

    pub send_buf: Ring,
    pub recv_buf: Ring,
    pub ooo: Assembler,
    /// A FIN that arrived beyond a hole: its sequence number.
    pub fin_ooo: Option<SeqNumber>,
    /// Our side's FIN is queued (the app shut down writing).
    pub fin_queued: bool,
    /// ... and acknowledged.
    pub fin_acked: bool,
    /// The app shut down reading.
    pub rd_shut: bool,

    pub rtt: RttEstimator,
    pub rtt_seq: Option<(SeqNumber, Instant)>,
    pub backoff: u32,
    pub retries: u32,
    pub cc: Congestion,
    pub dupacks: u32,
    pub recovery: Option<Recovery>,
    /// After a timeout or recovery, duplicate ACKs below this start no new recovery.
    pub recover_guard: SeqNumber,
    pub rtx_pending: bool,
    /// The pending retransmission is a move's probe: counted apart from the
    /// retransmissions loss asks for (`TcpStats::move_probes`).
    pub move_probe: bool,
    pub scoreboard: Scoreboard,

    pub ack_now: bool,
    pub bytes_unacked: u32,
    pub probe_due: bool,
    /// About to leave this stack (exported right after): only the retransmission
    /// `probe_peer` asked for goes out, nothing the next holder would not know of.
    pub leaving: bool,
    /// A pure ACK at SND.MAX goes first, whatever else is due: the one segment the
    /// peer takes as a window update (a retransmission's sequence number is left of
    /// its SND.WL1).
    pub window_update_due: bool,
    pub keepalive_due: bool,
    pub ka_probes: u32,
    pub last_rcv: Instant,

    pub rto_at: Option<Instant>,
    pub delack_at: Option<Instant>,
    pub persist_at: Option<Instant>,
    pub persist_backoff: u32,
    /// TIME-WAIT end, or the FIN-WAIT-2 timeout of an orphan.
    pub close_at: Option<Instant>,

    pub nodelay: bool,
    pub keepalive: Option<Keepalive>,
    pub linger: Option<Duration>,
    /// Pending error for SO_ERROR / the next call (taken once).
    pub error: Option<Error>,
    /// The connection ended by reset or timeout (reads/writes fail after the error is taken).
    pub broken: bool,
    /// The app closed its handle: the connection finishes on its own, then is freed.
    pub orphan: bool,
    /// Listener slot that created this connection and awaits it in its queues.
    pub parent: Option<u32>,
    /// Passive open (a RST in SYN-RECEIVED returns quietly to LISTEN).
    pub passive: bool,
    pub challenge_acks: u32,
    pub challenge_window: Instant,
    pub counters: ConnCounters,
    pub user_timeout: Option<Duration>,
    /// IP_TOS / IPV6_TCLASS of its segments (from the socket's options).
    pub tos: u8,
    /// When the current run of retransmission timeouts started (the last progress).
    pub rto_streak_start: Instant,
    /// TCP_DEFER_ACCEPT: the connection waits for data before `accept` sees it
    /// (`defer_pending`), at most until `defer_until` (cleared when it passes).
    pub defer_pending: bool,
    pub defer_until: Option<Instant>,
}

/// The MSS to assume for a peer whose SYN carried none (RFC 9293 §3.7.1: 536 for
/// IPv4; 1220 for IPv6, whose minimum MTU is 1280, RFC 8200).
pub(super) fn default_mss(remote: SocketAddr) -> u16 {
    if remote.is_ipv4() {
        536
    } else {
        1220
    }
}

impl Tcb {
    pub fn new(cfg: &TcpConfig) -> Tcb {
        Tcb {
            state: State::Closed,
            local: SocketAddr::new([0, 0, 0, 0].into(), 0),
            remote: SocketAddr::new([0, 0, 0, 0].into(), 0),
            iss: SeqNumber(0),
            snd_una: SeqNumber(0),
            snd_nxt: SeqNumber(0),
            snd_max: SeqNumber(0),
            snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: SeqNumber(0),
            max_snd_wnd: 0,
            snd_wscale: 0,
            rcv_wscale: 0,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            smss: 536,
            peer_mss: 536,
            our_mss: cfg.mss,
            ts_ok: false,
            ts_recent: 0,
            ts_offset: 0,
            sack_ok: false,
            ws_ok: false,
            send_buf: Ring::new(cfg.sndbuf),
            recv_buf: Ring::new(cfg.rcvbuf),
            ooo: Assembler::default(),
            fin_ooo: None,
            fin_queued: false,
            fin_acked: false,
            rd_shut: false,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            rtt_seq: None,
            backoff: 0,
            retries: 0,
            cc: Congestion::new(cfg.congestion, 536),
            dupacks: 0,
            recovery: None,
            recover_guard: SeqNumber(0),
            rtx_pending: false,
            move_probe: false,
            scoreboard: Scoreboard::default(),
            ack_now: false,
            bytes_unacked: 0,
            probe_due: false,
            leaving: false,
            window_update_due: false,
            keepalive_due: false,
            ka_probes: 0,
            last_rcv: Instant::ZERO,
            rto_at: None,
            delack_at: None,
            persist_at: None,
            persist_backoff: 0,
            close_at: None,
            nodelay: false,
            keepalive: None,
            linger: None,
            error: None,
            broken: false,
            orphan: false,
            parent: None,
            passive: false,
            challenge_acks: 0,
            challenge_window: Instant::ZERO,
            counters: ConnCounters::default(),
            user_timeout: None,
            tos: 0,
            rto_streak_start: Instant::ZERO,
            defer_pending: false,
            defer_until: None,
        }
    }

    /// Resets every field for a new connection. The buffers come out without storage:
    /// the layer installs them from its pool (and took the old ones back before).
    pub fn reset(&mut self, cfg: &TcpConfig) {
        *self = Tcb::new_without_buffers(cfg);
    }

    /// Takes the per-socket options the connection itself acts on.
    pub fn take_options(&mut self, opts: &super::SocketOptions) {
        self.nodelay = opts.nodelay;
        self.keepalive = opts.keepalive;
        self.linger = opts.linger;
        self.user_timeout = opts.user_timeout;
        self.tos = opts.tos;
    }

    /// The receive window: the receive buffer's free space; in TIME-WAIT, whose buffers
    /// the layer took back, what was last advertised (so acceptability tests and the
    /// ACKs we still send see the same window as before).
    fn rcv_wnd(&self) -> u32 {
        if self.state == State::TimeWait {
            if self.rcv_adv > self.rcv_nxt {
                self.rcv_adv - self.rcv_nxt
            } else {
                0
            }
        } else {
            self.recv_buf.free() as u32
        }
    }

    /// The buffers can go back to the layer's pool: TIME-WAIT (everything we sent is
    /// acknowledged) with nothing left for the app to read. `orphan`: nobody will read.
    pub fn buffers_releasable(&self) -> bool {
        self.state == State::TimeWait
            && self.send_buf.capacity() + self.recv_buf.capacity() > 0
            && (self.recv_buf.is_empty() || self.orphan)
    }

    fn new_without_buffers(cfg: &TcpConfig) -> Tcb {
        let small = TcpConfig {
            sndbuf: 0,
            rcvbuf: 0,
            ..cfg.clone()
        };
        let mut t = Tcb::new(&small);
        t.our_mss = cfg.mss;
        t
    }

    fn recv_capacity(&self) -> usize {
        self.recv_buf.free() + self.recv_buf.len()
    }

    pub fn ts_now(&self, now: Instant) -> u32 {
        (now.millis() as u32).wrapping_add(self.ts_offset)
    }

    /// Payload bytes per full-sized segment (the MSS less the options every segment carries).
    pub fn payload_mss(&self) -> u32 {
        let opts = if self.ts_ok { 12 } else { 0 };
        self.smss.saturating_sub(opts).max(1)
    }

    /// Payload room in the next segment: less when it carries SACK blocks.
    fn segment_room(&self) -> u32 {
        let mut opts = if self.ts_ok { 12 } else { 0 };
        if self.sack_ok && !self.ooo.is_empty() {
            let max = if self.ts_ok { 3 } else { 4 };
            opts += 4 + 8 * self.ooo.ranges().len().min(max) as u32;
        }
        self.smss.saturating_sub(opts).max(1)
    }

    pub fn update_smss(&mut self) {
        self.smss = (self.peer_mss.min(self.our_mss) as u32).max(64);
        self.cc.set_mss(self.payload_mss());
    }

    fn flight(&self) -> u32 {
        self.snd_nxt - self.snd_una
    }

    /// Makes the next output a segment the peer answers at once: the first
    /// unacknowledged one again when data is in flight; on arrival also a zero-window
    /// probe when unsent data waits on a closed window, and an ACK with our window.
    /// The answer brings the peer's window and SACK blocks to a holder that has seen
    /// neither (a connection that moves). Returns whether a segment is due.
    pub fn probe_peer(&mut self, probe: MoveProbe) -> bool {
        if !self.state.can_send_data() {
            return false;
        }
        let in_flight = self.snd_una != self.snd_max;
        match probe {
            MoveProbe::Leaving => {
                self.leaving = true;
                self.rtx_pending = in_flight;
                self.move_probe = in_flight;
                in_flight
            }
            MoveProbe::Arrived => {
                if in_flight {
                    self.rtx_pending = true;
                    self.move_probe = true;
                } else if self.snd_wnd == 0 && !self.send_buf.is_empty() {
                    self.probe_due = true;
                }
                self.window_update_due = true;
                true
            }
        }
    }

    /// Bytes presumed in the network (RFC 6675 "pipe", simplified).
    #[inline]
    pub fn pipe(&self) -> u32 {
        let flight = self.flight();
        if self.sack_ok && !self.scoreboard.is_empty() {
            let high = self
                .scoreboard
                .high()
                .unwrap_or(self.snd_una)
                .max(self.snd_una);
            let above = if self.snd_nxt > high {
                self.snd_nxt - high
            } else {
                0
            };
            match self.recovery {
                Some(r) => {
                    above
                        + self
                            .scoreboard
                            .unsacked_between(self.snd_una, r.high_rxt.min(high))
                }
                None => flight.saturating_sub(self.scoreboard.sacked_bytes()),
            }
        } else if self.recovery.is_some() {
            // NewReno: each duplicate ACK means a segment left the network.
            (flight + self.payload_mss()).saturating_sub(self.dupacks * self.payload_mss())
        } else {
            flight
        }
    }

    /// The earliest timer, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let d = self.deadline_micros();
        (d != u64::MAX).then_some(Instant(d))
    }

    /// [`Tcb::next_deadline`] in microseconds, `u64::MAX` for none: a few branch-free
    /// minimums (this runs after every segment in and out).
    #[inline]
    pub fn deadline_micros(&self) -> u64 {
        let us = |t: Option<Instant>| t.map_or(u64::MAX, |t| t.micros());
        let d = us(self.rto_at)
            .min(us(self.delack_at))
            .min(us(self.persist_at))
            .min(us(self.close_at))
            .min(us(self.defer_until));
        if self.keepalive.is_some() {
            d.min(us(self.keepalive_deadline()))
        } else {
            d
        }
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        let ka = self.keepalive?;
        if !matches!(self.state, State::Established | State::CloseWait) {
            return None;
        }
        Some(if self.ka_probes == 0 {
            self.last_rcv + ka.idle
        } else {
            self.last_rcv + ka.idle + Duration(ka.interval.micros() * self.ka_probes as u64)
        })
    }

    /// Readable even with the receive buffer empty: end of stream (FIN received, read
    /// side shut, or the connection broken), as [`Tcb::readiness`] counts it.
    #[inline]
    pub fn readable_without_data(&self) -> bool {
        self.state.fin_received() || self.rd_shut || self.broken
    }

    /// Whether the send buffer has room enough to report writable: a third of it free
    /// (Linux's `sk_stream_is_writeable`: free >= queued / 2). A writer blocked on a
    /// full buffer then wakes once per third of a buffer, not once per ACK.
    #[inline]
    pub(crate) fn send_write_space(&self) -> bool {
        let free = self.send_buf.free();
        free > 0 && free >= self.send_buf.len() / 2
    }

    /// Readiness as poll/epoll would report it.
    pub fn readiness(&self) -> Readiness {
        let mut r = Readiness::EMPTY;
        let rcv_shut = self.readable_without_data();
        let snd_shut = self.fin_queued || self.broken;
        if !self.recv_buf.is_empty() || rcv_shut {
            r |= Readiness::READABLE;
        }
        if rcv_shut {
            r |= Readiness::READ_HANGUP;
        }
        match self.state {
            State::SynSent | State::SynReceived => {}
            _ if snd_shut => r |= Readiness::WRITABLE,
            State::Established | State::CloseWait if self.send_write_space() => {
                r |= Readiness::WRITABLE
            }
            _ => {}
        }
        if self.error.is_some() {
            r |= Readiness::ERROR;
        }
        if (rcv_shut && snd_shut) || (self.state == State::Closed && self.broken) {
            r |= Readiness::HANGUP;
        }
        r
    }

    fn set_closed(&mut self) {
        self.state = State::Closed;
        self.rto_at = None;
        self.delack_at = None;
        self.persist_at = None;
        self.close_at = None;
        self.ack_now = false;
        self.rtx_pending = false;
        self.move_probe = false;
        self.probe_due = false;
        self.keepalive_due = false;
    }

    /// Moves to CLOSED without an error (app-initiated teardown).
    pub fn set_closed_quietly(&mut self) {
        self.set_closed();
    }

    /// Ends the connection with an error the app will see (reset, timeout).
    pub fn fail(&mut self, err: Error) {
        self.error = Some(err);
        self.broken = true;
        self.set_closed();
    }

    fn enter_time_wait(&mut self, now: Instant, cfg: &TcpConfig) {
        self.state = State::TimeWait;
        self.rto_at = None;
        self.persist_at = None;
        self.close_at = Some(now + Duration(2 * cfg.msl.micros()));
    }

    fn challenge_ack(&mut self, now: Instant, cfg: &TcpConfig, stats: &mut TcpStats) {
        // RFC 5961 7: rate-limit challenge ACKs.
        if now.saturating_since(self.challenge_window) >= Duration::from_secs(1) {
            self.challenge_window = now;
            self.challenge_acks = 0;
        }
        if self.challenge_acks < cfg.challenge_ack_limit {
            self.challenge_acks += 1;
            self.ack_now = true;
            stats.challenge_acks += 1;
        }
    }

    /// Reads the peer's SYN options.
    pub fn take_syn_options(&mut self, seg: &TcpRepr, cfg: &TcpConfig) {
        self.peer_mss = seg.mss.unwrap_or(default_mss(self.remote)).max(64);
        match seg.window_scale {
            Some(ws) if cfg.window_scaling => {
                self.ws_ok = true;
                self.snd_wscale = ws;
                // Active open: keep the shift our SYN announced. Passive: pick it from
                // this socket's buffer (the SYN-ACK announces it).
                if self.state != State::SynSent {
                    self.rcv_wscale = window_shift_for(self.recv_capacity());
                }
            }
            _ => {
                self.ws_ok = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        self.sack_ok = seg.sack_permitted && cfg.sack;
        match seg.timestamps {
            Some((val, _)) if cfg.timestamps => {
                self.ts_ok = true;
                self.ts_recent = val;
            }
            _ => self.ts_ok = false,
        }
        self.update_smss();
    }

    /// Processes a segment for a connection in SYN-SENT or a synchronized state.
    pub fn on_segment(
        &mut self,
        now: Instant,
        seg: &TcpRepr,
        payload: &[u8],
        cfg: &TcpConfig,
        stats: &mut TcpStats,
    ) -> Verdict {
        let c = &mut self.counters;
        c.segs_in = c.segs_in.wrapping_add(1);
        if !payload.is_empty() {
            c.data_segs_in = c.data_segs_in.wrapping_add(1);
            c.last_data_recv = now;
            c.rcv_mss = c.rcv_mss.max(payload.len() as u32);
        }
        if seg.has_ack() {
            c.last_ack_recv = now;
        }
        match self.state {
            State::Closed | State::Listen => Verdict::Ok,
            State::SynSent => self.on_syn_sent(now, seg, cfg, stats),
            State::Established => {
                if self.fast_path(now, seg, payload, cfg) {
                    Verdict::Ok
                } else {
                    self.on_synchronized(now, seg, payload, cfg, stats)
                }
            }
            _ => self.on_synchronized(now, seg, payload, cfg, stats),
        }
    }

    /// Header prediction (after Van Jacobson / RFC 9293's "common case"): the next
    /// in-order segment of an established connection, with only ACK/PSH, no SACK, no recovery under way, and either new data or a new ACK. It
    /// gets the same treatment as the full path, minus the checks that cannot fire.
    /// Returns false (having changed nothing) when the segment is not such a segment.
    fn fast_path(&mut self, now: Instant, seg: &TcpRepr, payload: &[u8], cfg: &TcpConfig) -> bool {
        if seg.flags & !(flags::ACK | flags::PSH) != 0
            || seg.flags & flags::ACK == 0
            || seg.seq != self.rcv_nxt
            || !seg.sack.is_empty()
            || !self.ooo.is_empty()
            || self.recovery.is_some()
            || self.fin_ooo.is_some()
            || self.orphan
            || seg.ack < self.snd_una
            || seg.ack > self.snd_max
            || self.snd_nxt != self.snd_max
            || payload.len() > self.recv_buf.free()
            || self.snd_wl1 > seg.seq
        {
            return false;
        }
        let new_ack = seg.ack > self.snd_una;
        if !new_ack && payload.is_empty() {
            return false; // a duplicate ACK: the full path counts it
        }
        match (self.ts_ok, seg.timestamps) {
            (true, Some((val, _)))
                if self.ts_recent == 0 || (val.wrapping_sub(self.ts_recent) as i32) >= 0 =>
            {
                self.ts_recent = val;
            }
            (true, _) => return false,
            (false, _) => {}
        }
        self.last_rcv = now;
        self.ka_probes = 0;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        let wnd = (seg.window as u32) << self.snd_wscale;
        if wnd != self.snd_wnd {
            if self.snd_wnd == 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
        }
        if new_ack {
            let acked = seg.ack - self.snd_una;
            if self.fin_queued && seg.ack == self.fin_seq() + 1u32 {
                self.fin_acked = true;
            }
            let data_acked = acked.min(self.send_buf.len() as u32);
            self.send_buf.consume(data_acked as usize);
            self.snd_una = seg.ack;
            self.on_una_advanced(now, acked);
            self.snd_nxt = self.snd_nxt.max(self.snd_una);
            self.sample_rtt(now, seg.ack);
            self.backoff = 0;
            self.retries = 0;
            self.dupacks = 0;
            self.scoreboard.on_ack(seg.ack);
            let srtt = self.rtt.srtt;
            self.cc.on_ack(now, data_acked, srtt);
            self.rto_at = if self.snd_una == self.snd_max {
                None
            } else {
                Some(now + self.rtt.timeout(0))
            };
        }
        if !payload.is_empty() {
            self.receive_data(now, seg.seq, payload, cfg);
        }
        true
    }

    fn on_syn_sent(
        &mut self,
        now: Instant,
        seg: &TcpRepr,
        cfg: &TcpConfig,
        stats: &mut TcpStats,
    ) -> Verdict {
        if seg.has_ack() && (seg.ack <= self.iss || seg.ack > self.snd_max) {
            if seg.rst() {
                return Verdict::Ok;
            }
            stats.drops_bad_ack += 1;
            return Verdict::Reset(seg.ack, None);
        }
        if seg.rst() {
            if seg.has_ack() {
                stats.resets_received += 1;
                self.fail(Error::ConnectionRefused);
                return Verdict::Closed;
            }
            return Verdict::Ok;
        }
        if !seg.syn() {
            return Verdict::Ok;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1u32;
        self.take_syn_options(seg, cfg);
        self.last_rcv = now;
        if seg.has_ack() {
            let acked = seg.ack - self.snd_una;
            self.snd_una = seg.ack;
            self.on_una_advanced(now, acked);
            self.snd_wnd = seg.window as u32; // never scaled in a SYN
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.sample_rtt(now, seg.ack);
            self.backoff = 0;
            self.retries = 0;
            self.rto_at = None;
            self.state = State::Established;
            self.ack_now = true;
        } else {
            // Simultaneous open: answer with SYN-ACK from the same ISS.
            self.state = State::SynReceived;
            self.snd_nxt = self.iss;
            self.rto_at = None;
            self.ack_now = true;
        }
        Verdict::Ok
    }

    fn sample_rtt(&mut self, now: Instant, ack: SeqNumber) {
        if let Some((seq, sent)) = self.rtt_seq {
            if ack > seq {
                let rtt = now.saturating_since(sent).micros().max(1);
                self.rtt.sample(Duration(rtt));
                self.rtt_seq = None;
                let c = &mut self.counters;
                if c.min_rtt == 0 || rtt < c.min_rtt {
                    c.min_rtt = rtt;
                }
                c.rate_delivered = c.bytes_acked - c.rtt_delivered;
                c.rate_interval = rtt;
            }
        }
    }

    fn on_synchronized(
        &mut self,
        now: Instant,
        seg: &TcpRepr,
        payload: &[u8],
        cfg: &TcpConfig,
        stats: &mut TcpStats,
    ) -> Verdict {
        // A SYN at IRS repeats the one already taken (a retransmitted SYN, or the peer's
        // SYN-ACK in a simultaneous open): trim it off, as RFC 9293 3.10.7.4 trims
        // old data, and process the rest; answer so a lost ACK/SYN-ACK is repeated.
        let trimmed;
        let seg = if seg.syn() && seg.seq == self.irs && !seg.rst() {
            self.ack_now = true;
            trimmed = TcpRepr {
                flags: seg.flags & !flags::SYN,
                seq: seg.seq + 1u32,
                ..*seg
            };
            &trimmed
        } else {
            seg
        };
        let seg_len = seg.segment_len();
        // PAWS (RFC 7323 5.3). TS.Recent 0 is unknown (a connection read out of the
        // kernel, which does not tell it): the next segment sets it.
        if self.ts_ok && !seg.rst() && self.ts_recent != 0 {
            if let Some((val, _)) = seg.timestamps {
                if (val.wrapping_sub(self.ts_recent) as i32) < 0 {
                    stats.drops_paws += 1;
                    self.ack_now = true;
                    return Verdict::Ok;
                }
            }
        }
        // SYN in a synchronized state, whatever its sequence number (RFC 5961 4.2).
        if seg.syn() && !seg.rst() {
            self.challenge_ack(now, cfg, stats);
            return Verdict::Ok;
        }
        // Acceptability (RFC 9293 3.10.7.4, first check).
        let rcv_wnd = self.rcv_wnd();
        let in_window = |s: SeqNumber| s >= self.rcv_nxt && s < self.rcv_nxt + rcv_wnd;
        let acceptable = match (seg_len, rcv_wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            (0, _) => in_window(seg.seq),
            (_, 0) => false,
            (n, _) => in_window(seg.seq) || in_window(seg.seq + (n - 1)),
        };
        // A window probe or data the window cannot take still carries a usable ACK.
        let ack_only = !acceptable && seg.seq == self.rcv_nxt && rcv_wnd == 0;
        if !acceptable {
            if seg.rst() {
                return Verdict::Ok;
            }
            if self.state == State::TimeWait && seg.fin() {
                self.close_at = Some(now + Duration(2 * cfg.msl.micros()));
            }
            self.ack_now = true;
            if !ack_only {
                stats.drops_out_of_window += 1;
                return Verdict::Ok;
            }
        }
        // RST (RFC 5961 3.2).
        if seg.rst() {
            if seg.seq != self.rcv_nxt {
                self.challenge_ack(now, cfg, stats);
                return Verdict::Ok;
            }
            stats.resets_received += 1;
            match self.state {
                State::SynReceived if self.passive => self.set_closed(),
                State::SynReceived => self.fail(Error::ConnectionRefused),
                State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait => {
                    self.fail(Error::ConnectionReset)
                }
                _ => {
                    self.broken = true;
                    self.set_closed()
                }
            }
            return Verdict::Closed;
        }
        // SYN in a synchronized state (RFC 5961 4.2).
        if !seg.has_ack() {
            return Verdict::Ok;
        }
        self.last_rcv = now;
        self.ka_probes = 0;
        let mut verdict = Verdict::Ok;
        // ACK (RFC 5961 5.2 acceptability first).
        if seg.ack > self.snd_max {
            self.challenge_ack(now, cfg, stats);
            stats.drops_bad_ack += 1;
            return Verdict::Ok;
        }
        if seg.ack < self.snd_una - self.max_snd_wnd.max(1) {
            self.challenge_ack(now, cfg, stats);
            stats.drops_bad_ack += 1;
            return Verdict::Ok;
        }
        if self.ts_ok && acceptable {
            if let Some((val, _)) = seg.timestamps {
                let newer = self.ts_recent == 0 || (val.wrapping_sub(self.ts_recent) as i32) >= 0;
                if seg.seq <= self.rcv_nxt && newer {
                    self.ts_recent = val;
                }
            }
        }
        if self.state == State::SynReceived {
            if seg.ack <= self.snd_una {
                return Verdict::Reset(seg.ack, None);
            }
            self.state = State::Established;
            // Linux counts the SYN in bytes_acked only on the side that opened.
            let acked = (seg.ack - self.snd_una).saturating_sub(self.passive as u32);
            self.snd_una = seg.ack;
            self.on_una_advanced(now, acked);
            self.snd_nxt = self.snd_nxt.max(self.snd_una);
            self.snd_wnd = (seg.window as u32) << self.snd_wscale;
            self.max_snd_wnd = self.snd_wnd;
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.sample_rtt(now, seg.ack);
            self.backoff = 0;
            self.retries = 0;
            self.rto_at = None;
            verdict = Verdict::Established;
        } else {
            self.process_ack(now, seg, payload.is_empty(), stats);
        }
        // Our FIN acknowledged?
        let fin_acked = self.fin_acked;
        match self.state {
            State::FinWait1 if fin_acked => {
                self.state = State::FinWait2;
                if self.orphan {
                    self.close_at = Some(now + cfg.fin_wait2_timeout);
                }
            }
            State::Closing if fin_acked => self.enter_time_wait(now, cfg),
            State::LastAck if fin_acked => {
                self.set_closed();
                return Verdict::Closed;
            }
            _ => {}
        }
        if ack_only {
            return verdict;
        }
        // Data.
        if !payload.is_empty() {
            if matches!(
                self.state,
                State::Established | State::FinWait1 | State::FinWait2
            ) {
                if self.orphan {
                    // Nobody will read it: RFC 9293 3.10.7.4 / Linux answer with RST.
                    self.fail(Error::ConnectionReset);
                    return Verdict::Reset(self.snd_max, None);
                }
                self.receive_data(now, seg.seq, payload, cfg);
            } else {
                self.ack_now = true;
            }
        }
        // FIN.
        if seg.fin() {
            let fin_seq = seg.seq + payload.len();
            if fin_seq == self.rcv_nxt {
                self.receive_fin(now, cfg);
            } else if fin_seq > self.rcv_nxt {
                self.fin_ooo = Some(fin_seq);
                self.ack_now = true;
            }
        }
        if self.fin_ooo == Some(self.rcv_nxt) {
            self.receive_fin(now, cfg);
        }
        verdict
    }

    /// Bookkeeping for TCP_INFO after SND.UNA moved forward by `acked` (call with
    /// SND.UNA already updated).
    #[inline]
    fn on_una_advanced(&mut self, now: Instant, acked: u32) {
        let c = &mut self.counters;
        c.bytes_acked += acked as u64;
        if self.snd_una >= self.snd_max {
            if let Some(since) = c.busy_since.take() {
                c.busy_time += now.saturating_since(since).micros();
            }
        }
        if c.in_loss && self.snd_una >= self.recover_guard {
            c.in_loss = false;
        }
    }

    pub fn fin_seq(&self) -> SeqNumber {
        self.snd_una + self.send_buf.len()
    }

    fn process_ack(&mut self, now: Instant, seg: &TcpRepr, no_payload: bool, stats: &mut TcpStats) {
        let ack = seg.ack;
        let wnd = (seg.window as u32) << self.snd_wscale;
        // RFC 6675 2: with SACK, a duplicate ACK counts only if it brings new SACK
        // information (an ACK for a duplicate segment, e.g. after a spurious timeout,
        // says nothing about loss).
        let mut new_sack_info = !self.sack_ok;
        if self.sack_ok && !seg.sack.is_empty() {
            let before = self.scoreboard.sacked_bytes();
            for &(l, r) in seg.sack.as_slice() {
                self.scoreboard.add(self.snd_una, self.snd_max, l, r);
            }
            new_sack_info = self.scoreboard.sacked_bytes() != before;
        }
        let window_changed = wnd != self.snd_wnd;
        if ack > self.snd_una {
            let acked = ack - self.snd_una;
            if self.fin_queued && ack == self.fin_seq() + 1u32 {
                self.fin_acked = true;
            }
            let data_acked = acked.min(self.send_buf.len() as u32);
            self.send_buf.consume(data_acked as usize);
            self.snd_una = ack;
            self.on_una_advanced(now, acked);
            if self.snd_nxt < self.snd_una {
                self.snd_nxt = self.snd_una;
            }
            self.sample_rtt(now, ack);
            self.backoff = 0;
            self.retries = 0;
            self.scoreboard.on_ack(ack);
            match self.recovery {
                Some(r) if ack >= r.recover => {
                    self.recovery = None;
                    self.cc.cwnd = self.cc.ssthresh.max(self.cc.mss);
                    self.dupacks = 0;
                }
                Some(_) => {
                    // Partial ACK: retransmit the next hole at once (RFC 6582 3.2 step 5).
                    // With SACK the scoreboard names the holes; without it, NewReno
                    // retransmits the segment at the new SND.UNA.
                    if !self.sack_ok {
                        self.rtx_pending = true;
                        self.move_probe = false;
                    }
                    self.dupacks = 0;
                }
                None => {
                    self.dupacks = 0;
                    let srtt = self.rtt.srtt;
                    self.cc.on_ack(now, data_acked, srtt);
                }
            }
            self.rto_at = if self.snd_una == self.snd_max {
                None
            } else {
                Some(now + self.rtt.timeout(0))
            };
        } else if ack == self.snd_una
            && no_payload
            && !seg.fin()
            && !window_changed
            && self.snd_una < self.snd_max
            && new_sack_info
        {
            self.dupacks += 1;
        }
        // Window update (RFC 9293 3.10.7.4, SND.WL1/WL2 rule).
        if self.snd_wl1 < seg.seq || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack) {
            let was_zero = self.snd_wnd == 0;
            self.snd_wnd = wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            if wnd > 0 && was_zero {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
        }
        // Enter loss recovery (RFC 6675 5 / RFC 6582 3.2 step 2).
        if self.recovery.is_none()
            && self.snd_una < self.snd_max
            && self.snd_una >= self.recover_guard
        {
            let lost_by_sack = self.sack_ok
                && self.scoreboard.sacked_bytes() >= 3 * self.payload_mss()
                && self.scoreboard.next_hole(self.snd_una).is_some();
            if self.dupacks >= 3 || lost_by_sack {
                let flight = self.flight();
                self.cc.on_congestion(flight);
                self.recovery = Some(Recovery {
                    recover: self.snd_max,
                    high_rxt: self.snd_una,
                });
                self.recover_guard = self.snd_max;
                self.rtx_pending = true;
                self.move_probe = false;
                stats.fast_retransmits += 1;
            }
        }
    }

    fn receive_data(&mut self, now: Instant, seq: SeqNumber, payload: &[u8], cfg: &TcpConfig) {
        let mut data = payload;
        let mut seq = seq;
        if seq < self.rcv_nxt {
            let skip = (self.rcv_nxt - seq) as usize;
            if skip >= data.len() {
                self.ack_now = true; // duplicate
                return;
            }
            data = &data[skip..];
            seq = self.rcv_nxt;
        }
        let offset = seq - self.rcv_nxt;
        if offset == 0 {
            let had_ooo = !self.ooo.is_empty();
            let n = self.recv_buf.write(data) as u32;
            let extra = self.ooo.advance(n);
            self.recv_buf.commit(extra as usize);
            self.rcv_nxt += n + extra;
            self.counters.bytes_received += (n + extra) as u64;
            self.bytes_unacked += n;
            // RFC 5681 4.2 / RFC 9293 3.8.6.3: ACK at least every second full segment,
            // or every half buffer when the buffer is smaller than two (a full segment
            // then never comes, and the sender would wait for the delayed ACK).
            let cap = (self.recv_buf.free() + self.recv_buf.len()) as u32;
            let every = (self.our_mss as u32).min(cap / 2);
            if had_ooo || n < data.len() as u32 || self.bytes_unacked > every {
                self.ack_now = true;
            } else if self.delack_at.is_none() {
                self.delack_at = Some(now + cfg.delayed_ack);
            }
        } else {
            let n = self.recv_buf.write_at(offset as usize, data) as u32;
            if n > 0 {
                self.ooo.add(offset, offset + n);
            }
            self.counters.rcv_ooopack = self.counters.rcv_ooopack.wrapping_add(1);
            self.ack_now = true; // out of order: duplicate ACK with SACK at once
        }
    }

    fn receive_fin(&mut self, now: Instant, cfg: &TcpConfig) {
        self.fin_ooo = None;
        self.rcv_nxt += 1u32;
        self.counters.bytes_received += 1;
        self.ack_now = true;
        match self.state {
            State::SynReceived | State::Established => self.state = State::CloseWait,
            State::FinWait1 => {
                if self.fin_acked {
                    self.enter_time_wait(now, cfg);
                } else {
                    self.state = State::Closing;
                }
            }
            State::FinWait2 => self.enter_time_wait(now, cfg),
            _ => {}
        }
    }

    /// Handles expired timers. Returns true when the connection ended.
    pub fn on_timers(&mut self, now: Instant, cfg: &TcpConfig, stats: &mut TcpStats) -> bool {
        if self.close_at.is_some_and(|t| t <= now) {
            self.close_at = None;
            if matches!(self.state, State::TimeWait | State::FinWait2) {
                self.set_closed();
                return true;
            }
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.ack_now = true;
        }
        if self.defer_until.is_some_and(|t| t <= now) {
            self.defer_until = None; // the layer hands it to accept now
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            if self.on_rto(now, cfg, stats) {
                return true;
            }
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            if self.snd_wnd == 0 && self.flight() == 0 && !self.send_buf.is_empty() {
                self.probe_due = true;
                stats.window_probes += 1;
                self.persist_backoff = (self.persist_backoff + 1).min(16);
            }
        }
        if let (Some(ka), Some(t)) = (self.keepalive, self.keepalive_deadline()) {
            if t <= now {
                if self.ka_probes >= ka.count {
                    stats.keepalive_timeouts += 1;
                    self.fail(Error::TimedOut);
                    return true;
                }
                self.ka_probes += 1;
                self.keepalive_due = true;
                stats.keepalive_probes += 1;
            }
        }
        false
    }

    /// The retransmission timer fired. Returns true when retries ran out.
    fn on_rto(&mut self, now: Instant, cfg: &TcpConfig, stats: &mut TcpStats) -> bool {
        let limit = match self.state {
            State::SynSent => cfg.syn_retries,
            State::SynReceived => cfg.synack_retries,
            _ => cfg.max_retries,
        };
        if self.snd_una == self.snd_max
            && !matches!(self.state, State::SynSent | State::SynReceived)
        {
            return false;
        }
        if self.retries == 0 {
            self.rto_streak_start =
                Instant(now.micros().saturating_sub(self.rtt.timeout(0).micros()));
        }
        // TCP_USER_TIMEOUT, when set, replaces the retry count (as in Linux).
        let given_up = match self.user_timeout {
            Some(ut) if ut.micros() > 0 => now.saturating_since(self.rto_streak_start) >= ut,
            _ => self.retries >= limit,
        };
        if given_up {
            stats.timeouts_fatal += 1;
            self.fail(Error::TimedOut);
            return true;
        }
        self.retries += 1;
        self.backoff += 1;
        stats.timeouts += 1;
        self.counters.total_rto = self.counters.total_rto.wrapping_add(1);
        self.counters.in_loss = true;
        if self.state.can_send_data() || matches!(self.state, State::FinWait2 | State::TimeWait) {
            let flight = self.flight();
            self.cc.on_rto(flight);
        }
        self.snd_nxt = self.snd_una;
        self.recovery = None;
        self.recover_guard = self.snd_max;
        self.rtx_pending = false;
        self.move_probe = false;
        self.scoreboard.clear();
        self.dupacks = 0;
        self.rtt_seq = None;
        let mut next = now + self.rtt.timeout(self.backoff);
        if let Some(ut) = self.user_timeout.filter(|u| u.micros() > 0) {
            // The last timeout fires when the user timeout ends, not a backoff later.
            next = next
                .min(self.rto_streak_start + ut)
                .max(now + Duration::from_millis(1));
        }
        self.rto_at = Some(next);
        false
    }

    /// Window value for the header (scaled), never advertising past the buffer.
    fn window_field(&self, syn: bool) -> u16 {
        let mut free = self.rcv_wnd();
        // Receiver SWS avoidance (RFC 9293 3.8.6.2.2): move the right edge only by at
        // least min(buffer/2, MSS).
        let cur = if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        };
        let cap = (self.recv_buf.free() + self.recv_buf.len()) as u32;
        if !syn && free < cur + (cap / 2).min(self.our_mss as u32) {
            free = cur.min(free);
        }
        if syn {
            free.min(65535) as u16
        } else {
            (free >> self.rcv_wscale).min(65535) as u16
        }
    }

    /// After the app read data: decide whether the opened window is worth an update now.
    pub fn on_app_read(&mut self) {
        let cur = if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        };
        let new = self.recv_buf.free() as u32;
        // The same threshold as `window_field` (min(buffer/2, MSS)): with a buffer
        // smaller than the MSS (small SO_RCVBUF, loopback's 64 KiB MSS) a full MSS of
        // room never opens, and the sender would wait for its persist timer.
        let cap = (self.recv_buf.free() + self.recv_buf.len()) as u32;
        let step = (self.our_mss as u32).min(cap / 2).max(1);
        if new >= cur + step && (new >= 2 * cur || cur < 2 * step) {
            self.ack_now = true;
        }
    }

    fn next_segment(&mut self, now: Instant) -> Option<SegPlan> {
        let ctl = |seq, syn, fin, advance| SegPlan {
            source: PlanSource::Normal,
            seq,
            len: 0,
            syn,
            fin,
            advance,
        };
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent => {
                return (self.snd_nxt == self.iss).then(|| ctl(self.iss, true, false, true));
            }
            State::SynReceived => {
                return (self.snd_nxt == self.iss || self.ack_now)
                    .then(|| ctl(self.iss, true, false, true));
            }
            _ => {}
        }
        if self.window_update_due {
            self.window_update_due = false;
            let mut p = ctl(self.snd_max, false, false, false);
            p.source = PlanSource::WindowUpdate;
            return Some(p);
        }
        if self.keepalive_due {
            self.keepalive_due = false;
            let mut p = ctl(self.snd_una - 1, false, false, false);
            p.source = PlanSource::Keepalive;
            return Some(p);
        }
        if self.state.can_send_data() {
            let mss = self.segment_room();
            let data_len = self.send_buf.len() as u32;
            let end = self.snd_una + data_len;
            let seg_at = |seq: SeqNumber, limit: SeqNumber, advance: bool, me: &Tcb| {
                let len = (limit - seq).min(mss);
                let fin = me.fin_queued && seq + len == end;
                SegPlan {
                    source: PlanSource::Normal,
                    seq,
                    len,
                    syn: false,
                    fin,
                    advance,
                }
            };
            if self.rtx_pending {
                self.rtx_pending = false;
                let move_probe = std::mem::take(&mut self.move_probe);
                // Only what was sent goes again (SND.MAX is one past a sent FIN): a
                // retransmission that took unsent bytes along would not advance SND.MAX,
                // and the peer's ACK of them would be one of unsent data.
                let sent_end = if self.snd_max > end {
                    end
                } else {
                    self.snd_max
                };
                let mut p = seg_at(self.snd_una, sent_end, false, self);
                p.fin = self.fin_queued && p.seq + p.len == end && self.snd_max > end;
                p.source = if move_probe {
                    PlanSource::MoveProbe
                } else {
                    PlanSource::Retransmit
                };
                if p.len > 0 || p.fin {
                    if let Some(r) = self.recovery.as_mut() {
                        r.high_rxt = r.high_rxt.max(p.seq + p.len);
                    }
                    return Some(p);
                }
            }
            if self.leaving {
                return None;
            }
            let pipe = self.pipe();
            let cwnd = self.cc.cwnd;
            if let Some(r) = self.recovery {
                if self.sack_ok && pipe < cwnd {
                    let from = r.high_rxt.max(self.snd_una);
                    if let Some((l, h)) = self.scoreboard.next_hole(from) {
                        let p = seg_at(l, h.min(end), false, self);
                        if p.len > 0 {
                            if let Some(r) = self.recovery.as_mut() {
                                r.high_rxt = p.seq + p.len;
                            }
                            return Some(p);
                        }
                    }
                }
            }
            if self.probe_due {
                self.probe_due = false;
                if self.snd_nxt < end {
                    let mut p = seg_at(self.snd_nxt, end, false, self);
                    p.len = 1;
                    p.fin = false;
                    p.source = PlanSource::Probe;
                    return Some(p);
                }
            }
            if self.snd_nxt < end {
                let avail = end - self.snd_nxt;
                let wnd_end = self.snd_una + self.snd_wnd;
                let wnd_room = if wnd_end > self.snd_nxt {
                    wnd_end - self.snd_nxt
                } else {
                    0
                };
                // Limited transmit (RFC 3042): the first two duplicate ACKs each let one
                // new segment out, so a small window still gets its third duplicate ACK.
                let limited = if self.recovery.is_none() && self.scoreboard.is_empty() {
                    self.dupacks.min(2) * mss
                } else {
                    0
                };
                let cwnd_room = (cwnd + limited).saturating_sub(pipe);
                let len = avail.min(mss).min(wnd_room).min(cwnd_room);
                if len > 0 {
                    let nothing_in_flight = self.snd_nxt == self.snd_una;
                    let full = len == mss;
                    let last_piece =
                        len == avail && (self.nodelay || nothing_in_flight || self.fin_queued);
                    // Sender SWS avoidance (RFC 9293 3.8.6.2.1), relaxed: with nothing in
                    // flight, fill what the window offers rather than wait for a probe.
                    // Half the largest window the peer offered is always worth sending
                    // (Fs = 1/2): a window smaller than the MSS never allows a full one.
                    let sws_ok =
                        len >= self.max_snd_wnd / 2 || nothing_in_flight && len == wnd_room;
                    if full || last_piece || sws_ok {
                        return Some(seg_at(self.snd_nxt, self.snd_nxt + len, true, self));
                    }
                } else if wnd_room == 0 && self.flight() == 0 && self.persist_at.is_none() {
                    let t = self
                        .rtt
                        .timeout(self.persist_backoff)
                        .max(Duration::from_millis(200));
                    self.persist_at = Some(now + t);
                }
            } else if self.fin_queued && self.snd_nxt == end {
                return Some(ctl(end, false, true, true));
            }
        }
        if self.ack_now {
            // A pure ACK carries SND.MAX (as BSD does): after a timeout rewound SND.NXT,
            // an older sequence number would fall left of the peer's window and be dropped
            // with its acknowledgment.
            return Some(ctl(self.snd_max, false, false, false));
        }
        None
    }

    /// A cheap "certainly idle" test, so `output` skips planning in the common case of
    /// a connection whose data is all sent and that owes no ACK.
    fn nothing_to_send(&self) -> bool {
        if self.ack_now
            || self.rtx_pending
            || self.probe_due
            || self.window_update_due
            || self.keepalive_due
            || self.recovery.is_some()
        {
            return false;
        }
        if !matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::FinWait2
                | State::Closing
                | State::LastAck
                | State::TimeWait
        ) {
            return false;
        }
        let end = self.snd_una + self.send_buf.len();
        self.snd_nxt >= end && !(self.fin_queued && self.snd_nxt == end)
    }

    /// Emits what is due, up to about `burst` payload bytes (whole segments; control
    /// segments and ACKs are never held back).
    pub fn output(
        &mut self,
        now: Instant,
        out: &mut dyn IpTx,
        cfg: &TcpConfig,
        stats: &mut TcpStats,
        burst: u32,
    ) -> Output {
        let mut sent = 0u32;
        while !self.nothing_to_send() {
            if sent >= burst {
                return Output::MoreDue;
            }
            let Some(plan) = self.next_segment(now) else {
                break;
            };
            sent += plan.len;
            if !self.transmit(now, plan, out, cfg, stats) {
                // Put back what the plan consumed so the next dispatch retries it.
                match plan.source {
                    PlanSource::Normal => {}
                    PlanSource::Retransmit => self.rtx_pending = true,
                    PlanSource::MoveProbe => {
                        self.rtx_pending = true;
                        self.move_probe = true;
                    }
                    PlanSource::Probe => self.probe_due = true,
                    PlanSource::Keepalive => self.keepalive_due = true,
                    PlanSource::WindowUpdate => self.window_update_due = true,
                }
                return Output::Blocked;
            }
        }
        Output::Done
    }

    fn transmit(
        &mut self,
        now: Instant,
        plan: SegPlan,
        out: &mut dyn IpTx,
        cfg: &TcpConfig,
        stats: &mut TcpStats,
    ) -> bool {
        let mut f = flags::ACK;
        if plan.syn {
            f |= flags::SYN;
            if self.state == State::SynSent {
                f &= !flags::ACK;
            }
            if self.our_mss == 0 || self.state == State::SynSent || self.state == State::SynReceived
            {
                let path = out
                    .max_segment(self.remote.ip())
                    .saturating_sub(20)
                    .min(65535) as u16;
                self.our_mss = path.min(cfg.mss).max(64);
                self.update_smss();
            }
        }
        if plan.fin {
            f |= flags::FIN;
        }
        if plan.len > 0 && plan.seq + plan.len == self.snd_una + self.send_buf.len() {
            f |= flags::PSH;
        }
        let mut repr = TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: plan.seq,
            ack: if f & flags::ACK != 0 {
                self.rcv_nxt
            } else {
                SeqNumber(0)
            },
            flags: f,
            window: self.window_field(plan.syn),
            payload_len: plan.len as usize,
            ..TcpRepr::default()
        };
        if plan.syn {
            repr.mss = Some(self.our_mss);
            let active = self.state == State::SynSent;
            if (active && cfg.window_scaling) || (!active && self.ws_ok) {
                if active {
                    self.rcv_wscale = window_shift_for(self.recv_capacity());
                }
                repr.window_scale = Some(self.rcv_wscale);
            }
            if (active && cfg.sack) || (!active && self.sack_ok) {
                repr.sack_permitted = true;
            }
            if (active && cfg.timestamps) || (!active && self.ts_ok) {
                repr.timestamps = Some((self.ts_now(now), if active { 0 } else { self.ts_recent }));
            }
        } else {
            if self.ts_ok {
                repr.timestamps = Some((self.ts_now(now), self.ts_recent));
            }
            if self.sack_ok && !self.ooo.is_empty() {
                repr.sack = self.sack_blocks();
            }
        }
        let hl = repr.header_len();
        let total = hl + plan.len as usize;
        let offset = (plan.seq - self.snd_una) as usize;
        let send_buf = &self.send_buf;
        let (local, remote) = (self.local.ip(), self.remote.ip());
        out.set_tos(self.tos);
        let sent = if plan.len >= SUM_WHILE_COPYING_FROM {
            // The payload is summed while it is copied; the IP layer sums only the
            // header instead of reading the payload again.
            out.send_summed(local, remote, IpProtocol::Tcp, total, hl, &mut |buf| {
                repr.emit(buf);
                send_buf.peek_at_summed(offset, &mut buf[hl..]).1
            })
        } else {
            // A few bytes: one plain sum over the segment is cheaper than two.
            out.send(local, remote, IpProtocol::Tcp, total, &mut |buf| {
                repr.emit(buf);
                if plan.len > 0 {
                    send_buf.peek_at(offset, &mut buf[hl..]);
                }
            })
        };
        if !sent {
            stats.tx_blocked += 1;
            return false;
        }
        stats.segments_out += 1;
        let c = &mut self.counters;
        c.segs_out = c.segs_out.wrapping_add(1);
        if plan.len > 0 {
            c.data_segs_out = c.data_segs_out.wrapping_add(1);
            c.bytes_sent += plan.len as u64;
            c.last_data_sent = now;
            if c.busy_since.is_none() {
                c.busy_since = Some(now);
            }
        }
        let seq_len = plan.len + plan.syn as u32 + plan.fin as u32;
        if seq_len > 0 {
            let end = plan.seq + seq_len;
            if plan.seq < self.snd_max {
                if matches!(plan.source, PlanSource::MoveProbe) {
                    stats.move_probes += 1;
                } else {
                    stats.retransmits += 1;
                    c.total_retrans = c.total_retrans.wrapping_add(1);
                    c.bytes_retrans += plan.len as u64;
                }
                if self.rtt_seq.is_some_and(|(s, _)| s >= plan.seq && s < end) {
                    self.rtt_seq = None; // Karn: never time a retransmitted segment
                }
            } else if self.rtt_seq.is_none() {
                self.rtt_seq = Some((plan.seq, now));
                c.rtt_delivered = c.bytes_acked;
            }
            if plan.advance && end > self.snd_nxt {
                self.snd_nxt = end;
            }
            if end > self.snd_max {
                self.snd_max = end;
            }
            if self.rto_at.is_none() {
                self.rto_at = Some(now + self.rtt.timeout(self.backoff));
            }
        }
        if f & flags::ACK != 0 {
            self.ack_now = false;
            self.delack_at = None;
            self.bytes_unacked = 0;
            self.rcv_adv =
                self.rcv_nxt + ((repr.window as u32) << if plan.syn { 0 } else { self.rcv_wscale });
        }
        true
    }

    fn sack_blocks(&self) -> SackBlocks {
        let mut b = SackBlocks::default();
        let max = if self.ts_ok { 3 } else { 4 };
        let ranges = self.ooo.ranges();
        let push = |i: usize, b: &mut SackBlocks| {
            let (s, e) = ranges[i];
            b.push(self.rcv_nxt + s, self.rcv_nxt + e);
        };
        if let Some(l) = self.ooo.last.filter(|&l| l < ranges.len()) {
            push(l, &mut b);
        }
        for i in 0..ranges.len() {
            if b.len as usize >= max {
                break;
            }
            if Some(i) != self.ooo.last {
                push(i, &mut b);
            }
        }
        b
    }
}

/// Payloads from this size on are summed while copied into the frame
/// ([`IpTx::send_summed`]); smaller ones are cheaper summed with the header.
const SUM_WHILE_COPYING_FROM: u32 = 128;

/// The window-scale shift needed to advertise a buffer of `bytes` (RFC 7323 2.3).
pub fn window_shift_for(bytes: usize) -> u8 {
    let mut s = 0u8;
    while s < 14 && (bytes >> s) > 65535 {
        s += 1;
    }
    s
}

impl Tcb {
    /// One line of the connection's variables, for diagnostics.
    pub fn summary(&self) -> String {
        format!(
            "{:?} una={:?} nxt={:?} max={:?} wnd={} sbuf={} rcv_nxt={:?} rbuf={} ooo={:?} cwnd={} ssth={} pipe={} rec={:?} dup={} sb={:?} rto_at={:?} persist={:?} backoff={} retries={} ack_now={} fin_q={} rtx_p={}",
            self.state, self.snd_una, self.snd_nxt, self.snd_max, self.snd_wnd, self.send_buf.len(),
            self.rcv_nxt, self.recv_buf.len(), self.ooo.ranges(), self.cc.cwnd, self.cc.ssthresh, self.pipe(),
            self.recovery, self.dupacks, self.scoreboard.blocks(), self.rto_at, self.persist_at, self.backoff,
            self.retries, self.ack_now, self.fin_queued, self.rtx_pending
        )
    }
}
