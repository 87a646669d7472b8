//! The layer's counters.

use super::{SlotKind, State, TcpLayer};

/// Counters (monotonic). Connection counts by state come from
/// [`TcpLayer::connections_by_state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub segments_in: u64,
    pub segments_out: u64,
    /// Segments sent again because of loss (timeout, fast retransmit, SACK recovery).
    pub retransmits: u64,
    /// Segments sent again because a move asked its peer for its window and SACK
    /// state (`TcpLayer::probe_peer`): no loss asked for them.
    pub move_probes: u64,
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
    /// SYNs the full pool reported to the host instead of answering (`overflow_to_host`).
    pub syn_overflow: u64,
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

impl TcpLayer {
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
}
