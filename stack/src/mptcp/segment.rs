//! A TCP segment with an MPTCP option added: what the host does with the option
//! [`super::conn::MptcpConn::outgoing`] returns while TCP itself knows nothing of MPTCP.

use crate::wire::mptcp::MptcpRepr;
use crate::wire::tcp::{TcpPacket, TcpRepr, MAX_HEADER_LEN};
use crate::wire::WireError;

/// Writes `segment` (a TCP header and payload, as TCP built it) with `option` appended
/// to its options into `out` (replacing its contents), the checksum left zero. When
/// the 40 bytes of options are short, SACK blocks are left out (as Linux does when it
/// adds MPTCP options); returns how many.
pub fn with_option(
    segment: &[u8],
    option: &MptcpRepr,
    out: &mut Vec<u8>,
) -> Result<usize, WireError> {
    let packet = TcpPacket::new_checked(segment)?;
    let mut repr = TcpRepr::parse(&packet)?;
    let payload = packet.payload();
    let option_len = option.buffer_len();
    let padded = option_len.next_multiple_of(4);
    let mut trimmed = 0;
    while repr.header_len() + padded > MAX_HEADER_LEN {
        if repr.sack.is_empty() {
            return Err(WireError::Unsupported);
        }
        repr.sack.len -= 1;
        trimmed += 1;
    }
    let std_len = repr.header_len();
    let header_len = std_len + padded;
    out.clear();
    out.resize(header_len + payload.len(), 0);
    repr.emit(out);
    TcpPacket::new_unchecked(&mut out[..]).set_header_len_and_flags(header_len, repr.flags);
    option.emit(&mut out[std_len..]);
    const NOP: u8 = 1;
    out[std_len + option_len..header_len].fill(NOP);
    out[header_len..].copy_from_slice(payload);
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mptcp::mptcp_options;
    use crate::wire::tcp::{flags, SackBlocks, SeqNumber};

    fn segment(repr: &TcpRepr, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; repr.header_len() + payload.len()];
        let hl = repr.emit(&mut b);
        b[hl..].copy_from_slice(payload);
        b
    }

    #[test]
    fn the_option_goes_after_tcps_and_the_payload_moves_behind_it() {
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: SeqNumber(7),
            flags: flags::ACK,
            timestamps: Some((1, 2)),
            payload_len: 5,
            ..TcpRepr::default()
        };
        let prio = MptcpRepr::Prio { backup: true };
        let mut out = Vec::new();
        assert_eq!(
            with_option(&segment(&repr, b"hello"), &prio, &mut out),
            Ok(0)
        );
        let p = TcpPacket::new_checked(&out[..]).unwrap();
        assert_eq!(p.header_len(), 20 + 12 + 4);
        assert_eq!(p.payload(), b"hello");
        assert_eq!(TcpRepr::parse(&p).unwrap(), repr);
        let found: Vec<_> = mptcp_options(p.options()).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(MptcpRepr::parse(found[0].as_ref().unwrap()), Ok(prio));
        assert_eq!(&p.options()[12 + 3..], [1]); // padded with a NOP
    }

    #[test]
    fn sack_blocks_make_room_and_the_rest_stays() {
        let mut sack = SackBlocks::default();
        for i in 0..3 {
            sack.push(SeqNumber(100 * i + 10), SeqNumber(100 * i + 20));
        }
        let repr = TcpRepr {
            src_port: 1,
            dst_port: 2,
            flags: flags::ACK,
            timestamps: Some((1, 2)),
            sack,
            ..TcpRepr::default()
        };
        // 12 (timestamps) + 28 (three blocks) + 12 (a DSS with an 8-byte data ACK) > 40.
        let dss = MptcpRepr::Dss(crate::wire::mptcp::Dss {
            data_ack: Some(crate::wire::mptcp::DataSeq::Full(9)),
            mapping: None,
            data_fin: false,
        });
        let mut out = Vec::new();
        assert_eq!(with_option(&segment(&repr, &[]), &dss, &mut out), Ok(2));
        let back = TcpRepr::parse(&TcpPacket::new_checked(&out[..]).unwrap()).unwrap();
        assert_eq!(back.sack.as_slice(), &sack.as_slice()[..1]);
        assert_eq!(back.timestamps, Some((1, 2)));
    }
}
