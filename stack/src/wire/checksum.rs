//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
//!
//! Fast path: sum native-endian 32-bit words into a 64-bit accumulator (no carry
//! handling needed for buffers under 16 GiB, and LLVM vectorizes the loop), fold, and
//! byte-swap at the end (RFC 1071 §2(B): the sum is byte-order independent).

use core::net::Ipv4Addr;

/// Adds `data` (as if it started at an even offset) to a native-endian 64-bit partial
/// sum. Full-size segments take a 256-bit vector loop where the CPU has AVX2.
#[inline]
fn sum_native(data: &[u8], acc: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= 256 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { sum_native_avx2(data, acc) };
    }
    sum_native_portable(data, acc)
}

/// The same loop compiled for AVX2, which LLVM vectorizes 256 bits wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_native_avx2(data: &[u8], acc: u64) -> u64 {
    sum_native_portable(data, acc)
}

#[inline(always)]
fn sum_native_portable(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        let mut s = 0u64;
        for w in c.chunks_exact(4) {
            s += u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
        }
        acc += s;
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        acc += u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut t = [0u8; 4];
        t[..tail.len()].copy_from_slice(tail);
        acc += u32::from_ne_bytes(t) as u64;
    }
    acc
}

/// Folds a native-endian 64-bit partial sum to a big-endian 16-bit one's-complement sum.
#[inline]
fn fold_native(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::from_be(acc as u16)
}

/// One's-complement addition of two folded sums.
#[inline]
pub const fn add(a: u16, b: u16) -> u16 {
    let s = a as u32 + b as u32;
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The folded (not complemented) one's-complement sum of `data`.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    if let Ok(h) = <&[u8; 20]>::try_from(data) {
        return sum20(h);
    }
    fold_native(sum_native(data, 0))
}

/// The sum of an option-less IPv4 header (and of a bare TCP header): five 32-bit
/// words, no loops.
#[inline]
fn sum20(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    fold_native(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// The checksum field value for `data` (complement of the sum).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// The folded sum of the IPv4 pseudo-header (RFC 793/768): source, destination,
/// zero, protocol, and the transport length.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let mut acc = u32::from_be_bytes([s[0], s[1], 0, 0]) >> 16;
    acc += u16::from_be_bytes([s[2], s[3]]) as u32;
    acc += u16::from_be_bytes([d[0], d[1]]) as u32;
    acc += u16::from_be_bytes([d[2], d[3]]) as u32;
    acc += protocol as u32;
    acc += length as u32;
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for a transport segment (TCP/UDP) with its pseudo-header.
/// `segment` includes the transport header with the checksum field as it is (zero when
/// computing, the received value when verifying: then a correct segment gives 0).
#[inline]
pub fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u16;
    !add(pseudo_header_sum(src, dst, protocol, len), sum(segment))
}

/// Copies `src` into `dst` (same length) and returns the folded sum of the bytes,
/// touching each byte once: used where the stack copies a payload into a frame.
#[inline]
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u16 {
    assert_eq!(dst.len(), src.len(), "copy_and_sum: lengths differ");
    let mut acc = 0u64;
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = u64::from_ne_bytes([sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7]]);
        dc.copy_from_slice(&v.to_ne_bytes());
        acc += (v & 0xffff_ffff) + (v >> 32);
    }
    let d_rest = d.into_remainder();
    let s_rest = s.remainder();
    d_rest.copy_from_slice(s_rest);
    fold_native(sum_native(s_rest, acc))
}

/// Accumulates a sum over pieces of any length (odd lengths included), as if they were
/// one contiguous buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Accumulator {
    sum: u16,
    odd: bool,
}

impl Accumulator {
    pub const fn new() -> Self {
        Accumulator { sum: 0, odd: false }
    }
    /// Starts from an already folded sum (e.g. a pseudo-header sum).
    pub const fn with_sum(sum: u16) -> Self {
        Accumulator { sum, odd: false }
    }
    pub fn add_bytes(&mut self, data: &[u8]) {
        let s = sum(data);
        // A piece starting at an odd offset contributes its sum byte-swapped.
        self.sum = add(self.sum, if self.odd { s.swap_bytes() } else { s });
        self.odd ^= data.len() % 2 == 1;
    }
    /// Adds a folded sum of an even-offset piece of `len` bytes.
    pub fn add_sum(&mut self, s: u16, len: usize) {
        self.sum = add(self.sum, if self.odd { s.swap_bytes() } else { s });
        self.odd ^= len % 2 == 1;
    }
    pub fn sum(&self) -> u16 {
        self.sum
    }
    /// The checksum field value (complement of the sum).
    pub fn finish(&self) -> u16 {
        !self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook definition, word by word.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += w as u32;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn known_ipv4_header() {
        // A real IPv4 header (checksum field b861 included): verifies to zero.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0);
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let fast = sum(&data);
            let slow = reference_sum(&data);
            // 0x0000 and 0xffff are both one's-complement zero.
            prop_assert!(fast == slow || (fast | slow == 0xffff && fast & slow == 0), "{fast:x} {slow:x}");
        }

        #[test]
        fn copy_and_sum_copies_and_sums(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = vec![0u8; data.len()];
            let s = copy_and_sum(&mut out, &data);
            prop_assert_eq!(&out, &data);
            prop_assert_eq!(s, sum(&data));
        }

        #[test]
        fn accumulator_over_pieces(data in proptest::collection::vec(any::<u8>(), 0..200), cut1 in 0usize..200, cut2 in 0usize..200) {
            let a = cut1.min(data.len());
            let b = cut2.min(data.len()).max(a);
            let mut acc = Accumulator::new();
            acc.add_bytes(&data[..a]);
            acc.add_bytes(&data[a..b]);
            acc.add_bytes(&data[b..]);
            let whole = sum(&data);
            let pieces = acc.sum();
            prop_assert!(whole == pieces || (whole | pieces == 0xffff && whole & pieces == 0));
        }
    }
}
