//! Congestion control: CUBIC (RFC 9438, the default) and NewReno (RFC 5681 / 6582).
//! The connection handles loss detection and recovery; this module only answers
//! "how big may the window be" as ACKs and congestion events arrive.

use crate::time::Instant;

/// Which algorithm a connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CongestionAlgorithm {
    #[default]
    Cubic,
    NewReno,
}

const CUBIC_C: f64 = 0.4;
const CUBIC_BETA: f64 = 0.7;

/// Window state, in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Congestion {
    pub algorithm: CongestionAlgorithm,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub mss: u32,
    /// CUBIC: window before the last reduction, in segments.
    w_max: f64,
    /// CUBIC: time to grow back to `w_max`, seconds.
    k: f64,
    /// CUBIC: start of the current congestion-avoidance epoch (None: not started).
    epoch: Option<Instant>,
    /// CUBIC: the Reno-friendly estimate, in segments.
    w_est: f64,
    /// NewReno: bytes acked toward the next one-MSS increase in congestion avoidance.
    acked_acc: u32,
}

impl Congestion {
    /// RFC 6928 initial window (10 segments).
    pub fn new(algorithm: CongestionAlgorithm, mss: u32) -> Congestion {
        Congestion {
            algorithm,
            cwnd: 10 * mss,
            ssthresh: u32::MAX,
            mss,
            w_max: 0.0,
            k: 0.0,
            epoch: None,
            w_est: 0.0,
            acked_acc: 0,
        }
    }

    pub fn set_mss(&mut self, mss: u32) {
        if self.cwnd == 10 * self.mss {
            self.cwnd = 10 * mss;
        }
        self.mss = mss;
    }

    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// `acked` new bytes were acknowledged outside of loss recovery.
    #[inline]
    pub fn on_ack(&mut self, now: Instant, acked: u32, srtt_us: u64) {
        if self.in_slow_start() {
            // RFC 5681 with appropriate byte counting, L = 2 segments.
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * self.mss));
            return;
        }
        match self.algorithm {
            CongestionAlgorithm::NewReno => self.reno_increase(acked),
            CongestionAlgorithm::Cubic => self.cubic_increase(now, acked, srtt_us),
        }
    }

    fn reno_increase(&mut self, acked: u32) {
        self.acked_acc += acked;
        if self.acked_acc >= self.cwnd {
            self.acked_acc -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(self.mss);
        }
    }

    fn cubic_increase(&mut self, now: Instant, acked: u32, srtt_us: u64) {
        let mss = self.mss as f64;
        let cwnd_seg = self.cwnd as f64 / mss;
        let epoch = *self.epoch.get_or_insert_with(|| {
            // RFC 9438 4.8: a new epoch with no prior reduction starts at the current window.
            if self.w_max < cwnd_seg {
                self.w_max = cwnd_seg;
                self.k = 0.0;
            }
            self.w_est = cwnd_seg;
            now
        });
        let t = (now.micros().saturating_sub(epoch.micros()) + srtt_us) as f64 / 1e6;
        let w_cubic = CUBIC_C * (t - self.k).powi(3) + self.w_max;
        // RFC 9438 4.3: the Reno-friendly region.
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        self.w_est += alpha * (acked as f64 / mss) / cwnd_seg;
        let target = if w_cubic < self.w_est {
            self.w_est
        } else {
            w_cubic.clamp(cwnd_seg, 1.5 * cwnd_seg)
        };
        if target > cwnd_seg {
            let inc = (target - cwnd_seg) / cwnd_seg * acked as f64;
            self.cwnd = self.cwnd.saturating_add(inc.max(1.0) as u32);
        }
    }

    /// Loss detected by duplicate ACKs/SACK: set ssthresh and the window for recovery.
    pub fn on_congestion(&mut self, flight: u32) {
        let mss = self.mss as f64;
        match self.algorithm {
            CongestionAlgorithm::NewReno => {
                self.ssthresh = (flight / 2).max(2 * self.mss);
            }
            CongestionAlgorithm::Cubic => {
                let cwnd_seg = self.cwnd as f64 / mss;
                // Fast convergence (RFC 9438 4.7).
                self.w_max = if cwnd_seg < self.w_max {
                    cwnd_seg * (1.0 + CUBIC_BETA) / 2.0
                } else {
                    cwnd_seg
                };
                self.k = (self.w_max * (1.0 - CUBIC_BETA) / CUBIC_C).cbrt();
                self.ssthresh = ((self.cwnd as f64 * CUBIC_BETA) as u32).max(2 * self.mss);
                self.epoch = None;
            }
        }
        self.cwnd = self.ssthresh;
        self.acked_acc = 0;
    }

    /// The retransmission timer expired: back to one segment of slow start.
    pub fn on_rto(&mut self, flight: u32) {
        match self.algorithm {
            CongestionAlgorithm::NewReno => self.ssthresh = (flight / 2).max(2 * self.mss),
            CongestionAlgorithm::Cubic => {
                self.w_max = self.cwnd as f64 / self.mss as f64;
                self.k = (self.w_max * (1.0 - CUBIC_BETA) / CUBIC_C).cbrt();
                self.ssthresh = ((self.cwnd as f64 * CUBIC_BETA) as u32).max(2 * self.mss);
                self.epoch = None;
            }
        }
        self.cwnd = self.mss;
        self.acked_acc = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_reno_linear_growth() {
        let mut c = Congestion::new(CongestionAlgorithm::NewReno, 1000);
        assert_eq!(c.cwnd, 10_000);
        c.on_ack(Instant(0), 1000, 0);
        assert_eq!(c.cwnd, 11_000);
        c.on_congestion(20_000);
        assert_eq!((c.cwnd, c.ssthresh), (10_000, 10_000));
        for _ in 0..10 {
            c.on_ack(Instant(0), 1000, 0);
        }
        assert_eq!(c.cwnd, 11_000, "one MSS per window of ACKs");
        c.on_rto(11_000);
        assert_eq!((c.cwnd, c.ssthresh), (1000, 5500));
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_past_wmax() {
        let mut c = Congestion::new(CongestionAlgorithm::Cubic, 1000);
        c.cwnd = 100_000;
        c.ssthresh = 50_000;
        c.on_congestion(100_000);
        assert_eq!(c.cwnd, 70_000);
        let k = c.k;
        assert!((k - (100.0f64 * 0.3 / 0.4).cbrt()).abs() < 1e-9);
        // Feed a window of ACKs every 10 ms for 2K seconds: the window passes W_max.
        let mut now = 0u64;
        while now < (2.0 * k * 1e6) as u64 {
            let w = c.cwnd;
            c.on_ack(Instant(now), w, 10_000);
            now += 10_000;
        }
        assert!(c.cwnd > 100_000, "{}", c.cwnd);
        // Concave then convex: growth right after the reduction is slow.
        let mut d = Congestion::new(CongestionAlgorithm::Cubic, 1000);
        d.cwnd = 100_000;
        d.ssthresh = 50_000;
        d.on_congestion(100_000);
        d.on_ack(Instant(0), 70_000, 10_000);
        d.on_ack(Instant(10_000), 70_000, 10_000);
        assert!(d.cwnd < 75_000, "{}", d.cwnd);
    }
}
