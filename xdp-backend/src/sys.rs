//! Raw system-call wrappers: the only place in this crate that calls into libc for
//! bpf(2), mmap(2), poll(2) and socket options. Everything returns `io::Result`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// bpf(2) commands we use.
pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_MAP_GET_NEXT_KEY: u32 = 4;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_PROG_TEST_RUN: u32 = 10;
pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
pub const BPF_LINK_CREATE: u32 = 28;

/// Calls bpf(2) with a zero-padded attribute block. Returns the (non-negative) result.
pub fn bpf(cmd: u32, attr: &mut [u8; 128]) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable 128-byte buffer (the kernel reads at most
    // `size` bytes and zero-checks what it does not know); pointers inside it were
    // written by our callers and point to live buffers for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.as_mut_ptr(),
            attr.len() as libc::c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// bpf(2) for a command that returns a new fd (map, program, link).
pub fn bpf_fd(cmd: u32, attr: &mut [u8; 128]) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)? as RawFd;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // bpf fds are created close-on-exec; setting it again costs nothing and makes it
    // hold on every kernel.
    set_cloexec(fd.as_raw_fd())?;
    Ok(above_floor(fd))
}

/// The lowest number the fds this crate keeps get (0: wherever the kernel puts them).
/// A library that lives in an application's process (the shim) sets it, so that its
/// fds stay out of the numbers the application expects its own opens to get.
static FD_FLOOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Sets the floor of [`above_floor`] (see `FD_FLOOR`).
pub fn set_fd_floor(floor: i32) {
    FD_FLOOR.store(floor, std::sync::atomic::Ordering::Relaxed);
}

/// `fd` renumbered (close-on-exec) at the lowest free number at or above the floor;
/// as it is without a floor, when it is there already, or when no number is free.
pub fn above_floor(fd: OwnedFd) -> OwnedFd {
    let floor = FD_FLOOR.load(std::sync::atomic::Ordering::Relaxed);
    if floor <= 0 || fd.as_raw_fd() >= floor {
        return fd;
    }
    // SAFETY: fcntl on an fd we own; no memory is passed.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if high < 0 {
        return fd;
    }
    // SAFETY: fcntl returned a new fd that only we own (the old one closes on drop).
    unsafe { OwnedFd::from_raw_fd(high) }
}

/// Writes little-endian fields into a bpf attribute block.
pub fn put_u32(attr: &mut [u8], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

pub fn put_u64(attr: &mut [u8], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Marks an fd close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory-safety preconditions.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when the fd has FD_CLOEXEC set.
pub fn is_cloexec(fd: RawFd) -> io::Result<bool> {
    // SAFETY: fcntl on an fd number has no memory-safety preconditions.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// An anonymous MAP_SHARED mapping: inherited (not copied) across fork, so a child
/// sees the same UMEM frames the kernel writes into.
pub struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; access discipline is the owner's business.
unsafe impl Send for SharedMapping {}

impl SharedMapping {
    pub fn new(len: usize) -> io::Result<SharedMapping> {
        // SAFETY: anonymous mapping, no address hint: no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMapping {
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `new` and unmap it once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// poll(2) on one fd; returns the revents (0 on timeout).
pub fn poll_one(fd: RawFd, events: i16, timeout_ms: i32) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd on our stack.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(p.revents)
}

/// The empty `sendto` that makes the kernel process an XSK's TX ring (copy mode and
/// need_wakeup). Returns the errno on failure (EAGAIN/EBUSY/ENOBUFS are expected).
pub fn xsk_kick_tx(fd: RawFd) -> Result<(), i32> {
    // SAFETY: a zero-length send with null buffers is the documented XSK TX kick.
    let r = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// The empty `recvfrom` that wakes the driver to refill from the fill ring.
pub fn xsk_kick_rx(fd: RawFd) {
    // SAFETY: a zero-length receive with null buffers is the documented XSK RX kick.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// Sets an integer socket option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives on our stack for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets a socket option from raw bytes.
pub fn setsockopt_bytes(fd: RawFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a live buffer of the given length for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads a socket option into `out`; returns the length the kernel wrote.
pub fn getsockopt_bytes(fd: RawFd, level: i32, name: i32, out: &mut [u8]) -> io::Result<usize> {
    let mut len = out.len() as libc::socklen_t;
    // SAFETY: `out` is writable for `len` bytes; the kernel writes at most that.
    let r = unsafe { libc::getsockopt(fd, level, name, out.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(len as usize)
    }
}

/// A MAP_SHARED mapping of `len` bytes of fd at byte offset `offset` (AF_XDP rings).
pub fn mmap_fd(fd: RawFd, len: usize, offset: i64) -> io::Result<NonNull<u8>> {
    // SAFETY: a new mapping without an address hint touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned null"))
}

/// A close-on-exec duplicate of `fd`.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    let floor = FD_FLOOR.load(std::sync::atomic::Ordering::Relaxed).max(0);
    // SAFETY: fcntl on an fd number has no memory-safety preconditions.
    let mut new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
    if new < 0 && floor > 0 {
        // No free number above the floor (EMFILE) or the floor above the limit
        // (EINVAL): anywhere will do.
        // SAFETY: as above.
        new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    }
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A new AF_XDP socket, close-on-exec.
pub fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; checked before use.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) returned a new fd that only we own.
    Ok(above_floor(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// bind(2) of an AF_XDP socket (`struct sockaddr_xdp`).
pub fn xsk_bind(
    fd: RawFd,
    ifindex: u32,
    queue: u32,
    flags: u16,
    shared_umem_fd: u32,
) -> io::Result<()> {
    let mut sa = [0u8; 16];
    sa[0..2].copy_from_slice(&(libc::AF_XDP as u16).to_ne_bytes());
    sa[2..4].copy_from_slice(&flags.to_ne_bytes());
    sa[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    sa[8..12].copy_from_slice(&queue.to_ne_bytes());
    sa[12..16].copy_from_slice(&shared_umem_fd.to_ne_bytes());
    // SAFETY: `sa` is a complete sockaddr_xdp that lives for the call.
    let r = unsafe { libc::bind(fd, sa.as_ptr().cast(), sa.len() as libc::socklen_t) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// True while process `pid` runs: false once it is gone or a zombie (killed, not
/// reaped yet: its memory and fds are gone, and its parent may be the very thread
/// asking). Allocates nothing (it runs on the hook path's slow path).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 checks existence and permission only.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // "/proc/<pid>/stat": "pid (comm) S ..."; the state follows the last ')'.
    let mut path = [0u8; 32];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut v = pid;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    for &b in b"/stat" {
        path[n] = b;
        n += 1;
    }
    // SAFETY: `path` is NUL-terminated (zero-initialised, n < 32).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return true; // no /proc: trust kill(2)
    }
    let mut buf = [0u8; 512];
    // SAFETY: reading into our stack buffer; the fd is ours and closed right after.
    let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if len <= 0 {
        return false; // the process went away between the calls
    }
    let text = &buf[..len as usize];
    match text.iter().rposition(|&b| b == b')') {
        Some(i) => !matches!(text.get(i + 2), Some(b'Z') | Some(b'X')),
        None => true,
    }
}

/// The calling process's id, read from the kernel (not a value copied across fork).
pub fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// if_nametoindex(3) in the calling thread's network namespace.
pub fn if_nametoindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(idx)
}

/// Number of possible CPUs (per-CPU map values have one slot each).
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim())
        .ok_or_else(|| io::Error::other(format!("cannot parse cpu list {text:?}")))
}

/// Parses "0-3,5,7-8" into the count of the highest CPU + 1.
pub fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        max = Some(max.map_or(n, |m: usize| m.max(n)));
    }
    max.map(|m| m + 1)
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// One SIOCETHTOOL ioctl on `ifname` in this network namespace; `data` starts with the
/// ethtool command number and is filled in place with the command's struct.
pub fn ethtool(ifname: &str, data: &mut [u8]) -> io::Result<()> {
    // SAFETY: an ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data.as_mut_ptr() as *mut libc::c_char;
    // SAFETY: plain socket(2) call; checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) returned a new fd that only we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the ifreq and writes the command's struct into
    // `data`, which callers size for that command and which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(9));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn shared_mapping_is_shared_across_fork() {
        let m = SharedMapping::new(4096).unwrap();
        // SAFETY: fork in a test; the child only writes to the mapping and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the mapping is 4096 bytes long.
            unsafe { *m.as_ptr() = 0x5a };
            // SAFETY: _exit in the forked child, no destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child we just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // SAFETY: the mapping is 4096 bytes long and the child has exited.
        assert_eq!(unsafe { *m.as_ptr() }, 0x5a);
    }
}
