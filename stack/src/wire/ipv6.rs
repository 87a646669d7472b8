//! IPv6 (RFC 8200): the fixed header, and address helpers for Neighbor Discovery
//! (RFC 4291, RFC 2464). Extension headers are walked by [`super::ipv6_ext`].

use super::{read_u16, write_u16, MacAddr, Result, WireError};
use core::net::Ipv6Addr;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Next Header values (IANA "Assigned Internet Protocol Numbers") the stack names.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DST_OPTIONS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
    pub const EXPERIMENT1: u8 = 253;
    pub const EXPERIMENT2: u8 = 254;
}

mod field {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

/// Offset of the Next Header field in the fixed header (a Parameter Problem pointer).
pub const NEXT_HEADER_OFFSET: usize = field::NEXT_HEADER;
/// Offset of the Payload Length field (the pointer for a fragment of bad length).
pub const PAYLOAD_LEN_OFFSET: usize = field::PAYLOAD_LEN;

/// All-nodes multicast, link-local scope (ff02::1).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers multicast, link-local scope (ff02::2).
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// Whether `a` is a link-local unicast address (fe80::/10).
pub const fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether `a` is a multicast address (ff00::/8).
pub const fn is_multicast(a: Ipv6Addr) -> bool {
    a.octets()[0] == 0xff
}

/// Whether `a` is the unspecified address (::), the source of a DAD probe.
pub const fn is_unspecified(a: Ipv6Addr) -> bool {
    a.to_bits() == 0
}

/// The solicited-node multicast address of `a` (RFC 4291 §2.7.1): ff02::1:ffXX:XXXX
/// with the low 24 bits of `a`.
pub const fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from_bits(0xff02_0000_0000_0000_0000_0001_ff00_0000 | (a.to_bits() & 0x00ff_ffff))
}

/// Whether `a` is a solicited-node multicast address (ff02::1:ff00:0/104).
pub const fn is_solicited_node(a: Ipv6Addr) -> bool {
    a.to_bits() >> 24 == 0xff02_0000_0000_0000_0000_0001_ff00_0000 >> 24
}

/// The Ethernet multicast address a multicast IPv6 address maps to (RFC 2464 §7):
/// 33:33 and the address's low 32 bits.
pub const fn multicast_mac(a: Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// An address with its prefix length (e.g. fd77::1/64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

impl Ipv6Cidr {
    /// `prefix_len` is clamped to 128.
    pub const fn new(addr: Ipv6Addr, prefix_len: u8) -> Self {
        Ipv6Cidr {
            addr,
            prefix_len: if prefix_len > 128 { 128 } else { prefix_len },
        }
    }
    pub const fn netmask(&self) -> u128 {
        if self.prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix_len as u32)
        }
    }
    /// Whether `ip` lies in this network.
    pub const fn contains(&self, ip: Ipv6Addr) -> bool {
        let m = self.netmask();
        (self.addr.to_bits() & m) == (ip.to_bits() & m)
    }
}

#[inline]
fn read_ipv6(b: &[u8], r: core::ops::Range<usize>) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[r]);
    Ipv6Addr::from(a)
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }
    /// Checks that the fixed header and the payload its length field announces fit in
    /// the buffer. The buffer may be longer than the packet (Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Ipv6Packet { buffer };
        p.check_len()?;
        Ok(p)
    }
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + self.payload_len() as usize {
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
    /// The 8-bit traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }
    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    /// Length of everything after the fixed header (extension headers included).
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::SRC)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::DST)
    }
    /// The whole packet (header and payload), without Ethernet padding.
    /// Call on a checked view only.
    pub fn packet_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN + self.payload_len() as usize]
    }
    /// The payload (extension headers and upper layer), bounded by the payload length.
    /// Call on a checked view only.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes version 6, the traffic class and the flow label (the first 4 bytes).
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (traffic_class as u32) << 20 | (flow_label & 0xf_ffff);
        self.buffer.as_mut()[..4].copy_from_slice(&w.to_be_bytes());
    }
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, len)
    }
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = nh;
    }
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
    /// Call on a checked view only.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + self.payload_len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The fixed IPv6 header as values. `next_header` is the header's own field: the first
/// extension header, or the upper layer when there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    /// Length of the payload (extension headers and upper layer).
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Validates the version and the lengths. A payload length of zero is taken as an
    /// empty payload: jumbograms (RFC 2675) are not supported.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len() as usize,
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
    /// Writes the 40-byte header into the start of `buf`. `payload_len` must fit 16 bits
    /// and `flow_label` 20 bits (the excess is cut off).
    pub fn emit(&self, buf: &mut [u8]) {
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_version_class_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src: SRC,
            dst: DST,
            next_header: next_header::UDP,
            payload_len: 4,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0xabcde,
        }
    }

    #[test]
    fn emit_known_bytes_and_parse() {
        let mut b = [0u8; 44];
        repr().emit(&mut b);
        b[40..].copy_from_slice(b"abcd");
        // Version 6, class 0xb8, flow 0xabcde: 6b 8a bc de.
        assert_eq!(&b[..8], &[0x6b, 0x8a, 0xbc, 0xde, 0, 4, 17, 64]);
        assert_eq!(&b[8..10], &[0xfd, 0x77]);
        assert_eq!(b[23], 1);
        assert_eq!(b[39], 2);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0xabcde);
        assert_eq!(p.payload(), b"abcd");
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn padding_ignored_and_truncation_caught() {
        let mut b = [0u8; 60];
        repr().emit(&mut b);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert_eq!(p.packet_bytes().len(), 44);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..43]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).unwrap_err(),
            WireError::Truncated
        );
        b[0] = 0x45;
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p).unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn address_helpers() {
        let a: Ipv6Addr = "fd77::1:2345:6789".parse().unwrap();
        let sn = solicited_node(a);
        assert_eq!(sn, "ff02::1:ff45:6789".parse::<Ipv6Addr>().unwrap());
        assert!(is_solicited_node(sn));
        assert!(!is_solicited_node(ALL_NODES));
        assert!(is_multicast(sn) && !is_multicast(a));
        assert_eq!(
            multicast_mac(sn),
            MacAddr([0x33, 0x33, 0xff, 0x45, 0x67, 0x89])
        );
        assert_eq!(multicast_mac(ALL_NODES), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()));
        assert!(!is_link_local(a));
        assert!(is_unspecified(Ipv6Addr::UNSPECIFIED) && !is_unspecified(a));
        let c = Ipv6Cidr::new("fd77::1".parse().unwrap(), 64);
        assert!(c.contains("fd77::ffff:1".parse().unwrap()));
        assert!(!c.contains("fd77:0:0:1::1".parse().unwrap()));
        assert!(Ipv6Cidr::new(a, 0).contains(ALL_NODES));
        assert!(Ipv6Cidr::new(a, 200).contains(a));
    }

    proptest! {
        #[test]
        fn round_trip(src in any::<u128>(), dst in any::<u128>(), nh in any::<u8>(),
                      len in 0usize..200, hl in any::<u8>(), tc in any::<u8>(),
                      fl in 0u32..0x10_0000) {
            let r = Ipv6Repr {
                src: Ipv6Addr::from_bits(src),
                dst: Ipv6Addr::from_bits(dst),
                next_header: nh,
                payload_len: len,
                hop_limit: hl,
                traffic_class: tc,
                flow_label: fl,
            };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            let p = Ipv6Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), r);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = Ipv6Repr::parse(&p);
                let _ = (p.payload(), p.packet_bytes());
            }
        }
    }
}
