//! The fast-path interface as the shim uses it: the steering program attached through
//! a BPF link, one AF_XDP socket per receive queue, and the kernel's view of the
//! interface (index, MAC, address, MTU).
//!
//! Every setup failure is one line that names the fix; the caller logs it and keeps
//! every socket on the kernel.

use stack::device::{Device, DeviceCaps};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use xdp_backend::flowmap::FlowKey;
use xdp_backend::netlink;
use xdp_backend::portmap::Transport;
use xdp_backend::xsk::{RxMode, XskConfig, XskSocket};
use xdp_backend::{AttachMode, AttachedIface, LinkChange, LinkMonitor, StartError};

/// The interface the fast path runs on.
pub struct FastIface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// The interface's IPv6 addresses (not tentative) with their prefix lengths, as the
    /// kernel had them at start: the stack's too (see `Engine::new`).
    pub addrs6: Vec<(Ipv6Addr, u8)>,
    pub mtu: usize,
    /// Recent route lookups (see `routes_to`).
    routes: std::cell::RefCell<RouteCache>,
    /// None: no interface was named and the stack runs for loopback alone.
    port: Option<AttachedIface>,
    /// Wakes the driver when the interface changes (queues, gone, XDP detached).
    monitor: Option<LinkMonitor>,
    /// Where frames go without XSKs (see [`NoDevice`]).
    none: NoDevice,
    /// Loopback with other fastnet processes (FASTNET_LOOPBACK=host).
    pub host: Option<super::hostlo::HostLoop>,
    /// AF_XDP sockets made for a child being forked (see `prepare_spares`).
    spares: Vec<std::os::fd::OwnedFd>,
    /// Which socket frames leave on (see [`TxQueueChoice`]).
    tx_choice: TxQueueChoice,
}

/// The queue a process transmits on: the one most of its frames arrived on lately.
/// A family's listener group takes new connections by queue (see the steering
/// program), so each member's frames arrive on its own queues; sending on one of them
/// too keeps each queue's completion ring and TX pool to one process, with no other
/// process waiting on its lock.
#[derive(Debug, Default)]
struct TxQueueChoice {
    /// Index (into the sockets) sent on.
    current: usize,
    /// Frames received per socket since the last choice.
    recent: Vec<u32>,
    /// Their sum.
    total: u32,
    /// Frames received on other sockets than `current` (a counter).
    elsewhere: u64,
}

/// Frames between two choices: enough that one connection's burst on another queue
/// does not flip the queue (frames of one flow sent on two queues may be reordered).
const TX_CHOICE_FRAMES: u32 = 1024;

impl TxQueueChoice {
    /// `n` frames came in on socket `i` (of `sockets`).
    fn received(&mut self, i: usize, n: usize, sockets: usize) {
        if n == 0 {
            return;
        }
        if i != self.current {
            self.elsewhere += n as u64;
        }
        self.recent.resize(sockets, 0);
        self.recent[i] = self.recent[i].saturating_add(n as u32);
        self.total = self.total.saturating_add(n as u32);
        if self.total < TX_CHOICE_FRAMES {
            return;
        }
        let best = (0..sockets).max_by_key(|&k| self.recent[k]).unwrap_or(0);
        // Another queue must carry clearly more than the current one (hysteresis).
        if self.recent[best] > self.recent.get(self.current).copied().unwrap_or(0) * 2 {
            self.current = best;
        }
        self.recent.iter_mut().for_each(|r| *r = 0);
        self.total = 0;
    }

    /// The socket to send on, among `sockets` (the count may have shrunk).
    fn index(&self, sockets: usize) -> usize {
        if self.current < sockets {
            self.current
        } else {
            0
        }
    }
}

/// What the stack transmits through: the XSK (or [`NoDevice`]), and for frames to a
/// local address that another fastnet process serves, that process's inbox.
pub struct FastTx<'a> {
    out: &'a mut dyn Device,
    host: Option<&'a mut super::hostlo::HostLoop>,
}

impl Device for FastTx<'_> {
    fn caps(&self) -> DeviceCaps {
        self.out.caps()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.out.transmit(len, fill)
    }
    fn take_local(&mut self, frame: &[u8]) -> bool {
        self.host.as_mut().is_some_and(|h| h.route(frame))
    }
}

/// The device of a stack that runs for loopback alone: local frames never reach it,
/// and anything else (there is no route off the host) is dropped and counted.
#[derive(Debug, Default)]
pub struct NoDevice {
    pub dropped: u64,
}

impl Device for NoDevice {
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: LOOPBACK_MTU,
            checksum: Default::default(),
        }
    }
    fn transmit(&mut self, _len: usize, _fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.dropped += 1;
        true
    }
}

/// The MTU of local delivery, as Linux's `lo`.
pub const LOOPBACK_MTU: usize = 65535;

/// Route lookups by destination, with when they were made.
type RouteCache = std::collections::HashMap<IpAddr, (Option<netlink::Route>, std::time::Instant)>;

/// How long a route lookup is reused: each one is a netlink socket and a round trip
/// (socket, bind, sendto, recvfrom, close), per connect and per UDP datagram sent to
/// an address. A route change shows within this long.
const ROUTE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Destinations remembered at most (the cache starts over past it).
const ROUTE_CACHE_MAX: usize = 256;

impl FastIface {
    /// Starts the fast path on `name` (see [`AttachedIface::open`]: the same code the
    /// doctor and `fastnet run`'s check run) and watches the interface for changes.
    pub fn open(
        name: &str,
        busy_poll: bool,
        attach_mode: Option<AttachMode>,
    ) -> Result<FastIface, StartError> {
        let cfg = XskConfig {
            rx_mode: if busy_poll {
                RxMode::BusyPoll
            } else {
                RxMode::Blocking
            },
            attach_mode,
            ..XskConfig::default()
        };
        let port = AttachedIface::open(name, &cfg)?;
        let monitor = LinkMonitor::open().map_err(|e| StartError {
            cause: format!("cannot watch {name} for changes (netlink: {e})"),
            fix: "run as root or grant CAP_NET_ADMIN".to_string(),
        })?;
        // The stack takes the interface's IPv6 addresses (see `Engine::new`), so the
        // program may steer IPv6 to our ports (the XDP program's switch; off, a claimed
        // port's IPv6 frames would stay the kernel's).
        let addrs6 = netlink::ipv6_addresses(port.link.index).unwrap_or_default();
        if !addrs6.is_empty() {
            port.program()
                .set_ipv6_steering(true)
                .map_err(|e| StartError {
                    cause: format!("cannot write the settings of the XDP program on {name} ({e})"),
                    fix: "run as root or grant CAP_BPF".to_string(),
                })?;
        }
        Ok(FastIface {
            name: name.to_string(),
            ifindex: port.link.index,
            mac: port.link.mac,
            addr: port.addr,
            prefix_len: port.prefix_len,
            addrs6,
            mtu: port.link.mtu as usize,
            routes: Default::default(),
            monitor: Some(monitor),
            port: Some(port),
            none: NoDevice::default(),
            host: None,
            spares: Vec::new(),
            tx_choice: TxQueueChoice::default(),
        })
    }

    /// No interface: the stack carries loopback alone (FASTNET_LOOPBACK=process).
    pub fn loopback_only() -> FastIface {
        FastIface {
            name: "lo".to_string(),
            ifindex: 0,
            mac: [2, 0, 0, 0, 0, 1],
            addr: Ipv4Addr::LOCALHOST,
            prefix_len: 8,
            addrs6: Vec::new(),
            mtu: LOOPBACK_MTU,
            routes: Default::default(),
            port: None,
            monitor: None,
            none: NoDevice::default(),
            host: None,
            spares: Vec::new(),
            tx_choice: TxQueueChoice::default(),
        }
    }

    /// Unbound AF_XDP sockets for a child about to be forked (see
    /// `AttachedIface::spare_sockets`): a worker that drops its privileges before it
    /// uses a socket can still join. The parent drops its copies after fork.
    /// Without the privilege to make them (the app dropped root), the ones made before
    /// it did (see `process::start_before_dropping_root`) serve the next child.
    pub fn prepare_spares(&mut self) {
        use std::os::fd::AsRawFd;
        let Some(p) = &self.port else { return };
        let Ok(new) = p.spare_sockets() else { return };
        for s in self.spares.drain(..) {
            rewriter::filter::mark_fd(s.as_raw_fd(), false);
        }
        self.spares = new;
        for s in &self.spares {
            rewriter::filter::mark_fd(s.as_raw_fd(), true);
        }
    }

    /// The parent's side after fork: its copies of the spares go.
    pub fn drop_spares(&mut self) {
        for s in self.spares.drain(..) {
            use std::os::fd::AsRawFd;
            rewriter::filter::mark_fd(s.as_raw_fd(), false);
        }
    }

    /// This process's own sockets on the interface, as member `slot` of the family
    /// whose interface this is (`self` is the copy a forked child inherited; see
    /// `family`). Loopback alone: a stack of its own, with nothing to share.
    pub fn join(&mut self, slot: u32) -> Result<FastIface, StartError> {
        let Some(port) = &self.port else {
            return Ok(FastIface::loopback_only());
        };
        let spares = std::mem::take(&mut self.spares);
        let joined = AttachedIface::join_with(port, slot, spares)?;
        // Without the right to watch the interface (a worker that dropped its
        // privileges), the member serves the queues it joined on.
        let monitor = LinkMonitor::open().ok();
        Ok(FastIface {
            name: self.name.clone(),
            ifindex: self.ifindex,
            mac: self.mac,
            addr: self.addr,
            prefix_len: self.prefix_len,
            addrs6: self.addrs6.clone(),
            mtu: self.mtu,
            routes: Default::default(),
            port: Some(joined),
            monitor,
            none: NoDevice::default(),
            host: None,
            spares: Vec::new(),
            tx_choice: TxQueueChoice::default(),
        })
    }

    fn attached(&self) -> std::io::Result<&AttachedIface> {
        self.port
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no interface"))
    }

    /// Sends the frames of connection `conn` to member `slot`'s sockets.
    pub fn steer_flow(&self, conn: super::mailbox::ConnKey, slot: u32) -> std::io::Result<()> {
        let key = FlowKey::new(Transport::Tcp, conn.local, conn.remote);
        self.attached()?.steer_flow(&key, slot)
    }

    /// Sends `conn`'s frames to the kernel's stack (it is a kernel socket's now), although
    /// its port stays ours.
    pub fn flow_to_kernel(&self, conn: super::mailbox::ConnKey) -> std::io::Result<()> {
        let key = FlowKey::new(Transport::Tcp, conn.local, conn.remote);
        self.attached()?.steer_flow(&key, xdp_backend::KERNEL_SLOT)
    }

    /// The connections whose flow entries send them to the kernel.
    pub fn kernel_flows(&self) -> Vec<super::mailbox::ConnKey> {
        let Ok(a) = self.attached() else {
            return Vec::new();
        };
        a.program()
            .flow_map()
            .flows()
            .unwrap_or_default()
            .into_iter()
            .filter(|(f, slot)| *slot == xdp_backend::KERNEL_SLOT && f.proto == Transport::Tcp)
            .map(|(f, _)| super::mailbox::ConnKey {
                local: f.local,
                remote: f.remote,
            })
            .collect()
    }

    /// Stops steering `conn` by its own entry (it ended).
    pub fn unsteer_flow(&self, conn: super::mailbox::ConnKey) -> std::io::Result<bool> {
        let key = FlowKey::new(Transport::Tcp, conn.local, conn.remote);
        self.attached()?.unsteer_flow(&key)
    }

    /// This member takes new connections of `port` too (a listener it inherited).
    pub fn join_group(&self, t: Transport, port: u16) -> std::io::Result<()> {
        let a = self.attached()?;
        super::family::locked(|| a.join_group(t, port))
    }

    /// Takes this process out of `port`'s listener group; false when it was not in it.
    pub fn leave_group(&self, t: Transport, port: u16) -> std::io::Result<bool> {
        let a = self.attached()?;
        super::family::locked(|| a.leave_group(t, port))
    }

    /// The port map's entry for `port` (owner, listener group).
    pub fn port_entry(&self, t: Transport, port: u16) -> Option<xdp_backend::portmap::PortEntry> {
        self.attached()
            .ok()?
            .program()
            .port_map()
            .entry(t, port)
            .ok()?
    }

    /// Steers `port` to this member (a UDP socket it inherited and uses).
    pub fn claim_here(&self, t: Transport, port: u16) -> std::io::Result<()> {
        let a = self.attached()?;
        super::family::locked(|| a.program().port_map().set_owner(t, port, a.slot()))
    }

    /// Member `slot` died or left: its sockets' map entries, group places and flows go.
    pub fn forget_slot(&self, slot: u32) {
        if let Ok(a) = self.attached() {
            let _ = super::family::locked(|| a.forget_slot(slot));
        }
    }

    /// A forked child that names no inherited socket any more closes its copy of the
    /// XDP link (see `calls::not_member`).
    pub fn close_link_copy(&mut self) {
        if let Some(p) = &mut self.port {
            p.release_link_copy();
        }
    }

    /// True when frames can leave through AF_XDP (an interface was named).
    pub fn has_xdp(&self) -> bool {
        self.port.is_some()
    }

    fn xsks(&self) -> &[XskSocket] {
        self.port.as_ref().map_or(&[], |p| p.xsks())
    }

    fn xsks_mut(&mut self) -> &mut [XskSocket] {
        self.port.as_mut().map_or(&mut [], |p| p.xsks_mut())
    }

    /// The queue counts in use ("1 in use of 2 allocated"), for logs and counters.
    pub fn queues(&self) -> Option<xdp_backend::QueueCounts> {
        self.port.as_ref().map(|p| p.queues)
    }

    /// RX queues in use (0 without an interface), as the steering program knows them.
    pub fn queues_in_use(&self) -> u32 {
        self.port.as_ref().map_or(0, |p| p.queues.bindable())
    }

    /// Drains the link monitor; when the interface changed, follows it (rebinds on a
    /// new queue count). Err: the fast path cannot go on on this interface.
    pub fn follow_link_changes(&mut self) -> Result<LinkChange, StartError> {
        let (Some(m), Some(port)) = (self.monitor.as_mut(), self.port.as_mut()) else {
            return Ok(LinkChange::None);
        };
        if !m.drain(self.ifindex) {
            return Ok(LinkChange::None);
        }
        port.check()
    }

    /// Steers `port` to the fast path, owned by this member's slot: frames of the port
    /// that no flow entry claims come to this process (a forked child's own connection,
    /// listener or UDP socket; slot 0 is the founder's, whose stack knows none of them).
    /// A port claimed already keeps its owner. Call before the shadow listens or connects.
    pub fn claim(&self, t: Transport, port: u16) -> std::io::Result<()> {
        match &self.port {
            Some(p) => p.claim_port(t, port).map(|_| ()),
            None => Ok(()),
        }
    }

    /// This process no longer uses `port`. The port is shared by the family (a
    /// listener's group, the owner): this member leaves the group; an owner hands the
    /// port to a member still in the group; the last one gives it back to the kernel.
    pub fn release(&self, t: Transport, port: u16) {
        super::family::locked(|| self.release_locked(t, port));
    }

    /// As [`FastIface::release`], for a port whose last user here is a connection
    /// that moved to member `to`: a port this member owns goes to `to` (its frames with
    /// it), not back to the kernel, which would answer them with RSTs.
    pub fn hand_over(&self, t: Transport, port: u16, to: u32) {
        super::family::locked(|| {
            let Some(p) = &self.port else { return };
            let map = p.program().port_map();
            match map.entry(t, port) {
                Ok(Some(e)) if e.owner == p.slot() => {
                    if e.members.contains(&p.slot()) {
                        let _ = map.leave_group(t, port, p.slot());
                    }
                    let _ = map.set_owner(t, port, to);
                }
                _ => self.release_locked(t, port),
            }
        });
    }

    fn release_locked(&self, t: Transport, port: u16) {
        let Some(p) = &self.port else { return };
        let map = p.program().port_map();
        let me = p.slot();
        let Ok(Some(entry)) = map.entry(t, port) else {
            return;
        };
        let others: Vec<u32> = entry.members.iter().copied().filter(|&m| m != me).collect();
        if entry.members.contains(&me) {
            let _ = map.leave_group(t, port, me);
        }
        if entry.owner != me && super::family::member(entry.owner).is_some() {
            return;
        }
        match others.first() {
            Some(&heir) => {
                let _ = map.set_owner(t, port, heir);
            }
            None => {
                let _ = map.release(t, port);
            }
        }
    }

    /// Hands up to `budget` received frames per queue to `f`.
    pub fn receive(&mut self, budget: u32, mut f: impl FnMut(&[u8])) -> usize {
        let Some(port) = self.port.as_mut() else {
            return 0;
        };
        let xsks = port.xsks_mut();
        let sockets = xsks.len();
        let mut n = 0;
        for (i, x) in xsks.iter_mut().enumerate() {
            let got = x.receive(budget, &mut f);
            self.tx_choice.received(i, got, sockets);
            n += got;
        }
        n
    }

    /// The RX queue frames are sent on (see [`TxQueueChoice`]).
    pub fn tx_queue(&self) -> u32 {
        let x = self.xsks();
        x.get(self.tx_choice.index(x.len()))
            .map_or(0, |x| x.queue())
    }

    /// Frames received on another queue than the one sent on.
    pub fn rx_other_queues(&self) -> u64 {
        self.tx_choice.elsewhere
    }

    /// Frames waiting on the RX rings.
    pub fn rx_pending(&self) -> u32 {
        let host = self.host.as_ref().map_or(0, |h| h.pending() as u32);
        self.xsks().iter().map(|x| x.rx_available()).sum::<u32>() + host
    }

    /// The socket frames are sent on: one per process (its stack is behind one lock),
    /// on the queue its frames arrive on (see [`TxQueueChoice`]).
    pub fn tx(&mut self) -> FastTx<'_> {
        let choice = &self.tx_choice;
        let socket = self.port.as_mut().and_then(|p| {
            let x = p.xsks_mut();
            let i = choice.index(x.len());
            x.get_mut(i)
        });
        let out: &mut dyn Device = match socket {
            Some(x) => x,
            None => &mut self.none,
        };
        FastTx {
            out,
            host: self.host.as_mut(),
        }
    }

    /// Hands up to `budget` frames from other fastnet processes (host loopback) to `f`.
    pub fn receive_host(&mut self, budget: u32, f: &mut dyn FnMut(&[u8])) -> u64 {
        match &mut self.host {
            Some(h) => h.receive(budget as u64, f),
            None => 0,
        }
    }

    /// Pushes queued frames to the kernel (copy mode needs a kick per batch).
    pub fn flush(&mut self) {
        for x in self.xsks_mut() {
            x.flush();
        }
    }

    /// Frames queued for transmit that no kick has sent yet.
    pub fn tx_unkicked(&self) -> u32 {
        self.xsks().iter().map(|x| x.unkicked()).sum()
    }

    /// Fds to poll for received frames.
    pub fn poll_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.xsks()
            .iter()
            .map(|x| x.fd())
            .chain(self.host.as_ref().map(|h| h.poll_fd()))
    }

    /// The link monitor's fds: readable when the interface changed (the background
    /// driver polls them while it sleeps).
    pub fn monitor_fds(&self) -> Vec<RawFd> {
        self.monitor.iter().flat_map(|m| m.fds()).collect()
    }

    /// Every fd the interface holds (protected from the app's close/dup2).
    pub fn owned_fds(&self) -> Vec<RawFd> {
        let mut v = self
            .port
            .as_ref()
            .map_or_else(Vec::new, |p| p.program().raw_fds());
        v.extend(self.poll_fds());
        // Not in poll_fds: the background driver reads them on its own schedule, and a
        // readable monitor in the app's poll sets would wake them until it does.
        v.extend(self.monitor.iter().flat_map(|m| m.fds()));
        if let Some(h) = &self.host {
            v.extend(h.owned_fds());
        }
        v
    }

    /// The steering program's own counters (one map lookup).
    pub fn xdp_counters(&self) -> Option<xdp_backend::XdpCounters> {
        self.port.as_ref()?.program().counters().ok()
    }

    pub fn xsk_stats(&self) -> Vec<xdp_backend::xsk::XskStats> {
        self.xsks().iter().map(|x| x.stats()).collect()
    }

    /// True when `ip` is on this interface's subnet or routed through it.
    pub fn routes_to(&self, ip: impl Into<IpAddr>) -> Option<netlink::Route> {
        let ip = ip.into();
        self.port.as_ref()?;
        let now = std::time::Instant::now();
        let mut cache = self.routes.borrow_mut();
        if let Some((r, at)) = cache.get(&ip) {
            if now.duration_since(*at) < ROUTE_TTL {
                return *r;
            }
        }
        let r = netlink::route_get(ip)
            .ok()
            .filter(|r| r.oif == self.ifindex);
        if cache.len() >= ROUTE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(ip, (r, now));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tx_queue_follows_where_most_frames_arrive_with_hysteresis() {
        let mut c = TxQueueChoice::default();
        assert_eq!(c.index(2), 0);
        // Everything arrives on socket 1: after a round of frames it is sent on.
        for _ in 0..TX_CHOICE_FRAMES / 64 {
            c.received(1, 64, 2);
        }
        assert_eq!(c.index(2), 1);
        assert_eq!(c.elsewhere, TX_CHOICE_FRAMES as u64);
        // A round split 40/60 does not move it back (not clearly more).
        for _ in 0..16 {
            c.received(0, 26, 2);
            c.received(1, 38, 2);
        }
        assert_eq!(c.index(2), 1);
        assert_eq!(c.elsewhere, TX_CHOICE_FRAMES as u64 + 16 * 26);
        // A round mostly on socket 0 does.
        for _ in 0..16 {
            c.received(0, 56, 2);
            c.received(1, 8, 2);
        }
        assert_eq!(c.index(2), 0);
        // Empty batches count nothing; a socket gone falls back to the first.
        c.received(1, 0, 2);
        assert_eq!(c.total, 0);
        c.current = 3;
        assert_eq!(c.index(2), 0);
    }
}
