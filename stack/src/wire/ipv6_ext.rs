//! IPv6 extension headers (RFC 8200 §4): the chain between the fixed header and the
//! upper layer, walked with every length checked and bounded.
//!
//! [`ExtHeaders`] yields each header ([`ExtHeader`]); [`walk`] runs it to the end and
//! says where the upper layer starts ([`ExtChain`]). The walk processes what a host must:
//! Hop-by-Hop and Destination Options have their options checked (Pad1/PadN and Router
//! Alert known, unknown ones acted on by their two high bits, §4.2); a Routing header is
//! skipped when Segments Left is 0 and refused otherwise (we route nothing, §4.4); a
//! Fragment header ends the walk (what follows belongs to the reassembled datagram).
//!
//! Offsets of headers and options count from the start of the IPv6 payload; the
//! `pointer`s in errors count from the start of the IPv6 header, as the ICMPv6
//! Parameter Problem a host sends for them ([`ExtHeaderError::param_problem`]).

use super::ipv6::{next_header, HEADER_LEN as IPV6_HEADER_LEN, NEXT_HEADER_OFFSET};
use super::read_u16;
use core::fmt;

/// Length of a Fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// Option types a host knows (RFC 8200 §4.2, RFC 2711).
pub mod option_type {
    pub const PAD1: u8 = 0;
    pub const PADN: u8 = 1;
    pub const ROUTER_ALERT: u8 = 5;
}

/// Bounds on a walk: a chain longer than this is dropped, not parsed (RFC 8504 §5.3
/// lets hosts limit the number and size of extension headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkLimits {
    /// Extension headers walked at most.
    pub max_headers: usize,
    /// Bytes of extension headers walked at most.
    pub max_bytes: usize,
}

impl WalkLimits {
    /// 8 headers and 1024 bytes: a real chain has two or three headers of a few bytes.
    pub const DEFAULT: WalkLimits = WalkLimits {
        max_headers: 8,
        max_bytes: 1024,
    };
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits::DEFAULT
    }
}

/// What to do with an option whose type is unknown: the type's two high bits
/// (RFC 8200 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnknownOptionAction {
    /// 00: skip the option, go on with the header.
    Skip,
    /// 01: discard the packet silently.
    Discard,
    /// 10: discard, and send Parameter Problem code 2 whatever the destination.
    DiscardAndReport,
    /// 11: discard, and send Parameter Problem code 2 unless the destination is multicast.
    DiscardAndReportIfUnicast,
}

impl UnknownOptionAction {
    pub const fn of(option_type: u8) -> Self {
        match option_type >> 6 {
            0 => UnknownOptionAction::Skip,
            1 => UnknownOptionAction::Discard,
            2 => UnknownOptionAction::DiscardAndReport,
            _ => UnknownOptionAction::DiscardAndReportIfUnicast,
        }
    }
}

/// Why a chain was refused. Each is its own variant so the interface can count them;
/// `pointer`s are offsets from the start of the IPv6 header (Parameter Problem's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExtHeaderError {
    /// A header's length runs past the payload; `offset` is the header's, in the payload.
    Truncated { offset: usize },
    /// A Hop-by-Hop Options header that does not follow the fixed header (RFC 8200
    /// §4.1); `pointer` is the Next Header field that names it.
    HopByHopNotFirst { pointer: usize },
    /// A Next Header value this host does not process (RFC 8200 §4: Parameter Problem
    /// code 1); `pointer` is the field that holds it.
    UnknownNextHeader { next_header: u8, pointer: usize },
    /// A Routing header with Segments Left non-zero: this host routes nothing and knows
    /// no routing type (§4.4: code 0 pointing at the Routing Type field).
    UnsupportedRouting { routing_type: u8, pointer: usize },
    /// An option's length runs past its header.
    OptionTruncated { pointer: usize },
    /// An unknown option whose high bits say to discard the packet; `pointer` is its
    /// type byte.
    UnknownOption {
        option_type: u8,
        action: UnknownOptionAction,
        pointer: usize,
    },
    /// More extension headers than [`WalkLimits::max_headers`].
    TooManyHeaders,
    /// More extension-header bytes than [`WalkLimits::max_bytes`].
    ChainTooLong,
}

impl ExtHeaderError {
    /// The ICMPv6 Parameter Problem (code, pointer from the start of the IPv6 header) a
    /// host sends for this error, if any. `dst_is_multicast`: the packet's destination
    /// (RFC 8200 §4.2, high bits 11).
    pub fn param_problem(&self, dst_is_multicast: bool) -> Option<(u8, u32)> {
        match *self {
            ExtHeaderError::HopByHopNotFirst { pointer }
            | ExtHeaderError::UnknownNextHeader { pointer, .. } => Some((1, pointer as u32)),
            ExtHeaderError::UnsupportedRouting { pointer, .. } => Some((0, pointer as u32)),
            ExtHeaderError::UnknownOption {
                action, pointer, ..
            } => match action {
                UnknownOptionAction::DiscardAndReport => Some((2, pointer as u32)),
                UnknownOptionAction::DiscardAndReportIfUnicast if !dst_is_multicast => {
                    Some((2, pointer as u32))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for ExtHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtHeaderError::Truncated { offset } => {
                write!(f, "extension header truncated at {offset}")
            }
            ExtHeaderError::HopByHopNotFirst { pointer } => {
                write!(f, "hop-by-hop header not first (named at {pointer})")
            }
            ExtHeaderError::UnknownNextHeader {
                next_header,
                pointer,
            } => write!(f, "unknown next header {next_header} at {pointer}"),
            ExtHeaderError::UnsupportedRouting {
                routing_type,
                pointer,
            } => write!(
                f,
                "routing header type {routing_type} with segments left at {pointer}"
            ),
            ExtHeaderError::OptionTruncated { pointer } => {
                write!(f, "option truncated at {pointer}")
            }
            ExtHeaderError::UnknownOption {
                option_type,
                pointer,
                ..
            } => write!(f, "unknown option {option_type} at {pointer}"),
            ExtHeaderError::TooManyHeaders => f.write_str("too many extension headers"),
            ExtHeaderError::ChainTooLong => f.write_str("extension headers too long"),
        }
    }
}

impl std::error::Error for ExtHeaderError {}

/// Whether IANA lists `nh` as an IPv6 extension header (RFC 8200 §4, RFC 7045). The
/// walk processes Hop-by-Hop, Routing, Fragment and Destination Options; the others it
/// reports as [`ExtHeaderError::UnknownNextHeader`].
pub const fn is_extension_header(nh: u8) -> bool {
    matches!(
        nh,
        next_header::HOP_BY_HOP
            | next_header::ROUTING
            | next_header::FRAGMENT
            | next_header::ESP
            | next_header::AUTH
            | next_header::DST_OPTIONS
            | next_header::MOBILITY
            | next_header::HIP
            | next_header::SHIM6
            | next_header::EXPERIMENT1
            | next_header::EXPERIMENT2
    )
}

/// A Fragment header's fields (RFC 8200 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentRepr {
    /// The first header of the fragmentable part.
    pub next_header: u8,
    /// Offset of this fragment's data in the reassembled fragmentable part, in bytes.
    pub offset: u16,
    pub more_fragments: bool,
    pub ident: u32,
}

impl FragmentRepr {
    /// Parses the 8 bytes of a Fragment header (`b` at least that long).
    pub fn parse(b: &[u8]) -> Option<FragmentRepr> {
        let b = b.get(..FRAGMENT_HEADER_LEN)?;
        let off = read_u16(b, 2);
        Some(FragmentRepr {
            next_header: b[0],
            offset: off & 0xfff8,
            more_fragments: off & 1 != 0,
            ident: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
    /// Writes the 8-byte header into the start of `buf` (reserved bits zero). `offset`
    /// must be a multiple of 8.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.next_header;
        buf[1] = 0;
        let off = (self.offset & 0xfff8) | self.more_fragments as u16;
        buf[2..4].copy_from_slice(&off.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ident.to_be_bytes());
    }
    /// Offset 0 and no more fragments: a whole datagram (RFC 6946), no reassembly.
    pub const fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more_fragments
    }
}

/// One extension header of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtHeader<'a> {
    /// Its type (the Next Header value that named it).
    pub kind: u8,
    /// Its offset in the IPv6 payload.
    pub offset: usize,
    /// All its bytes (its own Next Header field first).
    pub bytes: &'a [u8],
}

impl<'a> ExtHeader<'a> {
    /// The Next Header field: what follows this header.
    pub fn next_header(&self) -> u8 {
        self.bytes[0]
    }
    /// The options area of a Hop-by-Hop or Destination Options header.
    pub fn options(&self) -> Ipv6Options<'a> {
        Ipv6Options {
            bytes: &self.bytes[2..],
            base: self.offset + 2,
        }
    }
    /// The fields of a Fragment header.
    pub fn fragment(&self) -> Option<FragmentRepr> {
        if self.kind == next_header::FRAGMENT {
            FragmentRepr::parse(self.bytes)
        } else {
            None
        }
    }
}

/// One TLV option of a Hop-by-Hop or Destination Options header (Pad1 has no data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Option<'a> {
    pub option_type: u8,
    /// Offset of the type byte in the IPv6 payload.
    pub offset: usize,
    pub data: &'a [u8],
}

/// The options of a Hop-by-Hop or Destination Options header, in order. Yields an error
/// (and then nothing) for an option whose length runs past the header.
#[derive(Clone, Debug)]
pub struct Ipv6Options<'a> {
    bytes: &'a [u8],
    /// Offset of `bytes` in the IPv6 payload.
    base: usize,
}

impl<'a> Iterator for Ipv6Options<'a> {
    type Item = Result<Ipv6Option<'a>, ExtHeaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&option_type, rest) = self.bytes.split_first()?;
        let offset = self.base;
        if option_type == option_type::PAD1 {
            self.bytes = rest;
            self.base += 1;
            return Some(Ok(Ipv6Option {
                option_type,
                offset,
                data: &[],
            }));
        }
        let len = match rest.first() {
            Some(&l) if (l as usize) < rest.len() => l as usize,
            _ => {
                self.bytes = &[];
                return Some(Err(ExtHeaderError::OptionTruncated {
                    pointer: IPV6_HEADER_LEN + offset,
                }));
            }
        };
        let data = &rest[1..1 + len];
        self.bytes = &rest[1 + len..];
        self.base += 2 + len;
        Some(Ok(Ipv6Option {
            option_type,
            offset,
            data,
        }))
    }
}

/// Checks every option of a Hop-by-Hop or Destination Options header: known ones pass,
/// unknown ones follow their high bits (§4.2).
pub fn check_options(header: &ExtHeader<'_>) -> Result<(), ExtHeaderError> {
    for opt in header.options() {
        let opt = opt?;
        match opt.option_type {
            option_type::PAD1 | option_type::PADN => {}
            option_type::ROUTER_ALERT if header.kind == next_header::HOP_BY_HOP => {}
            t => match UnknownOptionAction::of(t) {
                UnknownOptionAction::Skip => {}
                action => {
                    return Err(ExtHeaderError::UnknownOption {
                        option_type: t,
                        action,
                        pointer: IPV6_HEADER_LEN + opt.offset,
                    })
                }
            },
        }
    }
    Ok(())
}

/// The extension headers of an IPv6 payload, one by one, each checked to fit. Ends at
/// the first header that is not Hop-by-Hop, Routing, Fragment or Destination Options
/// ([`ExtHeaders::upper`] then says which and where), and after a Fragment header
/// (what follows it is fragment data). After an error it yields nothing more.
#[derive(Clone, Debug)]
pub struct ExtHeaders<'a> {
    payload: &'a [u8],
    next_header: u8,
    offset: usize,
    /// Where the field holding `next_header` is, from the start of the IPv6 header.
    pointer: usize,
    count: usize,
    limits: WalkLimits,
    done: bool,
}

impl<'a> ExtHeaders<'a> {
    /// `next_header` is the fixed header's field; `payload` the IPv6 payload.
    pub fn new(next_header: u8, payload: &'a [u8], limits: WalkLimits) -> Self {
        ExtHeaders {
            payload,
            next_header,
            offset: 0,
            pointer: NEXT_HEADER_OFFSET,
            count: 0,
            limits,
            done: false,
        }
    }

    /// The header after the last one yielded, and its offset.
    pub fn upper(&self) -> (u8, usize) {
        (self.next_header, self.offset)
    }

    /// Where the field that names [`ExtHeaders::upper`]'s header is, from the start of
    /// the IPv6 header (a Parameter Problem pointer).
    pub fn upper_pointer(&self) -> usize {
        self.pointer
    }

    fn fail(&mut self, e: ExtHeaderError) -> Option<Result<ExtHeader<'a>, ExtHeaderError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for ExtHeaders<'a> {
    type Item = Result<ExtHeader<'a>, ExtHeaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let kind = self.next_header;
        let len = match kind {
            next_header::HOP_BY_HOP if self.count > 0 => {
                let pointer = self.pointer;
                return self.fail(ExtHeaderError::HopByHopNotFirst { pointer });
            }
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DST_OPTIONS => {
                match self.payload.get(self.offset + 1) {
                    Some(&l) => 8 + 8 * l as usize,
                    None => {
                        let offset = self.offset;
                        return self.fail(ExtHeaderError::Truncated { offset });
                    }
                }
            }
            next_header::FRAGMENT => FRAGMENT_HEADER_LEN,
            nh if is_extension_header(nh) => {
                let pointer = self.pointer;
                return self.fail(ExtHeaderError::UnknownNextHeader {
                    next_header: nh,
                    pointer,
                });
            }
            _ => {
                self.done = true;
                return None;
            }
        };
        if self.count == self.limits.max_headers {
            return self.fail(ExtHeaderError::TooManyHeaders);
        }
        let end = self.offset + len;
        if end > self.limits.max_bytes {
            return self.fail(ExtHeaderError::ChainTooLong);
        }
        let Some(bytes) = self.payload.get(self.offset..end) else {
            let offset = self.offset;
            return self.fail(ExtHeaderError::Truncated { offset });
        };
        let header = ExtHeader {
            kind,
            offset: self.offset,
            bytes,
        };
        self.count += 1;
        self.pointer = IPV6_HEADER_LEN + self.offset;
        self.next_header = bytes[0];
        self.offset = end;
        if kind == next_header::FRAGMENT {
            // The rest is fragment data: the walk of the reassembled datagram goes on.
            self.done = true;
        }
        Some(Ok(header))
    }
}

/// Where a chain ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtChain {
    /// The upper-layer protocol (or, after a Fragment header, the first header of the
    /// fragmentable part).
    pub upper_protocol: u8,
    /// Its offset in the IPv6 payload.
    pub upper_offset: usize,
    /// The Parameter Problem pointer (from the start of the IPv6 header) of the field
    /// that names `upper_protocol`, for a caller that does not know that protocol
    /// (RFC 8200 §4: code 1).
    pub upper_pointer: u32,
    /// The Fragment header, if the packet is a fragment.
    pub fragment: Option<FragmentRepr>,
    /// Extension headers walked.
    pub header_count: usize,
}

/// Walks the whole chain: every header checked and processed as a host must (options,
/// Routing), stopping at the upper layer or after a Fragment header.
pub fn walk(
    next_header: u8,
    payload: &[u8],
    limits: WalkLimits,
) -> Result<ExtChain, ExtHeaderError> {
    let mut it = ExtHeaders::new(next_header, payload, limits);
    let mut fragment = None;
    let mut header_count = 0;
    for h in it.by_ref() {
        let h = h?;
        header_count += 1;
        match h.kind {
            next_header::HOP_BY_HOP | next_header::DST_OPTIONS => check_options(&h)?,
            next_header::ROUTING => {
                // Segments Left non-zero: we would have to forward (§4.4).
                let (routing_type, segments_left) = (h.bytes[2], h.bytes[3]);
                if segments_left != 0 {
                    return Err(ExtHeaderError::UnsupportedRouting {
                        routing_type,
                        pointer: IPV6_HEADER_LEN + h.offset + 2,
                    });
                }
            }
            next_header::FRAGMENT => fragment = h.fragment(),
            _ => {}
        }
    }
    let (upper_protocol, upper_offset) = it.upper();
    Ok(ExtChain {
        upper_protocol,
        upper_offset,
        upper_pointer: it.upper_pointer() as u32,
        fragment,
        header_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use next_header::*;
    use proptest::prelude::*;

    /// An 8-byte options header: next header, length 0, then six option bytes.
    fn opts_header(nh: u8, options: [u8; 6]) -> [u8; 8] {
        let mut h = [nh, 0, 0, 0, 0, 0, 0, 0];
        h[2..].copy_from_slice(&options);
        h
    }

    const PADN4: [u8; 6] = [1, 4, 0, 0, 0, 0];

    #[test]
    fn no_extension_headers() {
        let c = walk(UDP, &[0u8; 8], WalkLimits::DEFAULT).unwrap();
        assert_eq!(
            c,
            ExtChain {
                upper_protocol: UDP,
                upper_offset: 0,
                upper_pointer: 6,
                fragment: None,
                header_count: 0,
            }
        );
    }

    #[test]
    fn hop_by_hop_routing_dst_options_then_tcp() {
        let mut p = Vec::new();
        p.extend_from_slice(&opts_header(ROUTING, [5, 2, 0, 0, 0, 0])); // router alert
                                                                        // Routing type 4 (SRH) with Segments Left 0 and 16 bytes: skipped.
        p.extend_from_slice(&[DST_OPTIONS, 1, 4, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0u8; 8]);
        // Pad1 ×2, PadN of 2, and an unknown option with high bits 00 (skipped).
        p.extend_from_slice(&opts_header(TCP, [0, 0, 1, 0, 0x1e, 0]));
        p.extend_from_slice(b"tcp header");
        let kinds: Vec<(u8, usize, usize)> = ExtHeaders::new(HOP_BY_HOP, &p, WalkLimits::DEFAULT)
            .map(|h| h.map(|h| (h.kind, h.offset, h.bytes.len())).unwrap())
            .collect();
        assert_eq!(
            kinds,
            vec![(HOP_BY_HOP, 0, 8), (ROUTING, 8, 16), (DST_OPTIONS, 24, 8)]
        );
        let c = walk(HOP_BY_HOP, &p, WalkLimits::DEFAULT).unwrap();
        assert_eq!(c.upper_protocol, TCP);
        assert_eq!(c.upper_offset, 32);
        assert_eq!(c.upper_pointer, 40 + 24);
        assert_eq!(c.header_count, 3);
        assert_eq!(&p[c.upper_offset..], b"tcp header");
    }

    #[test]
    fn options_iterated_with_offsets() {
        let h = opts_header(UDP, [0, 1, 1, 0, 0x05, 0]);
        let hdr = ExtHeaders::new(DST_OPTIONS, &h, WalkLimits::DEFAULT)
            .next()
            .unwrap()
            .unwrap();
        let o: Vec<(u8, usize, usize)> = hdr
            .options()
            .map(|o| o.map(|o| (o.option_type, o.offset, o.data.len())).unwrap())
            .collect();
        assert_eq!(o, vec![(0, 2, 0), (1, 3, 1), (5, 6, 0)]);
        // Router Alert is only known in Hop-by-Hop; in Destination Options its high bits
        // (00) say skip.
        assert!(check_options(&hdr).is_ok());
    }

    #[test]
    fn hop_by_hop_only_first() {
        let mut p = Vec::new();
        p.extend_from_slice(&opts_header(HOP_BY_HOP, PADN4));
        p.extend_from_slice(&opts_header(UDP, PADN4));
        let e = walk(DST_OPTIONS, &p, WalkLimits::DEFAULT).unwrap_err();
        assert_eq!(e, ExtHeaderError::HopByHopNotFirst { pointer: 40 });
        assert_eq!(e.param_problem(false), Some((1, 40)));
        // Hop-by-Hop twice is not first either.
        let e = walk(HOP_BY_HOP, &p, WalkLimits::DEFAULT).unwrap_err();
        assert_eq!(e, ExtHeaderError::HopByHopNotFirst { pointer: 40 });
    }

    #[test]
    fn unknown_next_header_reported_with_pointer() {
        // Authentication Header after a Destination Options header: named at payload
        // offset 0, pointer 40 from the IPv6 header.
        let p = opts_header(AUTH, PADN4);
        let e = walk(DST_OPTIONS, &p, WalkLimits::DEFAULT).unwrap_err();
        assert_eq!(
            e,
            ExtHeaderError::UnknownNextHeader {
                next_header: AUTH,
                pointer: 40
            }
        );
        assert_eq!(e.param_problem(true), Some((1, 40)));
        // Named by the fixed header: pointer 6.
        let e = walk(MOBILITY, &p, WalkLimits::DEFAULT).unwrap_err();
        assert_eq!(e.param_problem(false), Some((1, 6)));
        // An upper layer the caller does not know: it learns the pointer from the chain.
        let p = opts_header(132, PADN4); // SCTP
        let c = walk(DST_OPTIONS, &p, WalkLimits::DEFAULT).unwrap();
        assert_eq!(
            (c.upper_protocol, c.upper_offset, c.upper_pointer),
            (132, 8, 40)
        );
    }

    #[test]
    fn unknown_option_actions() {
        for (t, action, unicast, multicast) in [
            (0x1e, None, None, None),
            (0x5e, Some(UnknownOptionAction::Discard), None, None),
            (
                0x9e,
                Some(UnknownOptionAction::DiscardAndReport),
                Some((2, 42)),
                Some((2, 42)),
            ),
            (
                0xde,
                Some(UnknownOptionAction::DiscardAndReportIfUnicast),
                Some((2, 42)),
                None,
            ),
        ] {
            let p = opts_header(UDP, [t, 0, 1, 2, 0, 0]);
            let r = walk(DST_OPTIONS, &p, WalkLimits::DEFAULT);
            match action {
                None => assert_eq!(r.unwrap().upper_protocol, UDP),
                Some(action) => {
                    let e = r.unwrap_err();
                    assert_eq!(
                        e,
                        ExtHeaderError::UnknownOption {
                            option_type: t,
                            action,
                            pointer: 42
                        }
                    );
                    assert_eq!(e.param_problem(false), unicast);
                    assert_eq!(e.param_problem(true), multicast);
                }
            }
        }
    }

    #[test]
    fn truncated_headers_and_options() {
        // Header length says 16 bytes, 8 present.
        let mut p = opts_header(UDP, PADN4);
        p[1] = 1;
        assert_eq!(
            walk(HOP_BY_HOP, &p, WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::Truncated { offset: 0 }
        );
        // Only the next-header byte.
        assert_eq!(
            walk(ROUTING, &[UDP], WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::Truncated { offset: 0 }
        );
        assert_eq!(
            walk(FRAGMENT, &[UDP, 0, 0, 0], WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::Truncated { offset: 0 }
        );
        // PadN claiming 5 bytes where 4 remain.
        let p = opts_header(UDP, [1, 5, 0, 0, 0, 0]);
        assert_eq!(
            walk(HOP_BY_HOP, &p, WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::OptionTruncated { pointer: 42 }
        );
        // A type byte with no length byte.
        let p = opts_header(UDP, [0, 0, 0, 0, 0, 1]);
        assert_eq!(
            walk(DST_OPTIONS, &p, WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::OptionTruncated { pointer: 47 }
        );
        assert_eq!(
            ExtHeaderError::OptionTruncated { pointer: 47 }.param_problem(false),
            None
        );
    }

    #[test]
    fn routing_with_segments_left_refused() {
        let p = [UDP, 0, 0, 1, 0, 0, 0, 0];
        let e = walk(ROUTING, &p, WalkLimits::DEFAULT).unwrap_err();
        assert_eq!(
            e,
            ExtHeaderError::UnsupportedRouting {
                routing_type: 0,
                pointer: 42
            }
        );
        assert_eq!(e.param_problem(false), Some((0, 42)));
    }

    #[test]
    fn fragment_ends_the_walk() {
        let f = FragmentRepr {
            next_header: UDP,
            offset: 1448,
            more_fragments: true,
            ident: 0xdead_beef,
        };
        let mut p = [0u8; 24];
        p[..8].copy_from_slice(&opts_header(FRAGMENT, PADN4));
        f.emit(&mut p[8..]);
        assert_eq!(&p[8..16], &[17, 0, 0x05, 0xa9, 0xde, 0xad, 0xbe, 0xef]);
        // Data after the Fragment header looks like a Hop-by-Hop header: not walked.
        p[16] = HOP_BY_HOP;
        let c = walk(DST_OPTIONS, &p, WalkLimits::DEFAULT).unwrap();
        assert_eq!(c.fragment, Some(f));
        assert_eq!(
            (c.upper_protocol, c.upper_offset, c.header_count),
            (UDP, 16, 2)
        );
        assert!(!f.is_atomic());
        let atomic = FragmentRepr::parse(&[UDP, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        assert!(atomic.is_atomic());
    }

    #[test]
    fn limits() {
        let mut p = Vec::new();
        for _ in 0..9 {
            p.extend_from_slice(&opts_header(DST_OPTIONS, PADN4));
        }
        p.extend_from_slice(&opts_header(UDP, PADN4));
        assert_eq!(
            walk(DST_OPTIONS, &p, WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::TooManyHeaders
        );
        let roomy = WalkLimits {
            max_headers: 10,
            max_bytes: 80,
        };
        assert_eq!(walk(DST_OPTIONS, &p, roomy).unwrap().upper_offset, 80);
        let tight = WalkLimits {
            max_headers: 10,
            max_bytes: 79,
        };
        assert_eq!(
            walk(DST_OPTIONS, &p, tight).unwrap_err(),
            ExtHeaderError::ChainTooLong
        );
        // One header of 2048 bytes (length 255) goes past 1024 bytes.
        let mut big = vec![0u8; 2048];
        big[0] = UDP;
        big[1] = 255;
        big[2] = 1;
        big[3] = 253; // one PadN covering the rest
        assert_eq!(
            walk(HOP_BY_HOP, &big, WalkLimits::DEFAULT).unwrap_err(),
            ExtHeaderError::ChainTooLong
        );
        assert!(walk(
            HOP_BY_HOP,
            &big,
            WalkLimits {
                max_headers: 1,
                max_bytes: 2048
            }
        )
        .is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(nh in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(c) = walk(nh, &data, WalkLimits::DEFAULT) {
                prop_assert!(c.upper_offset <= data.len());
                prop_assert!(c.header_count <= WalkLimits::DEFAULT.max_headers);
            }
            for h in ExtHeaders::new(nh, &data, WalkLimits::DEFAULT).flatten() {
                for o in h.options().flatten() {
                    prop_assert!(o.offset < data.len());
                }
            }
        }

        #[test]
        fn fragment_round_trip(nh in any::<u8>(), off in 0u16..8192, m in any::<bool>(), id in any::<u32>()) {
            let f = FragmentRepr { next_header: nh, offset: off * 8, more_fragments: m, ident: id };
            let mut b = [0u8; 8];
            f.emit(&mut b);
            prop_assert_eq!(FragmentRepr::parse(&b), Some(f));
        }
    }
}
