#![no_main]
//! An MPTCP connection (client or server) fed arbitrary segments, received and sent,
//! with arbitrary option bytes: it never panics, sends options that parse back, and
//! after falling back or closing sends none.
use libfuzzer_sys::fuzz_target;
use stack::mptcp::conn::{MptcpConn, State, OPTION_SPACE};
use stack::wire::mptcp::MptcpRepr;
use stack::wire::tcp::{SeqNumber, TcpRepr};

/// Takes `n` bytes off the front of `data` (fewer at its end).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fn u32_of(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w[..b.len()].copy_from_slice(b);
    u32::from_be_bytes(w)
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let head = take(&mut data, 2);
    let (role, checksums) = (head.first() == Some(&1), head.get(1) == Some(&1));
    let key = 0x0123_4567_89ab_cdef;
    let mut conn = if role {
        MptcpConn::server(key, checksums)
    } else {
        MptcpConn::client(key, checksums)
    };
    let payload = [0x5au8; 255];
    while !data.is_empty() {
        let b = take(&mut data, 12);
        let flags = u16::from(b[0]) & 0x1f; // FIN SYN RST PSH ACK
        let seg = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: SeqNumber(u32_of(b.get(2..6).unwrap_or(&[]))),
            ack: SeqNumber(u32_of(b.get(6..10).unwrap_or(&[]))),
            flags,
            payload_len: usize::from(b.get(10).copied().unwrap_or(0)),
            ..TcpRepr::default()
        };
        let data_bytes = &payload[..seg.payload_len];
        let outgoing = b.get(1).is_some_and(|x| x & 1 == 1);
        if outgoing {
            let before = conn.state();
            if let Some(r) = conn.outgoing(&seg, data_bytes) {
                assert!(matches!(before, State::Handshake | State::Established));
                let n = r.buffer_len();
                assert!(n <= OPTION_SPACE);
                let mut out = [0u8; 40];
                r.emit(&mut out);
                assert_eq!(MptcpRepr::parse_bytes(&out[..n]), Ok(r));
            }
        } else {
            let n = usize::from(b.get(11).copied().unwrap_or(0)) % 41;
            let options = take(&mut data, n);
            let _ = conn.incoming(&seg, options, data_bytes);
        }
        let _ = (conn.data_acked(), conn.peer_data_fin(), conn.data_fin_acked());
    }
});
