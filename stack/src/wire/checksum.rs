//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
//!
//! Fast path: sum native-endian 32-bit words into a 64-bit accumulator (no carry
//! handling needed for buffers under 16 GiB, and LLVM vectorizes the loop), fold, and
//! byte-swap at the end (RFC 1071 §2(B): the sum is byte-order independent).

use core::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` (as if it started at an even offset) to a native-endian 64-bit partial
/// sum. Full-size segments take a 256-bit vector loop where the CPU has AVX2.
#[inline]
fn sum_native(data: &[u8], acc: u64) -> u64 {
    // Headers and small segments: a plain word loop beats setting up the lanes.
    if data.len() < 64 {
        return sum_tail(data, acc);
    }
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

/// 32-byte chunks one lane pass can take before a 32-bit lane could overflow (each
/// adds at most 0xffff per chunk).
const CHUNKS_PER_PASS: usize = 65535;

/// Sums 16-bit native-endian words into sixteen 32-bit lanes (one per word position of
/// a 32-byte chunk): LLVM turns the loop body into two zero-extending loads and two
/// vector adds, where summing 32-bit words into 64 bits needs widening shuffles.
/// The one's-complement sum is the same either way (2^16 ≡ 1 mod 0xffff).
#[inline(always)]
fn sum_native_portable(data: &[u8], mut acc: u64) -> u64 {
    let whole = data.len() / 32 * 32;
    for block in data[..whole].chunks(32 * CHUNKS_PER_PASS) {
        let mut lanes = [0u32; 16];
        for c in block.chunks_exact(32) {
            add_chunk(&mut lanes, c.try_into().expect("32-byte chunk"));
        }
        acc += lanes.iter().map(|&l| l as u64).sum::<u64>();
    }
    sum_tail(&data[whole..], acc)
}

/// Adds the sixteen 16-bit words of a chunk to the lanes.
#[inline(always)]
fn add_chunk(lanes: &mut [u32; 16], c: &[u8; 32]) {
    for (i, lane) in lanes.iter_mut().enumerate() {
        *lane += u16::from_ne_bytes([c[2 * i], c[2 * i + 1]]) as u32;
    }
}

/// 64-bit one's-complement addition: the carry out goes back in.
#[inline(always)]
fn add_carry(acc: u64, v: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(v);
    s + carry as u64
}

/// Adds a short piece (as if at an even offset): 8-byte words with end-around carry,
/// then 4, 2 and 1 bytes.
#[inline(always)]
fn sum_tail(rest: &[u8], mut acc: u64) -> u64 {
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        acc = add_carry(acc, u64::from_ne_bytes(w.try_into().expect("8-byte word")));
    }
    let mut tail = words.remainder();
    if tail.len() >= 4 {
        acc = add_carry(
            acc,
            u32::from_ne_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64,
        );
        tail = &tail[4..];
    }
    // The last 0..3 bytes as the start of one more zero-padded 32-bit word.
    let mut t = [0u8; 4];
    match tail.len() {
        3 => t[..3].copy_from_slice(tail),
        2 => t[..2].copy_from_slice(tail),
        1 => t[0] = tail[0],
        _ => {}
    }
    add_carry(acc, u32::from_ne_bytes(t) as u64)
}

/// Folds a native-endian 64-bit partial sum to a big-endian 16-bit one's-complement sum.
#[inline]
fn fold_native(acc: u64) -> u16 {
    // Fixed steps, no loop: 64 -> 33 -> 17 -> 16 bits (the last add cannot carry).
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
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

/// An address that goes into a transport pseudo-header: IPv4 (RFC 793/768) or IPv6
/// (RFC 8200 §8.1). One generic pseudo-header sum serves both families.
pub trait PseudoHeaderAddr: Copy {
    /// The sum of the address's big-endian 16-bit words, unfolded (at most 8 × 0xffff).
    fn word_sum(self) -> u32;
    /// Whether a UDP checksum field of zero means "no checksum" (IPv4) rather than a
    /// malformed datagram (IPv6, RFC 8200 §8.1).
    const UDP_ZERO_CHECKSUM_MEANS_NONE: bool;
}

impl PseudoHeaderAddr for Ipv4Addr {
    #[inline]
    fn word_sum(self) -> u32 {
        let b = self.to_bits();
        (b >> 16) + (b & 0xffff)
    }
    const UDP_ZERO_CHECKSUM_MEANS_NONE: bool = true;
}

impl PseudoHeaderAddr for Ipv6Addr {
    #[inline]
    fn word_sum(self) -> u32 {
        self.segments().iter().map(|&w| w as u32).sum()
    }
    const UDP_ZERO_CHECKSUM_MEANS_NONE: bool = false;
}

/// The folded sum of the pseudo-header: source, destination, the protocol (IPv6: next
/// header) and the transport length. IPv6's 32-bit length and 24 zero bits sum the same
/// as IPv4's 16-bit length and 8 zero bits for any length that fits 16 bits (jumbograms
/// are not supported).
#[inline]
pub fn pseudo_header_sum<A: PseudoHeaderAddr>(src: A, dst: A, protocol: u8, length: u16) -> u16 {
    // At most 18 16-bit terms: two fixed folds suffice (no loop).
    let mut acc = src.word_sum() + dst.word_sum() + protocol as u32 + length as u32;
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum field value for a transport segment (TCP/UDP/ICMPv6) with its
/// pseudo-header. `segment` includes the transport header with the checksum field as it
/// is (zero when computing, the received value when verifying: then a correct segment
/// gives 0).
#[inline]
pub fn transport_checksum<A: PseudoHeaderAddr>(
    src: A,
    dst: A,
    protocol: u8,
    segment: &[u8],
) -> u16 {
    let len = segment.len() as u16;
    !add(pseudo_header_sum(src, dst, protocol, len), sum(segment))
}

/// Copies `src` into `dst` (same length) and returns the folded sum of the bytes,
/// touching each byte once: used where the stack copies a payload into a frame.
#[inline]
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u16 {
    assert_eq!(dst.len(), src.len(), "copy_and_sum: lengths differ");
    if src.len() < 64 {
        dst.copy_from_slice(src);
        return fold_native(sum_tail(src, 0));
    }
    #[cfg(target_arch = "x86_64")]
    if src.len() >= 256 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return fold_native(unsafe { copy_and_sum_avx2(dst, src) });
    }
    fold_native(copy_and_sum_portable(dst, src))
}

/// The same loop compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_and_sum_avx2(dst: &mut [u8], src: &[u8]) -> u64 {
    copy_and_sum_portable(dst, src)
}

/// `sum_native_portable` with a store of each chunk: one pass over the bytes.
#[inline(always)]
fn copy_and_sum_portable(dst: &mut [u8], src: &[u8]) -> u64 {
    let mut acc = 0u64;
    let whole = src.len() / 32 * 32;
    let (dst_whole, dst_rest) = dst.split_at_mut(whole);
    let blocks = dst_whole
        .chunks_mut(32 * CHUNKS_PER_PASS)
        .zip(src[..whole].chunks(32 * CHUNKS_PER_PASS));
    for (db, sb) in blocks {
        let mut lanes = [0u32; 16];
        for (dc, sc) in db.chunks_exact_mut(32).zip(sb.chunks_exact(32)) {
            let c: &[u8; 32] = sc.try_into().expect("32-byte chunk");
            dc.copy_from_slice(c);
            add_chunk(&mut lanes, c);
        }
        acc += lanes.iter().map(|&l| l as u64).sum::<u64>();
    }
    dst_rest.copy_from_slice(&src[whole..]);
    sum_tail(&src[whole..], acc)
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

    #[test]
    fn ipv6_pseudo_header_by_hand() {
        // fd77::1 -> fe80::abcd:2, next header 58, length 0x1234: the words of
        // RFC 8200 §8.1's pseudo-header summed one by one.
        let src: core::net::Ipv6Addr = "fd77::1".parse().unwrap();
        let dst: core::net::Ipv6Addr = "fe80::abcd:2".parse().unwrap();
        let words: u32 = 0xfd77 + 0x0001 + 0xfe80 + 0xabcd + 0x0002 + 0x1234 + 58;
        let folded = ((words & 0xffff) + (words >> 16)) as u16;
        assert_eq!(pseudo_header_sum(src, dst, 58, 0x1234), folded);
        // An IPv4 address and its v4-mapped form give the same sum: ::ffff: adds 0xffff,
        // one's-complement zero.
        let v4 = Ipv4Addr::new(10, 77, 0, 1);
        assert_eq!(
            pseudo_header_sum(v4, v4, 17, 8),
            pseudo_header_sum(v4.to_ipv6_mapped(), v4.to_ipv6_mapped(), 17, 8)
        );
    }

    #[test]
    fn sums_longer_than_one_lane_pass() {
        // Over 2 MiB of 0xff.. words: the 32-bit lanes must be flushed before they wrap.
        let n = 32 * CHUNKS_PER_PASS * 2 + 77;
        let data: Vec<u8> = (0..n)
            .map(|i| if i % 5 == 0 { 0x7f } else { 0xff })
            .collect();
        let want = reference_sum(&data);
        let got = sum(&data);
        assert!(
            got == want || (got | want == 0xffff && got & want == 0),
            "{got:x} {want:x}"
        );
        let mut out = vec![0u8; n];
        assert_eq!(copy_and_sum(&mut out, &data), got);
        assert_eq!(out, data);
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
        fn copy_and_sum_copies_and_sums(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
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
