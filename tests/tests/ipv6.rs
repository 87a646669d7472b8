//! IPv6 on the fast path (issue 21): stock programs with AF_INET6 sockets and native
//! IPv6 addresses (fd77::/16 of the test topology) carried by the stack over AF_XDP,
//! byte-exact; the proof that the fast path carried them: fastnet's program attached,
//! the stack's counters moved, and no kernel TCP connection for the flow in the
//! namespace (`ss`).

use fastnet_e2e::apps::{
    assert_fast_path_counters, assert_xdp_attached, echo_client, exit_counters, fastnet_cmd,
    fastnet_redis, kernel_connections, kernel_nginx, nginx_conf, random_file, scratch, sha256_file,
    spawn, wait_listening,
};
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};

const PY: &str = "/usr/bin/python3";

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

/// Queues in use on the topology's veth ends.
fn t_queues(_t: &Topology) -> u64 {
    TopologyOptions::for_tests().queues.in_use() as u64
}

/// The counter `name` a fastnet process printed at exit (0 when absent).
fn counter(log: &str, name: &str) -> u64 {
    exit_counters(log).get(name).copied().unwrap_or(0)
}

/// A Python echo server on AF_INET6 `::` (dual-stack unless `v6only`): it serves
/// `conns` connections one after the other and prints each peer.
fn python_echo_server(
    t: &Topology,
    port: u16,
    v6only: bool,
    conns: usize,
) -> fastnet_e2e::apps::Bg {
    let script = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, {only})
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {port})); s.listen(8)
print("listening", s.getsockname()[0], flush=True)
for _ in range({conns}):
    c, a = s.accept()
    l = c.getsockname()
    print("peer", a[0], "local", l[0], "scopes", a[3], l[3], flush=True)
    while True:
        d = c.recv(1 << 16)
        if not d: break
        c.sendall(d)
    c.close()
s.close()
"#,
        only = v6only as i32,
    );
    let dir = scratch("v6echo");
    let mut c = fastnet_cmd(t, Side::Server, PY);
    c.args(["-c", &script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(t, Side::Server, port, &mut srv);
    srv
}

/// Runs the echo client against `host`, checking meanwhile that the server's namespace
/// holds no kernel TCP connection on `port`.
fn echo_through(t: &Topology, host: &str, port: u16, n: usize) -> String {
    let mut kernel = usize::MAX;
    let out = echo_client(
        t,
        host,
        port,
        n,
        || kernel = kernel_connections(t, Side::Server, port),
        &String::new,
    );
    assert_eq!(kernel, 0, "the kernel carried the flow to {host}: {out}");
    out
}

/// A dual-stack `::` listener takes a native IPv6 client and an IPv4 one on the fast
/// path (one listener, one accept queue); an IPV6_V6ONLY one takes IPv6.
#[test]
fn python_dual_stack_and_v6only_echo_over_ipv6() {
    let t = topo();
    let n = 8 << 20;
    let mut srv = python_echo_server(&t, 7600, false, 2);
    assert_xdp_attached(&t, Side::Server);
    let out = echo_through(&t, &t.server_ip6.to_string(), 7600, n);
    assert!(
        out.contains("family AF_INET6") && out.contains("echo ok"),
        "{out}"
    );
    let out = echo_through(&t, &t.server_ip.to_string(), 7600, n);
    assert!(
        out.contains("family AF_INET") && out.contains("echo ok"),
        "{out}"
    );
    let _ = srv.child.wait();
    let log = srv.output();
    assert!(
        log.contains(&format!("peer {} local {}", t.client_ip6, t.server_ip6)),
        "native IPv6 peer and local address: {log}"
    );
    assert!(
        log.contains(&format!("peer ::ffff:{}", t.client_ip)),
        "v4-mapped IPv4 peer: {log}"
    );
    assert!(counter(&log, "rx.bytes") >= 2 * n as u64, "{log}");
    assert!(counter(&log, "tx.bytes") >= 2 * n as u64, "{log}");

    let mut srv = python_echo_server(&t, 7601, true, 1);
    let out = echo_through(&t, &t.server_ip6.to_string(), 7601, n);
    assert!(out.contains("echo ok"), "{out}");
    let _ = srv.child.wait();
    let log = srv.output();
    assert!(log.contains(&format!("peer {}", t.client_ip6)), "{log}");
    assert!(counter(&log, "rx.bytes") >= n as u64, "{log}");
}

/// nginx under fastnet in the server namespace, `listen` on `port`, serving `dir`/www/
/// f.bin of `size` random bytes; returns it, the file the shim logs to (nginx points
/// its workers' stderr at its error log) and the file's sha256.
fn fastnet_nginx(
    t: &Topology,
    dir: &std::path::Path,
    port: u16,
    listen: &str,
    size: usize,
) -> (fastnet_e2e::apps::Bg, std::path::PathBuf, String) {
    let conf = nginx_conf(dir, port);
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(&format!("listen {port};"), &format!("listen {listen};")),
    )
    .unwrap();
    let file = dir.join("www").join("f.bin");
    random_file(&file, size, port as u64);
    let want = sha256_file(&file);
    let mut c = fastnet_cmd(t, Side::Server, "nginx");
    let shim_log = dir.join("fastnet.log");
    c.args(["-c", conf.to_str().unwrap()])
        .env("FASTNET_LOG_FILE", &shim_log);
    let mut srv = spawn(c, &dir.join("nginx.log"));
    wait_listening(t, Side::Server, port, &mut srv);
    (srv, shim_log, want)
}

/// nginx with `listen [::]:8080` (IPV6_V6ONLY, nginx's default for `[::]`) serves a
/// large file over IPv6 to a stock curl, byte-exact, on the fast path.
#[test]
fn nginx_listen_ipv6_serves_a_large_file_byte_exact() {
    let t = topo();
    let dir = scratch("nginx6");
    let size = 200 << 20;
    let (mut srv, shim_log, want) = fastnet_nginx(&t, &dir, 8080, "[::]:8080", size);
    assert_xdp_attached(&t, Side::Server);
    let got = dir.join("got.bin");
    let url = format!("http://[{}]:8080/f.bin", t.server_ip6);
    let mut curl = t.command(Side::Client, "curl");
    curl.args([
        "-6",
        "-sS",
        "--limit-rate",
        "100M",
        "-o",
        got.to_str().unwrap(),
        &url,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let child = curl.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let kernel = kernel_connections(&t, Side::Server, 8080);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(kernel, 0, "the kernel carried the download");
    assert_eq!(sha256_file(&got), want, "200 MB over IPv6 differ");
    // nginx's worker drives the fast path and prints the counters at its exit.
    let out = srv.stop_with(libc::SIGQUIT);
    let log = std::fs::read_to_string(&shim_log).unwrap_or_default() + &out;
    // The request and the ACKs one way, the file the other.
    assert_fast_path_counters(&log, 100_000, t_queues(&t));
    assert!(counter(&log, "tx.bytes") >= size as u64, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// curl -6 under fastnet (a fast-path client) fetches from a kernel nginx over IPv6.
#[test]
fn curl_ipv6_client_on_the_fast_path_fetches_from_a_kernel_server() {
    let t = topo();
    let dir = scratch("curl6");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let size = 32 << 20;
    let file = www.join("f.bin");
    random_file(&file, size, 6);
    let want = sha256_file(&file);
    // Kernel nginx on the client side; curl under fastnet on the server side.
    let srv = kernel_nginx(&t, &dir, &format!("[{}]:8089", t.client_ip6), 8089);
    let got = dir.join("got.bin");
    let mut c = fastnet_cmd(&t, Side::Server, "curl");
    c.args([
        "-6",
        "-sS",
        "-o",
        got.to_str().unwrap(),
        &format!("http://[{}]:8089/f.bin", t.client_ip6),
    ]);
    let mut cl = spawn(c, &dir.join("curl.log"));
    let st = cl.child.wait().unwrap();
    let out = cl.output();
    assert!(st.success(), "curl failed: {out}");
    assert_eq!(sha256_file(&got), want, "the download differs");
    assert!(counter(&out, "rx.bytes") >= size as u64, "{out}");
    assert!(!out.contains("kernel: "), "{out}");
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis on `::` (its IPv6 listener is IPV6_V6ONLY) answers redis-cli over IPv6.
#[test]
fn redis_on_ipv6_any() {
    let t = topo();
    let mut c = fastnet_redis(&t, Side::Server, 6390);
    c.args(["--bind", "::"]);
    let dir = scratch("redis6");
    let mut srv = spawn(c, &dir.join("redis.log"));
    wait_listening(&t, Side::Server, 6390, &mut srv);
    assert_xdp_attached(&t, Side::Server);
    let host = t.server_ip6.to_string();
    let cli = |args: &[&str]| {
        let out = run_ok(
            t.command(Side::Client, "redis-cli")
                .args(["-h", &host, "-p", "6390"])
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let value = "v".repeat(100_000);
    assert_eq!(cli(&["set", "k6", &value]), "OK");
    assert_eq!(cli(&["get", "k6"]), value);
    assert_eq!(cli(&["incrby", "n", "21"]), "21");
    assert_eq!(cli(&["incrby", "n", "21"]), "42");
    let log = srv.stop();
    assert!(counter(&log, "rx.bytes") >= 100_000, "{log}");
    assert!(counter(&log, "tx.bytes") >= 100_000, "{log}");
}

/// UDP echo over IPv6: a dual-stack Python server on `::` under fastnet answers IPv6
/// and IPv4 datagrams from the stack, each to its sender in its own family.
#[test]
fn udp_echo_over_ipv6() {
    let t = topo();
    let script = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 7700))
print("bound", flush=True)
for _ in range(200):
    d, a = s.recvfrom(65536)
    s.sendto(d, a)
    if d == b"last": break
print("served", a[0], flush=True)
"#;
    let dir = scratch("udp6");
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !srv.output().contains("bound") {
        assert!(std::time::Instant::now() < deadline, "{}", srv.output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let client = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
ok = 0
for i in range(50):
    msg = b"%d-" % i + bytes(range(256)) * 4
    for _ in range(5):
        s.sendto(msg, (sys.argv[1], 7700))
        try:
            d, a = s.recvfrom(65536)
        except socket.timeout:
            continue
        if d == msg and a[0] == sys.argv[1]: ok += 1
        break
if sys.argv[2] == "last": s.sendto(b"last", (sys.argv[1], 7700))
print("echoed", ok, flush=True)
"#;
    let ip6 = t.server_ip6.to_string();
    let ip4 = t.server_ip.to_string();
    for (host, last) in [(ip6.as_str(), "no"), (ip4.as_str(), "last")] {
        let out = run_ok(t.command(Side::Client, PY).args(["-c", client, host, last]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("echoed 50"), "to {host}: {text}");
    }
    let _ = srv.child.wait();
    let log = srv.output();
    assert!(
        log.contains(&format!("served ::ffff:{}", t.client_ip)),
        "{log}"
    );
    assert!(counter(&log, "rx.bytes") >= 2 * 50 * 1024, "{log}");
}

/// nginx with `listen [::]:8082 ipv6only=off` (dual-stack): its worker, which inherits
/// the listener from the master and listens again in its own stack, takes IPv6 and
/// IPv4 clients on the fast path.
#[test]
fn nginx_dual_stack_worker_takes_both_families() {
    let t = topo();
    let dir = scratch("nginx46");
    let (mut srv, shim_log, want) =
        fastnet_nginx(&t, &dir, 8082, "[::]:8082 ipv6only=off", 4 << 20);
    for (i, url) in [
        format!("http://[{}]:8082/f.bin", t.server_ip6),
        format!("http://{}:8082/f.bin", t.server_ip),
    ]
    .iter()
    .enumerate()
    {
        let got = dir.join(format!("got{i}"));
        run_ok(t.command(Side::Client, "curl").args([
            "-sS",
            "--fail",
            "-o",
            got.to_str().unwrap(),
            url,
        ]));
        assert_eq!(sha256_file(&got), want, "{url}");
    }
    let out = srv.stop_with(libc::SIGQUIT);
    let log = std::fs::read_to_string(&shim_log).unwrap_or_default() + &out;
    assert!(counter(&log, "tx.bytes") >= 2 * (4 << 20), "{log}");
    assert!(!log.contains("kernel: "), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `side`'s link-local IPv6 address (fe80::/64, from its MAC).
fn link_local(t: &Topology, side: Side) -> std::net::Ipv6Addr {
    let out = run_ok(t.command(side, "ip").args([
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        t.iface(side),
        "scope",
        "link",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with("fe80:"))
        .unwrap_or_else(|| panic!("no link-local address: {text}"));
    word.split('/').next().unwrap().parse().unwrap()
}

/// A link-local peer (`fe80::...%iface`): the connection is the stack's, and the app
/// sees both ends with the interface's scope id, as Linux reports them.
#[test]
fn link_local_peer_with_scope_id() {
    let t = topo();
    // The link-local addresses are usable once the kernel saw the carrier (the
    // server's must be when fastnet starts: the stack takes the usable ones).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let tentative = |side| {
        !run_ok(
            t.command(side, "ip")
                .args(["-6", "addr", "show", "tentative"]),
        )
        .stdout
        .is_empty()
    };
    while (tentative(Side::Server) || tentative(Side::Client))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (srv_ll, cli_ll) = (link_local(&t, Side::Server), link_local(&t, Side::Client));
    let mut srv = python_echo_server(&t, 7602, true, 1);
    let host = format!("{srv_ll}%{}", t.client_if);
    let out = echo_through(&t, &host, 7602, 1 << 20);
    assert!(out.contains("echo ok"), "{out}");
    let _ = srv.child.wait();
    let log = srv.output();
    let ifindex = run_ok(
        t.command(Side::Server, "cat")
            .arg(format!("/sys/class/net/{}/ifindex", t.server_if)),
    );
    let ifindex = String::from_utf8_lossy(&ifindex.stdout).trim().to_string();
    let want = format!("peer {cli_ll} local {srv_ll} scopes {ifindex} {ifindex}");
    assert!(log.contains(&want), "{want} in {log}");
    assert!(counter(&log, "rx.bytes") >= 1 << 20, "{log}");
}

/// A UDP server on `::` (IPV6_V6ONLY) with IPV6_RECVPKTINFO: each datagram's
/// destination and interface, its sender, and the reply sent back with sendmsg and the
/// IPV6_PKTINFO it came with; prints one line per datagram.
const PKTINFO_SERVER: &str = r#"
import socket, struct, sys
n, ifindex = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
s.bind(("::", 7710))
print("bound", flush=True)
for i in range(n):
    d, anc, flags, a = s.recvmsg(2048, 256)
    info = [x for x in anc if x[0] == socket.IPPROTO_IPV6 and x[1] == socket.IPV6_PKTINFO]
    dst = socket.inet_ntop(socket.AF_INET6, info[0][2][:16]) if info else None
    idx = struct.unpack("I", info[0][2][16:20])[0] if info else None
    print("got", len(d), "to", dst, "if", idx == ifindex, "from", a[0], a[1] > 0, a[2], a[3],
          "flags", flags, "cmsgs", len(anc), flush=True)
    s.sendmsg([d[::-1]], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info[0][2])], 0, a)
"#;

/// Sends `n` datagrams to the server and prints where each answer came from.
const PKTINFO_CLIENT: &str = r#"
import socket, sys
host, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
for i in range(n):
    msg = b"datagram %d " % i + b"x" * i * 40
    s.sendto(msg, (host, 7710))
    d, a = s.recvfrom(4096)
    print("answer", d == msg[::-1], "from", a[0], a[1], flush=True)
"#;

/// One round of the IPV6_PKTINFO exchange with the server under fastnet or not:
/// (server output, client output, server log).
fn pktinfo_round(t: &Topology, fast: bool, n: usize) -> (String, String, String) {
    let ifindex = run_ok(
        t.command(Side::Server, "cat")
            .arg(format!("/sys/class/net/{}/ifindex", t.server_if)),
    );
    let ifindex = String::from_utf8_lossy(&ifindex.stdout).trim().to_string();
    let mut c = if fast {
        fastnet_cmd(t, Side::Server, PY)
    } else {
        t.command(Side::Server, PY)
    };
    c.args(["-c", PKTINFO_SERVER, &n.to_string(), &ifindex]);
    let dir = scratch("pktinfo6");
    let mut srv = spawn(c, &dir.join("server.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !srv.output().contains("bound") {
        assert!(std::time::Instant::now() < deadline, "{}", srv.output());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run_ok(t.command(Side::Client, PY).args([
        "-c",
        PKTINFO_CLIENT,
        &t.server_ip6.to_string(),
        &n.to_string(),
    ]));
    let _ = srv.child.wait();
    let log = srv.output();
    let lines =
        |f: &dyn Fn(&str) -> bool| log.lines().filter(|l| f(l)).collect::<Vec<_>>().join("\n");
    (
        lines(&|l| l.starts_with("got ")),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        log.clone(),
    )
}

/// recvmsg's IPV6_PKTINFO and sendmsg with it over IPv6 on the fast path: what the
/// app reads (destination, interface, sender with flow info and scope, flags, the
/// cmsg count) and where the answers come from equal the kernel's, and the kernel
/// received none of the fast-path run's datagrams.
#[test]
fn udp_ipv6_pktinfo_both_ways_matches_the_kernel() {
    let t = topo();
    let n = 6;
    let (k_srv, k_cli, _) = pktinfo_round(&t, false, n);
    assert_eq!(k_srv.lines().count(), n, "{k_srv}");
    assert!(
        k_srv.contains(&format!("to {} if True", t.server_ip6)),
        "{k_srv}"
    );
    let before = fastnet_e2e::apps::kernel_udp_datagrams(&t, Side::Server);
    let (f_srv, f_cli, f_log) = pktinfo_round(&t, true, n);
    assert_eq!(
        fastnet_e2e::apps::kernel_udp_datagrams(&t, Side::Server),
        before,
        "the kernel received datagrams of the fast-path run"
    );
    assert_eq!(k_srv, f_srv, "server side differs: {f_log}");
    // The client's port differs between the runs; the rest must not.
    let strip = |s: &str| {
        s.lines()
            .map(|l| l.rsplit_once(' ').map_or(l, |(a, _)| a).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&k_cli), strip(&f_cli));
    assert!(
        f_cli.contains(&format!("answer True from {}", t.server_ip6)),
        "{f_cli}"
    );
    assert_eq!(counter(&f_log, "rx.frames"), n as u64, "{f_log}");
}

/// A dual-stack UDP server that sets IPV6_TCLASS and IP_TOS and echoes `n` datagrams.
const TCLASS_SERVER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x28)
s.setsockopt(socket.SOL_IP, socket.IP_TOS, 0x28)
print("tclass", s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS), flush=True)
s.bind(("::", 7720))
print("bound", flush=True)
for i in range(int(sys.argv[1])):
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
# A datagram waiting for the peer's MAC is lost if the process exits now.
time.sleep(1)
"#;

/// Sends one datagram to `host` and prints the traffic class (IPv6) or TOS (IPv4) of
/// the answer, read with IPV6_RECVTCLASS / IP_RECVTOS.
const TCLASS_CLIENT: &str = r#"
import socket, sys
host = sys.argv[1]
if ":" in host:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP, socket.IP_RECVTOS, 1)
s.settimeout(3)
s.sendto(b"mark me", (host, 7720))
d, anc, flags, a = s.recvmsg(2048, 64)
print("answer", d == b"mark me", "class", [x[2][0] for x in anc], flush=True)
"#;

/// IPV6_TCLASS and IP_TOS on the fast path: the answers over IPv6 and IPv4 carry the
/// class the app set, as the kernel's do.
#[test]
fn udp_traffic_class_matches_the_kernel() {
    let t = topo();
    let mut runs = Vec::new();
    for fast in [false, true] {
        let mut c = if fast {
            fastnet_cmd(&t, Side::Server, PY)
        } else {
            t.command(Side::Server, PY)
        };
        c.args(["-c", TCLASS_SERVER, "2"]);
        let dir = scratch("tclass");
        let mut srv = spawn(c, &dir.join("server.log"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !srv.output().contains("bound") {
            assert!(std::time::Instant::now() < deadline, "{}", srv.output());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut out = String::new();
        for host in [t.server_ip6.to_string(), t.server_ip.to_string()] {
            let o = run_ok(
                t.command(Side::Client, PY)
                    .args(["-c", TCLASS_CLIENT, &host]),
            );
            out += &String::from_utf8_lossy(&o.stdout);
        }
        let _ = srv.child.wait();
        let log = srv.output();
        if fast {
            assert!(counter(&log, "rx.frames") >= 2, "{log}");
        }
        assert!(log.contains("tclass 40"), "{log}");
        runs.push(out);
    }
    assert_eq!(runs[0], "answer True class [40]\nanswer True class [40]\n");
    assert_eq!(runs[0], runs[1], "fast path differs from the kernel");
}
