//! Loopback on the fast path (FASTNET_LOOPBACK=process): one process's sockets talk to
//! each other over 127.0.0.0/8 and its own address through its own stack; a loopback
//! port that only another program has stays the kernel's. Data is checked byte for
//! byte by the app (tests/py/loopback_app.py), the counters prove which path carried it.

use fastnet_e2e::apps::{exit_counters, scratch, spawn, Bg};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::collections::HashMap;
use std::process::{Command, Output};

const PY: &str = "/usr/bin/python3";
const APP: &str = include_str!("../py/loopback_app.py");

/// A plain (kernel) program greeting whoever connects to 127.0.0.1:<port it prints>.
const GREETER: &str = r#"
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(8)
print(l.getsockname()[1], flush=True)
while True:
    c, _ = l.accept(); c.sendall(b"hello from the kernel side\n"); c.close()
"#;

/// Starts the greeter (in `ns`, or here) and returns it with its port.
fn greeter(ns: Option<&str>, dir: &std::path::Path) -> (Bg, u16) {
    let script = dir.join("greeter.py");
    std::fs::write(&script, GREETER).unwrap();
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, PY]);
            c
        }
        None => Command::new(PY),
    };
    c.arg(&script);
    let bg = spawn(c, &dir.join("greeter.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let line = bg.output();
        if let Some(p) = line.lines().next().and_then(|l| l.trim().parse().ok()) {
            return (bg, p);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "greeter did not start: {line}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn run_app(mut c: Command, dir: &std::path::Path, args: &[String]) -> (Output, String) {
    let app = dir.join("loopback_app.py");
    std::fs::write(&app, APP).unwrap();
    c.arg(PY).arg(&app).args(args).env("FASTNET_STATS", "1");
    let out = c.output().unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{c:?}:\n{log}");
    (out, log)
}

fn get(c: &HashMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

#[test]
fn process_loopback_without_an_interface() {
    for poll in ["block", "busy"] {
        loopback_without_an_interface(poll);
    }
}

fn loopback_without_an_interface(poll: &str) {
    let dir = scratch("loopback");
    let (_g, port) = greeter(None, &dir);
    let mut c = Command::new(fastnet_bin());
    c.args(["run", "--loopback", "process", "--"])
        .env("FASTNET_POLL", poll);
    let (_, log) = run_app(c, &dir, &[port.to_string()]);
    for step in ["tcp 127.0.0.1", "tcp 127.0.0.2", "udp", "other process"] {
        assert!(log.contains(&format!("ok {step}")), "{step}:\n{log}");
    }
    let c = exit_counters(&log);
    // Two connections between the app's own sockets; the greeter's port is not ours.
    assert_eq!(get(&c, "loopback.connections"), 2, "{log}");
    assert_eq!(get(&c, "sockets.kernel.loopback"), 1, "{log}");
    // Everything the stack sent it received itself: no device, ≥ 9 MB carried.
    assert_eq!(get(&c, "loopback.frames"), get(&c, "tx.frames"), "{log}");
    assert_eq!(get(&c, "loopback.frames"), get(&c, "rx.frames"), "{log}");
    assert!(get(&c, "loopback.bytes") > 9 << 20, "{log}");
    assert_eq!(get(&c, "drop.malformed"), 0, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn process_loopback_beside_an_interface() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let dir = scratch("loopback-iface");
    let (_g, port) = greeter(Some(t.ns(Side::Server)), &dir);
    let mut c = Command::new("ip");
    c.args(["netns", "exec", t.ns(Side::Server)])
        .arg(fastnet_bin())
        .args([
            "run",
            "--iface",
            t.iface(Side::Server),
            "--loopback",
            "process",
            "--",
        ]);
    let own = t.addr(Side::Server).to_string();
    let (_, log) = run_app(c, &dir, &[port.to_string(), own]);
    assert!(log.contains("ok tcp to own address"), "{log}");
    let c = exit_counters(&log);
    // 127.0.0.1, 127.0.0.2 and the interface's own address: all three in-process.
    assert_eq!(get(&c, "loopback.connections"), 3, "{log}");
    assert_eq!(get(&c, "sockets.kernel.loopback"), 1, "{log}");
    // Nothing went out through AF_XDP: every frame sent was looped.
    assert_eq!(get(&c, "loopback.frames"), get(&c, "tx.frames"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Host mode: redis-server and redis-benchmark, two fastnet processes, talk over
/// 127.0.0.1 stack to stack through shared memory; a stock redis-cli still reaches the
/// server through the kernel, and a host-mode client of a stock server falls back to
/// the kernel. Runs in its own namespace (loopback, and the registry, are per namespace).
#[test]
fn host_loopback_between_redis_server_and_redis_benchmark() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let ns = t.ns(Side::Server).to_string();
    let dir = scratch("loopback-host");
    let port = "16380";
    let fast = |prog: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns])
            .arg(fastnet_bin())
            .args(["run", "--loopback", "host", "--", prog])
            .env("FASTNET_STATS", "1");
        c
    };
    let redis_args = [
        "--port",
        port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    let bench_args = [
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-n",
        "20000",
        "-r",
        "5000",
        "-t",
        "set,get",
        "-q",
    ];
    let mut server = fast("redis-server");
    server.args(redis_args);
    let mut srv = spawn(server, &dir.join("redis.log"));
    wait_redis(&ns, port, &mut srv);
    let mut bench = fast("redis-benchmark");
    bench.args(bench_args);
    let out = bench.output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "\n")
        + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Each test finished: its summary line (progress lines carry "rps=").
    for t in ["SET", "GET"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("{t}: ")) && !l.contains("rps=")),
            "{t}:\n{log}"
        );
    }
    let c = exit_counters(&log);
    // 50 clients (and the benchmark's config query): stack to stack, none via the kernel.
    assert!(get(&c, "loopback.host.connections") >= 50, "{log}");
    assert_eq!(get(&c, "sockets.kernel.loopback"), 0, "{log}");
    assert!(get(&c, "loopback.host.frames_out") >= 40_000, "{log}");
    // A stock client reaches the same server through the kernel: the keys are there.
    let keys = Command::new("ip")
        .args(["netns", "exec", &ns, "redis-cli", "-p", port, "dbsize"])
        .output()
        .unwrap();
    let n: u64 = String::from_utf8_lossy(&keys.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(n > 1000 && n <= 5000, "dbsize {n}");
    let slog = srv.stop();
    let s = exit_counters(&slog);
    assert!(get(&s, "loopback.host.frames_in") >= 40_000, "{slog}");

    // A stock server: the host-mode client finds no peer and uses the kernel.
    let mut plain = Command::new("ip");
    plain
        .args(["netns", "exec", &ns, "redis-server"])
        .args(redis_args);
    let mut srv = spawn(plain, &dir.join("redis-plain.log"));
    wait_redis(&ns, port, &mut srv);
    let mut bench = fast("redis-benchmark");
    bench.args(bench_args);
    let out = bench.output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "\n")
        + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let c = exit_counters(&log);
    assert!(get(&c, "sockets.kernel.loopback") >= 50, "{log}");
    assert_eq!(get(&c, "loopback.host.connections"), 0, "{log}");
    srv.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until redis answers PING on `port` in namespace `ns`.
fn wait_redis(ns: &str, port: &str, srv: &mut Bg) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "redis-cli", "-p", port, "ping"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("PONG") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis did not start: {}",
            srv.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Host mode, UDP: datagrams up to 60 KB each way between two fastnet programs, with
/// `sendto` and on a connected socket, every one through the peers' inboxes.
#[test]
fn host_loopback_udp_between_two_programs() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let ns = t.ns(Side::Server).to_string();
    let dir = scratch("loopback-host-udp");
    std::fs::write(dir.join("srv.py"), UDP_ECHO).unwrap();
    std::fs::write(dir.join("cli.py"), UDP_CLIENT).unwrap();
    let fast = |script: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns])
            .arg(fastnet_bin())
            .args(["run", "--loopback", "host", "--", PY])
            .arg(dir.join(script))
            .args(["17003", "400"])
            .env("FASTNET_STATS", "1");
        c
    };
    let mut srv = spawn(fast("srv.py"), &dir.join("srv.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !srv.output().contains("ready") {
        assert!(std::time::Instant::now() < deadline, "{}", srv.output());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = fast("cli.py").output().unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("udp client ok"), "{log}");
    let c = exit_counters(&log);
    assert_eq!(get(&c, "loopback.host.frames_out"), 400, "{log}");
    assert_eq!(get(&c, "loopback.host.frames_in"), 400, "{log}");
    let slog = srv.stop();
    assert!(slog.contains("loopback.host.frames_in=400"), "{slog}");
    let _ = std::fs::remove_dir_all(&dir);
}

const UDP_ECHO: &str = r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    m, a = u.recvfrom(65536)
    u.sendto(m[::-1], a)
"#;

const UDP_CLIENT: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(("127.0.0.1", port))
for i in range(n // 2):
    m = bytes([i % 256]) * (1 + i * 37 % 60000)
    u.sendto(m, ("127.0.0.1", port))
    assert u.recvfrom(65536)[0] == m[::-1], i
    c.send(m)
    assert c.recv(65536) == m[::-1], i
print("udp client ok", flush=True)
"#;
