//! IPv4 (RFC 791): header checksum, options skipped, fragments detected.

use super::checksum;
use super::{read_ipv4, read_u16, write_ipv4, write_u16, Result, WireError};
use core::net::Ipv4Addr;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// An address with its prefix length (e.g. 10.77.0.1/24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// `prefix_len` is clamped to 32.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Ipv4Cidr {
            addr,
            prefix_len: if prefix_len > 32 { 32 } else { prefix_len },
        }
    }
    pub const fn netmask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len as u32)
        }
    }
    /// Whether `ip` lies in this network.
    pub const fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = self.netmask();
        (self.addr.to_bits() & m) == (ip.to_bits() & m)
    }
    /// The network's directed broadcast address (none for /31 and /32).
    pub const fn broadcast(&self) -> Option<Ipv4Addr> {
        if self.prefix_len >= 31 {
            None
        } else {
            Some(Ipv4Addr::from_bits(self.addr.to_bits() | !self.netmask()))
        }
    }
}

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }
    /// Checks that the header (with options) and the total length fit in the buffer and
    /// are consistent. The buffer may be longer than the packet (Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Ipv4Packet { buffer };
        p.check_len()?;
        Ok(p)
    }
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len() as usize;
        if hl < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let tl = self.total_len() as usize;
        if tl < hl {
            return Err(WireError::Malformed);
        }
        if len < hl || len < tl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[0] & 0x0f) * 4
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[6] & 0x40 != 0
    }
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[6] & 0x20 != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), 6) & 0x1fff) << 3
    }
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }
    pub fn header_checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 10)
    }
    pub fn src(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), 12)
    }
    pub fn dst(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), 16)
    }
    /// Whether the header checksum verifies. Call on a checked view only.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.buffer.as_ref()[..self.header_len() as usize]) == 0xffff
    }
    /// The options bytes (empty without options). Call on a checked view only.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len() as usize]
    }
    /// The whole packet (header and payload), without Ethernet padding.
    /// Call on a checked view only.
    pub fn packet_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.total_len() as usize]
    }
    /// The payload, bounded by the total length (Ethernet padding excluded).
    /// Call on a checked view only.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len() as usize..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Recomputes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len() as usize;
        let b = self.buffer.as_mut();
        write_u16(b, 10, 0);
        let c = checksum::checksum(&b[..hl]);
        write_u16(b, 10, c);
    }
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[8] = ttl;
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len() as usize;
        let tl = self.total_len() as usize;
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// An IPv4 header as values (options are not represented: parsed packets skip them,
/// emitted packets have none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Length of the payload (transport header and data).
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub dscp_ecn: u8,
}

impl Ipv4Repr {
    /// Validates version, lengths, fragments and (unless `verify_checksum` is false, when
    /// the NIC checked it) the header checksum.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>, verify_checksum: bool) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(WireError::Malformed);
        }
        if verify_checksum && !packet.verify_checksum() {
            return Err(WireError::Checksum);
        }
        if packet.is_fragment() {
            return Err(WireError::Fragment);
        }
        Ok(Ipv4Repr {
            src: packet.src(),
            dst: packet.dst(),
            protocol: packet.protocol(),
            payload_len: packet.total_len() as usize - packet.header_len() as usize,
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            dscp_ecn: packet.dscp_ecn(),
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
    /// Writes the 20-byte header into the start of `buf`; fills the checksum when
    /// `fill_checksum` (leaves it zero for a NIC that fills it). The checksum is summed
    /// from the field values, not read back from the bytes just written.
    #[inline]
    pub fn emit(&self, buf: &mut [u8], fill_checksum: bool) {
        let total = (HEADER_LEN + self.payload_len) as u16;
        let frag: u16 = if self.dont_frag { 0x4000 } else { 0 };
        let (src, dst) = (self.src.to_bits(), self.dst.to_bits());
        let c = if fill_checksum {
            let words = [
                0x4500 | self.dscp_ecn as u32,
                total as u32,
                self.ident as u32,
                frag as u32,
                (self.ttl as u32) << 8 | self.protocol as u32,
                src >> 16,
                src & 0xffff,
                dst >> 16,
                dst & 0xffff,
            ];
            let mut acc: u32 = words.iter().sum();
            acc = (acc & 0xffff) + (acc >> 16);
            acc = (acc & 0xffff) + (acc >> 16);
            !(acc as u16)
        } else {
            0
        };
        let mut h = [0u8; HEADER_LEN];
        h[0] = 0x45;
        h[1] = self.dscp_ecn;
        write_u16(&mut h, 2, total);
        write_u16(&mut h, 4, self.ident);
        write_u16(&mut h, 6, frag);
        h[8] = self.ttl;
        h[9] = self.protocol;
        write_u16(&mut h, 10, c);
        write_ipv4(&mut h, 12, self.src);
        write_ipv4(&mut h, 16, self.dst);
        buf[..HEADER_LEN].copy_from_slice(&h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 77, 0, 1),
            dst: Ipv4Addr::new(10, 77, 0, 2),
            protocol: 17,
            payload_len: 4,
            ttl: 64,
            ident: 7,
            dont_frag: true,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let r = repr();
        let mut b = [0u8; 24];
        r.emit(&mut b, true);
        b[20..].copy_from_slice(b"abcd");
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p, true).unwrap(), r);
        assert_eq!(p.payload(), b"abcd");
        b[8] = 63; // TTL changed, checksum not: rejected unless offloaded
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p, true).unwrap_err(), WireError::Checksum);
        assert!(Ipv4Repr::parse(&p, false).is_ok());
    }

    #[test]
    fn options_are_skipped() {
        let r = repr();
        let mut b = [0u8; 28];
        r.emit(&mut b, false);
        b[0] = 0x46; // IHL 6: one 4-byte option word
        write_u16(&mut b, 2, 28);
        b[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOPs + EOL
        b[24..].copy_from_slice(b"wxyz");
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        let parsed = Ipv4Repr::parse(&p, true).unwrap();
        assert_eq!(parsed.payload_len, 4);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), b"wxyz");
    }

    #[test]
    fn bad_lengths_and_fragments() {
        let r = repr();
        let mut b = [0u8; 24];
        r.emit(&mut b, true);
        assert_eq!(
            Ipv4Packet::new_checked(&b[..23]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = b;
        bad[0] = 0x44; // IHL 4 < 5
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = b;
        write_u16(&mut bad, 2, 19); // total length below header length
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut frag = b;
        write_u16(&mut frag, 6, 0x2000); // MF
        Ipv4Packet::new_checked(&mut frag[..])
            .unwrap()
            .fill_checksum();
        let p = Ipv4Packet::new_checked(&frag[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p, true).unwrap_err(), WireError::Fragment);
        let mut frag = b;
        write_u16(&mut frag, 6, 0x0010); // offset 128
        Ipv4Packet::new_checked(&mut frag[..])
            .unwrap()
            .fill_checksum();
        let p = Ipv4Packet::new_checked(&frag[..]).unwrap();
        assert_eq!(p.frag_offset(), 128);
        assert_eq!(Ipv4Repr::parse(&p, true).unwrap_err(), WireError::Fragment);
        let mut v6 = b;
        v6[0] = 0x65;
        let p = Ipv4Packet::new_checked(&v6[..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&p, false).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn cidr() {
        let c = Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 1), 24);
        assert!(c.contains(Ipv4Addr::new(10, 77, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 77, 1, 1)));
        assert_eq!(c.broadcast(), Some(Ipv4Addr::new(10, 77, 0, 255)));
        assert_eq!(Ipv4Cidr::new(c.addr, 32).broadcast(), None);
        assert!(Ipv4Cidr::new(c.addr, 0).contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = Ipv4Repr::parse(&p, true);
                let _ = (p.payload(), p.options(), p.verify_checksum());
            }
        }
    }
}
