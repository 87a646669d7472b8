//! TCP header: a view with checked accessors ([`TcpPacket`]) and a parsed form
//! ([`TcpRepr`]) that parses and emits every option the stack speaks: MSS, window
//! scale, SACK-permitted, SACK blocks and timestamps.

use super::checksum::PseudoHeaderAddr;
use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A TCP sequence number: arithmetic and comparisons wrap modulo 2^32 (RFC 9293 3.4).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance `self - other`, meaningful while both are within 2^31.
    pub const fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self > other {
            self
        } else {
            other
        }
    }
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self < other {
            self
        } else {
            other
        }
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, n: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n as u32))
    }
}

impl AddAssign<u32> for SeqNumber {
    fn add_assign(&mut self, n: u32) {
        self.0 = self.0.wrapping_add(n);
    }
}

impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(n))
    }
}

/// `a - b` as an unsigned byte count; callers guarantee `a >= b`.
impl Sub<SeqNumber> for SeqNumber {
    type Output = u32;
    fn sub(self, other: SeqNumber) -> u32 {
        self.0.wrapping_sub(other.0)
    }
}

pub use super::WireError;

pub mod field {
    pub const SRC_PORT: core::ops::Range<usize> = 0..2;
    pub const DST_PORT: core::ops::Range<usize> = 2..4;
    pub const SEQ: core::ops::Range<usize> = 4..8;
    pub const ACK: core::ops::Range<usize> = 8..12;
    pub const FLAGS: core::ops::Range<usize> = 12..14;
    pub const WINDOW: core::ops::Range<usize> = 14..16;
    pub const CHECKSUM: core::ops::Range<usize> = 16..18;
    pub const URGENT: core::ops::Range<usize> = 18..20;
    pub const OPTIONS_START: usize = 20;
}

pub const HEADER_LEN: usize = 20;
/// Largest header: data offset 15 words.
pub const MAX_HEADER_LEN: usize = 60;

pub mod flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
}

/// A read/write view of a TCP segment in a byte buffer.
#[derive(Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}
#[inline]
fn be32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; use [`TcpPacket::new_checked`] on input.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after checking that the header (with options) fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = TcpPacket { buffer };
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), field::SEQ))
    }
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(be32(self.buffer.as_ref(), field::ACK))
    }
    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[12] >> 4) as usize) * 4
    }
    /// The nine flag bits (NS ignored).
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS) & 0x0ff
    }
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }
    /// The option bytes (between the fixed header and the payload).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS_START..self.header_len()]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload().len() + self.syn() as usize + self.fin() as usize
    }
    /// Verifies the checksum over the pseudo-header (IPv4 or IPv6) and the whole segment.
    pub fn verify_checksum<A: PseudoHeaderAddr>(&self, src: A, dst: A) -> bool {
        super::checksum::transport_checksum(src, dst, 6, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn set16(&mut self, r: core::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }
    fn set32(&mut self, r: core::ops::Range<usize>, v: u32) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_src_port(&mut self, v: u16) {
        self.set16(field::SRC_PORT, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.set16(field::DST_PORT, v)
    }
    pub fn set_seq_number(&mut self, v: SeqNumber) {
        self.set32(field::SEQ, v.0)
    }
    pub fn set_ack_number(&mut self, v: SeqNumber) {
        self.set32(field::ACK, v.0)
    }
    /// Writes the data offset (header length in bytes, a multiple of 4) and the flags.
    pub fn set_header_len_and_flags(&mut self, header_len: usize, flag_bits: u16) {
        let v = ((header_len as u16 / 4) << 12) | (flag_bits & 0x0ff);
        self.set16(field::FLAGS, v)
    }
    pub fn set_window_len(&mut self, v: u16) {
        self.set16(field::WINDOW, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM, v)
    }
    pub fn set_urgent_at(&mut self, v: u16) {
        self.set16(field::URGENT, v)
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS_START..hl]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
    /// Turns a timestamps option into NOPs (the header keeps its length; the
    /// checksum must be filled again). True when there was one. A receiver then skips
    /// its PAWS check for the segment (Linux checks only segments that carry a
    /// timestamp).
    pub fn blank_timestamps(&mut self) -> bool {
        let opts = self.options_mut();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                opt::END => break,
                opt::NOP => i += 1,
                kind => {
                    let Some(&len) = opts.get(i + 1) else {
                        break;
                    };
                    let len = usize::from(len);
                    if len < 2 || i + len > opts.len() {
                        break;
                    }
                    if kind == opt::TIMESTAMPS {
                        opts[i..i + len].fill(opt::NOP);
                        return true;
                    }
                    i += len;
                }
            }
        }
        false
    }
    /// Computes and stores the checksum (for hosts that do not offload it).
    pub fn fill_checksum<A: PseudoHeaderAddr>(&mut self, src: A, dst: A) {
        self.set_checksum(0);
        let c = super::checksum::transport_checksum(src, dst, 6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// Option kinds.
mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// Up to four SACK blocks, `[left, right)` each (RFC 2018).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    pub blocks: [(SeqNumber, SeqNumber); 4],
    pub len: u8,
}

impl SackBlocks {
    pub fn push(&mut self, left: SeqNumber, right: SeqNumber) -> bool {
        if (self.len as usize) < self.blocks.len() {
            self.blocks[self.len as usize] = (left, right);
            self.len += 1;
            true
        } else {
            false
        }
    }
    pub fn as_slice(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.blocks[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A parsed TCP header. Payload stays in the buffer; `payload_len` says how much there is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    /// Flag bits ([`flags`]).
    pub flags: u16,
    /// The raw (unscaled) window field.
    pub window: u16,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack: SackBlocks,
    /// (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    pub payload_len: usize,
}

impl TcpRepr {
    pub fn syn(&self) -> bool {
        self.flags & flags::SYN != 0
    }
    pub fn fin(&self) -> bool {
        self.flags & flags::FIN != 0
    }
    pub fn rst(&self) -> bool {
        self.flags & flags::RST != 0
    }
    pub fn has_ack(&self) -> bool {
        self.flags & flags::ACK != 0
    }
    /// Sequence space: payload + SYN + FIN.
    pub fn segment_len(&self) -> u32 {
        self.payload_len as u32 + self.syn() as u32 + self.fin() as u32
    }

    /// Parses the header and options of a segment whose checksum the caller verified.
    /// Unknown options are skipped; malformed option lengths are an error.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Result<TcpRepr, WireError> {
        let mut repr = TcpRepr::default();
        repr.parse_from(packet)?;
        Ok(repr)
    }

    /// [`TcpRepr::parse`] into `self` (every field is written; after an error `self`
    /// holds a partial parse): the per-segment receive path parses into a header it
    /// owns instead of moving one out of a `Result`.
    #[inline]
    pub fn parse_from<T: AsRef<[u8]>>(&mut self, packet: &TcpPacket<T>) -> Result<(), WireError> {
        packet.check_len()?;
        *self = TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window_len(),
            payload_len: packet.payload().len(),
            ..TcpRepr::default()
        };
        if packet.src_port() == 0 || packet.dst_port() == 0 {
            return Err(WireError::Malformed);
        }
        let mut o = packet.options();
        // The options of nearly every segment of an established connection with
        // timestamps: NOP, NOP, TS (RFC 7323 appendix A layout). Same result as the loop.
        if let Ok(ts) = <&[u8; 12]>::try_from(o) {
            if ts[..4] == [opt::NOP, opt::NOP, opt::TIMESTAMPS, 10] {
                let v = u32::from_be_bytes([ts[4], ts[5], ts[6], ts[7]]);
                let e = u32::from_be_bytes([ts[8], ts[9], ts[10], ts[11]]);
                self.timestamps = Some((v, e));
                return Ok(());
            }
        }
        while let Some(&kind) = o.first() {
            match kind {
                opt::END => break,
                opt::NOP => {
                    o = &o[1..];
                    continue;
                }
                _ => {}
            }
            let len = *o.get(1).ok_or(WireError::Malformed)? as usize;
            if len < 2 || len > o.len() {
                return Err(WireError::Malformed);
            }
            let body = &o[2..len];
            match (kind, body.len()) {
                (opt::MSS, 2) => self.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                (opt::WSCALE, 1) => self.window_scale = Some(body[0].min(14)),
                (opt::SACK_PERMITTED, 0) => self.sack_permitted = true,
                (opt::SACK, n) if n % 8 == 0 && n > 0 => {
                    for b in body.chunks_exact(8) {
                        let l = SeqNumber(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                        let r = SeqNumber(u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
                        self.sack.push(l, r);
                    }
                }
                (opt::TIMESTAMPS, 8) => {
                    let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    self.timestamps = Some((v, e));
                }
                (opt::MSS | opt::WSCALE | opt::SACK_PERMITTED | opt::TIMESTAMPS | opt::SACK, _) => {
                    return Err(WireError::Malformed)
                }
                _ => {}
            }
            o = &o[len..];
        }
        Ok(())
    }

    /// `emit` for the header of nearly every segment after the handshake: no options
    /// but timestamps. Built in a fixed-size array and stored with one fixed-size copy;
    /// the same bytes as the general path.
    #[inline]
    fn emit_plain(&self, buf: &mut [u8]) -> usize {
        let mut h = [0u8; HEADER_LEN + 12];
        let hl = if self.timestamps.is_some() {
            HEADER_LEN + 12
        } else {
            HEADER_LEN
        };
        h[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        h[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        h[field::SEQ].copy_from_slice(&self.seq.0.to_be_bytes());
        h[field::ACK].copy_from_slice(&self.ack.0.to_be_bytes());
        let off_flags = ((hl as u16 / 4) << 12) | (self.flags & 0x0ff);
        h[field::FLAGS].copy_from_slice(&off_flags.to_be_bytes());
        h[field::WINDOW].copy_from_slice(&self.window.to_be_bytes());
        match self.timestamps {
            Some((v, e)) => {
                h[20..24].copy_from_slice(&[opt::NOP, opt::NOP, opt::TIMESTAMPS, 10]);
                h[24..28].copy_from_slice(&v.to_be_bytes());
                h[28..32].copy_from_slice(&e.to_be_bytes());
                buf[..HEADER_LEN + 12].copy_from_slice(&h);
            }
            None => buf[..HEADER_LEN].copy_from_slice(&h[..HEADER_LEN]),
        }
        hl
    }

    /// Bytes the options take when emitted, padded to a multiple of 4.
    pub fn options_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.window_scale.is_some() {
            n += 4; // NOP + 3
        }
        if self.timestamps.is_some() {
            n += 12; // 2 NOPs (or SACK-permitted) + 10
        } else if self.sack_permitted {
            n += 4;
        }
        if !self.sack.is_empty() {
            n += 4 + 8 * self.sack.len as usize; // 2 NOPs + 2 + 8n
        }
        n
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// Writes the header (checksum zero) into the front of `buf`, which must hold at least
    /// `header_len()` bytes; the payload, if any, follows it. Returns the header length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        if self.mss.is_none()
            && self.window_scale.is_none()
            && !self.sack_permitted
            && self.sack.is_empty()
        {
            return self.emit_plain(buf);
        }
        let hl = self.header_len();
        debug_assert!(hl <= MAX_HEADER_LEN && buf.len() >= hl);
        let mut p = TcpPacket::new_unchecked(&mut buf[..hl]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq);
        p.set_ack_number(self.ack);
        p.set_header_len_and_flags(hl, self.flags);
        p.set_window_len(self.window);
        p.set_checksum(0);
        p.set_urgent_at(0);
        let o = &mut buf[HEADER_LEN..hl];
        let mut i = 0;
        if let Some(mss) = self.mss {
            o[i..i + 4].copy_from_slice(&[opt::MSS, 4, (mss >> 8) as u8, mss as u8]);
            i += 4;
        }
        if let Some(ws) = self.window_scale {
            o[i..i + 4].copy_from_slice(&[opt::NOP, opt::WSCALE, 3, ws]);
            i += 4;
        }
        if let Some((v, e)) = self.timestamps {
            if self.sack_permitted {
                o[i..i + 2].copy_from_slice(&[opt::SACK_PERMITTED, 2]);
            } else {
                o[i..i + 2].copy_from_slice(&[opt::NOP, opt::NOP]);
            }
            o[i + 2] = opt::TIMESTAMPS;
            o[i + 3] = 10;
            o[i + 4..i + 8].copy_from_slice(&v.to_be_bytes());
            o[i + 8..i + 12].copy_from_slice(&e.to_be_bytes());
            i += 12;
        } else if self.sack_permitted {
            o[i..i + 4].copy_from_slice(&[opt::NOP, opt::NOP, opt::SACK_PERMITTED, 2]);
            i += 4;
        }
        if !self.sack.is_empty() {
            let n = self.sack.len as usize;
            o[i..i + 4].copy_from_slice(&[opt::NOP, opt::NOP, opt::SACK, 2 + 8 * n as u8]);
            i += 4;
            for &(l, r) in self.sack.as_slice() {
                o[i..i + 4].copy_from_slice(&l.0.to_be_bytes());
                o[i + 4..i + 8].copy_from_slice(&r.0.to_be_bytes());
                i += 8;
            }
        }
        debug_assert_eq!(i, o.len());
        hl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn seq_numbers_wrap() {
        let a = SeqNumber(u32::MAX - 5);
        let b = a + 10u32;
        assert_eq!(b.0, 4);
        assert!(b > a);
        assert!(a < b);
        assert_eq!(b - a, 10);
        assert_eq!(a.diff(b), -10);
        assert_eq!(a.max(b), b);
    }

    #[test]
    fn emit_then_parse_round_trips_every_option() {
        let mut sack = SackBlocks::default();
        sack.push(SeqNumber(100), SeqNumber(200));
        sack.push(SeqNumber(300), SeqNumber(400));
        let repr = TcpRepr {
            src_port: 1234,
            dst_port: 80,
            seq: SeqNumber(0xdeadbeef),
            ack: SeqNumber(7),
            flags: flags::SYN | flags::ACK,
            window: 65535,
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack,
            timestamps: Some((11, 22)),
            payload_len: 3,
        };
        let mut buf = [0u8; 80];
        let hl = repr.emit(&mut buf);
        assert_eq!(hl, 20 + 4 + 4 + 12 + 4 + 16);
        buf[hl..hl + 3].copy_from_slice(b"abc");
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut p = TcpPacket::new_checked(&mut buf[..hl + 3]).unwrap();
        p.fill_checksum(src, dst);
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(src, Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.payload(), b"abc");
        let back = TcpRepr::parse(&p).unwrap();
        assert_eq!(back, repr);
    }

    #[test]
    fn blanked_timestamps_leave_the_other_options_and_the_length() {
        let mut sack = SackBlocks::default();
        sack.push(SeqNumber(100), SeqNumber(200));
        let repr = TcpRepr {
            src_port: 1234,
            dst_port: 80,
            seq: SeqNumber(5),
            ack: SeqNumber(7),
            flags: flags::ACK,
            window: 100,
            sack,
            timestamps: Some((11, 22)),
            payload_len: 3,
            ..TcpRepr::default()
        };
        let mut buf = [0u8; 80];
        let hl = repr.emit(&mut buf);
        buf[hl..hl + 3].copy_from_slice(b"abc");
        let mut p = TcpPacket::new_checked(&mut buf[..hl + 3]).unwrap();
        assert!(p.blank_timestamps());
        assert!(!p.blank_timestamps(), "only one");
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum(src, dst);
        assert!(p.verify_checksum(src, dst));
        assert_eq!((p.header_len(), p.payload()), (hl, &b"abc"[..]));
        let back = TcpRepr::parse(&p).unwrap();
        assert_eq!(
            back,
            TcpRepr {
                timestamps: None,
                ..repr
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn plain_headers_are_emitted_as_by_the_general_path(
            sp in 1u16.., dp in 1u16.., seq: u32, ack: u32, flag_bits in 0u16..0x100,
            window: u16, ts: Option<(u32, u32)>,
        ) {
            let repr = TcpRepr {
                src_port: sp,
                dst_port: dp,
                seq: SeqNumber(seq),
                ack: SeqNumber(ack),
                flags: flag_bits,
                window,
                timestamps: ts,
                ..TcpRepr::default()
            };
            let mut fast = [0xaau8; MAX_HEADER_LEN];
            let n = repr.emit(&mut fast);
            proptest::prop_assert_eq!(n, repr.header_len());
            // The general path, byte by byte.
            let mut want = [0xaau8; MAX_HEADER_LEN];
            want[0..2].copy_from_slice(&sp.to_be_bytes());
            want[2..4].copy_from_slice(&dp.to_be_bytes());
            want[4..8].copy_from_slice(&seq.to_be_bytes());
            want[8..12].copy_from_slice(&ack.to_be_bytes());
            want[12..14].copy_from_slice(&((((n / 4) as u16) << 12) | flag_bits).to_be_bytes());
            want[14..16].copy_from_slice(&window.to_be_bytes());
            want[16..20].copy_from_slice(&[0, 0, 0, 0]);
            if let Some((v, e)) = ts {
                want[20..24].copy_from_slice(&[1, 1, 8, 10]);
                want[24..28].copy_from_slice(&v.to_be_bytes());
                want[28..32].copy_from_slice(&e.to_be_bytes());
            }
            proptest::prop_assert_eq!(&fast[..], &want[..]);
            let back = TcpRepr::parse(&TcpPacket::new_checked(&fast[..n]).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, TcpRepr { payload_len: 0, ..repr });
        }
    }

    #[test]
    fn sack_permitted_without_timestamps() {
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            flags: flags::SYN,
            sack_permitted: true,
            ..TcpRepr::default()
        };
        let mut buf = [0u8; 60];
        let hl = repr.emit(&mut buf);
        assert_eq!(hl, 24);
        let back = TcpRepr::parse(&TcpPacket::new_checked(&buf[..hl]).unwrap()).unwrap();
        assert!(back.sack_permitted && back.timestamps.is_none());
    }

    #[test]
    fn rejects_truncated_and_malformed() {
        assert_eq!(
            TcpPacket::new_checked(&[0u8; 19][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut buf = [0u8; 24];
        buf[0..2].copy_from_slice(&1u16.to_be_bytes());
        buf[2..4].copy_from_slice(&2u16.to_be_bytes());
        buf[12] = 4 << 4; // data offset 16 bytes < 20
        assert_eq!(
            TcpPacket::new_checked(&buf[..]).unwrap_err(),
            WireError::Malformed
        );
        buf[12] = 7 << 4; // 28 bytes > 24
        assert_eq!(
            TcpPacket::new_checked(&buf[..]).unwrap_err(),
            WireError::Truncated
        );
        buf[12] = 6 << 4;
        buf[20..24].copy_from_slice(&[opt::MSS, 9, 0, 0]); // length past the options
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p).unwrap_err(), WireError::Malformed);
        buf[20..24].copy_from_slice(&[opt::MSS, 3, 0, 0]); // wrong MSS length
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p).unwrap_err(), WireError::Malformed);
        buf[20..24].copy_from_slice(&[99, 0, 0, 0]); // length 0
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p).unwrap_err(), WireError::Malformed);
        buf[20..24].copy_from_slice(&[99, 2, opt::NOP, opt::END]); // unknown skipped
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(TcpRepr::parse(&p).is_ok());
    }

    #[test]
    fn checksum_known_value() {
        // Odd length exercises the trailing byte.
        let seg = [
            0u8, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0, 0xab,
        ];
        let src = Ipv4Addr::new(192, 168, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 0, 2);
        // Reference: 16-bit word sum done by hand in a different way.
        let mut words: u32 = 0;
        for o in [src.octets(), dst.octets()] {
            words += u16::from_be_bytes([o[0], o[1]]) as u32;
            words += u16::from_be_bytes([o[2], o[3]]) as u32;
        }
        words += 6 + seg.len() as u32;
        for c in seg.chunks(2) {
            words += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
        while words >> 16 != 0 {
            words = (words & 0xffff) + (words >> 16);
        }
        assert_eq!(
            super::super::checksum::transport_checksum(src, dst, 6, &seg),
            !(words as u16)
        );
    }

    #[test]
    fn ipv6_checksum_known_value() {
        // The same segment from fd77::1 to fd77::2: scapy 2.8.0 gives checksum 0x09ec
        // (`raw(IPv6(...)/TCP(sport=1, dport=2, flags="S", window=0)/Raw(b"\xab"))`).
        let mut seg = [
            0u8, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0, 0xab,
        ];
        let src: Ipv6Addr = "fd77::1".parse().unwrap();
        let dst: Ipv6Addr = "fd77::2".parse().unwrap();
        let mut p = TcpPacket::new_checked(&mut seg[..]).unwrap();
        p.fill_checksum(src, dst);
        assert_eq!(p.checksum(), 0x09ec);
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(src, src));
    }
}
