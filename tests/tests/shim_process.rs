//! Real servers fork, drop privileges, run threads, take signals and get killed
//! (issue: shim process model).

use fastnet_e2e::apps::{
    assert_xdp_attached, exit_counters, fastnet_cmd, fastnet_redis, kernel_connections,
    link_details, nginx_conf, random_file, scratch, sha256_file, spawn, summed_exit_counters,
    wait_listening, Bg,
};
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

fn worker_pids(master: u32) -> Vec<(u32, String)> {
    let out = std::process::Command::new("ps")
        .args(["-o", "pid=,user=", "--ppid", &master.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.to_string()))
        })
        .collect()
}

fn wrk(t: &Topology, args: &[&str], url: &str) -> String {
    let out = run_ok(t.command(Side::Client, "wrk").args(args).arg(url));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_no_socket_errors(out: &str) {
    assert!(
        !out.contains("Socket errors"),
        "wrk saw socket errors:\n{out}"
    );
    assert!(!out.contains("Non-2xx"), "wrk saw bad responses:\n{out}");
    let reqs: u64 = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reqs > 0, "no request completed:\n{out}");
}

#[test]
fn nginx_master_and_unprivileged_worker() {
    let t = topo();
    let dir = scratch("nginx");
    let conf = nginx_conf(&dir, 8080);
    std::fs::write(dir.join("www/index.html"), "hello from nginx\n").unwrap();
    let big = dir.join("www/big.bin");
    random_file(&big, 1 << 30, 11);
    let want = sha256_file(&big);
    let mut c = fastnet_cmd(&t, Side::Server, "nginx");
    c.args(["-c", conf.to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("nginx.out"));
    wait_listening(&t, Side::Server, 8080, &mut srv);
    let url = format!("http://{}:8080/index.html", t.server_ip);

    let workers = worker_pids(srv.pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].1, "nobody", "worker runs unprivileged");

    // 30 s of load, no socket errors.
    let out = wrk(&t, &["-t1", "-c32", "-d30s"], &url);
    assert_no_socket_errors(&out);
    // The worker drives the fast path: its own counters segment.
    let seg = format!("/dev/shm/fastnet-{}.stats", workers[0].0);
    assert!(
        Path::new(&seg).exists(),
        "worker has no counters: {}",
        srv.output()
    );

    // 1000 concurrent keep-alive connections (a generous timeout: one wrk thread on a
    // shared 2-core machine is itself slow to serve 1000 sockets).
    let out = wrk(&t, &["-t1", "-c1000", "-d5s", "--timeout", "10s"], &url);
    assert_no_socket_errors(&out);

    // 1 GB byte-exact.
    let got = dir.join("got.bin");
    run_ok(t.command(Side::Client, "curl").args([
        "-sS",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{}:8080/big.bin", t.server_ip),
    ]));
    assert_eq!(sha256_file(&got), want);
    std::fs::remove_file(&got).unwrap();

    // `nginx -s quit` during a download lets it finish.
    let log = dir.join("curl.log");
    let mut dl = t.command(Side::Client, "curl");
    dl.args([
        "-sS",
        "--limit-rate",
        "200M",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{}:8080/big.bin", t.server_ip),
    ]);
    let mut dl = spawn(dl, &log);
    std::thread::sleep(Duration::from_millis(1500));
    run_ok(
        t.command(Side::Server, "nginx")
            .args(["-c", conf.to_str().unwrap(), "-s", "quit"]),
    );
    let st = dl.child.wait().unwrap();
    assert!(st.success(), "download cut by quit: {}", dl.output());
    assert_eq!(sha256_file(&got), want, "download after quit differs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "nginx did not quit: {}",
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Short connections with both sides under fastnet (issue 9: 253 conn/s; issue 16: a
/// 1 s stall whenever the client reused a port within the millisecond, and on the first
/// connection while the kernel resolved the peer). The client's port must stay steered
/// to its stack until its FIN is acknowledged (else the peer's ACK meets the kernel's
/// shadow and a RST, and the client retransmits its FIN), and a second client process
/// must get through the TIME-WAITs the first one left on the ports it reuses
/// (timestamps that keep growing from process to process, as Linux's do). Two
/// connections at a time keep the server's TIME-WAITs below its socket pool.
/// Every connection completes, none needs a retransmission on this lossless veth, and
/// the client's, the server's and nginx's counts agree. The rate is `make bench`'s
/// "nginx conn/s (Connection: close)" row.
#[test]
fn every_short_connection_completes_with_both_sides_under_fastnet() {
    const PER_ROUND: u64 = 2000;
    let t = topo();
    let dir = scratch("nginx-close");
    let conf = nginx_conf(&dir, 8080);
    let access = dir.join("access.log");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "access_log off;",
        &format!("access_log {};", access.display()),
    );
    std::fs::write(&conf, text).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello from nginx\n").unwrap();
    let mut c = fastnet_cmd(&t, Side::Server, "nginx");
    c.args(["-c", conf.to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("nginx.out"));
    wait_listening(&t, Side::Server, 8080, &mut srv);
    let url = format!("http://{}:8080/index.html", t.server_ip);
    // The worker serves once it has taken the fast path over from the master (at its
    // first socket call); the kernel's listener shows before that. Until then the
    // master's copy of the stack answers SYNs, and the worker, which never saw them,
    // resets their handshakes (see the report of issue 16): wait for one response.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut warmups = 0;
    loop {
        warmups += 1;
        let out = t
            .command(Side::Client, "curl")
            .args(["-sS", "-m", "5", &url])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "hello from nginx\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx never served: {}",
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut client_opens = 0;
    for round in 1..=2 {
        // ab speaks HTTP/1.0 without keep-alive: nginx closes each connection first.
        let out = run_ok(fastnet_cmd(&t, Side::Client, "ab").args([
            "-n",
            &PER_ROUND.to_string(),
            "-c",
            "2",
            "-s",
            "60",
            &url,
        ]));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let field = |name: &str| -> Option<u64> {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let report = format!("round {round}:\n{stdout}\n{stderr}");
        assert_eq!(field("Complete requests:"), Some(PER_ROUND), "{report}");
        assert_eq!(field("Failed requests:"), Some(0), "{report}");
        assert!(!stdout.contains("Non-2xx"), "{report}");
        let client = exit_counters(&stderr);
        let get = |k: &str| client.get(k).copied().unwrap_or(0);
        // Every request had a connection of the client stack's (ab may open one more
        // that it closes unused), none needed sending twice or ended in a reset.
        assert!(get("tcp.active_opens") >= PER_ROUND, "{report}");
        client_opens += get("tcp.active_opens");
        assert_eq!(get("tcp.retransmits"), 0, "{report}");
        assert_eq!(get("tcp.resets_in"), 0, "{report}");
        assert_eq!(get("tcp.resets_out"), 0, "{report}");
        assert_eq!(get("sockets.kernel.route"), 0, "{report}");
        assert_eq!(get("sockets.kernel.resources"), 0, "{report}");
    }
    // The server: nginx logged every request once, with 200, and its worker's stack
    // took the connections (the master's line has none). nginx points its stderr,
    // where the counters go, at its error log.
    let log = srv.stop() + &std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let server = summed_exit_counters(&log);
    let get = |k: &str| server.get(k).copied().unwrap_or(0);
    // Every connection of the clients, and of the warm-up at most its attempts.
    let passive = get("tcp.passive_opens");
    assert!(
        (client_opens..=client_opens + warmups).contains(&passive),
        "{passive} passive opens, {client_opens} client opens, {warmups} warm-ups: {log}"
    );
    assert_eq!(get("tcp.retransmits"), 0, "{log}");
    assert_eq!(get("tcp.resets_in"), 0, "{log}");
    assert_eq!(get("tcp.resets_out"), 0, "{log}");
    let lines = std::fs::read_to_string(&access).unwrap();
    assert!(lines.lines().all(|l| l.contains("\" 200 ")), "{lines}");
    assert_eq!(
        lines.lines().filter(|l| l.contains(" HTTP/1.0\" ")).count() as u64,
        2 * PER_ROUND,
        "{lines}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_bgsave_every_second_during_benchmark() {
    let t = topo();
    let dir = scratch("redis-bgsave");
    let mut c = fastnet_redis(&t, Side::Server, 6391);
    c.args(["--dir", dir.to_str().unwrap(), "--dbfilename", "dump.rdb"]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 6391, &mut srv);
    let host = t.server_ip.to_string();
    let mut bench = t.command(Side::Client, "redis-benchmark");
    bench.args([
        "-h",
        &host,
        "-p",
        "6391",
        "-c",
        "32",
        "-n",
        "200000",
        "-q",
        "-t",
        "set,get,lpush",
    ]);
    let mut bench = spawn(bench, &dir.join("bench.log"));
    let mut saves = 0;
    while bench.child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_secs(1));
        let out = run_ok(
            t.command(Side::Client, "redis-cli")
                .args(["-h", &host, "-p", "6391", "bgsave"]),
        );
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains("Background saving started") || s.contains("already in progress"),
            "{s}"
        );
        saves += 1;
    }
    let out = bench.output();
    assert!(bench.child.wait().unwrap().success(), "{out}");
    assert!(
        out.contains("GET:") && !out.to_lowercase().contains("error"),
        "{out}"
    );
    assert!(saves >= 2, "only {saves} BGSAVEs");
    // Wait for the last save, then load the file into a fresh (kernel) redis.
    std::thread::sleep(Duration::from_secs(2));
    let keys = run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &host, "-p", "6391", "dbsize"]),
    );
    let keys: u64 = String::from_utf8_lossy(&keys.stdout)
        .trim()
        .parse()
        .unwrap();
    run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &host, "-p", "6391", "save"]),
    );
    let log = srv.stop();
    assert!(!log.contains("# Background saving error"), "{log}");
    let check = dir.join("check");
    std::fs::create_dir_all(&check).unwrap();
    std::fs::copy(dir.join("dump.rdb"), check.join("dump.rdb")).unwrap();
    let mut c = t.command(Side::Server, "redis-server");
    c.args(["--port", "6392", "--save", "", "--appendonly", "no"])
        .args(["--dir", check.to_str().unwrap(), "--dbfilename", "dump.rdb"]);
    let mut plain = spawn(c, &dir.join("plain.log"));
    wait_listening(&t, Side::Server, 6392, &mut plain);
    let n = run_ok(
        t.command(Side::Server, "redis-cli")
            .args(["-p", "6392", "dbsize"]),
    );
    assert_eq!(
        String::from_utf8_lossy(&n.stdout)
            .trim()
            .parse::<u64>()
            .unwrap(),
        keys,
        "saved file loads"
    );
    drop(plain);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn threaded_http_server_with_a_sigalrm_storm() {
    // SIGALRMs every millisecond, while wrk loads the server, until this many fired.
    const TICKS: u64 = 3000;
    let t = topo();
    let dir = scratch("threads-sigalrm");
    // A sink in the client namespace counts what the handler wrote.
    let sink = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7100)); s.listen(1)
c, _ = s.accept()
data = bytearray()
while True:
    d = c.recv(65536)
    if not d: break
    data.extend(d)
# Handlers may nest (Python runs a pending handler between any two bytecodes), so
# records may be reordered, but every one must arrive exactly once and intact.
recs = data.decode().split()
ok = sorted(int(r) for r in recs) == list(range(len(recs)))
print("sink", len(recs), "ok" if ok else "CORRUPT", flush=True)
"#;
    let mut c = t.command(Side::Client, PY);
    c.args(["-c", sink]);
    let mut sink = spawn(c, &dir.join("sink.log"));
    wait_listening(&t, Side::Client, 7100, &mut sink);
    let server = format!(
        r#"
import http.server, socketserver, signal, socket, threading, time, os
out = socket.create_connection(("{client}", 7100))
out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
TICKS = {ticks}
n = [0]
def tick(sig, frame):
    i = n[0]; n[0] = i + 1
    out.sendall(b"%d\n" % i)
    if n[0] >= TICKS:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
signal.signal(signal.SIGALRM, tick)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"x" * 1000
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 7101), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
# Serve until the test says its load is over and the storm has run its course.
while not (os.path.exists(os.environ["LOAD_DONE"]) and n[0] >= TICKS):
    time.sleep(0.05)
signal.setitimer(signal.ITIMER_REAL, 0, 0)
out.close()
# A file, not stdout: the server's stderr (handlers reset by wrk's exit) shares the log.
with open(os.environ["TICKS_OUT"], "w") as f:
    f.write("%d\n" % n[0])
srv.shutdown()
"#,
        client = t.client_ip,
        ticks = TICKS,
    );
    let load_done = dir.join("load-done");
    let ticks_out = dir.join("ticks");
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &server])
        .env("LOAD_DONE", &load_done)
        .env("TICKS_OUT", &ticks_out);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7101, &mut srv);
    let out = wrk(
        &t,
        &["-t1", "-c16", "-d5s"],
        &format!("http://{}:7101/", t.server_ip),
    );
    assert_no_socket_errors(&out);
    std::fs::write(&load_done, "").unwrap();
    let st = srv.child.wait().unwrap();
    let log = srv.output();
    assert!(st.success(), "{log}");
    let ticks: u64 = std::fs::read_to_string(&ticks_out)
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tick count in {}: {log}", ticks_out.display()));
    // The handler stops the timer at TICKS; signals already on their way may add up
    // to two (one pending in the kernel, one Python has taken but not yet run).
    assert!(
        (TICKS..=TICKS + 2).contains(&ticks),
        "{ticks} ticks, the handler stops at {TICKS}"
    );
    let _ = sink.child.wait();
    let s = sink.output();
    assert!(
        s.contains(&format!("sink {ticks} ok")),
        "sink got {s}, handler sent {ticks}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Python program that accepts one connection on `port`, reads it to the end and
/// prints the byte count and SHA-256 of what it got.
fn hashing_sink(port: u16) -> String {
    format!(
        r#"
import socket, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port})); s.listen(1)
c, _ = s.accept()
h = hashlib.sha256(); n = 0
while True:
    d = c.recv(1 << 20)
    if not d: break
    h.update(d); n += len(d)
print(n, h.hexdigest(), flush=True)
"#
    )
}

/// A Python program that sends `file` to `addr`:`port` in 1 MiB writes and closes.
fn file_writer(addr: impl std::fmt::Display, port: u16, file: &Path) -> String {
    format!(
        r#"
import socket
s = socket.create_connection(("{addr}", {port}))
with open("{file}", "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b: break
        s.sendall(b)
s.close()
"#,
        file = file.display()
    )
}

#[test]
fn client_exits_right_after_close_and_the_peer_gets_everything() {
    let t = topo();
    let dir = scratch("linger");
    let mut c = t.command(Side::Client, PY);
    c.args(["-c", &hashing_sink(7200)]);
    let mut sink = spawn(c, &dir.join("sink.log"));
    wait_listening(&t, Side::Client, 7200, &mut sink);
    let file = dir.join("payload.bin");
    random_file(&file, 100 << 20, 3);
    let want = sha256_file(&file);
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &file_writer(t.client_ip, 7200, &file)]);
    let mut w = spawn(c, &dir.join("writer.log"));
    let st = w.child.wait().unwrap();
    assert!(st.success(), "{}", w.output());
    let _ = sink.child.wait();
    let got = sink.output();
    assert_eq!(
        got.trim(),
        format!("{} {}", 100 << 20, want),
        "writer log: {}",
        w.output()
    );
    assert!(
        exit_counters(&w.output())
            .get("tx.bytes")
            .copied()
            .unwrap_or(0)
            >= 100 << 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// FASTNET_XDP_MODE=generic attaches the program in the skb path on both ends (where
/// veth would take it natively) and a bulk transfer between two fastnet processes
/// arrives whole, through AF_XDP on both.
#[test]
fn generic_xdp_mode_carries_a_bulk_transfer_between_two_fastnet_ends() {
    let t = topo();
    let dir = scratch("xdp-generic");
    let mut c = fastnet_cmd(&t, Side::Client, PY);
    c.args(["-c", &hashing_sink(7201)])
        .env("FASTNET_XDP_MODE", "generic");
    let mut sink = spawn(c, &dir.join("sink.log"));
    wait_listening(&t, Side::Client, 7201, &mut sink);
    let client_link = link_details(&t, Side::Client);
    assert!(
        client_link.contains("xdpgeneric") && client_link.contains("name fastnet_steer"),
        "not attached in the generic path:\n{client_link}"
    );
    let file = dir.join("payload.bin");
    random_file(&file, 64 << 20, 5);
    let want = sha256_file(&file);
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &file_writer(t.client_ip, 7201, &file)])
        .env("FASTNET_XDP_MODE", "generic");
    let mut w = spawn(c, &dir.join("writer.log"));
    let st = w.child.wait().unwrap();
    assert!(st.success(), "{}", w.output());
    let st = sink.child.wait().unwrap();
    assert!(st.success(), "{}", sink.output());
    let got = sink.output();
    assert!(
        got.lines()
            .any(|l| l.trim() == format!("{} {}", 64 << 20, want)),
        "sink: {got}\nwriter: {}",
        w.output()
    );
    let tx = exit_counters(&w.output());
    assert!(
        tx.get("tx.bytes").copied().unwrap_or(0) >= 64 << 20,
        "{}",
        w.output()
    );
    let rx = exit_counters(&got);
    assert!(
        rx.get("rx.bytes").copied().unwrap_or(0) >= 64 << 20,
        "{got}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A program that exits with connections still open (`wrk -d` does) closes them the
/// way the kernel closes a process's sockets at exit: a FIN on each. Before, a peer
/// that had closed first stayed in FIN-WAIT-2, and the next client process that got
/// the same port met it with a challenge ACK, a RST and a 1 s SYN retransmission; a
/// peer that had not closed never saw the end of the stream.
#[test]
fn connections_left_open_at_exit_are_closed_like_the_kernel_does() {
    let t = topo();
    let dir = scratch("exit-open");
    // A stock server: connection 1 gets "bye" and the server's FIN at once, connection
    // 2 is left to the client and reports when its stream ends.
    let server = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7210)); s.listen(2)
a, _ = s.accept(); a.sendall(b"bye"); a.close()
b, _ = s.accept()
print("second:", b.recv(100) == b"" and "eof", flush=True)
"#;
    let mut c = t.command(Side::Server, PY);
    c.args(["-c", server]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7210, &mut srv);
    // libc's exit() runs the atexit handlers (fastnet's among them) but not Python's
    // finalisation, which would close the sockets itself.
    let client = format!(
        r#"
import socket, ctypes
a = socket.create_connection(("{server}", 7210))
got = b""
while True:
    d = a.recv(100)
    if not d: break
    got += d
assert got == b"bye", got
b = socket.create_connection(("{server}", 7210))
print("exiting", flush=True)
ctypes.CDLL(None).exit(0)
"#,
        server = t.server_ip
    );
    let out = run_ok(fastnet_cmd(&t, Side::Client, PY).args(["-c", &client]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exiting\n",
        "{stderr}"
    );
    let counters = exit_counters(&stderr);
    assert_eq!(counters.get("tcp.active_opens"), Some(&2), "{stderr}");
    // The client's FINs were acknowledged before it exited: the server's kernel holds
    // connection 1 in TIME-WAIT (it got the FIN it waited for), none in FIN-WAIT-2.
    let states = run_ok(
        t.command(Side::Server, "ss")
            .args(["-Htan", "sport = :7210"]),
    );
    let states = String::from_utf8_lossy(&states.stdout).into_owned();
    assert!(!states.contains("FIN-WAIT-2"), "{states}");
    assert!(states.contains("TIME-WAIT"), "{states}");
    // Connection 2's stream ended with a FIN.
    let st = srv.child.wait().unwrap();
    assert!(st.success(), "{}", srv.output());
    assert_eq!(srv.output(), "second: eof\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_with_a_forked_child_alive_gives_the_port_back() {
    let t = topo();
    let dir = scratch("kill9");
    // A server that forks a child which closes the inherited listener (as redis's
    // BGSAVE child does) and lives on; then the parent is killed with SIGKILL.
    let server = r#"
import socket, os, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7300)); s.listen(8)
c, _ = s.accept(); c.sendall(b"fast\n"); c.close()
pid = os.fork()
if pid == 0:
    s.close()
    time.sleep(30)
    os._exit(0)
print("child", pid, flush=True)
time.sleep(30)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", server]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7300, &mut srv);
    let out = run_ok(t.command(Side::Client, "curl").args([
        "-sS",
        "-m",
        "5",
        &format!("telnet://{}:7300", t.server_ip),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fast\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let child: u32 = loop {
        if let Some(p) = srv
            .output()
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .and_then(|p| p.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no child: {}", srv.output());
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: SIGKILL to the server we started.
    unsafe { libc::kill(srv.pid() as i32, libc::SIGKILL) };
    let _ = srv.child.wait();
    // The child still lives, and it holds no XDP link: the program went with the
    // process that attached it (the kernel detaches a BPF link when its last fd closes).
    assert!(
        Path::new(&format!("/proc/{child}")).exists(),
        "child died too"
    );
    let out = run_ok(
        t.command(Side::Server, "ip")
            .args(["link", "show", t.iface(Side::Server)]),
    );
    let xdp_left = String::from_utf8_lossy(&out.stdout).contains("xdp");
    // A kernel server on the port answers the first connection: nothing black-holes it.
    let mut k = t.command(Side::Server, "socat");
    k.args(["-u", "SYSTEM:echo kernel", "TCP-LISTEN:7300,reuseaddr,fork"]);
    let mut kernel_srv: Bg = spawn(k, &dir.join("kernel.log"));
    wait_listening(&t, Side::Server, 7300, &mut kernel_srv);
    let out = t
        .command(Side::Client, "curl")
        .args(["-sS", "-m", "10", &format!("telnet://{}:7300", t.server_ip)])
        .output()
        .unwrap();
    // SAFETY: SIGKILL to the forked child of the server we started.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    assert!(!xdp_left, "XDP program left behind after kill -9");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kernel\n",
        "port black-holed after kill -9: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Context switches so far of `pid`'s thread named `comm`.
fn thread_switches(pid: u32, comm: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if name.trim() != comm {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        return status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
    }
    panic!("{pid} has no thread {comm}");
}

/// An idle fastnet process costs nothing (issue 23): with 100 open connections and no
/// timer due, its background driver sleeps until a frame comes (it used to wake every
/// millisecond), and the next request is served at once.
#[test]
fn an_idle_server_with_open_connections_never_wakes_its_driver() {
    let t = topo();
    let dir = scratch("idle");
    let mut srv = spawn(
        fastnet_redis(&t, Side::Server, 7601),
        &dir.join("redis.log"),
    );
    wait_listening(&t, Side::Server, 7601, &mut srv);
    let hold = "import socket, sys, time
ss = [socket.create_connection((sys.argv[1], 7601)) for i in range(100)]
for s in ss:
    s.sendall(b'PING\\r\\n')
    assert s.recv(100) == b'+PONG\\r\\n'
print('open', flush=True)
time.sleep(60)
";
    let mut c = t.command(Side::Client, PY);
    c.args(["-c", hold, &t.server_ip.to_string()]);
    let mut clients = spawn(c, &dir.join("clients.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !clients.output().contains("open") {
        assert!(
            Instant::now() < deadline,
            "clients: {}\nserver: {}",
            clients.output(),
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_xdp_attached(&t, Side::Server);
    assert_eq!(kernel_connections(&t, Side::Server, 7601), 0);
    // The last ACKs and their timers settle first.
    std::thread::sleep(Duration::from_secs(1));
    let before = thread_switches(srv.pid(), "fastnet-driver");
    std::thread::sleep(Duration::from_secs(2));
    let woke = thread_switches(srv.pid(), "fastnet-driver") - before;
    assert!(woke <= 2, "the idle driver woke {woke} times in 2 s");
    // Asleep, it still answers the next request.
    let ask = "import socket, sys
s = socket.create_connection((sys.argv[1], 7601), timeout=5)
s.sendall(b'PING\\r\\n')
print(s.recv(100))";
    let out = t
        .command(Side::Client, PY)
        .args(["-c", ask, &t.server_ip.to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("+PONG"),
        "{out:?}"
    );
    clients.stop();
    let log = srv.stop();
    let c = exit_counters(&log);
    assert!(
        c.get("tcp.passive_opens").copied().unwrap_or(0) >= 101,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A wrapper that opens sockets of other families before it starts the real server
/// (a shell without HOME looks the user up: glibc opens AF_UNIX sockets to nscd and to
/// systemd's user database; pyenv's `python3` is such a shell) leaves the interface to
/// the server. Before, any socket(2) started the fast path, the wrapper took the
/// interface and the server it ran fell back to the kernel.
#[test]
fn a_wrapper_opening_unix_and_netlink_sockets_leaves_the_interface_to_its_server() {
    let t = topo();
    let dir = scratch("wrapper-sockets");
    let server = &echo_server(7210);
    let wrapper = r#"
import socket, subprocess, sys
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
print("wrapper", __import__("os").getpid(), flush=True)
sys.exit(subprocess.call([sys.executable, "-c", sys.argv[1]]))
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", wrapper, server]).env("FASTNET_LOG", "info");
    let mut s = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7210, &mut s);
    let client = echo_client(&t, 7210);
    let out = run_ok(t.command(Side::Client, PY).args(["-c", &client]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echoed 1048576 True"
    );
    let st = s.child.wait().unwrap();
    let log = s.output();
    assert!(st.success(), "{log}");
    let wrapper_pid = log
        .lines()
        .find_map(|l| l.strip_prefix("wrapper "))
        .expect("the wrapper's pid")
        .trim()
        .to_string();
    let started: Vec<&str> = log.lines().filter(|l| l.contains("fast path on")).collect();
    assert_eq!(started.len(), 1, "one process starts the fast path:\n{log}");
    assert!(
        !started[0].contains(&format!("fastnet[{wrapper_pid}]")),
        "the wrapper took the interface:\n{log}"
    );
    let c = exit_counters(&log);
    assert!(
        c.get("rx.bytes").copied().unwrap_or(0) >= 1 << 20
            && c.get("tcp.passive_opens") == Some(&1),
        "the server's stack did not carry the echo:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shim's own fds (the interface's XSKs, BPF maps, program and link, netlink,
/// mailbox, tethers) take no number the app expects its own opens to get: after the
/// fast path starts, and in a forked child after it joined the family, every fd below
/// 100 is one the app made, and the app's next open gets the lowest free number.
/// The child uses a connection the parent opened (a client connection: its ephemeral
/// port goes with it to the child; it used to go back to the kernel, which reset the
/// connection at the peer's next segment).
#[test]
fn the_shim_s_fds_stay_out_of_the_app_s_numbers_also_in_a_joined_child() {
    let t = topo();
    let dir = scratch("fd-numbers");
    let echo = &echo_server(7211);
    let mut server = spawn(
        {
            let mut c = t.command(Side::Client, PY);
            c.args(["-c", echo]);
            c
        },
        &dir.join("echo.log"),
    );
    wait_listening(&t, Side::Client, 7211, &mut server);
    let app = format!(
        r#"
import os, socket
def low():
    out = set()
    for i in range(100):
        try:
            os.fstat(i); out.add(i)
        except OSError:
            pass
    return out
before = low()
s = socket.create_connection(("{ip}", 7211), timeout=10)
s.sendall(b"a"); assert s.recv(1) == b"a"
after = low()
print("parent", sorted(after - before - {{s.fileno()}}), flush=True)
n = os.open("/dev/null", os.O_RDONLY)
print("next lowest", n == min(set(range(100)) - after), flush=True)
os.close(n)
pid = os.fork()
if pid == 0:
    s.sendall(b"b"); assert s.recv(1) == b"b"
    print("child", sorted(low() - after), flush=True)
    os._exit(0)
_, st = os.waitpid(pid, 0)
print("parent after fork", sorted(low() - after), "child status", st, flush=True)
"#,
        ip = t.client_ip
    );
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &app]).env("FASTNET_LOG", "info");
    let out = run_ok(&mut c);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let log = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("fast path on"), "{log}");
    assert!(
        log.contains("joined the fast path"),
        "the child never joined:\n{log}"
    );
    for want in [
        "parent []",
        "next lowest True",
        "child []",
        "parent after fork [] child status 0",
    ] {
        assert!(text.lines().any(|l| l == want), "want {want:?}:\n{log}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process that drops root before its first socket (memcached does, and with `-d`
/// forks after that) cannot start the fast path as `nobody`: the shim starts it at the
/// drop, while it may, and the daemon child joins with AF_XDP sockets made then. The
/// background driver is made after the drop: no thread of the process keeps root.
#[test]
fn a_daemon_that_drops_root_before_its_first_socket_runs_on_the_fast_path() {
    let t = topo();
    let dir = scratch("drop-root");
    let app = r#"
import os, socket, sys
os.setgroups([]); os.setgid(65534); os.setuid(65534)
if os.fork():
    os._exit(0)
os.setsid()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7212)); s.listen(1)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d)
uids = set()
for task in os.listdir("/proc/self/task"):
    for line in open("/proc/self/task/%s/status" % task):
        if line.startswith("Uid:"):
            uids.update(line.split()[1:])
print("threads", len(os.listdir("/proc/self/task")), "uids", sorted(uids), flush=True)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", app]).env("FASTNET_LOG", "info");
    let mut s = spawn(c, &dir.join("app.log"));
    // The first process exits at once; its child listens.
    let st = s.child.wait().unwrap();
    assert!(st.success(), "{}", s.output());
    let deadline = Instant::now() + Duration::from_secs(20);
    while kernel_listeners(&t, 7212) == 0 {
        assert!(Instant::now() < deadline, "nobody listens:\n{}", s.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = echo_client(&t, 7212);
    let mut load = t.command(Side::Client, PY);
    load.args(["-c", &client])
        .stdout(std::process::Stdio::piped());
    let mut load = load.spawn().unwrap();
    // While the echo runs, the kernel holds no connection of the port.
    let mut most = 0;
    while load.try_wait().unwrap().is_none() {
        most = most.max(kernel_connections(&t, Side::Server, 7212));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = load.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echoed 1048576 True"
    );
    assert_eq!(most, 0, "the kernel held the connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.output().contains("uids") {
        assert!(Instant::now() < deadline, "{}", s.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.output();
    assert!(
        log.contains("starting the fast path before the app drops root"),
        "{log}"
    );
    assert!(log.contains("joined the fast path"), "{log}");
    // The daemon has our driver thread too, and every thread is nobody's.
    assert!(
        log.lines().any(|l| l == "threads 2 uids ['65534']"),
        "{log}"
    );
    let c = summed_exit_counters(&log);
    assert!(
        c.get("rx.bytes").copied().unwrap_or(0) >= 1 << 20,
        "the daemon's stack did not carry the echo:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// TCP listeners on `port` in the server's namespace (the kernel's view: the shadow
/// socket of a fast-path listener shows there too).
fn kernel_listeners(t: &Topology, port: u16) -> usize {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &t.server_ns, "ss", "-Hltn"])
        .arg(format!("sport = :{port}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A client that sends 1 MiB to `port` on the server side, reads the echo to
/// end-of-file and prints `echoed 1048576 True` when every byte came back.
fn echo_client(t: &Topology, port: u16) -> String {
    format!(
        r#"
import socket
s = socket.create_connection(("{server}", {port}), timeout=10)
data = bytes(range(256)) * 4096
s.sendall(data); s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d: break
    got += d
print("echoed", len(got), got == data)
"#,
        server = t.server_ip
    )
}

/// A server that echoes its first connection on `port` until end-of-file.
fn echo_server(port: u16) -> String {
    format!(
        r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port})); s.listen(4)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d)
c.close()
"#
    )
}

/// A connection both processes use after fork: the parent waits on it in poll while
/// the child sends on it, which moves the connection to the child. The parent's poll is
/// woken and fetches it back, and its recv gets the echo of what the child sent. The
/// poll used to wait on the empty tether until the child exited and then read
/// end-of-file; and frames that reached a process that had the connection back were
/// forwarded to where it had been, which reset it.
#[test]
fn a_poll_waiting_on_a_connection_another_process_takes_gets_it_back() {
    let t = topo();
    let dir = scratch("taken-while-waiting");
    let mut server = spawn(
        {
            let mut c = t.command(Side::Client, PY);
            c.args(["-c", &echo_server(7213)]);
            c
        },
        &dir.join("echo.log"),
    );
    wait_listening(&t, Side::Client, 7213, &mut server);
    let app = format!(
        r#"
import os, socket, time
s = socket.create_connection(("{ip}", 7213), timeout=20)
pid = os.fork()
if pid == 0:
    time.sleep(0.5)
    s.sendall(b"x")
    time.sleep(2)
    os._exit(0)
try:
    print("got", s.recv(1), flush=True)
except OSError as e:
    print("error", e.errno, flush=True)
os.waitpid(pid, 0)
"#,
        ip = t.client_ip
    );
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &app]);
    let out = run_ok(&mut c);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.lines().any(|l| l == "got b'x'"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Like the poll case, in turns and with the other two ways an app waits: the parent
/// waits (in a blocking recv, or in epoll) while the child sends, which takes the
/// connection to the child; then the child waits the same way while the parent sends,
/// which takes it back. Each waiter must be woken, fetch the connection home and read
/// the echo of what the other sent.
fn waits_in_turn_on_a_taken_connection(wait: &str, port: u16) {
    let t = topo();
    let dir = scratch(&format!("taken-while-in-{wait}"));
    let mut server = spawn(
        {
            let mut c = t.command(Side::Client, PY);
            c.args(["-c", &echo_server(port)]);
            c
        },
        &dir.join("echo.log"),
    );
    wait_listening(&t, Side::Client, port, &mut server);
    let app = format!(
        r#"
import os, select, socket, sys, time
s = socket.create_connection(("{ip}", {port}))
s.settimeout(None)
def wait_and_recv():
    if "{wait}" == "epoll":
        ep = select.epoll()
        ep.register(s.fileno(), select.EPOLLIN)
        ready = ep.poll(20)
        ep.close()
        if not ready:
            return b"epoll timed out"
    return s.recv(16)
turn_r, turn_w = os.pipe()
pid = os.fork()
if pid == 0:
    time.sleep(0.5)
    s.sendall(b"x")
    os.read(turn_r, 1)
    try:
        print("child got", wait_and_recv(), flush=True)
    except OSError as e:
        print("child error", e.errno, flush=True)
    os._exit(0)
try:
    print("parent got", wait_and_recv(), flush=True)
    os.write(turn_w, b"!")
    time.sleep(0.5)
    s.sendall(b"y")
except OSError as e:
    print("parent error", e.errno, flush=True)
    os.write(turn_w, b"!")
os.waitpid(pid, 0)
"#,
        ip = t.client_ip
    );
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", &app]);
    c.env("FASTNET_LOG", "debug");
    let out = run_ok(&mut c);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let both =
        text.lines().any(|l| l == "parent got b'x'") && text.lines().any(|l| l == "child got b'y'");
    assert!(both, "{text}{}", String::from_utf8_lossy(&out.stderr));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_blocking_recv_on_a_connection_another_process_takes_gets_it_back() {
    waits_in_turn_on_a_taken_connection("recv", 7214);
}

#[test]
fn an_epoll_wait_on_a_connection_another_process_takes_gets_it_back() {
    waits_in_turn_on_a_taken_connection("epoll", 7215);
}
