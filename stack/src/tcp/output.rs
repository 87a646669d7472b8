//! Output: control segments (RSTs, cookie SYN-ACKs), timers, and the connections
//! queued to transmit; when the layer next needs to run.

use core::net::SocketAddr;

use crate::error::Error;
use crate::ip_tx::{IpProtocol, IpTx};
use crate::time::Instant;
use crate::wire::tcp::{flags, SeqNumber, TcpRepr};

use super::conn::Output;
use super::{Control, SlotKind, State, TcpLayer};

impl TcpLayer {
    pub(super) fn queue_control(&mut self, c: Control) {
        if self.control.len() >= self.cfg.control_queue {
            self.stats.drops_control_queue += 1;
        } else {
            self.control.push_back(c);
        }
    }

    /// The RST answering `seg` (RFC 9293 3.10.7.1), for a port with no socket.
    pub(super) fn reset_for(&mut self, local: SocketAddr, remote: SocketAddr, seg: &TcpRepr) {
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

    /// Emits what the connections in the transmit queue have to send, at most a burst
    /// each ([`TcpConfig::tx_burst`]).
    fn output(&mut self, now: Instant, out: &mut dyn IpTx) {
        // In place: the connections that could not send (the IP layer refused a packet)
        // keep their order at the front; anything queued meanwhile, and connections
        // whose burst ran out, stay behind them.
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
            match s
                .tcb
                .output(now, out, &self.cfg, &mut self.stats, self.cfg.tx_burst)
            {
                Output::Done => {}
                Output::Blocked => {
                    blocked = true;
                    s.in_tx_queue = true;
                    self.tx_queue[kept] = idx;
                    kept += 1;
                }
                Output::MoreDue => {
                    s.in_tx_queue = true;
                    self.tx_queue.push(idx);
                }
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
                let path = out.max_segment(remote.ip()).saturating_sub(20).min(65535) as u16;
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
            local.ip(),
            remote.ip(),
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
}

#[cfg(test)]
mod timer_tests {
    use super::*;
    use crate::sim::{LinkConfig, TcpPair};
    use crate::tcp::TcpConfig;
    use crate::time::Duration;

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
