//! Packet views with bounds-checked accessors, and `Repr`s to parse and emit them.
//!
//! Each protocol has a view (`XxxPacket<T: AsRef<[u8]>>`) whose `new_checked` verifies
//! that every fixed field the accessors read lies inside the buffer, so accessors on a
//! checked view never panic, and a `Repr` (the header as plain values) with `parse`
//! (which also validates lengths and checksums) and `emit`.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ipv6_ext;
pub mod mptcp;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use icmp::{IcmpPacket, IcmpRepr};
pub use icmpv6::{Icmpv6Packet, Icmpv6Repr};
pub use ipv4::{Ipv4Cidr, Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Cidr, Ipv6Packet, Ipv6Repr};
pub use ipv6_ext::{ExtChain, ExtHeaderError, ExtHeaders, FragmentRepr, WalkLimits};
pub use mptcp::{MptcpOption, MptcpRepr};
pub use udp::{UdpPacket, UdpRepr};

use core::fmt;

/// Why a packet could not be parsed. The interface counts drops by these reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the header, or than the length a header field claims.
    Truncated,
    /// A field holds a value the protocol forbids (version, header length, ...).
    Malformed,
    /// The checksum does not match.
    Checksum,
    /// An IPv4 fragment (MF set or non-zero offset): the stack does not reassemble.
    Fragment,
    /// Well formed, but a variant the stack does not handle (e.g. ARP for non-IPv4).
    Unsupported,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
            WireError::Checksum => "bad checksum",
            WireError::Fragment => "fragment",
            WireError::Unsupported => "unsupported",
        })
    }
}

impl std::error::Error for WireError {}

pub type Result<T> = core::result::Result<T, WireError>;

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn read_ipv4(b: &[u8], at: usize) -> core::net::Ipv4Addr {
    core::net::Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[inline]
pub(crate) fn write_ipv4(b: &mut [u8], at: usize, a: core::net::Ipv4Addr) {
    b[at..at + 4].copy_from_slice(&a.octets());
}
