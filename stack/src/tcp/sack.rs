//! The sender's SACK scoreboard (RFC 2018 / RFC 6675): which bytes above SND.UNA the
//! peer reported holding, so recovery retransmits only the holes.

use crate::wire::tcp::SeqNumber;

/// Sorted, disjoint `[left, right)` ranges above SND.UNA. Fixed capacity: when full, the
/// highest range is forgotten (the sender then just retransmits a little more).
#[derive(Clone, Debug, Default)]
pub struct Scoreboard {
    blocks: [(SeqNumber, SeqNumber); Scoreboard::MAX],
    len: usize,
}

impl Scoreboard {
    pub const MAX: usize = 32;

    pub fn clear(&mut self) {
        self.len = 0;
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn blocks(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.blocks[..self.len]
    }

    /// Records one SACK block, ignoring what is at or below `snd_una` or above `snd_max`.
    pub fn add(
        &mut self,
        snd_una: SeqNumber,
        snd_max: SeqNumber,
        left: SeqNumber,
        right: SeqNumber,
    ) {
        let l = left.max(snd_una);
        let r = right.min(snd_max);
        if l >= r || left < snd_una - (1 << 30) {
            return;
        }
        let mut i = 0;
        while i < self.len && self.blocks[i].1 < l {
            i += 1;
        }
        let mut j = i;
        while j < self.len && self.blocks[j].0 <= r {
            j += 1;
        }
        if i == j {
            if self.len == Self::MAX {
                if i == self.len {
                    return;
                }
                self.len -= 1;
            }
            self.blocks.copy_within(i..self.len, i + 1);
            self.blocks[i] = (l, r);
            self.len += 1;
        } else {
            let nl = l.min(self.blocks[i].0);
            let nr = r.max(self.blocks[j - 1].1);
            self.blocks[i] = (nl, nr);
            self.blocks.copy_within(j..self.len, i + 1);
            self.len -= j - i - 1;
        }
    }

    /// SND.UNA advanced: drop what it covers.
    #[inline]
    pub fn on_ack(&mut self, snd_una: SeqNumber) {
        if self.len == 0 {
            return;
        }
        let mut k = 0;
        for i in 0..self.len {
            let (l, r) = self.blocks[i];
            if r <= snd_una {
                continue;
            }
            self.blocks[k] = (l.max(snd_una), r);
            k += 1;
        }
        self.len = k;
    }

    /// The highest SACKed sequence number (end of the last block).
    pub fn high(&self) -> Option<SeqNumber> {
        self.blocks().last().map(|b| b.1)
    }

    pub fn sacked_bytes(&self) -> u32 {
        self.blocks().iter().map(|&(l, r)| r - l).sum()
    }

    /// Bytes in `[from, to)` not SACKed.
    pub fn unsacked_between(&self, from: SeqNumber, to: SeqNumber) -> u32 {
        if to <= from {
            return 0;
        }
        let mut n = to - from;
        for &(l, r) in self.blocks() {
            let a = l.max(from);
            let b = r.min(to);
            if a < b {
                n -= b - a;
            }
        }
        n
    }

    /// The first un-SACKed range at or after `from` that lies below the highest SACKed
    /// byte: data the peer presumably lost (RFC 6675's IsLost, simplified to "a later
    /// byte arrived").
    pub fn next_hole(&self, from: SeqNumber) -> Option<(SeqNumber, SeqNumber)> {
        let mut at = from;
        for &(l, r) in self.blocks() {
            if r <= at {
                continue;
            }
            if l > at {
                return Some((at, l));
            }
            at = r;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn merges_finds_holes_and_drops_acked() {
        let mut b = Scoreboard::default();
        b.add(s(100), s(1000), s(300), s(400));
        b.add(s(100), s(1000), s(500), s(600));
        b.add(s(100), s(1000), s(50), s(150)); // clipped to [100,150)
        assert_eq!(
            b.blocks(),
            &[(s(100), s(150)), (s(300), s(400)), (s(500), s(600))]
        );
        assert_eq!(b.sacked_bytes(), 250);
        assert_eq!(b.high(), Some(s(600)));
        assert_eq!(b.next_hole(s(100)), Some((s(150), s(300))));
        assert_eq!(b.next_hole(s(320)), Some((s(400), s(500))));
        assert_eq!(b.next_hole(s(600)), None);
        assert_eq!(b.unsacked_between(s(100), s(700)), 350);
        b.add(s(100), s(1000), s(390), s(510));
        assert_eq!(b.blocks(), &[(s(100), s(150)), (s(300), s(600))]);
        b.on_ack(s(350));
        assert_eq!(b.blocks(), &[(s(350), s(600))]);
        b.add(s(350), s(1000), s(900), s(2000)); // clipped at snd_max
        assert_eq!(b.high(), Some(s(1000)));
    }
}
