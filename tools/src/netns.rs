//! The two-namespace test topology: a server namespace and a client namespace
//! joined by a veth pair, addresses in 10.77.0.0/16 and fd77::/16 (unique local
//! IPv6, inside the namespaces only).
//!
//! Names carry the owner's PID and a per-process sequence number, so two runs never
//! collide. Teardown happens three ways: explicitly (`Topology::down`), on drop, and
//! through a detached reaper process that removes the namespaces as soon as the owner
//! dies however it dies (Ctrl-C, panic, `kill -9`), which `Drop` alone cannot promise.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace this module creates; `gc` only ever touches these.
pub const NS_PREFIX: &str = "fastnet-";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Which end of the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// How many queues each veth end has allocated and in use. Users bring all three
/// kinds of interface: a veth made by a plain `ip link add` (the kernel's default:
/// as many allocated as CPUs, one in use), a NIC whose queues in use were cut with
/// `ethtool -L`, and one with every allocated queue in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueLayout {
    /// `ip link add ... type veth` with no queue counts: the kernel's defaults.
    KernelDefault,
    /// `numrxqueues N numtxqueues N`: N allocated, N in use.
    Fixed(u32),
    /// N allocated, then `ethtool -L rx M tx M`: M in use.
    Partial { allocated: u32, in_use: u32 },
}

impl QueueLayout {
    /// The layout the end-to-end tests run on: FASTNET_TOPOLOGY (see [`FromStr`]),
    /// else the kernel's defaults.
    pub fn from_env() -> QueueLayout {
        match std::env::var("FASTNET_TOPOLOGY") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .unwrap_or_else(|e| panic!("FASTNET_TOPOLOGY={v:?}: {e}")),
            _ => QueueLayout::KernelDefault,
        }
    }
}

impl QueueLayout {
    /// Queues in use on each end (a veth made with the kernel's defaults uses one).
    pub fn in_use(&self) -> u32 {
        match *self {
            QueueLayout::KernelDefault => 1,
            QueueLayout::Fixed(n) => n,
            QueueLayout::Partial { in_use, .. } => in_use,
        }
    }
}

impl std::str::FromStr for QueueLayout {
    type Err = String;
    /// `default`, `N` (N of N) or `MofN` (M in use of N allocated).
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| {
            t.parse::<u32>()
                .ok()
                .filter(|&n| (1..=64).contains(&n))
                .ok_or_else(|| format!("{t:?} is not a queue count (1..64)"))
        };
        if s == "default" {
            return Ok(QueueLayout::KernelDefault);
        }
        if let Some((m, n)) = s.split_once("of") {
            let (in_use, allocated) = (num(m)?, num(n)?);
            if in_use > allocated {
                return Err(format!("{in_use} in use of {allocated} allocated"));
            }
            return Ok(QueueLayout::Partial { allocated, in_use });
        }
        num(s).map(QueueLayout::Fixed).map_err(|e| {
            format!("{e}; use `default`, `N` (N of N in use) or `MofN` (M in use of N)")
        })
    }
}

impl std::fmt::Display for QueueLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueLayout::KernelDefault => write!(f, "default"),
            QueueLayout::Fixed(n) => write!(f, "{n}"),
            QueueLayout::Partial { allocated, in_use } => write!(f, "{in_use}of{allocated}"),
        }
    }
}

/// Options for bringing a topology up.
#[derive(Clone, Debug)]
pub struct TopologyOptions {
    /// Process whose death tears the topology down (default: the caller).
    pub owner_pid: u32,
    /// Receive/transmit queues per veth end, allocated and in use.
    pub queues: QueueLayout,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// Third octet of 10.77.X.0/24, and X of fd77:0:0:X::/64.
    pub subnet: u8,
}

impl TopologyOptions {
    /// The options end-to-end tests use: queues as FASTNET_TOPOLOGY says.
    pub fn for_tests() -> TopologyOptions {
        TopologyOptions {
            queues: QueueLayout::from_env(),
            ..Default::default()
        }
    }
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            owner_pid: std::process::id(),
            queues: QueueLayout::KernelDefault,
            mtu: 1500,
            subnet: 0,
        }
    }
}

/// A live two-namespace topology. Dropping it tears it down.
#[derive(Debug)]
pub struct Topology {
    pub tag: String,
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
    pub server_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// fd77:0:0:X::1 and ::2 in a /64, added without duplicate address detection
    /// (`nodad`; `accept_dad=0` on the veth ends for the link-local addresses):
    /// usable at once, so no test races DAD.
    pub server_ip6: Ipv6Addr,
    pub client_ip6: Ipv6Addr,
    reaper_pid: Option<u32>,
    torn_down: bool,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn ns_exec(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Checks the tools the topology needs, with one line naming the fix.
pub fn check_prerequisites() -> Result<()> {
    for (tool, pkg) in [("ip", "iproute2"), ("ethtool", "ethtool")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("`{tool}` not found: install it with `apt-get install -y {pkg}`");
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("creating network namespaces needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN): run with sudo");
    }
    Ok(())
}

impl Topology {
    /// Creates both namespaces, the veth pair, addresses, routes, and turns TX
    /// checksum offload off on both ends (see DESIGN.md: otherwise a kernel sender
    /// hands the peer's AF_XDP socket frames with partial checksums).
    pub fn up(opts: &TopologyOptions) -> Result<Topology> {
        check_prerequisites()?;
        // Interface names are limited to 15 bytes: "fns" + pid (≤7) + "x" + seq.
        // Two `fastnet netns up` processes may share an owner: skip tags in use.
        let tag = loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let tag = format!("{}x{}", opts.owner_pid, seq);
            let ns = format!("{NS_PREFIX}{tag}-srv");
            if !std::path::Path::new("/run/netns").join(&ns).exists() {
                break tag;
            }
        };
        let mut topo = Topology {
            server_ns: format!("{NS_PREFIX}{tag}-srv"),
            client_ns: format!("{NS_PREFIX}{tag}-cli"),
            server_if: format!("fns{tag}"),
            client_if: format!("fnc{tag}"),
            server_ip: Ipv4Addr::new(10, 77, opts.subnet, 1),
            client_ip: Ipv4Addr::new(10, 77, opts.subnet, 2),
            prefix_len: 24,
            server_ip6: Ipv6Addr::new(0xfd77, 0, 0, opts.subnet as u16, 0, 0, 0, 1),
            client_ip6: Ipv6Addr::new(0xfd77, 0, 0, opts.subnet as u16, 0, 0, 0, 2),
            tag,
            reaper_pid: None,
            torn_down: false,
        };
        if topo.server_if.len() > 15 {
            bail!("interface name {} too long", topo.server_if);
        }
        // The reaper goes first so that even a failure half-way is cleaned up.
        topo.reaper_pid = Some(topo.spawn_reaper(opts.owner_pid)?);
        if let Err(e) = topo.build(opts) {
            topo.down();
            return Err(e);
        }
        Ok(topo)
    }

    fn build(&self, opts: &TopologyOptions) -> Result<()> {
        ip(&["netns", "add", &self.server_ns])?;
        ip(&["netns", "add", &self.client_ns])?;
        let mtu = opts.mtu.to_string();
        let allocated = match opts.queues {
            QueueLayout::KernelDefault => None,
            QueueLayout::Fixed(n) | QueueLayout::Partial { allocated: n, .. } => {
                Some(n.to_string())
            }
        };
        let mut add = vec!["link", "add", &self.server_if];
        let counts = |q: &str| ["numtxqueues", q, "numrxqueues", q].map(str::to_string);
        let extra = allocated.as_deref().map(counts);
        let extra: Vec<&str> = extra.iter().flatten().map(String::as_str).collect();
        add.extend(&extra);
        add.extend(["type", "veth", "peer", "name", &self.client_if]);
        add.extend(&extra);
        ip(&add)?;
        ip(&["link", "set", &self.server_if, "netns", &self.server_ns])?;
        ip(&["link", "set", &self.client_if, "netns", &self.client_ns])?;
        for (ns, dev, addr, addr6) in [
            (
                &self.server_ns,
                &self.server_if,
                self.server_ip,
                self.server_ip6,
            ),
            (
                &self.client_ns,
                &self.client_if,
                self.client_ip,
                self.client_ip6,
            ),
        ] {
            let cidr = format!("{}/{}", addr, self.prefix_len);
            let cidr6 = format!("{addr6}/64");
            ns_exec(ns, &["ip", "link", "set", "lo", "up"])?;
            ns_exec(ns, &["ip", "link", "set", dev, "mtu", &mtu])?;
            ns_exec(ns, &["ip", "addr", "add", &cidr, "dev", dev])?;
            ns_exec(
                ns,
                &["ip", "-6", "addr", "add", &cidr6, "dev", dev, "nodad"],
            )?;
            ns_exec(ns, &["ip", "link", "set", dev, "up"])?;
            ns_exec(ns, &["ethtool", "-K", dev, "tx", "off"])?;
            if let QueueLayout::Partial { in_use, .. } = opts.queues {
                let m = in_use.to_string();
                ns_exec(ns, &["ethtool", "-L", dev, "rx", &m, "tx", &m])?;
            }
        }
        Ok(())
    }

    /// A detached process (own session, so Ctrl-C does not reach it) that waits for
    /// the owner to die, then ends what runs inside our namespaces and deletes them.
    fn spawn_reaper(&self, owner: u32) -> Result<u32> {
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 0.5; done; {}",
            self.teardown_script()
        );
        let child = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the topology reaper (`setsid` from util-linux)")?;
        // `setsid -f` forks; the waited-for child exits at once. Find the reaper by its
        // command line so that `down` can end it.
        let mut child = child;
        let _ = child.wait();
        Ok(find_reaper(&self.tag).unwrap_or(0))
    }

    fn teardown_script(&self) -> String {
        // Processes left inside our own namespaces were started by us (the names are
        // unique to this run), so ending them by PID is ours to do; so is removing the
        // shared-memory files such a killed fastnet process could not (its counters,
        // its host-loopback inbox) and the namespace's host-loopback registry.
        format!(
            "for ns in {s} {c}; do for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p; \
             rm -f /dev/shm/fastnet-$p.stats /dev/shm/fastnet-lo-$p.inbox /dev/shm/fastnet-lo-$p.bell; done; \
             i=$(stat -L -c %i /run/netns/$ns 2>/dev/null) && rm -f /dev/shm/fastnet-lo-ns$i.registry; \
             ip netns del $ns 2>/dev/null; done; true # fastnet-reaper {tag}",
            s = self.server_ns,
            c = self.client_ns,
            tag = self.tag
        )
    }

    /// Namespace of one side.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.server_ns,
            Side::Client => &self.client_ns,
        }
    }

    /// Interface of one side.
    pub fn iface(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.server_if,
            Side::Client => &self.client_if,
        }
    }

    /// Address of one side.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::Server => self.server_ip,
            Side::Client => self.client_ip,
        }
    }

    /// IPv6 address of one side (fd77::/16).
    pub fn addr6(&self, side: Side) -> Ipv6Addr {
        match side {
            Side::Server => self.server_ip6,
            Side::Client => self.client_ip6,
        }
    }

    /// A command that runs `program` inside one side's namespace.
    pub fn command(&self, side: Side, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(side), program]);
        c
    }

    /// Tears everything down; safe to call twice.
    pub fn down(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let _ = Command::new("sh")
            .args(["-c", &self.teardown_script()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = self.reaper_pid.take().filter(|&p| p > 0) {
            // SAFETY: kill(2) on a PID we started; a stale PID at worst gets ESRCH.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    /// Releases ownership: the topology stays until `down_by_tag` or the owner dies.
    pub fn detach(mut self) {
        self.torn_down = true;
    }

    /// Shell `export` lines describing the topology (for scripts).
    pub fn env_lines(&self) -> String {
        format!(
            "FASTNET_TAG={}\nSERVER_NS={}\nCLIENT_NS={}\nSERVER_IF={}\nCLIENT_IF={}\nSERVER_IP={}\nCLIENT_IP={}\nSERVER_IP6={}\nCLIENT_IP6={}\n",
            self.tag,
            self.server_ns,
            self.client_ns,
            self.server_if,
            self.client_if,
            self.server_ip,
            self.client_ip,
            self.server_ip6,
            self.client_ip6
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.down();
    }
}

fn find_reaper(tag: &str) -> Option<u32> {
    let needle = format!("fastnet-reaper {tag}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&needle) && cmdline.starts_with("sh") {
                return Some(pid);
            }
        }
    }
    None
}

/// Tears down the topology with this tag (as printed by `fastnet netns up`).
pub fn down_by_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("bad topology tag {tag:?}");
    }
    let mut t = Topology {
        tag: tag.to_string(),
        server_ns: format!("{NS_PREFIX}{tag}-srv"),
        client_ns: format!("{NS_PREFIX}{tag}-cli"),
        server_if: String::new(),
        client_if: String::new(),
        server_ip: Ipv4Addr::UNSPECIFIED,
        client_ip: Ipv4Addr::UNSPECIFIED,
        prefix_len: 24,
        server_ip6: Ipv6Addr::UNSPECIFIED,
        client_ip6: Ipv6Addr::UNSPECIFIED,
        reaper_pid: find_reaper(tag),
        torn_down: false,
    };
    t.down();
    Ok(())
}

/// Topologies that exist now: (tag, owner pid, owner alive).
pub fn list() -> Result<Vec<(String, u32, bool)>> {
    let out = ip(&["netns", "list"])?;
    let mut tags = Vec::new();
    for line in out.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(tag) = rest.strip_suffix("-srv") else {
            continue;
        };
        let pid: u32 = tag
            .split('x')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        tags.push((tag.to_string(), pid, alive));
    }
    Ok(tags)
}

/// Removes topologies whose owner is gone (left behind if even the reaper was killed).
pub fn gc() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (tag, _, alive) in list()? {
        if !alive {
            down_by_tag(&tag)?;
            removed.push(tag);
        }
    }
    Ok(removed)
}
