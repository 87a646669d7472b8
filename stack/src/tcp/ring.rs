//! A fixed-capacity byte ring: the send and receive buffers of a connection. Allocated
//! once, then reused (the layer keeps the storage of connections that no longer need it
//! for the next ones); never grows on its own.

use crate::wire::checksum;

/// `i mod cap` for `i < 2 * cap`, without a division (hot path).
#[inline]
fn wrap(i: usize, cap: usize) -> usize {
    if i >= cap {
        i - cap
    } else {
        i
    }
}

/// Copies `src` into `dst` (same length). Up to 16 bytes (ping-pong requests, small
/// replies) move as two overlapping fixed-size pieces, without a call to `memcpy`.
#[inline(always)]
fn copy(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    debug_assert_eq!(n, dst.len());
    if n > 16 {
        dst.copy_from_slice(src);
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

/// Bytes `[head, head + len)` (modulo capacity) are the ring's contents. Bytes past
/// `len` can also be written at an offset (out-of-order data waiting for a hole to fill)
/// and later made part of the contents with [`Ring::commit`].
#[derive(Debug, Default)]
pub struct Ring {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            buf: vec![0u8; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }
    /// Bytes of storage (0: none, e.g. released in TIME-WAIT).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
    /// Replaces the storage with one of `capacity` bytes, keeping the contents (which
    /// must fit).
    pub fn resize(&mut self, capacity: usize) {
        if capacity == self.buf.len() {
            return;
        }
        let mut n = Ring::new(capacity.max(self.len));
        let mut tmp = vec![0u8; self.len];
        self.peek_at(0, &mut tmp);
        n.write(&tmp);
        *self = n;
    }

    /// Appends as much of `data` as fits; returns how much.
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> usize {
        let cap = self.buf.len();
        let n = data.len().min(cap - self.len);
        let start = wrap(self.head + self.len, cap);
        let first = n.min(cap - start);
        copy(&mut self.buf[start..start + first], &data[..first]);
        if n > first {
            copy(&mut self.buf[..n - first], &data[first..n]);
        }
        self.len += n;
        n
    }

    /// Writes `data` at `offset` bytes past the end of the contents, without making it
    /// part of the contents. Writes only what fits in the capacity; returns how much.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> usize {
        let cap = self.buf.len();
        if offset >= self.free() {
            return 0;
        }
        let n = data.len().min(self.free() - offset);
        let start = wrap(self.head + self.len + offset, cap);
        let first = n.min(cap - start);
        copy(&mut self.buf[start..start + first], &data[..first]);
        if n > first {
            copy(&mut self.buf[..n - first], &data[first..n]);
        }
        n
    }

    /// Makes `n` bytes written with `write_at` part of the contents.
    pub fn commit(&mut self, n: usize) {
        debug_assert!(n <= self.free());
        self.len += n.min(self.free());
    }

    /// Copies contents starting `offset` bytes from the front into `dst`; returns how many.
    #[inline]
    pub fn peek_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let cap = self.buf.len();
        let n = dst.len().min(self.len - offset);
        let start = wrap(self.head + offset, cap);
        let first = n.min(cap - start);
        copy(&mut dst[..first], &self.buf[start..start + first]);
        if n > first {
            copy(&mut dst[first..n], &self.buf[..n - first]);
        }
        n
    }

    /// `peek_at` that also returns the folded one's-complement sum of the bytes copied
    /// (summed while copying: one pass over them).
    pub fn peek_at_summed(&self, offset: usize, dst: &mut [u8]) -> (usize, u16) {
        if offset >= self.len {
            return (0, 0);
        }
        let cap = self.buf.len();
        let n = dst.len().min(self.len - offset);
        let start = wrap(self.head + offset, cap);
        let first = n.min(cap - start);
        let mut acc = checksum::Accumulator::new();
        let s = checksum::copy_and_sum(&mut dst[..first], &self.buf[start..start + first]);
        acc.add_sum(s, first);
        if n > first {
            let s = checksum::copy_and_sum(&mut dst[first..n], &self.buf[..n - first]);
            acc.add_sum(s, n - first);
        }
        (n, acc.sum())
    }

    /// Drops `n` bytes from the front.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        // Never re-base the head when empty: out-of-order bytes may sit past the end.
        if n > 0 {
            self.head = wrap(self.head + n, self.buf.len());
        }
    }

    /// Reads and drops up to `dst.len()` bytes from the front.
    #[inline]
    pub fn read(&mut self, dst: &mut [u8]) -> usize {
        let n = self.peek_at(0, dst);
        self.consume(n);
        n
    }

    /// All contents, as a vector (export only).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.peek_at(0, &mut v);
        v
    }
}

/// Out-of-order ranges received beyond `rcv_nxt`, as offsets from it, sorted and
/// disjoint. A fixed number of ranges: a segment that would need more is dropped.
#[derive(Clone, Debug, Default)]
pub struct Assembler {
    ranges: [(u32, u32); Assembler::MAX],
    len: usize,
    /// Index of the range that took the most recent segment (reported first in SACK).
    pub last: Option<usize>,
}

impl Assembler {
    pub const MAX: usize = 16;

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges[..self.len]
    }
    /// Adds `[start, end)`; returns false when it does not fit.
    pub fn add(&mut self, start: u32, end: u32) -> bool {
        if start >= end {
            return true;
        }
        // First range whose end reaches start.
        let mut i = 0;
        while i < self.len && self.ranges[i].1 < start {
            i += 1;
        }
        // Ranges i..j overlap or touch [start, end).
        let mut j = i;
        while j < self.len && self.ranges[j].0 <= end {
            j += 1;
        }
        if i == j {
            if self.len == Self::MAX {
                return false;
            }
            self.ranges.copy_within(i..self.len, i + 1);
            self.ranges[i] = (start, end);
            self.len += 1;
        } else {
            let s = start.min(self.ranges[i].0);
            let e = end.max(self.ranges[j - 1].1);
            self.ranges[i] = (s, e);
            self.ranges.copy_within(j..self.len, i + 1);
            self.len -= j - i - 1;
        }
        self.last = Some(i);
        true
    }

    /// Contents advanced by `n` bytes (in-order data arrived): returns how many bytes past
    /// `n` are already present (the first range, if it now starts at or before `n`).
    #[inline]
    pub fn advance(&mut self, n: u32) -> u32 {
        if self.len == 0 {
            return 0;
        }
        self.advance_ranges(n)
    }

    fn advance_ranges(&mut self, n: u32) -> u32 {
        let mut end = n;
        let mut removed = 0;
        while removed < self.len && self.ranges[removed].0 <= end {
            end = end.max(self.ranges[removed].1);
            removed += 1;
        }
        self.ranges.copy_within(removed..self.len, 0);
        self.len -= removed;
        for r in &mut self.ranges[..self.len] {
            r.0 -= end;
            r.1 -= end;
        }
        self.last = match self.last {
            Some(l) if l >= removed && self.len > 0 => Some(l - removed),
            _ => None,
        };
        end - n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_peeks() {
        let mut r = Ring::new(8);
        assert_eq!(r.write(b"abcdef"), 6);
        let mut b = [0u8; 4];
        assert_eq!(r.read(&mut b), 4);
        assert_eq!(&b, b"abcd");
        assert_eq!(r.write(b"ghijklmn"), 6);
        assert_eq!(r.len(), 8);
        let mut all = [0u8; 8];
        assert_eq!(r.peek_at(0, &mut all), 8);
        assert_eq!(&all, b"efghijkl");
        assert_eq!(r.peek_at(5, &mut b), 3);
        assert_eq!(&b[..3], b"jkl");
        r.consume(8);
        assert!(r.is_empty());
    }

    #[test]
    fn ring_out_of_order_then_commit() {
        let mut r = Ring::new(8);
        r.write(b"xy");
        r.consume(2);
        assert_eq!(r.write_at(3, b"defgh"), 5);
        assert_eq!(r.write_at(0, b"abc"), 3);
        r.commit(8);
        assert_eq!(r.to_vec(), b"abcdefgh");
        assert_eq!(r.write_at(0, b"z"), 0);
        r.resize(16);
        assert_eq!(r.to_vec(), b"abcdefgh");
        assert_eq!(r.free(), 8);
    }

    #[test]
    fn assembler_merges_and_advances() {
        let mut a = Assembler::default();
        assert!(a.add(10, 20));
        assert!(a.add(30, 40));
        assert!(a.add(20, 25));
        assert_eq!(a.ranges(), &[(10, 25), (30, 40)]);
        assert!(a.add(5, 35));
        assert_eq!(a.ranges(), &[(5, 40)]);
        assert_eq!(a.advance(3), 0);
        assert_eq!(a.ranges(), &[(2, 37)]);
        assert_eq!(a.advance(2), 35);
        assert!(a.is_empty());
        a.add(5, 10);
        a.add(12, 20);
        a.add(30, 31);
        assert_eq!(a.advance(15), 5);
        assert_eq!(a.ranges(), &[(10, 11)]);
        a = Assembler::default();
        for k in 0..Assembler::MAX as u32 {
            assert!(a.add(10 * k + 5, 10 * k + 6));
        }
        assert!(!a.add(1000, 1001));
        assert!(a.add(6, 15)); // joins two
        assert_eq!(a.ranges()[0], (5, 16));
    }
}
