//! ICMPv4 (RFC 792): echo request/reply and destination unreachable.

use super::checksum;
use super::{read_u16, write_u16, Result, WireError};

/// Length of the fixed ICMP header (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DST_UNREACHABLE: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
pub const CODE_PORT_UNREACHABLE: u8 = 3;

/// A view of an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buffer })
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
    /// Everything after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

/// The ICMP messages the stack understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpRepr<'a> {
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
    /// `original` is the offending packet's IPv4 header and (at least) its first 8
    /// payload bytes, as carried in the message.
    DstUnreachable { code: u8, original: &'a [u8] },
}

impl<'a> IcmpRepr<'a> {
    /// Parses and, when `verify_checksum`, checks the checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &'a IcmpPacket<&'a T>,
        verify_checksum: bool,
    ) -> Result<IcmpRepr<'a>> {
        if verify_checksum && !packet.verify_checksum() {
            return Err(WireError::Checksum);
        }
        let data = &packet.buffer.as_ref()[HEADER_LEN..];
        match (packet.msg_type(), packet.code()) {
            (TYPE_ECHO_REQUEST, 0) => Ok(IcmpRepr::EchoRequest {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data,
            }),
            (TYPE_ECHO_REPLY, 0) => Ok(IcmpRepr::EchoReply {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data,
            }),
            (TYPE_DST_UNREACHABLE, code) => {
                // At least a minimal IPv4 header + 8 bytes must be quoted.
                if data.len() < 28 {
                    return Err(WireError::Truncated);
                }
                Ok(IcmpRepr::DstUnreachable {
                    code,
                    original: data,
                })
            }
            _ => Err(WireError::Unsupported),
        }
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                IcmpRepr::EchoRequest { data, .. } | IcmpRepr::EchoReply { data, .. } => data.len(),
                IcmpRepr::DstUnreachable { original, .. } => original.len(),
            }
    }
    /// Writes the message (with checksum) into the start of `buf` (`buffer_len()` bytes).
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len()];
        let (t, code, rest, data): (u8, u8, [u8; 4], &[u8]) = match *self {
            IcmpRepr::EchoRequest { ident, seq, data } => {
                (TYPE_ECHO_REQUEST, 0, echo_rest(ident, seq), data)
            }
            IcmpRepr::EchoReply { ident, seq, data } => {
                (TYPE_ECHO_REPLY, 0, echo_rest(ident, seq), data)
            }
            IcmpRepr::DstUnreachable { code, original } => {
                (TYPE_DST_UNREACHABLE, code, [0; 4], original)
            }
        };
        buf[0] = t;
        buf[1] = code;
        write_u16(buf, 2, 0);
        buf[4..8].copy_from_slice(&rest);
        buf[HEADER_LEN..].copy_from_slice(data);
        let c = checksum::checksum(buf);
        write_u16(buf, 2, c);
    }
}

fn echo_rest(ident: u16, seq: u16) -> [u8; 4] {
    let i = ident.to_be_bytes();
    let s = seq.to_be_bytes();
    [i[0], i[1], s[0], s[1]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn echo_round_trip() {
        let r = IcmpRepr::EchoRequest {
            ident: 0x1234,
            seq: 9,
            data: b"ping!",
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(IcmpRepr::parse(&p, true).unwrap(), r);
        b[9] ^= 1;
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&p, true).unwrap_err(), WireError::Checksum);
    }

    #[test]
    fn unreachable_needs_quote() {
        let quote = [0x45u8; 28];
        let r = IcmpRepr::DstUnreachable {
            code: CODE_PORT_UNREACHABLE,
            original: &quote,
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(IcmpRepr::parse(&p, true).unwrap(), r);
        let p = IcmpPacket::new_checked(&b[..20]).unwrap();
        assert_eq!(
            IcmpRepr::parse(&p, false).unwrap_err(),
            WireError::Truncated
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = IcmpPacket::new_checked(&data[..]) {
                let _ = IcmpRepr::parse(&p, true);
                let _ = IcmpRepr::parse(&p, false);
            }
        }
    }
}
