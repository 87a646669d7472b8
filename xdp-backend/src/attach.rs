//! Starting the fast path on an interface: the steering program attached through a
//! BPF link and one AF_XDP socket on every queue in use. The shim, `fastnet run`'s
//! check before the program starts, and `fastnet doctor` all go through
//! [`AttachedIface::open`], so they cannot disagree about whether it works.
//!
//! Every failure is a [`StartError`]: what went wrong and what to do, in one line.

use crate::flowmap::FlowKey;
use crate::netlink::{self, LinkInfo};
use crate::portmap::Transport;
use crate::program::{XdpProgram, MAX_QUEUES, MAX_SLOTS};
use crate::queues::{self, QueueCounts};
use crate::xsk::{XskConfig, XskSocket};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

/// The largest MTU native XDP takes on veth (and a 4 KiB AF_XDP frame holds): a page
/// less XDP's 256-byte headroom, the skb's shared info (320) and the Ethernet header.
pub const MAX_XDP_MTU: u32 = 4096 - 256 - 320 - 14;

/// Why the fast path cannot start (or go on) on an interface, and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError {
    pub cause: String,
    pub fix: String,
}

impl StartError {
    fn new(cause: impl Into<String>, fix: impl Into<String>) -> StartError {
        StartError {
            cause: cause.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause, self.fix)
    }
}

impl std::error::Error for StartError {}

/// The OS error number, also of an error that wrapped it in a message (and kept only
/// its kind).
fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or(match e.kind() {
        io::ErrorKind::PermissionDenied => Some(libc::EPERM),
        _ => None,
    })
}

/// The fix for a permission refused while starting: root or the capabilities; for a
/// process that is no longer root, why (it dropped root before its first socket).
fn privilege_fix(caps: &str) -> String {
    match crate::sys::geteuid() {
        0 => format!("run as root, or grant {caps}"),
        uid => format!("this process runs as uid {uid}, not root: a program that drops root before its first socket (e.g. `memcached -d -u USER`) cannot start the fast path itself; keep it root until it opened its sockets, or run it on the kernel (--fallback=kernel)"),
    }
}

/// Another XDP program (another fastnet process's, or anyone's) holds `name`.
fn foreign_program(name: &str, id: u32) -> StartError {
    StartError::new(
        format!("{name} already has XDP program {id} attached"),
        format!("stop its owner (`bpftool prog show id {id}`) or `ip link set dev {name} xdp off`, or pick another interface; a second fastnet process cannot share {name}"),
    )
}

/// The interface with fastnet's steering program attached and an XSK per queue in use,
/// for one process of the family: slot 0 attached the program
/// ([`AttachedIface::open`]); another process (typically a forked child) joins with
/// [`AttachedIface::join`] under a slot of its own, with sockets that share the UMEM of
/// slot 0's on the same queues.
pub struct AttachedIface {
    pub link: LinkInfo,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub queues: QueueCounts,
    /// The kernel's id of our program (netlink reports the attached one's).
    pub prog_id: u32,
    config: XskConfig,
    /// This process's slot in the program.
    slot: u32,
    /// The process that opened or joined: only it unregisters the sockets on drop
    /// (a forked child dropping its inherited copy must not).
    pid: u32,
    // Field order is drop order: sockets close before the program goes (`Drop`
    // removed them from the XSKMAP first).
    xsks: Vec<XskSocket>,
    program: XdpProgram,
}

/// What [`AttachedIface::check`] found changed on the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// Nothing that matters to the fast path.
    None,
    /// The queues in use changed and every queue in use has its socket again.
    Rebound {
        before: QueueCounts,
        after: QueueCounts,
    },
}

impl AttachedIface {
    /// Attaches the steering program to `name` and binds an XSK on every queue in use.
    pub fn open(name: &str, config: &XskConfig) -> Result<AttachedIface, StartError> {
        let link = netlink::link_by_name(name).map_err(|e| {
            StartError::new(
                format!("no interface {name:?} in this network namespace ({e})"),
                "name an existing interface with --iface / FASTNET_IFACE (`ip -br link`; in a namespace, run fastnet inside it: `ip netns exec NS fastnet run ...`)",
            )
        })?;
        if let Some(id) = link.xdp_prog_id {
            return Err(foreign_program(name, id));
        }
        if link.mtu > MAX_XDP_MTU {
            return Err(StartError::new(
                format!("{name} has MTU {}, above the {MAX_XDP_MTU} that XDP with one 4 KiB frame allows", link.mtu),
                format!("`ip link set dev {name} mtu 1500` (on a veth, on both ends)"),
            ));
        }
        let addrs = netlink::ipv4_addresses(link.index).map_err(|e| {
            StartError::new(
                format!("cannot read the IPv4 addresses of {name} ({e})"),
                format!("check `ip addr show dev {name}`"),
            )
        })?;
        let &(addr, prefix_len) = addrs.first().ok_or_else(|| {
            StartError::new(
                format!("{name} has no IPv4 address"),
                format!("`ip addr add <addr>/<len> dev {name}`"),
            )
        })?;
        let queues = read_queues(&link)?;
        let mut program = XdpProgram::load().map_err(|e| {
            let fix = match errno(&e) {
                Some(libc::EPERM) | Some(libc::EACCES) => privilege_fix("CAP_BPF + CAP_NET_ADMIN (CAP_SYS_ADMIN on kernels before 5.8); with them held, check kernel lockdown and `ulimit -l`"),
                _ => "`fastnet doctor` tells more".to_string(),
            };
            StartError::new(format!("cannot load the XDP program ({e})"), fix)
        })?;
        program.attach(link.index, config.attach_mode).map_err(|e| {
            if let (Some(libc::EBUSY | libc::EEXIST), Ok(Some(id))) = (
                errno(&e),
                netlink::link_by_name(name).map(|l| l.xdp_prog_id),
            ) {
                // Attached since we looked (e.g. two fastnet processes starting at once).
                return foreign_program(name, id);
            }
            let fix = match errno(&e) {
                Some(libc::EPERM) | Some(libc::EACCES) => "run as root or grant CAP_NET_ADMIN".to_string(),
                Some(libc::EBUSY) | Some(libc::EEXIST) => format!("another XDP program was attached to {name} meanwhile: stop its owner or `ip link set dev {name} xdp off`"),
                Some(libc::ERANGE) => format!("lower the MTU: `ip link set dev {name} mtu 1500` (on a veth, on both ends)"),
                _ => format!("`fastnet doctor --iface {name}` tells why"),
            };
            StartError::new(format!("cannot attach XDP to {name} (BPF_LINK_CREATE: {e})"), fix)
        })?;
        let prog_id = crate::bpf::prog_id(program.prog_fd()).unwrap_or(0);
        let config = XskConfig {
            mtu: link.mtu as usize,
            ..config.clone()
        };
        let mut me = AttachedIface {
            link,
            addr,
            prefix_len,
            queues,
            prog_id,
            config,
            slot: 0,
            pid: std::process::id(),
            xsks: Vec::new(),
            program,
        };
        me.bind_queues()?;
        me.tell_program_queues()?;
        Ok(me)
    }

    /// Writes the queues in use into the program's settings (listener groups go by
    /// queue when they can).
    fn tell_program_queues(&self) -> Result<(), StartError> {
        self.program
            .set_queues_in_use(self.queues.bindable())
            .map_err(|e| {
                StartError::new(
                    format!(
                        "cannot write the settings of the XDP program on {} ({e})",
                        self.link.name
                    ),
                    format!("`fastnet doctor --iface {}` tells more", self.link.name),
                )
            })
    }

    /// Joins the family of `family` (the value this process inherited across fork
    /// from the process that opened the interface, or from another member) as
    /// `slot`: binds a socket sharing the UMEM of `family`'s on every queue it serves
    /// and registers them in the XSKMAP at `slot`. Reuses the program, maps and link
    /// (through new fds; never attaches a second program). Frames reach the new
    /// sockets once flows, port owners or listener groups name `slot`.
    pub fn join(family: &AttachedIface, slot: u32) -> Result<AttachedIface, StartError> {
        Self::join_with(family, slot, Vec::new())
    }

    /// One unbound AF_XDP socket per queue this process serves: made before `fork` by
    /// a process that may (see [`XskSocket::unbound`]), for a child that joins with
    /// [`AttachedIface::join_with`] after dropping its privileges.
    pub fn spare_sockets(&self) -> io::Result<Vec<OwnedFd>> {
        self.xsks.iter().map(|_| XskSocket::unbound()).collect()
    }

    /// As [`AttachedIface::join`], binding `spares` (from [`AttachedIface::spare_sockets`],
    /// one per queue, in order) instead of creating sockets where there are enough.
    pub fn join_with(
        family: &AttachedIface,
        slot: u32,
        spares: Vec<OwnedFd>,
    ) -> Result<AttachedIface, StartError> {
        let mut spares = spares.into_iter();
        let name = family.link.name.clone();
        if slot == 0 || slot >= MAX_SLOTS {
            return Err(StartError::new(
                format!("slot {slot} cannot join the family on {name}"),
                format!("use a slot in 1..{MAX_SLOTS} (slot 0 is the process that attached)"),
            ));
        }
        let program = family.program.try_clone().map_err(|e| {
            StartError::new(
                format!("cannot share the XDP program of {name} ({e})"),
                "raise the open-files limit (`ulimit -n`)",
            )
        })?;
        let mut me = AttachedIface {
            link: family.link.clone(),
            addr: family.addr,
            prefix_len: family.prefix_len,
            queues: family.queues,
            prog_id: family.prog_id,
            config: family.config.clone(),
            slot,
            pid: std::process::id(),
            xsks: Vec::new(),
            program,
        };
        for f in &family.xsks {
            let q = f.queue();
            let bound = match spares.next() {
                Some(fd) => XskSocket::bind_shared_on(f, fd),
                None => XskSocket::bind_shared(f),
            };
            let xsk = bound.map_err(|e| {
                StartError::new(
                    format!(
                        "cannot bind an AF_XDP socket sharing the UMEM of {name} queue {q} ({e})"
                    ),
                    format!("`fastnet doctor --iface {name}` tells more"),
                )
            })?;
            me.register(q, &xsk)?;
            me.xsks.push(xsk);
        }
        Ok(me)
    }

    fn register(&self, q: u32, xsk: &XskSocket) -> Result<(), StartError> {
        let name = &self.link.name;
        self.program
            .register_slot_xsk(self.slot, q, xsk.fd())
            .map_err(|e| {
                StartError::new(
                    format!(
                        "cannot register the AF_XDP socket of {name} queue {q} for slot {} ({e})",
                        self.slot
                    ),
                    format!("`fastnet doctor --iface {name}` tells more"),
                )
            })
    }

    /// Closes this process's copy of the XDP link (a forked child that will not serve
    /// the interface): the program then stays only as long as the processes that do.
    pub fn release_link_copy(&mut self) {
        self.program.detach();
    }

    /// Removes every trace of `slot` (a process of the family that died or left): its
    /// sockets in the XSKMAP, its listener-group places, the flows steered to it, and
    /// its port ownerships (see [`crate::portmap::PortMap::hand_on`]).
    pub fn forget_slot(&self, slot: u32) -> io::Result<()> {
        self.unregister_slot(slot)?;
        let ports = self.program.port_map();
        // Left to a dead slot, the ports it owned would have their frames dropped, or
        // sent to whichever process takes the slot next.
        for (proto, port) in ports.remove_slot(slot)? {
            ports.hand_on(proto, port)?;
        }
        self.program.flow_map().remove_slot(slot)?;
        Ok(())
    }

    /// Makes the calling process the one that drives these sockets and unregisters
    /// them on drop (see [`XskSocket::adopt`]): for a child that takes over what it
    /// inherited, keeping the slot.
    pub fn adopt(&mut self) {
        self.pid = std::process::id();
        for x in &mut self.xsks {
            x.adopt();
        }
    }

    /// This process's slot (0: the one that attached the program).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Sends `flow`'s frames to `slot` from now on, whatever the port map says.
    pub fn steer_flow(&self, flow: &FlowKey, slot: u32) -> io::Result<()> {
        self.program.steer_flow(flow, slot)
    }

    /// Removes `flow`'s entry (its frames follow the port map again); false when it
    /// had none.
    pub fn unsteer_flow(&self, flow: &FlowKey) -> io::Result<bool> {
        self.program.unsteer_flow(flow)
    }

    /// Claims `port` for this slot (owner); false when it was claimed already.
    pub fn claim_port(&self, proto: Transport, port: u16) -> io::Result<bool> {
        self.program.port_map().claim_for(proto, port, self.slot)
    }

    /// Adds this slot to the listener group of a claimed port.
    pub fn join_group(&self, proto: Transport, port: u16) -> io::Result<()> {
        self.program.port_map().join_group(proto, port, self.slot)
    }

    /// Removes this slot from the listener group of a claimed port.
    pub fn leave_group(&self, proto: Transport, port: u16) -> io::Result<bool> {
        self.program.port_map().leave_group(proto, port, self.slot)
    }

    /// Removes every XSK of `slot` (another process of the family, e.g. one that was
    /// killed) from the XSKMAP: frames still steered to it are dropped, counted.
    pub fn unregister_slot(&self, slot: u32) -> io::Result<()> {
        // Only queues the interface has can hold a socket (a forking server does this
        // for each child that ends and again when the next one takes the slot: 64
        // map deletes each time on a 2-queue veth).
        let q = &self.queues;
        let allocated = q.rx_allocated.max(q.tx_allocated).max(q.bindable());
        for q in 0..allocated.clamp(1, MAX_QUEUES) {
            self.program.unregister_slot_xsk(slot, q)?;
        }
        Ok(())
    }

    /// Binds and registers an XSK on every bindable queue that has none. A member
    /// (slot > 0) has no socket of the queue's family to share: a queue that came into
    /// use is an error for it (slot 0 serves it).
    fn bind_queues(&mut self) -> Result<(), StartError> {
        let name = self.link.name.clone();
        for q in self.xsks.len() as u32..self.queues.bindable() {
            if self.slot != 0 {
                return Err(StartError::new(
                    format!("queue {q} of {name} came into use; slot {} has no socket of its family to share", self.slot),
                    "this process serves the queues it joined on; the process that attached serves the new ones",
                ));
            }
            let xsk = XskSocket::bind(self.link.index, q, &self.config)
                .map_err(|e| self.bind_error(q, &e))?;
            self.register(q, &xsk)?;
            self.xsks.push(xsk);
        }
        Ok(())
    }

    /// Names the real cause of a failed bind on queue `q`.
    fn bind_error(&self, q: u32, e: &io::Error) -> StartError {
        let name = &self.link.name;
        match errno(e) {
            Some(libc::EINVAL) => {
                // The count may have changed under us (`ethtool -L`): ask again.
                let now = read_queues(&self.link).unwrap_or(self.queues);
                if q >= now.bindable() {
                    StartError::new(
                        format!("queue {q} is not in use on {name} ({})", now.describe()),
                        format!("the queues in use changed while fastnet started; start again, or set them with `ethtool -L {name} ...`"),
                    )
                } else {
                    StartError::new(
                        format!("AF_XDP bind to {name} queue {q} refused ({e}) although {} are in use", now.describe()),
                        format!("check that {name} is up and `dmesg`; `fastnet doctor --iface {name}`"),
                    )
                }
            }
            Some(libc::EBUSY) => StartError::new(
                format!("{name} queue {q} is held by another AF_XDP socket (EBUSY)"),
                "stop the other AF_XDP user (another fastnet process?) and start again",
            ),
            Some(libc::EPERM) | Some(libc::EACCES) => StartError::new(
                format!("AF_XDP bind to {name} queue {q} not permitted ({e})"),
                "run as root or grant CAP_NET_RAW",
            ),
            Some(libc::EAFNOSUPPORT) => StartError::new(
                "this kernel has no AF_XDP sockets (EAFNOSUPPORT)",
                "use a kernel built with CONFIG_XDP_SOCKETS=y (Linux >= 5.10)",
            ),
            Some(libc::ENOMEM) | Some(libc::ENOBUFS) => StartError::new(
                format!("no memory for the AF_XDP socket of {name} queue {q} ({e})"),
                "raise the locked-memory limit (`ulimit -l unlimited`, systemd LimitMEMLOCK=infinity)",
            ),
            _ => StartError::new(
                format!("cannot bind an AF_XDP socket to {name} queue {q} ({e})"),
                format!("`fastnet doctor --iface {name}` tells more"),
            ),
        }
    }

    /// Looks at the interface again after the kernel said it changed: rebinds when
    /// the queues in use changed; an error when the fast path cannot go on here (the
    /// interface is gone, or our program is no longer the one attached).
    pub fn check(&mut self) -> Result<LinkChange, StartError> {
        let name = self.link.name.clone();
        let link = netlink::link(self.link.index).map_err(|_| {
            StartError::new(
                format!("interface {name} is gone"),
                "the fast path cannot go on; new sockets use the kernel",
            )
        })?;
        if link.xdp_prog_id != Some(self.prog_id) {
            return Err(StartError::new(
                format!(
                    "fastnet's XDP program was detached from {name}{}",
                    link.xdp_prog_id
                        .map(|id| format!(" (program {id} is attached now)"))
                        .unwrap_or_default()
                ),
                "someone else detached it; restart the program to use the fast path again",
            ));
        }
        let after = read_queues(&link)?;
        let before = self.queues;
        // (read_queues refused a count with RX queues no socket could serve.)
        if after.bindable() == before.bindable() {
            self.queues = after;
            return Ok(LinkChange::None);
        }
        // Queues that left use: their sockets go (the kernel already stopped them).
        while self.xsks.len() as u32 > after.bindable() {
            let q = self.xsks.len() as u32 - 1;
            let _ = self.program.unregister_slot_xsk(self.slot, q);
            self.xsks.pop();
        }
        self.queues = after;
        self.bind_queues()?;
        if self.slot == 0 {
            self.tell_program_queues()?;
        }
        Ok(LinkChange::Rebound { before, after })
    }

    pub fn xsks(&self) -> &[XskSocket] {
        &self.xsks
    }

    pub fn xsks_mut(&mut self) -> &mut [XskSocket] {
        &mut self.xsks
    }

    pub fn program(&self) -> &XdpProgram {
        &self.program
    }
}

impl Drop for AttachedIface {
    fn drop(&mut self) {
        // Out of the XSKMAP before the sockets close: a socket file can outlive this
        // process's fd (a forked child holds a copy), and frames sent to it then would
        // never come back to the fill ring.
        if std::process::id() == self.pid {
            for x in &self.xsks {
                let _ = self.program.unregister_slot_xsk(self.slot, x.queue());
            }
        }
    }
}

/// The queue counts of `link`, or the error that stops the fast path: a queue in use
/// that no socket can serve would lose the frames the NIC puts there.
fn read_queues(link: &LinkInfo) -> Result<QueueCounts, StartError> {
    let name = &link.name;
    let q = queues::of(link)
        .map_err(|e| {
            StartError::new(
                format!("cannot tell how many queues of {name} are in use ({e})"),
                format!("run fastnet where /sys shows {name} (`ip netns exec NS ...` remounts it), or check `ethtool -l {name}`"),
            )
        })?;
    if q.unbindable_rx() > 0 {
        return Err(StartError::new(
            format!("{name} has {} RX but {} TX queues in use: AF_XDP serves a queue only below both, so frames on RX queues {}..{} would be lost", q.rx_in_use, q.tx_in_use, q.bindable(), q.rx_in_use - 1),
            format!("make the counts equal: `ethtool -L {name} rx {n} tx {n}` (or `combined {n}`)", n = q.tx_in_use),
        ));
    }
    if q.bindable() > MAX_QUEUES {
        return Err(StartError::new(
            format!(
                "{name} has {} queues in use; fastnet serves at most {MAX_QUEUES}",
                q.bindable()
            ),
            format!("use fewer: `ethtool -L {name} combined {MAX_QUEUES}`"),
        ));
    }
    Ok(q)
}
