//! The process's fast path: the stack, the interface it runs on, the app's fast-path
//! fds and epoll sets, all behind one lock (`process::engine()`).
//!
//! Whoever holds the lock drives the stack (`drive`): frames in from the XSK rings,
//! timers, frames out, then readiness changes out to whoever waits for them. Nobody
//! sleeps with the lock held: a blocking call registers a [`Waiter`] (its thread's
//! eventfd), drops the lock, and sleeps in `ppoll` on that eventfd plus the XSK fds.

use super::config::{Config, LoopbackMode};
use super::epoll::EpollSet;
use super::fdtable::FdTable;
use super::kernel;
use super::netdev::{FastIface, LOOPBACK_MTU};
use fastnet_stats::{Counter, OptionCall, StatsSegment};
use stack::iface::{Interface, InterfaceConfig, NeighborMode};
use stack::socket::{Readiness, SocketHandle, SocketKind};
use stack::tcp::{SocketOptions, TcpConfig};
use stack::time::{Duration, Instant};
use stack::wire::{Ipv4Cidr, Ipv6Cidr, MacAddr};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use xdp_backend::portmap::Transport;

/// What a fast-path fd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `socket()` done; bind/listen/connect decide whether it stays ours.
    TcpFresh,
    TcpListener(SocketHandle),
    TcpStream(SocketHandle),
    /// UDP not yet bound to the fast-path address: the kernel's until it is.
    UdpFresh,
    Udp(SocketHandle),
}

impl Kind {
    /// Whether the shadow belongs in the app's kernel epoll: it is where data arrives
    /// for fresh UDP, and where kernel connections (loopback) queue for listeners and
    /// kernel datagrams for UDP. A fresh or connected TCP shadow would report nonsense.
    pub fn shadow_in_kernel_epoll(self) -> bool {
        matches!(self, Kind::UdpFresh | Kind::Udp(_) | Kind::TcpListener(_))
    }
    /// Whether the stack's readiness of this socket is reported through our epoll half.
    pub fn in_fast_epoll(self) -> bool {
        !matches!(self, Kind::UdpFresh)
    }
    /// The stack socket it names, once it has one.
    pub fn handle(self) -> Option<SocketHandle> {
        match self {
            Kind::TcpListener(h) | Kind::TcpStream(h) | Kind::Udp(h) => Some(h),
            Kind::TcpFresh | Kind::UdpFresh => None,
        }
    }
}

/// The app epolls a socket is registered in: a small inline set, so that a socket's
/// description is `Copy` and reading it on every call allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpollList {
    fds: [i32; 8],
    n: u8,
}

impl EpollList {
    /// Adds `epfd`; false when the list is full (the caller answers ENOSPC, as Linux
    /// does past its watch limit).
    pub fn insert(&mut self, epfd: i32) -> bool {
        if self.contains(epfd) {
            return true;
        }
        if self.n as usize == self.fds.len() {
            return false;
        }
        self.fds[self.n as usize] = epfd;
        self.n += 1;
        true
    }
    pub fn remove(&mut self, epfd: i32) {
        let found = self.iter().position(|x| x == epfd);
        if let Some(i) = found {
            self.n -= 1;
            self.fds[i] = self.fds[self.n as usize];
        }
    }
    pub fn contains(&self, epfd: i32) -> bool {
        self.iter().any(|x| x == epfd)
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.fds[..self.n as usize].iter().copied()
    }
}

/// One fast-path socket (shared by the fds that `dup` made of it).
#[derive(Clone, Copy, Debug)]
pub struct FastSocket {
    pub kind: Kind,
    /// Created AF_INET6: addresses are shown v4-mapped.
    pub v6: bool,
    /// O_NONBLOCK as the app set it (the shadow itself is always nonblocking).
    pub nonblocking: bool,
    pub rcvtimeo: Option<std::time::Duration>,
    pub sndtimeo: Option<std::time::Duration>,
    /// Options set before the stack socket existed, applied when it is made.
    pub opts: SocketOptions,
    /// TCP_KEEPIDLE/INTVL/CNT, kept while SO_KEEPALIVE is off.
    pub keepalive_params: stack::tcp::Keepalive,
    /// Port claimed in the XDP port map (released on close).
    pub claimed: Option<(Transport, u16)>,
    /// App epoll fds this socket is registered in.
    pub epolls: EpollList,
    /// The fd the stack's readiness changes are reported under.
    pub primary_fd: i32,
    /// The shadow is bound to the connection's local port (connect side).
    pub holds_port: bool,
    /// The receive cmsgs (IP_PKTINFO, SO_TIMESTAMP, ...) a UDP socket asked for.
    pub recv_cmsgs: super::cmsg::RecvCmsgs,
}

/// A connection the app closed that the stack is still finishing (data, FIN, the
/// peer's FIN). The stack's handle stays open (our FIN went out through `shutdown`):
/// the stack answers nothing about a handle once it is closed, and we must know when
/// the connection is done before the port stops being steered to us (a segment that
/// reaches the kernel instead gets a RST from the shadow).
#[derive(Clone, Copy, Debug)]
struct Closing {
    handle: SocketHandle,
    /// The port to unclaim when done (None: a loopback connection claims none).
    port: Option<(Transport, u16)>,
    /// The loopback port to take out of the host registry when done (host mode).
    host_port: Option<u16>,
    /// A copy of the shadow kept open (high fd) so the kernel does not hand the
    /// connection's local port to another socket while the stack still uses it.
    held_fd: i32,
    /// When the connection reached FIN-WAIT-2 (the peer has yet to close).
    fin_wait2_since: Option<Instant>,
    /// When the connection was first seen CLOSED (see `port_free_after_close`).
    closed_since: Option<Instant>,
}

/// Eventfds to signal after unlocking. Only threads' own eventfds go here: they live
/// as long as the process, so signalling one after the lock is gone is always safe.
#[derive(Clone, Copy, Debug, Default)]
pub struct WakeList {
    fds: [i32; 16],
    n: usize,
}

impl WakeList {
    /// Remembers `fd`; false (signal it now) when the list is full.
    fn push(&mut self, fd: i32) -> bool {
        if self.fds[..self.n].contains(&fd) {
            return true;
        }
        if self.n == self.fds.len() {
            return false;
        }
        self.fds[self.n] = fd;
        self.n += 1;
        true
    }
    /// Signals every remembered eventfd.
    pub fn signal_all(&self) {
        for &fd in &self.fds[..self.n] {
            kernel::eventfd_signal(fd);
        }
    }
}

/// How long a closed connection may wait in FIN-WAIT-2 for the peer's FIN (Linux's
/// tcp_fin_timeout).
const FIN_WAIT2_TIMEOUT_US: u64 = 60_000_000;

/// Whether the local port of a connection that ended CLOSED at `closed` (the peer
/// closed first and acknowledged our FIN) may go back to the kernel at `now`. The
/// kernel's bind(0) may hand it out again at once, and a SYN from it in the same
/// millisecond carries the timestamp of our last segment and, after a request or two,
/// an ISN below the old connection's sequence space: the peer's TIME-WAIT refuses it
/// (as Linux's does), its ACK draws a RST and the new connection waits 1 s for its SYN
/// retransmission. Once the millisecond timestamp clock has ticked, every new SYN's
/// timestamp is above what the TIME-WAIT holds, and it is let through.
fn port_free_after_close(closed: Instant, now: Instant) -> bool {
    now.millis() > closed.millis()
}

/// A thread sleeping until a socket changes.
#[derive(Clone, Copy, Debug)]
pub struct Waiter {
    pub handle: SocketHandle,
    pub eventfd: i32,
}

pub struct Engine {
    pub config: Config,
    pub iface: Interface,
    pub dev: FastIface,
    pub fds: FdTable<FastSocket>,
    /// App epoll fd → its fast-path half.
    pub epolls: HashMap<i32, EpollSet>,
    pub waiters: Vec<Waiter>,
    /// Waiters' eventfds to signal once the lock is released (see `EngineGuard`): a
    /// woken thread then finds the lock free instead of spinning on it.
    wake_after_unlock: WakeList,
    handle_fd: HashMap<SocketHandle, i32>,
    /// SO_REUSEPORT listeners on an address this process's stack already listens on:
    /// more fds of that listener (one accept queue here; each process of the family
    /// that uses one listens in its own stack), woken with it.
    listener_twins: Vec<(SocketHandle, i32)>,
    /// Connections the app closed that the stack still finishes (FIN, TIME-WAIT):
    /// their ports stay claimed until the stack lets them go.
    closing: Vec<Closing>,
    resolving: Vec<(IpAddr, Instant)>,
    /// Sockets using each claimed port: a listener and its accepted connections share
    /// one port, which stays steered to us until the last of them is gone.
    claims: HashMap<(Transport, u16), u32>,
    stats_published: Instant,
    /// The process is exiting and closed the app's sockets: `has_unsent` also waits
    /// for the peers' FINs (see `has_unsent`).
    pub exiting: bool,
    pub stats: Option<StatsSegment>,
    /// Copies frames to `fastnet pcap` while one captures this process.
    pub tap: fastnet_capture::CaptureTap,
    /// This process's place in its family (None: no interface, loopback only).
    pub family: Option<super::handoff::Membership>,
    /// Connections this process asked their holders to relay (see `relay`): execvp
    /// tries execve once per directory of PATH, and one request is enough.
    pub relays_asked: Vec<super::mailbox::ConnKey>,
    /// Connections handed to kernel sockets (see `kernel_handoff`): frames of theirs
    /// that were already on our rings go to the kernel through the loopback device
    /// (`loopback_packets`), or are dropped; never answered with a RST.
    /// (Kept a second: after that none can still be on our rings, and while any is
    /// kept every received frame takes the slower filtering path.)
    pub handed_to_kernel: Vec<(super::mailbox::ConnKey, Instant)>,
    /// Packet socket that passes such frames to the kernel (opened at the first move
    /// to the kernel; None until then or if it cannot be opened).
    pub loopback_packets: Option<i32>,
    /// When `sweep_kernel_flows` looks next.
    pub kernel_sweep_at: Instant,
    /// Kernel flow entries whose connection the kernel did not have, since when.
    pub kernel_flow_absent: Vec<(super::mailbox::ConnKey, Instant)>,
    /// Requests of `fastnet handoff` (see `control`).
    pub control: Option<super::control::ControlSocket>,
    /// A request waiting for the app's calls in flight to finish: (request, sender,
    /// since when).
    pub pending_control: Option<(super::control::Request, Vec<u8>, Instant)>,
}

/// Calls of the app's threads inside the socket layer now, other than the waits for
/// readiness (epoll, poll, select, accept): such a call may have looked a connection's
/// handle up before it takes the engine's lock, so a connection moves between the
/// stack and the kernel only while none is in flight (see `kernel_handoff`).
pub static CALLS_IN_FLIGHT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A move waits for `CALLS_IN_FLIGHT` to reach 0: meanwhile no new call enters (each
/// waits at the door, see `calls::CallsInFlight`), so once it is 0 it stays 0 until
/// the move is done. Without the door a call that came in just after the count was
/// read acted on what it had looked up before the move (a fast fd's epoll interest
/// written to the kernel's epoll, or the reverse: the app's epoll lost the fd).
pub static MOVE_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Kernel sockets that came from a move to the kernel (one bit per fd): the app's calls
/// on them still come to the hook (the fd stays marked) and wait at the door, since a
/// move back to the stack reads such a socket in repair mode, where a read fails
/// (EPERM) and a write goes into the send queue already read (lost).
static MOVED_KERNEL_FDS: [std::sync::atomic::AtomicU64; MOVED_FD_WORDS] =
    [const { std::sync::atomic::AtomicU64::new(0) }; MOVED_FD_WORDS];
const MOVED_FD_WORDS: usize = rewriter::filter::MAX_FD / 64;

/// Marks (or unmarks) `fd` as a kernel socket that came from a move to the kernel.
pub fn set_moved_kernel_fd(fd: i32, moved: bool) {
    let Ok(i) = usize::try_from(fd) else {
        return;
    };
    let Some(word) = MOVED_KERNEL_FDS.get(i / 64) else {
        return;
    };
    let bit = 1u64 << (i % 64);
    if moved {
        word.fetch_or(bit, std::sync::atomic::Ordering::SeqCst);
    } else {
        word.fetch_and(!bit, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Forgets the moved kernel sockets among fds `lo..=hi` (the app replaced or closed
/// them by other means than close).
pub fn forget_moved_kernel_fds(lo: u64, hi: u64) {
    let last = hi.min(rewriter::filter::MAX_FD as u64 - 1);
    for fd in lo..=last {
        if fd % 64 == 0 && last - fd >= 63 {
            MOVED_KERNEL_FDS[fd as usize / 64].store(0, std::sync::atomic::Ordering::SeqCst);
        } else {
            set_moved_kernel_fd(fd as i32, false);
        }
    }
}

/// True when `fd` is a kernel socket that came from a move to the kernel.
pub fn is_moved_kernel_fd(fd: i32) -> bool {
    usize::try_from(fd).ok().is_some_and(|i| {
        MOVED_KERNEL_FDS
            .get(i / 64)
            // Relaxed: a call that misses a bit just set takes the socket layer's
            // path, which passes an fd it does not know to the kernel (as before the
            // move was done; the door orders the rest).
            .is_some_and(|w| w.load(std::sync::atomic::Ordering::Relaxed) & 1 << (i % 64) != 0)
    })
}

/// When the stack last ran (µs on the engine's clock): the background driver only
/// steps in when the app's threads have not driven it for a while.
pub static LAST_DRIVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bumped whenever `notify` finds readiness changes: busy-polling threads watch it to
/// see a loopback peer's data without taking the lock.
pub static READINESS_EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many frames one drive takes from each RX ring.
const RX_BUDGET: u32 = 256;

/// Frames `drive_batched` lets gather before it kicks anyway (copy mode sends 32 per
/// kick).
const TX_BATCH: u32 = 32;

impl Engine {
    pub fn new(config: Config, dev: FastIface, stats: Option<StatsSegment>) -> Engine {
        let mut ic =
            InterfaceConfig::new(MacAddr(dev.mac), Ipv4Cidr::new(dev.addr, dev.prefix_len));
        ic.neighbor_mode = NeighborMode::External;
        ic.mtu = dev.mtu;
        // The interface's IPv6 addresses are the stack's too; the kernel keeps Neighbor
        // Discovery (and DAD) as it keeps ARP, and the stack reads its neighbour table.
        if dev.has_xdp() {
            super::sockaddr::set_link_scope(dev.ifindex);
            ic.ipv6_addrs = dev
                .addrs6
                .iter()
                .map(|&(a, len)| Ipv6Cidr::new(a, len))
                .collect();
        }
        if config.loopback != LoopbackMode::Off {
            if dev.has_xdp() {
                ic.addrs.push(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 8));
            }
            ic.loopback_mtu = Some(LOOPBACK_MTU);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (kernel::getpid() as u64) << 32;
        ic.seed = seed;
        // ISNs and timestamp offsets come from a secret shared by every fastnet process
        // of this boot, on the host-wide clock below (as Linux's come from one secret
        // per boot): a new process's SYN then carries a timestamp above what the peer
        // remembers from our earlier process on the same 4-tuple, and the peer's
        // TIME-WAIT lets it through instead of stalling the connect by an RTO.
        let secret = host_secret().unwrap_or(seed);
        let tcp = TcpConfig {
            max_sockets: config.max_sockets,
            // A connection the full pool cannot take goes to the kernel (see
            // `kernel_handoff`), which needs the XDP program to send its flow there.
            overflow_to_host: dev.has_xdp(),
            isn_secret: Some([secret, secret.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15]),
            ..TcpConfig::default()
        };
        let iface = Interface::new(ic, tcp);
        Engine {
            config,
            iface,
            dev,
            fds: FdTable::new(super::fdtable::MAX_FDS, 8192),
            epolls: HashMap::with_capacity(16),
            waiters: Vec::with_capacity(64),
            wake_after_unlock: WakeList::default(),
            handle_fd: HashMap::with_capacity(8192),
            listener_twins: Vec::new(),
            closing: Vec::with_capacity(1024),
            resolving: Vec::with_capacity(16),
            claims: HashMap::with_capacity(1024),
            stats_published: Instant::ZERO,
            exiting: false,
            stats,
            tap: fastnet_capture::CaptureTap::new(kernel::getpid() as u32),
            family: None,
            relays_asked: Vec::new(),
            handed_to_kernel: Vec::new(),
            loopback_packets: None,
            kernel_sweep_at: Instant::ZERO,
            kernel_flow_absent: Vec::new(),
            control: None,
            pending_control: None,
        }
    }

    /// The stack's clock: CLOCK_MONOTONIC, the same in every process of the host, so
    /// TCP timestamps keep growing from one process to the next (see `host_secret`).
    pub fn now(&self) -> Instant {
        Instant::from_micros(monotonic_us())
    }

    /// How long a waiting thread spins on the RX rings before it sleeps (busy mode).
    pub fn spin_budget(&self) -> Option<std::time::Duration> {
        (self.config.poll == super::config::PollMode::Busy && self.config.spin_us > 0)
            .then(|| std::time::Duration::from_micros(self.config.spin_us as u64))
    }

    /// Time until the stack next needs to run, for sleeping callers.
    pub fn timer_timeout(&self) -> Option<std::time::Duration> {
        let at = self.iface.poll_at()?;
        let now = self.now();
        Some(std::time::Duration::from_micros(
            at.micros().saturating_sub(now.micros()),
        ))
    }

    /// Runs the stack: receive, timers, transmit, and tell waiters what changed.
    pub fn drive(&mut self) {
        self.drive_kick(true);
    }

    /// As [`Engine::drive`], but frames queued for transmit wait for the next kick
    /// unless a batch has gathered: for the app's data calls, which are followed by
    /// a wait (epoll/poll/a blocking call) that kicks. In copy mode each kick is a
    /// sendto(2) that also runs the peer's receive path, so one kick per app loop
    /// instead of one per send. Frames left over are kicked by whoever drives next,
    /// at the latest the background driver.
    pub fn drive_batched(&mut self) {
        self.drive_kick(false);
    }

    /// Kicks what [`Engine::drive_batched`] left queued.
    pub fn flush_tx(&mut self) {
        self.dev.flush();
    }

    fn drive_kick(&mut self, kick: bool) {
        if self.family.as_ref().is_some_and(|m| m.mail_waiting()) {
            // Before the rings: a member handing us a connection wrote to us before it
            // pointed the flow here (see `handoff`).
            self.serve_mailbox();
        }
        let now = self.now();
        LAST_DRIVE.store(now.micros(), std::sync::atomic::Ordering::Relaxed);
        self.tap.maybe_attach(now);
        self.receive_frames(now);
        let Engine { dev, iface, .. } = self;
        dev.receive_host(RX_BUDGET, &mut |frame| iface.receive_local(now, frame));
        self.pin_handshakes();
        self.resolve_neighbors(now);
        self.transmit(now, kick);
        self.overflow_to_kernel();
        self.notify();
        self.reap_closing();
        self.publish_stats();
    }

    /// Takes a batch of what the interface's rings hold into the stack; returns how
    /// many frames. Nothing is sent: replies wait for the next transmit.
    pub fn receive_frames(&mut self, now: Instant) -> usize {
        let mut n = 0;
        if !self.handed_to_kernel.is_empty()
            || self.family.as_ref().is_some_and(|m| m.filters_frames())
        {
            // Frames of connections on their way to or from another member of the
            // family are looked at first (see `handoff`).
            let mut frames = Vec::new();
            self.dev
                .receive(RX_BUDGET, |frame| frames.push(frame.to_vec()));
            n = frames.len();
            for frame in frames {
                self.tap.frame(fastnet_capture::Direction::Rx, &frame);
                if self.claim_frame(&frame) {
                    self.iface.receive(now, &frame);
                }
            }
        } else {
            let Engine {
                dev, iface, tap, ..
            } = self;
            dev.receive(RX_BUDGET, |frame| {
                n += 1;
                tap.frame(fastnet_capture::Direction::Rx, frame);
                iface.receive(now, frame)
            });
        }
        n
    }

    /// Sends what the stack has due; kicked now with `kick` (else once a batch
    /// gathered).
    pub fn transmit(&mut self, now: Instant, kick: bool) {
        let Engine {
            dev, iface, tap, ..
        } = self;
        iface.dispatch(
            now,
            &mut fastnet_capture::TappedDevice::new(&mut dev.tx(), tap),
        );
        if kick || dev.tx_unkicked() >= TX_BATCH {
            dev.flush();
        }
    }

    /// Follows a change of the interface the kernel told us about: a new count of
    /// queues in use gets its sockets (counted, logged, and the new sockets join every
    /// epoll set the app sleeps in). Err: why the fast path cannot go on.
    pub fn follow_link(&mut self) -> Result<(), String> {
        match self.dev.follow_link_changes() {
            Ok(xdp_backend::LinkChange::None) => Ok(()),
            Ok(xdp_backend::LinkChange::Rebound { before, after }) => {
                self.count(Counter::IfaceRebinds);
                super::log::log(
                    super::config::LogLevel::Warn,
                    format_args!(
                        "{}: queues in use changed from {} to {}; AF_XDP sockets follow",
                        self.dev.name,
                        before.describe(),
                        after.describe()
                    ),
                );
                let fds: Vec<i32> = self.dev.poll_fds().collect();
                for &fd in &fds {
                    rewriter::filter::mark_fd(fd, true);
                }
                for &epfd in self.epolls.keys() {
                    for &fd in &fds {
                        // EEXIST for the sockets that were there already.
                        let _ = kernel::epoll_ctl(
                            epfd,
                            libc::EPOLL_CTL_ADD,
                            fd,
                            libc::EPOLLIN as u32,
                            super::epoll::MARKER_XSK,
                        );
                    }
                }
                self.publish_stats_now();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the stack waits for a next hop's MAC (IPv4 or IPv6).
    pub fn has_missing_neighbors(&self) -> bool {
        self.iface.missing_neighbors().next().is_some()
            || self.iface.missing_neighbors6().next().is_some()
    }

    /// Asks the kernel for next hops the stack lacks (the kernel owns ARP and Neighbor
    /// Discovery here).
    fn resolve_neighbors(&mut self, now: Instant) {
        let mut missing = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); 8];
        let mut n = 0;
        let v4 = self.iface.missing_neighbors().map(IpAddr::V4);
        let v6 = self.iface.missing_neighbors6().map(IpAddr::V6);
        for ip in v4.chain(v6).take(missing.len()) {
            missing[n] = ip;
            n += 1;
        }
        for &ip in &missing[..n] {
            match xdp_backend::netlink::neighbour(self.dev.ifindex, ip) {
                Ok(Some(nb)) if nb.is_usable() => {
                    if let Some(mac) = nb.mac {
                        match ip {
                            IpAddr::V4(a) => self.iface.set_neighbor(a, MacAddr(mac)),
                            IpAddr::V6(a) => self.iface.set_neighbor6(a, MacAddr(mac)),
                        }
                        self.resolving.retain(|r| r.0 != ip);
                    }
                }
                // The resolution we asked for failed: drop what waits for it, as the
                // kernel does (a FAILED entry from before we asked is asked again).
                Ok(Some(nb))
                    if u16::from(nb.state) == NUD_FAILED
                        && self.resolving.iter().any(|r| r.0 == ip) =>
                {
                    match ip {
                        IpAddr::V4(a) => self.iface.neighbor_failed(a, now),
                        IpAddr::V6(a) => self.iface.neighbor_failed6(a, now),
                    }
                    self.resolving.retain(|r| r.0 != ip);
                }
                _ => {
                    // Ask the kernel to resolve it, at most every 200 ms per address.
                    let recent = self
                        .resolving
                        .iter()
                        .any(|r| r.0 == ip && now.micros() < r.1.micros() + 200_000);
                    if !recent {
                        let _ =
                            xdp_backend::netlink::start_neighbour_resolution(self.dev.ifindex, ip);
                        self.resolving.retain(|r| r.0 != ip);
                        self.resolving.push((ip, now));
                    }
                }
            }
        }
    }

    /// Wakes threads and epoll sets whose sockets changed readiness.
    pub fn notify(&mut self) {
        let Engine {
            iface,
            waiters,
            wake_after_unlock,
            handle_fd,
            listener_twins,
            fds,
            epolls,
            ..
        } = self;
        let mut wake = |h: SocketHandle, r: Readiness| {
            READINESS_EVENTS.fetch_add(1, std::sync::atomic::Ordering::Release);
            for w in waiters.iter().filter(|w| w.handle == h) {
                if !wake_after_unlock.push(w.eventfd) {
                    kernel::eventfd_signal(w.eventfd);
                }
            }
            let Some(&fd) = handle_fd.get(&h) else {
                return;
            };
            let twins = listener_twins.iter().filter(|&&(t, _)| t == h);
            for fd in std::iter::once(fd).chain(twins.map(|&(_, f)| f)) {
                let Some(s) = fds.get(fd) else {
                    continue;
                };
                for ep in s.epolls.iter() {
                    if let Some(set) = epolls.get_mut(&ep) {
                        set.mark_edge(fd);
                        if !set.contains(fd) || set.would_report(fd, r.epoll_bits()) {
                            set.wake();
                        }
                    }
                }
            }
        };
        while let Some(c) = iface.tcp.readiness_queue().pop() {
            let r = iface.tcp.readiness(c.handle);
            wake(c.handle, r);
        }
        while let Some(c) = iface.pop_readiness_change() {
            let r = iface.udp.readiness(c.handle).unwrap_or_default();
            wake(c.handle, r);
        }
    }

    /// Whether `fd`, which named stack socket `h` when a call began, names another
    /// socket now: another member of the family took it (or this process took it back
    /// as a new socket) while the call waited, so the call must be made again
    /// (`process::LEFT_THIS_STACK`). A closed fd is not: the call ends as it would.
    pub fn names_elsewhere(&self, fd: i32, h: SocketHandle) -> bool {
        let Some(m) = self.family.as_ref() else {
            return false;
        };
        match self.fds.get(fd) {
            Some(s) => s.kind.handle() != Some(h),
            None => m.away.contains_key(&fd),
        }
    }

    /// Wakes the app's threads waiting on `h` (its connection went to another member:
    /// their calls find it gone and are made again, see `calls::handle`).
    pub fn wake_waiters_of(&mut self, h: SocketHandle) {
        for w in self.waiters.iter().filter(|w| w.handle == h) {
            if !self.wake_after_unlock.push(w.eventfd) {
                kernel::eventfd_signal(w.eventfd);
            }
        }
    }

    /// The eventfds `notify` left for after the unlock (emptied).
    pub fn take_wakes(&mut self) -> WakeList {
        std::mem::take(&mut self.wake_after_unlock)
    }

    /// Finishes the connections the app closed: once both FINs are through (TIME-WAIT,
    /// which the stack ends by itself, or CLOSED) the handle is closed and the port
    /// released. Data arriving after close() gets a RST, as from Linux.
    fn reap_closing(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        use stack::tcp::State;
        let now = self.now();
        let Engine {
            closing,
            iface,
            dev,
            ..
        } = self;
        let mut done_ports = [None; 16];
        let mut done_handles = [None; 16];
        let mut n = 0;
        closing.retain_mut(|c| {
            if n == done_ports.len() {
                return true;
            }
            let h = c.handle;
            let done = match iface.tcp.state(h) {
                Err(_) => true,
                Ok(State::TimeWait) => {
                    let _ = iface.tcp.close(h);
                    true
                }
                Ok(State::Closed) => {
                    let since = *c.closed_since.get_or_insert(now);
                    let free = port_free_after_close(since, now);
                    if free {
                        let _ = iface.tcp.close(h);
                    }
                    free
                }
                Ok(_) if iface.tcp.recv_queued(h).is_ok_and(|q| q > 0) => {
                    let _ = iface.tcp.abort(h);
                    true
                }
                Ok(State::FinWait2) => {
                    let since = *c.fin_wait2_since.get_or_insert(now);
                    if now.micros() >= since.micros() + FIN_WAIT2_TIMEOUT_US {
                        let _ = iface.tcp.abort(h);
                        true
                    } else {
                        false
                    }
                }
                Ok(_) => false,
            };
            if done {
                done_ports[n] = c.port;
                done_handles[n] = Some(h);
                n += 1;
                if let (Some(p), Some(h)) = (c.host_port, &dev.host) {
                    h.unregister(Transport::Tcp, p);
                }
                if c.held_fd >= 0 {
                    let _ = kernel::close(c.held_fd);
                }
            }
            !done
        });
        for &(t, p) in done_ports[..n].iter().flatten() {
            self.unclaim(t, p);
        }
        for &h in done_handles[..n].iter().flatten() {
            self.connection_gone(h);
        }
    }

    pub fn publish_stats(&mut self) {
        // Every 50 ms is live enough for `fastnet stat`, and reading the XSK's kernel
        // statistics is a syscall.
        let now = self.now();
        if now.micros() < self.stats_published.micros() + 50_000 {
            return;
        }
        self.stats_published = now;
        self.publish_stats_now();
    }

    /// Writes every counter now (at exit, and from `publish_stats`).
    pub fn publish_stats_now(&self) {
        let Some(seg) = &self.stats else { return };
        let s = self.iface.stats();
        seg.set(Counter::RxFrames, s.rx_frames);
        seg.set(Counter::RxBytes, s.rx_bytes);
        seg.set(Counter::TxFrames, s.tx_frames);
        seg.set(Counter::TxBytes, s.tx_bytes);
        seg.set(Counter::LoopbackFrames, s.looped_frames);
        seg.set(Counter::LoopbackBytes, s.looped_bytes);
        seg.set(Counter::LoopbackHostOut, s.host_frames);
        if let Some(h) = &self.dev.host {
            seg.set(Counter::LoopbackHostIn, h.frames_in);
            seg.set(Counter::LoopbackHostDropped, h.dropped);
        }
        seg.set(Counter::DropTxFull, s.tx_device_full);
        seg.set(
            Counter::DropMalformed,
            s.dropped_total() + t_malformed(&self.iface),
        );
        let t = self.iface.tcp.stats();
        seg.set(Counter::TcpSegmentsIn, t.segments_in);
        seg.set(Counter::TcpSegmentsOut, t.segments_out);
        seg.set(Counter::TcpRetransmits, t.retransmits);
        seg.set(Counter::TcpMoveProbes, t.move_probes);
        seg.set(Counter::TcpResetsIn, t.resets_received);
        seg.set(Counter::TcpResetsOut, t.resets_sent);
        seg.set(Counter::TcpSynCookies, t.syn_cookies_sent);
        seg.set(Counter::TcpActiveOpens, t.active_opens);
        seg.set(Counter::TcpPassiveOpens, t.passive_opens);
        let st = self.iface.tcp.connections_by_state();
        use stack::tcp::State;
        for (state, c) in [
            (State::Listen, Counter::TcpListen),
            (State::SynSent, Counter::TcpSynSent),
            (State::SynReceived, Counter::TcpSynReceived),
            (State::Established, Counter::TcpEstablished),
            (State::CloseWait, Counter::TcpCloseWait),
            (State::Closing, Counter::TcpClosing),
            (State::TimeWait, Counter::TcpTimeWait),
        ] {
            seg.set(c, st[state.index()] as u64);
        }
        seg.set(Counter::SocketsFast, self.fds.sockets_in_use() as u64);
        let (mut rx_drop, mut wake, mut lock_waits) = (0, 0, 0);
        for x in self.dev.xsk_stats() {
            rx_drop += x.kernel_rx_dropped;
            wake += x.tx_wakeups;
            lock_waits += x.lock_waits;
        }
        seg.set(Counter::DropRxRing, rx_drop);
        seg.set(Counter::XskLockWaits, lock_waits);
        seg.set(Counter::XskTxQueue, self.dev.tx_queue() as u64);
        seg.set(Counter::RxOtherQueues, self.dev.rx_other_queues());
        if let Some(q) = self.dev.queues() {
            seg.set(Counter::IfaceQueues, q.bindable() as u64);
        }
        if let Some(c) = self.dev.xdp_counters() {
            seg.set(Counter::DropNoXsk, c.dropped_no_xsk);
        }
        seg.set(Counter::TxWakeups, wake);
        seg.set(
            Counter::HandoffKernelFlows,
            super::family::kernel_flows() as u64,
        );
        seg.set(Counter::HookLateMapped, rewriter::late_rewritten() as u64);
        seg.set(Counter::HookLateSud, rewriter::sud_sites() as u64);
        seg.set(Counter::HookSudTraps, rewriter::sud_traps());
    }

    pub fn count(&self, c: Counter) {
        self.count_n(c, 1);
    }

    pub fn count_n(&self, c: Counter, n: u64) {
        if let Some(s) = &self.stats {
            s.add(c, n);
        }
    }

    /// Counts a socket option the fast path does not implement, in the total and by name.
    pub fn count_unsupported_option(&self, call: OptionCall, level: i32, name: i32) {
        if let Some(s) = &self.stats {
            s.add(Counter::UnsupportedOptions, 1);
            s.count_option(call, level, name);
        }
    }

    /// Steers `port` to the fast path (counted: several sockets may share a port).
    pub fn claim(&mut self, t: Transport, port: u16) -> std::io::Result<()> {
        let n = self.claims.entry((t, port)).or_insert(0);
        if *n == 0 {
            if let Err(e) = self.dev.claim(t, port) {
                self.claims.remove(&(t, port));
                return Err(e);
            }
        }
        *self.claims.get_mut(&(t, port)).expect("inserted") += 1;
        Ok(())
    }

    /// `claim` of an optional port map entry (None: nothing to claim).
    pub fn claim_entry(&mut self, c: Option<(Transport, u16)>) -> std::io::Result<()> {
        match c {
            Some((t, p)) => self.claim(t, p),
            None => Ok(()),
        }
    }

    /// `unclaim` of an optional port map entry.
    pub fn unclaim_entry(&mut self, c: Option<(Transport, u16)>) {
        if let Some((t, p)) = c {
            self.unclaim(t, p);
        }
    }

    /// Host mode: records that this process serves `local` (on 127/8 or any address)
    /// for other fastnet processes; nothing otherwise.
    pub fn host_register(&self, t: Transport, local: SocketAddr) {
        if let (true, Some(h)) = (on_loopback(local), &self.dev.host) {
            h.register(t, local.port());
        }
    }

    /// Undoes `host_register`.
    pub fn host_unregister(&self, t: Transport, local: SocketAddr) {
        if let (true, Some(h)) = (on_loopback(local), &self.dev.host) {
            h.unregister(t, local.port());
        }
    }

    /// Host mode: another live fastnet process serves `dst` (on 127/8).
    pub fn host_peer(&self, t: Transport, dst: SocketAddr) -> bool {
        dst.ip().is_loopback()
            && self
                .dev
                .host
                .as_ref()
                .is_some_and(|h| h.peer_of(t, dst.port()).is_some())
    }

    /// Drops one user of `port`; the last one gives it back to the kernel.
    pub fn unclaim(&mut self, t: Transport, port: u16) {
        if let Some(n) = self.claims.get_mut(&(t, port)) {
            *n -= 1;
            if *n == 0 {
                self.claims.remove(&(t, port));
                self.dev.release(t, port);
            }
        }
    }

    /// As `unclaim_entry`, for the claim of a connection that moved to member `to`:
    /// when it was this process's last use of the port, the port goes to `to`.
    pub fn unclaim_handing_to(&mut self, c: Option<(Transport, u16)>, to: u32) {
        let Some((t, port)) = c else { return };
        if let Some(n) = self.claims.get_mut(&(t, port)) {
            *n -= 1;
            if *n == 0 {
                self.claims.remove(&(t, port));
                self.dev.hand_over(t, port, to);
            }
        }
    }

    /// Makes `fd` (a fresh socket bound with SO_REUSEPORT where listener `h` of this
    /// stack already listens) another fd of that listener.
    pub fn add_listener_twin(&mut self, fd: i32, h: SocketHandle) {
        if let Some(s) = self.fds.get_mut(fd) {
            s.kind = Kind::TcpListener(h);
            s.claimed = None;
            s.primary_fd = fd;
        }
        self.listener_twins.push((h, fd));
    }

    /// The listener of this stack on exactly `local`, named by one of this process's
    /// fds (one the app closed may still drain there).
    pub fn listener_on(&self, local: SocketAddr) -> Option<SocketHandle> {
        self.iface
            .tcp
            .listener_for(local)
            .filter(|h| self.iface.tcp.local_addr(*h) == Ok(local))
            .filter(|h| self.handle_fd.contains_key(h))
    }

    /// The last fd of listener socket `s` (naming `h`) went away. True when another fd
    /// of the same listener (a SO_REUSEPORT twin) remains: the listener stays, reported
    /// under and claimed by that fd from now on.
    fn twin_closed(&mut self, h: SocketHandle, s: FastSocket) -> bool {
        let twins = &mut self.listener_twins;
        if let Some(i) = twins.iter().position(|&t| t == (h, s.primary_fd)) {
            // A twin: the fd the listener is reported under still holds it.
            twins.swap_remove(i);
            return true;
        }
        let Some(i) = twins.iter().position(|&(t, _)| t == h) else {
            return false;
        };
        let (_, heir) = twins.swap_remove(i);
        self.handle_fd.insert(h, heir);
        if let Some(t) = self.fds.get_mut(heir) {
            t.claimed = s.claimed;
        }
        true
    }

    /// Records that `fd` is the fd readiness of `h` is reported under.
    pub fn bind_handle(&mut self, h: SocketHandle, fd: i32) {
        self.handle_fd.insert(h, fd);
    }

    /// No fd of this process reports `h`'s readiness any more.
    pub fn handle_fd_forget(&mut self, h: SocketHandle) {
        self.handle_fd.remove(&h);
    }

    /// Closes the stack side of a socket whose last fd went away.
    pub fn close_socket(&mut self, s: FastSocket) {
        self.close_socket_holding(s, -1);
    }

    /// As `close_socket`; `held_fd` (or -1) is a copy of the shadow to keep until the
    /// stack is done with the connection.
    pub fn close_socket_holding(&mut self, s: FastSocket, held_fd: i32) {
        let mut held_fd = held_fd;
        for ep in s.epolls.iter() {
            if let Some(set) = self.epolls.get_mut(&ep) {
                set.forget(s.primary_fd);
            }
        }
        match s.kind {
            Kind::TcpFresh | Kind::UdpFresh => self.unclaim_entry(s.claimed),
            Kind::TcpListener(h) => {
                if self.twin_closed(h, s) {
                    return;
                }
                self.handle_fd.remove(&h);
                if let Ok(l) = self.iface.tcp.local_addr(h) {
                    self.host_unregister(Transport::Tcp, l);
                }
                // Out of the port's listener group first (the claim), then what the
                // listener still holds goes to the group (see `handoff`).
                self.unclaim_entry(s.claimed);
                if !self.drain_to_group(h) {
                    let _ = self.iface.tcp.close(h);
                }
            }
            Kind::TcpStream(h) => {
                use stack::tcp::State;
                self.handle_fd.remove(&h);
                // A connecting socket's own port (an accepted one shares its listener's).
                let host_port = self
                    .iface
                    .tcp
                    .local_addr(h)
                    .ok()
                    .filter(|l| s.holds_port && l.ip().is_loopback() && self.dev.host.is_some())
                    .map(|l| l.port());
                let steered = self.steers(h);
                let tcp = &mut self.iface.tcp;
                // Finished in the background (see `Closing`) when there is something to
                // finish; otherwise closed at once: SO_LINGER 0 and unread data reset
                // the connection, as in Linux. Loopback connections claim no port in
                // the XDP map, but their port stays reserved (and, in host mode,
                // registered) until the stack is done with them; a connection that
                // moved here keeps its flow entry until then.
                let finish = (s.claimed.is_some() || s.holds_port || steered)
                    && s.opts.linger != Some(Duration::ZERO)
                    && tcp.recv_queued(h).is_ok_and(|q| q == 0)
                    && matches!(
                        tcp.state(h),
                        Ok(State::Established
                            | State::CloseWait
                            | State::FinWait1
                            | State::FinWait2
                            | State::Closing
                            | State::LastAck)
                    )
                    && tcp.shutdown(h, stack::tcp::Shutdown::Write).is_ok();
                if !finish {
                    let _ = if s.opts.linger == Some(Duration::ZERO) {
                        tcp.abort(h)
                    } else {
                        tcp.close(h)
                    };
                    if let (Some(p), Some(host)) = (host_port, &self.dev.host) {
                        host.unregister(Transport::Tcp, p);
                    }
                    // Gone at once: a flow pinned or moved here is not steered any more.
                    self.connection_gone(h);
                }
                match s.claimed {
                    port if finish => {
                        self.closing.push(Closing {
                            handle: h,
                            port,
                            host_port,
                            held_fd,
                            fin_wait2_since: None,
                            closed_since: None,
                        });
                        held_fd = -1;
                    }
                    Some((t, p)) => self.unclaim(t, p),
                    None => {}
                }
            }
            Kind::Udp(h) => {
                self.handle_fd.remove(&h);
                if let Ok(Some(l)) = self.iface.udp.local_addr(h) {
                    self.host_unregister(Transport::Udp, l);
                }
                let _ = self.iface.udp.close(h);
                self.unclaim_entry(s.claimed);
            }
        }
        if held_fd >= 0 {
            let _ = kernel::close(held_fd);
        }
    }

    /// True while some connection still has data or a FIN the peer has not acked, and
    /// at exit also while one waits in FIN-WAIT-2 for the peer's FIN: the kernel would
    /// keep such an orphan and acknowledge that FIN, while ours would meet a kernel
    /// with no socket and the peer would retransmit it into a RST.
    /// The connections the app closed that the stack still finishes.
    pub fn closing_handles(&self) -> Vec<SocketHandle> {
        self.closing.iter().map(|c| c.handle).collect()
    }

    pub fn has_unsent(&self) -> bool {
        use stack::tcp::State;
        let busy = |h: SocketHandle| match self.iface.tcp.state(h) {
            Ok(State::Established | State::CloseWait) => {
                self.iface.tcp.send_queued(h).is_ok_and(|n| n > 0)
            }
            Ok(
                State::FinWait1
                | State::Closing
                | State::LastAck
                | State::SynSent
                | State::SynReceived,
            ) => true,
            Ok(State::FinWait2) => self.exiting,
            _ => false,
        };
        self.closing.iter().any(|c| busy(c.handle))
            || self
                .handle_fd
                .keys()
                .any(|&h| h.kind == SocketKind::Tcp && busy(h))
            || self.draining_busy()
    }

    /// Writes the counters to the log (FASTNET_STATS=1 at exit).
    pub fn stats_report(&self) -> String {
        self.publish_stats_now();
        let mut out = String::from("counters:");
        if let Some(seg) = &self.stats {
            // This process's own: each member prints its line, and a reader adds them
            // up (what departed members folded in shows in `fastnet stat`).
            for (c, v) in Counter::ALL.iter().map(|&c| (c, seg.own(c))) {
                if v != 0 {
                    out.push_str(&format!(" {}={}", c.name(), v));
                }
            }
            for o in seg.option_counts() {
                out.push_str(&format!(" {}={}", o.label(), o.count));
            }
        }
        out
    }

    /// Current EPOLL* bits of a fast-path fd.
    pub fn readiness_of(&self, fd: i32) -> u32 {
        let Some(s) = self.fds.get(fd) else {
            return 0;
        };
        match s.kind {
            // An unconnected TCP socket: Linux reports EPOLLOUT|EPOLLHUP.
            Kind::TcpFresh => (libc::EPOLLOUT | libc::EPOLLHUP) as u32,
            Kind::UdpFresh => 0,
            Kind::TcpListener(h) | Kind::TcpStream(h) => self.iface.tcp.readiness(h).epoll_bits(),
            Kind::Udp(h) => self.iface.udp.readiness(h).unwrap_or_default().epoll_bits(),
        }
    }

    /// True when `h` is a TCP handle (for matching the stack's two readiness queues).
    pub fn is_tcp(h: SocketHandle) -> bool {
        h.kind == SocketKind::Tcp
    }

    /// The fast-path interface's address as a local address with `port`.
    pub fn local(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.dev.addr.into(), port)
    }

    /// The interface's IPv6 addresses the stack has (none without an interface).
    pub fn ipv6_addrs(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        let on = self.dev.has_xdp();
        self.dev.addrs6.iter().filter(move |_| on).map(|&(a, _)| a)
    }

    /// Where the stack listens for a socket whose shadow is bound to `bound`: the
    /// first address and the others (`listen_also`). 127/8 (loopback on) as bound;
    /// IPv4's wildcard: the interface's address, or any address when loopback is on
    /// (connections to 127.0.0.1 too); an IPv6 address as bound; `::` with
    /// IPV6_V6ONLY: the interface's IPv6 addresses (None without any); `::`
    /// dual-stack: IPv4 as for 0.0.0.0, and the IPv6 addresses too.
    pub fn listen_addrs(
        &self,
        bound: SocketAddr,
        v6only: bool,
    ) -> Option<(SocketAddr, Vec<SocketAddr>)> {
        let port = bound.port();
        let mut six: Vec<SocketAddr> = self
            .ipv6_addrs()
            .map(|ip| SocketAddr::new(ip.into(), port))
            .collect();
        Some(match bound {
            SocketAddr::V6(a) if !a.ip().is_unspecified() => (bound, Vec::new()),
            SocketAddr::V6(_) if v6only => {
                if six.is_empty() {
                    return None;
                }
                let first = six.remove(0);
                (first, six)
            }
            _ => {
                if bound.is_ipv4() {
                    six.clear();
                }
                let v4 = if bound.ip().is_loopback() {
                    bound
                } else if bound.ip().is_unspecified() && self.loopback_on() {
                    SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)
                } else {
                    self.local(port)
                };
                (v4, six)
            }
        })
    }

    /// A stack listener on `local` and `also`.
    pub fn listen_on(
        &mut self,
        local: SocketAddr,
        also: &[SocketAddr],
        backlog: usize,
        opts: SocketOptions,
    ) -> Result<SocketHandle, stack::error::Error> {
        let h = self.iface.tcp.listen_with(local, backlog, opts)?;
        for &a in also {
            if let Err(x) = self.iface.tcp.listen_also(h, a) {
                let _ = self.iface.tcp.close(h);
                return Err(x);
            }
        }
        Ok(h)
    }

    /// Whether the stack has IPv6 addresses (IPv6 sockets may be on the fast path).
    pub fn has_ipv6(&self) -> bool {
        self.ipv6_addrs().next().is_some()
    }

    /// Whether `ip` is one of the fast-path interface's own addresses.
    pub fn is_own_addr(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a == self.dev.addr,
            IpAddr::V6(a) => self.ipv6_addrs().any(|o| o == a),
        }
    }

    /// The source address toward `dst` through the interface: IPv4's, or for IPv6 the
    /// kernel's choice (`pref_src`) when it is ours, else an address of the same scope
    /// (link-local for a link-local peer, else a global one).
    pub fn source_for(&self, dst: IpAddr, pref_src: Option<IpAddr>) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(_) => Some(self.dev.addr.into()),
            IpAddr::V6(d) => {
                if let Some(p) = pref_src.filter(|&p| p.is_ipv6() && self.is_own_addr(p)) {
                    return Some(p);
                }
                let link_local = super::sockaddr::is_link_local;
                let want_ll = link_local(&d);
                self.ipv6_addrs()
                    .find(|a| link_local(a) == want_ll)
                    .map(IpAddr::V6)
            }
        }
    }

    /// True when this process's stack carries loopback (FASTNET_LOOPBACK=process).
    pub fn loopback_on(&self) -> bool {
        self.config.loopback != LoopbackMode::Off
    }

    /// True for destinations that are this host: 127.0.0.0/8 and the interface's own
    /// address (the kernel's, unless loopback is on and a socket of ours takes them).
    pub fn is_host_addr(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.is_own_addr(ip)
    }

    /// The source address toward a host address `dst`, as Linux's local routes pick it.
    pub fn host_source(&self, dst: IpAddr) -> IpAddr {
        match dst {
            IpAddr::V4(a) if a.is_loopback() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(a) if a.is_loopback() => Ipv6Addr::LOCALHOST.into(),
            _ => dst,
        }
    }
}

/// The kernel's neighbour state after its probes went unanswered (linux/neighbour.h).
const NUD_FAILED: u16 = 0x20;

/// Microseconds of CLOCK_MONOTONIC (vDSO: no system call).
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// A secret for this boot of the host, the same in every process: the kernel's boot
/// id (random at each boot) hashed. Readable by local users, as the boot id is; a
/// remote peer cannot learn it.
fn host_secret() -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ("fastnet tcp secret", id.trim()).hash(&mut h);
    Some(h.finish())
}

/// Whether an IPv6 socket takes IPv6 only (IPV6_V6ONLY, as the app set it on the
/// shadow or as net.ipv6.bindv6only made it); false for IPv4 sockets.
pub fn v6only(fd: i32, v6: bool) -> bool {
    v6 && kernel::getsockopt::<i32>(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).is_ok_and(|v| v != 0)
}

/// Whether a socket bound to `local` is reachable over host loopback (IPv4 only).
fn on_loopback(local: SocketAddr) -> bool {
    local.is_ipv4() && (local.ip().is_loopback() || local.ip().is_unspecified())
}

fn t_malformed(iface: &Interface) -> u64 {
    iface.tcp.stats().drops_malformed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connections_port_waits_for_the_timestamp_clock_to_tick() {
        let closed = Instant::from_micros(7_000_900);
        assert!(!port_free_after_close(closed, closed));
        assert!(!port_free_after_close(
            closed,
            Instant::from_micros(7_000_999)
        ));
        assert!(port_free_after_close(
            closed,
            Instant::from_micros(7_001_000)
        ));
    }
}
