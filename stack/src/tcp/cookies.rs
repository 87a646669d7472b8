//! What the layer derives from its secret: RFC 6528 initial sequence numbers,
//! per-host-pair timestamp offsets, and SYN cookies.

use core::net::SocketAddrV4;

use crate::wire::tcp::{SeqNumber, TcpRepr};

use super::hash::siphash;
use super::TcpLayer;

/// MSS values a SYN cookie can carry (3 bits).
const COOKIE_MSS: [u16; 8] = [536, 1200, 1360, 1440, 1460, 4312, 8960, 9000];

impl TcpLayer {
    pub(super) fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4) -> SeqNumber {
        // RFC 6528: M (a 4 µs clock) + F(4-tuple, secret).
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&local.ip().octets());
        b[4..6].copy_from_slice(&local.port().to_be_bytes());
        b[6..10].copy_from_slice(&remote.ip().octets());
        b[10..12].copy_from_slice(&remote.port().to_be_bytes());
        let f = siphash(self.secret[0], self.secret[1], &b) as u32;
        SeqNumber(((self.now.micros() / 4) as u32).wrapping_add(f))
    }

    /// Timestamp clock offset per address pair (as Linux): random to observers, but the
    /// same for every connection between two hosts, so a new connection's timestamps
    /// exceed an old TIME-WAIT's and it may reuse the 4-tuple.
    pub(super) fn ts_offset(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&local.ip().octets());
        b[4..8].copy_from_slice(&remote.ip().octets());
        siphash(self.secret[0] ^ 0x7473, self.secret[1], &b) as u32
    }

    fn cookie_hash(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNumber,
        t: u32,
    ) -> u32 {
        let mut b = [0u8; 20];
        b[0..4].copy_from_slice(&local.ip().octets());
        b[4..6].copy_from_slice(&local.port().to_be_bytes());
        b[6..10].copy_from_slice(&remote.ip().octets());
        b[10..12].copy_from_slice(&remote.port().to_be_bytes());
        b[12..16].copy_from_slice(&peer_isn.0.to_be_bytes());
        b[16..20].copy_from_slice(&t.to_be_bytes());
        siphash(self.secret[1], self.secret[0] ^ 0x636f6f6b6965, &b) as u32
    }

    fn cookie_time(&self) -> u32 {
        (self.now.micros() / 64_000_000) as u32
    }

    /// Cookie ISN: 5 bits of time (64 s units), 3 bits of MSS index, 24 bits of MAC.
    pub(super) fn make_cookie(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        peer_isn: SeqNumber,
        mss: u16,
    ) -> SeqNumber {
        let t = self.cookie_time();
        let idx = COOKIE_MSS.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        let mac = self.cookie_hash(local, remote, peer_isn, t) & 0x00ff_ffff;
        SeqNumber(((t & 0x1f) << 27) | (idx << 24) | mac)
    }

    /// Checks the cookie an ACK returns; gives the peer's MSS when it is ours and fresh.
    pub(super) fn check_cookie(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seg: &TcpRepr,
    ) -> Option<u16> {
        let cookie = (seg.ack - 1u32).0;
        let peer_isn = seg.seq - 1u32;
        let now_t = self.cookie_time();
        for age in 0..2u32 {
            let t = now_t.wrapping_sub(age);
            if t & 0x1f != cookie >> 27 {
                continue;
            }
            let mac = self.cookie_hash(local, remote, peer_isn, t) & 0x00ff_ffff;
            if mac == cookie & 0x00ff_ffff {
                return Some(COOKIE_MSS[((cookie >> 24) & 7) as usize]);
            }
        }
        None
    }
}
