//! What RFC 8684 derives from the connection's keys, with HMAC-SHA256 (the H flag of
//! MP_CAPABLE, the only algorithm the RFC defines):
//! - token: the most significant 32 bits of SHA-256(key), which names the connection in
//!   MP_JOIN (§3.1);
//! - IDSN: the least significant 64 bits of SHA-256(key), the data sequence number
//!   before the first data byte (§3.1);
//! - MP_JOIN's HMACs over the two nonces (§3.2) and ADD_ADDR's over the address (§3.4.1).
//!
//! Keys and nonces enter the hash and HMAC in network byte order, as on the wire.

use core::net::IpAddr;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::wire::mptcp::JOIN_ACK_HMAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A connection's token and initial data sequence number, both from SHA-256 of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDerived {
    pub token: u32,
    pub idsn: u64,
}

impl KeyDerived {
    pub fn new(key: u64) -> KeyDerived {
        let h = Sha256::digest(key.to_be_bytes());
        let (first, _) = h.split_first_chunk::<4>().expect("32-byte digest");
        let (_, last) = h.split_last_chunk::<8>().expect("32-byte digest");
        KeyDerived {
            token: u32::from_be_bytes(*first),
            idsn: u64::from_be_bytes(*last),
        }
    }
}

/// HMAC-SHA256 keyed with `key_a + key_b` (64 bits each, concatenated).
fn hmac_keyed(key_a: u64, key_b: u64) -> HmacSha256 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&key_a.to_be_bytes());
    key[8..].copy_from_slice(&key_b.to_be_bytes());
    HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length")
}

/// The full MP_JOIN HMAC of the host that owns `own_key` and `own_nonce`:
/// HMAC(Key = own key + peer's key, Msg = own nonce + peer's nonce) (§3.2).
fn join_hmac(own_key: u64, peer_key: u64, own_nonce: u32, peer_nonce: u32) -> [u8; 32] {
    let mut m = hmac_keyed(own_key, peer_key);
    m.update(&own_nonce.to_be_bytes());
    m.update(&peer_nonce.to_be_bytes());
    m.finalize().into_bytes().into()
}

/// MP_JOIN SYN-ACK: the leftmost 64 bits of the listener's HMAC (HMAC-B in §3.2).
pub fn join_syn_ack_hmac(
    listener_key: u64,
    initiator_key: u64,
    listener_nonce: u32,
    initiator_nonce: u32,
) -> u64 {
    let h = join_hmac(listener_key, initiator_key, listener_nonce, initiator_nonce);
    let (left, _) = h.split_first_chunk::<8>().expect("32-byte HMAC");
    u64::from_be_bytes(*left)
}

/// MP_JOIN third ACK: the leftmost 160 bits of the initiator's HMAC (HMAC-A in §3.2).
pub fn join_ack_hmac(
    initiator_key: u64,
    listener_key: u64,
    initiator_nonce: u32,
    listener_nonce: u32,
) -> [u8; JOIN_ACK_HMAC_LEN] {
    let h = join_hmac(initiator_key, listener_key, initiator_nonce, listener_nonce);
    let (left, _) = h
        .split_first_chunk::<JOIN_ACK_HMAC_LEN>()
        .expect("32-byte HMAC");
    *left
}

/// ADD_ADDR: the rightmost 64 bits of HMAC(Key = sender's key + receiver's key,
/// Msg = address ID + address + port) (§3.4.1). Without a port the message carries a
/// port of zero, as Linux computes it (checked against a Linux capture in the tests).
pub fn add_addr_hmac(
    sender_key: u64,
    receiver_key: u64,
    addr_id: u8,
    addr: IpAddr,
    port: Option<u16>,
) -> u64 {
    let mut m = hmac_keyed(sender_key, receiver_key);
    m.update(&[addr_id]);
    match addr {
        IpAddr::V4(a) => m.update(&a.octets()),
        IpAddr::V6(a) => m.update(&a.octets()),
    }
    m.update(&port.unwrap_or(0).to_be_bytes());
    let h: [u8; 32] = m.finalize().into_bytes().into();
    let (_, right) = h.split_last_chunk::<8>().expect("32-byte HMAC");
    u64::from_be_bytes(*right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    // Keys, nonces and HMACs from captures of Linux 6.18's MPTCP between two namespaces
    // (scripts/mptcp-capture.sh; run A: port 5001 announced, run C: no port), the same
    // frames as the known-good bytes in wire::mptcp. Each expected value was also
    // computed with Python's hashlib/hmac, as the comments show.
    const CLIENT_KEY: u64 = 0x85c97b13a74b4fa5; // run A frame 17, MP_CAPABLE third ACK
    const SERVER_KEY: u64 = 0x565820c9a9198902; // run A frame 16, MP_CAPABLE SYN-ACK

    #[test]
    fn token_and_idsn_match_linux() {
        // sha256(bytes.fromhex('565820c9a9198902')).digest()[:4] == 483f5f33: the token
        // Linux's MP_JOIN SYN carries (run A frame 26).
        let server = KeyDerived::new(SERVER_KEY);
        assert_eq!(server.token, 0x483f5f33);
        // digest()[-8:] == 72058c68de21849b; the server's first data has DSN IDSN + 1
        // (run A frame 22: 72058c68de21849c).
        assert_eq!(server.idsn, 0x72058c68de21849b);
        // The client's: its first data has DSN a1771496d3939be2 (run A frame 20).
        let client = KeyDerived::new(CLIENT_KEY);
        assert_eq!(client.idsn + 1, 0xa1771496d3939be2);
        assert_eq!(client.token, 0x59e59ed0);
    }

    #[test]
    fn join_hmacs_match_linux() {
        // Run A frames 26–28: client nonce 20bf9b5f (SYN), server nonce bd44a77a
        // (SYN-ACK). hmac.new(bytes.fromhex(server_key + client_key),
        // bytes.fromhex('bd44a77a20bf9b5f'), sha256).digest()[:8] == 699a5e9369064094.
        assert_eq!(
            join_syn_ack_hmac(SERVER_KEY, CLIENT_KEY, 0xbd44a77a, 0x20bf9b5f),
            0x699a5e9369064094
        );
        // The client's, key and nonces the other way round, 20 bytes (frame 28).
        assert_eq!(
            join_ack_hmac(CLIENT_KEY, SERVER_KEY, 0x20bf9b5f, 0xbd44a77a),
            [
                0x4d, 0x00, 0xa3, 0xb0, 0x97, 0xd7, 0xa5, 0xdd, 0x30, 0x26, 0xa7, 0x7f, 0x5c, 0x10,
                0xde, 0xbe, 0x4f, 0x39, 0x10, 0xec
            ]
        );
        // Swapped roles give other values (the HMAC binds who sent it).
        assert_ne!(
            join_syn_ack_hmac(CLIENT_KEY, SERVER_KEY, 0x20bf9b5f, 0xbd44a77a),
            0x699a5e9369064094
        );
    }

    #[test]
    fn add_addr_hmac_matches_linux_with_and_without_port() {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 77, 232, 2));
        // Run A frame 18: the server announces ID 5, 10.77.232.2 port 5001.
        // hmac.new(bytes.fromhex(server_key + client_key), bytes.fromhex('050a4de8021389'),
        // sha256).digest()[-8:] == 80eef4ec77f56ad0.
        assert_eq!(
            add_addr_hmac(SERVER_KEY, CLIENT_KEY, 5, addr, Some(5001)),
            0x80eef4ec77f56ad0
        );
        // Run C frame 23 (keys from frames 21, 22): no port; Linux hashes a zero port
        // (msg 050a4de8020000 gives ae60db4ebd9a3b2d; without the two zero bytes it
        // would be 0d0c2a2e33b6eb1b).
        assert_eq!(
            add_addr_hmac(0x8cbcb99de5ca9c96, 0xc832a18bdc166799, 5, addr, None),
            0xae60db4ebd9a3b2d
        );
        // IPv6 (no Linux capture; Python: msg = 07 + fd77::5 + 01bb, key = 1 ‖ 2,
        // digest()[-8:] == 9c88892d742265af).
        let v6: Ipv6Addr = "fd77::5".parse().unwrap();
        assert_eq!(
            add_addr_hmac(1, 2, 7, IpAddr::V6(v6), Some(443)),
            0x9c88892d742265af
        );
    }
}
