//! Ethernet II frames, with one optional 802.1Q (or 802.1ad) VLAN tag.

use super::{read_u16, write_u16, Result, WireError};
use core::fmt;

/// A 48-bit MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn from_bytes(b: &[u8]) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[..6]);
        MacAddr(a)
    }
    pub const fn is_broadcast(&self) -> bool {
        matches!(self.0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    }
    /// Group bit set (broadcast included).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl core::str::FromStr for MacAddr {
    type Err = WireError;
    fn from_str(s: &str) -> Result<MacAddr> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or(WireError::Malformed)?;
            *b = u8::from_str_radix(p, 16).map_err(|_| WireError::Malformed)?;
        }
        if parts.next().is_some() {
            return Err(WireError::Malformed);
        }
        Ok(MacAddr(out))
    }
}

/// The EtherType field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    /// 802.1Q customer VLAN tag.
    Vlan,
    /// 802.1ad service VLAN tag (QinQ outer tag).
    QinQ,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(v) => v,
        }
    }
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;

/// A view of an Ethernet II frame (no FCS).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }
    /// Checks the buffer holds the fixed header (and the VLAN tag if one is announced).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = EthernetFrame { buffer };
        f.check_len()?;
        Ok(f)
    }
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.header_len() > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[0..6])
    }
    pub fn src(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[6..12])
    }
    /// The outer EtherType (0x8100 for a tagged frame).
    pub fn outer_ethertype(&self) -> EtherType {
        read_u16(self.buffer.as_ref(), 12).into()
    }
    fn tagged(&self) -> bool {
        matches!(self.outer_ethertype(), EtherType::Vlan | EtherType::QinQ)
    }
    /// The VLAN id of the (single, outer) tag, if the frame is tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        let b = self.buffer.as_ref();
        if self.tagged() && b.len() >= HEADER_LEN + VLAN_TAG_LEN {
            Some(read_u16(b, 14) & 0x0fff)
        } else {
            None
        }
    }
    /// The EtherType of the payload, after the VLAN tag if any.
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        if self.tagged() && b.len() >= HEADER_LEN + VLAN_TAG_LEN {
            read_u16(b, 16).into()
        } else {
            self.outer_ethertype()
        }
    }
    /// Header length including a VLAN tag.
    pub fn header_len(&self) -> usize {
        if self.tagged() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len().min(b.len())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, a: MacAddr) {
        self.buffer.as_mut()[0..6].copy_from_slice(&a.0);
    }
    pub fn set_src(&mut self, a: MacAddr) {
        self.buffer.as_mut()[6..12].copy_from_slice(&a.0);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// An Ethernet header as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: MacAddr,
    pub dst: MacAddr,
    /// 802.1Q VLAN id, if the frame carries a tag.
    pub vlan: Option<u16>,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        let ethertype = frame.ethertype();
        if matches!(ethertype, EtherType::Vlan | EtherType::QinQ) {
            // Stacked tags (QinQ): not handled.
            return Err(WireError::Unsupported);
        }
        Ok(EthernetRepr {
            src: frame.src(),
            dst: frame.dst(),
            vlan: frame.vlan_id(),
            ethertype,
        })
    }
    pub const fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }
    /// Writes the header into the start of `buf` (at least `header_len()` bytes).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0..6].copy_from_slice(&self.dst.0);
        buf[6..12].copy_from_slice(&self.src.0);
        match self.vlan {
            Some(id) => {
                write_u16(buf, 12, EtherType::Vlan.into());
                write_u16(buf, 14, id & 0x0fff);
                write_u16(buf, 16, self.ethertype.into());
            }
            None => write_u16(buf, 12, self.ethertype.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_emit_untagged() {
        let repr = EthernetRepr {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr::BROADCAST,
            vlan: None,
            ethertype: EtherType::Arp,
        };
        let mut buf = [0u8; 20];
        repr.emit(&mut buf);
        assert_eq!(&buf[12..14], &[0x08, 0x06]);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&f).unwrap(), repr);
        assert_eq!(f.payload().len(), 6);
    }

    #[test]
    fn parse_emit_tagged() {
        let repr = EthernetRepr {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            vlan: Some(42),
            ethertype: EtherType::Ipv4,
        };
        let mut buf = [0u8; 18];
        repr.emit(&mut buf);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.header_len(), 18);
        assert_eq!(EthernetRepr::parse(&f).unwrap(), repr);
        // A tag announced but cut off is truncated, not misread.
        assert_eq!(
            EthernetFrame::new_checked(&buf[..16]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn mac_text() {
        let m: MacAddr = "02:aa:00:00:00:0f".parse().unwrap();
        assert_eq!(m.to_string(), "02:aa:00:00:00:0f");
        assert!("02:aa".parse::<MacAddr>().is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = EthernetRepr::parse(&f);
                let _ = (f.dst(), f.src(), f.ethertype(), f.vlan_id(), f.payload());
            }
        }
    }
}
