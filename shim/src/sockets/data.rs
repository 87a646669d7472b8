//! Data calls on fast-path sockets: read/recv*, write/send*, their vectored and
//! multi-message forms, sendfile, shutdown.
//!
//! Where the kernel's answer for the shadow is the right one (a fresh socket, a
//! listener), the call passes through to it: same errno as Linux by construction.

use super::appmem;
use super::calls::{err, ours, stack_err};
use super::cmsg;
use super::engine::{Engine, Kind};
use super::kernel;
use super::process::{block_on, engine, Attempt, Deadline, LEFT_THIS_STACK};
use super::sockaddr;
use rewriter::PASSTHROUGH;
use stack::error::Error;
use stack::iface::RxInfo;
use stack::socket::SocketHandle;
use stack::tcp::Shutdown;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use xdp_backend::portmap::Transport;

/// Where received bytes go / sent bytes come from: the app's iovecs.
type Iov<'a> = &'a [libc::iovec];

fn iov_len(iov: Iov<'_>) -> usize {
    iov.iter().map(|v| v.iov_len).sum()
}

/// Copies queued TCP data into the iovecs; `Ok(0)` is end of stream.
fn tcp_read_iov(e: &mut Engine, h: SocketHandle, iov: Iov<'_>, peek: bool) -> Result<usize, i32> {
    let mut total = 0;
    for v in iov {
        // SAFETY: the app passed these iovecs for this call to write into.
        let buf = unsafe { appmem::slice_mut(v.iov_base as i64, v.iov_len) }?;
        if buf.is_empty() {
            continue;
        }
        let r = if peek {
            // Peek fills only the first buffer: enough for every peek we have seen.
            if total > 0 {
                break;
            }
            e.iface.tcp.peek(h, buf)
        } else {
            e.iface.tcp.recv(h, buf)
        };
        match r {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                if n < buf.len() || peek {
                    break;
                }
            }
            Err(x) if total == 0 => return Err(x.errno()),
            Err(_) => break,
        }
    }
    Ok(total)
}

/// Queues TCP data from the iovecs, starting `skip` bytes in; returns bytes queued.
fn tcp_write_iov(
    e: &mut Engine,
    h: SocketHandle,
    iov: Iov<'_>,
    mut skip: usize,
) -> Result<usize, Error> {
    let mut total = 0;
    for v in iov {
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        // SAFETY: the app passed these iovecs for this call to read from.
        let buf = unsafe { appmem::slice(v.iov_base as i64, v.iov_len) }
            .map_err(|_| Error::InvalidInput)?;
        let buf = &buf[skip..];
        skip = 0;
        match e.iface.tcp.send(h, buf) {
            Ok(n) => {
                total += n;
                if n < buf.len() {
                    break;
                }
            }
            Err(x) if total == 0 => return Err(x),
            Err(_) => break,
        }
    }
    Ok(total)
}

/// recv on a TCP stream, blocking as the socket and flags say.
fn tcp_recv(fd: i32, iov: Iov<'_>, flags: i32) -> i64 {
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    let Kind::TcpStream(h) = s.kind else {
        return PASSTHROUGH;
    };
    drop(e);
    let want = iov_len(iov);
    if want == 0 {
        return 0;
    }
    let peek = flags & libc::MSG_PEEK != 0;
    let nonblocking = s.nonblocking || flags & libc::MSG_DONTWAIT != 0;
    let waitall = flags & libc::MSG_WAITALL != 0 && !peek && !nonblocking;
    let mut got = 0usize;
    let r = block_on(
        fd,
        h,
        nonblocking,
        Deadline::after(s.rcvtimeo),
        libc::EAGAIN,
        None,
        |e| {
            let rest = advance(iov, got);
            match tcp_read_iov(e, h, &rest.iovs[..rest.n], peek) {
                Ok(0) => Attempt::Done(Ok(got)),
                Ok(n) => {
                    got += n;
                    if waitall && got < want {
                        Attempt::Wait
                    } else {
                        Attempt::Done(Ok(got))
                    }
                }
                Err(libc::EAGAIN) => Attempt::Wait,
                Err(x) => Attempt::Done(if got > 0 { Ok(got) } else { Err(x) }),
            }
        },
    );
    match r {
        Ok(n) => n as i64,
        Err(libc::EAGAIN | libc::EINTR | LEFT_THIS_STACK) if got > 0 => got as i64,
        Err(x) => err(x),
    }
}

/// send on a TCP stream: a blocking socket sends everything (Linux semantics), a
/// nonblocking one what fits.
fn tcp_send(fd: i32, iov: Iov<'_>, flags: i32) -> i64 {
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    let Kind::TcpStream(h) = s.kind else {
        return PASSTHROUGH;
    };
    drop(e);
    let want = iov_len(iov);
    let nonblocking = s.nonblocking || flags & libc::MSG_DONTWAIT != 0;
    let mut sent = 0usize;
    let r = block_on(
        fd,
        h,
        nonblocking,
        Deadline::after(s.sndtimeo),
        libc::EAGAIN,
        None,
        |e| {
            if want == 0 {
                return Attempt::Done(e.iface.tcp.send(h, &[]).map(|_| 0).map_err(|x| x.errno()));
            }
            match tcp_write_iov(e, h, iov, sent) {
                Ok(n) => {
                    sent += n;
                    if sent == want || (nonblocking && sent > 0) {
                        Attempt::Done(Ok(sent))
                    } else {
                        Attempt::Wait
                    }
                }
                Err(Error::WouldBlock) => Attempt::Wait,
                Err(x) => Attempt::Done(if sent > 0 { Ok(sent) } else { Err(x.errno()) }),
            }
        },
    );
    match r {
        Ok(n) => n as i64,
        Err(libc::EAGAIN | libc::EINTR | LEFT_THIS_STACK) if sent > 0 => sent as i64,
        Err(libc::EPIPE) => {
            if flags & libc::MSG_NOSIGNAL == 0 {
                kernel::raise(libc::SIGPIPE);
            }
            err(libc::EPIPE)
        }
        Err(x) => err(x),
    }
}

/// The iovecs from byte `skip` on (a fixed-size copy: no allocation).
struct Rest {
    iovs: [libc::iovec; 64],
    n: usize,
}

fn advance(iov: Iov<'_>, mut skip: usize) -> Rest {
    let mut r = Rest {
        iovs: [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 64],
        n: 0,
    };
    for v in iov {
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        if r.n == r.iovs.len() {
            break;
        }
        r.iovs[r.n] = libc::iovec {
            // SAFETY: skip < iov_len, so the pointer stays inside the app's buffer.
            iov_base: unsafe { (v.iov_base as *mut u8).add(skip) }.cast(),
            iov_len: v.iov_len - skip,
        };
        skip = 0;
        r.n += 1;
    }
    r
}

/// A datagram received on a fast-path UDP socket.
struct Datagram {
    /// Bytes copied to the app.
    len: usize,
    /// The datagram's full length.
    full: usize,
    from: Option<SocketAddr>,
    origin: Origin,
}

enum Origin {
    /// The stack received it: what its headers said, for the cmsgs.
    Stack(RxInfo),
    /// It reached the shadow: the kernel wrote the app's control buffer.
    Kernel { controllen: usize, flags: i32 },
}

/// A datagram received on a fast-path UDP socket (stack first, then the shadow).
/// `control` is the app's msg_control buffer (null for calls without one).
fn udp_recv(
    fd: i32,
    h: SocketHandle,
    s_nonblocking: bool,
    timeout: Option<std::time::Duration>,
    iov: Iov<'_>,
    flags: i32,
    control: (i64, usize),
) -> Result<Datagram, i32> {
    let peek = flags & libc::MSG_PEEK != 0;
    let nonblocking = s_nonblocking || flags & libc::MSG_DONTWAIT != 0;
    // A datagram for several iovecs is received whole into a scratch buffer, then
    // scattered (recvmsg_into with a list of buffers); one iovec takes it directly.
    thread_local! {
        static SCATTER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    block_on(
        fd,
        h,
        nonblocking,
        Deadline::after(timeout),
        libc::EAGAIN,
        Some(fd),
        |e| {
            let r = if iov.len() <= 1 {
                let (ptr, len) = iov
                    .first()
                    .map_or((0, 0), |v| (v.iov_base as i64, v.iov_len));
                // SAFETY: the app passed this buffer for this call to write into.
                let buf = match unsafe { appmem::slice_mut(ptr, len) } {
                    Ok(b) => b,
                    Err(x) => return Attempt::Done(Err(x)),
                };
                if peek {
                    e.iface.udp.peek_from(h, buf)
                } else {
                    e.iface.udp.recv_from(h, buf)
                }
            } else {
                let r = SCATTER.with(|sc| {
                    let mut sc = sc.borrow_mut();
                    sc.resize(total.min(65536), 0);
                    let r = if peek {
                        e.iface.udp.peek_from(h, &mut sc)
                    } else {
                        e.iface.udp.recv_from(h, &mut sc)
                    };
                    if let Ok(d) = &r {
                        // SAFETY: the app passed these iovecs for this call to write into.
                        unsafe { scatter(&sc[..d.len], iov) }?;
                    }
                    Ok(r)
                });
                match r {
                    Ok(r) => r,
                    Err(x) => return Attempt::Done(Err(x)),
                }
            };
            match r {
                Ok(d) => {
                    return Attempt::Done(Ok(Datagram {
                        len: d.len,
                        full: d.datagram_len,
                        from: Some(d.from),
                        origin: Origin::Stack(d.info),
                    }))
                }
                Err(Error::WouldBlock) => {}
                Err(x) => return Attempt::Done(Err(x.errno())),
            }
            // Datagrams that reached the kernel socket (loopback, other interfaces).
            let mut name = [0u8; 128];
            let mut namelen: u32 = 128;
            let mut hdr: libc::msghdr = unsafe_zeroed_msghdr();
            hdr.msg_name = name.as_mut_ptr().cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = iov.as_ptr() as *mut libc::iovec;
            hdr.msg_iovlen = iov.len();
            hdr.msg_control = control.0 as *mut libc::c_void;
            hdr.msg_controllen = control.1;
            // SAFETY: recvmsg into our own header, name buffer and the app's buffers.
            let r = unsafe {
                kernel::raw(
                    libc::SYS_recvmsg,
                    [
                        fd as i64,
                        &mut hdr as *mut libc::msghdr as i64,
                        (flags | libc::MSG_DONTWAIT | libc::MSG_TRUNC) as i64,
                        0,
                        0,
                        0,
                    ],
                )
            };
            if r == -(libc::EAGAIN as i64) {
                return Attempt::Wait;
            }
            if r < 0 {
                return Attempt::Done(Err(-r as i32));
            }
            namelen = hdr.msg_namelen;
            let from = sockaddr::parse(&name[..(namelen as usize).min(128)]).ok();
            let full = r as usize;
            Attempt::Done(Ok(Datagram {
                len: full.min(total),
                full,
                from,
                origin: Origin::Kernel {
                    controllen: hdr.msg_controllen,
                    flags: hdr.msg_flags,
                },
            }))
        },
    )
}

/// Copies `data` across the app's iovecs in order.
///
/// # Safety
/// Each iovec must be a buffer the app passed for this call to write into.
unsafe fn scatter(mut data: &[u8], iov: Iov<'_>) -> Result<(), i32> {
    for v in iov {
        if data.is_empty() {
            break;
        }
        let n = v.iov_len.min(data.len());
        // SAFETY: per this function's contract.
        let out = unsafe { appmem::slice_mut(v.iov_base as i64, n) }?;
        out.copy_from_slice(&data[..n]);
        data = &data[n..];
    }
    Ok(())
}

fn unsafe_zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    unsafe { std::mem::zeroed() }
}

fn udp_send(
    e: &mut Engine,
    h: SocketHandle,
    iov: Iov<'_>,
    dst: Option<SocketAddr>,
    src: Option<IpAddr>,
) -> i64 {
    // Gather into one datagram (sendmsg with several iovecs is one datagram).
    thread_local! {
        static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let r = if iov.len() == 1 {
        // SAFETY: the app passed this buffer for this call to read from.
        match unsafe { appmem::slice(iov[0].iov_base as i64, iov[0].iov_len) } {
            Ok(b) => e.iface.udp.send_to_from(h, b, dst, src),
            Err(x) => return err(x),
        }
    } else {
        GATHER.with(|g| {
            let mut g = g.borrow_mut();
            g.clear();
            for v in iov {
                // SAFETY: as above.
                match unsafe { appmem::slice(v.iov_base as i64, v.iov_len) } {
                    Ok(b) => g.extend_from_slice(b),
                    Err(_) => return Err(Error::InvalidInput),
                }
            }
            e.iface.udp.send_to_from(h, &g, dst, src)
        })
    };
    let r = match r {
        Ok(n) => n as i64,
        Err(x) => stack_err(x),
    };
    e.drive();
    r
}

/// Resolves where a UDP datagram from socket `h` (None: not bound yet) goes:
/// `Ok(None)` for the connected peer, `Err(PASSTHROUGH)` when the destination is the
/// kernel's (this host with no socket of ours there, other routes).
fn udp_dst(
    e: &Engine,
    h: Option<SocketHandle>,
    addr: i64,
    alen: usize,
) -> Result<Option<SocketAddr>, i64> {
    let bound_to_lo =
        h.is_some_and(|h| matches!(e.iface.udp.local_addr(h), Ok(Some(l)) if l.ip().is_loopback()));
    if addr == 0 {
        // The connected peer: checked only where it is this host (no route lookup
        // per datagram).
        let Some(peer) = h.and_then(|h| e.iface.udp.peer_addr(h).ok()) else {
            return Ok(None);
        };
        return match e.is_host_addr(peer.ip()) {
            true if e.loopback_on() && e.iface.udp.has_receiver(peer) => Ok(None),
            true if e.host_peer(Transport::Udp, peer) => Ok(None),
            true => Err(PASSTHROUGH),
            false if bound_to_lo => Err(PASSTHROUGH),
            false => Ok(None),
        };
    }
    // SAFETY: the app passed (addr, alen) to sendto/sendmsg.
    let buf = unsafe { appmem::slice(addr, alen) }.map_err(err)?;
    match sockaddr::parse(buf) {
        // IPv6 without the stack's IPv6 addresses, or to this host over IPv6 (no IPv6
        // loopback in the stack): the kernel's.
        Ok(d) if d.is_ipv6() && (!e.has_ipv6() || e.is_host_addr(d.ip())) => Err(PASSTHROUGH),
        Ok(d) if e.is_host_addr(d.ip()) => {
            if e.loopback_on() && e.iface.udp.has_receiver(d) || e.host_peer(Transport::Udp, d) {
                Ok(Some(d))
            } else {
                Err(PASSTHROUGH)
            }
        }
        // A socket bound to 127/8 cannot reach other hosts: the kernel says how.
        Ok(_) if bound_to_lo => Err(PASSTHROUGH),
        Ok(d) => {
            if e.dev.routes_to(d.ip()).is_some() {
                Ok(Some(d))
            } else {
                Err(PASSTHROUGH)
            }
        }
        Err(x) => Err(err(x)),
    }
}

fn one_iov(buf: i64, len: usize) -> [libc::iovec; 1] {
    [libc::iovec {
        iov_base: buf as *mut libc::c_void,
        iov_len: len,
    }]
}

pub fn recvfrom(fd: i32, buf: i64, len: usize, flags: i32, addr: i64, lenp: i64) -> i64 {
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    drop(e);
    let iov = one_iov(buf, len);
    match s.kind {
        Kind::TcpStream(_) => tcp_recv(fd, &iov, flags),
        Kind::Udp(h) => match udp_recv(fd, h, s.nonblocking, s.rcvtimeo, &iov, flags, (0, 0)) {
            Ok(Datagram {
                len: n, full, from, ..
            }) => {
                if let Some(f) = from {
                    // SAFETY: the app passed (addr, lenp) to recvfrom(2).
                    if let Err(x) = unsafe { appmem::write_sockaddr(addr, lenp, f, s.v6) } {
                        return err(x);
                    }
                }
                if flags & libc::MSG_TRUNC != 0 {
                    full as i64
                } else {
                    n as i64
                }
            }
            Err(x) => err(x),
        },
        _ => PASSTHROUGH,
    }
}

pub fn sendto(fd: i32, buf: i64, len: usize, flags: i32, addr: i64, alen: usize) -> i64 {
    let iov = one_iov(buf, len);
    send_iov(fd, &iov, flags, addr, alen, None)
}

/// `src`: the source address a sendmsg's IP_PKTINFO chose (UDP).
fn send_iov(fd: i32, iov: Iov<'_>, flags: i32, addr: i64, alen: usize, src: Option<IpAddr>) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match s.kind {
        Kind::TcpStream(_) => {
            drop(e);
            tcp_send(fd, iov, flags)
        }
        Kind::Udp(h) => match udp_dst(&e, Some(h), addr, alen) {
            Ok(dst) => udp_send(&mut e, h, iov, dst, src),
            Err(r) => r,
        },
        Kind::UdpFresh if addr != 0 => {
            // First datagram to a fast-path destination binds the socket to our address.
            match udp_dst(&e, None, addr, alen) {
                Ok(Some(_)) => {
                    drop(e);
                    if super::calls::udp_autobind(fd).is_err() {
                        return PASSTHROUGH;
                    }
                    send_iov(fd, iov, flags, addr, alen, src)
                }
                _ => PASSTHROUGH,
            }
        }
        _ => PASSTHROUGH,
    }
}

pub fn readv(fd: i32, iov: i64, n: usize) -> i64 {
    // SAFETY: the app passed (iov, n) to readv(2).
    let iov = match unsafe { appmem::iovecs(iov, n) } {
        Ok(v) => v,
        Err(x) => return err(x),
    };
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    drop(e);
    match s.kind {
        Kind::TcpStream(_) => tcp_recv(fd, iov, 0),
        Kind::Udp(h) => match udp_recv(fd, h, s.nonblocking, s.rcvtimeo, iov, 0, (0, 0)) {
            Ok(d) => d.len as i64,
            Err(x) => err(x),
        },
        _ => PASSTHROUGH,
    }
}

pub fn writev(fd: i32, iov: i64, n: usize) -> i64 {
    // SAFETY: the app passed (iov, n) to writev(2).
    let iov = match unsafe { appmem::iovecs(iov, n) } {
        Ok(v) => v,
        Err(x) => return err(x),
    };
    send_iov(fd, iov, 0, 0, 0, None)
}

pub fn recvmsg(fd: i32, msg: i64, flags: i32) -> i64 {
    // SAFETY: the app passed a msghdr to recvmsg(2).
    let mut hdr: libc::msghdr = match unsafe { appmem::read(msg) } {
        Ok(h) => h,
        Err(x) => return err(x),
    };
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    if flags & libc::MSG_ERRQUEUE != 0 {
        // The fast path queues no errors: the shadow's (empty) error queue answers.
        return PASSTHROUGH;
    }
    let (ifindex, iface_addr) = (e.dev.ifindex as i32, IpAddr::V4(e.dev.addr));
    drop(e);
    // SAFETY: the iovecs the app's msghdr names.
    let iov = match unsafe { appmem::iovecs(hdr.msg_iov as i64, hdr.msg_iovlen) } {
        Ok(v) => v,
        Err(x) => return err(x),
    };
    let r = match s.kind {
        Kind::TcpStream(_) => {
            let r = tcp_recv(fd, iov, flags);
            hdr.msg_namelen = 0;
            hdr.msg_flags = 0;
            hdr.msg_controllen = 0;
            r
        }
        Kind::Udp(h) => {
            let control = (hdr.msg_control as i64, hdr.msg_controllen);
            let d = match udp_recv(fd, h, s.nonblocking, s.rcvtimeo, iov, flags, control) {
                Ok(d) => d,
                Err(x) => return err(x),
            };
            hdr.msg_flags = if d.full > d.len { libc::MSG_TRUNC } else { 0 };
            if let (Some(f), false) = (d.from, hdr.msg_name.is_null()) {
                let mut len = hdr.msg_namelen;
                // SAFETY: msg_name/msg_namelen are the app's, for this call.
                let r = unsafe {
                    appmem::write_sockaddr(
                        hdr.msg_name as i64,
                        &mut len as *mut u32 as i64,
                        f,
                        s.v6,
                    )
                };
                if let Err(x) = r {
                    return err(x);
                }
                hdr.msg_namelen = len;
            }
            match d.origin {
                Origin::Kernel { controllen, flags } => {
                    hdr.msg_controllen = controllen;
                    hdr.msg_flags |= flags & libc::MSG_CTRUNC;
                }
                Origin::Stack(info) if s.recv_cmsgs.any() => {
                    let from_host = d
                        .from
                        .is_some_and(|f| f.ip().is_loopback() || f.ip() == iface_addr);
                    // Traffic from this host arrives on lo, as Linux reports it.
                    let to = info.to;
                    let at = cmsg::Arrival {
                        ifindex: if from_host || to.ip().is_loopback() {
                            LOOPBACK_IFINDEX
                        } else {
                            ifindex
                        },
                        spec_dst: cmsg::spec_dst(
                            to,
                            to.ip().is_loopback() || to.ip() == iface_addr,
                            iface_addr,
                        ),
                    };
                    let mut w = cmsg::CmsgWriter::new(control.0, control.1);
                    if let Err(x) = cmsg::write_recv(&mut w, s.recv_cmsgs, &info, &at) {
                        return err(x);
                    }
                    hdr.msg_controllen = w.used;
                    if w.truncated {
                        hdr.msg_flags |= libc::MSG_CTRUNC;
                    }
                }
                Origin::Stack(_) => hdr.msg_controllen = 0,
            }
            if flags & libc::MSG_TRUNC != 0 {
                d.full as i64
            } else {
                d.len as i64
            }
        }
        _ => return PASSTHROUGH,
    };
    if r >= 0 {
        // SAFETY: writing back the app's own msghdr.
        if let Err(x) = unsafe { appmem::write(msg, hdr) } {
            return err(x);
        }
    }
    r
}

/// The loopback device's index in every network namespace.
const LOOPBACK_IFINDEX: i32 = 1;

pub fn sendmsg(fd: i32, msg: i64, flags: i32) -> i64 {
    // SAFETY: the app passed a msghdr to sendmsg(2).
    let hdr: libc::msghdr = match unsafe { appmem::read(msg) } {
        Ok(h) => h,
        Err(x) => return err(x),
    };
    // SAFETY: the iovecs the app's msghdr names.
    let iov = match unsafe { appmem::iovecs(hdr.msg_iov as i64, hdr.msg_iovlen) } {
        Ok(v) => v,
        Err(x) => return err(x),
    };
    let mut src = None;
    if hdr.msg_controllen > 0 && !hdr.msg_control.is_null() {
        let e = engine();
        let Some(s) = ours(&e, fd) else {
            return PASSTHROUGH;
        };
        if matches!(s.kind, Kind::Udp(_) | Kind::UdpFresh) {
            let c = match cmsg::parse_send(hdr.msg_control as i64, hdr.msg_controllen, s.v6) {
                Ok(c) => c,
                Err(x) => return err(x),
            };
            // A control message we do not apply, or another interface named: the
            // kernel sends this datagram from the shadow.
            if c.other || (c.ifindex != 0 && c.ifindex != e.dev.ifindex) {
                return PASSTHROUGH;
            }
            src = c.src;
        }
    }
    send_iov(
        fd,
        iov,
        flags,
        hdr.msg_name as i64,
        hdr.msg_namelen as usize,
        src,
    )
}

pub fn recvmmsg(fd: i32, msgs: i64, n: u32, flags: i32) -> i64 {
    {
        let e = engine();
        if ours(&e, fd).is_none_or(|s| !matches!(s.kind, Kind::Udp(_) | Kind::TcpStream(_))) {
            return PASSTHROUGH;
        }
    }
    let size = std::mem::size_of::<libc::mmsghdr>() as i64;
    let mut done = 0u32;
    while done < n {
        let m = msgs + done as i64 * size;
        // Only the first message may block (with MSG_WAITFORONE; without it Linux
        // blocks for each, which no caller we serve relies on).
        let f = if done == 0 {
            flags & !libc::MSG_WAITFORONE
        } else {
            flags | libc::MSG_DONTWAIT
        };
        let r = recvmsg(fd, m, f);
        if r < 0 {
            if done == 0 {
                return r;
            }
            break;
        }
        // SAFETY: msg_len of the app's mmsghdr (after the msghdr).
        let len_at = m + std::mem::size_of::<libc::msghdr>() as i64;
        if let Err(x) = unsafe { appmem::write::<u32>(len_at, r as u32) } {
            return err(x);
        }
        done += 1;
    }
    done as i64
}

pub fn sendmmsg(fd: i32, msgs: i64, n: u32, flags: i32) -> i64 {
    {
        let e = engine();
        if ours(&e, fd).is_none_or(|s| !matches!(s.kind, Kind::Udp(_) | Kind::TcpStream(_))) {
            return PASSTHROUGH;
        }
    }
    let size = std::mem::size_of::<libc::mmsghdr>() as i64;
    let mut done = 0u32;
    while done < n.min(libc::UIO_MAXIOV as u32) {
        let m = msgs + done as i64 * size;
        let r = sendmsg(fd, m, flags);
        if r == PASSTHROUGH {
            // SAFETY: the app's own arguments, forwarded for this one message.
            let r =
                unsafe { kernel::raw(libc::SYS_sendmsg, [fd as i64, m, flags as i64, 0, 0, 0]) };
            if r < 0 {
                return if done == 0 { r } else { done as i64 };
            }
            // SAFETY: msg_len of the app's mmsghdr.
            let _ = unsafe {
                appmem::write::<u32>(m + std::mem::size_of::<libc::msghdr>() as i64, r as u32)
            };
        } else if r < 0 {
            return if done == 0 { r } else { done as i64 };
        } else {
            // SAFETY: msg_len of the app's mmsghdr.
            if let Err(x) = unsafe {
                appmem::write::<u32>(m + std::mem::size_of::<libc::msghdr>() as i64, r as u32)
            } {
                return err(x);
            }
        }
        done += 1;
    }
    done as i64
}

/// sendfile from a file to a fast-path TCP socket: read in chunks, send each.
pub fn sendfile(out_fd: i32, in_fd: i32, offp: i64, count: usize) -> i64 {
    if !rewriter::filter::is_fd_marked(out_fd) {
        if !rewriter::filter::is_fd_marked(in_fd) {
            return PASSTHROUGH;
        }
        return super::splice::sendfile_to_pipe(out_fd, in_fd, offp, count);
    }
    let (h, nonblocking) = {
        let e = engine();
        match ours(&e, out_fd) {
            Some(s) => match s.kind {
                Kind::TcpStream(h) => (h, s.nonblocking),
                _ => return PASSTHROUGH,
            },
            _ => return PASSTHROUGH,
        }
    };
    // Linux reads in_fd through the page cache: a socket or a pipe cannot be read
    // with an offset (ESPIPE), nor without one (EINVAL: not seekable).
    if let Ok(libc::S_IFSOCK | libc::S_IFIFO) = kernel::file_type(in_fd) {
        return err(if offp != 0 {
            libc::ESPIPE
        } else {
            libc::EINVAL
        });
    }
    thread_local! {
        static CHUNK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let mut off: Option<i64> = if offp == 0 {
        None
    } else {
        // SAFETY: the app passed an off_t pointer to sendfile(2).
        match unsafe { appmem::read::<i64>(offp) } {
            Ok(o) => Some(o),
            Err(x) => return err(x),
        }
    };
    let mut total = 0usize;
    let r = CHUNK.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < 256 * 1024 {
            c.resize(256 * 1024, 0);
        }
        while total < count {
            let mut want = (count - total).min(c.len());
            if nonblocking {
                // No more than the send buffer takes now (at least a byte, so the
                // file's end or error still answers first): the rest would be read
                // again by the next call.
                let room = engine().iface.tcp.send_room(h).unwrap_or(0);
                if room == 0 && total > 0 {
                    break;
                }
                want = want.min(room.max(1));
            }
            let n = match off {
                Some(o) => kernel::pread(in_fd, &mut c[..want], o),
                None => kernel::read(in_fd, &mut c[..want]),
            };
            let n = match n {
                Ok(0) => break,
                Ok(n) => n,
                Err(x) => return if total > 0 { Ok(()) } else { Err(x) },
            };
            let iov = one_iov(c.as_ptr() as i64, n);
            let sent = tcp_send(out_fd, &iov, libc::MSG_NOSIGNAL);
            if sent < 0 {
                if off.is_none() {
                    // Put the unread part back for the next call.
                    let _ = kernel_lseek(in_fd, -(n as i64));
                }
                return if total > 0 {
                    Ok(())
                } else {
                    Err((-sent) as i32)
                };
            }
            let sent = sent as usize;
            total += sent;
            if let Some(o) = off.as_mut() {
                *o += sent as i64;
            } else if sent < n {
                let _ = kernel_lseek(in_fd, sent as i64 - n as i64);
            }
            if sent < n {
                break;
            }
        }
        Ok(())
    });
    if let (Some(o), true) = (off, offp != 0) {
        // SAFETY: the app's off_t pointer, written back as sendfile(2) does.
        let _ = unsafe { appmem::write::<i64>(offp, o) };
    }
    match r {
        Ok(()) => total as i64,
        Err(libc::EPIPE) => {
            kernel::raise(libc::SIGPIPE);
            err(libc::EPIPE)
        }
        Err(x) => err(x),
    }
}

fn kernel_lseek(fd: i32, delta: i64) -> i64 {
    // SAFETY: lseek on the app's own file, relative to its current offset.
    unsafe {
        kernel::raw(
            libc::SYS_lseek,
            [fd as i64, delta, libc::SEEK_CUR as i64, 0, 0, 0],
        )
    }
}

pub fn shutdown(fd: i32, how: i32) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    let Kind::TcpStream(h) = s.kind else {
        return PASSTHROUGH;
    };
    let how = match how {
        libc::SHUT_RD => Shutdown::Read,
        libc::SHUT_WR => Shutdown::Write,
        libc::SHUT_RDWR => Shutdown::Both,
        _ => return err(libc::EINVAL),
    };
    let r = match e.iface.tcp.shutdown(h, how) {
        Ok(()) => 0,
        Err(x) => stack_err(x),
    };
    e.drive();
    r
}
