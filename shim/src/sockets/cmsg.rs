//! Ancillary data (control messages) of fast-path UDP sockets, as Linux gives it:
//! which receive options are on (IP_PKTINFO, IP_RECVTOS, IP_RECVTTL,
//! IP_RECVORIGDSTADDR, SO_TIMESTAMP*, IPV6_RECVPKTINFO), the cmsgs recvmsg writes for
//! a datagram the stack received, and the source address an IP_PKTINFO cmsg chooses on
//! sendmsg.
//!
//! The shadow socket holds the options: setsockopt goes to it first (so the kernel
//! validates the value and getsockopt answers as Linux does), then the socket's flags
//! are read back from it. Datagrams that reach the shadow get the kernel's own cmsgs.

use super::appmem;
use super::kernel::{self, Errno};
use stack::iface::RxInfo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

// Linux's values (asm-generic/socket.h) where the libc crate lacks them.
const SO_TIMESTAMP_NEW: i32 = 63;
const SO_TIMESTAMPNS_NEW: i32 = 64;

/// Which receive cmsgs a socket asked for (the shadow's option state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvCmsgs {
    pub pktinfo: bool,
    pub tos: bool,
    pub ttl: bool,
    pub origdstaddr: bool,
    /// IPV6_RECVPKTINFO on an AF_INET6 socket (IPV6_PKTINFO with a v4-mapped address).
    pub pktinfo6: bool,
    /// SO_TIMESTAMP / SO_TIMESTAMPNS and their _NEW forms: (cmsg type, nanoseconds).
    pub timestamp: Option<(i32, bool)>,
}

impl RecvCmsgs {
    pub fn any(&self) -> bool {
        *self != RecvCmsgs::default()
    }
}

/// Whether (level, name) is a receive option kept in `RecvCmsgs` (or, IP_RECVERR, one
/// that the shadow keeps and whose datagram-level effect is the same here).
pub fn is_recv_option(level: i32, name: i32, v6: bool) -> bool {
    match level {
        libc::SOL_IP => matches!(
            name,
            libc::IP_PKTINFO
                | libc::IP_RECVTOS
                | libc::IP_RECVTTL
                | libc::IP_RECVORIGDSTADDR
                | libc::IP_RECVERR
        ),
        libc::SOL_SOCKET => matches!(
            name,
            libc::SO_TIMESTAMP | libc::SO_TIMESTAMPNS | SO_TIMESTAMP_NEW | SO_TIMESTAMPNS_NEW
        ),
        libc::IPPROTO_IPV6 => {
            v6 && matches!(
                name,
                libc::IPV6_RECVPKTINFO | libc::IPV6_RECVTCLASS | libc::IPV6_RECVHOPLIMIT
            )
        }
        _ => false,
    }
}

fn shadow_flag(fd: i32, level: i32, name: i32) -> bool {
    let mut v: i32 = 0;
    let mut len: u32 = 4;
    // SAFETY: getsockopt into a local int and its length.
    let r = unsafe {
        kernel::raw(
            libc::SYS_getsockopt,
            [
                fd as i64,
                level as i64,
                name as i64,
                &mut v as *mut i32 as i64,
                &mut len as *mut u32 as i64,
                0,
            ],
        )
    };
    r == 0 && v != 0
}

/// Sets the option on the shadow (the app's own arguments), then reads back which
/// cmsgs the socket now asks for.
pub fn set_on_shadow(
    fd: i32,
    level: i32,
    name: i32,
    val: i64,
    len: u32,
) -> Result<RecvCmsgs, Errno> {
    // SAFETY: the app's own setsockopt arguments, on its own socket: the kernel
    // validates them.
    let r = unsafe {
        kernel::raw(
            libc::SYS_setsockopt,
            [fd as i64, level as i64, name as i64, val, len as i64, 0],
        )
    };
    if r < 0 {
        return Err(-r as Errno);
    }
    let timestamp = if shadow_flag(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) {
        Some((libc::SO_TIMESTAMPNS, true))
    } else if shadow_flag(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMP) {
        Some((libc::SO_TIMESTAMP, false))
    } else if shadow_flag(fd, libc::SOL_SOCKET, SO_TIMESTAMPNS_NEW) {
        Some((SO_TIMESTAMPNS_NEW, true))
    } else if shadow_flag(fd, libc::SOL_SOCKET, SO_TIMESTAMP_NEW) {
        Some((SO_TIMESTAMP_NEW, false))
    } else {
        None
    };
    Ok(RecvCmsgs {
        pktinfo: shadow_flag(fd, libc::SOL_IP, libc::IP_PKTINFO),
        tos: shadow_flag(fd, libc::SOL_IP, libc::IP_RECVTOS),
        ttl: shadow_flag(fd, libc::SOL_IP, libc::IP_RECVTTL),
        origdstaddr: shadow_flag(fd, libc::SOL_IP, libc::IP_RECVORIGDSTADDR),
        pktinfo6: shadow_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        timestamp,
    })
}

/// Writes control messages into the app's msg_control buffer the way the kernel's
/// put_cmsg does: a message that does not fit is cut and MSG_CTRUNC set; padding
/// between messages is left as it was.
pub struct CmsgWriter {
    base: i64,
    cap: usize,
    pub used: usize,
    pub truncated: bool,
}

const HDR: usize = std::mem::size_of::<libc::cmsghdr>();

const fn align(n: usize) -> usize {
    (n + 7) & !7
}

impl CmsgWriter {
    pub fn new(control: i64, controllen: usize) -> Self {
        CmsgWriter {
            base: control,
            cap: if control == 0 { 0 } else { controllen },
            used: 0,
            truncated: false,
        }
    }

    pub fn put(&mut self, level: i32, ty: i32, data: &[u8]) -> Result<(), Errno> {
        let avail = self.cap - self.used;
        if avail < HDR {
            self.truncated = true;
            return Ok(());
        }
        let mut cmlen = HDR + data.len();
        if avail < cmlen {
            self.truncated = true;
            cmlen = avail;
        }
        let at = self.base + self.used as i64;
        let hdr = libc::cmsghdr {
            cmsg_len: cmlen as _,
            cmsg_level: level,
            cmsg_type: ty,
        };
        // SAFETY: [at, at + avail) lies inside the app's msg_control buffer, which
        // the app passed to recvmsg for this call to write into.
        unsafe {
            appmem::write(at, hdr)?;
            appmem::slice_mut(at + HDR as i64, cmlen - HDR)?.copy_from_slice(&data[..cmlen - HDR]);
        }
        self.used += align(HDR + data.len()).min(avail);
        Ok(())
    }
}

/// Wall-clock time of a stack `arrival` (CLOCK_MONOTONIC microseconds), as
/// (seconds, nanoseconds) of CLOCK_REALTIME.
fn realtime_of(arrival_us: u64) -> (i64, i64) {
    let mut mono = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut real = mono;
    // SAFETY: clock_gettime into local timespecs.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono);
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut real);
    }
    let ns = |t: &libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
    let at = ns(&real) - ns(&mono) + arrival_us as i128 * 1000;
    ((at / 1_000_000_000) as i64, (at % 1_000_000_000) as i64)
}

fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: a plain-old-data value viewed as its bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// Where the datagram arrived, as IP_PKTINFO reports it.
pub struct Arrival {
    pub ifindex: i32,
    /// `ipi_spec_dst`: the local address a reply would come from.
    pub spec_dst: IpAddr,
}

/// Writes the cmsgs Linux gives for a datagram on an IPv4 (or dual-stack IPv6)
/// socket, in Linux's order: timestamp, IPV6_PKTINFO, then IP_PKTINFO, IP_TTL,
/// IP_TOS, IP_ORIGDSTADDR.
pub fn write_recv(
    w: &mut CmsgWriter,
    want: RecvCmsgs,
    info: &RxInfo,
    at: &Arrival,
) -> Result<(), Errno> {
    if let Some((ty, nanos)) = want.timestamp {
        let (sec, nsec) = realtime_of(info.arrival.micros());
        if nanos {
            let ts = libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            };
            w.put(libc::SOL_SOCKET, ty, bytes_of(&ts))?;
        } else {
            let tv = libc::timeval {
                tv_sec: sec,
                tv_usec: nsec / 1000,
            };
            w.put(libc::SOL_SOCKET, ty, bytes_of(&tv))?;
        }
    }
    let to = info.to;
    if want.pktinfo6 {
        let addr = match to.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let p = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr { s6_addr: addr },
            ipi6_ifindex: at.ifindex as u32,
        };
        w.put(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, bytes_of(&p))?;
    }
    // The IP_* messages are IPv4's: an IPv6 datagram carries none of them.
    let (IpAddr::V4(dst), IpAddr::V4(spec_dst)) = (to.ip(), at.spec_dst) else {
        return Ok(());
    };
    if want.pktinfo {
        let p = libc::in_pktinfo {
            ipi_ifindex: at.ifindex,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes(spec_dst.octets()),
            },
            ipi_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
        };
        w.put(libc::SOL_IP, libc::IP_PKTINFO, bytes_of(&p))?;
    }
    if want.ttl {
        w.put(libc::SOL_IP, libc::IP_TTL, bytes_of(&(info.ttl as i32)))?;
    }
    if want.tos {
        w.put(libc::SOL_IP, libc::IP_TOS, &[info.tos])?;
    }
    if want.origdstaddr {
        let mut sa = [0u8; 16];
        super::sockaddr::write(to, false, &mut sa);
        w.put(libc::SOL_IP, libc::IP_ORIGDSTADDR, &sa)?;
    }
    Ok(())
}

/// What a sendmsg's control messages ask of a UDP datagram.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SendCmsgs {
    /// The source address IP_PKTINFO (`ipi_spec_dst`) or IPV6_PKTINFO chose (IPv4
    /// when v4-mapped); None when unspecified or absent.
    pub src: Option<IpAddr>,
    /// The outgoing interface it named (0: any).
    pub ifindex: u32,
    /// A control message the fast path does not apply (IP_TTL, IP_TOS, ...): the
    /// datagram is the kernel's to send.
    pub other: bool,
}

/// Reads the control messages of a sendmsg. EINVAL for a malformed header or an
/// IPV6_PKTINFO whose address is not v4-mapped, as Linux's ip_cmsg_send answers.
pub fn parse_send(control: i64, controllen: usize, v6: bool) -> Result<SendCmsgs, Errno> {
    let mut out = SendCmsgs::default();
    if control == 0 || controllen < HDR {
        return Ok(out);
    }
    // SAFETY: the app passed (msg_control, msg_controllen) to sendmsg.
    let buf = unsafe { appmem::slice(control, controllen) }?;
    let mut off = 0;
    while off + HDR <= buf.len() {
        // SAFETY: HDR bytes at `off` are inside `buf`; read unaligned.
        let h: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr() as *const libc::cmsghdr) };
        let len = h.cmsg_len as usize;
        if len < HDR || off + len > buf.len() {
            return Err(libc::EINVAL);
        }
        let data = &buf[off + HDR..off + len];
        match (h.cmsg_level, h.cmsg_type) {
            (libc::SOL_IP, libc::IP_PKTINFO) => {
                if data.len() < std::mem::size_of::<libc::in_pktinfo>() {
                    return Err(libc::EINVAL);
                }
                out.ifindex = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes"));
                let a = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
                out.src = (!a.is_unspecified()).then_some(a.into());
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if v6 => {
                if data.len() < std::mem::size_of::<libc::in6_pktinfo>() {
                    return Err(libc::EINVAL);
                }
                let a = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).expect("16"));
                let a: IpAddr = a.to_ipv4_mapped().map_or(a.into(), Into::into);
                out.ifindex = u32::from_ne_bytes(data[16..20].try_into().expect("4 bytes"));
                out.src = (!a.is_unspecified()).then_some(a);
            }
            _ => out.other = true,
        }
        off += align(len);
    }
    Ok(out)
}

/// The address a reply to `to` would come from: `to` itself when it is ours, else
/// (a broadcast) the interface's address.
pub fn spec_dst(to: SocketAddr, own: bool, iface_addr: IpAddr) -> IpAddr {
    if own {
        to.ip()
    } else {
        iface_addr
    }
}
