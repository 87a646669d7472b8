//! The MPTCP connection over a single subflow (RFC 8684 §3.1, §3.3, §3.7): which MPTCP
//! option each segment of the subflow carries, and what the options of each received
//! segment mean. No I/O, no clock, no randomness: the caller passes the key in, shows
//! every segment the subflow's TCP sends ([`MptcpConn::outgoing`]) and receives
//! ([`MptcpConn::incoming`]), and adds the returned option to the segment.
//!
//! With one subflow the data sequence space maps one to one onto the subflow's: the
//! byte at subflow sequence number ISN + 1 + n is data sequence number IDSN + 1 + n, on
//! both sides. So the mapping of each segment is computed from its sequence number (a
//! retransmission carries the same mapping), the data ACK from its ACK number, and a
//! received mapping that does not follow the same rule (the peer scheduled data over
//! another subflow, which this connection did not accept) is refused. Our DATA_FIN goes
//! with the subflow's FIN; Linux sends its own DATA_FIN first, alone on an ACK and
//! possibly before the subflow carried all the data, and its FIN only once the DATA_FIN
//! is acknowledged: the data ACK then covers it, and [`MptcpConn::wants_ack`] tells the
//! host to make TCP send that ACK.
//!
//! Fallback (§3.7): a SYN or SYN-ACK without MP_CAPABLE (the peer does not speak MPTCP,
//! or a middlebox removed the option), a version other than 1, a server's first segment
//! after the SYN without an MPTCP option, a first data segment without a mapping, or an
//! infinite mapping turn the connection into plain TCP: no options from then on.
//!
//! Checksums: a received mapping may span several segments (Linux maps what it queued
//! at once); its data is summed as the segments arrive in order and checked when the
//! last byte came. A gap abandons that mapping's check (counted), the data being TCP's
//! to reassemble, not kept here.
//!
//! Not here yet: more subflows (MP_JOIN, ADD_ADDR), MP_FAIL after a checksum failure
//! (a failed checksum refuses the segment, which resets the subflow).

use crate::wire::checksum::Accumulator;
use crate::wire::mptcp::{
    capable_flags, dss_checksum, dss_checksum_start, mptcp_options, CapableKeys, DataSeq, Dss,
    DssMapping, MpCapable, MptcpRepr, VERSION,
};
use crate::wire::tcp::{SeqNumber, TcpRepr};

use super::crypto::KeyDerived;

/// Bytes of TCP option space the largest option [`MptcpConn::outgoing`] returns takes,
/// padded to a multiple of 4: a DSS with an 8-byte data ACK, an 8-byte DSN and a
/// checksum (28). Segments must leave this much room.
pub const OPTION_SPACE: usize = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Before the peer's SYN (server) or SYN-ACK (client).
    Handshake,
    /// MP_CAPABLE was exchanged: every segment carries an option.
    Established,
    /// Plain TCP from here on (§3.7).
    Fallback,
    /// The peer aborted the connection (MP_FASTCLOSE).
    Closed,
}

/// What to do with a received segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to TCP.
    Accept,
    /// Drop it and reset the subflow: the connection cannot go on (a mapping it cannot
    /// follow, a failed checksum, an MP_JOIN it did not ask for, MP_FASTCLOSE).
    Reset,
}

/// What the connection saw, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MptcpCounters {
    pub options_sent: u64,
    /// Received mappings that matched the subflow's sequence numbers.
    pub mappings_ok: u64,
    pub checksums_ok: u64,
    /// Mappings longer than their segment, accepted without their checksum checked.
    pub checksums_unchecked: u64,
    pub refused: u64,
}

/// A received mapping's checksum, summed as its data arrives (subflow offsets).
#[derive(Debug)]
struct RxChecksum {
    start: u32,
    end: u32,
    /// The next byte to add.
    next: u32,
    acc: Accumulator,
    sum: u16,
}

#[derive(Debug)]
pub struct MptcpConn {
    role: Role,
    state: State,
    local_key: u64,
    local: KeyDerived,
    remote_key: Option<u64>,
    remote: Option<KeyDerived>,
    /// This side asks for DSS checksums; after the handshake: they are in use (either
    /// side asking is enough, §3.1).
    checksums: bool,
    local_isn: Option<SeqNumber>,
    remote_isn: Option<SeqNumber>,
    /// Client: the server showed (with a DSS) that it has our key; until then the third
    /// ACK's MP_CAPABLE is repeated on pure ACKs (§3.1).
    fully_established: bool,
    /// A mapping arrived: later data segments without one belong to a longer mapping.
    mapping_seen: bool,
    /// Highest data-level offsets sent and received, to widen 32-bit sequence numbers.
    snd_high: u64,
    rcv_high: u64,
    /// Highest data ACK received (64-bit).
    data_ack: Option<u64>,
    /// DSN of our DATA_FIN and of the peer's, once sent / received.
    data_fin_sent: Option<u64>,
    data_fin_received: Option<u64>,
    /// The peer's DATA_FIN came without its subflow FIN and waits for our data ACK.
    ack_data_fin: bool,
    /// Where the peer's subflow FIN sits (offset of the byte after its data).
    peer_fin: Option<u32>,
    /// The checksum of the received mapping whose data is arriving.
    rx_sum: Option<RxChecksum>,
    counters: MptcpCounters,
}

/// A mapping's data-level length: the segment's data, and its DATA_FIN. An IP packet
/// cannot carry more than fits in 16 bits (saturating only keeps arbitrary input from
/// panicking).
fn data_len(payload: usize, fin: bool) -> u16 {
    u16::try_from(payload + fin as usize).unwrap_or(u16::MAX)
}

impl MptcpConn {
    /// A connection that will send a SYN with MP_CAPABLE. `key` must be random (§3.1)
    /// and unique among the host's connections (its token names the connection).
    pub fn client(key: u64, checksums: bool) -> MptcpConn {
        MptcpConn::new(Role::Client, key, checksums)
    }

    /// A connection for a SYN a listener received.
    pub fn server(key: u64, checksums: bool) -> MptcpConn {
        MptcpConn::new(Role::Server, key, checksums)
    }

    fn new(role: Role, key: u64, checksums: bool) -> MptcpConn {
        MptcpConn {
            role,
            state: State::Handshake,
            local_key: key,
            local: KeyDerived::new(key),
            remote_key: None,
            remote: None,
            checksums,
            local_isn: None,
            remote_isn: None,
            fully_established: false,
            mapping_seen: false,
            snd_high: 0,
            rcv_high: 0,
            data_ack: None,
            data_fin_sent: None,
            data_fin_received: None,
            ack_data_fin: false,
            peer_fin: None,
            rx_sum: None,
            counters: MptcpCounters::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn state(&self) -> State {
        self.state
    }
    /// DSS checksums are in use (after the handshake: one side asking is enough).
    pub fn checksums(&self) -> bool {
        self.checksums
    }
    pub fn local_token(&self) -> u32 {
        self.local.token
    }
    pub fn remote_key(&self) -> Option<u64> {
        self.remote_key
    }
    /// The highest data ACK the peer sent: data-level bytes it has, from our IDSN + 1.
    pub fn data_acked(&self) -> Option<u64> {
        self.data_ack
            .map(|a| a.wrapping_sub(self.local.idsn.wrapping_add(1)))
    }
    /// Our DATA_FIN was sent and the peer's data ACK covers it.
    pub fn data_fin_acked(&self) -> bool {
        match (self.data_fin_sent, self.data_ack) {
            (Some(fin), Some(ack)) => ack.wrapping_sub(fin) as i64 > 0,
            _ => false,
        }
    }
    /// The peer's DATA_FIN arrived: its data-level offset (bytes before it).
    pub fn peer_data_fin(&self) -> Option<u64> {
        let idsn = self.remote?.idsn;
        self.data_fin_received
            .map(|d| d.wrapping_sub(idsn.wrapping_add(1)))
    }
    /// The peer's DATA_FIN came on a segment TCP will not acknowledge by itself (no
    /// subflow FIN, no data): the host must make TCP send an ACK, which then carries the
    /// data ACK of the DATA_FIN (the peer closes its subflow only after that).
    pub fn wants_ack(&self) -> bool {
        self.ack_data_fin
    }
    pub fn counters(&self) -> MptcpCounters {
        self.counters
    }

    fn fall_back(&mut self) {
        self.state = State::Fallback;
    }

    /// Data-level offset of subflow sequence number `seq` (the byte after the SYN is 0),
    /// widened to 64 bits near `high`, which it advances.
    fn offset(seq: SeqNumber, isn: SeqNumber, high: &mut u64) -> u64 {
        let low = seq - (isn + 1u32);
        let o = DataSeq::Low32(low).expand(*high);
        if o.wrapping_sub(*high) as i64 > 0 {
            *high = o;
        }
        o
    }

    /// The option for a segment the subflow's TCP is about to send (`payload` is its
    /// data), or `None`. Must see every segment, in the order TCP sends them.
    pub fn outgoing(&mut self, seg: &TcpRepr, payload: &[u8]) -> Option<MptcpRepr> {
        let r = self.option_for(seg, payload);
        if r.is_some() {
            self.counters.options_sent += 1;
        }
        r
    }

    fn option_for(&mut self, seg: &TcpRepr, payload: &[u8]) -> Option<MptcpRepr> {
        if matches!(self.state, State::Fallback | State::Closed) || seg.rst() {
            return None;
        }
        let flags = capable_flags::HMAC_SHA256
            | if self.checksums {
                capable_flags::CHECKSUM
            } else {
                0
            };
        let capable = |keys| {
            Some(MptcpRepr::Capable(MpCapable {
                version: VERSION,
                flags,
                keys,
            }))
        };
        if seg.syn() {
            self.local_isn = Some(seg.seq);
            return match (self.role, self.state) {
                (Role::Client, _) => capable(CapableKeys::None),
                (Role::Server, State::Established) => capable(CapableKeys::Sender(self.local_key)),
                // A SYN-ACK to a SYN without MP_CAPABLE (we fell back) or none seen.
                (Role::Server, _) => None,
            };
        }
        if self.state != State::Established {
            return None;
        }
        let isn = self.local_isn?;
        let first = seg.seq == isn + 1u32;
        if self.role == Role::Client && !self.fully_established && first && !seg.fin() {
            let remote_key = self.remote_key?;
            return capable(if payload.is_empty() {
                CapableKeys::Both {
                    sender: self.local_key,
                    receiver: remote_key,
                }
            } else {
                // The first data: its DSN is implied (IDSN + 1, subflow sequence 1).
                let len = data_len(payload.len(), false);
                let dsn = self.local.idsn.wrapping_add(1);
                CapableKeys::WithData {
                    sender: self.local_key,
                    receiver: remote_key,
                    data_len: len,
                    checksum: self.checksums.then(|| dss_checksum(dsn, 1, len, [payload])),
                }
            });
        }
        let data_ack = match (seg.has_ack(), self.remote, self.remote_isn) {
            (true, Some(remote), Some(risn)) => {
                let o = Self::offset(seg.ack, risn, &mut self.rcv_high);
                let mut ack = remote.idsn.wrapping_add(1).wrapping_add(o);
                // A DATA_FIN that came without the subflow's FIN (Linux sends it first,
                // and the FIN only once it is acknowledged): TCP's ACK stops short of it.
                if self.data_fin_received == Some(ack) {
                    ack = ack.wrapping_add(1);
                    self.ack_data_fin = false;
                }
                Some(DataSeq::Full(ack))
            }
            _ => None,
        };
        let mapping = if !payload.is_empty() || seg.fin() {
            let o = Self::offset(seg.seq, isn, &mut self.snd_high);
            let dsn = self.local.idsn.wrapping_add(1).wrapping_add(o);
            // A DATA_FIN alone maps no subflow byte: subflow sequence 0 (§3.3.1).
            let subflow_seq = if payload.is_empty() {
                0
            } else {
                (o as u32).wrapping_add(1)
            };
            // The DATA_FIN counts in the length, and so in the checksum's pseudo-header
            // (as Linux computes it).
            let data_len = data_len(payload.len(), seg.fin());
            if seg.fin() {
                self.data_fin_sent = Some(dsn.wrapping_add(payload.len() as u64));
            }
            Some(DssMapping {
                dsn: DataSeq::Full(dsn),
                subflow_seq,
                data_len,
                checksum: self
                    .checksums
                    .then(|| dss_checksum(dsn, subflow_seq, data_len, [payload])),
            })
        } else {
            None
        };
        if data_ack.is_none() && mapping.is_none() {
            return None;
        }
        Some(MptcpRepr::Dss(Dss {
            data_ack,
            mapping,
            data_fin: seg.fin(),
        }))
    }

    /// Takes a received segment of the subflow (`options`: its TCP option bytes) before
    /// TCP does.
    pub fn incoming(&mut self, seg: &TcpRepr, options: &[u8], payload: &[u8]) -> Verdict {
        let v = self.check_incoming(seg, options, payload);
        if v == Verdict::Reset {
            self.counters.refused += 1;
        }
        v
    }

    fn check_incoming(&mut self, seg: &TcpRepr, options: &[u8], payload: &[u8]) -> Verdict {
        if self.state == State::Closed {
            return Verdict::Reset;
        }
        // Malformed MPTCP options are ignored, as unknown TCP options are.
        let mut capable = None;
        let mut dss = None;
        for o in mptcp_options(options).flatten() {
            match MptcpRepr::parse(&o) {
                Ok(MptcpRepr::Capable(c)) => capable = Some(c),
                Ok(MptcpRepr::Dss(d)) => dss = Some(d),
                Ok(MptcpRepr::Join(_)) if seg.syn() => return Verdict::Reset,
                Ok(MptcpRepr::FastClose { receiver_key }) if receiver_key == self.local_key => {
                    self.state = State::Closed;
                    return Verdict::Reset;
                }
                _ => {}
            }
        }
        if seg.syn() {
            let expected = match self.role {
                Role::Server => !seg.has_ack(),
                Role::Client => seg.has_ack(),
            };
            if !expected || self.state != State::Handshake {
                // A retransmitted SYN or SYN-ACK (already decided), or one TCP will
                // answer as it does without MPTCP.
                return Verdict::Accept;
            }
            self.remote_isn = Some(seg.seq);
            match capable {
                Some(c) if c.version == VERSION && c.flags & capable_flags::HMAC_SHA256 != 0 => {
                    self.checksums |= c.checksum_required();
                    match (self.role, c.keys) {
                        (Role::Server, CapableKeys::None) => self.state = State::Established,
                        (Role::Client, CapableKeys::Sender(k)) => {
                            self.set_remote_key(k);
                            self.state = State::Established;
                        }
                        _ => self.fall_back(),
                    }
                }
                _ => self.fall_back(),
            }
            return Verdict::Accept;
        }
        if self.state != State::Established {
            return Verdict::Accept;
        }
        if let (true, Some(risn)) = (seg.fin(), self.remote_isn) {
            self.peer_fin = Some((seg.seq + payload.len()) - (risn + 1u32));
        }
        if let Some(c) = capable {
            if let CapableKeys::Both { sender, receiver }
            | CapableKeys::WithData {
                sender, receiver, ..
            } = c.keys
            {
                if self.role == Role::Server && receiver == self.local_key {
                    if self.remote_key.is_none() {
                        self.set_remote_key(sender);
                    }
                    if let CapableKeys::WithData {
                        data_len, checksum, ..
                    } = c.keys
                    {
                        let idsn = self.remote.expect("set above").idsn;
                        let m = DssMapping {
                            dsn: DataSeq::Full(idsn.wrapping_add(1)),
                            subflow_seq: 1,
                            data_len,
                            checksum,
                        };
                        return self.check_mapping(seg, &m, false, payload);
                    }
                }
            }
        }
        if self.role == Role::Server
            && self.remote_key.is_none()
            && capable.is_none()
            && dss.is_none()
        {
            // The handshake's ACK (or whatever came first after it) without MP_CAPABLE:
            // the client fell back, or the options are stripped (§3.7; Linux does the same).
            self.fall_back();
            return Verdict::Accept;
        }
        let Some(dss) = dss else {
            // §3.7: a first data segment without a mapping means the options are being
            // stripped: fall back. Later ones may sit inside a longer mapping.
            if !payload.is_empty() && !self.mapping_seen {
                self.fall_back();
                return Verdict::Accept;
            }
            return match self.remote_isn {
                Some(risn) => self.add_to_checksum(seg.seq - (risn + 1u32), payload),
                None => Verdict::Accept,
            };
        };
        // A data ACK shows that the server has our key (§3.1; Linux waits for the same).
        if self.role == Role::Client && dss.data_ack.is_some() {
            self.fully_established = true;
        }
        if let Some(a) = dss.data_ack {
            let idsn1 = self.local.idsn.wrapping_add(1);
            let near = idsn1.wrapping_add(self.snd_high);
            let a = a.expand(near);
            if self
                .data_ack
                .is_none_or(|old| a.wrapping_sub(old) as i64 > 0)
            {
                self.data_ack = Some(a);
            }
        }
        match dss.mapping {
            Some(m) if m.data_len == 0 => {
                // An infinite mapping: the peer fell back (§3.7).
                self.fall_back();
                Verdict::Accept
            }
            Some(m) => {
                let v = self.check_mapping(seg, &m, dss.data_fin, payload);
                if v == Verdict::Accept && dss.data_fin && self.remote.is_some() {
                    let fin = self
                        .expand_remote(m.dsn)
                        .wrapping_add(u64::from(m.data_len) - 1);
                    self.data_fin_received = Some(fin);
                    // Without the subflow's FIN TCP sees nothing to acknowledge.
                    self.ack_data_fin = !seg.fin();
                }
                v
            }
            None => Verdict::Accept,
        }
    }

    fn set_remote_key(&mut self, key: u64) {
        self.remote_key = Some(key);
        self.remote = Some(KeyDerived::new(key));
    }

    fn expand_remote(&self, d: DataSeq) -> u64 {
        let idsn1 = self.remote.map_or(0, |r| r.idsn.wrapping_add(1));
        d.expand(idsn1.wrapping_add(self.rcv_high))
    }

    /// A received mapping must be the one-to-one one (see the module's doc), and its
    /// checksum right when it covers just this segment.
    fn check_mapping(
        &mut self,
        seg: &TcpRepr,
        m: &DssMapping,
        data_fin: bool,
        payload: &[u8],
    ) -> Verdict {
        let (Some(remote), Some(risn)) = (self.remote, self.remote_isn) else {
            // The peer's key is not known yet (its third ACK was lost and this data
            // came with a DSS): nothing to check against.
            return Verdict::Accept;
        };
        self.mapping_seen = true;
        let dsn = self.expand_remote(m.dsn);
        let data_offset = dsn.wrapping_sub(remote.idsn.wrapping_add(1));
        let fin_only = m.subflow_seq == 0 && m.data_len == 1;
        let subflow_offset = if fin_only {
            // A DATA_FIN alone is tied to no subflow byte: Linux sends it when the app
            // shuts down, on whatever ACK goes next, before the subflow carried all the
            // data. It must only not contradict the subflow: be where its FIN is, once
            // that came, and not before data already acknowledged.
            let before_acked = data_offset.wrapping_add(1) < self.rcv_high;
            if before_acked || self.peer_fin.is_some_and(|f| f != data_offset as u32) {
                return Verdict::Reset;
            }
            data_offset as u32
        } else {
            m.subflow_seq.wrapping_sub(1)
        };
        if data_offset as u32 != subflow_offset {
            return Verdict::Reset;
        }
        self.counters.mappings_ok += 1;
        let Some(sum) = m.checksum.filter(|_| self.checksums) else {
            return Verdict::Accept;
        };
        if fin_only {
            if dss_checksum(dsn, 0, 1, []) != sum {
                return Verdict::Reset;
            }
            self.counters.checksums_ok += 1;
            return Verdict::Accept;
        }
        let same = self
            .rx_sum
            .as_ref()
            .is_some_and(|r| r.start == subflow_offset && r.sum == sum);
        if !same {
            if self.rx_sum.take().is_some() {
                // The mapping before this one never came whole, in order.
                self.counters.checksums_unchecked += 1;
            }
            let bytes = u32::from(m.data_len) - data_fin as u32;
            self.rx_sum = Some(RxChecksum {
                start: subflow_offset,
                end: subflow_offset.wrapping_add(bytes),
                next: subflow_offset,
                acc: dss_checksum_start(dsn, m.subflow_seq, m.data_len),
                sum,
            });
        }
        let offset = seg.seq - (risn + 1u32);
        self.add_to_checksum(offset, payload)
    }

    /// Adds a segment's data to the checksum of the mapping it continues; checks the
    /// checksum when the mapping is complete. A gap (a lost or reordered segment)
    /// abandons the mapping's check: its bytes are not kept to wait for the gap.
    fn add_to_checksum(&mut self, offset: u32, payload: &[u8]) -> Verdict {
        let Some(r) = self.rx_sum.as_mut() else {
            return Verdict::Accept;
        };
        let skip = r.next.wrapping_sub(offset);
        if skip as i32 >= payload.len() as i32 {
            return Verdict::Accept; // old data, already added (or before this mapping)
        }
        if (skip as i32) < 0 {
            self.rx_sum = None;
            self.counters.checksums_unchecked += 1;
            return Verdict::Accept;
        }
        let want = r.end.wrapping_sub(r.next) as usize;
        let piece = &payload[skip as usize..];
        let piece = &piece[..piece.len().min(want)];
        r.acc.add_bytes(piece);
        r.next = r.next.wrapping_add(piece.len() as u32);
        if r.next != r.end {
            return Verdict::Accept;
        }
        let ok = r.acc.finish() == r.sum;
        self.rx_sum = None;
        if !ok {
            return Verdict::Reset;
        }
        self.counters.checksums_ok += 1;
        Verdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mptcp::{hex, MpJoin, OPTION_KIND};
    use crate::wire::tcp::flags;

    fn seg(flag_bits: u16, seq: u32, ack: u32, len: usize) -> TcpRepr {
        TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            flags: flag_bits,
            payload_len: len,
            ..TcpRepr::default()
        }
    }

    fn bytes(r: Option<MptcpRepr>) -> Vec<u8> {
        let r = r.expect("an option");
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        b
    }

    fn options(r: &MptcpRepr) -> Vec<u8> {
        bytes(Some(*r))
    }

    // Linux 6.18 with checksums on (run B of scripts/mptcp-capture.sh, frames 43–49,
    // the connection whose options wire::mptcp's tests decode): client port 56456, ISN
    // 884523082, key e55b1b8ad7b48154; server ISN 148166317, key 0f677c2d64b2e84a. Each
    // side sent 1000 bytes ("c" × 1000, "s" × 1000).
    const C_ISN: u32 = 884523082;
    const S_ISN: u32 = 148166317;
    const C_KEY: u64 = 0xe55b1b8ad7b48154;
    const S_KEY: u64 = 0x0f677c2d64b2e84a;
    const SYN: &str = "1e040181";
    const SYN_ACK: &str = "1e0c01810f677c2d64b2e84a";
    const THIRD_ACK: &str = "1e140181e55b1b8ad7b481540f677c2d64b2e84a";
    const FIRST_DATA: &str = "1e180181e55b1b8ad7b481540f677c2d64b2e84a03e8dc1c";
    const SERVER_ACK: &str = "1e0c2003ef93bfe99060c5e5";
    const SERVER_DATA: &str = "1e1c200fef93bfe99060c5e5c1b8133b28f5c0d60000000103e8bfd9";
    const CLIENT_ACK: &str = "1e0c2003c1b8133b28f5c4be";

    #[test]
    fn as_server_it_answers_linux_with_linuxs_own_bytes() {
        let mut s = MptcpConn::server(S_KEY, false);
        let c_data = [b'c'; 1000];
        let s_data = [b's'; 1000];
        // The client asked for checksums: they are on although we did not ask.
        let syn = seg(flags::SYN, C_ISN, 0, 0);
        assert_eq!(s.incoming(&syn, &hex(SYN), &[]), Verdict::Accept);
        assert_eq!((s.state(), s.checksums()), (State::Established, true));
        let syn_ack = seg(flags::SYN | flags::ACK, S_ISN, C_ISN + 1, 0);
        assert_eq!(bytes(s.outgoing(&syn_ack, &[])), hex(SYN_ACK));
        let ack = seg(flags::ACK, C_ISN + 1, S_ISN + 1, 0);
        assert_eq!(s.incoming(&ack, &hex(THIRD_ACK), &[]), Verdict::Accept);
        assert_eq!(s.remote_key(), Some(C_KEY));
        let data = seg(flags::ACK | flags::PSH, C_ISN + 1, S_ISN + 1, 1000);
        assert_eq!(
            s.incoming(&data, &hex(FIRST_DATA), &c_data),
            Verdict::Accept
        );
        let ack = seg(flags::ACK, S_ISN + 1, C_ISN + 1001, 0);
        assert_eq!(bytes(s.outgoing(&ack, &[])), hex(SERVER_ACK));
        let data = seg(flags::ACK | flags::PSH, S_ISN + 1, C_ISN + 1001, 1000);
        assert_eq!(bytes(s.outgoing(&data, &s_data)), hex(SERVER_DATA));
        let ack = seg(flags::ACK, C_ISN + 1001, S_ISN + 1001, 0);
        assert_eq!(s.incoming(&ack, &hex(CLIENT_ACK), &[]), Verdict::Accept);
        assert_eq!(s.data_acked(), Some(1000));
        let c = s.counters();
        assert_eq!((c.mappings_ok, c.checksums_ok, c.refused), (1, 1, 0));
    }

    #[test]
    fn as_client_it_sends_linuxs_bytes_and_takes_linuxs_answers() {
        let mut c = MptcpConn::client(C_KEY, true);
        let c_data = [b'c'; 1000];
        let s_data = [b's'; 1000];
        assert_eq!(
            bytes(c.outgoing(&seg(flags::SYN, C_ISN, 0, 0), &[])),
            hex(SYN)
        );
        let syn_ack = seg(flags::SYN | flags::ACK, S_ISN, C_ISN + 1, 0);
        assert_eq!(c.incoming(&syn_ack, &hex(SYN_ACK), &[]), Verdict::Accept);
        assert_eq!(c.state(), State::Established);
        let ack = seg(flags::ACK, C_ISN + 1, S_ISN + 1, 0);
        assert_eq!(bytes(c.outgoing(&ack, &[])), hex(THIRD_ACK));
        // The server's DSS has not come yet: the first data repeats the keys.
        let data = seg(flags::ACK | flags::PSH, C_ISN + 1, S_ISN + 1, 1000);
        assert_eq!(bytes(c.outgoing(&data, &c_data)), hex(FIRST_DATA));
        let ack = seg(flags::ACK, S_ISN + 1, C_ISN + 1001, 0);
        assert_eq!(c.incoming(&ack, &hex(SERVER_ACK), &[]), Verdict::Accept);
        assert_eq!(c.data_acked(), Some(1000));
        let data = seg(flags::ACK | flags::PSH, S_ISN + 1, C_ISN + 1001, 1000);
        assert_eq!(
            c.incoming(&data, &hex(SERVER_DATA), &s_data),
            Verdict::Accept
        );
        let ack = seg(flags::ACK, C_ISN + 1001, S_ISN + 1001, 0);
        assert_eq!(bytes(c.outgoing(&ack, &[])), hex(CLIENT_ACK));
        let n = c.counters();
        assert_eq!((n.mappings_ok, n.checksums_ok, n.refused), (1, 1, 0));
        // A corrupted byte of the server's data fails the checksum.
        let mut bad = s_data;
        bad[500] ^= 1;
        assert_eq!(c.incoming(&data, &hex(SERVER_DATA), &bad), Verdict::Reset);
    }

    #[test]
    fn a_data_fin_without_the_subflow_fin_is_acknowledged_as_linux_does() {
        // Run B's first connection (frames 14–22): Linux's client sends "hello", then a
        // DATA_FIN on a pure ACK, and closes its subflow only once that DATA_FIN is
        // acknowledged. Our server must answer with the data ACK Linux's server sent.
        const C_ISN: u32 = 1591546727;
        const S_ISN: u32 = 4099516304;
        let mut s = MptcpConn::server(0x4ce2d292b209badc, true);
        let syn = seg(flags::SYN, C_ISN, 0, 0);
        assert_eq!(s.incoming(&syn, &hex("1e040181"), &[]), Verdict::Accept);
        let syn_ack = seg(flags::SYN | flags::ACK, S_ISN, C_ISN + 1, 0);
        assert_eq!(
            bytes(s.outgoing(&syn_ack, &[])),
            hex("1e0c01814ce2d292b209badc")
        );
        let third = seg(flags::ACK, C_ISN + 1, S_ISN + 1, 0);
        let o = hex("1e140181742cab2d0f931ebd4ce2d292b209badc");
        assert_eq!(s.incoming(&third, &o, &[]), Verdict::Accept);
        let hello = seg(flags::ACK | flags::PSH, C_ISN + 1, S_ISN + 1, 5);
        let o = hex("1e18200d4c272640330a6b38ff74bf7e0000000100055ef1");
        assert_eq!(s.incoming(&hello, &o, b"hello"), Verdict::Accept);
        // Frame 20: the data ACK of "hello".
        let ack = seg(flags::ACK, S_ISN + 1, C_ISN + 6, 0);
        assert_eq!(
            bytes(s.outgoing(&ack, &[])),
            hex("1e0c2003330a6b38ff74bf83")
        );
        assert!(!s.wants_ack());
        // Frame 21: the DATA_FIN alone, no TCP FIN.
        let fin = seg(flags::ACK, C_ISN + 6, S_ISN + 1, 0);
        let o = hex("1e18201d4c272640330a6b38ff74bf83000000000001a2c3");
        assert_eq!(s.incoming(&fin, &o, &[]), Verdict::Accept);
        assert_eq!(s.peer_data_fin(), Some(5));
        assert!(s.wants_ack());
        // Frame 22: TCP's ACK (same ACK number) now carries the data ACK of the DATA_FIN.
        assert_eq!(
            bytes(s.outgoing(&ack, &[])),
            hex("1e0c2003330a6b38ff74bf84")
        );
        assert!(!s.wants_ack());
        // Frame 24: the subflow FIN. The DATA_FIN again on a later ACK (its sequence
        // number now past the FIN) is still in its place; one elsewhere is not.
        let tcp_fin = seg(flags::ACK | flags::FIN, C_ISN + 6, S_ISN + 1, 0);
        assert_eq!(
            s.incoming(&tcp_fin, &hex("1e0820014c272641"), &[]),
            Verdict::Accept
        );
        let after_fin = seg(flags::ACK, C_ISN + 7, S_ISN + 1, 0);
        assert_eq!(s.incoming(&after_fin, &o, &[]), Verdict::Accept);
        let wrong = hex("1e18201d4c272640330a6b38ff74bf84000000000001a2c2");
        assert_eq!(s.incoming(&after_fin, &wrong, &[]), Verdict::Reset);
        let n = s.counters();
        assert_eq!((n.mappings_ok, n.checksums_ok, n.refused), (3, 3, 1));
    }

    #[test]
    fn a_mapping_over_several_segments_is_checked_once_it_is_whole() {
        // As Linux sends: one 3000-byte mapping, the DSS repeated on each segment (or
        // left off), the checksum over all of it.
        let (mut c, _) = pair(true);
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 251) as u8).collect();
        let idsn = KeyDerived::new(2).idsn;
        let dsn = idsn.wrapping_add(1);
        let dss = MptcpRepr::Dss(Dss {
            data_ack: None,
            mapping: Some(DssMapping {
                dsn: DataSeq::Full(dsn),
                subflow_seq: 1,
                data_len: 3000,
                checksum: Some(dss_checksum(dsn, 1, 3000, [&data[..]])),
            }),
            data_fin: false,
        });
        let o = options(&dss);
        let part = |i: usize| seg(flags::ACK, 5001 + 1000 * i as u32, 101, 1000);
        let piece = |i: usize| &data[1000 * i..1000 * (i + 1)];
        // In order, the middle one without an option, the first one again (a duplicate).
        assert_eq!(c.incoming(&part(0), &o, piece(0)), Verdict::Accept);
        assert_eq!(c.incoming(&part(1), &[], piece(1)), Verdict::Accept);
        assert_eq!(c.incoming(&part(0), &o, piece(0)), Verdict::Accept);
        assert_eq!(c.counters().checksums_ok, 0);
        assert_eq!(c.incoming(&part(2), &o, piece(2)), Verdict::Accept);
        assert_eq!(c.counters().checksums_ok, 1);
        // A flipped byte in the middle segment: refused when the mapping is whole.
        let (mut c, _) = pair(true);
        let mut bad = piece(1).to_vec();
        bad[10] ^= 0x40;
        assert_eq!(c.incoming(&part(0), &o, piece(0)), Verdict::Accept);
        assert_eq!(c.incoming(&part(1), &o, &bad), Verdict::Accept);
        assert_eq!(c.incoming(&part(2), &o, piece(2)), Verdict::Reset);
        // A gap: the check is given up, counted, and the data accepted.
        let (mut c, _) = pair(true);
        assert_eq!(c.incoming(&part(0), &o, piece(0)), Verdict::Accept);
        assert_eq!(c.incoming(&part(2), &o, piece(2)), Verdict::Accept);
        let n = c.counters();
        assert_eq!(
            (n.checksums_ok, n.checksums_unchecked, n.refused),
            (0, 1, 0)
        );
    }

    /// A client and a server after the handshake (keys 1 and 2, ISNs 100 and 5000) and
    /// the server's first data ACK, which makes the client fully established.
    fn pair(checksums: bool) -> (MptcpConn, MptcpConn) {
        let mut c = MptcpConn::client(1, checksums);
        let mut s = MptcpConn::server(2, false);
        let steps = [
            (true, seg(flags::SYN, 100, 0, 0)),
            (false, seg(flags::SYN | flags::ACK, 5000, 101, 0)),
            (true, seg(flags::ACK, 101, 5001, 0)),
            (false, seg(flags::ACK, 5001, 101, 0)),
        ];
        for (from_client, t) in steps {
            let (tx, rx) = if from_client {
                (&mut c, &mut s)
            } else {
                (&mut s, &mut c)
            };
            let o = tx
                .outgoing(&t, &[])
                .map(|r| options(&r))
                .unwrap_or_default();
            assert_eq!(rx.incoming(&t, &o, &[]), Verdict::Accept);
        }
        assert_eq!(c.state(), State::Established);
        assert_eq!(s.remote_key(), Some(1));
        (c, s)
    }

    #[test]
    fn data_fin_is_mapped_sent_with_the_fin_and_acknowledged() {
        let (mut c, mut s) = pair(true);
        // 10 bytes and the FIN in one segment: the mapping is 11 long, DATA_FIN set.
        let data = seg(flags::ACK | flags::FIN, 101, 5001, 10);
        let r = c.outgoing(&data, b"0123456789").unwrap();
        let MptcpRepr::Dss(d) = r else {
            panic!("{r:?}")
        };
        let m = d.mapping.unwrap();
        assert!(d.data_fin);
        assert_eq!((m.subflow_seq, m.data_len), (1, 11));
        assert_eq!(
            s.incoming(&data, &options(&r), b"0123456789"),
            Verdict::Accept
        );
        assert_eq!(s.peer_data_fin(), Some(10));
        assert!(!c.data_fin_acked());
        // The server's ACK of the FIN covers the DATA_FIN at data level.
        let ack = seg(flags::ACK, 5001, 112, 0);
        let r = s.outgoing(&ack, &[]).unwrap();
        assert_eq!(c.incoming(&ack, &options(&r), &[]), Verdict::Accept);
        assert!(c.data_fin_acked());
        assert_eq!(c.data_acked(), Some(11));
        // A DATA_FIN on its own: subflow sequence 0, length 1, checksum over no data.
        let fin = seg(flags::ACK | flags::FIN, 5001, 112, 0);
        let r = s.outgoing(&fin, &[]).unwrap();
        let MptcpRepr::Dss(d) = r else {
            panic!("{r:?}")
        };
        let m = d.mapping.unwrap();
        assert_eq!((m.subflow_seq, m.data_len, d.data_fin), (0, 1, true));
        assert_eq!(c.incoming(&fin, &options(&r), &[]), Verdict::Accept);
        assert_eq!(c.peer_data_fin(), Some(0));
        assert_eq!(c.counters().refused, 0);
    }

    #[test]
    fn retransmissions_carry_the_same_mapping_and_wrap_32_bits() {
        let (mut c, mut s) = pair(false);
        // Skip ahead 5 GB of data in 1 MB steps so the subflow sequence wraps past 2^32.
        let mut seq = SeqNumber(101);
        let mut sent = 0u64;
        while sent < 5 << 30 {
            let t = seg(flags::ACK, seq.0, 5001, 1);
            let r = c.outgoing(&t, b"x").unwrap();
            assert_eq!(s.incoming(&t, &options(&r), b"x"), Verdict::Accept);
            // The same segment again: the same option.
            assert_eq!(c.outgoing(&t, b"x"), Some(r));
            let ack = seg(flags::ACK, 5001, (seq + 1u32).0, 0);
            let a = s.outgoing(&ack, &[]).unwrap();
            assert_eq!(c.incoming(&ack, &options(&a), &[]), Verdict::Accept);
            assert_eq!(c.data_acked(), Some(sent + 1));
            seq += 1 << 20;
            sent += 1 << 20;
        }
        assert_eq!(s.counters().mappings_ok, 5 << 10);
    }

    #[test]
    fn refuses_mappings_it_cannot_follow_joins_and_fast_close() {
        let (mut c, mut s) = pair(false);
        let t = seg(flags::ACK, 101, 5001, 4);
        let MptcpRepr::Dss(mut d) = c.outgoing(&t, b"abcd").unwrap() else {
            panic!()
        };
        // The same data claimed at another DSN (as if it came over another subflow).
        let mut m = d.mapping.unwrap();
        m.dsn = DataSeq::Full(m.dsn.expand(0) + 4);
        d.mapping = Some(m);
        let o = options(&MptcpRepr::Dss(d));
        assert_eq!(s.incoming(&t, &o, b"abcd"), Verdict::Reset);
        assert_eq!(s.counters().refused, 1);
        // An MP_JOIN SYN (this connection takes no more subflows).
        let mut l = MptcpConn::server(9, false);
        let join = options(&MptcpRepr::Join(MpJoin::Syn {
            backup: false,
            addr_id: 1,
            token: l.local_token(),
            nonce: 7,
        }));
        assert_eq!(
            l.incoming(&seg(flags::SYN, 1, 0, 0), &join, &[]),
            Verdict::Reset
        );
        // MP_FASTCLOSE with the wrong key is ignored; with ours it closes.
        let fc = |k| options(&MptcpRepr::FastClose { receiver_key: k });
        let ack = seg(flags::ACK, 5001, 101, 0);
        assert_eq!(c.incoming(&ack, &fc(3), &[]), Verdict::Accept);
        assert_eq!(c.incoming(&ack, &fc(1), &[]), Verdict::Reset);
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.outgoing(&ack, &[]), None);
    }

    #[test]
    fn falls_back_without_mp_capable_in_syn_syn_ack_or_first_data() {
        // Server: a SYN without the option, or with version 0.
        let mut s = MptcpConn::server(2, false);
        assert_eq!(
            s.incoming(&seg(flags::SYN, 1, 0, 0), &[], &[]),
            Verdict::Accept
        );
        assert_eq!(s.state(), State::Fallback);
        assert_eq!(
            s.outgoing(&seg(flags::SYN | flags::ACK, 9, 2, 0), &[]),
            None
        );
        let mut s = MptcpConn::server(2, false);
        let v0 = [OPTION_KIND, 4, 0x00, 0x01];
        s.incoming(&seg(flags::SYN, 1, 0, 0), &v0, &[]);
        assert_eq!(s.state(), State::Fallback);
        // Client: a SYN-ACK without it. Nothing is sent after that.
        let mut c = MptcpConn::client(1, false);
        assert!(c.outgoing(&seg(flags::SYN, 100, 0, 0), &[]).is_some());
        c.incoming(&seg(flags::SYN | flags::ACK, 5000, 101, 0), &[], &[]);
        assert_eq!(c.state(), State::Fallback);
        assert_eq!(c.outgoing(&seg(flags::ACK, 101, 5001, 5), b"hello"), None);
        // Server: MP_CAPABLE in the handshake, then data without a mapping (stripped
        // by a middlebox).
        let (_, mut s) = pair(false);
        let t = seg(flags::ACK, 101, 5001, 5);
        assert_eq!(s.incoming(&t, &[], b"hello"), Verdict::Accept);
        assert_eq!(s.state(), State::Fallback);
        // An infinite mapping (data-level length 0) is the peer's fallback.
        let (mut c, _) = pair(false);
        let inf = options(&MptcpRepr::Dss(Dss {
            data_ack: None,
            mapping: Some(DssMapping {
                dsn: DataSeq::Full(0),
                subflow_seq: 1,
                data_len: 0,
                checksum: None,
            }),
            data_fin: false,
        }));
        c.incoming(&seg(flags::ACK, 5001, 101, 5), &inf, b"hello");
        assert_eq!(c.state(), State::Fallback);
    }

    #[test]
    fn a_lost_third_ack_is_made_up_for_by_the_first_data() {
        let mut c = MptcpConn::client(1, false);
        let mut s = MptcpConn::server(2, false);
        let syn = seg(flags::SYN, 100, 0, 0);
        let o = options(&c.outgoing(&syn, &[]).unwrap());
        s.incoming(&syn, &o, &[]);
        let syn_ack = seg(flags::SYN | flags::ACK, 5000, 101, 0);
        let o = options(&s.outgoing(&syn_ack, &[]).unwrap());
        c.incoming(&syn_ack, &o, &[]);
        let third = seg(flags::ACK, 101, 5001, 0);
        assert!(c.outgoing(&third, &[]).is_some()); // lost
        assert_eq!(s.remote_key(), None);
        let data = seg(flags::ACK, 101, 5001, 3);
        let r = c.outgoing(&data, b"abc").unwrap();
        assert!(matches!(
            r,
            MptcpRepr::Capable(MpCapable {
                keys: CapableKeys::WithData { data_len: 3, .. },
                ..
            })
        ));
        assert_eq!(s.incoming(&data, &options(&r), b"abc"), Verdict::Accept);
        assert_eq!(s.remote_key(), Some(1));
        assert_eq!(s.counters().mappings_ok, 1);
        // The server's data ACK makes the client fully established: DSS from now on.
        let ack = seg(flags::ACK, 5001, 104, 0);
        let a = s.outgoing(&ack, &[]).unwrap();
        c.incoming(&ack, &options(&a), &[]);
        let more = seg(flags::ACK, 104, 5001, 3);
        assert!(matches!(c.outgoing(&more, b"def"), Some(MptcpRepr::Dss(_))));
    }
}
