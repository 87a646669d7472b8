//! UDP (RFC 768).

use super::checksum::{self, PseudoHeaderAddr};
use super::{read_u16, write_u16, Result, WireError};

pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 6;

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }
    /// Checks the header fits and the length field is at least the header and at most
    /// the buffer (the buffer is the IP payload, so it may not be longer than the datagram
    /// except by IP padding).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = UdpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = p.len() as usize;
        if l < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if l > len {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }
    /// The length field (header + payload).
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), CHECKSUM_OFFSET)
    }
    /// The payload, bounded by the length field. Call on a checked view only.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
    }
    /// Verifies the checksum with the pseudo-header; a zero field means "none" over
    /// IPv4 and is invalid over IPv6 (RFC 8200 §8.1).
    pub fn verify_checksum<A: PseudoHeaderAddr>(&self, src: A, dst: A) -> bool {
        if self.checksum() == 0 {
            return A::UDP_ZERO_CHECKSUM_MEANS_NONE;
        }
        let d = &self.buffer.as_ref()[..self.len() as usize];
        checksum::transport_checksum(src, dst, 17, d) == 0
    }
}

/// A UDP header as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a checked view; verifies the checksum when `verify_checksum`.
    /// Port 0 as destination is malformed.
    pub fn parse<T: AsRef<[u8]>, A: PseudoHeaderAddr>(
        packet: &UdpPacket<T>,
        src: A,
        dst: A,
        verify_checksum: bool,
    ) -> Result<UdpRepr> {
        if packet.dst_port() == 0 {
            return Err(WireError::Malformed);
        }
        if verify_checksum && !packet.verify_checksum(src, dst) {
            return Err(WireError::Checksum);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }
    /// Writes the 8-byte header for a payload of `payload_len` bytes, checksum zero.
    pub fn emit_header(&self, buf: &mut [u8], payload_len: usize) {
        write_u16(buf, 0, self.src_port);
        write_u16(buf, 2, self.dst_port);
        write_u16(buf, 4, (HEADER_LEN + payload_len) as u16);
        write_u16(buf, CHECKSUM_OFFSET, 0);
    }
    /// Writes header and payload into `buf` (`8 + payload.len()` bytes) and, when
    /// `fill_checksum`, the checksum (computed while copying the payload).
    pub fn emit<A: PseudoHeaderAddr>(
        &self,
        buf: &mut [u8],
        src: A,
        dst: A,
        payload: &[u8],
        fill_checksum: bool,
    ) {
        self.emit_header(buf, payload.len());
        let total = HEADER_LEN + payload.len();
        let psum = checksum::copy_and_sum(&mut buf[HEADER_LEN..total], payload);
        if fill_checksum {
            let mut acc = checksum::Accumulator::with_sum(checksum::pseudo_header_sum(
                src,
                dst,
                17,
                total as u16,
            ));
            acc.add_bytes(&buf[..HEADER_LEN]);
            acc.add_sum(psum, payload.len());
            write_u16(buf, CHECKSUM_OFFSET, nonzero_checksum(acc.finish()));
        }
    }
}

/// A computed UDP checksum of zero is sent as 0xffff (zero means "no checksum").
pub const fn nonzero_checksum(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use core::net::{Ipv4Addr, Ipv6Addr};

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    #[test]
    fn round_trip() {
        let r = UdpRepr {
            src_port: 5000,
            dst_port: 53,
        };
        let mut b = [0u8; 13];
        r.emit(&mut b, SRC, DST, b"hello", true);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert_eq!(UdpRepr::parse(&p, SRC, DST, true).unwrap(), r);
        // Wrong pseudo-header: rejected.
        assert_eq!(
            UdpRepr::parse(&p, SRC, SRC, true).unwrap_err(),
            WireError::Checksum
        );
        // Checksum zero means none.
        b[6] = 0;
        b[7] = 0;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(UdpRepr::parse(&p, SRC, SRC, true).is_ok());
    }

    #[test]
    fn checksum_matches_plain_computation() {
        let r = UdpRepr {
            src_port: 1,
            dst_port: 2,
        };
        for len in 0..20 {
            let payload: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut b = vec![0u8; 8 + len];
            r.emit(&mut b, SRC, DST, &payload, true);
            assert_eq!(
                checksum::transport_checksum(SRC, DST, 17, &b),
                0,
                "len {len}"
            );
        }
    }

    #[test]
    fn ipv6_checksum_known_value_and_zero_invalid() {
        // scapy 2.8.0: raw(IPv6(src="fd77::1", dst="fd77::2")/UDP(sport=5000, dport=53)
        // /Raw(b"hello")) has UDP bytes 1388 0035 000d ad52 "hello".
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fd77::1".parse().unwrap(), "fd77::2".parse().unwrap());
        let r = UdpRepr {
            src_port: 5000,
            dst_port: 53,
        };
        let mut b = [0u8; 13];
        r.emit(&mut b, src, dst, b"hello", true);
        assert_eq!(&b[..8], &[0x13, 0x88, 0, 0x35, 0, 0x0d, 0xad, 0x52]);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(UdpRepr::parse(&p, src, dst, true).unwrap(), r);
        assert_eq!(
            UdpRepr::parse(&p, dst, dst, true).unwrap_err(),
            WireError::Checksum
        );
        // Over IPv6 a zero checksum is not "none" but invalid (RFC 8200 §8.1).
        b[6] = 0;
        b[7] = 0;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            UdpRepr::parse(&p, src, dst, true).unwrap_err(),
            WireError::Checksum
        );
    }

    #[test]
    fn bad_length() {
        let mut b = [0u8; 8];
        write_u16(&mut b, 4, 7);
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        write_u16(&mut b, 4, 9);
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = UdpRepr::parse(&p, SRC, DST, true);
                let _ = p.payload();
            }
        }
    }
}
