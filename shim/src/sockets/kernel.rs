//! The kernel calls the socket layer makes, typed, over the one raw `syscall` wrapper
//! (`rewriter::sys::syscall6`): the shim's own code is never rewritten, so these go
//! straight to the kernel. Results are `Result<value, errno>`.

use rewriter::sys::syscall6;

pub type Errno = i32;

fn check(ret: i64) -> Result<i64, Errno> {
    if (-4095..0).contains(&ret) {
        Err(-ret as Errno)
    } else {
        Ok(ret)
    }
}

/// Makes any system call with the app's arguments (pass-through).
///
/// # Safety
/// The arguments are the app's own, for the call it made: the kernel validates them.
pub unsafe fn raw(nr: i64, a: [i64; 6]) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

macro_rules! sys {
    ($nr:expr $(, $a:expr)*) => {{
        let a: [i64; 6] = {
            let v = [$($a as i64,)*];
            let mut a = [0i64; 6];
            a[..v.len()].copy_from_slice(&v);
            a
        };
        // SAFETY: every caller passes pointers to live memory of the sizes the call
        // expects (see each wrapper), or plain integers.
        check(unsafe { raw($nr, a) })
    }};
}

pub fn socket(domain: i32, ty: i32, proto: i32) -> Result<i32, Errno> {
    sys!(libc::SYS_socket, domain, ty, proto).map(|f| f as i32)
}

/// The kernel's HZ as socket timeouts show it: SO_RCVTIMEO/SO_SNDTIMEO are kept in
/// jiffies, so what the app sets reads back rounded up to a tick. Asked once, of a
/// throwaway socket (a timeout of 1 µs reads back as one tick); None if it cannot be.
pub fn socket_timeout_hz() -> Option<u32> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HZ: AtomicU32 = AtomicU32::new(0); // 0: not asked yet; u32::MAX: unknown
    match HZ.load(Ordering::Relaxed) {
        0 => {}
        u32::MAX => return None,
        hz => return Some(hz),
    }
    let probe = || -> Option<u32> {
        let fd = socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0).ok()?;
        let one = libc::timeval {
            tv_sec: 0,
            tv_usec: 1,
        };
        // SAFETY: timeval is plain integers; zero is a valid value.
        let zero: libc::timeval = unsafe { std::mem::zeroed() };
        let back = setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &one)
            .and_then(|()| getsockopt_into(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, zero));
        let _ = close(fd);
        let tick = back.ok()?.tv_usec as u32;
        (tick > 0 && back.ok()?.tv_sec == 0).then(|| (1_000_000 + tick / 2) / tick)
    };
    let hz = probe();
    HZ.store(hz.unwrap_or(u32::MAX), Ordering::Relaxed);
    hz
}

pub fn sched_yield() {
    let _ = sys!(libc::SYS_sched_yield);
}

pub fn close(fd: i32) -> Result<(), Errno> {
    sys!(libc::SYS_close, fd).map(|_| ())
}

pub fn bind(fd: i32, addr: &[u8]) -> Result<(), Errno> {
    sys!(libc::SYS_bind, fd, addr.as_ptr(), addr.len()).map(|_| ())
}

pub fn listen(fd: i32, backlog: i32) -> Result<(), Errno> {
    sys!(libc::SYS_listen, fd, backlog).map(|_| ())
}

pub fn connect(fd: i32, addr: &[u8]) -> Result<(), Errno> {
    sys!(libc::SYS_connect, fd, addr.as_ptr(), addr.len()).map(|_| ())
}

/// accept4 into a local address buffer; returns (fd, address bytes used).
pub fn accept4(fd: i32, addr: &mut [u8; 128], flags: i32) -> Result<(i32, usize), Errno> {
    let mut len: u32 = addr.len() as u32;
    let r = sys!(
        libc::SYS_accept4,
        fd,
        addr.as_mut_ptr(),
        &mut len as *mut u32,
        flags
    )?;
    Ok((r as i32, len as usize))
}

pub fn getpeername(fd: i32, addr: &mut [u8; 128]) -> Result<usize, Errno> {
    let mut len: u32 = addr.len() as u32;
    sys!(
        libc::SYS_getpeername,
        fd,
        addr.as_mut_ptr(),
        &mut len as *mut u32
    )?;
    Ok(len as usize)
}

pub fn getsockname(fd: i32, addr: &mut [u8; 128]) -> Result<usize, Errno> {
    let mut len: u32 = addr.len() as u32;
    sys!(
        libc::SYS_getsockname,
        fd,
        addr.as_mut_ptr(),
        &mut len as *mut u32
    )?;
    Ok(len as usize)
}

pub fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) -> Result<(), Errno> {
    sys!(libc::SYS_setsockopt, fd, level, name, &v as *const i32, 4).map(|_| ())
}

pub fn fcntl(fd: i32, cmd: i32, arg: i64) -> Result<i64, Errno> {
    sys!(libc::SYS_fcntl, fd, cmd, arg)
}

pub fn eventfd(flags: i32) -> Result<i32, Errno> {
    sys!(libc::SYS_eventfd2, 0, flags).map(|f| f as i32)
}

/// Adds 1 to an eventfd (wakes whoever polls it).
pub fn eventfd_signal(fd: i32) {
    let one: u64 = 1;
    let _ = sys!(libc::SYS_write, fd, &one as *const u64, 8);
}

/// Resets a nonblocking eventfd to zero.
pub fn eventfd_reset(fd: i32) {
    let mut v: u64 = 0;
    let _ = sys!(libc::SYS_read, fd, &mut v as *mut u64, 8);
}

pub fn epoll_ctl(epfd: i32, op: i32, fd: i32, events: u32, data: u64) -> Result<(), Errno> {
    let mut ev = libc::epoll_event { events, u64: data };
    sys!(
        libc::SYS_epoll_ctl,
        epfd,
        op,
        fd,
        &mut ev as *mut libc::epoll_event
    )
    .map(|_| ())
}

/// poll(2) on our own array; `timeout_ms` < 0 waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, Errno> {
    let ts;
    let tsp = if timeout_ms < 0 {
        std::ptr::null()
    } else {
        ts = libc::timespec {
            tv_sec: (timeout_ms / 1000) as libc::time_t,
            tv_nsec: ((timeout_ms % 1000) as libc::c_long) * 1_000_000,
        };
        &ts as *const libc::timespec
    };
    sys!(libc::SYS_ppoll, fds.as_mut_ptr(), fds.len(), tsp, 0, 8).map(|n| n as usize)
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    sys!(libc::SYS_write, fd, buf.as_ptr(), buf.len()).map(|n| n as usize)
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    sys!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()).map(|n| n as usize)
}

pub fn pread(fd: i32, buf: &mut [u8], off: i64) -> Result<usize, Errno> {
    sys!(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), off).map(|n| n as usize)
}

/// The file type bits of `fd` (`st_mode & S_IFMT`).
pub fn file_type(fd: i32) -> Result<u32, Errno> {
    // SAFETY: all-zero is a valid `stat` for the kernel to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys!(libc::SYS_fstat, fd, &mut st as *mut libc::stat)?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// A pipe of the shim's own (`O_NONBLOCK | O_CLOEXEC`): `[read end, write end]`.
pub fn pipe_nonblocking() -> Result<[i32; 2], Errno> {
    let mut fds = [-1i32; 2];
    sys!(
        libc::SYS_pipe2,
        fds.as_mut_ptr(),
        libc::O_NONBLOCK | libc::O_CLOEXEC
    )?;
    Ok(fds)
}

/// splice(2) between two pipes (no offsets): moves up to `len` bytes.
pub fn splice_pipes(from: i32, to: i32, len: usize, flags: u32) -> Result<usize, Errno> {
    sys!(libc::SYS_splice, from, 0, to, 0, len, flags).map(|n| n as usize)
}

pub fn gettid() -> i32 {
    sys!(libc::SYS_gettid).unwrap_or(0) as i32
}

pub fn getpid() -> i32 {
    sys!(libc::SYS_getpid).unwrap_or(0) as i32
}

pub fn getuid() -> u32 {
    sys!(libc::SYS_getuid).unwrap_or(0) as u32
}

/// Raises `sig` on the calling thread (SIGPIPE on a write to a closed connection).
pub fn raise(sig: i32) {
    let _ = sys!(libc::SYS_tgkill, getpid(), gettid(), sig);
}

/// Sends `sig` to this thread with `info` as its siginfo (rt_tgsigqueueinfo: within
/// one process the kernel keeps any si_code, so the handler sees the original sender).
pub fn raise_with_info(sig: i32, info: &libc::siginfo_t) -> Result<(), Errno> {
    sys!(
        libc::SYS_rt_tgsigqueueinfo,
        getpid(),
        gettid(),
        sig,
        info as *const libc::siginfo_t
    )
    .map(|_| ())
}

/// The shim's own fds start here, out of the app's way (apps count up from 3).
pub const HIGH_FD_FLOOR: i32 = 900;

pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { raw(libc::SYS_geteuid, [0; 6]) as u32 }
}

/// How many threads this process has (/proc/self/stat's num_threads), None when
/// /proc cannot tell.
pub fn threads_of_this_process() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces and parentheses): state is field
    // 3, num_threads field 20.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(17)?.parse().ok()
}

/// Moves `fd` to the lowest free number ≥ `floor` (close-on-exec) and closes the old
/// one: the shim's own fds live high, out of the app's way.
pub fn move_high(fd: i32, floor: i32) -> Result<i32, Errno> {
    let high = fcntl(fd, libc::F_DUPFD_CLOEXEC, floor as i64)? as i32;
    let _ = close(fd);
    Ok(high)
}

/// A close-on-exec copy of `fd` numbered ≥ [`HIGH_FD_FLOOR`].
pub fn move_high_copy(fd: i32) -> Result<i32, Errno> {
    fcntl(fd, libc::F_DUPFD_CLOEXEC, HIGH_FD_FLOOR as i64).map(|f| f as i32)
}

/// The loopback device's index, the same in every network namespace (Linux's
/// `LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: i32 = 1;

/// A packet socket (close-on-exec, non-blocking, numbered high) that hands IPv4
/// packets to the kernel's receive path (`to_kernel_via_loopback`). Protocol 0: it
/// receives nothing (a protocol would copy every packet of the namespace to it).
pub fn loopback_packet_socket() -> Result<i32, Errno> {
    let fd = socket(
        libc::AF_PACKET,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0,
    )?;
    move_high(fd, HIGH_FD_FLOOR)
}

/// Sends IPv4 `packet` out of the loopback device through packet socket `fd`: the
/// loopback device turns it around, so the kernel receives it as if it had come from
/// the wire (routed by its destination; dropped if reverse-path filtering is on).
pub fn to_kernel_via_loopback(fd: i32, packet: &[u8]) -> Result<usize, Errno> {
    // SAFETY: sockaddr_ll is plain integers; zero is a valid value of each.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = LOOPBACK_IFINDEX;
    sys!(
        libc::SYS_sendto,
        fd,
        packet.as_ptr(),
        packet.len(),
        libc::MSG_DONTWAIT,
        &to as *const libc::sockaddr_ll,
        std::mem::size_of::<libc::sockaddr_ll>()
    )
    .map(|n| n as usize)
}

/// A socket timeout as `struct timeval` (None, "no timeout", is zero).
pub fn timeval_of(d: Option<std::time::Duration>) -> libc::timeval {
    let d = d.unwrap_or_default();
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

/// Bounds how long a blocking send on `fd` waits (SO_SNDTIMEO).
pub fn set_send_timeout(fd: i32, ms: i64) -> Result<(), Errno> {
    let tv = libc::timeval {
        tv_sec: ms / 1000,
        tv_usec: (ms % 1000) * 1000,
    };
    sys!(
        libc::SYS_setsockopt,
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        &tv as *const libc::timeval,
        std::mem::size_of::<libc::timeval>()
    )
    .map(|_| ())
}

/// send(2) that never blocks and never raises SIGPIPE (a peer that went away is EPIPE).
pub fn send_now(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    sys!(libc::SYS_sendto, fd, buf.as_ptr(), buf.len(), flags, 0, 0).map(|n| n as usize)
}

/// recv(2) that never blocks; `peek` leaves the bytes queued (MSG_PEEK).
pub fn recv_now(fd: i32, buf: &mut [u8], peek: bool) -> Result<usize, Errno> {
    let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
    sys!(
        libc::SYS_recvfrom,
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        flags,
        0,
        0
    )
    .map(|n| n as usize)
}

pub fn shutdown(fd: i32, how: i32) -> Result<(), Errno> {
    sys!(libc::SYS_shutdown, fd, how).map(|_| ())
}

/// A connected pair of Unix stream sockets (close-on-exec).
pub fn socketpair_unix() -> Result<[i32; 2], Errno> {
    let mut fds = [-1i32; 2];
    sys!(
        libc::SYS_socketpair,
        libc::AF_UNIX,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        0,
        fds.as_mut_ptr()
    )?;
    Ok(fds)
}

/// dup3(2): `new` refers to `old`'s file from now on (`flags`: 0 or O_CLOEXEC).
pub fn dup3(old: i32, new: i32, flags: i32) -> Result<i32, Errno> {
    sys!(libc::SYS_dup3, old, new, flags).map(|f| f as i32)
}

/// An anonymous memory file (close-on-exec).
pub fn memfd(name: &std::ffi::CStr) -> Result<i32, Errno> {
    sys!(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC).map(|f| f as i32)
}

/// Sends one datagram to `addr` (a sockaddr's bytes) with `fds` attached (SCM_RIGHTS).
///
/// Nonblocking unless `wait` (then the socket's send timeout bounds the wait).
pub fn send_with_fds(
    sock: i32,
    addr: &[u8],
    data: &[u8],
    fds: &[i32],
    wait: bool,
) -> Result<usize, Errno> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for up to 4 fds: the control message is built in place below.
    let mut cbuf = [0u64; 8];
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: msghdr is plain data; the fields set below are all the kernel reads.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        if fds.len() > 4 {
            return Err(libc::EINVAL);
        }
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points to `space` <= 64 writable, aligned bytes, so the
        // first header and its data fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(c), fd_bytes);
        }
    }
    sys!(
        libc::SYS_sendmsg,
        sock,
        &msg as *const libc::msghdr,
        if wait { 0 } else { libc::MSG_DONTWAIT } | libc::MSG_NOSIGNAL
    )
    .map(|n| n as usize)
}

/// Receives one datagram (nonblocking) and up to 4 fds passed with it (made
/// close-on-exec); returns (bytes, fds received).
pub fn recv_with_fds(
    sock: i32,
    buf: &mut [u8],
    fds: &mut [i32; 4],
) -> Result<(usize, usize), Errno> {
    let mut got = 0;
    let (n, _) = recv_msg(
        sock,
        buf,
        None,
        libc::MSG_CMSG_CLOEXEC,
        |level, kind, data| {
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                for raw in data.chunks_exact(4) {
                    let fd = i32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
                    if got < fds.len() {
                        fds[got] = fd;
                        got += 1;
                    } else {
                        let _ = close(fd);
                    }
                }
            }
        },
    )?;
    Ok((n, got))
}

/// recvmsg(2) of one datagram, never blocking, with room for 64 bytes of control
/// messages, each handed to `cmsg(level, type, data)`; `from` gets the sender's
/// address. Returns (bytes, address bytes used in `from`).
fn recv_msg(
    sock: i32,
    buf: &mut [u8],
    from: Option<&mut [u8; 128]>,
    flags: i32,
    mut cmsg: impl FnMut(i32, i32, &[u8]),
) -> Result<(usize, usize), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; the fields set below are all the kernel reads.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(from) = from {
        msg.msg_name = from.as_mut_ptr() as *mut libc::c_void;
        msg.msg_namelen = from.len() as u32;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = sys!(
        libc::SYS_recvmsg,
        sock,
        &mut msg as *mut libc::msghdr,
        libc::MSG_DONTWAIT | flags
    )? as usize;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the
    // CMSG_* walkers stay inside it, and each message's data ends at its cmsg_len.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let len = (*c).cmsg_len - (data as usize - c as usize);
            cmsg(
                (*c).cmsg_level,
                (*c).cmsg_type,
                std::slice::from_raw_parts(data, len),
            );
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, msg.msg_namelen as usize))
}

/// setsockopt(2) with a value of any plain type (`T` is what the option expects).
pub fn setsockopt<T: Copy>(fd: i32, level: i32, name: i32, v: &T) -> Result<(), Errno> {
    sys!(
        libc::SYS_setsockopt,
        fd,
        level,
        name,
        v as *const T,
        std::mem::size_of::<T>()
    )
    .map(|_| ())
}

/// getsockopt(2) into a value of a plain type; Err(EINVAL) when the kernel answers
/// with a size other than `T`'s.
pub fn getsockopt<T: Copy + Default>(fd: i32, level: i32, name: i32) -> Result<T, Errno> {
    getsockopt_into(fd, level, name, T::default())
}

/// `getsockopt` starting from `v` (for types without `Default`, e.g. zeroed C structs).
pub fn getsockopt_into<T: Copy>(fd: i32, level: i32, name: i32, mut v: T) -> Result<T, Errno> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    sys!(
        libc::SYS_getsockopt,
        fd,
        level,
        name,
        &mut v as *mut T,
        &mut len as *mut libc::socklen_t
    )?;
    if len as usize != std::mem::size_of::<T>() {
        return Err(libc::EINVAL);
    }
    Ok(v)
}

/// ioctl(2) with an int result (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: i32, request: u64) -> Result<i32, Errno> {
    let mut v: i32 = 0;
    sys!(libc::SYS_ioctl, fd, request, &mut v as *mut i32)?;
    Ok(v)
}

/// Writes all of `buf` to a blocking socket (send(2) until done; never SIGPIPE).
pub fn send_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match sys!(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            0,
            0
        ) {
            Ok(n) => buf = &buf[n as usize..],
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One datagram from a Unix socket with SO_PASSCRED set, never blocking: (bytes,
/// sender address bytes used in `from`, the sender's uid as the kernel vouches for it).
pub fn recv_with_creds(
    fd: i32,
    buf: &mut [u8],
    from: &mut [u8; 128],
) -> Result<(usize, usize, Option<u32>), Errno> {
    let mut uid = None;
    let (n, len) = recv_msg(fd, buf, Some(from), 0, |level, kind, data| {
        if level == libc::SOL_SOCKET
            && kind == libc::SCM_CREDENTIALS
            && data.len() >= std::mem::size_of::<libc::ucred>()
        {
            // struct ucred { pid, uid, gid }
            uid = Some(u32::from_ne_bytes([data[4], data[5], data[6], data[7]]));
        }
    })?;
    Ok((n, len.min(128), uid))
}

/// sendto(2) a datagram to `addr` (a sockaddr's bytes), never blocking.
pub fn send_to(fd: i32, buf: &[u8], addr: &[u8]) -> Result<usize, Errno> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    sys!(
        libc::SYS_sendto,
        fd,
        buf.as_ptr(),
        buf.len(),
        flags,
        addr.as_ptr(),
        addr.len()
    )
    .map(|n| n as usize)
}

/// Whether the kernel has a TCP connection (any state but LISTEN; TIME-WAIT counts)
/// for this 4-tuple in this network namespace: one exact NETLINK_SOCK_DIAG lookup.
pub fn tcp_connection_exists(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> Result<bool, Errno> {
    /// `struct nlmsghdr` + `struct inet_diag_req_v2`.
    #[repr(C)]
    struct Request {
        nlh: libc::nlmsghdr,
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        sport: [u8; 2],
        dport: [u8; 2],
        src: [u8; 16],
        dst: [u8; 16],
        ifindex: u32,
        cookie: [u32; 2],
    }
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const TCP_LISTEN: u8 = 10;
    let mut req = Request {
        nlh: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: if local.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        },
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: u32::MAX,
        sport: local.port().to_be_bytes(),
        dport: remote.port().to_be_bytes(),
        src: [0; 16],
        dst: [0; 16],
        ifindex: 0,
        // INET_DIAG_NOCOOKIE
        cookie: [u32::MAX; 2],
    };
    for (out, ip) in [(&mut req.src, local.ip()), (&mut req.dst, remote.ip())] {
        match ip {
            std::net::IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
        }
    }
    let fd = socket(
        libc::AF_NETLINK,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        libc::NETLINK_SOCK_DIAG,
    )?;
    let sent = sys!(
        libc::SYS_sendto,
        fd,
        &req as *const Request,
        std::mem::size_of::<Request>(),
        0,
        0,
        0
    );
    let mut buf = [0u8; 512];
    let got = sent.and_then(|_| sys!(libc::SYS_recvfrom, fd, buf.as_mut_ptr(), buf.len(), 0, 0, 0));
    let _ = close(fd);
    let n = got? as usize;
    let hdr = std::mem::size_of::<libc::nlmsghdr>();
    if n < hdr + 4 {
        return Err(libc::EIO);
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == SOCK_DIAG_BY_FAMILY {
        // inet_diag_msg: family, state, ...
        return Ok(buf[hdr + 1] != TCP_LISTEN);
    }
    if kind == libc::NLMSG_ERROR as u16 {
        let code = i32::from_ne_bytes([buf[hdr], buf[hdr + 1], buf[hdr + 2], buf[hdr + 3]]);
        return match -code {
            libc::ENOENT => Ok(false),
            e => Err(e),
        };
    }
    Err(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};

    #[test]
    fn sock_diag_finds_a_connection_and_not_a_listener_or_a_stranger() {
        // Both families: an IPv4 and an IPv6 loopback connection.
        for (any, lo) in [
            ("127.0.0.1:0", IpAddr::from(Ipv4Addr::LOCALHOST)),
            ("[::1]:0", IpAddr::from(Ipv6Addr::LOCALHOST)),
        ] {
            let l = TcpListener::bind(any).unwrap();
            let server = l.local_addr().unwrap();
            let c = TcpStream::connect(server).unwrap();
            let client = c.local_addr().unwrap();
            let (_accepted, _) = l.accept().unwrap();
            assert_eq!(tcp_connection_exists(client, server), Ok(true));
            assert_eq!(tcp_connection_exists(server, client), Ok(true));
            // Only the listener matches this one: not a connection.
            let stranger = SocketAddr::new(lo, 9);
            assert_eq!(tcp_connection_exists(server, stranger), Ok(false));
            assert_eq!(
                tcp_connection_exists(SocketAddr::new(lo, 1), stranger),
                Ok(false)
            );
        }
    }
}
