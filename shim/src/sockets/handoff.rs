//! Sockets shared by the members of a family (see `family`): a socket created before
//! `fork` works in whichever process uses it.
//!
//! - **Connections move.** An established connection lives in one member's stack. A
//!   member that uses an fd whose connection lives elsewhere asks the holder for it
//!   (`Fetch`); the holder points the flow at the asker's AF_XDP sockets in the XDP
//!   program, drains what its rings already hold, exports the connection (no segment
//!   sent), and passes the state in a memfd (`State`). Frames that reach the old
//!   holder afterwards are forwarded (`Frame`); frames that reach the asker before the
//!   state are parked until it arrives. Nothing is lost and nothing is answered with a
//!   RST on the way.
//! - **Tethers say when a connection closes.** Linux closes a connection when the last
//!   fd naming it, in any process, is closed. At fork, every connection's fds are made
//!   one end of a Unix socket pair whose other end, the *tether*, its holder keeps:
//!   when every process closed its fds (or died, or exec'd without them), the tether
//!   reads end-of-file. A holder whose app closes a tethered connection that another
//!   process still names keeps it open (*detached*) until then.
//! - **Listeners and UDP sockets are per member.** A member that uses an inherited
//!   listener listens on the same address in its own stack and joins the port's
//!   listener group in the XDP program, which spreads new connections over the group;
//!   an inherited UDP socket is bound again in the member's stack and its port steered
//!   to it.

use super::engine::{Engine, FastSocket, Kind};
use super::kernel;
use super::log::debug;
use super::mailbox::{ConnKey, Mailbox, Message};
use fastnet_stats::Counter;
use stack::socket::SocketHandle;
use stack::tcp::ConnectionState;
use stack::time::Instant;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use xdp_backend::portmap::{PortEntry, Transport};

/// An fd of this process whose socket is not (yet) in this process's stack.
#[derive(Clone, Copy, Debug)]
pub struct Away {
    pub what: AwayKind,
    /// The fd's state as it was (options, flags, epolls), kept for when it comes home.
    pub socket: FastSocket,
}

#[derive(Clone, Copy, Debug)]
pub enum AwayKind {
    /// A connection in the stack of the member in `holder`.
    Conn { conn: ConnKey, holder: u32 },
    /// A listener on `local`: listened on again here when used.
    Listener { local: SocketAddr, backlog: usize },
    /// A UDP socket bound to `local`: bound again here when used.
    Udp { local: SocketAddr },
}

/// How long a member waits for a connection it asked for before the fd fails.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long frames that reach a former holder are still forwarded: only frames the
/// XDP program sent before the flow moved can reach it, within microseconds.
const MOVED_MEMORY_US: u64 = 2_000_000;
/// Frames parked per expected connection at most (the sender retransmits the rest).
const PARKED_MAX: usize = 1024;

/// What a holder keeps of a connection that crossed a fork.
#[derive(Clone, Copy, Debug)]
struct Tether {
    /// Reads end-of-file once no process has an fd naming the connection.
    fd: i32,
    /// The connection's kernel shadow (-1 for none): the app's fds became the tether's
    /// other end, and the shadow of a connecting socket still reserves its local port.
    shadow: i32,
}

impl Tether {
    fn close(self) {
        for fd in [self.fd, self.shadow] {
            if fd >= 0 {
                let _ = kernel::close(fd);
                rewriter::filter::mark_fd(fd, false);
            }
        }
    }
}

/// Flags in a `State` message's fds: which follow the memfd.
const WITH_TETHER: u32 = 1;
const WITH_SHADOW: u32 = 2;

/// This member's part in its family.
pub struct Membership {
    pub slot: u32,
    pub mailbox: Mailbox,
    /// The app's fds whose sockets live elsewhere (see [`Away`]).
    pub away: HashMap<i32, Away>,
    /// Connections given to another member, and when: late frames follow them.
    moved: HashMap<ConnKey, (u32, Instant)>,
    /// Connections asked for, with the frames that came before their state.
    expected: HashMap<ConnKey, Vec<Vec<u8>>>,
    /// The tether of each tethered connection this stack holds.
    tethers: HashMap<SocketHandle, Tether>,
    /// Connections held here that no fd of this process names any more.
    detached: Vec<FastSocket>,
    /// Flows the XDP program steers to this member (connections that moved here):
    /// unsteered when the connection is gone.
    steered: HashMap<SocketHandle, ConnKey>,
    /// Listeners of this process whose port has a listener group without it (nginx's
    /// master after its workers joined): what they queue goes to the group.
    forwarding: Vec<SocketHandle>,
    /// The family's count of messages sent to this member, when it last read them.
    mail_seen: u32,
    /// Ports whose connections this member pins to itself in the flow map from their
    /// SYN on (see `pin_handshakes`): those of listener groups it joined, and those of
    /// its own listeners once it forked (a child may form a group on them).
    pinned_ports: Vec<u16>,
    /// Group listeners the app closed here (a worker after nginx's reload): they finish
    /// their handshakes and send what they queue to the group, then close.
    draining: Vec<SocketHandle>,
    /// Group listeners the app stopped watching (their last epoll dropped them: nginx's
    /// worker without the accept mutex): out of the group until watched again.
    unwatched: Vec<SocketHandle>,
    /// Group listeners dropped from their last epoll since this process last waited:
    /// unwatched if still so when it waits (nginx drops and adds its listener back at
    /// once every few accepts, to reorder EPOLLEXCLUSIVE's wake-ups).
    unwatch_pending: Vec<SocketHandle>,
    /// Tethered connections whose bytes cross the tether to a program another member
    /// exec'd with them (see `relay`).
    pub(super) relays: HashMap<SocketHandle, super::relay::Relay>,
    /// Queued connections whose state still waits in this member's outbox, with the
    /// member they go to: their flow is steered there once it went (see `mailbox`).
    steer_once_sent: Vec<(ConnKey, u32)>,
}

impl Membership {
    pub fn new(slot: u32, mailbox: Mailbox) -> Membership {
        Membership {
            slot,
            mailbox,
            away: HashMap::new(),
            moved: HashMap::new(),
            expected: HashMap::new(),
            tethers: HashMap::new(),
            detached: Vec::new(),
            steered: HashMap::new(),
            forwarding: Vec::new(),
            mail_seen: 0,
            pinned_ports: Vec::new(),
            draining: Vec::new(),
            unwatched: Vec::new(),
            unwatch_pending: Vec::new(),
            relays: HashMap::new(),
            steer_once_sent: Vec::new(),
        }
    }

    /// True when no fd of this process names connection `h` any more.
    pub(super) fn is_detached(&self, h: SocketHandle) -> bool {
        self.detached.iter().any(|s| s.kind == Kind::TcpStream(h))
    }

    /// The tether of connection `h`, when it crossed a fork.
    pub(super) fn tether_of(&self, h: SocketHandle) -> Option<i32> {
        self.tethers.get(&h).map(|t| t.fd)
    }

    /// True when another member wrote to this one since it last read its mailbox.
    pub fn mail_waiting(&self) -> bool {
        super::family::mail_count(self.slot) != self.mail_seen
    }

    /// True while messages of this member wait for room in another's queue: the
    /// driver tries again every round.
    pub fn mail_to_send(&self) -> bool {
        self.mailbox.holds_messages()
    }

    /// The fds of this process naming `conn` while it lives in another stack.
    /// The fds registered in app epoll `epfd` whose sockets live in another member's
    /// stack.
    pub(super) fn away_in_epoll(&self, epfd: i32) -> impl Iterator<Item = i32> + '_ {
        self.away
            .iter()
            .filter(move |(_, a)| a.socket.epolls.contains(epfd))
            .map(|(&fd, _)| fd)
    }

    fn away_fds_of(&self, conn: ConnKey) -> Vec<i32> {
        self.away
            .iter()
            .filter(|(_, a)| matches!(a.what, AwayKind::Conn { conn: c, .. } if c == conn))
            .map(|(&fd, _)| fd)
            .collect()
    }

    /// True when nothing of the family needs the driver's periodic look (no tethered,
    /// detached, relayed or moved connection, no listener shared with a group).
    pub fn quiet(&self) -> bool {
        self.tethers.is_empty()
            && self.detached.is_empty()
            && self.relays.is_empty()
            && self.moved.is_empty()
            && self.expected.is_empty()
            && self.forwarding.is_empty()
            && self.draining.is_empty()
            && self.pinned_ports.is_empty()
            && !self.mailbox.holds_messages()
            && self.steer_once_sent.is_empty()
    }

    /// True when frames must be looked at before the stack sees them.
    pub fn filters_frames(&self) -> bool {
        !self.moved.is_empty() || !self.expected.is_empty()
    }

    /// True while a connection is relayed to an exec'd service (see `relay`).
    pub fn relaying(&self) -> bool {
        !self.relays.is_empty()
    }

    /// Every fd this membership owns (for the app's close_range and dup2).
    pub fn owned_fds(&self) -> impl Iterator<Item = i32> + '_ {
        std::iter::once(self.mailbox.fd())
            .chain(
                self.tethers
                    .values()
                    .flat_map(|t| [t.fd, t.shadow])
                    .filter(|&fd| fd >= 0),
            )
            .chain(self.mailbox.held_fds())
    }
}

/// The connection a frame belongs to (None: not TCP over IPv4).
impl Engine {
    /// Hands `frame` (IPv4) of a connection handed to the kernel to the kernel's
    /// receive path: it reached our rings after the last look before the flow switched,
    /// and the kernel socket, live now, takes it as any segment (its sequence checks
    /// place it). Dropped when that cannot be done (the peer sends it again).
    fn pass_to_kernel(&mut self, frame: &[u8]) {
        use stack::wire::{EthernetFrame, Ipv4Packet};
        let eth = EthernetFrame::new_checked(frame).ok();
        let packet = eth
            .as_ref()
            .and_then(|e| Ipv4Packet::new_checked(e.payload()).ok());
        let passed = match (packet, self.loopback_packets) {
            (Some(ip), Some(fd)) => {
                // Checked: the buffer holds the whole packet (Ethernet may pad it).
                let len = usize::from(ip.total_len());
                let mut packet = ip.into_inner()[..len].to_vec();
                without_timestamps(&mut packet);
                kernel::to_kernel_via_loopback(fd, &packet).is_ok()
            }
            _ => false,
        };
        self.count(if passed {
            Counter::HandoffFramesPassed
        } else {
            Counter::HandoffFramesDropped
        });
    }
}

/// Blanks the timestamps option of TCP segment `packet` (IPv4) and fills its checksum
/// again. Such a segment waited on our rings while newer ones reached the kernel
/// socket, whose TS.Recent they moved on: with its older timestamp PAWS would drop it
/// (seen: 45 segments of a burst, `TcpExtPAWSEstab`); without one Linux skips PAWS.
fn without_timestamps(packet: &mut [u8]) {
    use stack::wire::tcp::TcpPacket;
    use stack::wire::Ipv4Packet;
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut *packet) else {
        return;
    };
    let (src, dst) = (ip.src(), ip.dst());
    let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) else {
        return;
    };
    if tcp.blank_timestamps() {
        tcp.fill_checksum(src, dst);
    }
}

/// The connection a TCP frame (IPv4, or IPv6 with TCP right after the fixed header)
/// belongs to, seen from this host.
fn frame_conn(frame: &[u8]) -> Option<ConnKey> {
    use stack::wire::tcp::TcpPacket;
    use stack::wire::{EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet};
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, ports): (std::net::IpAddr, std::net::IpAddr, (u16, u16)) = match eth.ethertype()
    {
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != 6 {
                return None;
            }
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            let ports = (tcp.src_port(), tcp.dst_port());
            (ip.src_addr().into(), ip.dst_addr().into(), ports)
        }
        _ => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.protocol() != 6 {
                return None;
            }
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            let ports = (tcp.src_port(), tcp.dst_port());
            (ip.src().into(), ip.dst().into(), ports)
        }
    };
    Some(ConnKey {
        local: SocketAddr::new(dst, ports.1),
        remote: SocketAddr::new(src, ports.0),
    })
}

impl Engine {
    /// Before fork (engine locked): tether every connection an fd names, so that the
    /// connection outlives the fds of one process and closes with the last; and pin
    /// the handshakes of every listener from now on (a child that uses it forms a
    /// listener group, which must not take this process's handshakes under way).
    pub fn tether_connections(&mut self) {
        let listeners: Vec<u16> = self
            .fds
            .fds()
            .filter_map(|fd| match self.fds.get(fd)?.kind {
                Kind::TcpListener(h) => self.iface.tcp.local_addr(h).ok().map(|a| a.port()),
                _ => None,
            })
            .collect();
        if !listeners.is_empty() {
            self.iface.tcp.record_handshakes();
        }
        let Some(m) = self.family.as_mut() else {
            return;
        };
        for p in listeners {
            if !m.pinned_ports.contains(&p) {
                m.pinned_ports.push(p);
            }
        }
        let fds: Vec<i32> = self.fds.fds().collect();
        let mut done: Vec<SocketHandle> = Vec::new();
        for fd in fds {
            let Some(s) = self.fds.get(fd).copied() else {
                continue;
            };
            let Kind::TcpStream(h) = s.kind else { continue };
            if m.tethers.contains_key(&h) || done.contains(&h) {
                continue;
            }
            let Ok([app_end, tether]) = kernel::socketpair_unix() else {
                continue;
            };
            // The shadow of a connecting socket holds its port in the kernel: keep it.
            let shadow = if s.holds_port {
                kernel::fcntl(fd, libc::F_DUPFD_CLOEXEC, kernel::HIGH_FD_FLOOR as i64)
                    .map_or(-1, |f| f as i32)
            } else {
                -1
            };
            // Every fd of this process naming the connection becomes the app's end.
            let named: Vec<i32> = self
                .fds
                .fds()
                .filter(|&f| self.fds.get(f).is_some_and(|x| x.kind == s.kind))
                .collect();
            for f in named {
                let cloexec = kernel::fcntl(f, libc::F_GETFD, 0)
                    .is_ok_and(|fl| fl & libc::FD_CLOEXEC as i64 != 0);
                let _ = kernel::dup3(app_end, f, if cloexec { libc::O_CLOEXEC } else { 0 });
            }
            let _ = kernel::close(app_end);
            let fd = kernel::move_high(tether, kernel::HIGH_FD_FLOOR).unwrap_or(tether);
            for f in [fd, shadow] {
                if f >= 0 {
                    rewriter::filter::mark_fd(f, true);
                }
            }
            m.tethers.insert(h, Tether { fd, shadow });
            done.push(h);
        }
    }

    /// In a forked child, on its copy of the parent's engine: the tethers and the
    /// mailbox are the parent's (the child closes its copies; it must not hold the
    /// parent's connections open, nor read the parent's mail).
    pub fn forget_parents_family(&mut self) {
        if let Some(m) = self.family.take() {
            for (_, t) in m.tethers {
                t.close();
            }
            m.mailbox.close();
        }
    }

    /// The away entries a new member starts with: every fast-path fd of `stale` (its
    /// copy of the parent's engine) names a socket that lives in `holder`'s stack.
    pub fn inherit_fds(&mut self, stale: &Engine, holder: u32) {
        let Some(m) = self.family.as_mut() else {
            return;
        };
        for fd in stale.fds.fds() {
            let Some(s) = stale.fds.get(fd).copied() else {
                continue;
            };
            let what = match s.kind {
                Kind::TcpStream(h) => {
                    let (Ok(local), Ok(remote)) =
                        (stale.iface.tcp.local_addr(h), stale.iface.tcp.peer_addr(h))
                    else {
                        continue;
                    };
                    AwayKind::Conn {
                        conn: ConnKey { local, remote },
                        holder,
                    }
                }
                Kind::TcpListener(h) => {
                    let (Ok(local), Ok(backlog)) =
                        (stale.iface.tcp.local_addr(h), stale.iface.tcp.backlog(h))
                    else {
                        continue;
                    };
                    AwayKind::Listener { local, backlog }
                }
                Kind::Udp(h) => match stale.iface.udp.local_addr(h) {
                    Ok(Some(local)) => AwayKind::Udp { local },
                    _ => continue,
                },
                // No stack state yet: the socket is simply this process's.
                Kind::TcpFresh | Kind::UdpFresh => {
                    let mut s = s;
                    s.claimed = None;
                    let _ = self.fds.insert(fd, s);
                    continue;
                }
            };
            let mut socket = s;
            socket.claimed = None;
            m.away.insert(fd, Away { what, socket });
        }
    }

    /// Reads every message in this member's mailbox and acts on it.
    pub fn serve_mailbox(&mut self) {
        if let Some(m) = self.family.as_mut() {
            m.mail_seen = super::family::mail_count(m.slot);
            m.mailbox.flush();
            let mailbox = &m.mailbox;
            let (sent, waiting) = m
                .steer_once_sent
                .drain(..)
                .partition(|&(_, to)| !mailbox.waits_for(to));
            m.steer_once_sent = waiting;
            for (conn, to) in sent {
                let _ = self.dev.steer_flow(conn, to);
            }
        }
        loop {
            let Some(m) = self.family.as_mut() else {
                return;
            };
            let Some((msg, fds, nfds)) = m.mailbox.recv() else {
                return;
            };
            let fds = &fds[..nfds];
            if !matches!(msg, Message::State { .. } | Message::Queued { .. }) {
                for &fd in fds {
                    let _ = kernel::close(fd);
                }
            }
            match msg {
                Message::Fetch { conn, from } => self.give(conn, from),
                Message::State { conn, with } => self.take(conn, with, fds),
                Message::Moved { conn, slot } => self.ask_again(conn, slot),
                Message::Gone { conn } => self.lost(conn),
                Message::Listening { conn, from } => self.start_forwarding(conn.local, from),
                Message::Queued { conn } => self.take_queued(conn, fds),
                Message::Relay { conn } => self.start_relay(conn),
                Message::Frame { conn, frame } => {
                    let now = self.now();
                    let m = self.family.as_mut().expect("checked");
                    match m.expected.get_mut(&conn) {
                        Some(parked) if parked.len() < PARKED_MAX => parked.push(frame),
                        Some(_) => {}
                        None => self.iface.receive(now, &frame),
                    }
                }
            }
        }
    }

    /// Whether the stack may see `frame` now; frames of connections that moved away
    /// are forwarded, those of connections on their way here are parked, those of
    /// connections handed to the kernel go to the kernel (`pass_to_kernel`).
    pub fn claim_frame(&mut self, frame: &[u8]) -> bool {
        let Some(conn) = frame_conn(frame) else {
            return true;
        };
        if self.handed_to_kernel.iter().any(|(c, _)| *c == conn) {
            self.pass_to_kernel(frame);
            return false;
        }
        let Some(m) = self.family.as_mut() else {
            return true;
        };
        if let Some(parked) = m.expected.get_mut(&conn) {
            if parked.len() < PARKED_MAX {
                parked.push(frame.to_vec());
            }
            return false;
        }
        if let Some(&(to, _)) = m.moved.get(&conn) {
            let msg = Message::Frame {
                conn,
                frame: frame.to_vec(),
            };
            if m.mailbox.send(to, &msg, &[]).is_ok() {
                self.count(Counter::FamilyFramesForwarded);
            }
            return false;
        }
        true
    }

    /// Hands `conn` to the member in `to`. A loopback connection stays (its other end
    /// is in this same stack): the asker is told it is gone.
    fn give(&mut self, conn: ConnKey, to: u32) {
        let local_only = conn.local.ip().is_loopback() || conn.remote.ip() == conn.local.ip();
        let found = self
            .iface
            .tcp
            .find(conn.local, conn.remote)
            .filter(|_| !local_only);
        let Some(h) = found else {
            let m = self.family.as_mut().expect("member");
            let reply = match m.moved.get(&conn) {
                Some(&(slot, _)) if slot != to => Message::Moved { conn, slot },
                _ => Message::Gone { conn },
            };
            let _ = m.mailbox.send(to, &reply, &[]);
            return;
        };
        // From now on the flow's frames go to `to`; what our rings hold is ours to
        // process first, so the state we export includes it.
        if let Err(e) = self.dev.steer_flow(conn, to) {
            debug(format_args!("cannot move {conn:?}: steering: {e}"));
            let m = self.family.as_mut().expect("member");
            let _ = m.mailbox.send(to, &Message::Gone { conn }, &[]);
            return;
        }
        self.drive();
        let now = self.now();
        let st = match self.iface.tcp.export(now, h) {
            Ok(st) => st,
            Err(e) => {
                debug(format_args!("cannot move {conn:?}: export: {e:?}"));
                let _ = self.dev.unsteer_flow(conn);
                let m = self.family.as_mut().expect("member");
                let _ = m.mailbox.send(to, &Message::Gone { conn }, &[]);
                return;
            }
        };
        // The fds of this process naming it now name a connection elsewhere; the
        // socket's claim on its port goes with the last of them.
        let fds: Vec<i32> = self
            .fds
            .fds()
            .filter(|&f| {
                self.fds
                    .get(f)
                    .is_some_and(|s| s.kind == Kind::TcpStream(h))
            })
            .collect();
        let mut socket = None;
        for &fd in &fds {
            let s = *self.fds.get(fd).expect("listed");
            let _ = self.fds.remove(fd);
            // An epoll waiting on it looks again, and fetches it back (`wait_core`).
            for epfd in s.epolls.iter() {
                if let Some(set) = self.epolls.get_mut(&epfd) {
                    set.wake();
                }
            }
            socket = Some(s);
            let mut away = s;
            away.claimed = None;
            let m = self.family.as_mut().expect("member");
            m.away.insert(
                fd,
                Away {
                    what: AwayKind::Conn { conn, holder: to },
                    socket: away,
                },
            );
        }
        let m = self.family.as_mut().expect("member");
        if let Some(i) = m.detached.iter().position(|s| s.kind == Kind::TcpStream(h)) {
            socket = Some(m.detached.swap_remove(i));
        }
        let tether = m.tethers.remove(&h);
        // Its fds are used here after all (an exec that failed): no relay any more.
        m.relays.remove(&h);
        m.steered.remove(&h);
        m.moved.insert(conn, (to, now));
        let mut with = 0;
        let mut pass = Vec::with_capacity(3);
        let sent = state_memfd(&st).and_then(|memfd| {
            pass.push(memfd);
            if let Some(t) = tether {
                pass.push(t.fd);
                with |= WITH_TETHER;
                if t.shadow >= 0 {
                    pass.push(t.shadow);
                    with |= WITH_SHADOW;
                }
            }
            let r = m.mailbox.send(to, &Message::State { conn, with }, &pass);
            let _ = kernel::close(memfd);
            r
        });
        if let Some(t) = tether {
            t.close();
        }
        if let Err(e) = sent {
            // The asker died or its mailbox is gone: the connection is lost with it.
            debug(format_args!("cannot move {conn:?}: mailbox: {e}"));
        }
        self.wake_waiters_of(h);
        self.handle_fd_forget(h);
        if let Some(s) = socket {
            // A connecting socket's own port goes with it (left to the kernel, the
            // peer's next segment would meet a RST).
            self.unclaim_handing_to(s.claimed, to);
        }
        self.count(Counter::FamilyMovedOut);
        debug(format_args!("moved {conn:?} to member {to}"));
    }

    /// Installs a connection another member sent.
    fn take(&mut self, conn: ConnKey, with: u32, fds: &[i32]) {
        let mut it = fds.iter().copied();
        let memfd = it.next();
        let tether_fd = if with & WITH_TETHER != 0 {
            it.next()
        } else {
            None
        };
        let shadow = if with & WITH_SHADOW != 0 {
            it.next()
        } else {
            None
        };
        let tether = tether_fd.map(|fd| Tether {
            fd: kernel::move_high(fd, kernel::HIGH_FD_FLOOR).unwrap_or(fd),
            shadow: shadow
                .map(|s| kernel::move_high(s, kernel::HIGH_FD_FLOOR).unwrap_or(s))
                .unwrap_or(-1),
        });
        let st = memfd.and_then(read_state);
        if let Some(fd) = memfd {
            let _ = kernel::close(fd);
        }
        let now = self.now();
        let Some(parked) = self.family.as_mut().and_then(|m| m.expected.remove(&conn)) else {
            // Not asked for (any more): nobody here names it.
            if let Some(t) = tether {
                t.close();
            }
            return;
        };
        let h = match st.map(|st| self.iface.tcp.import(now, &st)) {
            Some(Ok(h)) => h,
            other => {
                debug(format_args!("cannot take {conn:?}: {other:?}"));
                if let Some(t) = tether {
                    t.close();
                }
                self.lost(conn);
                return;
            }
        };
        for f in parked {
            self.iface.receive(now, &f);
        }
        let m = self.family.as_mut().expect("member");
        // Here again (it went away from here before): its frames are ours, not to be
        // forwarded to where it was.
        m.moved.remove(&conn);
        m.steered.insert(h, conn);
        if let Some(t) = tether {
            for fd in [t.fd, t.shadow] {
                if fd >= 0 {
                    rewriter::filter::mark_fd(fd, true);
                }
            }
            m.tethers.insert(h, t);
        }
        let fds = m.away_fds_of(conn);
        // A connecting socket's own port (its claim came along in the copy of the
        // socket inherited at fork): claimed here now, the holder hands it over.
        let port_claim = fds
            .iter()
            .find_map(|fd| m.away.get(fd).and_then(|a| a.socket.claimed));
        let port_claim = port_claim.filter(|_| self.claim_entry(port_claim).is_ok());
        let mut first: Option<i32> = None;
        let mut last_socket = None;
        for fd in fds {
            let away = self
                .family
                .as_mut()
                .expect("member")
                .away
                .remove(&fd)
                .expect("listed");
            let mut s = away.socket;
            s.kind = Kind::TcpStream(h);
            s.claimed = port_claim;
            last_socket = Some(s);
            match first {
                None => {
                    s.primary_fd = fd;
                    if self.fds.insert(fd, s).is_ok() {
                        first = Some(fd);
                        self.bind_handle(h, fd);
                    }
                }
                Some(f) => {
                    let _ = self.fds.dup(f, fd);
                }
            }
        }
        if first.is_none() {
            // The app closed its fds while the state travelled: the tether decides.
            if let Some(mut s) = last_socket {
                s.primary_fd = -1;
                self.family.as_mut().expect("member").detached.push(s);
            }
        }
        self.count(Counter::FamilyMovedIn);
        debug(format_args!("took {conn:?} (fd {first:?})"));
    }

    fn ask_again(&mut self, conn: ConnKey, slot: u32) {
        let m = self.family.as_mut().expect("member");
        if !m.expected.contains_key(&conn) {
            return;
        }
        for a in m.away.values_mut() {
            if let AwayKind::Conn { conn: c, holder } = &mut a.what {
                if *c == conn {
                    *holder = slot;
                }
            }
        }
        let me = m.slot;
        let _ = m
            .mailbox
            .send(slot, &Message::Fetch { conn, from: me }, &[]);
    }

    /// Nobody has `conn` any more: the fds naming it here are the kernel's (the app
    /// end of its tether: reads see end-of-file, as after a reset).
    pub(super) fn lost(&mut self, conn: ConnKey) {
        let m = self.family.as_mut().expect("member");
        m.expected.remove(&conn);
        let fds = m.away_fds_of(conn);
        for fd in fds {
            m.away.remove(&fd);
            rewriter::filter::mark_fd(fd, false);
        }
        self.count(Counter::FamilyLost);
    }

    /// Starts fetching the socket of away fd `fd`. Listeners and UDP sockets come home
    /// at once; a connection is asked for (true: wait for its state).
    pub(super) fn start_fetch(&mut self, fd: i32) -> bool {
        let Some(m) = self.family.as_mut() else {
            return false;
        };
        let Some(a) = m.away.get(&fd).copied() else {
            return false;
        };
        match a.what {
            AwayKind::Conn { conn, holder } => {
                if m.expected.contains_key(&conn) {
                    return true;
                }
                m.expected.insert(conn, Vec::new());
                let me = m.slot;
                if m.mailbox
                    .send(holder, &Message::Fetch { conn, from: me }, &[])
                    .is_err()
                {
                    self.lost(conn);
                    return false;
                }
                true
            }
            AwayKind::Listener { local, backlog } => {
                m.away.remove(&fd);
                self.listen_again(fd, a.socket, local, backlog);
                false
            }
            AwayKind::Udp { local } => {
                m.away.remove(&fd);
                self.bind_udp_again(fd, a.socket, local);
                false
            }
        }
    }

    /// A listener this process inherited: the same listener in this stack, and this
    /// member in the port's listener group.
    fn listen_again(&mut self, fd: i32, s: FastSocket, local: SocketAddr, backlog: usize) {
        // The addresses besides `local` its listener had (a dual-stack `::` one's IPv6
        // addresses): as the shadow's address and IPV6_V6ONLY say.
        let mut name = [0u8; 128];
        let also = kernel::getsockname(fd, &mut name)
            .ok()
            .and_then(|n| super::sockaddr::parse(&name[..n]).ok())
            .and_then(|bound| self.listen_addrs(bound, super::engine::v6only(fd, s.v6)))
            .map(|(_, also)| also)
            .unwrap_or_default();
        let h = match self.listen_on(local, &also, backlog, s.opts) {
            Ok(h) => h,
            Err(e) => {
                debug(format_args!(
                    "fd {fd}: cannot listen again on {local}: {e:?}"
                ));
                rewriter::filter::mark_fd(fd, false);
                return;
            }
        };
        match self.dev.join_group(Transport::Tcp, local.port()) {
            Ok(()) => {
                self.family
                    .as_mut()
                    .expect("member")
                    .pinned_ports
                    .push(local.port());
                self.iface.tcp.record_handshakes();
            }
            Err(e) => debug(format_args!("fd {fd}: listener group of {local}: {e}")),
        }
        self.tell_owner_listening(local);
        // Counted like a listener of this process's own: the port stays the family's
        // while this listener or a connection it accepted lives here.
        let claim = (Transport::Tcp, local.port());
        if self.home_again(fd, s, Kind::TcpListener(h), claim) {
            self.count(Counter::FamilyListeners);
        }
    }

    /// The port's owner (the process that listened first) may queue connections it
    /// will never accept (nginx's master): told that this member listens on `local`,
    /// it sends them to the group.
    fn tell_owner_listening(&mut self, local: SocketAddr) {
        let me = self.family.as_ref().expect("member").slot;
        if let Some(owner) = self
            .dev
            .port_entry(Transport::Tcp, local.port())
            .map(|e| e.owner)
            .filter(|&o| o != me)
        {
            let m = self.family.as_mut().expect("member");
            let msg = Message::Listening {
                conn: ConnKey {
                    local,
                    remote: super::sockaddr::any(local.is_ipv6(), 0),
                },
                from: me,
            };
            let _ = m.mailbox.send(owner, &msg, &[]);
        }
    }

    /// The app dropped group listener `lh` from its last epoll: unwatched if it still
    /// is when the app next waits (`apply_unwatched`).
    pub fn listener_unwatched(&mut self, lh: SocketHandle) {
        if let Some(m) = self.family.as_mut() {
            if !m.unwatch_pending.contains(&lh) {
                m.unwatch_pending.push(lh);
            }
        }
    }

    /// The app waits: the group listeners it dropped from its epolls and did not add
    /// back are unwatched (see `unwatch`).
    pub fn apply_unwatched(&mut self) {
        let Some(m) = self
            .family
            .as_mut()
            .filter(|m| !m.unwatch_pending.is_empty())
        else {
            return;
        };
        for lh in std::mem::take(&mut m.unwatch_pending) {
            self.unwatch(lh);
        }
    }

    /// The app stopped watching group listener `lh` (nginx's worker does when another
    /// holds the accept mutex): this member leaves the port's group, so new connections
    /// go to members that accept, and what it queued follows them (on Linux they share
    /// one queue that the mutex's holder empties).
    fn unwatch(&mut self, lh: SocketHandle) {
        let Ok(local) = self.iface.tcp.local_addr(lh) else {
            return;
        };
        if self.dev.leave_group(Transport::Tcp, local.port()).ok() != Some(true) {
            return;
        }
        debug(format_args!(
            "listener on {local} unwatched: out of its group"
        ));
        self.family.as_mut().expect("member").unwatched.push(lh);
        self.forward_to_group(lh);
    }

    /// The app watches group listener `lh` again: back in the group, and the owner
    /// told (it forwards what it queued while the group was empty).
    pub fn listener_watched(&mut self, lh: SocketHandle) {
        let Some(m) = self.family.as_mut() else {
            return;
        };
        // Dropped and added back before the app waited: nothing changed.
        m.unwatch_pending.retain(|&l| l != lh);
        let Some(i) = m.unwatched.iter().position(|&l| l == lh) else {
            return;
        };
        m.unwatched.swap_remove(i);
        m.forwarding.retain(|&l| l != lh);
        let Ok(local) = self.iface.tcp.local_addr(lh) else {
            return;
        };
        if let Err(e) = self.dev.join_group(Transport::Tcp, local.port()) {
            debug(format_args!("listener group of {local}: {e}"));
            return;
        }
        debug(format_args!(
            "listener on {local} watched again: back in its group"
        ));
        self.tell_owner_listening(local);
    }

    /// `fd` names `kind`, a socket made again in this stack, holding its claim on
    /// `claim`'s port; false when the fd table is full.
    fn home_again(&mut self, fd: i32, s: FastSocket, kind: Kind, claim: (Transport, u16)) -> bool {
        let claimed = Some(claim);
        let _ = self.claim_entry(claimed);
        let s = FastSocket {
            kind,
            primary_fd: fd,
            claimed,
            ..s
        };
        if self.fds.insert(fd, s).is_err() {
            return false;
        }
        if let Kind::TcpListener(h) | Kind::Udp(h) = kind {
            self.bind_handle(h, fd);
        }
        true
    }

    /// A UDP socket this process inherited: bound again in this stack, its port steered
    /// here (the kernel's own shared UDP socket would give each datagram to one reader).
    fn bind_udp_again(&mut self, fd: i32, s: FastSocket, local: SocketAddr) {
        let h = match self.iface.udp.open() {
            Ok(h) => h,
            Err(_) => return,
        };
        if self.iface.udp.bind(h, local).is_err()
            || self.dev.claim_here(Transport::Udp, local.port()).is_err()
        {
            let _ = self.iface.udp.close(h);
            rewriter::filter::mark_fd(fd, false);
            return;
        }
        self.home_again(fd, s, Kind::Udp(h), (Transport::Udp, local.port()));
    }

    /// Member `from` listens on `local` too: this process's listener there sends what
    /// it queues to the port's group from now on (while this process is not in it).
    fn start_forwarding(&mut self, local: SocketAddr, from: u32) {
        let Some(lh) = self.iface.tcp.listener_for(local) else {
            return;
        };
        debug(format_args!(
            "member {from} listens on {local}: queued connections go to the group"
        ));
        self.forward_to_group(lh);
    }

    /// Listener `lh` sends what it queues to its port's group from now on (while this
    /// process is not in the group), starting with what it holds now.
    fn forward_to_group(&mut self, lh: SocketHandle) {
        let m = self.family.as_mut().expect("member");
        if !m.forwarding.contains(&lh) {
            m.forwarding.push(lh);
        }
        self.forward_queued(lh);
    }

    /// Sends the connections listener `lh` queued to the members of its port's group
    /// (each to the member the XDP program gives its new flows); handshakes under way
    /// stay here, pinned, until they are established.
    fn forward_queued(&mut self, lh: SocketHandle) {
        let me = self.family.as_ref().expect("member").slot;
        // No group, or this process is in it: its listener serves its share.
        let entry = self
            .iface
            .tcp
            .local_addr(lh)
            .ok()
            .and_then(|local| self.dev.port_entry(Transport::Tcp, local.port()))
            .filter(|e| !e.members.is_empty() && !e.members.contains(&me));
        let Some(entry) = entry else {
            self.family
                .as_mut()
                .expect("member")
                .forwarding
                .retain(|&l| l != lh);
            return;
        };
        for (l, r) in self.iface.tcp.handshakes_of(lh) {
            let _ = self.dev.steer_flow(
                ConnKey {
                    local: l,
                    remote: r,
                },
                me,
            );
        }
        while let Ok(h) = self.iface.tcp.accept(lh) {
            let (Ok(l), Ok(r)) = (self.iface.tcp.local_addr(h), self.iface.tcp.peer_addr(h)) else {
                let _ = self.iface.tcp.abort(h);
                continue;
            };
            let conn = ConnKey {
                local: l,
                remote: r,
            };
            // The frames' queue is not known here; the flow is pointed at `to` below.
            let to = entry.slot_by_hash(r);
            // Its pin (from the handshake) is the member's to remove from now on.
            self.family.as_mut().expect("member").steered.remove(&h);
            let now = self.now();
            let Ok(st) = self.iface.tcp.export(now, h) else {
                let _ = self.iface.tcp.abort(h);
                continue;
            };
            // The state first, then the flow: the member reads its mailbox before its
            // rings, so it knows the connection before its first frame.
            let m = self.family.as_mut().expect("member");
            let sent = state_memfd(&st).and_then(|memfd| {
                let r = m.mailbox.send(to, &Message::Queued { conn }, &[memfd]);
                let _ = kernel::close(memfd);
                r
            });
            if sent.is_err() {
                continue;
            }
            m.moved.insert(conn, (to, now));
            if m.mailbox.waits_for(to) {
                // The state waits for room in the member's queue: its frames come
                // here meanwhile and follow it (forwarded, in order) until it went.
                m.steer_once_sent.push((conn, to));
            } else {
                let _ = self.dev.steer_flow(conn, to);
            }
            self.count(Counter::FamilyMovedOut);
        }
    }

    /// A connection another member's listener queued: into this process's listener
    /// on the same address, for its `accept`.
    fn take_queued(&mut self, conn: ConnKey, fds: &[i32]) {
        let st = fds.first().copied().and_then(read_state);
        for &fd in fds {
            let _ = kernel::close(fd);
        }
        let now = self.now();
        let listener = self.iface.tcp.listener_for(conn.local);
        let placed = st
            .zip(listener)
            .map(|(st, lh)| self.iface.tcp.import_queued(now, lh, &st));
        match placed {
            Some(Ok(h)) => {
                let m = self.family.as_mut().expect("member");
                m.steered.insert(h, conn);
                // Back here after this member forwarded it (a listener of the group
                // that nobody watched for a while): its frames are ours again.
                m.moved.remove(&conn);
                self.count(Counter::FamilyMovedIn);
            }
            other => debug(format_args!("cannot queue {conn:?} here: {other:?}")),
        }
    }

    /// True when `s` is a connection with a tether: its fds must be closed in the
    /// kernel before [`Engine::close_or_detach`] can tell whether it closes.
    pub fn is_tethered(&self, s: &FastSocket) -> bool {
        match (s.kind, &self.family) {
            (Kind::TcpStream(h), Some(m)) => m.tethers.contains_key(&h),
            _ => false,
        }
    }

    /// The app's last fd here of tethered connection `s` is closed: the connection
    /// closes (FIN) when no process names it any more, else it stays, detached.
    pub fn close_or_detach(&mut self, s: FastSocket) {
        let Kind::TcpStream(h) = s.kind else { return };
        let m = self.family.as_mut().expect("tethered");
        let t = m.tethers[&h];
        if !m.relays.contains_key(&h) && tether_cut(t.fd) {
            m.tethers.remove(&h);
            let _ = kernel::close(t.fd);
            rewriter::filter::mark_fd(t.fd, false);
            // The shadow keeps the port until the stack is done with the connection.
            self.close_socket_holding(s, t.shadow);
        } else {
            // No fd here names it any more: out of this process's epoll sets.
            for ep in s.epolls.iter() {
                if let Some(set) = self.epolls.get_mut(&ep) {
                    set.forget(s.primary_fd);
                }
            }
            let mut s = s;
            s.epolls = Default::default();
            s.primary_fd = -1;
            self.family.as_mut().expect("tethered").detached.push(s);
            self.handle_fd_forget(h);
        }
    }

    /// The app closed an away fd: it only stops naming the socket here.
    pub fn close_away(&mut self, fd: i32) -> bool {
        self.family
            .as_mut()
            .is_some_and(|m| m.away.remove(&fd).is_some())
    }

    /// The background driver's family chores: detached connections whose last fd
    /// anywhere closed are closed now (FIN), as the kernel closes a socket with its
    /// last fd; old forwarding entries go; with `reap`, members that died without
    /// cleaning up (kill -9) lose their slots, map entries and flows.
    pub fn tend_family(&mut self, reap: bool) {
        if reap {
            self.sweep_kernel_flows();
            self.forget_handed_frames();
            for slot in super::family::reap_dead() {
                debug(format_args!("member {slot} died: its XDP entries go"));
                self.dev.forget_slot(slot);
            }
        }
        let now = self.now();
        let Some(m) = self.family.as_mut() else {
            return;
        };
        m.moved
            .retain(|_, &mut (_, at)| now.micros() < at.micros() + MOVED_MEMORY_US);
        for lh in m.draining.clone() {
            let idle = self.iface.tcp.handshakes_of(lh).is_empty()
                && !self.iface.tcp.readiness(lh).readable();
            if reap && idle {
                let _ = self.iface.tcp.close(lh);
                let m = self.family.as_mut().expect("member");
                m.draining.retain(|&l| l != lh);
                m.forwarding.retain(|&l| l != lh);
            }
        }
        let Some(m) = self.family.as_mut() else {
            return;
        };
        for lh in m.forwarding.clone() {
            // Queued connections at once; the group and the handshakes under way
            // every FAMILY_CHECK_TICKS.
            if reap || self.iface.tcp.readiness(lh).readable() {
                self.forward_queued(lh);
            }
        }
        let Some(m) = self.family.as_mut() else {
            return;
        };
        if m.detached.is_empty() {
            return;
        }
        let mut cut = Vec::new();
        let (tethers, relays) = (&m.tethers, &m.relays);
        m.detached.retain(|s| {
            let t = match s.kind {
                // A relayed connection lives until its relay ends.
                Kind::TcpStream(h) if relays.contains_key(&h) => return true,
                Kind::TcpStream(h) => tethers.get(&h).copied(),
                _ => None,
            };
            if t.is_none_or(|t| tether_cut(t.fd)) {
                cut.push((*s, t));
                false
            } else {
                true
            }
        });
        for (s, t) in cut {
            let mut held = -1;
            if let (Some(t), Kind::TcpStream(h)) = (t, s.kind) {
                let _ = kernel::close(t.fd);
                rewriter::filter::mark_fd(t.fd, false);
                self.family.as_mut().expect("member").tethers.remove(&h);
                held = t.shadow;
            }
            self.close_socket_holding(s, held);
        }
    }

    /// The app closed listener `lh`, of a port whose group this member had joined (and
    /// has just left): rather than resetting what it holds (Linux's listener is one
    /// socket shared by the workers, which a worker's close does not end), it finishes
    /// its handshakes and sends its queue to the group. False: close it now.
    pub fn drain_to_group(&mut self, lh: SocketHandle) -> bool {
        let Some(m) = self.family.as_mut() else {
            return false;
        };
        // Closed: not to be watched again (its handle may be reused).
        m.unwatched.retain(|&l| l != lh);
        m.unwatch_pending.retain(|&l| l != lh);
        let Ok(local) = self.iface.tcp.local_addr(lh) else {
            return false;
        };
        if !m.pinned_ports.contains(&local.port()) {
            return false;
        }
        // Still pinning: a SYN already on its way when this member left the group
        // completes its handshake here.
        m.draining.push(lh);
        self.forward_to_group(lh);
        true
    }

    /// Pins the handshakes this member's group listeners began since the last drive
    /// (see `pin_accepted`): from the SYN on, so that a change of the group while the
    /// handshake completes does not send its ACK to another member.
    pub fn pin_handshakes(&mut self) {
        if self
            .family
            .as_ref()
            .is_none_or(|m| m.pinned_ports.is_empty())
        {
            return;
        }
        for (h, local, remote) in self.iface.tcp.take_handshakes() {
            let m = self.family.as_ref().expect("member");
            if m.pinned_ports.contains(&local.port()) {
                let (local, remote) = (local, remote);
                self.pin_here(h, ConnKey { local, remote });
            }
        }
    }

    /// True while a listener the app closed still finishes handshakes or holds
    /// connections for the group (an exiting worker lingers for them).
    pub fn draining_busy(&self) -> bool {
        self.family.as_ref().is_some_and(|m| {
            m.draining.iter().any(|&lh| {
                !self.iface.tcp.handshakes_of(lh).is_empty()
                    || self.iface.tcp.readiness(lh).readable()
            })
        })
    }

    /// A connection this member accepted from a listener group: its flow is pinned to
    /// this member, so that a change of the group (a reload's new workers, a worker
    /// gone) does not send its segments to another member, which would reset it.
    pub fn pin_accepted(&mut self, h: SocketHandle) {
        let Some(m) = self.family.as_ref() else {
            return;
        };
        if m.steered.contains_key(&h) {
            return;
        }
        let (Ok(local), Ok(remote)) = (self.iface.tcp.local_addr(h), self.iface.tcp.peer_addr(h))
        else {
            return;
        };
        if !m.pinned_ports.contains(&local.port()) {
            return;
        }
        self.pin_here(h, ConnKey { local, remote });
    }

    /// Steers `conn` (connection `h`) to this member in the flow map; the entry goes
    /// with the connection (`connection_gone`).
    fn pin_here(&mut self, h: SocketHandle, conn: ConnKey) {
        let Some(m) = self.family.as_mut() else {
            return;
        };
        if self.dev.steer_flow(conn, m.slot).is_ok() {
            m.steered.insert(h, conn);
        }
    }

    /// A connection this process opens (`h`, from `local` to `remote`): when the port
    /// map sends its frames to another member (that member claimed the port first: an
    /// app bound both sockets to it with SO_REUSEADDR), its flow is pinned here, from
    /// before its SYN goes; the entry goes with the connection.
    pub fn pin_connecting(&mut self, h: SocketHandle, local: SocketAddr, remote: SocketAddr) {
        let Some(me) = self.family.as_ref().map(|m| m.slot) else {
            return;
        };
        // Alone in the family, every port it claims is its own (no map lookup).
        if !super::family::has_others() {
            return;
        }
        let entry = self.dev.port_entry(Transport::Tcp, local.port());
        if !sent_elsewhere(entry.as_ref(), remote, me, self.dev.queues_in_use()) {
            return;
        }
        self.pin_here(h, ConnKey { local, remote });
    }

    /// A connection that moved here ended: the XDP program stops steering its flow.
    /// True when this member steered `h`'s flow to itself (a connection that moved
    /// here, or a handshake pinned here): the entry goes when the connection does.
    pub fn steers(&self, h: SocketHandle) -> bool {
        self.family
            .as_ref()
            .is_some_and(|m| m.steered.contains_key(&h))
    }

    /// Forgets that `h`'s flow was steered here without touching the entry (another
    /// entry replaced it: the connection went to the kernel).
    pub fn forget_steering(&mut self, h: SocketHandle) {
        if let Some(m) = self.family.as_mut() {
            m.steered.remove(&h);
        }
    }

    pub fn connection_gone(&mut self, h: SocketHandle) {
        let Some(m) = self.family.as_mut() else {
            return;
        };
        // The handle may name another connection later.
        m.relays.remove(&h);
        if let Some(conn) = m.steered.remove(&h) {
            let _ = self.dev.unsteer_flow(conn);
        }
    }
}

/// True when the port map (`entry`, None: the port is not claimed) may send a frame
/// from `remote` that no flow entry claims to a slot other than `me` (on an interface
/// with `queues` in use).
fn sent_elsewhere(entry: Option<&PortEntry>, remote: SocketAddr, me: u32, queues: u32) -> bool {
    entry.is_some_and(|e| e.may_go_elsewhere(remote, me, queues))
}

/// True when no process names the connection any more: the tether reads end-of-file
/// (bytes waiting on it are a relayed service's, see `relay`).
fn tether_cut(t: i32) -> bool {
    let mut p = [libc::pollfd {
        fd: t,
        events: libc::POLLIN,
        revents: 0,
    }];
    if !kernel::poll(&mut p, 0).is_ok_and(|n| n == 1) {
        return false;
    }
    p[0].revents & libc::POLLHUP != 0
        || (p[0].revents & libc::POLLIN != 0 && kernel::recv_now(t, &mut [0u8; 1], true) == Ok(0))
}

fn state_memfd(st: &ConnectionState) -> Result<i32, kernel::Errno> {
    let fd = kernel::memfd(c"fastnet-conn")?;
    let bytes = st.encode();
    let mut off = 0;
    while off < bytes.len() {
        match kernel::write(fd, &bytes[off..]) {
            Ok(n) if n > 0 => off += n,
            Ok(_) => {
                let _ = kernel::close(fd);
                return Err(libc::EIO);
            }
            Err(e) => {
                let _ = kernel::close(fd);
                return Err(e);
            }
        }
    }
    Ok(fd)
}

fn read_state(fd: i32) -> Option<ConnectionState> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match kernel::pread(fd, &mut buf, bytes.len() as i64) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    ConnectionState::decode(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_connection_is_pinned_only_when_the_port_map_sends_it_elsewhere() {
        let remote = SocketAddr::new(Ipv4Addr::new(10, 77, 0, 2).into(), 7103);
        let owned = |owner, members: Vec<u32>| PortEntry {
            owner,
            members,
            pid: 0,
        };
        // A port this member claimed: its frames come here already.
        assert!(!sent_elsewhere(Some(&owned(1, vec![])), remote, 1, 1));
        // The founder's port (slot 0), or another member's: pinned.
        assert!(sent_elsewhere(Some(&owned(0, vec![])), remote, 1, 1));
        assert!(sent_elsewhere(Some(&owned(3, vec![])), remote, 0, 2));
        // On one queue a listener group decides by the remote end, whoever owns the
        // port.
        let group = owned(0, vec![1, 2]);
        let to = group.slot_by_hash(remote);
        assert!(!sent_elsewhere(Some(&group), remote, to, 1));
        assert!(sent_elsewhere(Some(&group), remote, 3 - to, 1));
        // On two queues by the queue, which a connection's first frame has not told
        // yet: any member may get it.
        assert!(sent_elsewhere(Some(&group), remote, to, 2));
        // Not claimed: nothing to pin against.
        assert!(!sent_elsewhere(None, remote, 1, 2));
    }
}
