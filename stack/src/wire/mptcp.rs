//! The Multipath TCP option (TCP option kind 30, RFC 8684 §3): a view that checks one
//! option's length against its subtype and flags ([`MptcpOption`]), a parsed form of
//! every subtype ([`MptcpRepr`]) that parses and emits it, a walker that finds the MPTCP
//! options among a segment's TCP options ([`mptcp_options`]), and the DSS checksum
//! (§3.3.1).
//!
//! Fields are read and written in the order the RFC's figures draw them, through a
//! cursor ([`Fields`], [`FieldsMut`]) over bytes whose length the view already checked,
//! so no offset arithmetic appears outside this file's `field` and `len` tables.

use super::checksum::Accumulator;
use super::{Result, WireError};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP option kind of every MPTCP option.
pub const OPTION_KIND: u8 = 30;

/// The MPTCP version this stack speaks (RFC 8684; version 0 is RFC 6824's).
pub const VERSION: u8 = 1;

/// Option subtypes (RFC 8684 §8, "MPTCP Option Subtypes").
pub mod subtype {
    pub const MP_CAPABLE: u8 = 0x0;
    pub const MP_JOIN: u8 = 0x1;
    pub const DSS: u8 = 0x2;
    pub const ADD_ADDR: u8 = 0x3;
    pub const REMOVE_ADDR: u8 = 0x4;
    pub const MP_PRIO: u8 = 0x5;
    pub const MP_FAIL: u8 = 0x6;
    pub const MP_FASTCLOSE: u8 = 0x7;
    pub const MP_TCPRST: u8 = 0x8;
}

/// MP_CAPABLE flag bits (the option's fourth byte, "A B C D E F G H", §3.1).
pub mod capable_flags {
    /// A: the sender requires DSS checksums.
    pub const CHECKSUM: u8 = 0x80;
    /// B: extensibility; no extension is defined, so senders leave it clear.
    pub const EXTENSIBILITY: u8 = 0x40;
    /// C: do not open new subflows to this packet's source address.
    pub const NO_JOIN_TO_SOURCE: u8 = 0x20;
    /// H: HMAC-SHA256, the only crypto algorithm RFC 8684 defines.
    pub const HMAC_SHA256: u8 = 0x01;
}

/// DSS flag bits (the option's fourth byte, "F m M a A", §3.3).
pub mod dss_flags {
    /// A: a data ACK is present.
    pub const DATA_ACK: u8 = 0x01;
    /// a: the data ACK is 8 octets (else 4).
    pub const DATA_ACK_8: u8 = 0x02;
    /// M: a mapping (DSN, subflow sequence number, data-level length, checksum) is present.
    pub const MAPPING: u8 = 0x04;
    /// m: the DSN is 8 octets (else 4).
    pub const DSN_8: u8 = 0x08;
    /// F: DATA_FIN.
    pub const DATA_FIN: u8 = 0x10;
}

/// MP_TCPRST reason codes (§3.6).
pub mod reset_reason {
    pub const UNSPECIFIED: u8 = 0x00;
    pub const MPTCP_ERROR: u8 = 0x01;
    pub const NO_RESOURCES: u8 = 0x02;
    pub const ADMINISTRATIVE: u8 = 0x03;
    pub const TOO_MUCH_OUTSTANDING: u8 = 0x04;
    pub const UNACCEPTABLE_PERFORMANCE: u8 = 0x05;
    pub const MIDDLEBOX_INTERFERENCE: u8 = 0x06;
}

/// Offsets of the bytes every subtype shares.
mod field {
    pub const KIND: usize = 0;
    pub const LENGTH: usize = 1;
    /// Subtype in the high nibble; the low nibble is subtype-specific (version, flags).
    pub const SUBTYPE: usize = 2;
    /// Flags (MP_CAPABLE, DSS), address ID (MP_JOIN, ADD_ADDR), reason (MP_TCPRST).
    pub const BYTE3: usize = 3;
}

/// The option lengths each subtype allows (§3.1–§3.6).
mod len {
    pub const MIN: usize = 3;
    pub const CAPABLE_SYN: usize = 4;
    pub const CAPABLE_SYN_ACK: usize = 12;
    pub const CAPABLE_ACK: usize = 20;
    pub const CAPABLE_DATA: usize = 22;
    pub const CAPABLE_DATA_CSUM: usize = 24;
    pub const JOIN_SYN: usize = 12;
    pub const JOIN_SYN_ACK: usize = 16;
    pub const JOIN_ACK: usize = 24;
    pub const DSS_BASE: usize = 4;
    /// Subflow sequence number and data-level length; the DSN and checksum come on top.
    pub const DSS_MAPPING_FIXED: usize = 6;
    pub const CHECKSUM: usize = 2;
    pub const ADD_ADDR_BASE: usize = 4;
    pub const PORT: usize = 2;
    pub const ADD_ADDR_HMAC: usize = 8;
    pub const REMOVE_ADDR_BASE: usize = 3;
    pub const PRIO: usize = 3;
    pub const FAIL: usize = 12;
    pub const FASTCLOSE: usize = 12;
    pub const TCPRST: usize = 4;
    /// TCP options take at most 40 bytes (a 60-byte header).
    pub const MAX: usize = 40;
}

/// Address IDs one REMOVE_ADDR can carry within the 40 bytes of TCP options.
pub const MAX_REMOVE_IDS: usize = len::MAX - len::REMOVE_ADDR_BASE;

/// MP_JOIN's HMAC in the third ACK: the leftmost 160 bits of HMAC-SHA256 (§3.2).
pub const JOIN_ACK_HMAC_LEN: usize = 20;

/// Length of a DSS option with these flags, with or without the mapping's checksum.
const fn dss_len(flags: u8, checksum: bool) -> usize {
    let mut n = len::DSS_BASE;
    if flags & dss_flags::DATA_ACK != 0 {
        n += if flags & dss_flags::DATA_ACK_8 != 0 {
            8
        } else {
            4
        };
    }
    if flags & dss_flags::MAPPING != 0 {
        n += if flags & dss_flags::DSN_8 != 0 { 8 } else { 4 };
        n += len::DSS_MAPPING_FIXED;
        if checksum {
            n += len::CHECKSUM;
        }
    }
    n
}

/// Length of an ADD_ADDR option for this address, port and HMAC presence.
const fn add_addr_len(v6: bool, port: bool, hmac: bool) -> usize {
    len::ADD_ADDR_BASE
        + if v6 { 16 } else { 4 }
        + if port { len::PORT } else { 0 }
        + if hmac { len::ADD_ADDR_HMAC } else { 0 }
}

/// A view of one MPTCP option: the kind byte through the option's last byte.
#[derive(Debug)]
pub struct MptcpOption<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MptcpOption<T> {
    /// Wraps one option after checking its kind, that its length byte is the buffer's
    /// length, and that the length is one its subtype and flags allow. Accessors and
    /// [`MptcpRepr::parse`] of a checked option do not fail on lengths.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let o = MptcpOption { buffer };
        o.check_len()?;
        Ok(o)
    }

    fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < len::MIN {
            return Err(WireError::Truncated);
        }
        if b[field::KIND] != OPTION_KIND {
            return Err(WireError::Malformed);
        }
        let n = b[field::LENGTH] as usize;
        if n > b.len() {
            return Err(WireError::Truncated);
        }
        if n != b.len() || n > len::MAX {
            return Err(WireError::Malformed);
        }
        // Every subtype but MP_PRIO has a fourth byte.
        let byte3 = || b.get(field::BYTE3).copied().ok_or(WireError::Malformed);
        let ok = match self.subtype() {
            subtype::MP_CAPABLE => matches!(
                n,
                len::CAPABLE_SYN
                    | len::CAPABLE_SYN_ACK
                    | len::CAPABLE_ACK
                    | len::CAPABLE_DATA
                    | len::CAPABLE_DATA_CSUM
            ),
            subtype::MP_JOIN => matches!(n, len::JOIN_SYN | len::JOIN_SYN_ACK | len::JOIN_ACK),
            subtype::DSS => {
                let f = byte3()?;
                n == dss_len(f, false) || (f & dss_flags::MAPPING != 0 && n == dss_len(f, true))
            }
            subtype::ADD_ADDR => {
                // The echo carries no HMAC (§3.4.1): the E bit says which lengths apply.
                let hmac = !self.add_addr_echo();
                [false, true].iter().any(|&v6| {
                    [false, true]
                        .iter()
                        .any(|&p| n == add_addr_len(v6, p, hmac))
                })
            }
            subtype::REMOVE_ADDR => n > len::REMOVE_ADDR_BASE,
            subtype::MP_PRIO => n == len::PRIO,
            subtype::MP_FAIL => n == len::FAIL,
            subtype::MP_FASTCLOSE => n == len::FASTCLOSE,
            subtype::MP_TCPRST => n == len::TCPRST,
            // MP_EXPERIMENTAL (0xf) and unassigned subtypes.
            _ => return Err(WireError::Unsupported),
        };
        if ok {
            Ok(())
        } else {
            Err(WireError::Malformed)
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The option's length (its length byte, which is the buffer's length).
    pub fn len(&self) -> usize {
        self.buffer.as_ref()[field::LENGTH] as usize
    }
    /// Never true for a checked option; here for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn subtype(&self) -> u8 {
        self.buffer.as_ref()[field::SUBTYPE] >> 4
    }
    /// The low nibble of the subtype byte: MP_CAPABLE's version, MP_JOIN's and
    /// MP_PRIO's B (backup), ADD_ADDR's E (echo), MP_TCPRST's flags.
    pub fn subtype_bits(&self) -> u8 {
        self.buffer.as_ref()[field::SUBTYPE] & 0x0f
    }
    /// The fourth byte: MP_CAPABLE's and DSS's flags, MP_JOIN's (SYN, SYN-ACK) and
    /// ADD_ADDR's address ID, REMOVE_ADDR's first address ID, MP_TCPRST's reason.
    /// MP_PRIO, three bytes long, has none: zero.
    pub fn byte3(&self) -> u8 {
        self.buffer.as_ref().get(field::BYTE3).copied().unwrap_or(0)
    }
    /// ADD_ADDR's E bit: this option echoes the peer's announcement.
    pub fn add_addr_echo(&self) -> bool {
        self.subtype() == subtype::ADD_ADDR && self.subtype_bits() & 0x1 != 0
    }
    /// DSS: the flag bits ([`dss_flags`]); other subtypes: zero.
    pub fn dss_flags(&self) -> u8 {
        if self.subtype() == subtype::DSS {
            self.byte3() & 0x1f
        } else {
            0
        }
    }
    /// The option's bytes after the subtype byte, for the subtype's own fields.
    fn body(&self) -> Fields<'_> {
        Fields {
            b: &self.buffer.as_ref()[field::SUBTYPE + 1..],
        }
    }
}

/// Reads big-endian fields in order; running past the end is [`WireError::Truncated`]
/// (which a checked option's length rules out).
struct Fields<'a> {
    b: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self
            .b
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated)?;
        self.b = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64> {
        self.take().map(u64::from_be_bytes)
    }
    fn remaining(&self) -> usize {
        self.b.len()
    }
    fn rest(&self) -> &'a [u8] {
        self.b
    }
}

/// Writes fields in order into a buffer the caller sized with `buffer_len()`.
struct FieldsMut<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl FieldsMut<'_> {
    fn put(&mut self, v: &[u8]) {
        self.b[self.at..self.at + v.len()].copy_from_slice(v);
        self.at += v.len();
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
}

/// A data sequence number or data ACK as sent: its low 32 bits or all 64 (§3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSeq {
    Low32(u32),
    Full(u64),
}

impl DataSeq {
    /// The 64-bit value: a 32-bit one is completed to the 64-bit number nearest to
    /// `near` (e.g. the receiver's next expected DSN) with those low bits.
    pub fn expand(self, near: u64) -> u64 {
        match self {
            DataSeq::Full(v) => v,
            DataSeq::Low32(low) => {
                let delta = low.wrapping_sub(near as u32) as i32;
                near.wrapping_add(delta as i64 as u64)
            }
        }
    }
    const fn is_full(self) -> bool {
        matches!(self, DataSeq::Full(_))
    }
    fn read(f: &mut Fields<'_>, full: bool) -> Result<DataSeq> {
        Ok(if full {
            DataSeq::Full(f.u64()?)
        } else {
            DataSeq::Low32(f.u32()?)
        })
    }
    fn write(self, f: &mut FieldsMut<'_>) {
        match self {
            DataSeq::Low32(v) => f.u32(v),
            DataSeq::Full(v) => f.u64(v),
        }
    }
}

/// The keys an MP_CAPABLE carries; which ones says which segment of the handshake it is
/// in (§3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapableKeys {
    /// SYN (version 1): no key.
    None,
    /// SYN-ACK: the sender's key.
    Sender(u64),
    /// Third ACK: both keys.
    Both { sender: u64, receiver: u64 },
    /// The first data segment when the third ACK may have been lost: both keys, the
    /// data-level length of the data and, when checksums are in use, its DSS checksum.
    /// The data's DSN is the sender's IDSN + 1, its subflow sequence number 1.
    WithData {
        sender: u64,
        receiver: u64,
        data_len: u16,
        checksum: Option<u16>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpCapable {
    pub version: u8,
    /// [`capable_flags`] bits, kept whole so that unassigned ones (D–G) round-trip.
    pub flags: u8,
    pub keys: CapableKeys,
}

impl MpCapable {
    pub fn checksum_required(&self) -> bool {
        self.flags & capable_flags::CHECKSUM != 0
    }
}

/// MP_JOIN, one form per segment of the subflow's handshake (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpJoin {
    Syn {
        backup: bool,
        addr_id: u8,
        /// The token of the connection the subflow joins (the receiver's).
        token: u32,
        nonce: u32,
    },
    SynAck {
        backup: bool,
        addr_id: u8,
        /// The leftmost 64 bits of the sender's HMAC.
        hmac: u64,
        nonce: u32,
    },
    Ack {
        /// The leftmost 160 bits of the sender's HMAC.
        hmac: [u8; JOIN_ACK_HMAC_LEN],
    },
}

/// A DSS mapping: `data_len` bytes from subflow sequence number `subflow_seq` (relative
/// to the subflow's ISN) carry the data from `dsn` on (§3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DssMapping {
    pub dsn: DataSeq,
    pub subflow_seq: u32,
    /// Zero: an infinite mapping (fallback, §3.7).
    pub data_len: u16,
    /// Present when the connection negotiated checksums.
    pub checksum: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dss {
    pub data_ack: Option<DataSeq>,
    pub mapping: Option<DssMapping>,
    /// The mapping's last data-level byte is the DATA_FIN.
    pub data_fin: bool,
}

impl Dss {
    fn flags(&self) -> u8 {
        let mut f = 0;
        if let Some(a) = self.data_ack {
            f |= dss_flags::DATA_ACK;
            if a.is_full() {
                f |= dss_flags::DATA_ACK_8;
            }
        }
        if let Some(m) = self.mapping {
            f |= dss_flags::MAPPING;
            if m.dsn.is_full() {
                f |= dss_flags::DSN_8;
            }
        }
        if self.data_fin {
            f |= dss_flags::DATA_FIN;
        }
        f
    }
}

/// ADD_ADDR (§3.4.1): an announcement carries an HMAC, its echo does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddAddr {
    pub addr_id: u8,
    pub addr: IpAddr,
    pub port: Option<u16>,
    /// The rightmost 64 bits of the sender's HMAC; `None`: this is the echo (E set).
    pub hmac: Option<u64>,
}

impl AddAddr {
    pub fn is_echo(&self) -> bool {
        self.hmac.is_none()
    }
}

/// REMOVE_ADDR's address IDs (§3.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveAddr {
    ids: [u8; MAX_REMOVE_IDS],
    len: u8,
}

impl RemoveAddr {
    /// `None` when `ids` is empty or longer than an option can carry.
    pub fn new(ids: &[u8]) -> Option<RemoveAddr> {
        if ids.is_empty() || ids.len() > MAX_REMOVE_IDS {
            return None;
        }
        let mut r = RemoveAddr {
            ids: [0; MAX_REMOVE_IDS],
            len: ids.len() as u8,
        };
        r.ids[..ids.len()].copy_from_slice(ids);
        Some(r)
    }
    pub fn ids(&self) -> &[u8] {
        &self.ids[..self.len as usize]
    }
}

/// One parsed MPTCP option. Reserved bits are ignored on parse and sent as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MptcpRepr {
    Capable(MpCapable),
    Join(MpJoin),
    Dss(Dss),
    AddAddr(AddAddr),
    RemoveAddr(RemoveAddr),
    /// MP_PRIO: the sender wants the subflow it arrives on to be (or stop being) a backup.
    Prio {
        backup: bool,
    },
    /// MP_FAIL: a checksum failed; `dsn` is the start of the failed mapping (§3.7).
    Fail {
        dsn: u64,
    },
    /// MP_FASTCLOSE: the connection is aborted; the key proves it (§3.5).
    FastClose {
        receiver_key: u64,
    },
    /// MP_TCPRST: why a subflow is reset (§3.6); `transient`: the T flag.
    TcpRst {
        transient: bool,
        reason: u8,
    },
}

impl MptcpRepr {
    /// Parses a checked option.
    pub fn parse<T: AsRef<[u8]>>(o: &MptcpOption<T>) -> Result<MptcpRepr> {
        let bits = o.subtype_bits();
        let mut f = o.body();
        Ok(match o.subtype() {
            subtype::MP_CAPABLE => {
                let flags = f.u8()?;
                let keys = match f.remaining() {
                    0 => CapableKeys::None,
                    8 => CapableKeys::Sender(f.u64()?),
                    16 => CapableKeys::Both {
                        sender: f.u64()?,
                        receiver: f.u64()?,
                    },
                    _ => CapableKeys::WithData {
                        sender: f.u64()?,
                        receiver: f.u64()?,
                        data_len: f.u16()?,
                        checksum: if f.remaining() == len::CHECKSUM {
                            Some(f.u16()?)
                        } else {
                            None
                        },
                    },
                };
                MptcpRepr::Capable(MpCapable {
                    version: bits,
                    flags,
                    keys,
                })
            }
            subtype::MP_JOIN => {
                let backup = bits & 0x1 != 0;
                MptcpRepr::Join(match o.len() {
                    len::JOIN_SYN => MpJoin::Syn {
                        backup,
                        addr_id: f.u8()?,
                        token: f.u32()?,
                        nonce: f.u32()?,
                    },
                    len::JOIN_SYN_ACK => MpJoin::SynAck {
                        backup,
                        addr_id: f.u8()?,
                        hmac: f.u64()?,
                        nonce: f.u32()?,
                    },
                    _ => {
                        f.u8()?; // reserved
                        MpJoin::Ack { hmac: f.take()? }
                    }
                })
            }
            subtype::DSS => {
                let flags = f.u8()?;
                let data_ack = if flags & dss_flags::DATA_ACK != 0 {
                    Some(DataSeq::read(&mut f, flags & dss_flags::DATA_ACK_8 != 0)?)
                } else {
                    None
                };
                let mapping = if flags & dss_flags::MAPPING != 0 {
                    Some(DssMapping {
                        dsn: DataSeq::read(&mut f, flags & dss_flags::DSN_8 != 0)?,
                        subflow_seq: f.u32()?,
                        data_len: f.u16()?,
                        checksum: if f.remaining() == len::CHECKSUM {
                            Some(f.u16()?)
                        } else {
                            None
                        },
                    })
                } else {
                    None
                };
                MptcpRepr::Dss(Dss {
                    data_ack,
                    mapping,
                    data_fin: flags & dss_flags::DATA_FIN != 0,
                })
            }
            subtype::ADD_ADDR => {
                let echo = bits & 0x1 != 0;
                let addr_id = f.u8()?;
                let after_addr = f.remaining() - if echo { 0 } else { len::ADD_ADDR_HMAC };
                let addr = if after_addr >= 16 {
                    IpAddr::V6(Ipv6Addr::from(f.take::<16>()?))
                } else {
                    IpAddr::V4(Ipv4Addr::from(f.take::<4>()?))
                };
                let port = if f.remaining() > if echo { 0 } else { len::ADD_ADDR_HMAC } {
                    Some(f.u16()?)
                } else {
                    None
                };
                let hmac = if echo { None } else { Some(f.u64()?) };
                MptcpRepr::AddAddr(AddAddr {
                    addr_id,
                    addr,
                    port,
                    hmac,
                })
            }
            subtype::REMOVE_ADDR => {
                MptcpRepr::RemoveAddr(RemoveAddr::new(f.rest()).ok_or(WireError::Malformed)?)
            }
            subtype::MP_PRIO => MptcpRepr::Prio {
                backup: bits & 0x1 != 0,
            },
            subtype::MP_FAIL => {
                f.u8()?; // reserved
                MptcpRepr::Fail { dsn: f.u64()? }
            }
            subtype::MP_FASTCLOSE => {
                f.u8()?; // reserved
                MptcpRepr::FastClose {
                    receiver_key: f.u64()?,
                }
            }
            subtype::MP_TCPRST => MptcpRepr::TcpRst {
                transient: bits & 0x1 != 0,
                reason: f.u8()?,
            },
            _ => return Err(WireError::Unsupported),
        })
    }

    /// Parses one option's bytes (kind through its last byte).
    pub fn parse_bytes(option: &[u8]) -> Result<MptcpRepr> {
        MptcpRepr::parse(&MptcpOption::new_checked(option)?)
    }

    pub fn subtype(&self) -> u8 {
        match self {
            MptcpRepr::Capable(_) => subtype::MP_CAPABLE,
            MptcpRepr::Join(_) => subtype::MP_JOIN,
            MptcpRepr::Dss(_) => subtype::DSS,
            MptcpRepr::AddAddr(_) => subtype::ADD_ADDR,
            MptcpRepr::RemoveAddr(_) => subtype::REMOVE_ADDR,
            MptcpRepr::Prio { .. } => subtype::MP_PRIO,
            MptcpRepr::Fail { .. } => subtype::MP_FAIL,
            MptcpRepr::FastClose { .. } => subtype::MP_FASTCLOSE,
            MptcpRepr::TcpRst { .. } => subtype::MP_TCPRST,
        }
    }

    /// Bytes the option takes (no padding: the caller aligns the TCP options).
    pub fn buffer_len(&self) -> usize {
        match self {
            MptcpRepr::Capable(c) => match c.keys {
                CapableKeys::None => len::CAPABLE_SYN,
                CapableKeys::Sender(_) => len::CAPABLE_SYN_ACK,
                CapableKeys::Both { .. } => len::CAPABLE_ACK,
                CapableKeys::WithData { checksum: None, .. } => len::CAPABLE_DATA,
                CapableKeys::WithData { .. } => len::CAPABLE_DATA_CSUM,
            },
            MptcpRepr::Join(MpJoin::Syn { .. }) => len::JOIN_SYN,
            MptcpRepr::Join(MpJoin::SynAck { .. }) => len::JOIN_SYN_ACK,
            MptcpRepr::Join(MpJoin::Ack { .. }) => len::JOIN_ACK,
            MptcpRepr::Dss(d) => {
                dss_len(d.flags(), d.mapping.is_some_and(|m| m.checksum.is_some()))
            }
            MptcpRepr::AddAddr(a) => add_addr_len(a.addr.is_ipv6(), a.port.is_some(), !a.is_echo()),
            MptcpRepr::RemoveAddr(r) => len::REMOVE_ADDR_BASE + r.ids().len(),
            MptcpRepr::Prio { .. } => len::PRIO,
            MptcpRepr::Fail { .. } => len::FAIL,
            MptcpRepr::FastClose { .. } => len::FASTCLOSE,
            MptcpRepr::TcpRst { .. } => len::TCPRST,
        }
    }

    /// Writes the option into the front of `buf` (at least `buffer_len()` bytes) and
    /// returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let n = self.buffer_len();
        let mut f = FieldsMut {
            b: &mut buf[..n],
            at: 0,
        };
        f.u8(OPTION_KIND);
        f.u8(n as u8);
        let subtype_byte = |bits: u8| (self.subtype() << 4) | (bits & 0x0f);
        match *self {
            MptcpRepr::Capable(c) => {
                f.u8(subtype_byte(c.version));
                f.u8(c.flags);
                match c.keys {
                    CapableKeys::None => {}
                    CapableKeys::Sender(k) => f.u64(k),
                    CapableKeys::Both { sender, receiver } => {
                        f.u64(sender);
                        f.u64(receiver);
                    }
                    CapableKeys::WithData {
                        sender,
                        receiver,
                        data_len,
                        checksum,
                    } => {
                        f.u64(sender);
                        f.u64(receiver);
                        f.u16(data_len);
                        if let Some(c) = checksum {
                            f.u16(c);
                        }
                    }
                }
            }
            MptcpRepr::Join(j) => match j {
                MpJoin::Syn {
                    backup,
                    addr_id,
                    token,
                    nonce,
                } => {
                    f.u8(subtype_byte(backup as u8));
                    f.u8(addr_id);
                    f.u32(token);
                    f.u32(nonce);
                }
                MpJoin::SynAck {
                    backup,
                    addr_id,
                    hmac,
                    nonce,
                } => {
                    f.u8(subtype_byte(backup as u8));
                    f.u8(addr_id);
                    f.u64(hmac);
                    f.u32(nonce);
                }
                MpJoin::Ack { hmac } => {
                    f.u8(subtype_byte(0));
                    f.u8(0);
                    f.put(&hmac);
                }
            },
            MptcpRepr::Dss(d) => {
                f.u8(subtype_byte(0));
                f.u8(d.flags());
                if let Some(a) = d.data_ack {
                    a.write(&mut f);
                }
                if let Some(m) = d.mapping {
                    m.dsn.write(&mut f);
                    f.u32(m.subflow_seq);
                    f.u16(m.data_len);
                    if let Some(c) = m.checksum {
                        f.u16(c);
                    }
                }
            }
            MptcpRepr::AddAddr(a) => {
                f.u8(subtype_byte(a.is_echo() as u8));
                f.u8(a.addr_id);
                match a.addr {
                    IpAddr::V4(v4) => f.put(&v4.octets()),
                    IpAddr::V6(v6) => f.put(&v6.octets()),
                }
                if let Some(p) = a.port {
                    f.u16(p);
                }
                if let Some(h) = a.hmac {
                    f.u64(h);
                }
            }
            MptcpRepr::RemoveAddr(r) => {
                f.u8(subtype_byte(0));
                f.put(r.ids());
            }
            MptcpRepr::Prio { backup } => f.u8(subtype_byte(backup as u8)),
            MptcpRepr::Fail { dsn } => {
                f.u8(subtype_byte(0));
                f.u8(0);
                f.u64(dsn);
            }
            MptcpRepr::FastClose { receiver_key } => {
                f.u8(subtype_byte(0));
                f.u8(0);
                f.u64(receiver_key);
            }
            MptcpRepr::TcpRst { transient, reason } => {
                f.u8(subtype_byte(transient as u8));
                f.u8(reason);
            }
        }
        debug_assert_eq!(f.at, n);
        n
    }
}

/// The MPTCP options among a segment's TCP options (the bytes between the fixed header
/// and the payload), in order. A malformed TCP option list ends the walk with an error;
/// a malformed MPTCP option is an error item and the walk goes on.
pub fn mptcp_options(tcp_options: &[u8]) -> MptcpOptions<'_> {
    MptcpOptions { rest: tcp_options }
}

pub struct MptcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MptcpOptions<'a> {
    type Item = Result<MptcpOption<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        const END: u8 = 0;
        const NOP: u8 = 1;
        loop {
            match *self.rest.first()? {
                END => {
                    self.rest = &[];
                    return None;
                }
                NOP => self.rest = &self.rest[1..],
                kind => {
                    let n = self.rest.get(1).map(|&n| n as usize);
                    let Some(n) = n.filter(|&n| n >= 2 && n <= self.rest.len()) else {
                        self.rest = &[];
                        return Some(Err(WireError::Malformed));
                    };
                    let (option, rest) = self.rest.split_at(n);
                    self.rest = rest;
                    if kind == OPTION_KIND {
                        return Some(MptcpOption::new_checked(option));
                    }
                }
            }
        }
    }
}

/// The DSS checksum (§3.3.1) of a mapping's data: the one's-complement sum of a
/// pseudo-header (64-bit DSN, subflow sequence number, data-level length, zero) and the
/// data. `data` is what the mapping covers, in pieces (it may span several segments);
/// a DATA_FIN-only mapping covers none.
pub fn dss_checksum<'a>(
    dsn: u64,
    subflow_seq: u32,
    data_len: u16,
    data: impl IntoIterator<Item = &'a [u8]>,
) -> u16 {
    let mut acc = dss_checksum_start(dsn, subflow_seq, data_len);
    for piece in data {
        acc.add_bytes(piece);
    }
    acc.finish()
}

/// The sum of a DSS checksum's pseudo-header, for a receiver that adds the mapping's
/// data as its segments arrive; `finish()` after the last byte is the checksum.
pub fn dss_checksum_start(dsn: u64, subflow_seq: u32, data_len: u16) -> Accumulator {
    let mut pseudo = [0u8; 16];
    let mut f = FieldsMut {
        b: &mut pseudo,
        at: 0,
    };
    f.u64(dsn);
    f.u32(subflow_seq);
    f.u16(data_len);
    f.u16(0);
    let mut acc = Accumulator::new();
    acc.add_bytes(&pseudo);
    acc
}

/// Bytes from a hex string, for tests that quote captured options.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses `bytes`, checks the result, and checks that emitting it gives `bytes` back.
    fn known(bytes: &str, want: MptcpRepr) {
        let b = hex(bytes);
        assert_eq!(MptcpRepr::parse_bytes(&b), Ok(want), "{bytes}");
        let mut out = vec![0u8; want.buffer_len()];
        assert_eq!(want.emit(&mut out), b.len());
        assert_eq!(out, b, "{bytes}");
    }

    // Known-good bytes, each from a frame of a capture of Linux 6.18's own MPTCP between
    // two namespaces, made with scripts/mptcp-capture.sh and decoded by tshark 4.0.17
    // (run A: checksums off; run B: `net.mptcp.checksum_enabled=1`; run C: checksums off
    // and the address announced without a port). Each comment names the frame and what
    // tshark decoded there.

    #[test]
    fn mp_capable_syn_syn_ack_and_third_ack_from_linux() {
        // Run A frame 15 (SYN): version 1, flags H.
        known(
            "1e040101",
            MptcpRepr::Capable(MpCapable {
                version: 1,
                flags: capable_flags::HMAC_SHA256,
                keys: CapableKeys::None,
            }),
        );
        // Run B frame 14 (SYN): flags A and H (checksum required).
        known(
            "1e040181",
            MptcpRepr::Capable(MpCapable {
                version: 1,
                flags: capable_flags::CHECKSUM | capable_flags::HMAC_SHA256,
                keys: CapableKeys::None,
            }),
        );
        // Run A frame 16 (SYN-ACK): the server's key.
        known(
            "1e0c0101565820c9a9198902",
            MptcpRepr::Capable(MpCapable {
                version: 1,
                flags: capable_flags::HMAC_SHA256,
                keys: CapableKeys::Sender(0x565820c9a9198902),
            }),
        );
        // Run A frame 17 (third ACK): the client's key, then the server's.
        known(
            "1e14010185c97b13a74b4fa5565820c9a9198902",
            MptcpRepr::Capable(MpCapable {
                version: 1,
                flags: capable_flags::HMAC_SHA256,
                keys: CapableKeys::Both {
                    sender: 0x85c97b13a74b4fa5,
                    receiver: 0x565820c9a9198902,
                },
            }),
        );
    }

    #[test]
    fn mp_capable_with_data_and_checksum_from_linux() {
        // Run B frame 46: the client's first 1000 bytes ("c" × 1000) with both keys,
        // data-level length 1000 and DSS checksum 0xdc1c.
        let o = "1e180181e55b1b8ad7b481540f677c2d64b2e84a03e8dc1c";
        known(
            o,
            MptcpRepr::Capable(MpCapable {
                version: 1,
                flags: capable_flags::CHECKSUM | capable_flags::HMAC_SHA256,
                keys: CapableKeys::WithData {
                    sender: 0xe55b1b8ad7b48154,
                    receiver: 0x0f677c2d64b2e84a,
                    data_len: 1000,
                    checksum: Some(0xdc1c),
                },
            }),
        );
        // That checksum covers DSN = the client's IDSN + 1 (IDSN of key e55b1b8ad7b48154
        // is 0xef93bfe99060c1fc: the server's data ACK after these 1000 bytes, in frame
        // 47, is 0xef93bfe99060c5e5), subflow sequence number 1.
        let data = [b'c'; 1000];
        assert_eq!(
            dss_checksum(0xef93bfe99060c1fd, 1, 1000, [&data[..]]),
            0xdc1c
        );
        // Without checksums the same form is 22 bytes (built here; Linux sent a DSS
        // instead in run A).
        let r = MptcpRepr::Capable(MpCapable {
            version: 1,
            flags: capable_flags::HMAC_SHA256,
            keys: CapableKeys::WithData {
                sender: 1,
                receiver: 2,
                data_len: 5,
                checksum: None,
            },
        });
        let mut b = [0u8; 22];
        assert_eq!(r.emit(&mut b), 22);
        assert_eq!(b[..2], [30, 22]);
        assert_eq!(b[20..22], [0, 5]);
        assert_eq!(MptcpRepr::parse_bytes(&b), Ok(r));
    }

    #[test]
    fn mp_join_three_forms_from_linux() {
        // Run A frame 26 (SYN): address ID 1, token 0x483f5f33, nonce 0x20bf9b5f.
        known(
            "1e0c1001483f5f3320bf9b5f",
            MptcpRepr::Join(MpJoin::Syn {
                backup: false,
                addr_id: 1,
                token: 0x483f5f33,
                nonce: 0x20bf9b5f,
            }),
        );
        // Frame 27 (SYN-ACK): address ID 5, truncated HMAC, nonce.
        known(
            "1e101005699a5e9369064094bd44a77a",
            MptcpRepr::Join(MpJoin::SynAck {
                backup: false,
                addr_id: 5,
                hmac: 0x699a5e9369064094,
                nonce: 0xbd44a77a,
            }),
        );
        // Frame 28 (ACK): 160 bits of HMAC.
        let mut hmac = [0u8; 20];
        hmac.copy_from_slice(&hex("4d00a3b097d7a5dd3026a77f5c10debe4f3910ec"));
        known(
            "1e1810004d00a3b097d7a5dd3026a77f5c10debe4f3910ec",
            MptcpRepr::Join(MpJoin::Ack { hmac }),
        );
        // The backup bit (built here): the low bit of the subtype byte.
        let mut b = [0u8; 12];
        MptcpRepr::Join(MpJoin::Syn {
            backup: true,
            addr_id: 9,
            token: 1,
            nonce: 2,
        })
        .emit(&mut b);
        assert_eq!(b[..4], [30, 12, 0x11, 9]);
    }

    #[test]
    fn dss_forms_from_linux() {
        // Run A frame 20: 4-byte data ACK, 8-byte DSN, subflow seq 1, length 1000.
        known(
            "1e16200dde21849ca1771496d3939be20000000103e8",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Low32(0xde21849c)),
                mapping: Some(DssMapping {
                    dsn: DataSeq::Full(0xa1771496d3939be2),
                    subflow_seq: 1,
                    data_len: 1000,
                    checksum: None,
                }),
                data_fin: false,
            }),
        );
        // Run A frame 21: an 8-byte data ACK alone.
        known(
            "1e0c2003a1771496d3939fca",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Full(0xa1771496d3939fca)),
                mapping: None,
                data_fin: false,
            }),
        );
        // Run A frame 29: a 4-byte data ACK alone.
        known(
            "1e082001d3939be2",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Low32(0xd3939be2)),
                mapping: None,
                data_fin: false,
            }),
        );
        // Run B frame 48: 8-byte ACK and DSN, checksum 0xbfd9 over "s" × 1000.
        known(
            "1e1c200fef93bfe99060c5e5c1b8133b28f5c0d60000000103e8bfd9",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Full(0xef93bfe99060c5e5)),
                mapping: Some(DssMapping {
                    dsn: DataSeq::Full(0xc1b8133b28f5c0d6),
                    subflow_seq: 1,
                    data_len: 1000,
                    checksum: Some(0xbfd9),
                }),
                data_fin: false,
            }),
        );
        let data = [b's'; 1000];
        // In two pieces, split at an odd offset, as a mapping over two segments.
        assert_eq!(
            dss_checksum(0xc1b8133b28f5c0d6, 1, 1000, [&data[..333], &data[333..]]),
            0xbfd9
        );
        // Run B frame 19: "hello" with checksum 0x5ef1.
        known(
            "1e18200d4c272640330a6b38ff74bf7e0000000100055ef1",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Low32(0x4c272640)),
                mapping: Some(DssMapping {
                    dsn: DataSeq::Full(0x330a6b38ff74bf7e),
                    subflow_seq: 1,
                    data_len: 5,
                    checksum: Some(0x5ef1),
                }),
                data_fin: false,
            }),
        );
        assert_eq!(
            dss_checksum(0x330a6b38ff74bf7e, 1, 5, [&b"hello"[..]]),
            0x5ef1
        );
    }

    #[test]
    fn data_fin_from_linux() {
        // Run B frame 21: DATA_FIN right after "hello": DSN + 5, subflow seq 0, length 1,
        // checksum over the pseudo-header alone.
        known(
            "1e18201d4c272640330a6b38ff74bf83000000000001a2c3",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Low32(0x4c272640)),
                mapping: Some(DssMapping {
                    dsn: DataSeq::Full(0x330a6b38ff74bf83),
                    subflow_seq: 0,
                    data_len: 1,
                    checksum: Some(0xa2c3),
                }),
                data_fin: true,
            }),
        );
        assert_eq!(dss_checksum(0x330a6b38ff74bf83, 0, 1, []), 0xa2c3);
        // Run B frame 23: the server's DATA_FIN, 8-byte ACK.
        known(
            "1e1c201f330a6b38ff74bf84dbf5d3b24c272640000000000001ddee",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Full(0x330a6b38ff74bf84)),
                mapping: Some(DssMapping {
                    dsn: DataSeq::Full(0xdbf5d3b24c272640),
                    subflow_seq: 0,
                    data_len: 1,
                    checksum: Some(0xddee),
                }),
                data_fin: true,
            }),
        );
        assert_eq!(dss_checksum(0xdbf5d3b24c272640, 0, 1, []), 0xddee);
        // Run C (checksums off, no port announced) frame 27: DATA_FIN without checksum.
        known(
            "1e16201d358cbe1f2448f6d549c77ee4000000000001",
            MptcpRepr::Dss(Dss {
                data_ack: Some(DataSeq::Low32(0x358cbe1f)),
                mapping: Some(DssMapping {
                    dsn: DataSeq::Full(0x2448f6d549c77ee4),
                    subflow_seq: 0,
                    data_len: 1,
                    checksum: None,
                }),
                data_fin: true,
            }),
        );
    }

    #[test]
    fn add_addr_remove_addr_prio_fastclose_tcprst_from_linux() {
        // Run A frame 18: ADD_ADDR of 10.77.232.2 port 5001, ID 5, with HMAC.
        known(
            "1e1230050a4de802138980eef4ec77f56ad0",
            MptcpRepr::AddAddr(AddAddr {
                addr_id: 5,
                addr: IpAddr::V4(Ipv4Addr::new(10, 77, 232, 2)),
                port: Some(5001),
                hmac: Some(0x80eef4ec77f56ad0),
            }),
        );
        // Run A frame 19: the client's echo (E set, no HMAC).
        known(
            "1e0a31050a4de8021389",
            MptcpRepr::AddAddr(AddAddr {
                addr_id: 5,
                addr: IpAddr::V4(Ipv4Addr::new(10, 77, 232, 2)),
                port: Some(5001),
                hmac: None,
            }),
        );
        // Run A frame 40: MP_PRIO, backup.
        known("1e0351", MptcpRepr::Prio { backup: true });
        // Run A frame 46: REMOVE_ADDR of ID 5.
        known(
            "1e044005",
            MptcpRepr::RemoveAddr(RemoveAddr::new(&[5]).unwrap()),
        );
        // Run A frame 55 (RST): MP_FASTCLOSE with the server's key, then MP_TCPRST.
        known(
            "1e0c7000565820c9a9198902",
            MptcpRepr::FastClose {
                receiver_key: 0x565820c9a9198902,
            },
        );
        known(
            "1e048000",
            MptcpRepr::TcpRst {
                transient: false,
                reason: reset_reason::UNSPECIFIED,
            },
        );
    }

    #[test]
    fn forms_linux_did_not_send_follow_the_rfc_figures() {
        // Bytes written from RFC 8684's figures; tshark 4.0.17 decodes each (put in a TCP
        // header in a pcap) to the values asserted here.
        // Figure 12, IPv6 ADD_ADDR without port, with HMAC: 4 + 16 + 8 = 28 bytes.
        let v6: Ipv6Addr = "fd77::5".parse().unwrap();
        known(
            "1e1c3007fd7700000000000000000000000000050102030405060708",
            MptcpRepr::AddAddr(AddAddr {
                addr_id: 7,
                addr: IpAddr::V6(v6),
                port: None,
                hmac: Some(0x0102030405060708),
            }),
        );
        // Its echo with port 443: 22 bytes.
        known(
            "1e163107fd77000000000000000000000000000501bb",
            MptcpRepr::AddAddr(AddAddr {
                addr_id: 7,
                addr: IpAddr::V6(v6),
                port: Some(443),
                hmac: None,
            }),
        );
        // With port and HMAC: 30 bytes, the port before the HMAC.
        let a = MptcpRepr::AddAddr(AddAddr {
            addr_id: 7,
            addr: IpAddr::V6(v6),
            port: Some(443),
            hmac: Some(9),
        });
        let mut b = [0u8; 30];
        assert_eq!(a.emit(&mut b), 30);
        assert_eq!(b[20..22], 443u16.to_be_bytes());
        assert_eq!(b[22..30], 9u64.to_be_bytes());
        assert_eq!(MptcpRepr::parse_bytes(&b), Ok(a));
        // Figure 16, MP_FAIL: 12 bytes, the 64-bit DSN after two bytes of subtype and
        // reserved.
        known(
            "1e0c60000000000100000002",
            MptcpRepr::Fail {
                dsn: 0x0000000100000002,
            },
        );
        // Figure 15, MP_TCPRST with T and reason "too much outstanding data".
        known(
            "1e048104",
            MptcpRepr::TcpRst {
                transient: true,
                reason: reset_reason::TOO_MUCH_OUTSTANDING,
            },
        );
        // Figure 13, REMOVE_ADDR of several IDs.
        known(
            "1e06400102ff",
            MptcpRepr::RemoveAddr(RemoveAddr::new(&[1, 2, 255]).unwrap()),
        );
        // Figure 14 (MP_PRIO, clear backup) and figure 7, a DSS with 4-byte DSN and DATA_FIN
        // but no ACK.
        known("1e0350", MptcpRepr::Prio { backup: false });
        known(
            "1e0e201400000010000000200001",
            MptcpRepr::Dss(Dss {
                data_ack: None,
                mapping: Some(DssMapping {
                    dsn: DataSeq::Low32(0x10),
                    subflow_seq: 0x20,
                    data_len: 1,
                    checksum: None,
                }),
                data_fin: true,
            }),
        );
    }

    #[test]
    fn rejects_bad_lengths_kinds_and_subtypes() {
        let err = |s: &str| MptcpRepr::parse_bytes(&hex(s)).unwrap_err();
        assert_eq!(err("1e"), WireError::Truncated);
        assert_eq!(err("1e0501"), WireError::Truncated); // claims 5, has 3
        assert_eq!(err("1f040101"), WireError::Malformed); // not kind 30
        assert_eq!(err("1e03010100"), WireError::Malformed); // length byte < buffer
        assert_eq!(err("1e050101ff"), WireError::Malformed); // MP_CAPABLE of 5
        assert_eq!(err("1e0d1001483f5f3320bf9b5f00"), WireError::Malformed); // MP_JOIN 13
        assert_eq!(err("1e16200d0000"), WireError::Truncated); // claims 22, has 6
                                                               // DSS flags say ACK + 8-byte DSN mapping (22 or 24 bytes) but the option is 12.
        assert_eq!(err("1e0c200d0000000000000000"), WireError::Malformed);
        // A checksum-sized tail without a mapping.
        assert_eq!(err("1e0a20010000000000ff"), WireError::Malformed);
        // ADD_ADDR: an echo (E) of the HMAC form's length, and an announcement of the echo's.
        assert_eq!(
            err("1e1031050a4de80200000000000000ff"),
            WireError::Malformed
        );
        assert_eq!(err("1e0830050a4de802"), WireError::Malformed);
        assert_eq!(err("1e0340"), WireError::Malformed); // REMOVE_ADDR of no ID
        assert_eq!(err("1e045100"), WireError::Malformed); // MP_PRIO of 4 (RFC 6824's)
        assert_eq!(err("1e0b600000000000000000"), WireError::Malformed);
        assert_eq!(err("1e0b700000000000000000"), WireError::Malformed);
        assert_eq!(err("1e058000ff"), WireError::Malformed);
        assert_eq!(err("1e04f000"), WireError::Unsupported); // MP_EXPERIMENTAL
        assert_eq!(err("1e049000"), WireError::Unsupported); // unassigned
        let long = [&[30u8, 41, 0x40][..], &[1u8; 38][..]].concat();
        assert_eq!(
            MptcpRepr::parse_bytes(&long).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn walks_tcp_options_to_the_mptcp_ones() {
        // Run A frame 40's options: NOP NOP timestamps, DSS, MP_PRIO, NOP.
        let opts = hex("0101080a895655926955c7d71e0c2003a1771496d3939fca1e035101");
        let found: Vec<MptcpRepr> = mptcp_options(&opts)
            .map(|o| MptcpRepr::parse(&o.unwrap()).unwrap())
            .collect();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].subtype(), subtype::DSS);
        assert_eq!(found[1], MptcpRepr::Prio { backup: true });
        // END stops the walk; bytes after it are not looked at.
        let opts = hex("1e03510000ff");
        assert_eq!(mptcp_options(&opts).count(), 1);
        // A malformed MPTCP option is an error item, the walk goes on; a broken TCP option
        // length ends it.
        let opts = hex("1e0551000001011e035001ff");
        let items: Vec<_> = mptcp_options(&opts).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap_err(), &WireError::Malformed);
        assert!(items[1].is_ok());
        assert_eq!(items[2].as_ref().unwrap_err(), &WireError::Malformed);
    }

    #[test]
    fn short_data_seqs_expand_near_the_expected_value() {
        assert_eq!(DataSeq::Full(7).expand(1 << 40), 7);
        let near = 0x0000_0005_ffff_fff0u64;
        // Just past a 2^32 boundary, and just before it.
        assert_eq!(DataSeq::Low32(0x10).expand(near), 0x0000_0006_0000_0010);
        assert_eq!(
            DataSeq::Low32(0xffff_ff00).expand(near),
            0x0000_0005_ffff_ff00
        );
        assert_eq!(
            DataSeq::Low32(0x10).expand(0x0000_0006_0000_0020),
            0x0000_0006_0000_0010
        );
        // Wraps at 2^64.
        assert_eq!(DataSeq::Low32(1).expand(u64::MAX), 1);
    }

    fn data_seq() -> impl Strategy<Value = DataSeq> {
        prop_oneof![
            any::<u32>().prop_map(DataSeq::Low32),
            any::<u64>().prop_map(DataSeq::Full)
        ]
    }

    fn repr() -> impl Strategy<Value = MptcpRepr> {
        let keys = prop_oneof![
            Just(CapableKeys::None),
            any::<u64>().prop_map(CapableKeys::Sender),
            (any::<u64>(), any::<u64>())
                .prop_map(|(sender, receiver)| CapableKeys::Both { sender, receiver }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u16>(),
                any::<Option<u16>>()
            )
                .prop_map(|(sender, receiver, data_len, checksum)| {
                    CapableKeys::WithData {
                        sender,
                        receiver,
                        data_len,
                        checksum,
                    }
                }),
        ];
        let capable = (0u8..16, any::<u8>(), keys).prop_map(|(version, flags, keys)| {
            MptcpRepr::Capable(MpCapable {
                version,
                flags,
                keys,
            })
        });
        let join = prop_oneof![
            (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>()).prop_map(
                |(backup, addr_id, token, nonce)| MpJoin::Syn {
                    backup,
                    addr_id,
                    token,
                    nonce
                }
            ),
            (any::<bool>(), any::<u8>(), any::<u64>(), any::<u32>()).prop_map(
                |(backup, addr_id, hmac, nonce)| MpJoin::SynAck {
                    backup,
                    addr_id,
                    hmac,
                    nonce
                }
            ),
            any::<[u8; 20]>().prop_map(|hmac| MpJoin::Ack { hmac }),
        ]
        .prop_map(MptcpRepr::Join);
        let mapping = (data_seq(), any::<u32>(), any::<u16>(), any::<Option<u16>>()).prop_map(
            |(dsn, subflow_seq, data_len, checksum)| DssMapping {
                dsn,
                subflow_seq,
                data_len,
                checksum,
            },
        );
        let dss = (
            proptest::option::of(data_seq()),
            proptest::option::of(mapping),
            any::<bool>(),
        )
            .prop_map(|(data_ack, mapping, data_fin)| {
                MptcpRepr::Dss(Dss {
                    data_ack,
                    mapping,
                    data_fin,
                })
            });
        let addr = prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(a.into())),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
        ];
        let add_addr = (
            any::<u8>(),
            addr,
            any::<Option<u16>>(),
            any::<Option<u64>>(),
        )
            .prop_map(|(addr_id, addr, port, hmac)| {
                MptcpRepr::AddAddr(AddAddr {
                    addr_id,
                    addr,
                    port,
                    hmac,
                })
            });
        let remove = proptest::collection::vec(any::<u8>(), 1..=MAX_REMOVE_IDS)
            .prop_map(|ids| MptcpRepr::RemoveAddr(RemoveAddr::new(&ids).unwrap()));
        prop_oneof![
            capable,
            join,
            dss,
            add_addr,
            remove,
            any::<bool>().prop_map(|backup| MptcpRepr::Prio { backup }),
            any::<u64>().prop_map(|dsn| MptcpRepr::Fail { dsn }),
            any::<u64>().prop_map(|receiver_key| MptcpRepr::FastClose { receiver_key }),
            (any::<bool>(), any::<u8>())
                .prop_map(|(transient, reason)| MptcpRepr::TcpRst { transient, reason }),
        ]
    }

    proptest! {
        #[test]
        fn every_option_round_trips(r in repr()) {
            let mut b = [0xaau8; 64];
            let n = r.emit(&mut b);
            prop_assert_eq!(n, r.buffer_len());
            prop_assert!(n <= 40);
            prop_assert_eq!(b[n], 0xaa, "wrote past its length");
            prop_assert_eq!(b[1] as usize, n);
            let o = MptcpOption::new_checked(&b[..n]).unwrap();
            prop_assert_eq!(o.subtype(), r.subtype());
            prop_assert_eq!(MptcpRepr::parse(&o).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_reparse_to_the_same(b in proptest::collection::vec(any::<u8>(), 0..48)) {
            if let Ok(r) = MptcpRepr::parse_bytes(&b) {
                let mut out = [0u8; 40];
                let n = r.emit(&mut out);
                prop_assert_eq!(MptcpRepr::parse_bytes(&out[..n]), Ok(r));
            }
            for o in mptcp_options(&b).flatten() {
                let _ = MptcpRepr::parse(&o);
            }
        }
    }
}
