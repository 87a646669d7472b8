//! xdp-backend's API against the real kernel: netlink (link, addresses, routes,
//! neighbours), the port map (also through an inherited fd), close-on-exec fds, XSK
//! sockets on every queue of a multi-queue veth, and a quick rebind.

use fastnet_e2e::{is_root, run_ok, QueueLayout, Side, Topology, TopologyOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;
use xdp_backend::{netlink, Transport, XdpProgram, XskConfig, XskSocket};

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on a namespace fd; it changes only this thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

fn mac_of(topo: &Topology, side: Side) -> [u8; 6] {
    let out = run_ok(
        topo.command(side, "cat")
            .arg(format!("/sys/class/net/{}/address", topo.iface(side))),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    for (i, b) in text.trim().split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

#[test]
fn netlink_link_addresses_routes_and_neighbours() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions {
        queues: QueueLayout::Fixed(2),
        mtu: 1400,
        ..Default::default()
    })
    .unwrap();
    run_ok(topo.command(Side::Server, "ip").args([
        "route",
        "add",
        "10.77.99.0/24",
        "via",
        &topo.client_ip.to_string(),
    ]));
    run_ok(topo.command(Side::Server, "ip").args([
        "-6",
        "route",
        "add",
        "fd77:99::/64",
        "via",
        &topo.client_ip6.to_string(),
    ]));
    let server_mac = mac_of(&topo, Side::Server);
    let client_mac = mac_of(&topo, Side::Client);
    let (iface, sip, cip) = (topo.server_if.clone(), topo.server_ip, topo.client_ip);
    let (sip6, cip6) = (topo.server_ip6, topo.client_ip6);
    in_netns(&topo.server_ns, move || {
        let link = netlink::link_by_name(&iface).unwrap();
        assert_eq!(link.name, iface);
        assert_eq!(link.mac, server_mac);
        assert_eq!(link.mtu, 1400);
        assert_eq!((link.rx_queues_allocated, link.tx_queues_allocated), (2, 2));
        assert_eq!(link.xdp_prog_id, None);
        assert_eq!(netlink::link(link.index).unwrap(), link);
        assert_eq!(
            netlink::ipv4_addresses(link.index).unwrap(),
            vec![(sip, 24)]
        );
        assert!(netlink::link_by_name("fastnet-nope0").is_err());

        // Directly connected, and via a gateway.
        let direct = netlink::route_get(cip).unwrap();
        assert_eq!(direct.oif, link.index);
        assert_eq!(direct.gateway, None);
        assert_eq!(direct.pref_src, Some(sip.into()));
        assert_eq!(direct.next_hop(cip), cip);
        let far = Ipv4Addr::new(10, 77, 99, 5);
        let via = netlink::route_get(far).unwrap();
        assert_eq!(via.oif, link.index);
        assert_eq!(via.gateway, Some(cip.into()));
        assert_eq!(via.next_hop(far), cip);
        // Nothing else is routed in a fresh namespace.
        assert!(netlink::route_get(Ipv4Addr::new(192, 0, 2, 1)).is_err());

        // A fresh namespace has not resolved the peer yet; asking makes the kernel ARP.
        assert!(!netlink::neighbour(link.index, cip)
            .unwrap()
            .is_some_and(|n| n.is_usable()));
        let mac = netlink::resolve_neighbour(link.index, cip, Duration::from_secs(3)).unwrap();
        assert_eq!(mac, client_mac);
        let entry = netlink::neighbour(link.index, cip).unwrap().unwrap();
        assert!(entry.is_usable());
        assert_eq!(entry.mac, Some(client_mac));
        // Nobody has this address: resolution times out, it does not hang or lie.
        let err = netlink::resolve_neighbour(
            link.index,
            Ipv4Addr::new(10, 77, 0, 99),
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        // IPv6: the fd77 address and the link-local one (none tentative), routes,
        // and the kernel's Neighbor Discovery through its neighbour table.
        let addrs6 = netlink::ipv6_addresses(link.index).unwrap();
        assert!(addrs6.contains(&(sip6, 64)), "{addrs6:?}");
        assert!(
            addrs6
                .iter()
                .all(|(a, len)| *a == sip6 || (a.segments()[0] == 0xfe80 && *len == 64)),
            "{addrs6:?}"
        );
        let direct = netlink::route_get(cip6).unwrap();
        assert_eq!((direct.oif, direct.gateway), (link.index, None));
        assert_eq!(direct.next_hop(cip6), std::net::IpAddr::V6(cip6));
        let far6: std::net::Ipv6Addr = "fd77:99::5".parse().unwrap();
        let via = netlink::route_get(far6).unwrap();
        assert_eq!((via.oif, via.gateway), (link.index, Some(cip6.into())));
        let mac = netlink::resolve_neighbour(link.index, cip6, Duration::from_secs(3)).unwrap();
        assert_eq!(mac, client_mac);
        let entry = netlink::neighbour(link.index, cip6).unwrap().unwrap();
        assert_eq!((entry.ip, entry.mac), (cip6.into(), Some(client_mac)));
        let missing: std::net::Ipv6Addr = "fd77::99".parse().unwrap();
        let err = netlink::resolve_neighbour(link.index, missing, Duration::from_millis(500))
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    });
}

#[test]
fn port_map_claims_and_inherited_fd() {
    assert!(is_root(), "end-to-end tests need root");
    let prog = XdpProgram::load().expect("load (verifier)");
    let ports = prog.port_map();
    assert!(!ports.is_claimed(Transport::Tcp, 80).unwrap());
    ports.claim(Transport::Tcp, 80).unwrap();
    ports.claim(Transport::Tcp, 80).unwrap(); // idempotent
    ports.claim(Transport::Udp, 53).unwrap();
    assert!(ports.is_claimed(Transport::Tcp, 80).unwrap());
    assert!(!ports.is_claimed(Transport::Udp, 80).unwrap());
    assert_eq!(
        ports
            .claim_exclusive(Transport::Udp, 53)
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::AlreadyExists
    );
    let mut claimed = ports.claimed().unwrap();
    claimed.sort_by_key(|&(t, p)| (p, t == Transport::Tcp));
    assert_eq!(claimed, vec![(Transport::Udp, 53), (Transport::Tcp, 80)]);

    // A forked child claims through its inherited copy of the fd; the parent sees it.
    let raw = ports.fd().as_raw_fd();
    // SAFETY: the child only makes system calls (bpf, getpid) and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: dup of an fd we inherited; the copy is ours to own.
        let child = xdp_backend::PortMap::from_fd(unsafe { OwnedFd::from_raw_fd(libc::dup(raw)) });
        let ok = child.claim(Transport::Tcp, 8080).is_ok()
            && child.release(Transport::Udp, 53).unwrap_or(false);
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0, "child failed");
    assert!(ports.is_claimed(Transport::Tcp, 8080).unwrap());
    assert!(!ports.is_claimed(Transport::Udp, 53).unwrap());
    assert!(ports.release(Transport::Tcp, 80).unwrap());
    assert!(!ports.release(Transport::Tcp, 80).unwrap());

    for fd in prog.raw_fds() {
        assert!(
            xdp_backend::is_cloexec(fd).unwrap(),
            "fd {fd} not close-on-exec"
        );
    }
    let c = prog.counters().unwrap();
    assert_eq!(c, xdp_backend::XdpCounters::default());
}

#[test]
fn xsk_on_every_queue_of_multiqueue_veth_and_quick_rebind() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions {
        queues: QueueLayout::Fixed(4),
        ..Default::default()
    })
    .unwrap();
    let iface = topo.server_if.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let ns = topo.server_ns.clone();
    // Server: XSK on each of the 4 queues; counts frames per queue.
    let server = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let link = netlink::link_by_name(&iface).unwrap();
            let mut prog = XdpProgram::load().unwrap();
            let mut socks = Vec::new();
            for q in 0..xdp_backend::queues::of(&link)
                .expect("queues in use")
                .bindable()
            {
                let s = XskSocket::bind(link.index, q, &XskConfig::default()).unwrap();
                assert!(!s.is_zero_copy(), "veth refuses zero-copy");
                assert!(xdp_backend::is_cloexec(s.fd()).unwrap());
                prog.register_xsk(q, s.fd()).unwrap();
                socks.push(s);
            }
            prog.port_map().claim(Transport::Udp, 7100).unwrap();
            prog.attach(link.index, None).unwrap();
            assert!(xdp_backend::is_cloexec(prog.link_fd().unwrap().as_raw_fd()).unwrap());
            ready_tx.send(()).unwrap();
            let mut per_queue = vec![0u64; socks.len()];
            let mut payloads = Vec::new();
            while stop_rx.try_recv().is_err() {
                for (q, s) in socks.iter_mut().enumerate() {
                    per_queue[q] += s.receive(64, |f| payloads.push(f[42..].to_vec())) as u64;
                    let _ = s.wait(Some(Duration::from_millis(1)));
                }
            }
            let counters = prog.counters().unwrap();
            // Rebinding right after closing: EBUSY, if any, is retried.
            drop(socks);
            let again = XskSocket::bind(link.index, 0, &XskConfig::default()).unwrap();
            drop(again);
            (per_queue, payloads, counters)
        })
    });
    ready_rx.recv().unwrap();
    // 64 flows (source ports) spread over the queues by the flow hash.
    let mut script = String::new();
    for i in 0..64 {
        script.push_str(&format!(
            "echo -n flow{i} | socat -u - UDP:{}:7100,sourceport={} ; ",
            topo.server_ip,
            20000 + i
        ));
    }
    let mut c = topo
        .command(Side::Client, "sh")
        .arg("-s")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let (per_queue, payloads, counters) = server.join().unwrap();
    let mut got: Vec<String> = payloads
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..64).map(|i| format!("flow{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(counters.redirected, 64);
    assert_eq!(counters.dropped_no_xsk, 0);
    let used = per_queue.iter().filter(|&&n| n > 0).count();
    assert!(used >= 2, "flows spread over queues: {per_queue:?}");
}

/// Ethernet + IPv4 + transport header for the verdict table (checksums are not the
/// program's business).
fn frame(vlan: bool, proto: u8, dport: u16, edit: impl FnOnce(&mut Vec<u8>, usize)) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let ip = f.len();
    let l4 = if proto == 6 { 20 } else { 8 };
    let total = 20 + l4 + 4;
    f.extend_from_slice(&[0x45, 0, 0, total as u8, 0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&[10, 77, 0, 2, 10, 77, 0, 1]);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&((l4 + 4) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(b"data");
    edit(&mut f, ip);
    f
}

#[test]
fn steering_verdicts_per_frame_kind_in_kernel_test_run() {
    use xdp_backend::program::{XDP_DROP, XDP_PASS};
    assert!(is_root(), "end-to-end tests need root");
    let prog = XdpProgram::load().unwrap();
    prog.port_map().claim(Transport::Udp, 53).unwrap();
    prog.port_map().claim(Transport::Tcp, 80).unwrap();
    let none = |_: &mut Vec<u8>, _: usize| {};
    let arp = {
        let mut f = frame(false, 17, 53, none);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    };
    let ipv6 = {
        let mut f = frame(false, 17, 53, none);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f
    };
    // (name, frame, verdict, counts as malformed)
    let cases: Vec<(&str, Vec<u8>, i32, bool)> = vec![
        // Claimed ports with no XSK on queue 0: dropped, never passed.
        ("claimed udp", frame(false, 17, 53, none), XDP_DROP, false),
        ("claimed tcp", frame(false, 6, 80, none), XDP_DROP, false),
        (
            "claimed udp in vlan",
            frame(true, 17, 53, none),
            XDP_DROP,
            false,
        ),
        (
            "claimed tcp with ip options",
            frame(false, 6, 80, |f, ip| {
                f[ip] = 0x46;
                f.splice(ip + 20..ip + 20, [1, 1, 1, 0]);
                let t = u16::from_be_bytes([f[ip + 2], f[ip + 3]]) + 4;
                f[ip + 2..ip + 4].copy_from_slice(&t.to_be_bytes());
            }),
            XDP_DROP,
            false,
        ),
        // Not ours: the kernel's.
        ("unclaimed udp", frame(false, 17, 54, none), XDP_PASS, false),
        (
            "tcp port claimed only for udp",
            frame(false, 6, 53, none),
            XDP_PASS,
            false,
        ),
        (
            "udp port claimed only for tcp",
            frame(false, 17, 80, none),
            XDP_PASS,
            false,
        ),
        ("icmp", frame(false, 1, 53, none), XDP_PASS, false),
        ("arp", arp, XDP_PASS, false),
        ("ipv6", ipv6, XDP_PASS, false),
        (
            "first fragment (MF)",
            frame(false, 17, 53, |f, ip| f[ip + 6] = 0x20),
            XDP_PASS,
            false,
        ),
        (
            "later fragment",
            frame(false, 17, 53, |f, ip| f[ip + 7] = 0x10),
            XDP_PASS,
            false,
        ),
        // Broken headers: counted and dropped.
        (
            "ihl 4",
            frame(false, 17, 53, |f, ip| f[ip] = 0x44),
            XDP_DROP,
            true,
        ),
        (
            "version 5",
            frame(false, 17, 53, |f, ip| f[ip] = 0x55),
            XDP_DROP,
            true,
        ),
        (
            "ip cut at 16 bytes",
            frame(false, 17, 53, |f, ip| f.truncate(ip + 16)),
            XDP_DROP,
            true,
        ),
        (
            "total length past frame",
            frame(false, 17, 53, |f, ip| f[ip + 3] = 200),
            XDP_DROP,
            true,
        ),
        (
            "udp length past ip",
            frame(false, 17, 53, |f, ip| f[ip + 25] = 100),
            XDP_DROP,
            true,
        ),
        (
            "tcp doff 4",
            frame(false, 6, 80, |f, ip| f[ip + 32] = 0x40),
            XDP_DROP,
            true,
        ),
        (
            "tcp doff past ip",
            frame(false, 6, 80, |f, ip| f[ip + 32] = 0xf0),
            XDP_DROP,
            true,
        ),
        (
            "vlan tag cut",
            frame(true, 17, 53, |f, _| f.truncate(16)),
            XDP_DROP,
            true,
        ),
    ];
    let mut want_malformed = 0;
    for (name, f, verdict, malformed) in &cases {
        let got = prog.test_run(f).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got as i32, *verdict, "{name}");
        want_malformed += *malformed as u64;
    }
    let c = prog.counters().unwrap();
    assert_eq!(c.malformed, want_malformed);
    assert_eq!(c.dropped_no_xsk, 4);
    assert_eq!(c.passed, 8);
    assert_eq!(c.redirected, 0);
}

#[test]
fn verifier_log_is_shown_when_a_program_is_rejected() {
    use xdp_backend::bpf::asm::{Asm, Reg, Size};
    assert!(is_root(), "end-to-end tests need root");
    // Reads a packet byte without the bounds check the verifier insists on.
    let mut a = Asm::new();
    a.load(Size::W, Reg::R2, Reg::R1, 0)
        .load(Size::B, Reg::R0, Reg::R2, 0)
        .exit();
    let err = xdp_backend::bpf::load_xdp_program(&a.finish().unwrap(), "bad").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("verifier log"), "{text}");
    assert!(text.contains("invalid access to packet"), "{text}");
}
