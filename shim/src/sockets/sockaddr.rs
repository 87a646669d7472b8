//! Socket addresses as the app passes them (`sockaddr_in`, `sockaddr_in6`) and as the
//! fast path sees them (IPv4 only: IPv6 sockets reach it through v4-mapped addresses).
//!
//! The app's buffers are raw memory; these functions take byte slices the caller built
//! from (pointer, length) after checking both, so the parsing itself is safe code.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;
const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// An address the app gave, reduced to what decides the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppAddr {
    /// IPv4, or IPv6 v4-mapped (`::ffff:a.b.c.d`) or `::` (dual-stack any).
    V4(SocketAddrV4),
    /// Native IPv6: always the kernel's.
    V6Native,
}

/// An address of a stack socket as the fast path sees it. The stack speaks IPv6 too,
/// but the shim gives it no IPv6 address yet (issue 21's shim part), so its sockets
/// are IPv4; a v4-mapped address maps back, any other IPv6 one to 0.0.0.0.
pub fn stack_v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => SocketAddrV4::new(
            a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            a.port(),
        ),
    }
}

/// Why an address was refused: the errno Linux gives.
pub type Errno = i32;

/// Parses what the app passed to bind/connect/sendto.
pub fn parse(buf: &[u8]) -> Result<AppAddr, Errno> {
    if buf.len() < 2 {
        return Err(libc::EINVAL);
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]);
    match family {
        AF_INET => {
            if buf.len() < SOCKADDR_IN_LEN {
                return Err(libc::EINVAL);
            }
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            Ok(AppAddr::V4(SocketAddrV4::new(ip, port)))
        }
        AF_INET6 => {
            if buf.len() < SOCKADDR_IN6_LEN {
                return Err(libc::EINVAL);
            }
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&buf[8..24]);
            let ip = Ipv6Addr::from(octets);
            if ip.is_unspecified() {
                return Ok(AppAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)));
            }
            match ip.to_ipv4_mapped() {
                Some(v4) => Ok(AppAddr::V4(SocketAddrV4::new(v4, port))),
                None => Ok(AppAddr::V6Native),
            }
        }
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Writes `addr` into the app's buffer in the socket's family (v4-mapped for IPv6
/// sockets), truncating as the kernel does. Returns the full length of the address,
/// which the caller stores into the app's `*addrlen`.
pub fn write(addr: SocketAddrV4, v6: bool, out: &mut [u8]) -> usize {
    let mut full = [0u8; SOCKADDR_IN6_LEN];
    let len = if v6 {
        full[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        full[2..4].copy_from_slice(&addr.port().to_be_bytes());
        full[8..24].copy_from_slice(&addr.ip().to_ipv6_mapped().octets());
        SOCKADDR_IN6_LEN
    } else {
        full[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
        full[2..4].copy_from_slice(&addr.port().to_be_bytes());
        full[4..8].copy_from_slice(&addr.ip().octets());
        SOCKADDR_IN_LEN
    };
    let n = out.len().min(len);
    out[..n].copy_from_slice(&full[..n]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sin(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    fn sin6(ip: Ipv6Addr, port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 28];
        b[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[8..24].copy_from_slice(&ip.octets());
        b
    }

    #[test]
    fn ipv4_round_trip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 8080);
        assert_eq!(parse(&sin([10, 77, 0, 1], 8080)), Ok(AppAddr::V4(a)));
        let mut out = [0u8; 16];
        assert_eq!(write(a, false, &mut out), 16);
        assert_eq!(out.to_vec(), sin([10, 77, 0, 1], 8080));
    }

    #[test]
    fn dual_stack_any_and_mapped_are_v4() {
        let any = parse(&sin6(Ipv6Addr::UNSPECIFIED, 6379)).unwrap();
        assert_eq!(
            any,
            AppAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6379))
        );
        let mapped = Ipv4Addr::new(10, 77, 0, 2).to_ipv6_mapped();
        assert_eq!(
            parse(&sin6(mapped, 1)).unwrap(),
            AppAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 1))
        );
        assert_eq!(
            parse(&sin6(Ipv6Addr::LOCALHOST, 1)).unwrap(),
            AppAddr::V6Native
        );
    }

    #[test]
    fn ipv6_socket_sees_mapped_peer() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40000);
        let mut out = [0u8; 28];
        assert_eq!(write(a, true, &mut out), 28);
        assert_eq!(out.to_vec(), sin6(a.ip().to_ipv6_mapped(), 40000));
    }

    #[test]
    fn short_buffers_truncate_like_the_kernel() {
        let a = SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5);
        let mut out = [0u8; 4];
        assert_eq!(write(a, false, &mut out), 16, "full length reported");
        assert_eq!(out.to_vec(), sin([1, 2, 3, 4], 5)[..4].to_vec());
    }

    #[test]
    fn bad_addresses_get_linux_errors() {
        assert_eq!(parse(&[]), Err(libc::EINVAL));
        assert_eq!(parse(&sin([1, 2, 3, 4], 5)[..8]), Err(libc::EINVAL));
        assert_eq!(parse(&[1, 0, 0, 0]), Err(libc::EAFNOSUPPORT)); // AF_UNIX
        assert_eq!(
            parse(&sin6(Ipv6Addr::UNSPECIFIED, 1)[..20]),
            Err(libc::EINVAL)
        );
    }
}
