//! Socket addresses as the app passes them (`sockaddr_in`, `sockaddr_in6`) and as the
//! shim and the stack hold them: the one conversion between the two.
//!
//! Inside, an address is a `SocketAddr` in one canonical form: IPv4 as `V4` (also when
//! an IPv6 socket named it v4-mapped, `::ffff:a.b.c.d`, as a dual-stack socket does),
//! native IPv6 as `V6` with the app's scope id and flow info. That is the form the
//! stack speaks too (it never holds a v4-mapped address), so what the stack returns
//! needs no conversion. Towards the app, an IPv6 socket sees IPv4 peers v4-mapped.
//!
//! The app's buffers are raw memory; these functions take byte slices the caller built
//! from (pointer, length) after checking both, so the parsing itself is safe code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;
const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// The fast-path interface's index: the scope of the link-local addresses the stack
/// has and meets (it holds them without one), set when the fast path starts.
static LINK_SCOPE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Sets the scope id link-local addresses get on their way to the app (see
/// [`write`]).
pub fn set_link_scope(ifindex: u32) {
    LINK_SCOPE.store(ifindex, std::sync::atomic::Ordering::Relaxed);
}

/// The scope id Linux gives `ip`: the interface for a link-local address, else 0.
pub fn scope_of(ip: &Ipv6Addr) -> u32 {
    if is_link_local(ip) {
        LINK_SCOPE.load(std::sync::atomic::Ordering::Relaxed)
    } else {
        0
    }
}

/// fe80::/10.
pub fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Why an address was refused: the errno Linux gives.
pub type Errno = i32;

/// Parses what the app passed to bind/connect/sendto into the canonical form.
pub fn parse(buf: &[u8]) -> Result<SocketAddr, Errno> {
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
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        AF_INET6 => {
            if buf.len() < SOCKADDR_IN6_LEN {
                return Err(libc::EINVAL);
            }
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let flowinfo = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&buf[8..24]);
            let scope_id = u32::from_ne_bytes([buf[24], buf[25], buf[26], buf[27]]);
            let ip = Ipv6Addr::from(octets);
            Ok(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope_id)),
            })
        }
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Writes `addr` into the app's buffer in the socket's family (`v6`: IPv4 addresses
/// v4-mapped), truncating as the kernel does. Returns the full length of the address,
/// which the caller stores into the app's `*addrlen`.
pub fn write(addr: SocketAddr, v6: bool, out: &mut [u8]) -> usize {
    let mut full = [0u8; SOCKADDR_IN6_LEN];
    let len = match addr {
        SocketAddr::V4(a) if !v6 => {
            full[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
            full[2..4].copy_from_slice(&a.port().to_be_bytes());
            full[4..8].copy_from_slice(&a.ip().octets());
            SOCKADDR_IN_LEN
        }
        _ => {
            let (ip, flowinfo, scope_id) = match addr {
                SocketAddr::V4(a) => (a.ip().to_ipv6_mapped(), 0, 0),
                // A link-local address from the stack (which keeps none) gets the
                // interface's scope id, as Linux reports it.
                SocketAddr::V6(a) if a.scope_id() == 0 => (*a.ip(), a.flowinfo(), scope_of(a.ip())),
                SocketAddr::V6(a) => (*a.ip(), a.flowinfo(), a.scope_id()),
            };
            full[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
            full[2..4].copy_from_slice(&addr.port().to_be_bytes());
            full[4..8].copy_from_slice(&flowinfo.to_be_bytes());
            full[8..24].copy_from_slice(&ip.octets());
            full[24..28].copy_from_slice(&scope_id.to_ne_bytes());
            SOCKADDR_IN6_LEN
        }
    };
    let n = out.len().min(len);
    out[..n].copy_from_slice(&full[..n]);
    len
}

/// The wildcard address of a socket's family with `port`: `::` for IPv6 sockets.
pub fn any(v6: bool, port: u16) -> SocketAddr {
    let ip: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, port)
}

/// The 16 bytes and port of an address as the shim's messages carry it (IPv4
/// v4-mapped), and back.
pub fn to_wire(a: SocketAddr) -> [u8; 18] {
    let mut b = [0u8; 18];
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    b[..16].copy_from_slice(&ip.octets());
    b[16..].copy_from_slice(&a.port().to_be_bytes());
    b
}

/// See [`to_wire`].
pub fn from_wire(b: &[u8; 18]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    let ip = Ipv6Addr::from(octets);
    let port = u16::from_be_bytes([b[16], b[17]]);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(v4.into(), port),
        None => SocketAddr::new(ip.into(), port),
    }
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

    fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::from(ip).into(), port)
    }

    #[test]
    fn ipv4_round_trip() {
        let a = v4([10, 77, 0, 1], 8080);
        assert_eq!(parse(&sin([10, 77, 0, 1], 8080)), Ok(a));
        let mut out = [0u8; 16];
        assert_eq!(write(a, false, &mut out), 16);
        assert_eq!(out.to_vec(), sin([10, 77, 0, 1], 8080));
    }

    #[test]
    fn mapped_is_ipv4_and_native_ipv6_stays_ipv6() {
        let mapped = Ipv4Addr::new(10, 77, 0, 2).to_ipv6_mapped();
        assert_eq!(parse(&sin6(mapped, 1)).unwrap(), v4([10, 77, 0, 2], 1));
        assert_eq!(
            parse(&sin6(Ipv6Addr::UNSPECIFIED, 6379)).unwrap(),
            any(true, 6379)
        );
        let ula: Ipv6Addr = "fd77::1".parse().unwrap();
        assert_eq!(
            parse(&sin6(ula, 8080)).unwrap(),
            SocketAddr::new(ula.into(), 8080)
        );
    }

    #[test]
    fn scope_id_and_flowinfo_round_trip() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let a = SocketAddr::V6(SocketAddrV6::new(ll, 80, 0x12345, 7));
        let mut out = [0u8; 28];
        assert_eq!(write(a, true, &mut out), 28);
        assert_eq!(&out[4..8], &0x12345u32.to_be_bytes());
        assert_eq!(u32::from_ne_bytes(out[24..28].try_into().unwrap()), 7);
        assert_eq!(parse(&out), Ok(a));
    }

    #[test]
    fn link_local_addresses_get_the_interface_scope() {
        set_link_scope(7);
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        let mut out = [0u8; 28];
        write(SocketAddr::new(ll.into(), 80), true, &mut out);
        assert_eq!(u32::from_ne_bytes(out[24..28].try_into().unwrap()), 7);
        let ula: Ipv6Addr = "fd77::2".parse().unwrap();
        write(SocketAddr::new(ula.into(), 80), true, &mut out);
        assert_eq!(u32::from_ne_bytes(out[24..28].try_into().unwrap()), 0);
        set_link_scope(0);
    }

    #[test]
    fn ipv6_socket_sees_mapped_peer() {
        let a = v4([10, 77, 0, 2], 40000);
        let mut out = [0u8; 28];
        assert_eq!(write(a, true, &mut out), 28);
        assert_eq!(
            out.to_vec(),
            sin6(Ipv4Addr::new(10, 77, 0, 2).to_ipv6_mapped(), 40000)
        );
    }

    #[test]
    fn wire_form_round_trips_both_families() {
        let ula: Ipv6Addr = "fd77::2".parse().unwrap();
        for a in [v4([10, 77, 0, 2], 1), SocketAddr::new(ula.into(), 2)] {
            assert_eq!(from_wire(&to_wire(a)), a);
        }
    }

    #[test]
    fn short_buffers_truncate_like_the_kernel() {
        let a = v4([1, 2, 3, 4], 5);
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
