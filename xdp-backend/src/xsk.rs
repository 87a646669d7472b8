//! One AF_XDP socket bound to one (interface, queue): UMEM, fill/completion/RX/TX
//! rings, batched receive and transmit, and the stack's `Device` over the TX ring.
//!
//! UMEM layout: the first `rx_frames` frames circulate through the fill and RX rings,
//! the next `tx_frames` through the TX and completion rings (a free list in between).
//! The UMEM is an anonymous MAP_SHARED mapping and the rings are the kernel's shared
//! mappings, so a forked child sees the same memory.

use crate::sys::{self, SharedMapping};
use stack::device::{ChecksumOffload, Device, DeviceCaps};
use std::io;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};
use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

const SOL_XDP: i32 = 283;
/// setsockopt: frames one copy-mode sendto may send (uapi/linux/if_xdp.h).
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;
/// The kernel's copy-mode budget per kick without the option (TX_BATCH_SIZE).
const COPY_TX_BUDGET_DEFAULT: u32 = 32;
/// The budget asked for: a sender's burst in one system call. Each kick runs the
/// frames through the driver (and, on veth, the peer's receive path) one by one, so a
/// larger budget saves only the per-call cost, and keeps a call under ~1 ms.
const COPY_TX_BUDGET: u32 = 256;

/// How `wait` waits for received frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxMode {
    /// Sleep in poll(2) on the XSK fd.
    Blocking,
    /// Spin on the RX ring (with SO_BUSY_POLL set on the socket for drivers that
    /// support it): lowest latency, burns a core.
    BusyPoll,
}

/// Socket parameters. Frame counts must be powers of two.
#[derive(Clone, Debug)]
pub struct XskConfig {
    pub frame_size: u32,
    /// Frames (and fill/RX ring entries) for receive.
    pub rx_frames: u32,
    /// Frames (and TX/completion ring entries) for transmit.
    pub tx_frames: u32,
    pub rx_mode: RxMode,
    /// Skip the zero-copy attempt.
    pub force_copy: bool,
    /// How long to keep retrying a bind that fails with EBUSY (the previous socket
    /// on this queue is still being torn down).
    pub busy_retry: Duration,
    /// IP MTU reported to the stack.
    pub mtu: usize,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 4096,
            rx_frames: 2048,
            tx_frames: 2048,
            rx_mode: RxMode::Blocking,
            force_copy: false,
            busy_retry: Duration::from_secs(3),
            mtu: 1500,
        }
    }
}

/// Counters kept in user space, plus the kernel's view of the socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// `transmit` refused: no free TX frame or no TX ring slot.
    pub tx_ring_full: u64,
    /// TX kicks (sendto) issued.
    pub tx_wakeups: u64,
    /// Fill-ring kicks (recvfrom) issued.
    pub rx_wakeups: u64,
    /// RX descriptors pointing outside the UMEM (never expected).
    pub rx_invalid: u64,
    /// Kernel: frames dropped because the RX ring was full.
    pub kernel_rx_ring_full: u64,
    /// Kernel: frames dropped for any reason (includes ring full and fill empty).
    pub kernel_rx_dropped: u64,
    /// Kernel: times the fill ring was found empty.
    pub kernel_fill_ring_empty: u64,
    /// Kernel: invalid TX descriptors.
    pub kernel_tx_invalid: u64,
}

fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

/// The xdpilone objects of one bound socket; dropped before the UMEM mapping.
struct Rings {
    rx: RingRx,
    tx: RingTx,
    fcq: DeviceQueue,
    user: User,
    _umem: Umem,
    fd: RawFd,
}

/// One AF_XDP socket on one (interface, queue).
pub struct XskSocket {
    // Field order is drop order: rings (and the socket fd) before the UMEM memory.
    rings: Rings,
    area: SharedMapping,
    config: XskConfig,
    ifindex: u32,
    queue: u32,
    zero_copy: bool,
    /// TX frame addresses not in flight.
    tx_free: Vec<u64>,
    /// RX frame addresses waiting to go back to the fill ring.
    fill_pending: Vec<u64>,
    /// Frames queued on the TX ring since the last kick.
    tx_unkicked: u32,
    /// Frames one copy-mode kick sends at most (the kernel's per-sendto budget).
    tx_budget: u32,
    stats: XskStats,
}

// SAFETY: all the raw pointers inside point to mappings this value owns; it is moved
// between threads as a whole, never shared.
unsafe impl Send for XskSocket {}

impl XskSocket {
    /// Creates the UMEM and socket and binds it to `queue` of `ifindex`: zero-copy
    /// first, copy mode when the driver refuses (EOPNOTSUPP), EBUSY retried with
    /// backoff for up to `config.busy_retry`.
    pub fn bind(ifindex: u32, queue: u32, config: &XskConfig) -> io::Result<XskSocket> {
        for (what, n) in [
            ("frame_size", config.frame_size),
            ("rx_frames", config.rx_frames),
            ("tx_frames", config.tx_frames),
        ] {
            if !n.is_power_of_two() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} must be a power of two, not {n}"),
                ));
            }
        }
        // Ethernet header + one VLAN tag on top of the IP MTU must fit a frame.
        if config.mtu + 18 > config.frame_size as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "MTU {} does not fit frames of {} bytes",
                    config.mtu, config.frame_size
                ),
            ));
        }
        let total = config.frame_size as usize * (config.rx_frames + config.tx_frames) as usize;
        let area = SharedMapping::new(total)?;
        let modes: &[bool] = if config.force_copy {
            &[false]
        } else {
            &[true, false]
        };
        let mut last_err = None;
        for &zero_copy in modes {
            let deadline = Instant::now() + config.busy_retry;
            let mut backoff = Duration::from_millis(5);
            loop {
                match Self::try_bind(&area, ifindex, queue, config, zero_copy) {
                    Ok(rings) => {
                        let mut s = XskSocket {
                            rings,
                            area,
                            config: config.clone(),
                            ifindex,
                            queue,
                            zero_copy,
                            tx_free: Vec::with_capacity(config.tx_frames as usize),
                            fill_pending: Vec::with_capacity(config.rx_frames as usize),
                            tx_unkicked: 0,
                            tx_budget: COPY_TX_BUDGET_DEFAULT,
                            stats: XskStats::default(),
                        };
                        s.init_frames();
                        if !zero_copy {
                            s.tx_budget = s.raise_tx_budget();
                        }
                        if config.rx_mode == RxMode::BusyPoll {
                            // Best effort: only drivers with NAPI busy polling honour these.
                            let fd = s.rings.fd;
                            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, 69, 1); // SO_PREFER_BUSY_POLL
                            let _ =
                                sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, 20);
                            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, 70, 64);
                            // SO_BUSY_POLL_BUDGET
                        }
                        return Ok(s);
                    }
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    Err(e)
                        if zero_copy
                            && matches!(
                                e.raw_os_error(),
                                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                            ) =>
                    {
                        last_err = Some(e);
                        break; // try copy mode
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "AF_XDP bind to ifindex {ifindex} queue {queue} ({} mode): {e}",
                                if zero_copy { "zero-copy" } else { "copy" }
                            ),
                        ))
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("AF_XDP bind failed")))
    }

    fn try_bind(
        area: &SharedMapping,
        ifindex: u32,
        queue: u32,
        config: &XskConfig,
        zero_copy: bool,
    ) -> io::Result<Rings> {
        let umem_config = UmemConfig {
            fill_size: config.rx_frames,
            complete_size: config.tx_frames,
            frame_size: config.frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a page-aligned mapping of exactly the frames' size and
        // outlives the Umem: `XskSocket` drops `rings` (holding the Umem) before `area`.
        let umem = unsafe { Umem::new(umem_config, area.as_slice_ptr()) }.map_err(errno)?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex).map_err(errno)?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(errno)?;
        let fd = sock.as_raw_fd();
        sys::set_cloexec(fd)?;
        let fcq = umem.fq_cq(&sock).map_err(errno)?;
        let mode_flag = if zero_copy {
            SocketConfig::XDP_BIND_ZEROCOPY
        } else {
            SocketConfig::XDP_BIND_COPY
        };
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(config.rx_frames),
                    tx_size: NonZeroU32::new(config.tx_frames),
                    bind_flags: SocketConfig::XDP_BIND_NEED_WAKEUP | mode_flag,
                },
            )
            .map_err(errno)?;
        let rx = user.map_rx().map_err(errno)?;
        let tx = user.map_tx().map_err(errno)?;
        umem.bind(&user).map_err(errno)?;
        Ok(Rings {
            rx,
            tx,
            fcq,
            user,
            _umem: umem,
            fd,
        })
    }

    /// Copy mode: lets one kick (sendto) send up to [`COPY_TX_BUDGET`] frames instead
    /// of the kernel's default 32 (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17+; older kernels
    /// refuse it and keep 32). Returns the budget in force.
    fn raise_tx_budget(&self) -> u32 {
        let want = COPY_TX_BUDGET.min(self.config.tx_frames);
        match sys::setsockopt_int(self.rings.fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, want as i32) {
            Ok(()) => want,
            Err(_) => COPY_TX_BUDGET_DEFAULT,
        }
    }

    /// Frames one kick sends at most (32 unless the kernel took a larger budget).
    pub fn tx_budget(&self) -> u32 {
        self.tx_budget
    }

    /// Gives every RX frame to the fill ring and every TX frame to the free list.
    fn init_frames(&mut self) {
        let fs = self.config.frame_size as u64;
        self.fill_pending
            .extend((0..self.config.rx_frames as u64).map(|i| i * fs));
        self.tx_free.extend(
            (self.config.rx_frames as u64..(self.config.rx_frames + self.config.tx_frames) as u64)
                .map(|i| i * fs),
        );
        self.refill();
    }

    fn refill(&mut self) {
        if self.fill_pending.is_empty() {
            return;
        }
        let mut w = self.rings.fcq.fill(self.fill_pending.len() as u32);
        let n = w.insert(self.fill_pending.iter().copied()) as usize;
        w.commit();
        drop(w);
        self.fill_pending.drain(..n);
        if self.rings.fcq.needs_wakeup() {
            sys::xsk_kick_rx(self.rings.fd);
            self.stats.rx_wakeups += 1;
        }
    }

    /// Hands up to `max` received frames to `f`, oldest first, then returns their
    /// buffers to the fill ring. Returns how many frames were handed over.
    pub fn receive(&mut self, max: u32, mut f: impl FnMut(&[u8])) -> usize {
        let base = self.area.as_ptr();
        let area_len = self.area.len() as u64;
        let chunk_mask = !(self.config.frame_size as u64 - 1);
        let mut n = 0;
        let mut bytes = 0u64;
        let mut invalid = 0;
        {
            let mut rx = self.rings.rx.receive(max);
            while let Some(XdpDesc { addr, len, .. }) = rx.read() {
                if addr
                    .checked_add(len as u64)
                    .is_none_or(|end| end > area_len)
                {
                    invalid += 1;
                    continue;
                }
                // SAFETY: [addr, addr+len) lies inside the UMEM (checked above), and the
                // kernel handed this frame to us: it does not write it until we put it
                // back on the fill ring below.
                let frame =
                    unsafe { std::slice::from_raw_parts(base.add(addr as usize), len as usize) };
                f(frame);
                self.fill_pending.push(addr & chunk_mask);
                n += 1;
                bytes += len as u64;
            }
            rx.release();
        }
        self.stats.rx_frames += n as u64;
        self.stats.rx_bytes += bytes;
        self.stats.rx_invalid += invalid;
        self.refill();
        n
    }

    /// Frames waiting on the RX ring.
    pub fn rx_available(&self) -> u32 {
        self.rings.rx.available()
    }

    /// Waits until the RX ring has frames or `timeout` passes (None: forever).
    /// Returns true when frames are ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        if self.rings.rx.available() > 0 {
            return Ok(true);
        }
        match self.config.rx_mode {
            RxMode::Blocking => {
                let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
                let revents = sys::poll_one(self.rings.fd, libc::POLLIN, ms)?;
                Ok(revents & libc::POLLIN != 0 || self.rings.rx.available() > 0)
            }
            RxMode::BusyPoll => {
                let start = Instant::now();
                loop {
                    if self.rings.rx.available() > 0 {
                        return Ok(true);
                    }
                    if self.rings.fcq.needs_wakeup() {
                        sys::xsk_kick_rx(self.rings.fd);
                        self.stats.rx_wakeups += 1;
                    }
                    if timeout.is_some_and(|t| start.elapsed() >= t) {
                        return Ok(false);
                    }
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// Returns completed TX frames to the free list.
    pub fn reclaim(&mut self) -> usize {
        let chunk_mask = !(self.config.frame_size as u64 - 1);
        let mut c = self.rings.fcq.complete(self.config.tx_frames);
        let mut n = 0;
        while let Some(addr) = c.read() {
            self.tx_free.push(addr & chunk_mask);
            n += 1;
        }
        c.release();
        n
    }

    /// Queues one frame of `len` bytes written by `fill`; false (without calling
    /// `fill`) when no TX frame or ring slot is free. Call [`XskSocket::flush`] after a
    /// batch so the kernel sends it.
    pub fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.config.frame_size as usize {
            return false;
        }
        if self.tx_free.is_empty() {
            self.reclaim();
            if self.tx_free.is_empty() && self.tx_unkicked > 0 {
                // Frames wait for a kick: send them now to get buffers back.
                self.flush();
            }
        }
        let Some(&addr) = self.tx_free.last() else {
            self.stats.tx_ring_full += 1;
            return false;
        };
        if self.rings.tx.transmit(1).capacity() == 0 && self.tx_unkicked > 0 {
            self.flush();
        }
        let base = self.area.as_ptr();
        let mut w = self.rings.tx.transmit(1);
        if w.capacity() == 0 {
            drop(w);
            self.stats.tx_ring_full += 1;
            return false;
        }
        // SAFETY: `addr` is a TX frame of `frame_size` >= len bytes inside the UMEM that
        // is on our free list: the kernel does not touch it until we queue it.
        let frame = unsafe { std::slice::from_raw_parts_mut(base.add(addr as usize), len) };
        fill(frame);
        let queued = w.insert_once(XdpDesc {
            addr,
            len: len as u32,
            options: 0,
        });
        w.commit();
        drop(w);
        debug_assert!(queued, "reserved slot");
        self.tx_free.pop();
        self.tx_unkicked += 1;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        true
    }

    /// Copies a whole frame into the TX ring.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.send_with(frame.len(), &mut |buf| buf.copy_from_slice(frame))
    }

    /// Makes the kernel process what is queued on the TX ring. Copy mode sends at most
    /// a small batch (32) per kick, so it kicks until the ring is drained or the kernel
    /// makes no progress. Also reclaims completed frames.
    pub fn flush(&mut self) {
        if self.tx_unkicked == 0 && self.rings.tx.pending() == 0 {
            self.reclaim();
            return;
        }
        self.tx_unkicked = 0;
        let mut stalls = 0;
        loop {
            let before = self.rings.tx.pending();
            if before == 0 {
                break;
            }
            if !self.zero_copy || self.rings.tx.needs_wakeup() {
                self.stats.tx_wakeups += 1;
                match sys::xsk_kick_tx(self.rings.fd) {
                    Ok(()) => {}
                    Err(libc::EAGAIN) | Err(libc::EBUSY) | Err(libc::ENOBUFS) => {}
                    Err(_) => break,
                }
            } else {
                break; // the driver drains it by itself
            }
            self.reclaim();
            if self.rings.tx.pending() >= before {
                stalls += 1;
                if stalls > 4 {
                    break;
                }
            }
        }
        self.reclaim();
    }

    /// Frames queued on the TX ring since the last kick (what [`XskSocket::flush`] would
    /// send): a caller batching kicks flushes when this grows or before it sleeps.
    pub fn unkicked(&self) -> u32 {
        self.tx_unkicked
    }

    pub fn stats(&self) -> XskStats {
        let mut s = self.stats;
        if let Ok(k) = self.rings.user.statistics_v2() {
            s.kernel_rx_dropped = k.rx_dropped;
            s.kernel_rx_ring_full = k.rx_ring_full;
            s.kernel_fill_ring_empty = k.rx_fill_ring_empty_descs;
            s.kernel_tx_invalid = k.tx_invalid_descs;
        }
        s
    }

    /// The XSK fd: register it in the XSKMAP, poll it for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.rings.fd
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// True when the driver accepted zero-copy; false in copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Base and length of the UMEM (a MAP_SHARED mapping).
    pub fn umem(&self) -> (NonNull<u8>, usize) {
        (
            NonNull::new(self.area.as_ptr()).expect("mapped"),
            self.area.len(),
        )
    }

    /// Free TX frames right now (after reclaiming completions).
    pub fn tx_free(&mut self) -> usize {
        self.reclaim();
        self.tx_free.len()
    }
}

impl Device for XskSocket {
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.config.mtu,
            // veth and copy mode do not offload checksums either way.
            checksum: ChecksumOffload::default(),
        }
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.send_with(len, fill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_err(config: XskConfig) -> io::Error {
        match XskSocket::bind(1, 0, &config) {
            Ok(_) => panic!("bind accepted {config:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_bad_geometry_before_any_syscall() {
        let e = bind_err(XskConfig {
            rx_frames: 1000,
            ..Default::default()
        });
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("rx_frames"), "{e}");
        let e = bind_err(XskConfig {
            mtu: 9000,
            ..Default::default()
        });
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("MTU 9000"), "{e}");
    }
}
