//! The counters segment: one file per fastnet process in `/dev/shm`, mapped shared by
//! the shim (which adds to the counters) and by `fastnet stat` (which reads them).
//!
//! The layout is a fixed header followed by one `AtomicU64` per [`Counter`]. The header
//! carries a layout hash of the counter names so a reader built from another version
//! refuses the segment instead of showing wrong numbers. Updates are relaxed atomic adds:
//! no locks, no allocation, safe from any thread of the owner and across `fork`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory that holds the segments.
pub const SHM_DIR: &str = "/dev/shm";
const MAGIC: u64 = u64::from_le_bytes(*b"FNSTATS1");

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $var:ident = $name:literal, $kind:ident; )*) => {
        /// Every counter and gauge the segment holds, in layout order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $( $(#[doc = $doc])* $var, )* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[ $( Counter::$var, )* ];
            /// Name shown by `fastnet stat`.
            pub const fn name(self) -> &'static str {
                match self { $( Counter::$var => $name, )* }
            }
            /// What it counts (its doc comment; empty where the name says it all).
            pub fn help(self) -> &'static str {
                match self { $( Counter::$var => concat!("" $(, $doc)*).trim(), )* }
            }
            /// Gauges hold a current value (set); counters only grow (add).
            pub const fn is_gauge(self) -> bool {
                match self { $( Counter::$var => matches!(CounterKind::$kind, CounterKind::Gauge), )* }
            }
        }
    };
}

enum CounterKind {
    Count,
    Gauge,
}

counters! {
    /// Frames received from the interface (XSK RX rings).
    RxFrames = "rx.frames", Count;
    /// Bytes of the frames received.
    RxBytes = "rx.bytes", Count;
    /// Frames sent on the interface (XSK TX rings).
    TxFrames = "tx.frames", Count;
    /// Bytes of the frames sent.
    TxBytes = "tx.bytes", Count;
    /// Frames shorter than their headers say, bad IHL, bad lengths.
    DropMalformed = "drop.malformed", Count;
    /// Frames with a wrong IPv4, TCP or UDP checksum.
    DropChecksum = "drop.checksum", Count;
    /// IP fragments: the XDP program steers by port, which later fragments lack.
    DropFragment = "drop.fragment", Count;
    /// Frames for no socket of ours (answered with RST where TCP says so).
    DropNoSocket = "drop.no_socket", Count;
    /// TX ring or frame pool full when a frame was ready.
    DropTxFull = "drop.tx_full", Count;
    /// Frames the kernel dropped because the XSK RX ring or fill ring ran out.
    DropRxRing = "drop.rx_ring", Count;
    /// TCP segments the stack received.
    TcpSegmentsIn = "tcp.segments_in", Count;
    /// TCP segments the stack sent (retransmissions included).
    TcpSegmentsOut = "tcp.segments_out", Count;
    /// TCP segments sent again (timeout, fast retransmit, SACK recovery): the sum of
    /// the connections' TCP_INFO total_retrans.
    TcpRetransmits = "tcp.retransmits", Count;
    /// TCP segments sent again because a connection moved (to or from the kernel) and
    /// asked its peer for its window and SACK state: no loss asked for them.
    TcpMoveProbes = "tcp.move_probes", Count;
    /// RSTs received.
    TcpResetsIn = "tcp.resets_in", Count;
    /// RSTs sent.
    TcpResetsOut = "tcp.resets_out", Count;
    /// SYN cookies sent (a listener's SYN queue was full).
    TcpSynCookies = "tcp.syn_cookies", Count;
    /// Connections this process opened (connect) on the fast path.
    TcpActiveOpens = "tcp.active_opens", Count;
    /// Connections peers opened to this process's listeners (SYNs taken).
    TcpPassiveOpens = "tcp.passive_opens", Count;
    /// Bytes splice(2) (or sendfile(2) into a pipe) moved from fast-path sockets into
    /// pipes.
    SpliceToPipe = "splice.to_pipe_bytes", Count;
    /// Bytes splice(2) moved from pipes into fast-path sockets.
    SpliceFromPipe = "splice.from_pipe_bytes", Count;
    /// Times this process joined its family's fast path (a forked child using a
    /// socket it inherited): 0 or 1.
    FamilyJoins = "family.joins", Count;
    /// Connections this process took from another process of its family (it used an
    /// fd it inherited).
    FamilyMovedIn = "family.moved_in", Count;
    /// Connections this process handed to another process of its family.
    FamilyMovedOut = "family.moved_out", Count;
    /// Frames that reached this process after their connection moved away, forwarded.
    FamilyFramesForwarded = "family.frames_forwarded", Count;
    /// Inherited connections nobody in the family had any more (closed meanwhile).
    FamilyLost = "family.lost", Count;
    /// Inherited listeners this process listens on too (a worker's share).
    FamilyListeners = "family.listeners", Count;
    /// Connections this process relays to a program another process of its family
    /// exec'd with them (inetd's shape: the service's stdin and stdout).
    FamilyRelayed = "family.relayed", Count;
    /// Members of this process's family that exited and whose counters were added to
    /// this process's (see `StatsSegment::fold`).
    FamilyDeparted = "family.departed", Count;
    /// Connections handed to the kernel at exit (TCP repair): the kernel finishes
    /// delivering what the app wrote, and the process ends at once.
    HandoffToKernelExit = "handoff.to_kernel.exit", Count;
    /// Connections handed to the kernel on request (`fastnet handoff --to kernel`).
    HandoffToKernelVerb = "handoff.to_kernel.verb", Count;
    /// Kernel connections of the app moved into the stack on request (`fastnet handoff
    /// --to stack`).
    HandoffToStackVerb = "handoff.to_stack.verb", Count;
    /// New connections the kernel took because the stack's socket slots were all in use
    /// (`FASTNET_MAX_SOCKETS`): their SYN's retransmission reaches the kernel's listener.
    HandoffToKernelSlots = "handoff.to_kernel.slots", Count;
    /// Connections TCP repair could not hand to the kernel (not permitted, or the
    /// kernel refused a step): they stayed in the stack (exit lingers for them).
    HandoffFailed = "handoff.failed", Count;
    /// Bytes the peer sent while a connection was being rebuilt as a kernel socket,
    /// carried into that socket's receive queue (the peer need not send them again).
    HandoffLateBytes = "handoff.late_bytes", Count;
    /// Frames of connections handed to the kernel that reached our rings after the
    /// last look before the flow switched, passed to the kernel through the loopback
    /// device.
    HandoffFramesPassed = "handoff.frames_passed", Count;
    /// Such frames that could not be passed (no packet socket): dropped (the peer sends
    /// them again).
    HandoffFramesDropped = "handoff.frames_dropped", Count;
    /// Listening sockets now.
    TcpListen = "tcp.state.listen", Gauge;
    /// Connections in SYN-SENT now.
    TcpSynSent = "tcp.state.syn_sent", Gauge;
    /// Connections in SYN-RECEIVED now.
    TcpSynReceived = "tcp.state.syn_received", Gauge;
    /// Established connections now.
    TcpEstablished = "tcp.state.established", Gauge;
    /// Connections in CLOSE-WAIT now.
    TcpCloseWait = "tcp.state.close_wait", Gauge;
    /// Connections in CLOSING now (both ends closed at once).
    TcpClosing = "tcp.state.closing", Gauge;
    /// Connections in TIME-WAIT now.
    TcpTimeWait = "tcp.state.time_wait", Gauge;
    /// Sockets carried by the fast path now.
    SocketsFast = "sockets.fast", Gauge;
    /// Connections of this family handed to the kernel that the kernel still has: their
    /// flow entries send them to the kernel until they end.
    HandoffKernelFlows = "handoff.kernel_flows", Gauge;
    /// Sockets left to the kernel because the route is not the fast-path interface.
    KernelRoute = "sockets.kernel.route", Count;
    /// Sockets left to the kernel because they talk over loopback.
    KernelLoopback = "sockets.kernel.loopback", Count;
    /// Sockets left to the kernel because fast-path resources ran out.
    KernelResources = "sockets.kernel.resources", Count;
    /// Sockets left to the kernel because no fast-path interface is configured.
    KernelNoIface = "sockets.kernel.no_iface", Count;
    /// Sockets left to the kernel because the fast path stopped (see the reason).
    KernelFallback = "sockets.kernel.fallback", Count;
    /// Queues of the interface with an AF_XDP socket (every queue in use).
    IfaceQueues = "iface.queues", Gauge;
    /// Times the queues in use changed (`ethtool -L`) and the sockets followed.
    IfaceRebinds = "iface.rebinds", Count;
    /// Frames for our ports that arrived on a queue without a socket (dropped by
    /// the steering program: the kernel would have answered them with a RST).
    DropNoXsk = "drop.no_xsk", Count;
    /// TCP connections to this host the process's own stack carried (loopback on).
    LoopbackConnections = "loopback.connections", Count;
    /// Frames the stack delivered to itself (loopback on): no kernel, no XDP.
    LoopbackFrames = "loopback.frames", Count;
    /// Bytes of the frames the stack delivered to itself.
    LoopbackBytes = "loopback.bytes", Count;
    /// TCP connections to another fastnet process carried stack to stack (host mode).
    LoopbackHostConnections = "loopback.host.connections", Count;
    /// Frames pushed to other fastnet processes' stacks (host mode).
    LoopbackHostOut = "loopback.host.frames_out", Count;
    /// Frames taken from other fastnet processes' stacks (host mode).
    LoopbackHostIn = "loopback.host.frames_in", Count;
    /// Frames a peer's full inbox refused (TCP sends them again).
    LoopbackHostDropped = "loopback.host.dropped", Count;
    /// Socket options the stack does not implement, answered as Linux would.
    UnsupportedOptions = "sockets.unsupported_options", Count;
    /// Frames waiting in the XSK RX rings (not yet published: 0).
    RingRx = "ring.rx", Gauge;
    /// Frames waiting in the XSK TX rings (not yet published: 0).
    RingTx = "ring.tx", Gauge;
    /// Free frames offered to the kernel in the fill rings (not yet published: 0).
    RingFill = "ring.fill", Gauge;
    /// Sent frames waiting in the completion rings (not yet published: 0).
    RingCompletion = "ring.completion", Gauge;
    /// sendto() kicks of the XSK TX rings (copy mode needs one per batch).
    TxWakeups = "xsk.tx_wakeups", Count;
    /// Times a queue's shared rings (fill, completion, TX pool) were found in use by
    /// another socket on the queue: 0 while each process of a family has its queues
    /// to itself.
    XskLockWaits = "xsk.lock_waits", Count;
    /// The RX queue this process transmits on: the one most of its frames arrive on.
    XskTxQueue = "xsk.tx_queue", Gauge;
    /// Frames received on a queue other than the one this process transmits on (a
    /// flow the NIC's hash put on another queue than its listener's member).
    RxOtherQueues = "rx.other_queues", Count;
    /// System calls the shim handled itself (not yet published: 0).
    SyscallsHandled = "shim.syscalls_handled", Count;
    /// `syscall` sites rewritten in code mapped executable after start (dlopen,
    /// mmap/mprotect with PROT_EXEC), before the mapping call returned.
    HookLateMapped = "hook.late.mapped", Count;
    /// `syscall` sites found at their first call by Syscall User Dispatch (code written
    /// into memory that already was executable: JIT) and rewritten then.
    HookLateSud = "hook.late.sud", Count;
    /// System calls that trapped to the Syscall User Dispatch handler: each late site's
    /// first call, and every call of a site that cannot be rewritten (vDSO fallbacks,
    /// red-zone sites).
    HookSudTraps = "hook.sud.traps", Count;
}

/// Slots for per-option counts of unsupported socket options (distinct
/// (call, level, name) triples one process met; more are only in the total).
pub const OPTION_SLOTS: usize = 32;

/// Bytes kept of the reason a process runs on the kernel.
const REASON_LEN: usize = 248;

/// FNV-1a over the counter names and the shape of the option table and the reason
/// trailer: changes whenever the layout does.
pub fn layout_hash() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let table = format!("option_slots:{OPTION_SLOTS}");
    let trailer = format!("reason:{REASON_LEN}");
    let names =
        Counter::ALL
            .iter()
            .map(|c| c.name())
            .chain([table.as_str(), trailer.as_str(), "departed"]);
    for name in names {
        for b in name.bytes().chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Which call met an unsupported option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OptionCall {
    Set,
    Get,
}

impl OptionCall {
    pub const fn name(self) -> &'static str {
        match self {
            OptionCall::Set => "setsockopt",
            OptionCall::Get => "getsockopt",
        }
    }
}

/// One unsupported option's count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionCount {
    pub call: OptionCall,
    pub level: i32,
    pub name: i32,
    pub count: u64,
}

impl OptionCount {
    /// `setsockopt.SOL_TCP.TCP_CONGESTION` (numbers for names this table lacks).
    pub fn label(&self) -> String {
        format!(
            "{}.{}",
            self.call.name(),
            option_name(self.level, self.name)
        )
    }
}

const SLOT_USED: u64 = 1 << 63;
const SLOT_GET: u64 = 1 << 62;

fn slot_key(call: OptionCall, level: i32, name: i32) -> u64 {
    let get = if call == OptionCall::Get { SLOT_GET } else { 0 };
    SLOT_USED | get | ((level as u32 as u64 & 0x3fff_ffff) << 32) | name as u32 as u64
}

/// `SOL_TCP.TCP_INFO`: Linux's names for an option level and name.
pub fn option_name(level: i32, name: i32) -> String {
    let lvl = match level {
        libc::SOL_SOCKET => "SOL_SOCKET",
        libc::IPPROTO_TCP => "SOL_TCP",
        libc::IPPROTO_IP => "SOL_IP",
        libc::IPPROTO_IPV6 => "SOL_IPV6",
        libc::IPPROTO_UDP => "SOL_UDP",
        _ => "",
    };
    let opt = match (level, name) {
        (libc::SOL_SOCKET, n) => match n {
            libc::SO_DEBUG => "SO_DEBUG",
            libc::SO_REUSEADDR => "SO_REUSEADDR",
            libc::SO_TYPE => "SO_TYPE",
            libc::SO_ERROR => "SO_ERROR",
            libc::SO_DONTROUTE => "SO_DONTROUTE",
            libc::SO_BROADCAST => "SO_BROADCAST",
            libc::SO_SNDBUF => "SO_SNDBUF",
            libc::SO_RCVBUF => "SO_RCVBUF",
            libc::SO_SNDBUFFORCE => "SO_SNDBUFFORCE",
            libc::SO_RCVBUFFORCE => "SO_RCVBUFFORCE",
            libc::SO_KEEPALIVE => "SO_KEEPALIVE",
            libc::SO_OOBINLINE => "SO_OOBINLINE",
            libc::SO_NO_CHECK => "SO_NO_CHECK",
            libc::SO_PRIORITY => "SO_PRIORITY",
            libc::SO_LINGER => "SO_LINGER",
            libc::SO_REUSEPORT => "SO_REUSEPORT",
            libc::SO_PASSCRED => "SO_PASSCRED",
            libc::SO_PEERCRED => "SO_PEERCRED",
            libc::SO_RCVLOWAT => "SO_RCVLOWAT",
            libc::SO_SNDLOWAT => "SO_SNDLOWAT",
            libc::SO_RCVTIMEO => "SO_RCVTIMEO",
            libc::SO_SNDTIMEO => "SO_SNDTIMEO",
            libc::SO_BINDTODEVICE => "SO_BINDTODEVICE",
            libc::SO_TIMESTAMP => "SO_TIMESTAMP",
            libc::SO_ACCEPTCONN => "SO_ACCEPTCONN",
            libc::SO_MARK => "SO_MARK",
            libc::SO_PROTOCOL => "SO_PROTOCOL",
            libc::SO_DOMAIN => "SO_DOMAIN",
            libc::SO_RXQ_OVFL => "SO_RXQ_OVFL",
            libc::SO_BUSY_POLL => "SO_BUSY_POLL",
            libc::SO_INCOMING_CPU => "SO_INCOMING_CPU",
            libc::SO_ZEROCOPY => "SO_ZEROCOPY",
            libc::SO_TIMESTAMPING => "SO_TIMESTAMPING",
            libc::SO_MAX_PACING_RATE => "SO_MAX_PACING_RATE",
            libc::SO_ATTACH_FILTER => "SO_ATTACH_FILTER",
            libc::SO_ATTACH_REUSEPORT_CBPF => "SO_ATTACH_REUSEPORT_CBPF",
            libc::SO_ATTACH_REUSEPORT_EBPF => "SO_ATTACH_REUSEPORT_EBPF",
            libc::SO_COOKIE => "SO_COOKIE",
            libc::SO_PEEK_OFF => "SO_PEEK_OFF",
            _ => "",
        },
        (libc::IPPROTO_TCP, n) => match n {
            libc::TCP_NODELAY => "TCP_NODELAY",
            libc::TCP_MAXSEG => "TCP_MAXSEG",
            libc::TCP_CORK => "TCP_CORK",
            libc::TCP_KEEPIDLE => "TCP_KEEPIDLE",
            libc::TCP_KEEPINTVL => "TCP_KEEPINTVL",
            libc::TCP_KEEPCNT => "TCP_KEEPCNT",
            libc::TCP_SYNCNT => "TCP_SYNCNT",
            libc::TCP_LINGER2 => "TCP_LINGER2",
            libc::TCP_DEFER_ACCEPT => "TCP_DEFER_ACCEPT",
            libc::TCP_WINDOW_CLAMP => "TCP_WINDOW_CLAMP",
            libc::TCP_INFO => "TCP_INFO",
            libc::TCP_QUICKACK => "TCP_QUICKACK",
            libc::TCP_CONGESTION => "TCP_CONGESTION",
            libc::TCP_USER_TIMEOUT => "TCP_USER_TIMEOUT",
            libc::TCP_FASTOPEN => "TCP_FASTOPEN",
            libc::TCP_FASTOPEN_CONNECT => "TCP_FASTOPEN_CONNECT",
            libc::TCP_NOTSENT_LOWAT => "TCP_NOTSENT_LOWAT",
            libc::TCP_ULP => "TCP_ULP",
            libc::TCP_REPAIR => "TCP_REPAIR",
            _ => "",
        },
        (libc::IPPROTO_IP, n) => match n {
            libc::IP_TOS => "IP_TOS",
            libc::IP_TTL => "IP_TTL",
            libc::IP_MTU_DISCOVER => "IP_MTU_DISCOVER",
            libc::IP_RECVERR => "IP_RECVERR",
            libc::IP_FREEBIND => "IP_FREEBIND",
            libc::IP_TRANSPARENT => "IP_TRANSPARENT",
            libc::IP_BIND_ADDRESS_NO_PORT => "IP_BIND_ADDRESS_NO_PORT",
            libc::IP_PKTINFO => "IP_PKTINFO",
            libc::IP_MTU => "IP_MTU",
            _ => "",
        },
        (libc::IPPROTO_IPV6, n) => match n {
            libc::IPV6_V6ONLY => "IPV6_V6ONLY",
            libc::IPV6_TCLASS => "IPV6_TCLASS",
            libc::IPV6_UNICAST_HOPS => "IPV6_UNICAST_HOPS",
            libc::IPV6_RECVPKTINFO => "IPV6_RECVPKTINFO",
            libc::IPV6_MTU_DISCOVER => "IPV6_MTU_DISCOVER",
            _ => "",
        },
        _ => "",
    };
    match (lvl, opt) {
        ("", _) => format!("{level}.{name}"),
        (l, "") => format!("{l}.{name}"),
        (l, o) => format!("{l}.{o}"),
    }
}

#[repr(C)]
struct Header {
    magic: u64,
    layout: u64,
    pid: u64,
    count: u64,
    iface: [u8; 16],
}

const HEADER_LEN: usize = std::mem::size_of::<Header>();

fn counters_end() -> usize {
    HEADER_LEN + Counter::ALL.len() * 8
}

/// The counters, then [`OPTION_SLOTS`] pairs of (key, count) words, then the reason
/// trailer: its length (an atomic, 0 while the fast path runs) and its bytes, written
/// once before the length is published; then one word per counter of what departed
/// members of the family added (see [`StatsSegment::fold`]).
fn segment_len() -> usize {
    departed_offset() + Counter::ALL.len() * 8
}

fn departed_offset() -> usize {
    (reason_offset() + 8 + REASON_LEN).next_multiple_of(8)
}

fn reason_offset() -> usize {
    counters_end() + OPTION_SLOTS * 16
}

/// Path of a process's segment.
pub fn segment_path(pid: u32) -> PathBuf {
    Path::new(SHM_DIR).join(format!("fastnet-{pid}.stats"))
}

/// The abstract Unix socket address (`struct sockaddr_un` bytes) on which the fastnet
/// process `pid` takes control requests (`fastnet handoff`), in its network namespace.
pub fn control_address(pid: u32) -> Vec<u8> {
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.push(0);
    a.extend_from_slice(format!("fastnet-ctl-{pid}").as_bytes());
    a
}

/// A mapped segment (writer or reader).
pub struct StatsSegment {
    base: NonNull<u8>,
    len: usize,
    path: PathBuf,
    /// PID of the creating process: only it removes the file (a forked child that
    /// inherited the mapping must not).
    owner: Option<u32>,
}

// SAFETY: the mapping is only accessed through atomics and the immutable header.
unsafe impl Send for StatsSegment {}
// SAFETY: as above; every shared access is atomic.
unsafe impl Sync for StatsSegment {}

fn map(file: &File, len: usize, writable: bool) -> io::Result<NonNull<u8>> {
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh shared mapping of a file we hold open, of the file's length.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned null"))
}

impl StatsSegment {
    /// Creates (or replaces) the segment of process `pid`.
    pub fn create(pid: u32, iface: &str) -> io::Result<StatsSegment> {
        Self::create_at(segment_path(pid), pid, iface)
    }

    /// Creates a segment at an explicit path (tests).
    pub fn create_at(path: PathBuf, pid: u32, iface: &str) -> io::Result<StatsSegment> {
        let len = segment_len();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.set_len(len as u64)?;
        let base = map(&file, len, true)?;
        let mut name = [0u8; 16];
        let n = iface.len().min(15);
        name[..n].copy_from_slice(&iface.as_bytes()[..n]);
        let header = Header {
            magic: MAGIC,
            layout: layout_hash(),
            pid: pid as u64,
            count: Counter::ALL.len() as u64,
            iface: name,
        };
        // SAFETY: the mapping is at least HEADER_LEN bytes, page-aligned, and ours.
        unsafe { base.as_ptr().cast::<Header>().write(header) };
        Ok(StatsSegment {
            base,
            len,
            path,
            owner: Some(std::process::id()),
        })
    }

    /// Opens another process's segment for reading.
    pub fn open(path: &Path) -> io::Result<StatsSegment> {
        Self::open_mapped(path, false)
    }

    /// Opens another process's segment to [`fold`](Self::fold) counters into it.
    pub fn open_to_fold(path: &Path) -> io::Result<StatsSegment> {
        Self::open_mapped(path, true)
    }

    fn open_mapped(path: &Path, writable: bool) -> io::Result<StatsSegment> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment too short",
            ));
        }
        let base = map(&file, len, writable)?;
        let seg = StatsSegment {
            base,
            len,
            path: path.to_path_buf(),
            owner: None,
        };
        let h = seg.header();
        if h.magic != MAGIC || h.layout != layout_hash() || len != segment_len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} was written by another fastnet version: use that version's `fastnet stat`",
                    path.display()
                ),
            ));
        }
        Ok(seg)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping holds a header written at creation and never changed.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn cell(&self, c: Counter) -> &AtomicU64 {
        self.word(HEADER_LEN + c as usize * 8)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= self.len && offset.is_multiple_of(8));
        // SAFETY: `offset` is inside the segment (checked at open/create to be
        // segment_len() long) and 8-byte aligned; the words are only used atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Counts one unsupported socket option by call, level and name: takes the slot
    /// holding this triple, or claims a free one (lock-free: a compare-and-swap on the
    /// key). With every slot taken, only [`Counter::UnsupportedOptions`] counts it.
    pub fn count_option(&self, call: OptionCall, level: i32, name: i32) {
        let key = slot_key(call, level, name);
        for i in 0..OPTION_SLOTS {
            let at = counters_end() + i * 16;
            let k = self.word(at);
            let cur = match k.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => key,
                Err(other) => other,
            };
            if cur == key {
                self.word(at + 8).fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    /// The unsupported options counted so far, in the order first met.
    pub fn option_counts(&self) -> Vec<OptionCount> {
        (0..OPTION_SLOTS)
            .map(|i| counters_end() + i * 16)
            .map(|at| (self.word(at).load(Ordering::Acquire), self.word(at + 8)))
            .take_while(|(k, _)| k & SLOT_USED != 0)
            .map(|(k, n)| OptionCount {
                call: if k & SLOT_GET != 0 {
                    OptionCall::Get
                } else {
                    OptionCall::Set
                },
                level: ((k >> 32) & 0x3fff_ffff) as i32,
                name: k as u32 as i32,
                count: n.load(Ordering::Relaxed),
            })
            .collect()
    }

    pub fn add(&self, c: Counter, n: u64) {
        self.cell(c).fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, c: Counter, v: u64) {
        self.cell(c).store(v, Ordering::Relaxed);
    }

    /// This process's count plus what departed members folded into it.
    pub fn get(&self, c: Counter) -> u64 {
        self.cell(c).load(Ordering::Relaxed) + self.departed(c).load(Ordering::Relaxed)
    }

    /// This process's own count, without what departed members folded into it.
    pub fn own(&self, c: Counter) -> u64 {
        self.cell(c).load(Ordering::Relaxed)
    }

    fn departed(&self, c: Counter) -> &AtomicU64 {
        self.word(departed_offset() + c as usize * 8)
    }

    /// Adds the counters (not the gauges) of `member`, a family member that is
    /// exiting, to this segment's departed block, so a forking server's totals keep
    /// what its short-lived children carried. Counts one departed member.
    pub fn fold(&self, member: &StatsSegment) {
        for &c in Counter::ALL.iter().filter(|c| !c.is_gauge()) {
            let n = member.get(c) + u64::from(c == Counter::FamilyDeparted);
            self.departed(c).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records why this process's sockets are on the kernel (`fastnet stat` shows
    /// "kernel: <reason>"). Only the first reason is kept: a process never goes back.
    pub fn set_kernel_reason(&self, reason: &str) {
        let len = self.reason_len();
        if len.load(Ordering::Acquire) != 0 {
            return;
        }
        let text = if reason.is_empty() { "unknown" } else { reason };
        let mut n = text.len().min(REASON_LEN);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: the trailer holds REASON_LEN >= n bytes after the length word, inside
        // the mapping; nobody reads them before the length below is published.
        unsafe {
            std::ptr::copy_nonoverlapping(
                text.as_ptr(),
                self.base.as_ptr().add(reason_offset() + 8),
                n,
            )
        };
        len.store(n as u64, Ordering::Release);
    }

    /// Why this process's sockets are on the kernel; None while the fast path runs.
    pub fn kernel_reason(&self) -> Option<String> {
        let n = (self.reason_len().load(Ordering::Acquire) as usize).min(REASON_LEN);
        if n == 0 {
            return None;
        }
        // SAFETY: the first n bytes of the trailer were written before n was published.
        let b =
            unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(reason_offset() + 8), n) };
        Some(String::from_utf8_lossy(b).into_owned())
    }

    fn reason_len(&self) -> &AtomicU64 {
        // SAFETY: the length word lies inside the mapping, 8-byte aligned after the
        // counters, and is only used atomically.
        unsafe { &*self.base.as_ptr().add(reason_offset()).cast::<AtomicU64>() }
    }

    pub fn pid(&self) -> u32 {
        self.header().pid as u32
    }

    pub fn iface(&self) -> String {
        let n = &self.header().iface;
        let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
        String::from_utf8_lossy(&n[..end]).into_owned()
    }

    /// All counters with their names, in layout order.
    pub fn snapshot(&self) -> Vec<(Counter, u64)> {
        Counter::ALL.iter().map(|&c| (c, self.get(c))).collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StatsSegment {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference outlives self.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        if self.owner == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Segments of processes that exist now: (pid, path). Segments of dead processes
/// (killed before they could remove theirs) are removed on the way.
pub fn live_segments() -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("fastnet-")
            .and_then(|r| r.strip_suffix(".stats"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            out.push((pid, e.path()));
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fastnet-test-{}-{name}.stats", std::process::id()))
    }

    #[test]
    fn writer_and_reader_see_the_same_counters() {
        let path = tmp("rw");
        let w = StatsSegment::create_at(path.clone(), 4242, "veth-srv").unwrap();
        w.add(Counter::RxFrames, 3);
        w.add(Counter::RxFrames, 4);
        w.set(Counter::TcpEstablished, 9);
        let r = StatsSegment::open(&path).unwrap();
        assert_eq!(r.get(Counter::RxFrames), 7);
        assert_eq!(r.get(Counter::TcpEstablished), 9);
        assert_eq!(r.get(Counter::TxBytes), 0);
        assert_eq!(r.pid(), 4242);
        assert_eq!(r.iface(), "veth-srv");
        w.add(Counter::RxFrames, 1);
        assert_eq!(r.get(Counter::RxFrames), 8, "reader sees live updates");
        drop(r);
        drop(w);
        assert!(!path.exists(), "the owner removes its segment");
    }

    #[test]
    fn a_departed_member_s_counters_fold_into_the_survivor_s() {
        let (pp, cp) = (tmp("fold-parent"), tmp("fold-child"));
        let parent = StatsSegment::create_at(pp.clone(), 5001, "b").unwrap();
        let child = StatsSegment::create_at(cp.clone(), 5002, "b").unwrap();
        parent.set(Counter::RxBytes, 100);
        parent.set(Counter::TcpEstablished, 2);
        child.set(Counter::RxBytes, 40);
        child.set(Counter::TcpEstablished, 5);
        child.add(Counter::FamilyMovedIn, 3);
        StatsSegment::open_to_fold(&pp).unwrap().fold(&child);
        drop(child);
        let r = StatsSegment::open(&pp).unwrap();
        assert_eq!(r.get(Counter::RxBytes), 140, "counters add up");
        assert_eq!(
            r.get(Counter::TcpEstablished),
            2,
            "gauges are the survivor's own"
        );
        assert_eq!(r.get(Counter::FamilyMovedIn), 3);
        assert_eq!(r.get(Counter::FamilyDeparted), 1);
        assert_eq!(r.own(Counter::RxBytes), 100, "the process's own part");
        // The survivor's publisher overwrites its own cells, never the folded part.
        parent.set(Counter::RxBytes, 150);
        assert_eq!(r.get(Counter::RxBytes), 190);
        // A grandchild folded into the child travels on with it.
        let child2 = StatsSegment::create_at(cp, 5003, "b").unwrap();
        let grandchild = StatsSegment::create_at(tmp("fold-gc"), 5004, "b").unwrap();
        grandchild.set(Counter::TxBytes, 7);
        child2.fold(&grandchild);
        StatsSegment::open_to_fold(&pp).unwrap().fold(&child2);
        assert_eq!(r.get(Counter::TxBytes), 7);
        assert_eq!(r.get(Counter::FamilyDeparted), 3);
    }

    #[test]
    fn the_kernel_reason_is_published_once() {
        let path = tmp("reason");
        let w = StatsSegment::create_at(path.clone(), 4243, "b").unwrap();
        let r = StatsSegment::open(&path).unwrap();
        assert_eq!(r.kernel_reason(), None);
        w.set_kernel_reason("interface b is gone: new sockets use the kernel");
        w.set_kernel_reason("a later reason is ignored");
        assert_eq!(
            r.kernel_reason().as_deref(),
            Some("interface b is gone: new sockets use the kernel")
        );
        let long = "é".repeat(200);
        let w2 = StatsSegment::create_at(tmp("reason2"), 4244, "b").unwrap();
        w2.set_kernel_reason(&long);
        let got = w2.kernel_reason().unwrap();
        assert!(got.len() <= REASON_LEN && long.starts_with(&got), "{got}");
    }

    #[test]
    fn reader_refuses_foreign_layouts() {
        let path = tmp("foreign");
        std::fs::write(&path, vec![7u8; segment_len()]).unwrap();
        let err = StatsSegment::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("another fastnet version"), "{err}");
        std::fs::write(&path, [1u8; 4]).unwrap();
        assert!(StatsSegment::open(&path).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unsupported_options_are_counted_by_name() {
        let path = tmp("options");
        let w = StatsSegment::create_at(path.clone(), 4243, "").unwrap();
        w.count_option(OptionCall::Set, libc::IPPROTO_TCP, libc::TCP_CONGESTION);
        w.count_option(OptionCall::Get, libc::SOL_SOCKET, libc::SO_PEEK_OFF);
        w.count_option(OptionCall::Set, libc::IPPROTO_TCP, libc::TCP_CONGESTION);
        let r = StatsSegment::open(&path).unwrap();
        let got: Vec<(String, u64)> = r
            .option_counts()
            .iter()
            .map(|o| (o.label(), o.count))
            .collect();
        assert_eq!(
            got,
            [
                ("setsockopt.SOL_TCP.TCP_CONGESTION".to_string(), 2),
                ("getsockopt.SOL_SOCKET.SO_PEEK_OFF".to_string(), 1)
            ]
        );
        for name in 0..OPTION_SLOTS as i32 + 5 {
            w.count_option(OptionCall::Set, 999, name);
        }
        assert_eq!(
            r.option_counts().len(),
            OPTION_SLOTS,
            "full table: no more slots"
        );
        assert_eq!(option_name(999, 7), "999.7");
    }

    #[test]
    fn names_are_unique_and_gauges_marked() {
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        assert!(Counter::TcpEstablished.is_gauge());
        assert!(!Counter::RxFrames.is_gauge());
    }
}
