//! Socket options, names, fcntl/ioctl and fd duplication for fast-path sockets.
//!
//! An option either takes effect in the stack, or has the same effect on the shadow
//! (port reuse, v6-only), or is refused with ENOPROTOOPT (as Linux does for options it
//! does not know) and counted in `sockets.unsupported_options`: never accepted and
//! silently ignored.

use super::appmem;
use super::calls::{err, ours, release_to_kernel, stack_err};
use super::cmsg;
use super::engine::{Engine, FastSocket, Kind};
use super::global::{engine, is_internal};
use super::kernel;
use fastnet_stats::Counter;
use rewriter::PASSTHROUGH;
use stack::time::Duration;

fn read_int(val: i64, len: u32) -> Result<i32, i32> {
    if (len as usize) < 4 {
        return Err(libc::EINVAL);
    }
    // SAFETY: the app passed (val, len) to setsockopt(2).
    unsafe { appmem::read::<i32>(val) }
}

/// Writes an option value the way getsockopt(2) does (truncating to the app's length).
fn write_opt<T: Copy>(val: i64, lenp: i64, v: T) -> i64 {
    // SAFETY: the app passed (val, lenp) to getsockopt(2).
    let r = unsafe {
        appmem::read::<u32>(lenp).and_then(|cap| {
            let size = std::mem::size_of::<T>();
            let n = (cap as usize).min(size);
            let out = appmem::slice_mut(val, n)?;
            let bytes = std::slice::from_raw_parts(&v as *const T as *const u8, size);
            out.copy_from_slice(&bytes[..n]);
            appmem::write::<u32>(lenp, n as u32)
        })
    };
    match r {
        Ok(()) => 0,
        Err(x) => err(x),
    }
}

fn timeval_of(d: Option<std::time::Duration>) -> libc::timeval {
    let d = d.unwrap_or_default();
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

/// Pushes the socket's options into the stack socket, if it has one.
fn apply(e: &mut Engine, s: &FastSocket) -> i64 {
    let r = match s.kind {
        Kind::TcpStream(h) | Kind::TcpListener(h) => e.iface.tcp.set_options(h, s.opts),
        Kind::Udp(h) => e
            .iface
            .udp
            .set_recv_buffer_size(h, s.opts.rcvbuf)
            .and_then(|_| e.iface.udp.set_send_buffer_size(h, s.opts.sndbuf)),
        _ => Ok(()),
    };
    match r {
        Ok(()) => 0,
        Err(x) => stack_err(x),
    }
}

fn unsupported(e: &Engine) -> i64 {
    e.count(Counter::UnsupportedOptions);
    err(libc::ENOPROTOOPT)
}

pub fn setsockopt(fd: i32, level: i32, name: i32, val: i64, len: u32) -> i64 {
    let mut e = engine();
    let Some(mut s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match (level, name) {
        // Same effect on the shadow: these decide what bind/listen in the kernel allow.
        (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT)
        | (libc::SOL_IP, libc::IP_FREEBIND | libc::IP_BIND_ADDRESS_NO_PORT) => PASSTHROUGH,
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if v != 0 && matches!(s.kind, Kind::TcpFresh | Kind::UdpFresh) {
                // IPv6 only: no IPv4 will ever use it, so it is the kernel's.
                release_to_kernel(&mut e, fd, Counter::KernelRoute);
            }
            PASSTHROUGH
        }
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            s.opts.keepalive = (v != 0).then_some(s.keepalive_params);
            store(&mut e, fd, s)
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT) => {
            let v = match read_int(val, len) {
                Ok(v) if v >= 1 => v,
                Ok(_) => return err(libc::EINVAL),
                Err(x) => return err(x),
            };
            let k = &mut s.keepalive_params;
            match name {
                libc::TCP_KEEPIDLE => k.idle = Duration::from_secs(v as u64),
                libc::TCP_KEEPINTVL => k.interval = Duration::from_secs(v as u64),
                _ => k.count = v as u32,
            }
            if s.opts.keepalive.is_some() {
                s.opts.keepalive = Some(s.keepalive_params);
            }
            store(&mut e, fd, s)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            s.opts.nodelay = v != 0;
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            if (len as usize) < std::mem::size_of::<libc::linger>() {
                return err(libc::EINVAL);
            }
            // SAFETY: the app passed a struct linger of `len` bytes.
            let l: libc::linger = match unsafe { appmem::read(val) } {
                Ok(l) => l,
                Err(x) => return err(x),
            };
            s.opts.linger = (l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64));
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            // Linux doubles the value (bookkeeping overhead) and enforces a minimum.
            let bytes = (v.max(0) as usize * 2).clamp(4608, 64 << 20);
            if name == libc::SO_RCVBUF {
                s.opts.rcvbuf = bytes;
            } else {
                s.opts.sndbuf = bytes;
            }
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
            if (len as usize) < std::mem::size_of::<libc::timeval>() {
                return err(libc::EINVAL);
            }
            // SAFETY: the app passed a struct timeval of `len` bytes.
            let tv: libc::timeval = match unsafe { appmem::read(val) } {
                Ok(t) => t,
                Err(x) => return err(x),
            };
            if tv.tv_usec < 0 || tv.tv_usec >= 1_000_000 {
                return err(libc::EDOM);
            }
            let d = if tv.tv_sec < 0 {
                None
            } else {
                Some(std::time::Duration::new(
                    tv.tv_sec as u64,
                    tv.tv_usec as u32 * 1000,
                ))
                .filter(|d| !d.is_zero())
            };
            if name == libc::SO_RCVTIMEO {
                s.rcvtimeo = d;
            } else {
                s.sndtimeo = d;
            }
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if let Kind::Udp(h) = s.kind {
                if let Err(x) = e.iface.udp.set_broadcast(h, v != 0) {
                    return stack_err(x);
                }
            }
            // The shadow keeps it too: a fresh socket may still become the kernel's.
            PASSTHROUGH
        }
        _ if matches!(s.kind, Kind::Udp(_) | Kind::UdpFresh)
            && cmsg::is_recv_option(level, name, s.v6) =>
        {
            // The shadow keeps the option (getsockopt reads it there); recvmsg writes
            // the cmsgs it asks for.
            match cmsg::set_on_shadow(fd, level, name, val, len) {
                Ok(c) => {
                    s.recv_cmsgs = c;
                    if let Some(slot) = e.fds.get_mut(fd) {
                        *slot = s;
                    }
                    0
                }
                Err(x) => err(x),
            }
        }
        // No cmsgs on a TCP socket's recvmsg in Linux either: the shadow keeps them.
        (libc::SOL_IP, libc::IP_PKTINFO | libc::IP_RECVTOS | libc::IP_RECVTTL) => PASSTHROUGH,
        (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT)
            if matches!(s.kind, Kind::TcpFresh | Kind::TcpListener(_)) =>
        {
            // Applies to connections the kernel path accepts; the fast path hands out
            // connections at once (counted so `fastnet stat` shows the difference).
            e.count(Counter::UnsupportedOptions);
            PASSTHROUGH
        }
        _ => unsupported(&e),
    }
}

fn store(e: &mut Engine, fd: i32, s: FastSocket) -> i64 {
    let r = apply(e, &s);
    if let Some(slot) = e.fds.get_mut(fd) {
        *slot = s;
    }
    r
}

pub fn getsockopt(fd: i32, level: i32, name: i32, val: i64, lenp: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => {
            let pending = match s.kind {
                Kind::TcpStream(h) => e.iface.tcp.take_error(h).ok().flatten(),
                Kind::Udp(h) => e.iface.udp.take_error(h).ok().flatten(),
                _ => return PASSTHROUGH,
            };
            write_opt::<i32>(val, lenp, pending.map_or(0, |x| x.errno()))
        }
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            write_opt::<i32>(val, lenp, s.opts.keepalive.is_some() as i32)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            write_opt::<i32>(val, lenp, s.opts.nodelay as i32)
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => write_opt::<i32>(
            val,
            lenp,
            s.keepalive_params.idle.micros() as i32 / 1_000_000,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => write_opt::<i32>(
            val,
            lenp,
            s.keepalive_params.interval.micros() as i32 / 1_000_000,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => {
            write_opt::<i32>(val, lenp, s.keepalive_params.count as i32)
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => write_opt::<i32>(val, lenp, s.opts.rcvbuf as i32),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => write_opt::<i32>(val, lenp, s.opts.sndbuf as i32),
        (libc::SOL_SOCKET, libc::SO_LINGER) => write_opt(
            val,
            lenp,
            libc::linger {
                l_onoff: s.opts.linger.is_some() as i32,
                l_linger: s.opts.linger.map_or(0, |d| (d.micros() / 1_000_000) as i32),
            },
        ),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => write_opt(val, lenp, timeval_of(s.rcvtimeo)),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => write_opt(val, lenp, timeval_of(s.sndtimeo)),
        (libc::IPPROTO_TCP, libc::TCP_INFO) if matches!(s.kind, Kind::TcpStream(_)) => {
            // The shadow's TCP_INFO would describe an unconnected socket.
            unsupported(&e)
        }
        // Identity options (SO_TYPE, SO_DOMAIN, SO_ACCEPTCONN, ...) from the shadow.
        _ => PASSTHROUGH,
    }
}

/// getsockname / getpeername.
pub fn getname(fd: i32, addr: i64, lenp: i64, peer: bool) -> i64 {
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    let a = match (s.kind, peer) {
        (Kind::TcpStream(h), false) => e.iface.tcp.local_addr(h),
        (Kind::TcpStream(h), true) => e.iface.tcp.peer_addr(h),
        (Kind::Udp(h), true) => e.iface.udp.peer_addr(h),
        _ => return PASSTHROUGH,
    };
    drop(e);
    match a {
        // SAFETY: the app passed (addr, lenp) to getsockname/getpeername(2).
        Ok(a) => match unsafe { appmem::write_sockaddr(addr, lenp, a, s.v6) } {
            Ok(()) => 0,
            Err(x) => err(x),
        },
        Err(x) => stack_err(x),
    }
}

pub fn fcntl(fd: i32, cmd: i32, arg: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match cmd {
        libc::F_GETFL => match kernel::fcntl(fd, cmd, 0) {
            Ok(fl) => {
                let nb = libc::O_NONBLOCK as i64;
                if s.nonblocking {
                    fl | nb
                } else {
                    fl & !nb
                }
            }
            Err(x) => err(x),
        },
        libc::F_SETFL => {
            // The shadow stays nonblocking; the app's mode is ours to honour.
            match kernel::fcntl(fd, cmd, arg | libc::O_NONBLOCK as i64) {
                Ok(_) => {
                    if let Some(m) = e.fds.get_mut(fd) {
                        m.nonblocking = arg & libc::O_NONBLOCK as i64 != 0;
                    }
                    0
                }
                Err(x) => err(x),
            }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => match kernel::fcntl(fd, cmd, arg) {
            Ok(nfd) => {
                let nfd = nfd as i32;
                if e.fds.dup(fd, nfd).is_ok() {
                    rewriter::filter::mark_fd(nfd, true);
                }
                nfd as i64
            }
            Err(x) => err(x),
        },
        _ => PASSTHROUGH,
    }
}

pub fn ioctl(fd: i32, req: u64, arg: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match req {
        libc::FIONBIO => {
            // SAFETY: FIONBIO takes a pointer to an int.
            let v = match unsafe { appmem::read::<i32>(arg) } {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if let Some(m) = e.fds.get_mut(fd) {
                m.nonblocking = v != 0;
            }
            0
        }
        libc::FIONREAD => {
            let n = match s.kind {
                Kind::TcpStream(h) => e.iface.tcp.recv_queued(h),
                Kind::Udp(h) => match e.iface.udp.next_datagram_len(h) {
                    Ok(n) => Ok(n),
                    Err(_) => Ok(0),
                },
                _ => return PASSTHROUGH,
            };
            match n {
                // SAFETY: FIONREAD writes an int where the app points.
                Ok(n) => match unsafe { appmem::write::<i32>(arg, n as i32) } {
                    Ok(()) => 0,
                    Err(x) => err(x),
                },
                Err(x) => stack_err(x),
            }
        }
        libc::TIOCOUTQ => match s.kind {
            Kind::TcpStream(h) => match e.iface.tcp.send_queued(h) {
                // SAFETY: SIOCOUTQ writes an int where the app points.
                Ok(n) => match unsafe { appmem::write::<i32>(arg, n as i32) } {
                    Ok(()) => 0,
                    Err(x) => err(x),
                },
                Err(x) => stack_err(x),
            },
            _ => PASSTHROUGH,
        },
        _ => PASSTHROUGH,
    }
}

pub fn dup(fd: i32) -> i64 {
    let mut e = engine();
    if ours(&e, fd).is_none() {
        return PASSTHROUGH;
    }
    // SAFETY: dup(2) of the app's own fd.
    let r = unsafe { kernel::raw(libc::SYS_dup, [fd as i64, 0, 0, 0, 0, 0]) };
    if r >= 0 && e.fds.dup(fd, r as i32).is_ok() {
        rewriter::filter::mark_fd(r as i32, true);
    }
    r
}

/// dup2 / dup3: `new_fd` may have been one of ours (it is closed by the call).
pub fn dup3(old: i32, new: i32, flags: i32, is_dup2: bool) -> i64 {
    let mut e = engine();
    if is_internal(&e, new) {
        // The number is the shim's; the app may not take it over.
        return err(libc::EBUSY);
    }
    let old_ours = ours(&e, old).is_some();
    let new_ours = e.fds.contains(new);
    if !old_ours && !new_ours && !e.epolls.contains_key(&new) {
        return PASSTHROUGH;
    }
    let r = if is_dup2 {
        // SAFETY: the app's own dup2(2).
        unsafe { kernel::raw(libc::SYS_dup2, [old as i64, new as i64, 0, 0, 0, 0]) }
    } else {
        // SAFETY: the app's own dup3(2).
        unsafe {
            kernel::raw(
                libc::SYS_dup3,
                [old as i64, new as i64, flags as i64, 0, 0, 0],
            )
        }
    };
    if r < 0 || old == new {
        return r;
    }
    if let Some(set) = e.epolls.remove(&new) {
        let _ = kernel::close(set.waker);
    }
    if old_ours {
        if let Ok(Some(released)) = e.fds.dup(old, new) {
            e.close_socket(released);
        }
        rewriter::filter::mark_fd(new, true);
    } else if let Some(released) = e.fds.remove(new) {
        e.close_socket(released);
        rewriter::filter::mark_fd(new, false);
    }
    r
}

/// close_range: closes the app's fds in the range but never the shim's own.
pub fn close_range(first: u32, last: u32, flags: u32) -> i64 {
    if flags & libc::CLOSE_RANGE_CLOEXEC != 0 {
        // Marking close-on-exec is harmless to ours (they already are).
        return PASSTHROUGH;
    }
    let mut e = engine();
    let ours_in_range: Vec<i32> = e
        .fds
        .fds()
        .filter(|&fd| (fd as u32) >= first && (fd as u32) <= last)
        .collect();
    for fd in ours_in_range {
        if let Some(s) = e.fds.remove(fd) {
            e.close_socket(s);
        }
        rewriter::filter::mark_fd(fd, false);
    }
    let epfds: Vec<i32> = e
        .epolls
        .keys()
        .copied()
        .filter(|&fd| (fd as u32) >= first && (fd as u32) <= last)
        .collect();
    for fd in epfds {
        if let Some(set) = e.epolls.remove(&fd) {
            let _ = kernel::close(set.waker);
        }
        rewriter::filter::mark_fd(fd, false);
    }
    let internal = super::global::internal_fds_sorted(&e);
    drop(e);
    // Close the range piecewise around the shim's own fds.
    let mut lo = first as u64;
    let hi = last as u64;
    for fd in internal.into_iter().map(|f| f as u64) {
        if fd < lo || fd > hi {
            continue;
        }
        if fd > lo {
            // SAFETY: the app asked to close this range; ours are excluded.
            let r = unsafe {
                kernel::raw(
                    libc::SYS_close_range,
                    [lo as i64, fd as i64 - 1, flags as i64, 0, 0, 0],
                )
            };
            if r < 0 {
                return r;
            }
        }
        lo = fd + 1;
    }
    if lo <= hi {
        // SAFETY: as above.
        return unsafe {
            kernel::raw(
                libc::SYS_close_range,
                [lo as i64, hi as i64, flags as i64, 0, 0, 0],
            )
        };
    }
    0
}
