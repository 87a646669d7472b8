//! splice(2), sendfile(2), tee(2) and copy_file_range(2) on fast-path sockets (issue
//! 19, part 1): a forwarder in HAProxy's splice pattern, each call's data byte-exact
//! and its errors equal to the kernel's, and stock HAProxy in TCP mode with
//! `option splice-auto`.

use fastnet_e2e::apps::{
    assert_fast_path_counters, assert_xdp_attached, exit_counters, fastnet_cmd, kernel_connections,
    random_file, scratch, sha256_file, spawn, wait_listening, Bg,
};
use fastnet_e2e::shim::compile_c;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";

/// A kernel echo server: every connection gets back what it sends, and its side shut
/// once the peer shut its own.   echo IP PORT
const ECHO: &str = r#"
import socket, sys, threading
def serve(c):
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    c.close()
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(64)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A kernel client: sends a file through a forwarder to an echo server and writes what
/// comes back. After the first MiB made the round trip it prints "ready" and waits for
/// the file GO (the test looks at the kernel's sockets meanwhile).
///   client IP PORT IN OUT GO
const CLIENT: &str = r#"
import os, socket, sys, threading, time
ip, port, src, dst, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.create_connection((ip, port))
s.settimeout(60)
inp, out = open(src, "rb"), open(dst, "wb")
first = inp.read(1 << 20)
s.sendall(first)
got = 0
while got < len(first):
    b = s.recv(len(first) - got)
    assert b, "eof during the first MiB"
    out.write(b)
    got += len(b)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
def send():
    while True:
        b = inp.read(1 << 20)
        if not b:
            break
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    out.write(b)
    got += len(b)
t.join()
out.close()
print("received", got, flush=True)
"#;

const SIZE: usize = 100 << 20;

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

fn queues() -> u64 {
    TopologyOptions::for_tests().queues.in_use() as u64
}

fn echo_server(t: &Topology, port: u16, dir: &Path) -> Bg {
    let mut c = t.command(Side::Client, PY);
    c.args(["-c", ECHO, &t.client_ip.to_string(), &port.to_string()]);
    let mut echo = spawn(c, &dir.join(format!("echo-{port}.log")));
    wait_listening(t, Side::Client, port, &mut echo);
    echo
}

/// Sends `input` through the proxy on the server side's `port` and back; once the
/// first MiB went round, checks that the kernel of the server side holds no TCP
/// connection on `ports` (both of the proxy's connections are the fast path's); then
/// the rest, and the echo must equal the input.
fn round_trip(t: &Topology, port: u16, ports: &[u16], input: &Path, dir: &Path, proxy: &Bg) {
    let output = dir.join("out.bin");
    let go = dir.join("go");
    let mut client: Child = t
        .command(Side::Client, PY)
        .args(["-c", CLIENT, &t.server_ip.to_string(), &port.to_string()])
        .arg(input)
        .arg(&output)
        .arg(&go)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    if line.trim() != "ready" {
        let out = client.wait_with_output().unwrap();
        panic!(
            "client: {line} {}\nproxy:\n{}",
            String::from_utf8_lossy(&out.stderr),
            proxy.output()
        );
    }
    for &p in ports {
        assert_eq!(kernel_connections(t, Side::Server, p), 0, "port {p}");
    }
    std::fs::write(&go, b"").unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success() && rest.contains(&format!("received {}", SIZE)),
        "client: {} {rest} {}\nproxy:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        proxy.output()
    );
    assert_eq!(sha256_file(&output), sha256_file(input), "echo differs");
}

/// The counters of the live fastnet processes on `side`'s interface, added up by name.
fn live_counters(t: &Topology, side: Side) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for (_, path) in fastnet_stats::live_segments() {
        let Ok(seg) = fastnet_stats::StatsSegment::open(&path) else {
            continue;
        };
        if seg.iface() == t.iface(side) {
            for (c, v) in seg.snapshot() {
                *m.entry(c.name().to_string()).or_insert(0) += v;
            }
        }
    }
    m
}

/// Waits (`secs` at most) for a process to exit by itself; its output.
fn wait_exit(bg: &mut Bg, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = bg.child.try_wait() {
            let log = bg.output();
            assert!(st.success(), "exited with {st}:\n{log}");
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("still running after {secs} s:\n{}", bg.stop());
}

#[test]
fn splice_forwarder_carries_100mb_each_way_on_the_fast_path() {
    let t = topo();
    let dir = scratch("splice-fwd");
    let input = dir.join("in.bin");
    random_file(&input, SIZE, 31);
    let _echo = echo_server(&t, 7801, &dir);
    let bin = compile_c("splice_fwd", "splice_fwd", &dir, &[]);
    let mut c = fastnet_cmd(&t, Side::Server, bin.to_str().unwrap());
    c.args(["7800", &t.client_ip.to_string(), "7801"]);
    let mut fwd = spawn(c, &dir.join("fwd.log"));
    wait_listening(&t, Side::Server, 7800, &mut fwd);
    assert_xdp_attached(&t, Side::Server);
    round_trip(&t, 7800, &[7800, 7801], &input, &dir, &fwd);
    let log = wait_exit(&mut fwd, 30);
    assert!(log.contains(&format!("forwarded {SIZE} {SIZE}")), "{log}");
    // Both of its connections carried every byte each way through the stack...
    assert_fast_path_counters(&log, 2 * SIZE as u64, queues());
    // ...and every byte went through splice, both ways, on both connections.
    let c = exit_counters(&log);
    let total = Some(&(2 * SIZE as u64));
    assert_eq!(c.get("splice.to_pipe_bytes"), total, "{log}");
    assert_eq!(c.get("splice.from_pipe_bytes"), total, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn splice_sendfile_tee_copy_file_range_on_a_fast_path_socket() {
    let t = topo();
    let dir = scratch("splice-calls");
    let input = dir.join("data.bin");
    random_file(&input, 300_000, 5);
    let _echo = echo_server(&t, 7811, &dir);
    let bin = compile_c("splice_calls", "splice_calls", &dir, &["-pthread"]);
    let mut c = fastnet_cmd(&t, Side::Server, bin.to_str().unwrap());
    c.arg(t.client_ip.to_string())
        .arg("7811")
        .arg(&input)
        .arg(&dir);
    let mut calls = spawn(c, &dir.join("calls.log"));
    let log = wait_exit(&mut calls, 60);
    for check in [
        "errors_match_kernel",
        "sendfile_offset_count",
        "sendfile_offset_bytes",
        "sendfile_null_offset",
        "sendfile_null_offset_bytes",
        "sendfile_partial_at_eof",
        "sendfile_partial_bytes",
        "sendfile_at_eof_is_zero",
        "sendfile_nonblocking",
        "file_pipe_socket",
        "file_pipe_socket_bytes",
        "socket_pipe_file",
        "sendfile_socket_to_pipe",
        "tee_pipes",
        "unix_socket_through_fast_path",
        "kernel_socket_into_fast_path",
        "kernel_socket_into_fast_path_bytes",
        "blocking_pipe_full_waits",
        "blocking_pipe_empty_waits",
        "blocking_pipe_empty_bytes",
        "eof_is_zero",
        "shut_socket_is_epipe",
    ] {
        assert!(
            log.lines().any(|l| l == format!("ok {check}")),
            "{check}:\n{log}"
        );
    }
    assert!(log.contains("all ok") && !log.contains("FAIL"), "{log}");
    // The echoes came through the stack: 80100 B and the 300000 B file of sendfile, 64 KiB of file → pipe
    // → socket, 100000 B to a file, 20000 B of sendfile into a pipe, 200000 B from
    // the unix socket, 60000 B from the kernel socket, 30000 B from a pipe (each way).
    assert_fast_path_counters(&log, 525_000, queues());
    let c = exit_counters(&log);
    // Socket → pipe: the file's 100000 B, sendfile's 20000 B, the unix socket's
    // 200000 B, 10 B into the full pipe.
    assert_eq!(c.get("splice.to_pipe_bytes"), Some(&320_010), "{log}");
    // Pipe → socket: the file's 65536 B, the unix socket's 200000 B, the kernel's
    // 60000 B, 30000 B from the empty pipe.
    assert_eq!(c.get("splice.from_pipe_bytes"), Some(&355_536), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stock HAProxy in TCP mode under fastnet with `options` (splicing), between the
/// kernel client and a kernel echo server in the other namespace: 100 MB each way,
/// byte-exact, HAProxy alive and never near its watchdog. Returns its live counters.
fn haproxy_tcp(options: &str, port: u16) -> std::collections::HashMap<String, u64> {
    let t = topo();
    let dir = scratch("haproxy-splice");
    let input = dir.join("in.bin");
    random_file(&input, SIZE, 47);
    let backend = port + 1;
    let _echo = echo_server(&t, backend, &dir);
    std::fs::write(
        dir.join("haproxy.cfg"),
        format!(
            "global\n  nbthread 1\ndefaults\n  mode tcp\n{options}\
             timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend f\n  bind 0.0.0.0:{port}\n  default_backend b\n\
             backend b\n  server s1 {}:{backend}\n",
            t.client_ip
        ),
    )
    .unwrap();
    let mut c = fastnet_cmd(&t, Side::Server, "haproxy");
    c.args(["-db", "-f", dir.join("haproxy.cfg").to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("haproxy.log"));
    wait_listening(&t, Side::Server, port, &mut srv);
    assert_xdp_attached(&t, Side::Server);
    round_trip(&t, port, &[port, backend], &input, &dir, &srv);
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "haproxy exited: {}",
        srv.output()
    );
    // Its counters while it runs (HAProxy's SIGTERM exit skips the at-exit report).
    let c = live_counters(&t, Side::Server);
    let log = srv.stop();
    assert!(!log.contains("about to kill"), "{log}");
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    // The stack carried the stream both ways on both of its connections.
    assert!(
        get("rx.bytes") >= 2 * SIZE as u64 && get("tx.bytes") >= 2 * SIZE as u64,
        "{c:?}"
    );
    assert_eq!(get("drop.no_xsk"), 0, "{c:?}");
    let _ = std::fs::remove_dir_all(&dir);
    c
}

/// Issue 19's configuration. Whether HAProxy splices is its heuristic's choice (it
/// splices once reads keep filling its buffer); whatever it chose, no byte is lost.
#[test]
fn haproxy_tcp_splice_auto_forwards_100mb_each_way_byte_exact() {
    haproxy_tcp("  option splice-auto\n", 7820);
}

/// Splicing forced both ways: every byte after the first reads goes through splice.
#[test]
fn haproxy_tcp_forced_splice_forwards_100mb_each_way_through_splice() {
    let c = haproxy_tcp(
        "  option splice-auto\n  option splice-request\n  option splice-response\n",
        7830,
    );
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    // Most of each 100 MB stream went socket → pipe → socket, both directions.
    assert!(
        get("splice.to_pipe_bytes") >= SIZE as u64 && get("splice.from_pipe_bytes") >= SIZE as u64,
        "{c:?}"
    );
}
