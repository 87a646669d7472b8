//! A TAP device as a stack backend: the kernel on one side, the stack on the other.
//!
//! Frames the kernel sends out of the TAP interface are read from the fd and handed to
//! `Interface::receive`; frames the stack transmits are written to the fd and the kernel
//! receives them as if from a wire. Used for interop tests against the kernel's own
//! TCP/UDP/ICMP inside a network namespace, and by other suites that want a stack
//! without AF_XDP. Non-blocking: `recv` returns `None` when nothing is waiting.
//!
//! The few raw calls (open, ioctl, read, write, poll, setns) live in this module,
//! each `unsafe` block with its reason.

use stack::device::{ChecksumOffload, Device, DeviceCaps};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// _IOW('T', 202, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Counters of one TAP device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames refused because the fd was not writable (the stack retries them).
    pub tx_busy: u64,
    /// Frames lost to a write error after the stack had built them.
    pub tx_errors: u64,
}

/// An open TAP device (IFF_TAP | IFF_NO_PI: plain Ethernet frames, no extra header).
#[derive(Debug)]
pub struct TapDevice {
    fd: OwnedFd,
    name: String,
    mtu: usize,
    tx_buf: Vec<u8>,
    pub stats: TapStats,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TapDevice {
    /// Creates TAP interface `name` (or attaches to an existing one) in the calling
    /// thread's network namespace. `mtu` is the IP MTU the stack will use; set the
    /// interface's own MTU to match (`ip link set <name> mtu <mtu>`).
    pub fn open(name: &str, mtu: usize) -> io::Result<TapDevice> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let path = CString::new("/dev/net/tun").expect("no NUL");
        // SAFETY: path is a valid NUL-terminated string; open has no other preconditions.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a freshly opened fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads (and writes back the name into) a struct ifreq, which
        // IfReq matches in layout and size (40 bytes); it lives across the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = req.name.iter().position(|&c| c == 0).unwrap_or(0);
        let name = req.name[..end].iter().map(|&c| c as u8 as char).collect();
        Ok(TapDevice {
            fd,
            name,
            mtu,
            tx_buf: Vec::with_capacity(mtu + 18),
            stats: TapStats::default(),
        })
    }

    /// Like [`TapDevice::open`], inside the named network namespace (`ip netns`
    /// name). A short-lived helper thread enters the namespace, so the caller's own
    /// namespace is unchanged; the device stays in `netns` and its fd works anywhere.
    pub fn open_in_netns(netns: &str, name: &str, mtu: usize) -> io::Result<TapDevice> {
        let (netns, name) = (netns.to_string(), name.to_string());
        std::thread::spawn(move || {
            enter_netns(&netns)?;
            TapDevice::open(&name, mtu)
        })
        .join()
        .map_err(|_| io::Error::other("tap open thread panicked"))?
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame into `buf`; `None` when none is waiting. A frame longer than
    /// `buf` is truncated by the kernel.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for writes of buf.len() bytes for the whole call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::EINTR) {
                return Ok(None);
            }
            return Err(e);
        }
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += n as u64;
        Ok(Some(n as usize))
    }

    /// Waits until a frame can be read or `timeout` passes (None: forever).
    /// Returns whether the fd is readable.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        poll_fds(&[self.fd.as_raw_fd()], libc::POLLIN, timeout).map(|r| r[0])
    }

    fn writable_now(&self) -> bool {
        poll_fds(&[self.fd.as_raw_fd()], libc::POLLOUT, Some(Duration::ZERO))
            .map(|r| r[0])
            .unwrap_or(false)
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Device for TapDevice {
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.mtu,
            checksum: ChecksumOffload::default(),
        }
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if !self.writable_now() {
            self.stats.tx_busy += 1;
            return false;
        }
        self.tx_buf.clear();
        self.tx_buf.resize(len, 0);
        fill(&mut self.tx_buf);
        // SAFETY: tx_buf holds len initialized bytes for the whole call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), self.tx_buf.as_ptr().cast(), len) };
        if n == len as isize {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += len as u64;
        } else {
            // The frame is lost like on a wire; TCP retransmits, UDP is best effort.
            self.stats.tx_errors += 1;
        }
        true
    }
}

/// Polls `fds` for `events`; returns per fd whether any requested event (or an error)
/// is set. `timeout` None waits forever.
pub fn poll_fds(fds: &[RawFd], events: i16, timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: p is a valid array of p.len() pollfd structs for the whole call.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// Moves the calling thread into network namespace `netns` (a name under
/// /var/run/netns). Only this thread moves; use a dedicated thread.
pub fn enter_netns(netns: &str) -> io::Result<()> {
    let f = File::open(format!("/var/run/netns/{netns}"))?;
    // SAFETY: f is an open namespace fd; CLONE_NEWNET checks it names a network
    // namespace. setns affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        assert_eq!(
            TapDevice::open("", 1500).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        assert_eq!(
            TapDevice::open("a-name-that-is-too-long", 1500)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
