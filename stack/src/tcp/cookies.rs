//! What the layer derives from its secret: RFC 6528 initial sequence numbers,
//! per-host-pair timestamp offsets, and SYN cookies.

use core::net::{IpAddr, SocketAddr};

use crate::wire::tcp::{SeqNumber, TcpRepr};

use super::hash::siphash;
use super::TcpLayer;

/// Writes `ip`'s octets (4 or 16) at the start of `b`; returns how many.
fn put_ip(b: &mut [u8], ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            b[..16].copy_from_slice(&a.octets());
            16
        }
    }
}

/// Writes a 4-tuple (address, port, address, port) at the start of `b` (at least 36
/// bytes); returns how many bytes. IPv4 tuples hash the same 12 bytes as before IPv6.
fn put_tuple(b: &mut [u8], local: SocketAddr, remote: SocketAddr) -> usize {
    let mut n = put_ip(b, local.ip());
    b[n..n + 2].copy_from_slice(&local.port().to_be_bytes());
    n += 2;
    n += put_ip(&mut b[n..], remote.ip());
    b[n..n + 2].copy_from_slice(&remote.port().to_be_bytes());
    n + 2
}

/// MSS values a SYN cookie can carry (3 bits).
const COOKIE_MSS: [u16; 8] = [536, 1200, 1360, 1440, 1460, 4312, 8960, 9000];

impl TcpLayer {
    pub(super) fn isn(&self, local: SocketAddr, remote: SocketAddr) -> SeqNumber {
        // RFC 6528: M (a 4 µs clock) + F(4-tuple, secret).
        let mut b = [0u8; 36];
        let n = put_tuple(&mut b, local, remote);
        let f = siphash(self.secret[0], self.secret[1], &b[..n]) as u32;
        SeqNumber(((self.now.micros() / 4) as u32).wrapping_add(f))
    }

    /// Timestamp clock offset per address pair (as Linux): random to observers, but the
    /// same for every connection between two hosts, so a new connection's timestamps
    /// exceed an old TIME-WAIT's and it may reuse the 4-tuple.
    pub(super) fn ts_offset(&self, local: SocketAddr, remote: SocketAddr) -> u32 {
        let mut b = [0u8; 32];
        let mut n = put_ip(&mut b, local.ip());
        n += put_ip(&mut b[n..], remote.ip());
        siphash(self.secret[0] ^ 0x7473, self.secret[1], &b[..n]) as u32
    }

    fn cookie_hash(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        peer_isn: SeqNumber,
        t: u32,
    ) -> u32 {
        let mut b = [0u8; 44];
        let mut n = put_tuple(&mut b, local, remote);
        b[n..n + 4].copy_from_slice(&peer_isn.0.to_be_bytes());
        b[n + 4..n + 8].copy_from_slice(&t.to_be_bytes());
        n += 8;
        siphash(self.secret[1], self.secret[0] ^ 0x636f6f6b6965, &b[..n]) as u32
    }

    fn cookie_time(&self) -> u32 {
        (self.now.micros() / 64_000_000) as u32
    }

    /// Cookie ISN: 5 bits of time (64 s units), 3 bits of MSS index, 24 bits of MAC.
    pub(super) fn make_cookie(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
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
        local: SocketAddr,
        remote: SocketAddr,
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
