//! Connections handed from the stack to kernel sockets (issue 18), through TCP repair
//! (`repair`). The order keeps every byte and never confuses the peer: the kernel
//! socket is made from a snapshot while the stack still holds the connection (if the
//! kernel refuses, nothing changed), with what the peer sent meanwhile added to its
//! receive queue; then the connection's flow goes to the kernel in the XDP program, and
//! only then does the stack let the connection go, quietly. Frames that reached our
//! rings after the last look go to the kernel through the loopback device, never
//! answered with a RST.
//!
//! The flow entry lives as long as the kernel has the connection (TIME-WAIT too): while
//! the family counts such entries, its drivers look every second for those whose
//! kernel connection ended (`sweep_kernel_flows`) and remove them, so that a later
//! connection on the same 4-tuple is the stack's again.
//!
//! First use: exit. Connections the app closed whose data or FIN is not yet delivered
//! become kernel sockets, which the kernel finishes as it finishes any socket a
//! process closed, and the process ends at once instead of lingering.

use super::carried_options::CarriedOptions;
use super::control::Request;
use super::engine::{Engine, FastSocket, Kind};
use super::log::{debug, log};
use super::mailbox::ConnKey;
use super::repair::{self, RepairError, RepairPlan};
use fastnet_stats::Counter;
use stack::socket::SocketHandle;
use stack::tcp::State;

/// What an exit's handoff did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitHandoff {
    pub handed: usize,
    /// Left in the stack (exit lingers for them).
    pub kept: usize,
    /// TCP repair is not permitted here (no CAP_NET_ADMIN).
    pub not_permitted: bool,
}

impl Engine {
    /// Makes connection `h` a kernel socket; returns its fd (blocking, close-on-exec),
    /// which the caller owns. On error the connection is still the stack's, unchanged.
    ///
    /// The kernel socket is built from a snapshot in repair mode while the flow still
    /// comes here; what the peer sent meanwhile is taken into the stack, and the bytes
    /// it added in order are written after the snapshot's into the socket's receive
    /// queue: a socket that got the peer's segments itself while in repair mode would
    /// put them after those (a repair write goes to RCV.NXT). Once the socket is live,
    /// the frames that reach our rings go to it through the loopback device, and the
    /// flow goes to the kernel.
    pub fn hand_to_kernel(&mut self, h: SocketHandle) -> Result<i32, RepairError> {
        // Frames already on our rings go into the state first (else they are lost and
        // the peer sends them again after a timeout).
        self.drive();
        let now = self.now();
        let snapshot = |e: &mut Engine| {
            e.iface
                .tcp
                .snapshot(now, h)
                .map_err(|_| RepairError::NotMovable(State::Closed))
        };
        let st = snapshot(self)?;
        if super::log::debugging() {
            let tcb = self.iface.tcp.debug_summary(h);
            debug(format_args!("handoff: to the kernel: {tcb}"));
        }
        let plan = RepairPlan::new(&st)?;
        let sock = repair::RepairedSocket::build(&plan)?;
        // The peer's segments of the last moments (building took a while): into the
        // stack, nothing answered (the stack lets the connection go without a word).
        // (Bounded: other connections' frames may keep coming; this one's cannot pass
        // the window, which nothing moves now.)
        for _ in 0..LATE_BATCHES {
            if self.receive_frames(now) == 0 {
                break;
            }
        }
        let late_st = snapshot(self)?;
        let Some(late) = repair::received_since(&st, &late_st) else {
            // The peer's FIN came meanwhile: the connection stays (it may move later).
            return Err(RepairError::NotMovable(late_st.state));
        };
        let window = RepairPlan::new(&late_st)?.window;
        let fd = sock.go_live(late, &window)?;
        if let Err(e) = repair::finish_live(fd, &plan) {
            // Back in repair mode: closed, it says nothing. Nothing reached it but
            // what it sent itself (the flow is still ours): the stack carries on.
            let _ = super::kernel::close(fd);
            return Err(e);
        }
        self.count_n(Counter::HandoffLateBytes, late.len() as u64);
        let conn = ConnKey {
            local: st.local,
            remote: st.remote,
        };
        // From here the connection's frames on our rings go to the kernel socket
        // through the loopback device (`claim_frame`): those that came since the last
        // look now, before the switch, and the few that come before it takes effect
        // just after. The peer's later segments reach the socket directly, and a hole
        // before them makes the socket's duplicate ACKs (SACK blocks) ask the peer to
        // send it again within microseconds (RACK waits a quarter of an RTT).
        self.handed_to_kernel.push((conn, now));
        if self.loopback_packets.is_none() {
            self.loopback_packets = super::kernel::loopback_packet_socket().ok();
        }
        self.pass_late_frames(now);
        if let Err(e) = self.dev.flow_to_kernel(conn) {
            // The program may be gone already (loopback-only, or the link went away):
            // then every frame reaches the kernel anyway.
            debug(format_args!("handoff {conn:?}: no flow entry: {e}"));
        }
        self.pass_late_frames(now);
        // The kernel's timer starts at its initial 1 s and its window probe at repair
        // off is one the peer rate-limits: the first unacknowledged segment goes again
        // now, from here, and the peer's answer (window, SACK blocks) reaches the
        // kernel. A peer ACK lost in the move would otherwise cost a timeout.
        if self.iface.tcp.probe_peer(h, stack::tcp::MoveProbe::Leaving) == Ok(true) {
            self.transmit(now, true);
        }
        // The kernel entry replaced ours: the end of the stack's connection must not
        // remove it.
        self.forget_steering(h);
        super::family::add_kernel_flows(1);
        let _ = self.iface.tcp.export(now, h);
        Ok(fd)
    }

    /// Takes the frames on our rings in (a few batches): those of connections handed to
    /// the kernel go to it (`claim_frame`).
    fn pass_late_frames(&mut self, now: stack::time::Instant) {
        for _ in 0..LATE_BATCHES {
            if self.receive_frames(now) == 0 {
                break;
            }
        }
    }

    /// Stops looking for frames of connections handed to the kernel over a second ago:
    /// frames on our rings at the move are long processed.
    pub fn forget_handed_frames(&mut self) {
        let now = self.now();
        self.handed_to_kernel
            .retain(|(_, at)| now.micros() < at.micros() + 1_000_000);
    }

    /// At exit: every connection the app closed that still has data or a FIN to
    /// deliver (or waits for the peer's FIN) becomes a kernel socket, closed at once as
    /// the app closed it; the kernel finishes it. Handshakes under way stay (exit
    /// lingers for them), as does everything when repair is not permitted.
    pub fn hand_closing_to_kernel(&mut self) -> ExitHandoff {
        let mut out = ExitHandoff::default();
        for h in self.closing_handles() {
            let pending = match self.iface.tcp.state(h) {
                Ok(State::Established | State::CloseWait) => {
                    self.iface.tcp.send_queued(h).is_ok_and(|n| n > 0)
                }
                Ok(State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck) => true,
                _ => false,
            };
            if !pending {
                continue;
            }
            if out.not_permitted {
                out.kept += 1;
                continue;
            }
            match self.hand_to_kernel(h) {
                Ok(fd) => {
                    // Closed as the app closed it: the kernel keeps the connection
                    // (orphaned) until it has delivered the data and the FIN.
                    let _ = super::kernel::close(fd);
                    out.handed += 1;
                    self.count(Counter::HandoffToKernelExit);
                }
                Err(e) => {
                    out.kept += 1;
                    out.not_permitted |= e == RepairError::NotPermitted;
                    if e != RepairError::NotPermitted {
                        self.count(Counter::HandoffFailed);
                        debug(format_args!("exit: a connection stays in the stack: {e}"));
                    }
                }
            }
        }
        if out.not_permitted {
            self.count(Counter::HandoffFailed);
            log(
                super::config::LogLevel::Warn,
                format_args!(
                    "exit: TCP repair is not permitted (needs CAP_NET_ADMIN): lingering for {} connection(s) instead of handing them to the kernel",
                    out.kept
                ),
            );
        } else if out.handed > 0 {
            log(
                super::config::LogLevel::Info,
                format_args!(
                    "exit: {} connection(s) handed to the kernel (TCP repair), {} lingering",
                    out.handed, out.kept
                ),
            );
        }
        out
    }
}

/// How many batches of frames a move to the kernel takes in after its snapshot.
const LATE_BATCHES: usize = 8;

/// How long a move waits for the app's calls in flight to finish.
const CALLS_WAIT_US: u64 = 200_000;

/// How often a driver looks for ended connections among the kernel flow entries.
const SWEEP_EVERY_US: u64 = 1_000_000;
/// How long the kernel must have had no connection for an entry before it goes: a SYN
/// the full pool sent to the kernel is only there once the client sends it again
/// (after 1 s, then 3, then 7).
const KERNEL_FLOW_GRACE_US: u64 = 8_000_000;

impl Engine {
    /// Removes the flow entries of connections handed to the kernel that the kernel no
    /// longer has (at most once a second; only while the family counts such entries).
    pub fn sweep_kernel_flows(&mut self) {
        if super::family::kernel_flows() == 0 {
            return;
        }
        let now = self.now();
        if now.micros() < self.kernel_sweep_at.micros() {
            return;
        }
        self.kernel_sweep_at = now + stack::time::Duration::from_micros(SWEEP_EVERY_US);
        let flows = self.dev.kernel_flows();
        self.kernel_flow_absent.retain(|(c, _)| flows.contains(c));
        for conn in flows {
            let at = self.kernel_flow_absent.iter().position(|(c, _)| *c == conn);
            if super::kernel::tcp_connection_exists(conn.local, conn.remote) != Ok(false) {
                if let Some(i) = at {
                    self.kernel_flow_absent.swap_remove(i);
                }
                continue;
            }
            // Absent: ended, or (a SYN the full pool sent here) not begun yet, until
            // the client sends its SYN again. Only an absence that lasts ends it.
            let since = match at {
                Some(i) => self.kernel_flow_absent[i].1,
                None => {
                    self.kernel_flow_absent.push((conn, now));
                    continue;
                }
            };
            if now.micros() < since.micros() + KERNEL_FLOW_GRACE_US {
                continue;
            }
            if self.dev.unsteer_flow(conn).unwrap_or(false) {
                super::family::remove_kernel_flow();
                self.handed_to_kernel.retain(|(c, _)| *c != conn);
                debug(format_args!(
                    "handoff {conn:?}: the kernel's connection ended"
                ));
            }
            self.kernel_flow_absent.retain(|(c, _)| *c != conn);
        }
    }
}

impl Engine {
    /// Opens this process's control socket (a process without one still runs; only
    /// `fastnet handoff` cannot reach it).
    pub fn open_control(&mut self) {
        match super::control::ControlSocket::open(super::kernel::getpid() as u32) {
            Ok(c) => {
                rewriter::filter::mark_fd(c.fd(), true);
                self.control = Some(c);
            }
            Err(e) => debug(format_args!("no control socket (errno {e})")),
        }
    }

    /// Answers the requests waiting on the control socket. A move waits (200 ms at
    /// most, the driver coming back every tick) until no app thread is inside a call
    /// of the socket layer, which may hold a connection's handle from before the move.
    pub fn serve_control(&mut self) {
        let Some(c) = self.control.take() else {
            return;
        };
        loop {
            if self.pending_control.is_none() {
                match c.next() {
                    Some((Ok(req), from)) => self.pending_control = Some((req, from, self.now())),
                    Some((Err(e), from)) => {
                        c.reply(&from, &format!("error {e}"));
                        continue;
                    }
                    None => break,
                }
            }
            let Some((req, from, since)) = self.pending_control.take() else {
                break;
            };
            use std::sync::atomic::Ordering::SeqCst;
            // The door closes first: no call enters while the ones inside finish.
            super::engine::MOVE_PENDING.store(true, SeqCst);
            if super::engine::CALLS_IN_FLIGHT.load(SeqCst) > 0 {
                if self.now().micros() < since.micros() + CALLS_WAIT_US {
                    self.pending_control = Some((req, from, since));
                } else {
                    super::engine::MOVE_PENDING.store(false, SeqCst);
                    c.reply(
                        &from,
                        "error an app thread stays inside a socket call (a blocking read?): nothing moved",
                    );
                }
                break;
            }
            let Request::Handoff { to_kernel, port } = req;
            let started = self.now();
            let (moved, kept) = if to_kernel {
                self.hand_app_sockets_to_kernel(port)
            } else {
                self.hand_app_sockets_to_stack(port)
            };
            super::engine::MOVE_PENDING.store(false, SeqCst);
            // How long the app's socket calls waited at the door for the moves.
            let took = self.now().micros().saturating_sub(started.micros());
            let mut a = format!("ok moved={moved} kept={} took_us={took}", kept.len());
            for why in kept {
                a += &format!("\nkept: {why}");
            }
            c.reply(&from, &a);
        }
        self.control = Some(c);
    }

    /// Moves the app's TCP connections (on `port`, local or remote, if given) to kernel
    /// sockets under the same fd numbers; returns how many moved and why the others
    /// stayed.
    pub fn hand_app_sockets_to_kernel(&mut self, port: Option<u16>) -> (usize, Vec<String>) {
        let mut moved = 0;
        let mut kept = Vec::new();
        let fds: Vec<i32> = self.fds.fds().collect();
        for fd in fds {
            let Some(s) = self.fds.get(fd).copied() else {
                continue;
            };
            let Kind::TcpStream(h) = s.kind else {
                continue;
            };
            let ports = (
                self.iface.tcp.local_addr(h).map(|a| a.port()),
                self.iface.tcp.peer_addr(h).map(|a| a.port()),
            );
            if port.is_some_and(|p| ports.0 != Ok(p) && ports.1 != Ok(p)) {
                continue;
            }
            let names = self
                .fds
                .fds()
                .filter(|&o| self.fds.get(o).is_some_and(|x| x.kind == s.kind))
                .count();
            let busy = if self.is_tethered(&s) {
                Some("shared with another process")
            } else if names > 1 {
                Some("named by more than one fd")
            } else if self.waiters.iter().any(|w| w.handle == h) {
                Some("a thread waits in it")
            } else {
                None
            };
            if let Some(why) = busy {
                kept.push(format!("fd {fd}: {why}"));
                continue;
            }
            match self.hand_to_kernel(h) {
                Ok(kfd) => {
                    self.adopt_kernel_socket(fd, kfd, &s, h);
                    moved += 1;
                    self.count(Counter::HandoffToKernelVerb);
                }
                Err(e) => {
                    self.count(Counter::HandoffFailed);
                    kept.push(format!("fd {fd}: {e}"));
                    if e == RepairError::NotPermitted {
                        break;
                    }
                }
            }
        }
        log(
            super::config::LogLevel::Info,
            format_args!(
                "handoff: {moved} connection(s) moved to the kernel on request, {} kept",
                kept.len()
            ),
        );
        (moved, kept)
    }

    /// Puts kernel socket `kfd` (the connection `h` was) in place of the app's fast-path
    /// socket `fd`: same fd number and flags, the options that matter, the same place
    /// in the app's epoll sets (real kernel epolls, which take it directly); from now
    /// on the fd is the kernel's.
    fn adopt_kernel_socket(&mut self, fd: i32, kfd: i32, s: &FastSocket, h: SocketHandle) {
        use super::kernel;
        let cloexec =
            kernel::fcntl(fd, libc::F_GETFD, 0).is_ok_and(|f| f & libc::FD_CLOEXEC as i64 != 0);
        if s.nonblocking {
            let _ = kernel::fcntl(kfd, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as i64);
        }
        CarriedOptions::of_fast_socket(s).apply_to_kernel(kfd);
        let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
        if kernel::dup3(kfd, fd, flags).is_err() {
            debug(format_args!("handoff: fd {fd}: dup3 failed"));
        }
        let _ = kernel::close(kfd);
        for ep in s.epolls.iter() {
            let Some(set) = self.epolls.get_mut(&ep) else {
                continue;
            };
            if let Some((events, data)) = set.interest(fd) {
                set.forget(fd);
                let _ = kernel::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, events, data);
            }
        }
        self.fds.remove(fd);
        self.handle_fd_forget(h);
        self.unclaim_entry(s.claimed);
        // Still marked: the app's calls on it come to the hook and wait at the door
        // while a move reads it in repair mode (`calls::on_moved_kernel_fd`).
        super::engine::set_moved_kernel_fd(fd, true);
    }
}

impl Engine {
    /// New connections the full pool could not take go to the kernel: their flow
    /// entries send the SYN's retransmission to the kernel's listener (the listener's
    /// shadow), whose connections `accept` returns too. Later ones on the same 4-tuple
    /// are the stack's again once the kernel's connection ended (`sweep_kernel_flows`).
    pub fn overflow_to_kernel(&mut self) {
        let syns = self.iface.tcp.take_overflow();
        if syns.is_empty() {
            return;
        }
        static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log(
                super::config::LogLevel::Info,
                format_args!(
                    "all {} socket slots in use (FASTNET_MAX_SOCKETS): new connections go to the kernel",
                    self.config.max_sockets
                ),
            );
        }
        for (local, remote) in syns {
            let (local, remote) = (local, remote);
            let conn = ConnKey { local, remote };
            if self.dev.flow_to_kernel(conn).is_ok() {
                super::family::add_kernel_flows(1);
                self.count(Counter::HandoffToKernelSlots);
            }
        }
    }
}

/// The fd numbers open in this process now.
fn open_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The epoll fds of this process and, for `fd`, its (events, data) in each that holds
/// it (from /proc/self/fdinfo: the kernel does not say otherwise).
fn kernel_epoll_interests(fd: i32) -> Vec<(i32, u32, u64)> {
    let mut out = Vec::new();
    for epfd in open_fds() {
        let is_epoll = std::fs::read_link(format!("/proc/self/fd/{epfd}"))
            .is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")) else {
            continue;
        };
        for line in info.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("tfd:") || w.next().and_then(|t| t.parse().ok()) != Some(fd) {
                continue;
            }
            let (mut events, mut data) = (None, None);
            while let Some(k) = w.next() {
                match k {
                    "events:" => events = w.next().and_then(|v| u32::from_str_radix(v, 16).ok()),
                    "data:" => data = w.next().and_then(|v| u64::from_str_radix(v, 16).ok()),
                    _ => {}
                }
            }
            if let (Some(ev), Some(d)) = (events, data) {
                out.push((epfd, ev, d));
            }
        }
    }
    out
}

impl Engine {
    /// The app's kernel TCP connections on the fast-path interface's address (on `port`,
    /// local or remote, if given): fds that are not ours.
    fn kernel_connections_of_app(&self, port: Option<u16>) -> Vec<(i32, ConnKey)> {
        let mut out = Vec::new();
        for fd in open_fds() {
            if self.fds.contains(fd) || fd >= super::kernel::HIGH_FD_FLOOR {
                continue;
            }
            let tcp = super::kernel::getsockopt::<i32>(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
                == Ok(libc::IPPROTO_TCP);
            if !tcp {
                continue;
            }
            let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
            let (Ok(n), Ok(m)) = (
                super::kernel::getsockname(fd, &mut a),
                super::kernel::getpeername(fd, &mut b),
            ) else {
                continue;
            };
            use super::sockaddr::parse;
            // IPv4 only: moving an IPv6 kernel connection is not done yet.
            let (Ok(local @ std::net::SocketAddr::V4(_)), Ok(remote @ std::net::SocketAddr::V4(_))) =
                (parse(&a[..n]), parse(&b[..m]))
            else {
                continue;
            };
            if local.ip() != std::net::IpAddr::V4(self.dev.addr)
                || port.is_some_and(|p| local.port() != p && remote.port() != p)
            {
                continue;
            }
            out.push((fd, ConnKey { local, remote }));
        }
        out
    }

    /// Moves the app's kernel TCP connections on the fast-path interface (on `port` if
    /// given) into the stack, under the same fd numbers; returns how many moved and
    /// why the others stayed. The flows are steered here first (frames from then on
    /// wait in our rings while this runs under the engine's lock), then each
    /// connection is read in repair mode, imported, and its kernel socket closed still
    /// in repair mode (no FIN, no RST).
    pub fn hand_app_sockets_to_stack(&mut self, port: Option<u16>) -> (usize, Vec<String>) {
        let mut moved = 0;
        let mut kept = Vec::new();
        let slot = super::family::slot().unwrap_or(0);
        let mut steered = Vec::new();
        for (fd, conn) in self.kernel_connections_of_app(port) {
            let interests = kernel_epoll_interests(fd);
            if let Some(&(ep, _, _)) = interests
                .iter()
                .find(|(ep, _, _)| !self.epolls.contains_key(ep))
            {
                kept.push(format!(
                    "fd {fd}: in epoll {ep}, which holds no fast-path socket yet"
                ));
                continue;
            }
            if self
                .claim(xdp_backend::portmap::Transport::Tcp, conn.local.port())
                .is_err()
            {
                kept.push(format!(
                    "fd {fd}: port {} cannot be claimed",
                    conn.local.port()
                ));
                continue;
            }
            let was_kernel = self.dev.kernel_flows().contains(&conn);
            if let Err(e) = self.dev.steer_flow(conn, slot) {
                self.unclaim(xdp_backend::portmap::Transport::Tcp, conn.local.port());
                kept.push(format!("fd {fd}: steering: {e}"));
                continue;
            }
            if was_kernel {
                super::family::remove_kernel_flow();
            }
            steered.push((fd, conn, interests));
        }
        if !steered.is_empty() {
            // Segments the XDP program passed just before the switch reach the kernel
            // socket first (and are in what repair reads).
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for (fd, conn, interests) in steered {
            match self.take_from_kernel(fd, conn, &interests) {
                Ok(()) => {
                    moved += 1;
                    self.count(Counter::HandoffToStackVerb);
                }
                Err(why) => {
                    // Back to the kernel, untouched.
                    let _ = self.dev.flow_to_kernel(conn);
                    super::family::add_kernel_flows(1);
                    self.unclaim(xdp_backend::portmap::Transport::Tcp, conn.local.port());
                    self.count(Counter::HandoffFailed);
                    kept.push(format!("fd {fd}: {why}"));
                }
            }
        }
        log(
            super::config::LogLevel::Info,
            format_args!(
                "handoff: {moved} connection(s) moved to the stack on request, {} kept",
                kept.len()
            ),
        );
        (moved, kept)
    }

    fn take_from_kernel(
        &mut self,
        fd: i32,
        conn: ConnKey,
        interests: &[(i32, u32, u64)],
    ) -> Result<(), String> {
        use super::kernel;
        let carried =
            CarriedOptions::of_kernel_socket(fd, self.iface.tcp.config().default_socket_options());
        let st = repair::read_kernel_socket(fd, carried.opts).map_err(|e| e.to_string())?;
        let now = self.now();
        let h = match self.iface.tcp.import(now, &st) {
            Ok(h) => h,
            Err(e) => {
                let _ = kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &-1i32);
                return Err(format!("the stack cannot take it: {e:?}"));
            }
        };
        // What the peer last said may have reached neither holder: its answer to this
        // brings the window and SACK blocks (the kernel's timer is not carried over).
        let _ = self.iface.tcp.probe_peer(h, stack::tcp::MoveProbe::Arrived);
        if super::log::debugging() {
            let tcb = self.iface.tcp.debug_summary(h);
            debug(format_args!("handoff: from the kernel: {tcb}"));
        }
        let fl = kernel::fcntl(fd, libc::F_GETFL, 0).unwrap_or(0);
        let cloexec =
            kernel::fcntl(fd, libc::F_GETFD, 0).is_ok_and(|f| f & libc::FD_CLOEXEC as i64 != 0);
        // The fd number gets a fresh unconnected socket (as an accepted connection's
        // has); the repaired kernel socket, closed with it, goes without a word.
        let shadow = kernel::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
            .and_then(|s| {
                let r = kernel::dup3(s, fd, if cloexec { libc::O_CLOEXEC } else { 0 });
                let _ = kernel::close(s);
                r
            });
        if let Err(e) = shadow {
            let _ = self.iface.tcp.export(now, h);
            let _ = kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &-1i32);
            return Err(format!("no placeholder socket (errno {e})"));
        }
        let mut s = FastSocket {
            kind: Kind::TcpStream(h),
            v6: false,
            nonblocking: fl & libc::O_NONBLOCK as i64 != 0,
            rcvtimeo: carried.rcvtimeo,
            sndtimeo: carried.sndtimeo,
            opts: st.options,
            keepalive_params: carried.keepalive_params,
            claimed: Some((xdp_backend::portmap::Transport::Tcp, conn.local.port())),
            epolls: Default::default(),
            primary_fd: fd,
            holds_port: false,
            recv_cmsgs: Default::default(),
        };
        for &(ep, events, data) in interests {
            if let Some(set) = self.epolls.get_mut(&ep) {
                if set.add(fd, events, data).is_ok() {
                    set.set_fast(fd, true);
                    s.epolls.insert(ep);
                    set.wake();
                }
            }
        }
        if self.fds.insert(fd, s).is_err() {
            return Err("the fd table is full".into());
        }
        self.bind_handle(h, fd);
        self.handed_to_kernel.retain(|(c, _)| *c != conn);
        super::engine::set_moved_kernel_fd(fd, false);
        rewriter::filter::mark_fd(fd, true);
        Ok(())
    }
}
