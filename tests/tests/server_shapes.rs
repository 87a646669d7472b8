//! Server shapes on the fast path (issue 17): a socket created before `fork` works in
//! the process that uses it. Stock servers run under `fastnet run` in the server
//! namespace; many stock clients at once in the other check every byte that comes
//! back; the proof that the fast path carried the flows is the XDP program attached,
//! no kernel TCP connection on the port, and the family's counters (connections moved
//! to the children that served them).

use fastnet_e2e::apps::{
    assert_xdp_attached, fastnet_cmd, kernel_connections, nginx_conf, scratch, spawn,
    summed_exit_counters, wait_listening, xdp_attached, Bg,
};
use fastnet_e2e::{is_root, QueueLayout, Side, Topology, TopologyOptions};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

/// `n` clients at once, each sending `size` bytes and reading them back. Once every
/// client is connected and has its first 64 KiB back it prints "ready" and waits for
/// the file `go` (the test looks at the kernel's sockets meanwhile); at the end it
/// prints one verdict per client and "all ok" when every byte of every echo matched.
const ECHO_CLIENTS: &str = r#"
import os, socket, sys, threading, time
host, port, n, size, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
seq = len(sys.argv) > 6 and sys.argv[6] == "seq"   # one client after another
block = bytes((i * 7 + i // 251) & 255 for i in range(1 << 16))
results = [None] * n
first = threading.Barrier(1 if seq else n + 1)
def one(i):
    data = block[i:] + block[:i]
    data = data * (size // len(data))
    try:
        s = socket.create_connection((host, port), timeout=120)
        got = bytearray()
        s.sendall(data[:1 << 16])
        while len(got) < 1 << 16:
            d = s.recv(1 << 16)
            if not d: break
            got.extend(d)
        if i == 0 or not seq:
            first.wait(120)
        while not os.path.exists(go): time.sleep(0.01)
        def rd():
            while len(got) < len(data):
                d = s.recv(1 << 20)
                if not d: break
                got.extend(d)
        t = threading.Thread(target=rd); t.start()
        s.sendall(data[1 << 16:])
        t.join(120)
        s.close()
        results[i] = "ok" if bytes(got) == data else "MISMATCH %d/%d" % (len(got), len(data))
    except Exception as e:
        results[i] = "error %r" % (e,)
        try: first.abort()
        except Exception: pass
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
if seq:
    for i, t in enumerate(threads):
        t.start()
        if i == 0:
            print("ready", flush=True)
        t.join()
else:
    for t in threads: t.start()
    try:
        first.wait(120)
        print("ready", flush=True)
    except threading.BrokenBarrierError:
        print("not ready", flush=True)
    for t in threads: t.join()
print("results", results, flush=True)
print("all ok" if all(r == "ok" for r in results) else "FAILED", flush=True)
"#;

/// Runs [`ECHO_CLIENTS`] against `port`; while every client is connected, checks that
/// the kernel holds none of their connections and that the XDP program is attached.
fn echo_clients(
    t: &Topology,
    port: u16,
    n: usize,
    size: usize,
    dir: &Path,
    srv: &Bg,
    one_at_a_time: bool,
) -> String {
    let go = dir.join("go");
    let mut c = t.command(Side::Client, PY);
    c.args([
        "-c",
        ECHO_CLIENTS,
        &t.server_ip.to_string(),
        &port.to_string(),
        &n.to_string(),
        &size.to_string(),
        go.to_str().unwrap(),
        if one_at_a_time { "seq" } else { "all" },
    ]);
    let mut bg = spawn(c, &dir.join("clients.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = bg.output();
        if out.contains("ready") {
            break;
        }
        assert!(
            !out.contains("not ready") && Instant::now() < deadline,
            "clients did not connect:\n{out}\nserver:\n{}",
            srv.output()
        );
        if let Ok(Some(_)) = bg.child.try_wait() {
            panic!(
                "clients ended early:\n{}\nserver:\n{}",
                bg.output(),
                srv.output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_xdp_attached(t, Side::Server);
    assert_eq!(
        kernel_connections(t, Side::Server, port),
        0,
        "the kernel carried some of the flows"
    );
    std::fs::write(&go, "").unwrap();
    let _ = bg.child.wait();
    bg.output()
}

/// Ends `srv` with SIGTERM and returns its log (every process of the server wrote to
/// it, each its counters at exit). Children that served a connection each exit once
/// their client closed (after their linger): first waits until `children` of them
/// printed their counters (at most 20 s).
fn stop_server(srv: &mut Bg, children: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let c = summed_exit_counters(&srv.output());
        if c.get("family.joins").copied().unwrap_or(0) >= children as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    srv.stop()
}

/// Every connection moved to the child that served it: the children's counters add up
/// to `n` connections taken, the parent's to `n` handed over, and the stacks carried
/// at least `bytes` each way.
fn assert_moved_to_children(log: &str, n: u64, bytes: u64) {
    let c = summed_exit_counters(log);
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(
        get("family.moved_in"),
        n,
        "connections taken by children:\n{log}"
    );
    assert_eq!(
        get("family.moved_out"),
        n,
        "connections handed over:\n{log}"
    );
    assert_eq!(get("family.lost"), 0, "{log}");
    assert!(
        get("rx.bytes") >= bytes && get("tx.bytes") >= bytes,
        "the stacks did not carry the flows:\n{log}"
    );
    assert!(!log.contains("kernel: "), "a process fell back:\n{log}");
}

#[test]
fn socat_fork_serves_each_connection_in_its_own_child() {
    const N: usize = 20;
    const SIZE: usize = 5 << 20;
    let t = topo();
    let dir = scratch("socat-fork");
    let mut c = fastnet_cmd(&t, Side::Server, "socat");
    c.args(["TCP-LISTEN:7400,reuseaddr,fork", "EXEC:cat"]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7400, &mut srv);
    let out = echo_clients(&t, 7400, N, SIZE, &dir, &srv, false);
    assert!(out.contains("all ok"), "{out}\nserver:\n{}", srv.output());
    let log = stop_server(&mut srv, N);
    assert_moved_to_children(&log, N as u64, (N * SIZE) as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// inetd's shape: the forked child makes the connection its stdin and stdout and execs
/// the service (`nofork`: cat itself holds the connection, socat relays nothing). The
/// listener's process relays each connection over its tether; every byte comes back.
#[test]
fn a_service_exec_d_with_the_connection_as_stdin_and_stdout() {
    const N: usize = 20;
    const SIZE: usize = 5 << 20;
    let t = topo();
    let dir = scratch("socat-exec");
    let mut c = fastnet_cmd(&t, Side::Server, "socat");
    c.args(["TCP-LISTEN:7405,reuseaddr,fork", "EXEC:cat,nofork"]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7405, &mut srv);
    let out = echo_clients(&t, 7405, N, SIZE, &dir, &srv, false);
    assert!(out.contains("all ok"), "{out}\nserver:\n{}", srv.output());
    let log = srv.stop();
    let c = summed_exit_counters(&log);
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(get("family.relayed"), N as u64, "{log}");
    assert!(
        get("rx.bytes") >= (N * SIZE) as u64 && get("tx.bytes") >= (N * SIZE) as u64,
        "{log}"
    );
    assert!(!log.contains("kernel: "), "a process fell back:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn python_forking_and_threading_servers() {
    const N: usize = 20;
    const SIZE: usize = 5 << 20;
    let t = topo();
    for (port, mixin) in [(7401u16, "ForkingTCPServer"), (7402, "ThreadingTCPServer")] {
        let dir = scratch("py-shapes");
        let script = format!(
            r#"
import signal, socketserver, sys
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d: break
            self.request.sendall(d)
socketserver.{mixin}.allow_reuse_address = True
srv = socketserver.{mixin}(("0.0.0.0", {port}), Echo)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
srv.serve_forever()
"#
        );
        let mut c = fastnet_cmd(&t, Side::Server, PY);
        c.args(["-c", &script]);
        let mut srv = spawn(c, &dir.join("server.log"));
        wait_listening(&t, Side::Server, port, &mut srv);
        let out = echo_clients(&t, port, N, SIZE, &dir, &srv, false);
        assert!(
            out.contains("all ok"),
            "{mixin}: {out}\nserver:\n{}",
            srv.output()
        );
        let children = if mixin == "ForkingTCPServer" { N } else { 0 };
        let log = stop_server(&mut srv, children);
        if mixin == "ForkingTCPServer" {
            assert_moved_to_children(&log, N as u64, (N * SIZE) as u64);
        } else {
            let c = summed_exit_counters(&log);
            assert!(
                c.get("rx.bytes").copied().unwrap_or(0) >= (N * SIZE) as u64,
                "{log}"
            );
            assert_eq!(c.get("family.moved_in").copied().unwrap_or(0), 0, "{log}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The shim's own fds of a family (the tether of each connection that lived through a
/// fork, the mailbox) survive the app closing every fd above its own, as daemons and
/// `subprocess` do: the child that serves the connection can still fetch it.
#[test]
fn a_forked_server_closing_every_other_fd_keeps_its_connection() {
    const SIZE: usize = 2 << 20;
    let t = topo();
    let dir = scratch("closerange");
    let script = r#"
import os, socket, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 7404))
l.listen(8)
c, _ = l.accept()
pid = os.fork()
if pid == 0:
    time.sleep(0.5)   # the parent has closed its other fds by now
    n = 0
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
        n += len(d)
    c.close()
    print("echoed", n, flush=True)
    os._exit(0)
os.closerange(max(l.fileno(), c.fileno()) + 1, 1 << 20)
c.close()
os.waitpid(pid, 0)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7404, &mut srv);
    let out = echo_clients(&t, 7404, 1, SIZE, &dir, &srv, false);
    assert!(out.contains("all ok"), "{out}\nserver:\n{}", srv.output());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !srv.output().contains("counters:") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = srv.stop();
    assert!(log.contains(&format!("echoed {SIZE}")), "{log}");
    let c = summed_exit_counters(&log);
    assert!(
        c.get("rx.bytes").copied().unwrap_or(0) >= SIZE as u64,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prefork_children_accept_on_one_inherited_listener() {
    const CHILDREN: usize = 2;
    const N: usize = 40;
    const SIZE: usize = 256 << 10;
    let t = topo();
    let dir = scratch("prefork");
    let bin = fastnet_e2e::shim::compile_c("prefork_echo", "prefork_echo", &dir, &[]);
    let mut c = fastnet_cmd(&t, Side::Server, bin.to_str().unwrap());
    c.args(["7403", &CHILDREN.to_string()]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7403, &mut srv);
    let out = echo_clients(&t, 7403, N, SIZE, &dir, &srv, true);
    assert!(out.contains("all ok"), "{out}\nserver:\n{}", srv.output());
    // The children print their counters when the parent's SIGTERM ends them.
    let log = stop_server(&mut srv, 0);
    let c = summed_exit_counters(&log);
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    // Each child listens in its own stack and took a share of the connections.
    assert_eq!(get("family.joins"), CHILDREN as u64, "{log}");
    assert_eq!(get("family.listeners"), CHILDREN as u64, "{log}");
    let mut served = Vec::new();
    for line in log.lines().filter(|l| l.contains(" echoed ")) {
        let pid = line.split_whitespace().nth(1).unwrap().to_string();
        if !served.contains(&pid) {
            served.push(pid);
        }
    }
    assert_eq!(
        log.lines().filter(|l| l.contains(" echoed ")).count(),
        N,
        "connections served:\n{log}"
    );
    assert_eq!(
        served.len(),
        CHILDREN,
        "every child took connections:\n{log}"
    );
    assert!(get("rx.bytes") >= (N * SIZE) as u64, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The counters each process printed at exit, by PID (`fastnet[PID]: counters: ...`).
fn counters_by_pid(log: &str) -> HashMap<u32, HashMap<String, u64>> {
    let mut out = HashMap::new();
    for line in log.lines().filter(|l| l.contains("counters:")) {
        let Some(pid) = line
            .strip_prefix("fastnet[")
            .and_then(|r| r.split(']').next())
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let m: HashMap<String, u64> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        out.insert(pid, m);
    }
    out
}

/// The children of `pid` (nginx's workers).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits (20 s at most) until `pid` has `n` children (nginx's master forks its workers
/// after its listener is up, so they may not exist yet when the port answers).
fn wait_for_children(pid: u32, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = children(pid);
        if now.len() == n {
            return now;
        }
        assert!(Instant::now() < deadline, "{n} children wanted: {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (20 s at most) until `need` of the processes in `pids` listen in their
/// family's listener group (their counters segments show `family.listeners`).
fn wait_until_listening_in_group(pids: &[u32], need: usize, srv: &Bg) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let joined = pids
            .iter()
            .filter(|&&pid| {
                fastnet_stats::StatsSegment::open(&fastnet_stats::segment_path(pid))
                    .is_ok_and(|s| s.get(fastnet_stats::Counter::FamilyListeners) > 0)
            })
            .count();
        if joined >= need {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers {pids:?} never joined the listener's group:\n{}",
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An nginx configuration with `workers` worker processes (as `nobody`).
fn nginx_workers_conf(dir: &Path, port: u16, workers: &str) -> std::path::PathBuf {
    let conf = nginx_conf(dir, port);
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("worker_processes 1;"));
    std::fs::write(
        &conf,
        text.replace(
            "worker_processes 1;",
            &format!("worker_processes {workers};"),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("www/index.html"), "hello from a worker\n").unwrap();
    conf
}

fn wrk_bg(t: &Topology, args: &[&str], url: &str, log: &Path) -> Bg {
    let mut c = t.command(Side::Client, "wrk");
    c.args(args).arg(url);
    spawn(c, log)
}

/// wrk's report, after it ended: no socket error, no bad status, some requests.
/// The sum of wrk's "Socket errors" line (0 without one).
fn wrk_socket_errors(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |l| {
            l.split(',')
                .filter_map(|f| f.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
}

/// wrk's count of requests ("N requests in ...").
fn wrk_requests(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

fn assert_wrk_clean(out: &str) {
    assert!(
        !out.contains("Socket errors"),
        "wrk saw socket errors:\n{out}"
    );
    assert!(!out.contains("Non-2xx"), "wrk saw bad responses:\n{out}");
    assert!(out.contains("requests in"), "wrk did not finish:\n{out}");
}

fn two_queues() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions {
        queues: QueueLayout::Fixed(2),
        ..TopologyOptions::for_tests()
    })
    .expect("topology")
}

#[test]
fn nginx_two_workers_and_auto_share_one_listener() {
    let t = two_queues();
    // `reuseport` makes the master open one listening socket per worker, each worker
    // accepting on its own. With `accept_mutex on` (off by default) only the worker
    // holding the mutex watches the listener: the other is out of the listener group
    // meanwhile, and what it queued goes to the group.
    for (workers, variant) in [
        ("2", ""),
        ("auto", ""),
        ("2", "reuseport"),
        ("2", "accept_mutex on"),
    ] {
        let dir = scratch("nginx-workers");
        let conf = nginx_workers_conf(&dir, 8090, workers);
        let text = std::fs::read_to_string(&conf).unwrap();
        let text = match variant {
            "reuseport" => text.replace("listen 8090;", "listen 8090 reuseport;"),
            "accept_mutex on" => text.replace(
                "events { worker_connections 4096; }",
                "events { worker_connections 4096; accept_mutex on; }",
            ),
            _ => text,
        };
        assert!(variant.is_empty() || text.contains(variant), "{text}");
        std::fs::write(&conf, text).unwrap();
        let workers = &format!("{workers} {variant}");
        let mut c = fastnet_cmd(&t, Side::Server, "nginx");
        c.args(["-c", conf.to_str().unwrap()]);
        let mut srv = spawn(c, &dir.join("nginx.out"));
        wait_listening(&t, Side::Server, 8090, &mut srv);
        let pids = wait_for_children(srv.pid(), 2);
        // wrk opens its 32 keep-alive connections at once and keeps them: each worker
        // must be in the listener's group by then to get a share (a worker joins when
        // it first uses the listener, after nginx started it).
        // With the mutex, the worker without it never looked at the listener yet.
        let mutex = variant == "accept_mutex on";
        wait_until_listening_in_group(&pids, if mutex { 1 } else { 2 }, &srv);
        let url = format!("http://{}:8090/index.html", t.server_ip);
        // With the mutex, wrk's connections are short: the 32 keep-alive ones opened at
        // once would all be the holder's before the other worker's next try for the
        // mutex (its 500 ms accept_mutex_delay).
        let close: &[&str] = if mutex {
            &["-H", "Connection: close"]
        } else {
            &[]
        };
        let mut load = wrk_bg(
            &t,
            &[&["-t2", "-c32", "-d10s"][..], close].concat(),
            &url,
            &dir.join("wrk.log"),
        );
        std::thread::sleep(Duration::from_secs(3));
        assert_xdp_attached(&t, Side::Server);
        assert_eq!(
            kernel_connections(&t, Side::Server, 8090),
            0,
            "{workers}: the kernel carried connections"
        );
        let _ = load.child.wait();
        let _ = stop_server(&mut srv, 0);
        // nginx sends its processes' stderr to its error log.
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        let wrk_out = load.output();
        // With the mutex, a few connections still wait too long or are reset (37 of
        // 50,142 requests in a loaded run, 0 to 2 in quiet ones; not found yet, see
        // DESIGN): at most 1 in 100. Before the workers left the group while they did
        // not watch the listener, one worker took nothing and the rest timed out.
        let allowed = if mutex {
            wrk_requests(&wrk_out) / 100
        } else {
            0
        };
        assert!(
            wrk_socket_errors(&wrk_out) <= allowed,
            "{workers}: wrk saw socket errors:\n{wrk_out}\nnginx:\n{log}"
        );
        assert!(
            !wrk_out.contains("Non-2xx"),
            "{workers}: bad responses:\n{wrk_out}"
        );
        assert!(
            wrk_requests(&wrk_out) > 0,
            "{workers}: wrk did not finish:\n{wrk_out}"
        );
        let by_pid = counters_by_pid(&log);
        let mut tx_queues = BTreeSet::new();
        for pid in &pids {
            let c = by_pid
                .get(pid)
                .unwrap_or_else(|| panic!("{workers}: worker {pid} printed no counters:\n{log}"));
            assert_eq!(c.get("family.joins"), Some(&1), "{log}");
            // Connections that completed before the workers joined the listener's
            // group were the master's, which handed them over (moved_in); later ones
            // each worker's own (passive_opens).
            let get = |k: &str| c.get(k).copied().unwrap_or(0);
            assert!(
                get("tcp.passive_opens") + get("family.moved_in") > 0 && get("rx.bytes") > 100_000,
                "{workers}: worker {pid} took no share of the load:\n{log}"
            );
            // Shared nothing on the packet path: the program gives each worker the new
            // connections of its own queue, the worker sends on that queue, and no
            // other process touches its rings (a stray frame of a flow the client
            // moved to the other queue may still come).
            let (frames, other, waits) = (
                get("rx.frames"),
                get("rx.other_queues"),
                get("xsk.lock_waits"),
            );
            eprintln!(
                "{workers}: worker {pid}: rx.frames={frames} rx.other_queues={other} \
                 xsk.lock_waits={waits} xsk.tx_queue={}",
                get("xsk.tx_queue")
            );
            if mutex {
                // The mutex's holder takes every queue's new connections (on Linux it
                // empties the one accept queue): no queue is a worker's own.
                continue;
            }
            assert!(
                other * 20 <= frames,
                "{workers}: worker {pid} got {other} of {frames} frames on another queue:\n{log}"
            );
            assert!(
                waits * 100 <= frames,
                "{workers}: worker {pid} waited {waits} times for a queue's lock:\n{log}"
            );
            tx_queues.insert(get("xsk.tx_queue"));
        }
        assert!(
            mutex || tx_queues.len() == 2,
            "{workers}: both workers send on one queue"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `n` clients, started before the server: each retries its connect until the port
/// answers, then sends one request (`Connection: close`) and reads to end-of-file.
/// Prints one verdict per client and "all ok" when every response is a 200 ending in
/// `body`.
const EARLY_CLIENTS: &str = r#"
import socket, sys, threading, time
host, port, n, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
results = [None] * n
def one(i):
    deadline = time.time() + 60
    while True:
        try:
            s = socket.create_connection((host, port), timeout=30)
            break
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout) as e:
            if time.time() > deadline:
                results[i] = "never connected %r" % (e,)
                return
            time.sleep(0.005)
    try:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = bytearray()
        while True:
            d = s.recv(65536)
            if not d: break
            got.extend(d)
        s.close()
        ok = got.startswith(b"HTTP/1.1 200") and got.endswith(body)
        results[i] = "ok" if ok else "bad response %r" % (bytes(got[:200]),)
    except Exception as e:
        results[i] = "error %r" % (e,)
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print("results", results, flush=True)
print("all ok" if all(r == "ok" for r in results) else "FAILED", flush=True)
"#;

/// Connections that nginx's master completes before its workers joined the listener's
/// group (clients that connect the moment the port answers) are handed to the workers
/// (`Queued`) and served: none reset, none lost. The master hands a burst of them over
/// at once, more than the kernel queues in a member's mailbox.
#[test]
fn connections_made_while_nginx_starts_are_all_served() {
    const N: usize = 40;
    let t = two_queues();
    let dir = scratch("nginx-early");
    let conf = nginx_workers_conf(&dir, 8092, "2");
    let mut c = t.command(Side::Client, PY);
    c.args([
        "-c",
        EARLY_CLIENTS,
        &t.server_ip.to_string(),
        "8092",
        &N.to_string(),
        "hello from a worker\n",
    ]);
    let mut clients = spawn(c, &dir.join("clients.log"));
    let mut c = fastnet_cmd(&t, Side::Server, "nginx");
    c.args(["-c", conf.to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("nginx.out"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while clients.child.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "clients never finished:\n{}",
            clients.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_xdp_attached(&t, Side::Server);
    let _ = stop_server(&mut srv, 0);
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let out = clients.output();
    assert!(out.contains("all ok"), "{out}\nnginx:\n{log}");
    let c = summed_exit_counters(&log);
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(get("family.lost"), 0, "{log}");
    assert_eq!(
        get("family.moved_out"),
        get("family.moved_in"),
        "every connection the master handed over was taken:\n{log}"
    );
    assert_eq!(get("tcp.resets_out"), 0, "a connection was reset:\n{log}");
    eprintln!(
        "{N} clients: {} connections handed over by the master, {} taken by the workers",
        get("family.moved_out"),
        get("family.moved_in")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nginx_reload_and_a_worker_killed_with_kill_9_under_load() {
    let t = two_queues();
    let dir = scratch("nginx-reload");
    let conf = nginx_workers_conf(&dir, 8091, "2");
    let mut c = fastnet_cmd(&t, Side::Server, "nginx");
    c.args(["-c", conf.to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("nginx.out"));
    wait_listening(&t, Side::Server, 8091, &mut srv);
    let url = format!("http://{}:8091/index.html", t.server_ip);
    let old = wait_for_children(srv.pid(), 2);

    // `nginx -s reload` (SIGHUP to the master) halfway through 8 s of load: new workers
    // join, the old ones drain and leave; wrk sees no failed request. (One request per
    // connection: with keep-alive, old workers closing idle connections race the
    // client's next request and fail a few, on the kernel too.)
    let mut load = wrk_bg(
        &t,
        &["-t2", "-c16", "-d8s", "-H", "Connection: close"],
        &url,
        &dir.join("wrk1.log"),
    );
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: SIGHUP to the nginx master this test started.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGHUP) };
    let _ = load.child.wait();
    assert_wrk_clean(&load.output());
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers = loop {
        let now = children(srv.pid());
        if now.len() == 2 && now.iter().all(|p| !old.contains(p)) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "reload: workers {now:?} (old {old:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // A worker killed with -9 while serving: the master starts another, and the
    // family goes on serving (the killed worker's own connections are lost with it).
    let mut load = wrk_bg(
        &t,
        &["-t2", "-c16", "-d6s", "--timeout", "2s"],
        &url,
        &dir.join("wrk2.log"),
    );
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: SIGKILL to a worker of the nginx this test started.
    unsafe { libc::kill(workers[0] as i32, libc::SIGKILL) };
    let _ = load.child.wait();
    assert!(load.output().contains("requests in"), "{}", load.output());
    let deadline = Instant::now() + Duration::from_secs(10);
    while children(srv.pid()).len() != 2 || children(srv.pid()).contains(&workers[0]) {
        assert!(Instant::now() < deadline, "{:?}", children(srv.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut load = wrk_bg(&t, &["-t2", "-c16", "-d3s"], &url, &dir.join("wrk3.log"));
    let _ = load.child.wait();
    assert_wrk_clean(&load.output());

    // Nothing leaks: once nginx is gone the XDP program is too, and a kernel server
    // gets the port.
    let _ = stop_server(&mut srv, 0);
    assert!(
        !xdp_attached(&t, Side::Server),
        "the XDP program outlived nginx"
    );
    let mut k = t.command(Side::Server, "socat");
    k.args(["-u", "SYSTEM:echo kernel", "TCP-LISTEN:8091,reuseaddr"]);
    let mut kernel_srv = spawn(k, &dir.join("kernel.log"));
    wait_listening(&t, Side::Server, 8091, &mut kernel_srv);
    let got = t
        .command(Side::Client, "curl")
        .args(["-sS", "-m", "5", &format!("telnet://{}:8091", t.server_ip)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "kernel\n");
    let _ = kernel_srv.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kernel peer in the client namespace for [`a_forked_child_s_own_sockets`]: a UDP echo,
/// TCP sinks on two ports that check every byte of each connection (2 on the first
/// port, 1 on the second), and a client of the child's new listener (tried until it
/// listens) that sends 1 MiB and checks the echo.
const CHILD_SOCKETS_PEER: &str = r#"
import socket, sys, threading, time
server_ip, sink_port, sink2_port, listen_port, udp_port = sys.argv[1], *map(int, sys.argv[2:6])
data = bytes((i * 7 + i // 251) & 255 for i in range(1 << 20))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", udp_port))
def echo():
    while True:
        d, a = u.recvfrom(2048)
        u.sendto(d, a)
threading.Thread(target=echo, daemon=True).start()
def listener(port):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", port))
    l.listen(4)
    l.settimeout(120)
    return l
l, l2 = listener(sink_port), listener(sink2_port)
print("peer ready", flush=True)
def sink(c, a):
    got = bytearray()
    while True:
        d = c.recv(1 << 16)
        if not d: break
        got.extend(d)
    print("sink got %d bytes from %s:%d %s" % (len(got), a[0], a[1], "exact" if bytes(got) == data else "MISMATCH"), flush=True)
def client():
    deadline = time.time() + 60
    while True:
        try:
            s = socket.create_connection((server_ip, listen_port), timeout=60)
            break
        except OSError as e:
            if time.time() > deadline: raise
            time.sleep(0.05)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    back = bytearray()
    while True:
        d = s.recv(1 << 16)
        if not d: break
        back.extend(d)
    print("echo got %d bytes %s" % (len(back), "exact" if bytes(back) == data else "MISMATCH"), flush=True)
threads = [threading.Thread(target=client)]
threads[0].start()
for lst in [l, l, l2]:
    t = threading.Thread(target=sink, args=lst.accept())
    t.start()
    threads.append(t)
for t in threads: t.join()
"#;

/// A kernel listener on port argv[1] that accepts one connection and prints what came.
const KERNEL_ACCEPTS_ONE: &str = r#"
import socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(1)
l.settimeout(30)
print("up", flush=True)
c, _ = l.accept()
c.settimeout(10)
print("kernel accepted", c.recv(100), flush=True)
"#;

/// A process that started the fast path forks; the child makes sockets of its own: a
/// UDP socket, a connection out, a listener on a fresh port, and a connection out from
/// the port of a connection the founder holds (both bound with SO_REUSEADDR). Their
/// frames must come to the child's stack (the XDP port map names the child's slot for
/// the ports it claimed, the flow map the child for its connection on the founder's
/// port), not to the founder's, which knows none of them and would reset them.
#[test]
fn a_forked_child_s_own_sockets() {
    const SINK: u16 = 7405;
    const SINK2: u16 = 7408;
    const LISTEN: u16 = 7406;
    const UDP: u16 = 7407;
    const SIZE: u64 = 1 << 20;
    let t = topo();
    let dir = scratch("child-sockets");
    let go = dir.join("go");
    let mut p = t.command(Side::Client, PY);
    p.args([
        "-c",
        CHILD_SOCKETS_PEER,
        &t.server_ip.to_string(),
        &SINK.to_string(),
        &SINK2.to_string(),
        &LISTEN.to_string(),
        &UDP.to_string(),
    ]);
    let mut peer = spawn(p, &dir.join("peer.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peer.output().contains("peer ready") {
        assert!(Instant::now() < deadline, "peer:\n{}", peer.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = format!(
        r#"
import os, socket, time
peer, go = "{peer}", "{go}"
data = bytes((i * 7 + i // 251) & 255 for i in range(1 << 20))
shared = socket.socket()   # the founder starts the fast path
shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
shared.bind(("0.0.0.0", 0))
shared.connect((peer, {SINK}))
shared.sendall(data)
port = shared.getsockname()[1]
print("founder port", port, flush=True)
pid = os.fork()
if pid == 0:
    print("child", os.getpid(), flush=True)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(20)
    u.sendto(b"a datagram of the child", (peer, {UDP}))
    d, a = u.recvfrom(2048)
    print("udp echo", d.decode(), flush=True)
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", {LISTEN}))
    l.listen(4)
    c = socket.socket()
    c.settimeout(60)
    c.connect((peer, {SINK}))
    c.sendall(data)
    c2 = socket.socket()
    c2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c2.bind(("0.0.0.0", port))
    c2.settimeout(60)
    c2.connect((peer, {SINK2}))
    c2.sendall(data)
    print("sent", flush=True)
    while not os.path.exists(go): time.sleep(0.01)
    c.close()
    c2.close()
    l.settimeout(60)
    s, _ = l.accept()
    n = 0
    while True:
        d = s.recv(1 << 16)
        if not d: break
        s.sendall(d)
        n += len(d)
    s.close()
    print("echoed", n, flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
shared.close()
print("child status", status, flush=True)
while not os.path.exists(go + ".done"): time.sleep(0.01)
"#,
        peer = t.client_ip,
        go = go.display(),
    );
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &script]).env("FASTNET_LOG", "debug");
    let mut srv = spawn(c, &dir.join("server.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !srv.output().contains("\nsent\n") {
        assert!(
            Instant::now() < deadline && !srv.output().contains("Traceback"),
            "the child's connections out did not carry their bytes:\n{}\npeer:\n{}",
            srv.output(),
            peer.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // While the connections are up: the peer has them, the server's kernel does not.
    assert_xdp_attached(&t, Side::Server);
    let ss = |side| {
        let out = t.command(side, "ss").args(["-tan"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        (
            kernel_connections(&t, Side::Client, SINK),
            kernel_connections(&t, Side::Client, SINK2)
        ),
        (2, 1),
        "the peer's connections:\n{}\nserver:\n{}\npeer:\n{}",
        ss(Side::Client),
        srv.output(),
        peer.output()
    );
    assert_eq!(
        (
            kernel_connections(&t, Side::Server, SINK),
            kernel_connections(&t, Side::Server, SINK2)
        ),
        (0, 0),
        "the kernel carried the child's connections:\n{}",
        ss(Side::Server)
    );
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !srv.output().contains("child status") {
        assert!(Instant::now() < deadline, "{}", srv.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = peer.child.wait();
    let peer_out = peer.output();
    // The child's ports went back to the kernel with it, while the founder (and the
    // XDP program) live on: a kernel listener on its listener's port gets a connection.
    let mut k = t.command(Side::Server, PY);
    k.args(["-c", KERNEL_ACCEPTS_ONE, &LISTEN.to_string()]);
    let mut kernel = spawn(k, &dir.join("kernel.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kernel.output().contains("up") {
        assert!(Instant::now() < deadline, "{}", kernel.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = format!(
        "import socket; socket.create_connection(('{}', {LISTEN}), timeout=10).sendall(b'after the child')",
        t.server_ip
    );
    let out = t
        .command(Side::Client, PY)
        .args(["-c", &connect])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = kernel.child.wait();
    assert!(
        kernel
            .output()
            .contains("kernel accepted b'after the child'"),
        "{}",
        kernel.output()
    );
    assert_xdp_attached(&t, Side::Server);
    std::fs::write(dir.join("go.done"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !srv.output().contains("counters:") || srv.child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "{}", srv.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = srv.output();
    let port: u16 = log
        .lines()
        .find_map(|l| l.strip_prefix("founder port ")?.trim().parse().ok())
        .expect("founder's port");
    let from_port = format!("sink got {SIZE} bytes from {}:{port} exact", t.server_ip);
    let exact = format!("sink got {SIZE} bytes from {}:", t.server_ip);
    assert_eq!(
        (
            peer_out.matches(&exact).count(),
            peer_out.matches(&from_port).count(),
            peer_out
                .matches(&format!("echo got {SIZE} bytes exact"))
                .count(),
        ),
        (3, 2, 1),
        "peer:\n{peer_out}\nserver:\n{log}"
    );
    assert!(!peer_out.contains("MISMATCH"), "{peer_out}");
    assert!(log.contains("udp echo a datagram of the child"), "{log}");
    assert!(log.contains(&format!("echoed {SIZE}")), "{log}");
    assert!(log.contains("child status 0"), "{log}");
    // The child's own stack carried them.
    let child: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("child ")?.trim().parse().ok())
        .expect("child pid");
    let by_pid = counters_by_pid(&log);
    let cc = by_pid
        .get(&child)
        .unwrap_or_else(|| panic!("no counters of the child {child}:\n{log}"));
    let get = |k: &str| cc.get(k).copied().unwrap_or(0);
    assert_eq!(get("family.joins"), 1, "{log}");
    assert!(get("tx.bytes") >= 3 * SIZE, "{log}");
    assert!(get("rx.bytes") >= SIZE, "{log}");
    assert!(!log.contains("kernel: "), "a socket fell back:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two SO_REUSEPORT listeners on one port in one process (a server with a listener
/// per thread, or nginx's master before fork): the second is another fd of the
/// stack's listener, so connections reach the app through either; closing the first
/// leaves the second listening on the fast path. (One accept queue: both fds are
/// readable for one connection, where Linux queues it on one socket; the listeners are
/// nonblocking, as an event loop's are.)
#[test]
fn two_reuseport_listeners_in_one_process_serve_and_survive_each_other() {
    let t = topo();
    let dir = scratch("reuseport-twins");
    let server = r#"
import selectors, socket
def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", 7404)); s.listen(16); s.setblocking(False)
    return s
a, b = listener(), listener()
def serve(c):
    c.sendall(c.recv(100)); c.close()
sel = selectors.DefaultSelector()
sel.register(a, selectors.EVENT_READ); sel.register(b, selectors.EVENT_READ)
served = 0
while served < 5:
    for key, _ in sel.select(10):
        try:
            c, _ = key.fileobj.accept()
        except BlockingIOError:
            continue
        c.setblocking(True); serve(c); served += 1
sel.close(); a.close(); b.setblocking(True)
print("first closed", flush=True)
for _ in range(5):
    c, _ = b.accept(); serve(c)
print("served 10", flush=True)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", server]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7404, &mut srv);
    let client = format!(
        r#"
import socket, time
for i in range(10):
    s = socket.create_connection(("{ip}", 7404), timeout=10)
    s.sendall(b"hello %d" % i)
    got = s.recv(100)
    assert got == b"hello %d" % i, got
    s.close()
    time.sleep(0.05)
print("all echoed", flush=True)
"#,
        ip = t.server_ip
    );
    let out = t
        .command(Side::Client, PY)
        .args(["-c", &client])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("all echoed"),
        "{text}{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        srv.output()
    );
    // It ends by itself once it served all ten (and prints its counters then).
    let log = srv.wait_exit(Duration::from_secs(20));
    assert!(log.contains("served 10"), "{log}");
    let c = summed_exit_counters(&log);
    assert_eq!(c.get("tcp.passive_opens"), Some(&10), "{log}");
    assert_eq!(kernel_connections(&t, Side::Server, 7404), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
