//! `fastnet doctor`: can fastnet accelerate on this machine (and on one interface),
//! and if not, exactly what to change.
//!
//! Every check tries the real thing where it can (load an XDP program, attach it,
//! bind an AF_XDP socket, map the page at 0) instead of guessing from versions, and
//! undoes it at once. The verdicts are pure functions of the probe results, so they
//! are unit-tested without root.

use crate::sys;
use std::fmt::Write as _;
use std::io;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Acceleration works, but slower or with a caveat.
    Warn,
    /// Acceleration will not work until this is fixed.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report, plus a fix line when it is not OK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The whole diagnosis.
#[derive(Clone, Debug)]
pub struct Report {
    pub iface: Option<String>,
    pub checks: Vec<Check>,
}

impl Report {
    /// True when nothing failed: `fastnet run` will put sockets on the fast path.
    pub fn accelerates(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The check with this name, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Process exit code: 0 only when acceleration will work.
    pub fn exit_code(&self) -> i32 {
        if self.accelerates() {
            0
        } else {
            1
        }
    }

    /// The one-screen text `fastnet doctor` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{} {:<13} {}", c.status.label(), c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "     fix: {fix}");
            }
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let verdict = match (&self.iface, fails) {
            (Some(i), 0) => format!("fastnet can accelerate on {i}"),
            (None, 0) => {
                "this machine can run fastnet; add --iface IF to check an interface".to_string()
            }
            (_, n) => format!(
                "fastnet cannot accelerate here: {n} check{} FAIL; programs would run on \
                 the kernel stack until the fix lines above are applied",
                if n == 1 { "" } else { "s" }
            ),
        };
        let _ = writeln!(out, "verdict: {verdict}");
        out
    }
}

/// Runs every check; interface checks only when `iface` is given. Attaches XDP programs
/// only to that interface, and detaches them before returning.
pub fn diagnose(iface: Option<&str>) -> Report {
    let mut checks = Vec::new();
    checks.push(check_kernel(sys::kernel_release().ok().as_deref()));
    checks.push(check_af_xdp(sys::xsk_socket().map(drop)));
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s));
    let mmap_min_addr = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    checks.push(check_capabilities(cap_eff, mmap_min_addr));
    checks.push(check_page_zero(
        &sys::probe_map_page_zero(),
        mmap_min_addr,
        cap_eff,
    ));
    let prog = sys::load_xdp_pass_program();
    checks.push(check_bpf(&prog, cap_eff));
    if let Some(name) = iface {
        interface_checks(name, prog.ok().as_ref(), &mut checks);
    }
    Report {
        iface: iface.map(str::to_string),
        checks,
    }
}

fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::ERANGE) => "ERANGE",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::ENOTSUP) => "EOPNOTSUPP",
        Some(libc::EAFNOSUPPORT) => "EAFNOSUPPORT",
        _ => return e.to_string(),
    };
    name.to_string()
}

/// `(major, minor)` from a release string like "6.18.44-fc-v595".
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

const MIN_KERNEL: (u32, u32) = (5, 10);

pub fn check_kernel(release: Option<&str>) -> Check {
    let Some(release) = release else {
        return Check::fail(
            "kernel",
            "cannot read the kernel release (uname failed)",
            "run on Linux >= 5.10",
        );
    };
    match parse_kernel_version(release) {
        Some(v) if v >= MIN_KERNEL => Check::ok(
            "kernel",
            format!("{release} (>= 5.10 needed for AF_XDP need_wakeup and XDP BPF links)"),
        ),
        Some(_) => Check::fail(
            "kernel",
            format!("{release} is older than 5.10"),
            "upgrade to Linux >= 5.10 (e.g. Debian 11+ or Ubuntu 22.04+)",
        ),
        None => Check::warn(
            "kernel",
            format!("cannot parse release {release:?}"),
            "make sure the kernel is Linux >= 5.10",
        ),
    }
}

pub fn check_af_xdp(socket: io::Result<()>) -> Check {
    match socket {
        Ok(()) => Check::ok("af_xdp", "AF_XDP sockets can be created"),
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Check::fail(
            "af_xdp",
            "kernel has no AF_XDP sockets (EAFNOSUPPORT)",
            "use a kernel built with CONFIG_XDP_SOCKETS=y",
        ),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Check::fail(
            "af_xdp",
            "socket(AF_XDP) refused (EPERM): CAP_NET_RAW missing",
            "run as root, or grant CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_RAW)",
        ),
        Err(e) => Check::fail(
            "af_xdp",
            format!("socket(AF_XDP) failed: {}", errno_name(&e)),
            "use a kernel built with CONFIG_XDP_SOCKETS=y and run as root",
        ),
    }
}

/// Capability numbers (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_RAWIO: u32 = 17;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_BPF: u32 = 39;

fn has_cap(cap_eff: u64, cap: u32) -> bool {
    cap_eff & (1u64 << cap) != 0
}

/// The effective capability mask (`CapEff:` line of /proc/PID/status).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

const CAPS_FIX: &str = "run as root, or grant them to the program (systemd: \
     AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_SYS_ADMIN CAP_SYS_RAWIO)";

/// The capabilities fastnet needs: CAP_NET_ADMIN (attach XDP), CAP_NET_RAW (AF_XDP),
/// CAP_BPF or CAP_SYS_ADMIN (load the program and its map), and CAP_SYS_RAWIO for the
/// page at address 0 unless `vm.mmap_min_addr` is 0.
pub fn check_capabilities(cap_eff: Option<u64>, mmap_min_addr: Option<u64>) -> Check {
    let Some(eff) = cap_eff else {
        return Check::warn(
            "capabilities",
            "cannot read CapEff from /proc/self/status",
            CAPS_FIX,
        );
    };
    let mut missing = Vec::new();
    if !has_cap(eff, CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has_cap(eff, CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has_cap(eff, CAP_BPF) && !has_cap(eff, CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has_cap(eff, CAP_SYS_RAWIO) && mmap_min_addr != Some(0) {
        missing.push("CAP_SYS_RAWIO (or vm.mmap_min_addr=0)");
    }
    if missing.is_empty() {
        Check::ok(
            "capabilities",
            format!("CapEff {eff:016x} holds what fastnet needs"),
        )
    } else {
        Check::fail(
            "capabilities",
            format!("missing {}", missing.join(", ")),
            CAPS_FIX,
        )
    }
}

/// The page at address 0 the syscall hook lands in.
pub fn check_page_zero(
    probe: &io::Result<()>,
    mmap_min_addr: Option<u64>,
    cap_eff: Option<u64>,
) -> Check {
    let min = mmap_min_addr.map_or("unknown".to_string(), |m| m.to_string());
    let rawio = cap_eff.is_some_and(|c| has_cap(c, CAP_SYS_RAWIO));
    match probe {
        Ok(()) => Check::ok(
            "page at 0",
            format!(
                "mapping address 0 works (vm.mmap_min_addr={min}, CAP_SYS_RAWIO {})",
                if rawio { "held" } else { "not held" }
            ),
        ),
        Err(e) if !rawio && mmap_min_addr != Some(0) => Check::fail(
            "page at 0",
            format!(
                "cannot map address 0 ({}): vm.mmap_min_addr={min} and CAP_SYS_RAWIO missing",
                errno_name(e)
            ),
            "grant CAP_SYS_RAWIO, or `sysctl -w vm.mmap_min_addr=0` \
             (persist in /etc/sysctl.d/); without it programs run unhooked",
        ),
        Err(e) => Check::fail(
            "page at 0",
            format!(
                "cannot map address 0 ({}) although vm.mmap_min_addr={min}",
                errno_name(e)
            ),
            "a security module forbids it (SELinux: allow mmap_zero; check \
             `dmesg`), or something is already mapped at 0",
        ),
    }
}

pub fn check_bpf<T>(load: &io::Result<T>, cap_eff: Option<u64>) -> Check {
    match load {
        Ok(_) => Check::ok("bpf", "bpf(BPF_PROG_LOAD) accepts an XDP program"),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Check::fail(
            "bpf",
            "bpf(2) not available (ENOSYS)",
            "use a kernel built with CONFIG_BPF_SYSCALL=y",
        ),
        Err(e) => {
            let bpf_caps = cap_eff.is_some_and(|c| {
                has_cap(c, CAP_NET_ADMIN) && (has_cap(c, CAP_BPF) || has_cap(c, CAP_SYS_ADMIN))
            });
            if bpf_caps {
                Check::fail(
                    "bpf",
                    format!("loading an XDP program failed: {}", errno_name(e)),
                    "check kernel lockdown (/sys/kernel/security/lockdown) and the memlock \
                     limit (`ulimit -l unlimited`)",
                )
            } else {
                Check::fail(
                    "bpf",
                    format!(
                        "loading an XDP program failed: {}: needs CAP_BPF (or \
                         CAP_SYS_ADMIN) and CAP_NET_ADMIN",
                        errno_name(e)
                    ),
                    CAPS_FIX,
                )
            }
        }
    }
}

/// Name xdp-backend gives its steering program (`xdp-backend/src/program.rs`).
pub const FASTNET_PROG_NAME: &str = "fastnet_steer";

/// Native XDP on a page-sized buffer: one page less XDP headroom (256), the skb tail
/// (320) and the Ethernet header: what veth accepts as the peer's MTU.
pub const XDP_NATIVE_MTU_LIMIT: u32 = xdp_backend::attach::MAX_XDP_MTU;

fn read_sys(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Results of attaching a program in native and in generic mode.
pub struct ModeProbe {
    pub native: io::Result<()>,
    pub generic: io::Result<()>,
}

pub fn check_xdp_modes(iface: &str, probe: &ModeProbe, mtu: Option<u32>) -> Check {
    let mtu_fix = format!(
        "lower the MTU on both veth ends to <= {XDP_NATIVE_MTU_LIMIT}: \
         `ip link set dev {iface} mtu 3500` (native XDP holds a frame in one page)"
    );
    match (&probe.native, &probe.generic) {
        (Ok(()), Ok(())) => Check::ok("xdp modes", "native and generic XDP both attach"),
        (Ok(()), Err(e)) => Check::ok(
            "xdp modes",
            format!("native XDP attaches (generic refused: {})", errno_name(e)),
        ),
        (Err(e), Ok(())) => {
            let too_big = mtu.is_some_and(|m| m > XDP_NATIVE_MTU_LIMIT);
            Check::warn(
                "xdp modes",
                format!(
                    "native XDP refused ({}); generic XDP attaches (slower: an skb is built \
                     for every frame)",
                    errno_name(e)
                ),
                if too_big {
                    mtu_fix
                } else {
                    "use a NIC driver with native XDP (veth, mlx5, ice, i40e, ixgbe, virtio_net, ...)"
                        .to_string()
                },
            )
        }
        (Err(n), Err(g)) => Check::fail(
            "xdp modes",
            format!(
                "no XDP program attaches: native {}, generic {}",
                errno_name(n),
                errno_name(g)
            ),
            if mtu.is_some_and(|m| m > XDP_NATIVE_MTU_LIMIT) {
                mtu_fix
            } else {
                format!(
                    "check `ip -d link show dev {iface}` and `dmesg`; XDP needs CAP_NET_ADMIN \
                     and a link that is not a bond/team slave"
                )
            },
        ),
    }
}

pub fn check_mtu(iface: &str, mtu: Option<u32>) -> Check {
    match mtu {
        None => Check::warn(
            "mtu",
            "cannot read the MTU",
            format!("check `ip link show dev {iface}`"),
        ),
        Some(m) if m <= XDP_NATIVE_MTU_LIMIT => Check::ok(
            "mtu",
            format!("{m} <= {XDP_NATIVE_MTU_LIMIT} (native XDP and a 4 KiB AF_XDP frame hold it)"),
        ),
        Some(m) => Check::warn(
            "mtu",
            format!("{m} > {XDP_NATIVE_MTU_LIMIT}: a full frame does not fit one page"),
            format!("`ip link set dev {iface} mtu 3500` on both ends (fastnet uses 4 KiB frames)"),
        ),
    }
}

pub fn check_xsk_bind(
    iface: &str,
    driver: &str,
    zerocopy: &io::Result<()>,
    copy: &io::Result<()>,
) -> Check {
    match (zerocopy, copy) {
        (Ok(()), _) => Check::ok("af_xdp bind", "zero-copy mode binds on queue 0"),
        (Err(z), Ok(())) => Check::warn(
            "af_xdp bind",
            format!(
                "copy mode binds on queue 0; zero-copy refused ({})",
                errno_name(z)
            ),
            format!(
                "none needed: copy mode works (one copy per frame); zero-copy needs a driver \
                 that supports it (ice, i40e, mlx5, ...), `{driver}` does not"
            ),
        ),
        (_, Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => Check::fail(
            "af_xdp bind",
            format!("queue 0 of {iface} is busy: another AF_XDP socket is bound (EBUSY)"),
            "stop the other AF_XDP user (another fastnet process?) or wait a second and retry",
        ),
        (_, Err(e)) => Check::fail(
            "af_xdp bind",
            format!("AF_XDP bind fails in copy mode too: {}", errno_name(e)),
            format!("check that {iface} is up and `dmesg`; AF_XDP needs CAP_NET_RAW"),
        ),
    }
}

fn interface_checks(iface: &str, prog: Option<&std::os::fd::OwnedFd>, checks: &mut Vec<Check>) {
    let Some(ifindex) = sys::if_index(iface) else {
        checks.push(Check::fail(
            "interface",
            format!("no interface named {iface:?} in this network namespace"),
            "list interfaces with `ip -br link` (in a namespace: `ip netns exec NS ip -br link`)",
        ));
        return;
    };
    let driver = sys::driver_name(iface).unwrap_or_else(|_| "unknown".into());
    let up = read_sys(iface, "flags")
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .map(|f| f & libc::IFF_UP as u32 != 0);
    checks.push(match up {
        Some(false) => Check::warn(
            "interface",
            format!("{iface} (index {ifindex}, driver {driver}) is down"),
            format!("`ip link set dev {iface} up`"),
        ),
        _ => Check::ok(
            "interface",
            format!("{iface} (index {ifindex}, driver {driver}) is up"),
        ),
    });

    if driver == "veth" {
        checks.push(match sys::tx_checksum_offload(iface) {
            Ok(false) => Check::ok("tx checksum", "offload off (kernel senders fill checksums)"),
            Ok(true) => Check::warn(
                "tx checksum",
                "veth TX checksum offload is on: kernel senders pass partial checksums to AF_XDP",
                format!("`ethtool -K {iface} tx off`, and the same on the peer end"),
            ),
            Err(e) => Check::warn(
                "tx checksum",
                format!("cannot read offloads: {}", errno_name(&e)),
                format!("`ethtool -K {iface} tx off` on both veth ends"),
            ),
        });
    }

    let foreign = sys::xdp_attached(ifindex);
    let mtu = read_sys(iface, "mtu").and_then(|m| m.parse::<u32>().ok());
    let foreign_name = match &foreign {
        Ok(Some(att)) => sys::bpf_prog_name(att.prog_id).ok(),
        _ => None,
    };
    match &foreign {
        Ok(Some(att)) if foreign_name.as_deref() == Some(FASTNET_PROG_NAME) => {
            checks.push(Check::warn(
                "xdp program",
                format!(
                    "fastnet's own XDP program (id {}) is attached: a fastnet process is \
                     using {iface}",
                    att.prog_id
                ),
                "a second fastnet process cannot share the interface: stop the first (the \
                 program detaches when it exits)",
            ))
        }
        Ok(Some(att)) => checks.push(Check::fail(
            "xdp program",
            format!(
                "another XDP program (id {}{}) is attached in {} mode",
                att.prog_id,
                foreign_name
                    .as_deref()
                    .map(|n| format!(", \"{n}\""))
                    .unwrap_or_default(),
                att.mode.name()
            ),
            format!(
                "find its owner (`bpftool prog show id {}`), then stop that program or \
                 `ip link set dev {iface} xdp off` if it was attached with ip",
                att.prog_id
            ),
        )),
        Ok(None) => checks.push(Check::ok("xdp program", "none attached by anyone else")),
        Err(e) => checks.push(Check::warn(
            "xdp program",
            format!("cannot ask rtnetlink: {}", errno_name(e)),
            format!("check `ip -d link show dev {iface}` for an `xdp` line"),
        )),
    }

    match (prog, &foreign) {
        (_, Ok(Some(_))) => checks.push(Check::warn(
            "xdp modes",
            "not probed: another program holds the XDP hook",
            "see the xdp program line",
        )),
        (None, _) => checks.push(Check::fail(
            "xdp modes",
            "not probed: no XDP program could be loaded (see the bpf line)",
            "fix the bpf line first",
        )),
        (Some(prog), _) => {
            // Each link is dropped (detached) before the next attach.
            let native = sys::attach_xdp_link(prog, ifindex, sys::XDP_FLAGS_DRV_MODE).map(drop);
            let generic = sys::attach_xdp_link(prog, ifindex, sys::XDP_FLAGS_SKB_MODE).map(drop);
            checks.push(check_xdp_modes(iface, &ModeProbe { native, generic }, mtu));
        }
    }

    checks.push(check_mtu(iface, mtu));
    let sysctl = |path: String| std::fs::read_to_string(path).ok().map(|v| v.trim() != "0");
    checks.push(check_ipv6(
        iface,
        &xdp_backend::netlink::ipv6_addresses(ifindex),
        sysctl(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6")),
        sysctl(format!("/proc/sys/net/ipv6/conf/{iface}/forwarding")),
        sysctl("/proc/sys/net/ipv4/ip_forward".to_string()),
    ));

    let zerocopy = sys::probe_xsk_bind(ifindex, 0, libc::XDP_ZEROCOPY);
    let copy = sys::probe_xsk_bind(ifindex, 0, libc::XDP_COPY);
    checks.push(check_xsk_bind(iface, &driver, &zerocopy, &copy));

    let allocated = xdp_backend::netlink::link(ifindex)
        .map(|l| (l.rx_queues_allocated, l.tx_queues_allocated))
        .unwrap_or((1, 1));
    checks.push(check_queues(
        iface,
        &xdp_backend::queues::read(iface, ifindex, allocated),
    ));

    // Last, the real thing: what the shim does at its first socket, done here and
    // undone (the same code, so the doctor and the shim cannot disagree).
    checks.push(match &foreign {
        Ok(Some(_)) => Check::warn(
            "fast path",
            "not started: an XDP program is attached already (see the xdp program line)",
            "see the xdp program line",
        ),
        _ => check_fast_path(
            iface,
            &xdp_backend::AttachedIface::open(iface, &xdp_backend::XskConfig::default())
                .map(|a| a.queues),
        ),
    });
}

/// The interface's IPv6 side: its usable addresses (what the shim gives the stack;
/// with none, IPv6 stays the kernel's) and forwarding, which the steering program does
/// not expect: it takes frames by destination port without looking at the destination
/// address, so a flow this host routes to another host would reach the stack when it
/// uses a claimed port.
pub fn check_ipv6(
    iface: &str,
    addrs: &io::Result<Vec<(std::net::Ipv6Addr, u8)>>,
    disabled: Option<bool>,
    forwarding6: Option<bool>,
    forwarding4: Option<bool>,
) -> Check {
    let forwarding = match (forwarding4, forwarding6) {
        (Some(true), _) => Some("net.ipv4.ip_forward"),
        (_, Some(true)) => Some("IPv6 forwarding"),
        _ => None,
    };
    if let Some(which) = forwarding {
        return Check::warn(
            "ipv6",
            format!(
                "{which} is on: frames routed through {iface} to a port the fast path                  claimed would reach the stack instead of being forwarded"
            ),
            format!(
                "run fastnet on a host that does not route for others                  (`sysctl -w net.ipv4.ip_forward=0 net.ipv6.conf.{iface}.forwarding=0`)"
            ),
        );
    }
    match (disabled, addrs) {
        (Some(true), _) => Check::ok(
            "ipv6",
            format!("IPv6 is disabled on {iface}: the fast path carries IPv4 only"),
        ),
        (_, Ok(a)) if a.is_empty() => Check::ok(
            "ipv6",
            format!("{iface} has no usable IPv6 address: IPv6 sockets stay the kernel's"),
        ),
        (_, Ok(a)) => Check::ok(
            "ipv6",
            format!(
                "on the fast path too: {}",
                a.iter()
                    .map(|(ip, len)| format!("{ip}/{len}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (_, Err(e)) => Check::warn(
            "ipv6",
            format!("cannot read the IPv6 addresses of {iface}: {e}"),
            format!("check `ip -6 addr show dev {iface}`"),
        ),
    }
}

pub fn check_queues(iface: &str, q: &io::Result<xdp_backend::QueueCounts>) -> Check {
    match q {
        Ok(q) => Check::ok(
            "queues",
            format!(
                "{}: fastnet binds an AF_XDP socket on each of the {} in use",
                q.describe(),
                q.bindable()
            ),
        ),
        Err(e) => Check::warn(
            "queues",
            format!("cannot tell how many queues are in use: {e}"),
            format!("check `ethtool -l {iface}`"),
        ),
    }
}

pub fn check_fast_path(
    iface: &str,
    started: &Result<xdp_backend::QueueCounts, xdp_backend::StartError>,
) -> Check {
    match started {
        Ok(q) => Check::ok(
            "fast path",
            format!(
                "started on {iface} as the shim does (program attached, {} AF_XDP socket{} bound), then stopped",
                q.bindable(),
                if q.bindable() == 1 { "" } else { "s" }
            ),
        ),
        Err(e) => Check::fail("fast path", e.cause.clone(), e.fix.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(code))
    }

    const ROOT_CAPS: u64 = 0x000001ff_feffffff;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(check_kernel(Some("5.10.0")).status, Status::Ok);
        assert_eq!(check_kernel(Some("6.1.0")).status, Status::Ok);
        let old = check_kernel(Some("5.4.0-150-generic"));
        assert_eq!(old.status, Status::Fail);
        assert!(old.fix.unwrap().contains("5.10"));
        assert_eq!(check_kernel(Some("weird")).status, Status::Warn);
    }

    #[test]
    fn cap_eff_parsed_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(ROOT_CAPS));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn root_capabilities_suffice() {
        assert_eq!(
            check_capabilities(Some(ROOT_CAPS), Some(4096)).status,
            Status::Ok
        );
    }

    #[test]
    fn missing_capabilities_are_named() {
        let dropped = ROOT_CAPS
            & !(1 << CAP_NET_ADMIN)
            & !(1 << CAP_BPF)
            & !(1 << CAP_SYS_ADMIN)
            & !(1 << CAP_SYS_RAWIO);
        let c = check_capabilities(Some(dropped), Some(4096));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("CAP_NET_ADMIN"), "{}", c.detail);
        assert!(c.detail.contains("CAP_BPF"), "{}", c.detail);
        assert!(c.detail.contains("CAP_SYS_RAWIO"), "{}", c.detail);
        assert!(!c.detail.contains("CAP_NET_RAW,"), "{}", c.detail);
        // CAP_SYS_ADMIN stands in for CAP_BPF; mmap_min_addr=0 for CAP_SYS_RAWIO.
        let c = check_capabilities(
            Some(ROOT_CAPS & !(1 << CAP_BPF) & !(1 << CAP_SYS_RAWIO)),
            Some(0),
        );
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
    }

    #[test]
    fn page_zero_verdicts() {
        let no_rawio = Some(ROOT_CAPS & !(1 << CAP_SYS_RAWIO));
        let c = check_page_zero(&err(libc::EPERM), Some(4096), no_rawio);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("CAP_SYS_RAWIO"));
        assert!(c.fix.unwrap().contains("vm.mmap_min_addr=0"));
        assert_eq!(
            check_page_zero(&Ok(()), Some(0), no_rawio).status,
            Status::Ok
        );
        let lsm = check_page_zero(&err(libc::EACCES), Some(0), no_rawio);
        assert_eq!(lsm.status, Status::Fail);
        assert!(lsm.fix.unwrap().contains("SELinux"));
    }

    #[test]
    fn bpf_failure_names_capabilities_when_missing() {
        let c = check_bpf(&err(libc::EPERM), Some(0));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("CAP_BPF"));
        let c = check_bpf(&err(libc::EPERM), Some(ROOT_CAPS));
        assert!(c.fix.unwrap().contains("lockdown"));
        assert_eq!(check_bpf(&Ok(()), Some(ROOT_CAPS)).status, Status::Ok);
    }

    #[test]
    fn xdp_mode_verdicts() {
        let both = ModeProbe {
            native: Ok(()),
            generic: Ok(()),
        };
        assert_eq!(check_xdp_modes("v0", &both, Some(1500)).status, Status::Ok);
        let generic_only = ModeProbe {
            native: err(libc::ERANGE),
            generic: Ok(()),
        };
        let c = check_xdp_modes("v0", &generic_only, Some(9000));
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("mtu 3500"));
        let none = ModeProbe {
            native: err(libc::EPERM),
            generic: err(libc::EPERM),
        };
        assert_eq!(
            check_xdp_modes("v0", &none, Some(1500)).status,
            Status::Fail
        );
    }

    #[test]
    fn mtu_and_bind_verdicts() {
        assert_eq!(check_mtu("v0", Some(1500)).status, Status::Ok);
        assert_eq!(
            check_mtu("v0", Some(XDP_NATIVE_MTU_LIMIT)).status,
            Status::Ok
        );
        assert_eq!(check_mtu("v0", Some(9000)).status, Status::Warn);
        let c = check_xsk_bind("v0", "veth", &err(libc::ENOTSUP), &Ok(()));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("copy mode"));
        let busy = check_xsk_bind("v0", "veth", &err(libc::EBUSY), &err(libc::EBUSY));
        assert_eq!(busy.status, Status::Fail);
        assert!(busy.detail.contains("busy"));
        assert_eq!(
            check_xsk_bind("v0", "ice", &Ok(()), &Ok(())).status,
            Status::Ok
        );
    }

    #[test]
    fn queue_and_fast_path_verdicts() {
        let q = xdp_backend::QueueCounts {
            rx_in_use: 2,
            tx_in_use: 2,
            rx_allocated: 4,
            tx_allocated: 4,
            source: xdp_backend::queues::QueueSource::Sysfs,
        };
        let c = check_queues("v0", &Ok(q));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("2 in use of 4 allocated"), "{}", c.detail);
        let unsupported = Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        assert_eq!(check_queues("v0", &unsupported).status, Status::Warn);
        let ok = check_fast_path("v0", &Ok(q));
        assert_eq!(ok.status, Status::Ok);
        assert!(
            ok.detail.contains("2 AF_XDP sockets bound"),
            "{}",
            ok.detail
        );
        let e = xdp_backend::StartError {
            cause: "queue 1 is not in use on v0 (1 in use of 2 allocated)".into(),
            fix: "start again".into(),
        };
        let fail = check_fast_path("v0", &Err(e));
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.detail.starts_with("queue 1 is not in use"));
        assert_eq!(fail.fix.as_deref(), Some("start again"));
    }

    #[test]
    fn ipv6_verdicts() {
        let ula: std::net::Ipv6Addr = "fd77::1".parse().unwrap();
        let c = check_ipv6(
            "v0",
            &Ok(vec![(ula, 64)]),
            Some(false),
            Some(false),
            Some(false),
        );
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("fd77::1/64"), "{}", c.detail);
        let none = check_ipv6("v0", &Ok(vec![]), Some(false), Some(false), Some(false));
        assert!(none.detail.contains("stay the kernel's"), "{}", none.detail);
        let off = check_ipv6("v0", &Ok(vec![]), Some(true), None, None);
        assert!(off.detail.contains("IPv4 only"), "{}", off.detail);
        let fwd = check_ipv6(
            "v0",
            &Ok(vec![(ula, 64)]),
            Some(false),
            Some(true),
            Some(false),
        );
        assert_eq!(fwd.status, Status::Warn);
        assert!(fwd.fix.as_deref().unwrap().contains("forwarding=0"));
        let fwd4 = check_ipv6("v0", &Ok(vec![]), None, None, Some(true));
        assert!(
            fwd4.detail.starts_with("net.ipv4.ip_forward"),
            "{}",
            fwd4.detail
        );
        let e = Err(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(check_ipv6("v0", &e, None, None, None).status, Status::Warn);
    }

    #[test]
    fn verdict_and_exit_code_follow_failures() {
        let mut r = Report {
            iface: Some("v0".into()),
            checks: vec![
                Check::ok("kernel", "6.18"),
                Check::warn("mtu", "big", "lower it"),
            ],
        };
        assert!(r.accelerates());
        assert_eq!(r.exit_code(), 0);
        assert!(r.render().contains("verdict: fastnet can accelerate on v0"));
        assert!(r.render().contains("     fix: lower it"));
        r.checks.push(Check::fail("bpf", "EPERM", "grant CAP_BPF"));
        assert_eq!(r.exit_code(), 1);
        let text = r.render();
        assert!(text.contains("FAIL bpf"), "{text}");
        assert!(text.contains("1 check FAIL"), "{text}");
    }
}
