//! `fastnet doctor` end to end: its verdict (exit code and OK/WARN/FAIL lines) must match
//! what the machine really allows, including failures we force (capabilities dropped
//! with `capsh`, an XDP program attached by someone else, an MTU above the native XDP
//! limit, an interface that does not exist). Interfaces named are always in our own
//! namespaces.

use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use fastnet_tools::sys;
use std::path::PathBuf;
use std::process::Output;

/// The `fastnet` binary of the same build as this test (target/<profile>/fastnet).
fn fastnet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("fastnet");
    assert!(
        bin.exists(),
        "{} missing: build it first (`cargo build -p fastnet-tools`, same profile)",
        bin.display()
    );
    bin
}

struct Doctor {
    code: i32,
    text: String,
}

impl Doctor {
    fn from(out: Output) -> Doctor {
        Doctor {
            code: out.status.code().expect("doctor killed by a signal"),
            text: String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        }
    }

    /// The status line of one check, e.g. "FAIL bpf ...".
    fn line(&self, name: &str) -> &str {
        self.text
            .lines()
            .find(|l| l.len() > 5 && l[5..].starts_with(&format!("{name:<13} ")))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{}", self.text))
    }

    /// The fix line right after a check's status line.
    fn fix(&self, name: &str) -> &str {
        let line = self.line(name);
        let mut lines = self.text.lines().skip_while(|l| *l != line);
        lines.next();
        lines
            .next()
            .filter(|l| l.trim_start().starts_with("fix:"))
            .unwrap_or_else(|| panic!("no fix line after `{line}`:\n{}", self.text))
    }
}

fn doctor_in(topo: &Topology, iface: &str) -> Doctor {
    let out = topo
        .command(Side::Server, fastnet_bin().to_str().unwrap())
        .args(["doctor", "--iface", iface])
        .output()
        .expect("run fastnet doctor");
    Doctor::from(out)
}

/// What `ip` itself says about XDP on the interface (independent of our netlink code).
fn ip_link_mentions_xdp(topo: &Topology) -> bool {
    let out = topo
        .command(Side::Server, "ip")
        .args(["-d", "link", "show", "dev", topo.iface(Side::Server)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn doctor_passes_on_server_veth_and_leaves_nothing_attached() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let d = doctor_in(&topo, topo.iface(Side::Server));
    assert_eq!(d.code, 0, "doctor should pass as root:\n{}", d.text);
    assert!(!d.text.contains("FAIL"), "{}", d.text);
    assert!(d.line("xdp modes").starts_with("OK"), "{}", d.text);
    assert!(d.line("xdp modes").contains("native and generic"));
    // DESIGN.md: veth binds AF_XDP in copy mode only.
    let bind = d.line("af_xdp bind");
    assert!(
        bind.starts_with("WARN") && bind.contains("copy mode"),
        "{bind}"
    );
    assert!(bind.contains("EOPNOTSUPP"), "{bind}");
    // The kernel's default veth: one queue in use of one per CPU allocated.
    assert!(d.line("queues").contains("1 in use of"), "{}", d.text);
    assert!(d.line("fast path").starts_with("OK"), "{}", d.text);
    assert!(d.line("mtu").contains("1500"), "{}", d.text);
    assert!(d.line("interface").contains("driver veth"), "{}", d.text);
    // The topology's IPv6 address is the fast path's too; the namespace routes nothing.
    let v6 = d.line("ipv6");
    assert!(
        v6.starts_with("OK") && v6.contains(&format!("{}/64", topo.server_ip6)),
        "{}",
        d.text
    );
    assert!(d.text.contains("verdict: fastnet can accelerate on"));
    // The probe attachments were links: gone as soon as doctor exited.
    assert!(
        !ip_link_mentions_xdp(&topo),
        "doctor left an XDP program behind"
    );
}

#[test]
fn doctor_fails_and_names_capabilities_dropped_with_capsh() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let script = format!(
        "exec {} doctor --iface {}",
        fastnet_bin().display(),
        topo.iface(Side::Server)
    );
    let out = topo
        .command(Side::Server, "capsh")
        .args([
            "--drop=cap_sys_rawio,cap_net_admin,cap_bpf,cap_sys_admin",
            "--",
            "-c",
            &script,
        ])
        .output()
        .expect("run capsh (package libcap2-bin)");
    let d = Doctor::from(out);
    assert_ne!(
        d.code, 0,
        "doctor must fail without capabilities:\n{}",
        d.text
    );
    let caps = d.line("capabilities");
    assert!(caps.starts_with("FAIL"), "{caps}");
    assert!(caps.contains("CAP_NET_ADMIN"), "{caps}");
    assert!(caps.contains("CAP_BPF"), "{caps}");
    // CAP_NET_RAW was kept, so it must not be reported missing.
    assert!(!caps.contains("CAP_NET_RAW"), "{caps}");
    assert!(d.fix("capabilities").contains("AmbientCapabilities"));
    let bpf = d.line("bpf");
    assert!(bpf.starts_with("FAIL") && bpf.contains("EPERM"), "{bpf}");
    // AF_XDP sockets only need CAP_NET_RAW, which capsh left in place.
    assert!(d.line("af_xdp").starts_with("OK"), "{}", d.text);
    let min_addr: u64 = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let page0 = d.line("page at 0");
    if min_addr > 0 {
        assert!(page0.starts_with("FAIL"), "{page0}");
        assert!(page0.contains("CAP_SYS_RAWIO"), "{page0}");
        assert!(d.fix("page at 0").contains("vm.mmap_min_addr=0"));
    } else {
        assert!(page0.starts_with("OK"), "{page0}");
    }
    assert!(d.line("xdp modes").starts_with("FAIL"), "{}", d.text);
    assert!(d.text.contains("verdict: fastnet cannot accelerate here"));
}

#[test]
fn doctor_names_a_missing_interface() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let name = format!("nosuch{}", std::process::id() % 100_000);
    let d = doctor_in(&topo, &name);
    assert_ne!(d.code, 0, "{}", d.text);
    let line = d.line("interface");
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(
        line.contains(&format!("no interface named \"{name}\"")),
        "{line}"
    );
    assert!(d.fix("interface").contains("ip -br link"));
}

#[test]
fn doctor_sees_an_xdp_program_attached_by_someone_else() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let iface = topo.iface(Side::Server).to_string();
    // "Someone else": this test process holds a generic-mode XDP link on the interface.
    let link = sys::in_netns(topo.ns(Side::Server), move || {
        let idx = sys::if_index(&iface).expect("server veth in its namespace");
        let prog = sys::load_xdp_pass_program().expect("load XDP program");
        sys::attach_xdp_link(&prog, idx, sys::XDP_FLAGS_SKB_MODE).expect("attach")
    })
    .expect("enter the server namespace");
    assert!(ip_link_mentions_xdp(&topo), "ip should see our program");

    let d = doctor_in(&topo, topo.iface(Side::Server));
    assert_ne!(d.code, 0, "{}", d.text);
    let line = d.line("xdp program");
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("generic mode"), "{line}");
    assert!(line.contains("\"fastnet_doctor\""), "program named: {line}");
    assert!(d.fix("xdp program").contains("bpftool prog show id"));

    drop(link);
    assert!(
        !ip_link_mentions_xdp(&topo),
        "link fd closed: program detached"
    );
    let d = doctor_in(&topo, topo.iface(Side::Server));
    assert_eq!(d.code, 0, "{}", d.text);
    assert!(d.line("xdp program").starts_with("OK"), "{}", d.text);
}

#[test]
fn doctor_recognises_fastnets_own_program() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let iface = topo.iface(Side::Server).to_string();
    let name = fastnet_tools::doctor::FASTNET_PROG_NAME;
    let link = sys::in_netns(topo.ns(Side::Server), move || {
        let idx = sys::if_index(&iface).expect("server veth in its namespace");
        let prog = sys::load_xdp_pass_program_named(name).expect("load XDP program");
        sys::attach_xdp_link(&prog, idx, sys::XDP_FLAGS_DRV_MODE).expect("attach")
    })
    .expect("enter the server namespace");
    let d = doctor_in(&topo, topo.iface(Side::Server));
    let line = d.line("xdp program");
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains("fastnet's own XDP program"), "{line}");
    assert_eq!(d.code, 0, "{}", d.text);
    drop(link);
}

#[test]
fn doctor_finds_the_native_xdp_mtu_limit() {
    assert!(is_root(), "end-to-end tests need root");
    let limit = fastnet_tools::doctor::XDP_NATIVE_MTU_LIMIT;
    let at_limit = Topology::up(&TopologyOptions {
        mtu: limit,
        ..Default::default()
    })
    .expect("topology up");
    let d = doctor_in(&at_limit, at_limit.iface(Side::Server));
    assert_eq!(d.code, 0, "{}", d.text);
    assert!(
        d.line("xdp modes").contains("native and generic"),
        "{}",
        d.text
    );
    assert!(d.line("mtu").starts_with("OK"), "{}", d.text);
    drop(at_limit);

    let above = Topology::up(&TopologyOptions {
        mtu: limit + 1,
        ..Default::default()
    })
    .expect("topology up");
    let d = doctor_in(&above, above.iface(Side::Server));
    // Generic XDP still attaches, but the shim refuses a frame that native XDP could
    // not hold; the doctor runs the shim's start-up and says so, with the fix.
    assert_eq!(d.code, 1, "{}", d.text);
    let fast = d.line("fast path");
    assert!(
        fast.starts_with("FAIL") && fast.contains("MTU 3507"),
        "{}",
        d.text
    );
    assert!(d.fix("fast path").contains("mtu 1500"), "{}", d.text);
    let modes = d.line("xdp modes");
    assert!(
        modes.starts_with("WARN") && modes.contains("ERANGE"),
        "{modes}"
    );
    assert!(d.fix("xdp modes").contains("mtu 3500"), "{}", d.text);
    assert!(d.line("mtu").starts_with("WARN"), "{}", d.text);
}
