//! One AF_XDP socket bound to one (interface, queue): UMEM, fill/completion/RX/TX
//! rings, batched receive and transmit, and the stack's `Device` over the TX ring.
//!
//! UMEM layout: the first `rx_frames` frames circulate through the fill and RX rings,
//! the next `tx_frames` through the TX and completion rings. The UMEM is an anonymous
//! MAP_SHARED mapping, the rings are the kernel's shared mappings, and the frame
//! accounting lives in a MAP_SHARED family page (see `family`), so a forked child
//! sees the same memory and can bind sockets of its own on the same queue
//! ([`XskSocket::bind_shared`]) that share the UMEM, its one fill ring and its one
//! completion ring with every socket of the family.

use crate::family::{FamilyPage, FrameCensus};
use crate::ring::{self, Rings};
use crate::sys::{self, SharedMapping};
use stack::device::{ChecksumOffload, Device, DeviceCaps};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// setsockopt: frames one copy-mode sendto may send (uapi/linux/if_xdp.h).
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;
/// The kernel's copy-mode budget per kick without the option (TX_BATCH_SIZE).
const COPY_TX_BUDGET_DEFAULT: u32 = 32;
/// The budget asked for: a sender's burst in one system call. Each kick runs the
/// frames through the driver (and, on veth, the peer's receive path) one by one, so a
/// larger budget saves only the per-call cost, and keeps a call under ~1 ms.
const COPY_TX_BUDGET: u32 = 256;

/// `sxdp_flags` of bind(2).
const XDP_SHARED_UMEM: u16 = 1 << 0;
const XDP_COPY: u16 = 1 << 1;
const XDP_ZEROCOPY: u16 = 1 << 2;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

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
    /// Where `AttachedIface::open` attaches the XDP program; None: native, else generic.
    pub attach_mode: Option<crate::program::AttachMode>,
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
            attach_mode: None,
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
    /// Times this socket found its queue's lock (fill ring, completion ring, TX pool)
    /// held by another socket on the queue: 0 while a process has its queue alone.
    pub lock_waits: u64,
}

/// The memory shared by the sockets of one UMEM in this process (and, being
/// MAP_SHARED, with every process of the family): unmapped when the last of them
/// closes here.
struct Family {
    page: FamilyPage,
    area: SharedMapping,
}

// SAFETY: the page is only accessed through atomics and under its lock; a UMEM frame
// is touched only by the socket holding it (cache, RX ring), as across processes.
unsafe impl Sync for Family {}
unsafe impl Send for Family {}

/// One AF_XDP socket on one (interface, queue).
pub struct XskSocket {
    // Field order is drop order: the ring mappings, then the socket, then the UMEM.
    rings: Rings,
    fd: OwnedFd,
    family: Arc<Family>,
    /// This socket's entry in the family page.
    member: usize,
    /// The process that created this socket: only it returns the socket's frames on
    /// drop (a forked child dropping its inherited copy must not).
    pid: u32,
    config: XskConfig,
    ifindex: u32,
    queue: u32,
    zero_copy: bool,
    /// RX frame addresses waiting to go back to the fill ring.
    fill_pending: Vec<u64>,
    /// Frames queued on the TX ring since the last kick.
    tx_unkicked: u32,
    /// Frames one copy-mode kick sends at most (the kernel's per-sendto budget).
    tx_budget: u32,
    stats: XskStats,
}

// SAFETY: all the raw pointers inside point to mappings this value owns (or shares
// through an Arc); it is moved between threads as a whole, never shared.
unsafe impl Send for XskSocket {}

fn set_ring_size(fd: RawFd, opt: i32, entries: u32) -> io::Result<()> {
    sys::setsockopt_bytes(fd, ring::SOL_XDP, opt, &entries.to_ne_bytes())
}

impl XskSocket {
    /// Creates the UMEM and socket and binds it to `queue` of `ifindex`: zero-copy
    /// first, copy mode when the driver refuses (EOPNOTSUPP), EBUSY retried with
    /// backoff for up to `config.busy_retry`. The socket starts a family: forked
    /// children can bind sockets of their own on the same queue with
    /// [`XskSocket::bind_shared`].
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
        let fs = config.frame_size as u64;
        let (rx, tx) = (config.rx_frames as u64, config.tx_frames as u64);
        let area = SharedMapping::new((fs * (rx + tx)) as usize)?;
        let page = FamilyPage::create((rx as u32..(rx + tx) as u32).map(|i| i as u64 * fs))?;
        let family = Arc::new(Family { page, area });
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
                match Self::try_bind(&family, ifindex, queue, config, zero_copy) {
                    Ok((fd, rings)) => {
                        let mut s =
                            Self::new(fd, rings, family, config, ifindex, queue, zero_copy)?;
                        // The first socket gives every RX frame to the fill ring.
                        s.fill_pending.extend((0..rx).map(|i| i * fs));
                        s.refill();
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

    /// A socket with the UMEM registered on it, its four rings, bound.
    fn try_bind(
        family: &Family,
        ifindex: u32,
        queue: u32,
        config: &XskConfig,
        zero_copy: bool,
    ) -> io::Result<(OwnedFd, Rings)> {
        let fd = sys::xsk_socket()?;
        let raw = fd.as_raw_fd();
        // struct xdp_umem_reg: addr, len, chunk_size, headroom, flags, tx_metadata_len.
        let mut reg = [0u8; 32];
        reg[0..8].copy_from_slice(&(family.area.as_ptr() as u64).to_ne_bytes());
        reg[8..16].copy_from_slice(&(family.area.len() as u64).to_ne_bytes());
        reg[16..20].copy_from_slice(&config.frame_size.to_ne_bytes());
        sys::setsockopt_bytes(raw, ring::SOL_XDP, ring::XDP_UMEM_REG, &reg)?;
        set_ring_size(raw, ring::XDP_UMEM_FILL_RING, config.rx_frames)?;
        set_ring_size(raw, ring::XDP_UMEM_COMPLETION_RING, config.tx_frames)?;
        set_ring_size(raw, ring::XDP_RX_RING, config.rx_frames)?;
        set_ring_size(raw, ring::XDP_TX_RING, config.tx_frames)?;
        let mode = if zero_copy { XDP_ZEROCOPY } else { XDP_COPY };
        sys::xsk_bind(raw, ifindex, queue, XDP_USE_NEED_WAKEUP | mode, 0)?;
        let rings = Rings::map(raw, config.rx_frames, config.tx_frames)?;
        Ok((fd, rings))
    }

    fn new(
        fd: OwnedFd,
        rings: Rings,
        family: Arc<Family>,
        config: &XskConfig,
        ifindex: u32,
        queue: u32,
        zero_copy: bool,
    ) -> io::Result<XskSocket> {
        let pid = sys::getpid();
        let member = family.page.join(pid)?;
        let mut s = XskSocket {
            rings,
            fd,
            family,
            member,
            pid,
            config: config.clone(),
            ifindex,
            queue,
            zero_copy,
            fill_pending: Vec::with_capacity(config.rx_frames as usize),
            tx_unkicked: 0,
            tx_budget: COPY_TX_BUDGET_DEFAULT,
            stats: XskStats::default(),
        };
        sys::set_cloexec(s.fd())?;
        if !zero_copy {
            s.tx_budget = s.raise_tx_budget();
        }
        if config.rx_mode == RxMode::BusyPoll {
            // Best effort: only drivers with NAPI busy polling honour these.
            let fd = s.fd();
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, 69, 1); // SO_PREFER_BUSY_POLL
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, 20);
            let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, 70, 64); // SO_BUSY_POLL_BUDGET
        }
        Ok(s)
    }

    /// A new socket of this process on the queue `family` serves, sharing its UMEM
    /// (XDP_SHARED_UMEM): its own RX and TX rings, the one fill and completion ring of
    /// the queue, the family's frame accounting. `family` is any socket of the family
    /// that is still open here, typically the one a forked child inherited from its
    /// parent (only its fd and shared mappings are used, never its private state).
    /// The new socket keeps working when `family` (or its whole process) is gone.
    /// Register it in the XSKMAP at this process's slot to receive anything.
    pub fn bind_shared(family: &XskSocket) -> io::Result<XskSocket> {
        Self::bind_shared_on(family, sys::xsk_socket()?)
    }

    /// As [`XskSocket::bind_shared`], on `fd`, an AF_XDP socket made earlier (see
    /// [`XskSocket::unbound`]): creating one needs CAP_NET_RAW, and a forked worker
    /// that dropped its privileges (nginx's, PostgreSQL's) no longer has it; the rest
    /// needs none.
    pub fn bind_shared_on(family: &XskSocket, fd: OwnedFd) -> io::Result<XskSocket> {
        let config = &family.config;
        let raw = fd.as_raw_fd();
        set_ring_size(raw, ring::XDP_RX_RING, config.rx_frames)?;
        set_ring_size(raw, ring::XDP_TX_RING, config.tx_frames)?;
        // The mode and need_wakeup come from the shared pool: no flags allowed here.
        sys::xsk_bind(
            raw,
            family.ifindex,
            family.queue,
            XDP_SHARED_UMEM,
            family.fd() as u32,
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "AF_XDP bind sharing the UMEM of fd {} (ifindex {} queue {}): {e}",
                    family.fd(),
                    family.ifindex,
                    family.queue
                ),
            )
        })?;
        let rings = Rings::map(raw, config.rx_frames, config.tx_frames)?;
        Self::new(
            fd,
            rings,
            family.family.clone(),
            config,
            family.ifindex,
            family.queue,
            family.zero_copy,
        )
    }

    /// A new AF_XDP socket, not bound yet: for a process that may bind it later
    /// without the privilege to create it (see [`XskSocket::bind_shared_on`]).
    pub fn unbound() -> io::Result<OwnedFd> {
        sys::xsk_socket()
    }

    /// Copy mode: lets one kick (sendto) send up to [`COPY_TX_BUDGET`] frames instead
    /// of the kernel's default 32 (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17+; older kernels
    /// refuse it and keep 32). Returns the budget in force.
    fn raise_tx_budget(&self) -> u32 {
        let want = COPY_TX_BUDGET.min(self.config.tx_frames);
        match sys::setsockopt_int(self.fd(), ring::SOL_XDP, XDP_MAX_TX_SKB_BUDGET, want as i32) {
            Ok(()) => want,
            Err(_) => COPY_TX_BUDGET_DEFAULT,
        }
    }

    /// Frames one kick sends at most (32 unless the kernel took a larger budget).
    pub fn tx_budget(&self) -> u32 {
        self.tx_budget
    }

    /// Gives the pending RX frames to the (shared) fill ring, and kicks the driver
    /// when it asks for it (any socket of the family may).
    fn refill(&mut self) {
        if self.fill_pending.is_empty() {
            return;
        }
        let n = {
            let g = self.family.page.lock(self.pid);
            self.stats.lock_waits += g.waited as u64;
            self.rings.fill.produce_addrs(&self.fill_pending)
        };
        self.fill_pending.drain(..n);
        if self.rings.fill.needs_wakeup() {
            sys::xsk_kick_rx(self.fd());
            self.stats.rx_wakeups += 1;
        }
    }

    /// Hands up to `max` received frames to `f`, oldest first, then returns their
    /// buffers to the fill ring. Returns how many frames were handed over.
    pub fn receive(&mut self, max: u32, mut f: impl FnMut(&[u8])) -> usize {
        let base = self.family.area.as_ptr();
        let area_len = self.family.area.len() as u64;
        let chunk_mask = !(self.config.frame_size as u64 - 1);
        let mut bytes = 0u64;
        let mut invalid = 0;
        let pending = &mut self.fill_pending;
        let n = self.rings.rx.consume_descs(max, |addr, len| {
            if addr
                .checked_add(len as u64)
                .is_none_or(|end| end > area_len)
            {
                invalid += 1;
                return;
            }
            // SAFETY: [addr, addr+len) lies inside the UMEM (checked above), and the
            // kernel handed this frame to us: nobody writes it until it is back on
            // the fill ring (below, after `f` returned).
            let frame =
                unsafe { std::slice::from_raw_parts(base.add(addr as usize), len as usize) };
            f(frame);
            pending.push(addr & chunk_mask);
            bytes += len as u64;
        }) as usize;
        let n = n - invalid as usize;
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
                let revents = sys::poll_one(self.fd(), libc::POLLIN, ms)?;
                Ok(revents & libc::POLLIN != 0 || self.rings.rx.available() > 0)
            }
            RxMode::BusyPoll => {
                let start = Instant::now();
                loop {
                    if self.rings.rx.available() > 0 {
                        return Ok(true);
                    }
                    if self.rings.fill.needs_wakeup() {
                        sys::xsk_kick_rx(self.fd());
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

    /// Returns completed TX frames (of any socket of the family: the completion ring
    /// is shared) to the family's pool.
    pub fn reclaim(&mut self) -> usize {
        if self.rings.comp.available() == 0 {
            return 0;
        }
        let g = self.family.page.lock(self.pid);
        self.stats.lock_waits += g.waited as u64;
        self.reclaim_locked()
    }

    fn reclaim_locked(&self) -> usize {
        let chunk_mask = !(self.config.frame_size as u64 - 1);
        let page = &self.family.page;
        self.rings
            .comp
            .consume_addrs(self.config.tx_frames, |addr| {
                page.pool_push_locked(addr & chunk_mask)
            }) as usize
    }

    /// Refills this socket's TX cache from the pool (completions first); as a last
    /// resort reaps the sockets of dead processes. Returns the frames now cached.
    fn refill_tx_cache(&mut self) -> usize {
        {
            let page = &self.family.page;
            let g = page.lock(self.pid);
            self.stats.lock_waits += g.waited as u64;
            self.reclaim_locked();
            if page.refill_cache_locked(self.member) > 0 {
                return page.cache_len(self.member);
            }
        }
        if self.tx_unkicked > 0 {
            // Frames wait for a kick: send them now to get buffers back.
            self.flush();
        }
        let page = &self.family.page;
        let g = page.lock(self.pid);
        self.stats.lock_waits += g.waited as u64;
        self.reclaim_locked();
        if page.pool_len() == 0 {
            page.reap_locked();
        }
        page.refill_cache_locked(self.member);
        page.cache_len(self.member)
    }

    /// Queues one frame of `len` bytes written by `fill`; false (without calling
    /// `fill`) when no TX frame or ring slot is free. Call [`XskSocket::flush`] after a
    /// batch so the kernel sends it.
    pub fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.config.frame_size as usize {
            return false;
        }
        if self.family.page.cache_len(self.member) == 0 && self.refill_tx_cache() == 0 {
            self.stats.tx_ring_full += 1;
            return false;
        }
        if self.rings.tx.free() == 0 && self.tx_unkicked > 0 {
            self.flush();
        }
        if self.rings.tx.free() == 0 {
            self.stats.tx_ring_full += 1;
            return false;
        }
        let Some(addr) = self.family.page.cache_peek(self.member) else {
            self.stats.tx_ring_full += 1;
            return false;
        };
        let base = self.family.area.as_ptr();
        // SAFETY: `addr` is a TX frame of `frame_size` >= len bytes inside the UMEM that
        // is in this socket's cache: nobody else touches it until we queue it.
        let frame = unsafe { std::slice::from_raw_parts_mut(base.add(addr as usize), len) };
        fill(frame);
        let queued = self.rings.tx.produce_desc(addr, len as u32);
        debug_assert!(queued, "checked free slot");
        self.family.page.cache_pop(self.member);
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
                match sys::xsk_kick_tx(self.fd()) {
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
        // struct xdp_statistics: rx_dropped, rx_invalid_descs, tx_invalid_descs,
        // rx_ring_full, rx_fill_ring_empty_descs, tx_ring_empty_descs.
        let mut k = [0u8; 48];
        if let Ok(n) = sys::getsockopt_bytes(self.fd(), ring::SOL_XDP, ring::XDP_STATISTICS, &mut k)
        {
            let field = |i: usize| {
                if n >= 8 * (i + 1) {
                    u64::from_ne_bytes(k[8 * i..8 * i + 8].try_into().expect("8 bytes"))
                } else {
                    0
                }
            };
            s.kernel_rx_dropped = field(0);
            s.kernel_tx_invalid = field(2);
            s.kernel_rx_ring_full = field(3);
            s.kernel_fill_ring_empty = field(4);
        }
        s
    }

    /// The XSK fd: register it in the XSKMAP, poll it for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn config(&self) -> &XskConfig {
        &self.config
    }

    /// True when the driver accepted zero-copy; false in copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Base and length of the UMEM (a MAP_SHARED mapping).
    pub fn umem(&self) -> (NonNull<u8>, usize) {
        (
            NonNull::new(self.family.area.as_ptr()).expect("mapped"),
            self.family.area.len(),
        )
    }

    /// Free TX frames right now for this socket: the family's pool and this socket's
    /// cache (after reclaiming completions).
    pub fn tx_free(&mut self) -> usize {
        self.reclaim();
        self.family.page.pool_len() + self.family.page.cache_len(self.member)
    }

    /// Where the UMEM's frames are (reaping dead sockets first). With every socket
    /// idle and its RX ring read, `fill_ring == rx_frames` and
    /// `tx_pool + tx_cached == tx_frames`: no frame is lost to the accounting.
    pub fn census(&mut self) -> FrameCensus {
        let _g = self.family.page.lock(self.pid);
        self.reclaim_locked();
        self.family.page.census_locked(self.rings.fill.pending())
    }

    /// Makes the calling process the one that drives this socket: a child that took
    /// over the socket it inherited from its parent (the parent no longer touches
    /// it). From now on the lock and the family page name this process, survivors
    /// reap the socket's cache only when this process dies, and only this process
    /// returns the socket's frames when it drops it.
    pub fn adopt(&mut self) {
        let me = sys::getpid();
        self.pid = me;
        self.family.page.adopt(self.member, me);
    }

    /// Test hook: takes the family lock and never gives it back, as a process killed
    /// with -9 inside the critical section would.
    #[doc(hidden)]
    pub fn leak_family_lock(&self) {
        self.family.page.leak_lock(sys::getpid());
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        // Only in the process that created the socket: a forked child dropping its
        // copy closes its fds but leaves the parent's frames alone.
        if sys::getpid() != self.pid {
            return;
        }
        // Frames in flight come back through the shared completion ring; what waits
        // on our RX ring goes back to the fill ring (a frame the kernel delivers after
        // this, before the socket closes, is lost).
        self.flush();
        self.receive(u32::MAX, |_| {});
        self.family.page.leave(self.pid, self.member);
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
