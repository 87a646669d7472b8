//! A connection's variables and counters as Linux's `getsockopt(TCP_INFO)` reports
//! them, in the stack's own types (the shim lays them out as `struct tcp_info`).
//! Segment counts the stack does not keep (it works in bytes) are derived from bytes
//! and the MSS, as documented on each field.

use super::conn::{State, Tcb};
use super::{SlotKind, TcpLayer};
use crate::error::Result;
use crate::socket::SocketHandle;
use crate::time::{Duration, Instant};

/// Linux's `tcp_ca_state`: where loss recovery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CongestionState {
    /// Nothing unusual.
    Open,
    /// Duplicate ACKs or SACKs seen, not yet a loss.
    Disorder,
    /// Fast recovery (RFC 6675 / 6582).
    Recovery,
    /// After a retransmission timeout, until what was outstanding is acknowledged.
    Loss,
}

/// What `TCP_INFO` reports about one connection. Times are relative to the stack's
/// current time (its last `receive`/`dispatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: State,
    pub ca_state: CongestionState,
    /// Consecutive retransmission-timer expiries without progress.
    pub retransmits: u32,
    /// Unanswered zero-window or keepalive probes.
    pub probes: u32,
    /// Exponential backoff of the retransmission timer.
    pub backoff: u32,
    pub timestamps: bool,
    pub sack: bool,
    /// Window-scale shifts, `None` when scaling was not negotiated.
    pub snd_wscale: Option<u8>,
    pub rcv_wscale: Option<u8>,
    /// Current retransmission timeout (backoff included) and delayed-ACK timeout.
    pub rto: Duration,
    pub ato: Duration,
    /// Payload bytes per full segment we send / the peer's, as Linux estimates it
    /// (min(MSS, 536) until a larger segment arrives).
    pub snd_mss: u32,
    pub rcv_mss: u32,
    /// Segments in flight, SACKed, presumed lost, retransmitted and not yet acknowledged
    /// (bytes divided by `snd_mss`, rounded up).
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub since_data_sent: Duration,
    pub since_data_recv: Duration,
    pub since_ack_recv: Duration,
    /// Path MTU (the MSS we advertise plus IPv4 and TCP headers).
    pub pmtu: u32,
    /// The largest receive window we may advertise (the receive buffer's size).
    pub rcv_ssthresh: u32,
    pub srtt: Duration,
    pub rttvar: Duration,
    /// Smallest RTT sample (zero before the first).
    pub min_rtt: Duration,
    /// Slow-start threshold in segments, `None` while unset (infinite).
    pub snd_ssthresh: Option<u32>,
    /// Congestion window in segments.
    pub snd_cwnd: u32,
    /// The MSS we advertised, less the options every segment carries.
    pub advmss: u32,
    /// Receive buffer space (bytes).
    pub rcv_space: u32,
    /// Segments sent again, over the connection's life.
    pub total_retrans: u32,
    pub total_rto: u32,
    /// Bytes per second: the rate Linux would pace at (cwnd / srtt, doubled in slow
    /// start, × 1.2 after; the stack does not pace), and the rate data was
    /// acknowledged over the last timed round trip.
    pub pacing_rate: u64,
    pub delivery_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub data_segs_out: u32,
    pub data_segs_in: u32,
    /// Bytes queued and not yet sent.
    pub notsent_bytes: u32,
    /// Time with data in flight.
    pub busy_time: Duration,
    /// The peer's window and the one we last advertised (bytes).
    pub snd_wnd: u32,
    pub rcv_wnd: u32,
    pub rcv_ooopack: u32,
}

impl TcpLayer {
    /// TCP_INFO for a connection (a listener reports its state and nothing else).
    pub fn tcp_info(&self, h: SocketHandle) -> Result<TcpInfo> {
        let idx = self.slot_of(h)?;
        let s = &self.slots[idx as usize];
        let mut info = s.tcb.tcp_info(self.now, self.cfg.delayed_ack);
        if s.kind == SlotKind::Listener {
            info.state = State::Listen;
        }
        Ok(info)
    }
}

impl Tcb {
    fn tcp_info(&self, now: Instant, ato: Duration) -> TcpInfo {
        let c = &self.counters;
        let mss = self.payload_mss();
        let segs = |bytes: u32| bytes.div_ceil(mss);
        let in_flight = self.snd_max - self.snd_una;
        let ca_state = if self.recovery.is_some() {
            CongestionState::Recovery
        } else if c.in_loss {
            CongestionState::Loss
        } else if self.dupacks > 0 || !self.scoreboard.is_empty() {
            CongestionState::Disorder
        } else {
            CongestionState::Open
        };
        let sacked = self.scoreboard.sacked_bytes();
        let (lost, retrans) = match (ca_state, self.recovery) {
            // A timeout presumes everything outstanding lost; SND.NXT went back to
            // SND.UNA and has since been retransmitted up to where it is now.
            (CongestionState::Loss, _) => (in_flight, self.snd_nxt - self.snd_una),
            (_, Some(r)) => {
                let high = self.scoreboard.high().unwrap_or(self.snd_una);
                let holes = if high > self.snd_una {
                    self.scoreboard.unsacked_between(self.snd_una, high)
                } else {
                    mss.min(in_flight)
                };
                let rxt = if r.high_rxt > self.snd_una {
                    self.scoreboard.unsacked_between(self.snd_una, r.high_rxt)
                } else {
                    0
                };
                (holes, rxt)
            }
            _ => (0, 0),
        };
        let cwnd_segs = self.cc.cwnd / self.cc.mss.max(1);
        // Linux's tcp_update_pacing_rate: 200% in slow start, 120% after (0: no RTT yet).
        let pct = if self.cc.in_slow_start() { 200 } else { 120 };
        let pacing_rate = (self.cc.cwnd as u64 * 1_000_000 * pct / 100)
            .checked_div(self.rtt.srtt)
            .unwrap_or(0);
        let send_queued = self.send_buf.len() as u32;
        let rcv_wnd = if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv - self.rcv_nxt
        } else {
            0
        };
        let ws = self.ws_ok && !matches!(self.state, State::SynSent | State::Closed);
        let ts_opts = if self.ts_ok { 12 } else { 0 };
        let busy = c.busy_time + c.busy_since.map_or(0, |t| now.saturating_since(t).micros());
        TcpInfo {
            state: self.state,
            ca_state,
            retransmits: self.retries,
            probes: self.persist_backoff.max(self.ka_probes),
            backoff: self.backoff,
            timestamps: self.ts_ok,
            sack: self.sack_ok,
            snd_wscale: ws.then_some(self.snd_wscale),
            rcv_wscale: ws.then_some(self.rcv_wscale),
            rto: self.rtt.timeout(self.backoff),
            ato,
            snd_mss: mss,
            // Linux's estimate starts at min(MSS, 536) and follows larger segments.
            rcv_mss: c.rcv_mss.max(mss.min(536)),
            unacked: segs(in_flight),
            sacked: segs(sacked),
            lost: segs(lost),
            retrans: segs(retrans),
            since_data_sent: now.saturating_since(c.last_data_sent),
            since_data_recv: now.saturating_since(c.last_data_recv),
            since_ack_recv: now.saturating_since(c.last_ack_recv),
            pmtu: self.our_mss as u32 + 40,
            rcv_ssthresh: (self.recv_buf.free() + self.recv_buf.len()) as u32,
            srtt: Duration(self.rtt.srtt),
            rttvar: Duration(self.rtt.rttvar),
            min_rtt: Duration(c.min_rtt),
            snd_ssthresh: (self.cc.ssthresh != u32::MAX)
                .then(|| self.cc.ssthresh / self.cc.mss.max(1)),
            snd_cwnd: cwnd_segs,
            advmss: (self.our_mss as u32).saturating_sub(ts_opts),
            rcv_space: (self.recv_buf.free() + self.recv_buf.len()) as u32,
            total_retrans: c.total_retrans,
            total_rto: c.total_rto,
            pacing_rate,
            delivery_rate: c.rate_delivered * 1_000_000 / c.rate_interval.max(1),
            bytes_acked: c.bytes_acked,
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
            bytes_retrans: c.bytes_retrans,
            segs_out: c.segs_out,
            segs_in: c.segs_in,
            data_segs_out: c.data_segs_out,
            data_segs_in: c.data_segs_in,
            notsent_bytes: send_queued.saturating_sub(in_flight),
            busy_time: Duration(busy),
            snd_wnd: self.snd_wnd,
            rcv_wnd,
            rcv_ooopack: c.rcv_ooopack,
        }
    }
}
