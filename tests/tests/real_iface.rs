//! The fast path starts on the interface a user brings (issue 16): a veth made with the
//! kernel's defaults (queues allocated for every CPU, one in use), a NIC-like interface
//! with fewer queues in use than allocated (`ethtool -L`), and `fastnet netns`'s own.
//! Stock servers under `fastnet run --iface` serve byte for byte, and each test proves
//! the fast path carried the flow (XDP attached, the stack's counters, no kernel
//! connection). Where the fast path cannot start, `fastnet run` says why and exits
//! non-zero unless told to fall back.

use fastnet_e2e::apps::{
    assert_fast_path_counters, assert_xdp_attached, exit_counters, fastnet_cmd, fastnet_redis,
    kernel_connections, link_details, nginx_conf, random_file, scratch, sha256_file, spawn,
    wait_listening,
};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, run_ok, QueueLayout, Side, Topology, TopologyOptions};
use std::process::Command;
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";

const LAYOUTS: [QueueLayout; 3] = [
    QueueLayout::KernelDefault,
    QueueLayout::Partial {
        allocated: 4,
        in_use: 2,
    },
    QueueLayout::Fixed(1),
];

fn topo(queues: QueueLayout) -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions {
        queues,
        ..Default::default()
    })
    .expect("topology")
}

/// Queue counts as the kernel reports them (`ethtool -l`): (allocated, in use) of RX.
fn ethtool_rx(t: &Topology, side: Side) -> (u32, u32) {
    let out = run_ok(t.command(side, "ethtool").args(["-l", t.iface(side)]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rx: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("RX:"))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert_eq!(rx.len(), 2, "{text}");
    (rx[0], rx[1])
}

/// A threaded echo server: every connection gets back what it sends.
const ECHO_SERVER: &str = r#"
import signal, socket, sys, threading
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))   # exit (and print counters)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(128)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `n` clients at once from distinct source ports (spread over the queues in use by
/// the flow hash), each sending `len` bytes and checking the echo; prints "ok N".
const ECHO_CLIENTS: &str = r#"
import socket, sys, threading
host, port, n, len_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = []
def one(i):
    data = bytes((i * 31 + j * 7) & 255 for j in range(len_))
    c = socket.create_connection((host, port), timeout=30)
    got = bytearray()
    t = threading.Thread(target=lambda: c.sendall(data)); t.start()
    while len(got) < len(data):
        d = c.recv(65536)
        if not d: break
        got.extend(d)
    t.join(); c.close()
    if bytes(got) == data: ok.append(i)
    else: print("client", i, "got", len(got), "of", len(data), flush=True)
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print("ok", len(ok), flush=True)
"#;

fn echo_clients(t: &Topology, port: u16, n: usize, len: usize) -> String {
    let out = run_ok(t.command(Side::Client, PY).args([
        "-c",
        ECHO_CLIENTS,
        &t.server_ip.to_string(),
        &port.to_string(),
        &n.to_string(),
        &len.to_string(),
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_test_topologies_have_the_queue_counts_users_have() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for (layout, want) in [
        (QueueLayout::KernelDefault, (cpus, 1)),
        (
            QueueLayout::Partial {
                allocated: 4,
                in_use: 2,
            },
            (4, 2),
        ),
        (QueueLayout::Fixed(1), (1, 1)),
    ] {
        let t = topo(layout);
        assert_eq!(ethtool_rx(&t, Side::Server), want, "{layout}");
        assert_eq!(ethtool_rx(&t, Side::Client), want, "{layout}");
        // The doctor goes through the shim's own start-up and agrees.
        let out = Command::new("ip")
            .args(["netns", "exec", &t.server_ns])
            .arg(fastnet_bin())
            .args(["doctor", "--iface", &t.server_if])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{layout}: {text}");
        let in_use = format!("{} in use of {} allocated", want.1, want.0);
        assert!(text.contains(&in_use), "{layout}: {text}");
        assert!(
            text.lines().any(|l| l.starts_with("OK   fast path")),
            "{layout}: {text}"
        );
    }
}

#[test]
fn echo_server_on_every_topology() {
    for layout in LAYOUTS {
        let t = topo(layout);
        let dir = scratch("iface-echo");
        let mut c = fastnet_cmd(&t, Side::Server, PY);
        c.args(["-c", ECHO_SERVER, "7300"]);
        let mut srv = spawn(c, &dir.join("server.log"));
        wait_listening(&t, Side::Server, 7300, &mut srv);
        assert_xdp_attached(&t, Side::Server);
        let out = echo_clients(&t, 7300, 16, 256 << 10);
        assert!(out.contains("ok 16"), "{layout}: {out}\n{}", srv.output());
        assert_eq!(kernel_connections(&t, Side::Server, 7300), 0);
        let log = srv.stop_with(libc::SIGTERM);
        assert_fast_path_counters(&log, 16 * (256 << 10), layout.in_use() as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn redis_on_every_topology() {
    for layout in LAYOUTS {
        let t = topo(layout);
        let dir = scratch("iface-redis");
        let mut c = fastnet_redis(&t, Side::Server, 6391);
        c.args(["--dir", dir.to_str().unwrap()]);
        let mut srv = spawn(c, &dir.join("server.log"));
        wait_listening(&t, Side::Server, 6391, &mut srv);
        assert_xdp_attached(&t, Side::Server);
        let host = t.server_ip.to_string();
        // A 1 MB value in and out, byte for byte.
        let value = dir.join("value");
        random_file(&value, 1 << 20, 16);
        let hex: String = std::fs::read(&value)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(&value, &hex).unwrap();
        let set = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ip netns exec {} redis-cli -h {host} -p 6391 -x SET big < {}",
                t.client_ns,
                value.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
        let get = run_ok(
            t.command(Side::Client, "redis-cli")
                .args(["-h", &host, "-p", "6391", "--raw", "GET", "big"]),
        );
        assert_eq!(String::from_utf8_lossy(&get.stdout).trim_end(), hex);
        // 16 clients at once (spread over the queues in use).
        let bench = run_ok(t.command(Side::Client, "redis-benchmark").args([
            "-h", &host, "-p", "6391", "-c", "16", "-n", "4000", "-t", "set,get", "-q",
        ]));
        let text = String::from_utf8_lossy(&bench.stdout).into_owned()
            + &String::from_utf8_lossy(&bench.stderr);
        assert!(
            text.contains("SET:") && text.contains("GET:") && !text.contains("rror"),
            "{layout}: {text}"
        );
        let keys = run_ok(
            t.command(Side::Client, "redis-cli")
                .args(["-h", &host, "-p", "6391", "DBSIZE"]),
        );
        assert_eq!(String::from_utf8_lossy(&keys.stdout).trim(), "2");
        assert_eq!(kernel_connections(&t, Side::Server, 6391), 0);
        let log = srv.stop_with(libc::SIGTERM);
        assert_fast_path_counters(&log, 2 << 20, layout.in_use() as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn nginx_on_every_topology() {
    for layout in LAYOUTS {
        let t = topo(layout);
        let dir = scratch("iface-nginx");
        let conf = nginx_conf(&dir, 8081);
        let file = dir.join("www/file.bin");
        random_file(&file, 1 << 20, 17);
        let want = sha256_file(&file);
        let mut c = fastnet_cmd(&t, Side::Server, "nginx");
        // nginx points its workers' stderr at its error log: the shim logs to a file.
        let shim_log = dir.join("fastnet.log");
        c.args(["-c", conf.to_str().unwrap()])
            .env("FASTNET_LOG_FILE", &shim_log);
        let mut srv = spawn(c, &dir.join("server.log"));
        wait_listening(&t, Side::Server, 8081, &mut srv);
        assert_xdp_attached(&t, Side::Server);
        // 12 downloads at once, each on its own connection.
        let got = dir.join("got");
        std::fs::create_dir_all(&got).unwrap();
        let url = format!("http://{}:8081/file.bin", t.server_ip);
        let mut script = String::new();
        for i in 0..12 {
            script.push_str(&format!(
                "curl -sS --fail -o {}/{i} {url} & ",
                got.display()
            ));
        }
        script.push_str("wait");
        run_ok(t.command(Side::Client, "sh").args(["-c", &script]));
        for i in 0..12 {
            assert_eq!(sha256_file(&got.join(i.to_string())), want, "{layout} #{i}");
        }
        let out = srv.stop_with(libc::SIGQUIT);
        // nginx's worker drives the fast path and prints the counters at its exit.
        let log = std::fs::read_to_string(&shim_log).unwrap_or_default() + &out;
        let c = exit_counters(&log);
        assert!(
            c.get("tx.bytes").copied().unwrap_or(0) >= 12 << 20,
            "{layout}: {log}"
        );
        assert_fast_path_counters(&log, 12 * 1000, layout.in_use() as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_change_of_the_queues_in_use_is_followed() {
    // Starts with 1 queue in use of 4, then `ethtool -L` puts all 4 in use while the
    // server runs: connections hashed to the new queues must be served too.
    let t = topo(QueueLayout::Partial {
        allocated: 4,
        in_use: 1,
    });
    let dir = scratch("iface-change");
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", ECHO_SERVER, "7301"]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7301, &mut srv);
    assert!(echo_clients(&t, 7301, 4, 4096).contains("ok 4"));
    for side in [Side::Server, Side::Client] {
        run_ok(
            t.command(side, "ethtool")
                .args(["-L", t.iface(side), "rx", "4", "tx", "4"]),
        );
    }
    // The shim notices within its link check (tens of ms); wait for its log line.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !srv.output().contains("queues in use changed") {
        assert!(
            Instant::now() < deadline,
            "change not noticed:\n{}",
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = echo_clients(&t, 7301, 32, 16384);
    assert!(out.contains("ok 32"), "{out}\n{}", srv.output());
    let log = srv.stop_with(libc::SIGTERM);
    let counters = exit_counters(&log);
    assert_eq!(counters.get("iface.rebinds").copied(), Some(1), "{log}");
    assert_fast_path_counters(&log, 36 * 4096, 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fastnet run --iface IF [--fallback F] -- sh -c SCRIPT` in the server namespace.
fn run_in_server(
    t: &Topology,
    iface: &str,
    fallback: Option<&str>,
    script: &str,
) -> std::process::Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &t.server_ns])
        .arg(fastnet_bin())
        .args(["run", "--iface", iface]);
    if let Some(f) = fallback {
        c.arg(format!("--fallback={f}"));
    }
    c.args(["--", "sh", "-c", script])
        .env_remove("FASTNET_FALLBACK")
        .output()
        .unwrap()
}

#[test]
fn run_exits_with_the_cause_when_the_fast_path_cannot_start() {
    let t = topo(QueueLayout::KernelDefault);
    // A missing interface: exit 2 before the program starts, one line with the fix.
    let out = run_in_server(&t, "fastnet-nope0", None, "echo started");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "the program must not start");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no interface \"fastnet-nope0\"") && err.contains("--iface"),
        "{err}"
    );
    assert!(err.contains("--fallback=kernel"), "{err}");

    // An MTU XDP cannot hold.
    run_ok(
        t.command(Side::Server, "ip")
            .args(["link", "set", "dev", &t.server_if, "mtu", "9000"]),
    );
    let out = run_in_server(&t, &t.server_if, None, "echo started");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("MTU 9000") && err.contains("mtu 1500"),
        "{err}"
    );

    // With --fallback=kernel the program runs, its sockets on the kernel, and
    // `fastnet stat` says why.
    let script = format!(
        "{PY} -c 'import socket,time; s=socket.socket(); print(\"made\", flush=True); time.sleep(3)' & \
         for i in $(seq 100); do [ -e /dev/shm/fastnet-$!.stats ] && break; sleep 0.05; done; \
         {} stat $!; wait",
        fastnet_bin().display()
    );
    let out = run_in_server(&t, &t.server_if, Some("kernel"), &script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}{err}");
    assert!(text.contains("made"), "{text}");
    assert!(
        text.contains("\n  kernel: ") && text.contains("MTU 9000"),
        "{text}\n{err}"
    );
    assert!(
        err.contains("running on the kernel (--fallback=kernel)"),
        "{err}"
    );
}

#[test]
fn a_second_process_on_a_busy_interface_is_refused_with_the_owner_named() {
    let t = topo(QueueLayout::KernelDefault);
    let dir = scratch("iface-busy");
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", ECHO_SERVER, "7302"]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7302, &mut srv);
    let out = run_in_server(&t, &t.server_if, None, "echo started");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("already has XDP program") && err.contains("bpftool prog show id"),
        "{err}"
    );
    // The first server is untouched.
    assert!(echo_clients(&t, 7302, 2, 1000).contains("ok 2"));
    srv.stop_with(libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Eight `fastnet run` on one interface at once (ten `wget` started together): each
/// either starts or exits 2 naming the program that holds the interface, also when the
/// program was attached between its check and its own attach (BPF_LINK_CREATE's
/// EEXIST used to print only "File exists"); nothing is left attached afterwards.
#[test]
fn processes_starting_at_once_on_one_interface_start_or_name_the_owner() {
    let t = topo(QueueLayout::KernelDefault);
    let outs: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| run_in_server(&t, &t.server_if, None, "echo started")))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in &outs {
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => assert_eq!(text, "started\n", "{err}"),
            Some(2) => assert!(
                text.is_empty() && err.contains("already has XDP program"),
                "{text}{err}"
            ),
            _ => panic!("{:?}: {text}{err}", out.status),
        }
    }
    assert!(outs.iter().any(|o| o.status.success()), "none started");
    let link = link_details(&t, Side::Server);
    assert!(!link.contains("prog/xdp"), "left attached:\n{link}");
}

#[test]
fn a_process_whose_interface_goes_away_says_so_and_uses_the_kernel() {
    let t = topo(QueueLayout::KernelDefault);
    let dir = scratch("iface-gone");
    // Makes a socket every 100 ms (the first one starts the fast path).
    let script = r#"
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    socket.socket().close(); time.sleep(0.1)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    let srv_pid = srv.pid();
    let stat = || {
        let out = t
            .command(Side::Server, fastnet_bin().to_str().unwrap())
            .args(["stat", &srv_pid.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stat().contains("\n  fast path\n") {
        assert!(Instant::now() < deadline, "{}\n{}", stat(), srv.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    run_ok(
        t.command(Side::Server, "ip")
            .args(["link", "del", "dev", &t.server_if]),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = stat();
        if text.contains(&format!("kernel: interface {} is gone", t.server_if))
            && text.contains("sockets.kernel.fallback")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{text}\n{}", srv.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = srv.stop_with(libc::SIGTERM);
    assert!(log.contains("kernel: interface"), "{log}");
    assert!(
        exit_counters(&log)
            .get("sockets.kernel.fallback")
            .copied()
            .unwrap_or(0)
            > 0,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
