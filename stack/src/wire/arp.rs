//! ARP (RFC 826) for Ethernet and IPv4 only.

use super::{read_ipv4, read_u16, write_ipv4, write_u16, MacAddr, Result, WireError};
use core::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOperation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            o => ArpOperation::Unknown(o),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(o: ArpOperation) -> u16 {
        match o {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

/// A view of an ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }
    /// Checks the fixed part and the address fields its lengths announce fit.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = ArpPacket { buffer };
        let b = p.buffer.as_ref();
        if b.len() < 8 {
            return Err(WireError::Truncated);
        }
        let need = 8 + 2 * (p.hardware_len() as usize + p.protocol_len() as usize);
        if b.len() < need {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 0)
    }
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[4]
    }
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[5]
    }
    pub fn operation(&self) -> ArpOperation {
        read_u16(self.buffer.as_ref(), 6).into()
    }
    fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == 1
            && self.protocol_type() == 0x0800
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }
}

/// An Ethernet/IPv4 ARP packet as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub source_mac: MacAddr,
    pub source_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr> {
        if !packet.is_ethernet_ipv4() {
            return Err(WireError::Unsupported);
        }
        let b = packet.buffer.as_ref();
        Ok(ArpRepr {
            operation: packet.operation(),
            source_mac: MacAddr::from_bytes(&b[8..14]),
            source_ip: read_ipv4(b, 14),
            target_mac: MacAddr::from_bytes(&b[18..24]),
            target_ip: read_ipv4(b, 24),
        })
    }
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }
    /// Writes the packet into the start of `buf` (at least [`PACKET_LEN`] bytes).
    pub fn emit(&self, buf: &mut [u8]) {
        write_u16(buf, 0, 1);
        write_u16(buf, 2, 0x0800);
        buf[4] = 6;
        buf[5] = 4;
        write_u16(buf, 6, self.operation.into());
        buf[8..14].copy_from_slice(&self.source_mac.0);
        write_ipv4(buf, 14, self.source_ip);
        buf[18..24].copy_from_slice(&self.target_mac.0);
        write_ipv4(buf, 24, self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let r = ArpRepr {
            operation: ArpOperation::Request,
            source_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            source_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut b = [0u8; PACKET_LEN];
        r.emit(&mut b);
        assert_eq!(&b[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap(), r);
        assert_eq!(
            ArpPacket::new_checked(&b[..27]).unwrap_err(),
            WireError::Truncated
        );
        b[5] = 16; // IPv6-sized protocol addresses: announced longer than the buffer
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = ArpRepr::parse(&p);
            }
        }
    }
}
