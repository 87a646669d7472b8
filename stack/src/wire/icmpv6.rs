//! ICMPv6 (RFC 4443) and the Neighbor Discovery messages a host needs (RFC 4861):
//! echo, the four error messages, Neighbor Solicitation/Advertisement, and Router
//! Advertisement (parsed for its hop limit, lifetimes, MTU and source address).
//!
//! The checksum covers the IPv6 pseudo-header (RFC 8200 §8.1), so parsing and emitting
//! take the packet's addresses. The IP hop limit of 255 that ND messages must carry
//! (RFC 4861 §7.1) is the caller's check ([`ND_HOP_LIMIT`]): it is not in the message.

use super::checksum;
use super::ipv6::{is_multicast, is_solicited_node, is_unspecified, next_header};
use super::{read_u16, write_u16, MacAddr, Result, WireError};
use core::net::Ipv6Addr;

/// Length of the fixed header (type, code, checksum, 4 bytes of message body).
pub const HEADER_LEN: usize = 8;
/// Length of a Neighbor Solicitation/Advertisement before its options.
pub const ND_NS_NA_LEN: usize = 24;
/// Length of a Router Advertisement before its options.
pub const ND_RA_LEN: usize = 16;
/// Bytes of the invoking packet an error message must quote to be used: the IPv6
/// header and 8 bytes (a TCP/UDP port pair when there are no extension headers).
pub const MIN_INVOKING_LEN: usize = 48;
/// The hop limit ND messages are sent with and must arrive with (RFC 4861 §7.1).
pub const ND_HOP_LIMIT: u8 = 255;

pub const TYPE_DST_UNREACHABLE: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_PARAM_PROBLEM: u8 = 4;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
pub const TYPE_ROUTER_ADVERT: u8 = 134;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
pub const TYPE_REDIRECT: u8 = 137;

/// Destination Unreachable codes (RFC 4443 §3.1).
pub mod unreachable {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMIN_PROHIBITED: u8 = 1;
    pub const BEYOND_SCOPE: u8 = 2;
    pub const ADDRESS_UNREACHABLE: u8 = 3;
    pub const PORT_UNREACHABLE: u8 = 4;
    pub const SOURCE_POLICY_FAILED: u8 = 5;
    pub const REJECT_ROUTE: u8 = 6;
}

/// Time Exceeded codes (RFC 4443 §3.3).
pub mod time_exceeded {
    pub const HOP_LIMIT: u8 = 0;
    pub const REASSEMBLY: u8 = 1;
}

/// Parameter Problem codes (RFC 4443 §3.4).
pub mod param_problem {
    pub const ERRONEOUS_FIELD: u8 = 0;
    pub const UNKNOWN_NEXT_HEADER: u8 = 1;
    pub const UNKNOWN_OPTION: u8 = 2;
}

/// ND option types (RFC 4861 §4.6).
pub mod nd_option {
    pub const SOURCE_LLADDR: u8 = 1;
    pub const TARGET_LLADDR: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const REDIRECTED_HEADER: u8 = 4;
    pub const MTU: u8 = 5;
}

/// Whether `msg_type` is an error message (RFC 4443 §2.1): an unknown one must still be
/// passed to the upper layer, an unknown informational one is dropped (§2.4).
pub const fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

/// The length a message of this type needs before the accessors may read it.
const fn min_len(msg_type: u8) -> usize {
    match msg_type {
        TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT => ND_NS_NA_LEN,
        TYPE_ROUTER_ADVERT => ND_RA_LEN,
        _ => HEADER_LEN,
    }
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }
    /// Checks that the fixed fields of the message's type fit (24 bytes for NS/NA, 16
    /// for RA, 8 otherwise).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN || b.len() < min_len(b[0]) {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv6Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }
    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }
    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 6)
    }
    /// The 32-bit field after the checksum: Packet Too Big's MTU or Parameter
    /// Problem's pointer.
    pub fn word(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    /// NA flags byte (R, S, O in the high bits).
    pub fn nd_flags(&self) -> u8 {
        self.buffer.as_ref()[4]
    }
    /// NS/NA target address. Call on a checked NS or NA only.
    pub fn target_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        Ipv6Addr::from(a)
    }
    /// Everything after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// The options of an ND message (empty for other types).
    pub fn nd_options(&self) -> NdOptions<'_> {
        let b = self.buffer.as_ref();
        let start = match self.msg_type() {
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT => ND_NS_NA_LEN,
            TYPE_ROUTER_ADVERT => ND_RA_LEN,
            _ => b.len(),
        };
        NdOptions { bytes: &b[start..] }
    }
    /// Whether the checksum over the pseudo-header and the message verifies.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::transport_checksum(src, dst, next_header::ICMPV6, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[0] = t;
    }
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[1] = c;
    }
    pub fn set_checksum(&mut self, c: u16) {
        write_u16(self.buffer.as_mut(), 2, c);
    }
    /// Computes and stores the checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::transport_checksum(src, dst, next_header::ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// One ND option (RFC 4861 §4.6): its type and its bytes (type and length included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdOption<'a> {
    pub option_type: u8,
    pub bytes: &'a [u8],
}

impl NdOption<'_> {
    /// The Ethernet address of a Source/Target Link-Layer Address option (RFC 2464
    /// §6: length 1, 6 bytes of address); other lengths are malformed on Ethernet.
    pub fn lladdr(&self) -> Result<MacAddr> {
        if self.bytes.len() != 8 {
            return Err(WireError::Malformed);
        }
        Ok(MacAddr::from_bytes(&self.bytes[2..8]))
    }
}

/// The options of an ND message. A zero length (RFC 4861 §4.6: "nodes MUST silently
/// discard an ND packet that contains an option with length zero") or one past the end
/// yields an error and then nothing.
#[derive(Clone, Debug)]
pub struct NdOptions<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for NdOptions<'a> {
    type Item = Result<NdOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let b = self.bytes;
        let err = match b.get(1) {
            None => WireError::Truncated,
            Some(0) => WireError::Malformed,
            Some(&l) if 8 * l as usize > b.len() => WireError::Truncated,
            Some(&l) => {
                let (opt, rest) = b.split_at(8 * l as usize);
                self.bytes = rest;
                return Some(Ok(NdOption {
                    option_type: opt[0],
                    bytes: opt,
                }));
            }
        };
        self.bytes = &[];
        Some(Err(err))
    }
}

/// The link-layer address option of type `want`, if any; a second one or a bad
/// length is malformed. Every option is checked (a zero length anywhere drops the
/// message); options of other types are skipped.
fn find_lladdr(options: NdOptions<'_>, want: u8) -> Result<Option<MacAddr>> {
    let mut found = None;
    for opt in options {
        let opt = opt?;
        if opt.option_type == want {
            if found.is_some() {
                return Err(WireError::Malformed);
            }
            found = Some(opt.lladdr()?);
        }
    }
    Ok(found)
}

/// Neighbor Advertisement flags (RFC 4861 §4.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NaFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: override an existing cache entry.
    pub override_: bool,
}

impl NaFlags {
    const fn from_byte(b: u8) -> Self {
        NaFlags {
            router: b & 0x80 != 0,
            solicited: b & 0x40 != 0,
            override_: b & 0x20 != 0,
        }
    }
    const fn to_byte(self) -> u8 {
        (self.router as u8) << 7 | (self.solicited as u8) << 6 | (self.override_ as u8) << 5
    }
}

/// The ICMPv6 messages the stack understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// `invoking` is the start of the packet that caused the error (at least
    /// [`MIN_INVOKING_LEN`] bytes when parsed).
    DstUnreachable {
        code: u8,
        invoking: &'a [u8],
    },
    PacketTooBig {
        mtu: u32,
        invoking: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        invoking: &'a [u8],
    },
    /// `pointer`: offset of the offending byte in the invoking packet.
    ParamProblem {
        code: u8,
        pointer: u32,
        invoking: &'a [u8],
    },
    NeighborSolicit {
        target: Ipv6Addr,
        source_lladdr: Option<MacAddr>,
    },
    NeighborAdvert {
        flags: NaFlags,
        target: Ipv6Addr,
        target_lladdr: Option<MacAddr>,
    },
    /// Prefix Information and other options are skipped.
    RouterAdvert {
        cur_hop_limit: u8,
        /// M, O and the other flag bits as they are.
        flags: u8,
        /// Seconds; 0: not a default router.
        router_lifetime: u16,
        /// Milliseconds; 0: unspecified.
        reachable_time: u32,
        /// Milliseconds; 0: unspecified.
        retrans_timer: u32,
        source_lladdr: Option<MacAddr>,
        mtu: Option<u32>,
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a checked view sent from `src` to `dst`; verifies the checksum when
    /// `verify_checksum`. ND messages are validated as RFC 4861 §7.1 asks (code 0,
    /// target not multicast, DAD probes without a source address option, solicited
    /// advertisements not multicast) except for the IP hop limit, the caller's.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv6Packet<&'a T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        verify_checksum: bool,
    ) -> Result<Icmpv6Repr<'a>> {
        let buf: &'a T = packet.buffer;
        let buf: &'a [u8] = buf.as_ref();
        // Checked again: the view may have been made unchecked.
        if buf.len() < HEADER_LEN || buf.len() < min_len(buf[0]) {
            return Err(WireError::Truncated);
        }
        if verify_checksum && !packet.verify_checksum(src, dst) {
            return Err(WireError::Checksum);
        }
        let data = &buf[HEADER_LEN..];
        let invoking = || {
            if data.len() < MIN_INVOKING_LEN {
                Err(WireError::Truncated)
            } else {
                Ok(data)
            }
        };
        let code = packet.code();
        let nd_options = || NdOptions {
            bytes: &buf[min_len(packet.msg_type())..],
        };
        match packet.msg_type() {
            TYPE_ECHO_REQUEST if code == 0 => Ok(Icmpv6Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data,
            }),
            TYPE_ECHO_REPLY if code == 0 => Ok(Icmpv6Repr::EchoReply {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data,
            }),
            TYPE_DST_UNREACHABLE => Ok(Icmpv6Repr::DstUnreachable {
                code,
                invoking: invoking()?,
            }),
            TYPE_PACKET_TOO_BIG if code == 0 => Ok(Icmpv6Repr::PacketTooBig {
                mtu: packet.word(),
                invoking: invoking()?,
            }),
            TYPE_TIME_EXCEEDED => Ok(Icmpv6Repr::TimeExceeded {
                code,
                invoking: invoking()?,
            }),
            TYPE_PARAM_PROBLEM => Ok(Icmpv6Repr::ParamProblem {
                code,
                pointer: packet.word(),
                invoking: invoking()?,
            }),
            TYPE_NEIGHBOR_SOLICIT if code == 0 => {
                let target = packet.target_addr();
                let source_lladdr = find_lladdr(nd_options(), nd_option::SOURCE_LLADDR)?;
                // A DAD probe (from ::) goes to a solicited-node group and carries no
                // source address option (RFC 4861 §7.1.1).
                let dad_ok =
                    !is_unspecified(src) || (is_solicited_node(dst) && source_lladdr.is_none());
                if is_multicast(target) || !dad_ok {
                    return Err(WireError::Malformed);
                }
                Ok(Icmpv6Repr::NeighborSolicit {
                    target,
                    source_lladdr,
                })
            }
            TYPE_NEIGHBOR_ADVERT if code == 0 => {
                let flags = NaFlags::from_byte(packet.nd_flags());
                let target = packet.target_addr();
                let target_lladdr = find_lladdr(nd_options(), nd_option::TARGET_LLADDR)?;
                // RFC 4861 §7.1.2.
                if is_multicast(target) || (is_multicast(dst) && flags.solicited) {
                    return Err(WireError::Malformed);
                }
                Ok(Icmpv6Repr::NeighborAdvert {
                    flags,
                    target,
                    target_lladdr,
                })
            }
            TYPE_ROUTER_ADVERT if code == 0 => {
                let mut source_lladdr = None;
                let mut mtu = None;
                for opt in nd_options() {
                    let opt = opt?;
                    match opt.option_type {
                        nd_option::SOURCE_LLADDR if source_lladdr.is_none() => {
                            source_lladdr = Some(opt.lladdr()?)
                        }
                        nd_option::MTU if mtu.is_none() && opt.bytes.len() == 8 => {
                            let b = opt.bytes;
                            mtu = Some(u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
                        }
                        nd_option::SOURCE_LLADDR | nd_option::MTU => {
                            return Err(WireError::Malformed)
                        }
                        _ => {}
                    }
                }
                let b = buf;
                Ok(Icmpv6Repr::RouterAdvert {
                    cur_hop_limit: b[4],
                    flags: b[5],
                    router_lifetime: read_u16(b, 6),
                    reachable_time: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                    retrans_timer: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
                    source_lladdr,
                    mtu,
                })
            }
            TYPE_ECHO_REQUEST
            | TYPE_ECHO_REPLY
            | TYPE_PACKET_TOO_BIG
            | TYPE_NEIGHBOR_SOLICIT
            | TYPE_NEIGHBOR_ADVERT
            | TYPE_ROUTER_ADVERT => Err(WireError::Malformed),
            _ => Err(WireError::Unsupported),
        }
    }

    pub fn buffer_len(&self) -> usize {
        let opt = |a: &Option<MacAddr>| if a.is_some() { 8 } else { 0 };
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv6Repr::DstUnreachable { invoking, .. }
            | Icmpv6Repr::PacketTooBig { invoking, .. }
            | Icmpv6Repr::TimeExceeded { invoking, .. }
            | Icmpv6Repr::ParamProblem { invoking, .. } => HEADER_LEN + invoking.len(),
            Icmpv6Repr::NeighborSolicit { source_lladdr, .. } => ND_NS_NA_LEN + opt(source_lladdr),
            Icmpv6Repr::NeighborAdvert { target_lladdr, .. } => ND_NS_NA_LEN + opt(target_lladdr),
            Icmpv6Repr::RouterAdvert {
                source_lladdr, mtu, ..
            } => ND_RA_LEN + opt(source_lladdr) + if mtu.is_some() { 8 } else { 0 },
        }
    }

    /// Writes the message into the start of `buf` (`buffer_len()` bytes) with its
    /// checksum for a packet from `src` to `dst`.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
        let buf = &mut buf[..self.buffer_len()];
        buf.fill(0);
        let word = |b: &mut [u8], v: u32| b[4..8].copy_from_slice(&v.to_be_bytes());
        let lladdr = |b: &mut [u8], t: u8, a: &Option<MacAddr>| {
            if let Some(a) = a {
                b[0] = t;
                b[1] = 1;
                b[2..8].copy_from_slice(&a.0);
            }
        };
        match *self {
            Icmpv6Repr::EchoRequest { ident, seq, data }
            | Icmpv6Repr::EchoReply { ident, seq, data } => {
                buf[0] = if matches!(self, Icmpv6Repr::EchoRequest { .. }) {
                    TYPE_ECHO_REQUEST
                } else {
                    TYPE_ECHO_REPLY
                };
                write_u16(buf, 4, ident);
                write_u16(buf, 6, seq);
                buf[HEADER_LEN..].copy_from_slice(data);
            }
            Icmpv6Repr::DstUnreachable { code, invoking } => {
                (buf[0], buf[1]) = (TYPE_DST_UNREACHABLE, code);
                buf[HEADER_LEN..].copy_from_slice(invoking);
            }
            Icmpv6Repr::PacketTooBig { mtu, invoking } => {
                buf[0] = TYPE_PACKET_TOO_BIG;
                word(buf, mtu);
                buf[HEADER_LEN..].copy_from_slice(invoking);
            }
            Icmpv6Repr::TimeExceeded { code, invoking } => {
                (buf[0], buf[1]) = (TYPE_TIME_EXCEEDED, code);
                buf[HEADER_LEN..].copy_from_slice(invoking);
            }
            Icmpv6Repr::ParamProblem {
                code,
                pointer,
                invoking,
            } => {
                (buf[0], buf[1]) = (TYPE_PARAM_PROBLEM, code);
                word(buf, pointer);
                buf[HEADER_LEN..].copy_from_slice(invoking);
            }
            Icmpv6Repr::NeighborSolicit {
                target,
                source_lladdr,
            } => {
                buf[0] = TYPE_NEIGHBOR_SOLICIT;
                buf[8..24].copy_from_slice(&target.octets());
                lladdr(&mut buf[24..], nd_option::SOURCE_LLADDR, &source_lladdr);
            }
            Icmpv6Repr::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => {
                buf[0] = TYPE_NEIGHBOR_ADVERT;
                buf[4] = flags.to_byte();
                buf[8..24].copy_from_slice(&target.octets());
                lladdr(&mut buf[24..], nd_option::TARGET_LLADDR, &target_lladdr);
            }
            Icmpv6Repr::RouterAdvert {
                cur_hop_limit,
                flags,
                router_lifetime,
                reachable_time,
                retrans_timer,
                source_lladdr,
                mtu,
            } => {
                buf[0] = TYPE_ROUTER_ADVERT;
                buf[4] = cur_hop_limit;
                buf[5] = flags;
                write_u16(buf, 6, router_lifetime);
                buf[8..12].copy_from_slice(&reachable_time.to_be_bytes());
                buf[12..16].copy_from_slice(&retrans_timer.to_be_bytes());
                lladdr(&mut buf[16..], nd_option::SOURCE_LLADDR, &source_lladdr);
                if let Some(mtu) = mtu {
                    let at = ND_RA_LEN + if source_lladdr.is_some() { 8 } else { 0 };
                    let o = &mut buf[at..at + 8];
                    (o[0], o[1]) = (nd_option::MTU, 1);
                    word(o, mtu);
                }
            }
        }
        Icmpv6Packet::new_unchecked(buf).fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ipv6::solicited_node;
    use super::*;
    use proptest::prelude::*;

    const A: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0200, 0x00ff, 0xfe00, 0x0001);
    const B: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0200, 0x00ff, 0xfe00, 0x0002);
    const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    fn round_trip(r: Icmpv6Repr<'_>, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, src, dst);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert_eq!(Icmpv6Repr::parse(&p, src, dst, true).unwrap(), r);
        b
    }

    /// The known-good bytes and checksums in these tests were made with scapy 2.8.0,
    /// independently of this code; here `raw(ICMPv6ND_NS(tgt=B)/ICMPv6NDOptSrcLLAddr(
    /// lladdr="02:00:00:00:00:01"))` in `IPv6(src=A, dst="ff02::1:ff00:2")`.
    #[test]
    fn neighbor_solicitation_known_bytes() {
        let dst = solicited_node(B);
        let r = Icmpv6Repr::NeighborSolicit {
            target: B,
            source_lladdr: Some(MAC_A),
        };
        let b = round_trip(r, A, dst);
        assert_eq!(
            b,
            hex("8700789700000000fe80000000000000020000fffe0000020101020000000001")
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn neighbor_advertisement_known_bytes() {
        let r = Icmpv6Repr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited: true,
                override_: true,
            },
            target: B,
            target_lladdr: Some(MacAddr([0x02, 0, 0, 0, 0, 0x02])),
        };
        let b = round_trip(r, B, A);
        assert_eq!((b[0], b[1], b[4]), (136, 0, 0x60));
        assert_eq!(&b[8..24], &B.octets());
        assert_eq!(&b[24..32], &[2, 1, 2, 0, 0, 0, 0, 2]);
        // scapy: raw(ICMPv6ND_NA(tgt=B, R=0, S=1, O=1)/ICMPv6NDOptDstLLAddr(...)), B to A.
        assert_eq!(
            b,
            hex("8800151a60000000fe80000000000000020000fffe0000020201020000000002")
        );
    }

    #[test]
    fn echo_and_errors_round_trip() {
        let b = round_trip(
            Icmpv6Repr::EchoRequest {
                ident: 0x1234,
                seq: 1,
                data: b"ping6",
            },
            A,
            B,
        );
        // scapy: raw(ICMPv6EchoRequest(id=0x1234, seq=1, data=b"ping6")), A to B.
        assert_eq!(b, hex("800059ad1234000170696e6736"));
        round_trip(
            Icmpv6Repr::EchoReply {
                ident: 7,
                seq: 8,
                data: b"",
            },
            B,
            A,
        );
        let invoking = [0x60u8; 48];
        for r in [
            Icmpv6Repr::DstUnreachable {
                code: unreachable::PORT_UNREACHABLE,
                invoking: &invoking,
            },
            Icmpv6Repr::PacketTooBig {
                mtu: 1280,
                invoking: &invoking,
            },
            Icmpv6Repr::TimeExceeded {
                code: time_exceeded::REASSEMBLY,
                invoking: &invoking,
            },
            Icmpv6Repr::ParamProblem {
                code: param_problem::UNKNOWN_NEXT_HEADER,
                pointer: 40,
                invoking: &invoking,
            },
        ] {
            let b = round_trip(r, A, B);
            // The 32-bit field: MTU or pointer, zero for the others.
            let word = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            match r {
                Icmpv6Repr::PacketTooBig { .. } => assert_eq!(word, 1280),
                Icmpv6Repr::ParamProblem { .. } => assert_eq!(word, 40),
                _ => assert_eq!(word, 0),
            }
            // A quote shorter than the IPv6 header and 8 bytes is of no use.
            let mut short = b[..HEADER_LEN + 47].to_vec();
            Icmpv6Packet::new_unchecked(&mut short[..]).fill_checksum(A, B);
            let p = Icmpv6Packet::new_checked(&short[..]).unwrap();
            assert_eq!(
                Icmpv6Repr::parse(&p, A, B, true).unwrap_err(),
                WireError::Truncated
            );
        }
    }

    /// `raw(ICMPv6PacketTooBig(mtu=1280)/Raw(quote))` from scapy, A to B.
    #[test]
    fn packet_too_big_known_bytes() {
        let mut quote = [0u8; 48];
        quote[0] = 0x60;
        quote[6] = 6;
        let r = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            invoking: &quote,
        };
        let b = round_trip(r, A, B);
        assert_eq!(&b[..2], &[2, 0]);
        assert_eq!(&b[4..8], &[0, 0, 5, 0]);
        assert_eq!(read_u16(&b, 2), 0x9388, "scapy's checksum");
    }

    #[test]
    fn checksum_covers_pseudo_header() {
        let r = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq: 2,
            data: b"x",
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, A, B);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&p, A, A, true).unwrap_err(),
            WireError::Checksum
        );
        assert!(Icmpv6Repr::parse(&p, A, A, false).is_ok());
        b[8] ^= 1;
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&p, A, B, true).unwrap_err(),
            WireError::Checksum
        );
    }

    /// An NS from A with the given options after the 24 fixed bytes.
    fn ns_with_options(options: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut b = vec![0u8; ND_NS_NA_LEN + options.len()];
        b[0] = TYPE_NEIGHBOR_SOLICIT;
        b[8..24].copy_from_slice(&B.octets());
        b[24..].copy_from_slice(options);
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(src, dst);
        b
    }

    fn parse_ns(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<Icmpv6Repr<'_>> {
        Icmpv6Repr::parse(&Icmpv6Packet::new_checked(b)?, src, dst, true)
    }

    #[test]
    fn nd_options_checked() {
        let dst = solicited_node(B);
        // An unknown option (type 99, 16 bytes) then the source address: skipped, found.
        let mut o = vec![99, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        o.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        let b = ns_with_options(&o, A, dst);
        assert_eq!(
            parse_ns(&b, A, dst).unwrap(),
            Icmpv6Repr::NeighborSolicit {
                target: B,
                source_lladdr: Some(MAC_A)
            }
        );
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        let types: Vec<u8> = p.nd_options().map(|o| o.unwrap().option_type).collect();
        assert_eq!(types, vec![99, 1]);
        // A zero-length option, even an unknown one after a good one: malformed.
        let b = ns_with_options(&[1, 1, 2, 0, 0, 0, 0, 1, 99, 0, 0, 0, 0, 0, 0, 0], A, dst);
        assert_eq!(parse_ns(&b, A, dst).unwrap_err(), WireError::Malformed);
        // An option running past the end.
        let b = ns_with_options(&[1, 2, 2, 0, 0, 0, 0, 1], A, dst);
        assert_eq!(parse_ns(&b, A, dst).unwrap_err(), WireError::Truncated);
        // A lone type byte.
        let b = ns_with_options(&[1], A, dst);
        assert_eq!(parse_ns(&b, A, dst).unwrap_err(), WireError::Truncated);
        // Two source address options; a 16-byte one (not Ethernet).
        let b = ns_with_options(&[1, 1, 2, 0, 0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 1], A, dst);
        assert_eq!(parse_ns(&b, A, dst).unwrap_err(), WireError::Malformed);
        let b = ns_with_options(&[1, 2, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], A, dst);
        assert_eq!(parse_ns(&b, A, dst).unwrap_err(), WireError::Malformed);
        // Shorter than the fixed NS.
        assert_eq!(
            Icmpv6Packet::new_checked(&b[..23]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn nd_validation() {
        let sn = solicited_node(B);
        let u = Ipv6Addr::UNSPECIFIED;
        // DAD probe: from ::, to the solicited-node group, no source option: fine.
        let b = ns_with_options(&[], u, sn);
        assert!(parse_ns(&b, u, sn).is_ok());
        // From :: with a source option, or to a unicast address: malformed.
        let b = ns_with_options(&[1, 1, 2, 0, 0, 0, 0, 1], u, sn);
        assert_eq!(parse_ns(&b, u, sn).unwrap_err(), WireError::Malformed);
        let b = ns_with_options(&[], u, B);
        assert_eq!(parse_ns(&b, u, B).unwrap_err(), WireError::Malformed);
        // Non-zero code.
        let mut b = ns_with_options(&[], A, sn);
        b[1] = 1;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(A, sn);
        assert_eq!(parse_ns(&b, A, sn).unwrap_err(), WireError::Malformed);
        // Multicast target.
        let mut b = ns_with_options(&[], A, sn);
        b[8] = 0xff;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(A, sn);
        assert_eq!(parse_ns(&b, A, sn).unwrap_err(), WireError::Malformed);
        // A solicited NA to a multicast group.
        let r = Icmpv6Repr::NeighborAdvert {
            flags: NaFlags {
                solicited: true,
                ..NaFlags::default()
            },
            target: B,
            target_lladdr: None,
        };
        let all = super::super::ipv6::ALL_NODES;
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, B, all);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&p, B, all, true).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn router_advertisement() {
        let r = Icmpv6Repr::RouterAdvert {
            cur_hop_limit: 64,
            flags: 0x80,
            router_lifetime: 1800,
            reachable_time: 30_000,
            retrans_timer: 1000,
            source_lladdr: Some(MAC_A),
            mtu: Some(1280),
        };
        let b = round_trip(r, A, super::super::ipv6::ALL_NODES);
        assert_eq!(&b[..8], &[134, 0, b[2], b[3], 64, 0x80, 0x07, 0x08]);
        assert_eq!(&b[24..32], &[5, 1, 0, 0, 0, 0, 5, 0]);
        // A Prefix Information option (32 bytes) in between is skipped.
        let mut with_prefix = b[..24].to_vec();
        with_prefix.extend_from_slice(&[3, 4]);
        with_prefix.extend_from_slice(&[0u8; 30]);
        with_prefix.extend_from_slice(&b[24..]);
        let all = super::super::ipv6::ALL_NODES;
        Icmpv6Packet::new_unchecked(&mut with_prefix[..]).fill_checksum(A, all);
        let p = Icmpv6Packet::new_checked(&with_prefix[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, A, all, true).unwrap(), r);
    }

    #[test]
    fn unchecked_short_views_are_truncated() {
        for len in [0, 7, 23] {
            let mut b = vec![0u8; len];
            if let Some(t) = b.first_mut() {
                *t = TYPE_NEIGHBOR_SOLICIT;
            }
            let p = Icmpv6Packet::new_unchecked(&b[..]);
            assert_eq!(
                Icmpv6Repr::parse(&p, A, B, false).unwrap_err(),
                WireError::Truncated
            );
        }
    }

    #[test]
    fn unknown_types() {
        let mut b = [0u8; 8];
        b[0] = 200;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(A, B);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&p, A, B, true).unwrap_err(),
            WireError::Unsupported
        );
        assert!(!is_error(200) && is_error(100));
        assert_eq!(
            Icmpv6Packet::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }

    fn mac() -> impl Strategy<Value = Option<MacAddr>> {
        proptest::option::of(any::<[u8; 6]>().prop_map(MacAddr))
    }

    proptest! {
        #[test]
        fn nd_round_trip(t in any::<u128>(), mac in mac(), r in any::<bool>(), s in any::<bool>(), o in any::<bool>()) {
            // Any unicast target; from A to B (unicast, so S may be set).
            let target = Ipv6Addr::from_bits(t & !(0xffu128 << 120));
            let ns = Icmpv6Repr::NeighborSolicit { target, source_lladdr: mac };
            let na = Icmpv6Repr::NeighborAdvert {
                flags: NaFlags { router: r, solicited: s, override_: o },
                target,
                target_lladdr: mac,
            };
            for rep in [ns, na] {
                let mut b = vec![0u8; rep.buffer_len()];
                rep.emit(&mut b, A, B);
                let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
                prop_assert_eq!(Icmpv6Repr::parse(&p, A, B, true).unwrap(), rep);
            }
        }

        #[test]
        fn echo_round_trip(ident in any::<u16>(), seq in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let rep = Icmpv6Repr::EchoReply { ident, seq, data: &data };
            let mut b = vec![0u8; rep.buffer_len()];
            rep.emit(&mut b, A, B);
            let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(Icmpv6Repr::parse(&p, A, B, true).unwrap(), rep);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = Icmpv6Repr::parse(&p, A, B, true);
                let _ = Icmpv6Repr::parse(&p, Ipv6Addr::UNSPECIFIED, solicited_node(B), false);
                for o in p.nd_options().flatten() {
                    let _ = o.lladdr();
                }
            }
        }
    }
}
