//! Retransmission timeout per RFC 6298.

use crate::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    /// Smoothed RTT and variance in microseconds; `srtt == 0` means no sample yet.
    pub srtt: u64,
    pub rttvar: u64,
    /// Current RTO before backoff.
    pub rto: u64,
    pub min_rto: u64,
    pub max_rto: u64,
}

impl RttEstimator {
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt: 0,
            rttvar: 0,
            rto: initial.micros(),
            min_rto: min.micros(),
            max_rto: max.micros(),
        }
    }

    /// Takes one RTT measurement (RFC 6298 2.2 / 2.3; clock granularity 1 ms).
    #[inline]
    pub fn sample(&mut self, rtt: Duration) {
        let r = rtt.micros().max(1);
        if self.srtt == 0 {
            self.srtt = r;
            self.rttvar = r / 2;
        } else {
            let delta = self.srtt.abs_diff(r);
            self.rttvar = (3 * self.rttvar + delta) / 4;
            self.srtt = (7 * self.srtt + r) / 8;
        }
        self.rto = (self.srtt + (4 * self.rttvar).max(1000)).clamp(self.min_rto, self.max_rto);
    }

    /// The timeout after `backoff` consecutive expiries (doubling, RFC 6298 5.5).
    pub fn timeout(&self, backoff: u32) -> Duration {
        let t = self.rto.saturating_mul(1u64 << backoff.min(20));
        Duration(t.min(self.max_rto))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc6298() {
        let mut e = RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        assert_eq!(e.timeout(0), Duration::from_secs(1));
        assert_eq!(e.timeout(3), Duration::from_secs(8));
        e.sample(Duration::from_millis(100));
        assert_eq!(e.srtt, 100_000);
        assert_eq!(e.rttvar, 50_000);
        assert_eq!(e.rto, 300_000);
        e.sample(Duration::from_millis(100));
        assert_eq!(e.rttvar, 37_500);
        assert_eq!(e.rto, 250_000);
        for _ in 0..50 {
            e.sample(Duration::from_millis(1));
        }
        assert_eq!(e.rto, 200_000, "clamped to the minimum");
        assert_eq!(
            e.timeout(30),
            Duration::from_secs(60),
            "clamped to the maximum"
        );
    }
}
