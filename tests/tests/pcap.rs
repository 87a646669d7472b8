//! `fastnet pcap` (issue 8): capture the fast-path frames of a running server and check
//! the file with tshark: the reassembled TCP stream equals the data both ways, and the
//! frame count equals the shim's own counters.

use fastnet_e2e::apps::{exit_counters, fastnet_cmd, scratch, spawn, wait_listening, Bg};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";
const PORT: u16 = 7040;

/// Serves `conns` connections one after the other (dual-stack: IPv4 and IPv6): a
/// greeting, then an echo of everything until the peer closes.
const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1]))); s.listen(8)
for i in range(int(sys.argv[2])):
    c, a = s.accept()
    c.sendall(b"HELLO %d\n" % i)
    while True:
        d = c.recv(1 << 16)
        if not d: break
        c.sendall(d)
    c.close()
s.close()
"#;

/// Sends `n` known bytes, reads the greeting and the echo, closes; prints "ok" or why not.
const CLIENT: &str = r#"
import socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes((i * 7 + i // 251) & 255 for i in range(n))
s = socket.create_connection((host, port))
got = bytearray()
def rd():
    while True:
        d = s.recv(1 << 16)
        if not d: break
        got.extend(d)
        if got.endswith(data): break
t = threading.Thread(target=rd); t.start()
s.sendall(data)
t.join(30)
s.close()
head = bytes(got[:got.find(b"\n") + 1])
print("ok" if bytes(got[len(head):]) == data and head.startswith(b"HELLO") else "MISMATCH %d" % len(got), flush=True)
"#;

/// The bytes the client sends.
fn client_data(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 251) & 255) as u8).collect()
}

fn run_client(t: &Topology, n: usize) {
    run_client_to(t, &t.server_ip.to_string(), n)
}

fn run_client_to(t: &Topology, host: &str, n: usize) {
    let out = run_ok(t.command(Side::Client, PY).args([
        "-c",
        CLIENT,
        host,
        &PORT.to_string(),
        &n.to_string(),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

fn start_server(t: &Topology, dir: &Path, conns: u32) -> Bg {
    let mut c = fastnet_cmd(t, Side::Server, PY);
    c.args(["-c", SERVER, &PORT.to_string(), &conns.to_string()]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(t, Side::Server, PORT, &mut srv);
    let seg = fastnet_stats::segment_path(srv.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seg.exists() {
        assert!(Instant::now() < deadline, "no fast path: {}", srv.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    srv
}

/// Starts `fastnet pcap PID -w FILE args...` and waits until the process's shim can
/// see the ring (it looks at most every 250 ms, before handling the next frames).
fn start_pcap(pid: u32, file: &Path, log: &Path, args: &[&str]) -> Bg {
    let mut c = Command::new(fastnet_bin());
    c.arg("pcap")
        .arg(pid.to_string())
        .arg("-w")
        .arg(file)
        .args(args);
    let mut pcap = spawn(c, log);
    let ring = fastnet_capture::capture_path(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ring.exists() {
        if let Ok(Some(st)) = pcap.child.try_wait() {
            panic!("fastnet pcap exited ({st}): {}", pcap.output());
        }
        assert!(Instant::now() < deadline, "no ring: {}", pcap.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_micros(
        fastnet_capture::CHECK_INTERVAL_US + 100_000,
    ));
    pcap
}

/// Waits for `fastnet pcap` to end on its own; returns its output.
fn wait_exit(pcap: &mut Bg) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = pcap.child.try_wait() {
            assert!(st.success(), "fastnet pcap failed: {}", pcap.output());
            return pcap.output();
        }
        assert!(
            Instant::now() < deadline,
            "pcap still running: {}",
            pcap.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// "captured N frames (M dropped) to FILE" → (N, M).
fn summary(out: &str, file: &Path) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("captured "))
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    assert!(line.ends_with(&format!("to {}", file.display())), "{line}");
    let w: Vec<&str> = line.split_whitespace().collect();
    (
        w[1].parse().unwrap(),
        w[3].trim_start_matches('(').parse().unwrap(),
    )
}

fn tshark(args: &[&str]) -> String {
    let out = run_ok(Command::new("tshark").args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn frames_in(file: &Path) -> u64 {
    tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.number",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count() as u64
}

/// TCP stream `index` reassembled by tshark: (node 0's address, bytes node 0 sent,
/// bytes node 1 sent). Node 0 is the side that sent the first frame of the stream.
fn follow(file: &Path, index: u32) -> (String, Vec<u8>, Vec<u8>) {
    let text = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-q",
        "-z",
        &format!("follow,tcp,raw,{index}"),
    ]);
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    let (mut node0, mut a, mut b) = (String::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(addr) = line.strip_prefix("Node 0: ") {
            node0 = addr.trim().to_string();
        } else if let Some(h) = line.strip_prefix('\t') {
            b.extend(hex(h.trim()));
        } else if !line.is_empty() && line.bytes().all(|c| c.is_ascii_hexdigit()) {
            a.extend(hex(line));
        }
    }
    assert!(!node0.is_empty(), "no stream {index} in:\n{text}");
    (node0, a, b)
}

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    assert!(
        Command::new("tshark").arg("-v").output().is_ok(),
        "tshark missing: scripts/install-deps.sh installs it"
    );
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

#[test]
fn pcap_holds_the_tcp_stream_both_ways_and_every_frame_the_shim_counted() {
    let t = topo();
    let dir = scratch("pcap");
    let mut srv = start_server(&t, &dir, 1);
    let file = dir.join("cap.pcap");
    let mut pcap = start_pcap(srv.pid(), &file, &dir.join("pcap.log"), &[]);
    let n = 300_000;
    run_client(&t, n);
    // The server exits after its one connection (counters printed at exit); the
    // capture ends by itself when the process is gone.
    let st = srv.child.wait().unwrap();
    let log = srv.output();
    assert!(st.success(), "server: {log}");
    let out = wait_exit(&mut pcap);
    let (frames, dropped) = summary(&out, &file);
    assert_eq!(dropped, 0, "{out}");
    let c = exit_counters(&log);
    let counted =
        c.get("rx.frames").copied().unwrap_or(0) + c.get("tx.frames").copied().unwrap_or(0);
    assert!(counted > 20, "the fast path carried the flow: {log}");
    assert_eq!(
        frames, counted,
        "every frame the shim counted: {log}\n{out}"
    );
    assert_eq!(frames_in(&file), frames, "tshark reads them all");

    let (node0, to_server, to_client) = follow(&file, 0);
    assert!(node0.starts_with(&format!("{}:", t.client_ip)), "{node0}");
    assert_eq!(to_server, client_data(n), "client → server stream");
    let mut want = b"HELLO 0\n".to_vec();
    want.extend(client_data(n));
    assert_eq!(to_client, want, "server → client stream");
    assert!(
        !fastnet_capture::capture_path(srv.pid()).exists(),
        "the ring is removed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// IPv6 frames are captured as they are: the stream over IPv6 reassembles both ways
/// and every frame is IPv6 between the two fd77 addresses.
#[test]
fn pcap_captures_ipv6() {
    let t = topo();
    let dir = scratch("pcap6");
    let mut srv = start_server(&t, &dir, 1);
    let file = dir.join("cap6.pcap");
    let mut pcap = start_pcap(srv.pid(), &file, &dir.join("pcap.log"), &[]);
    let n = 100_000;
    run_client_to(&t, &t.server_ip6.to_string(), n);
    let st = srv.child.wait().unwrap();
    assert!(st.success(), "server: {}", srv.output());
    let out = wait_exit(&mut pcap);
    let (frames, dropped) = summary(&out, &file);
    assert_eq!(dropped, 0, "{out}");
    let pairs = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "ipv6.src",
        "-e",
        "ipv6.dst",
    ]);
    let (c, s) = (t.client_ip6.to_string(), t.server_ip6.to_string());
    let v6 = pairs
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w == [c.as_str(), s.as_str()] || w == [s.as_str(), c.as_str()]
        })
        .count() as u64;
    assert!(
        frames > 20 && v6 == frames,
        "{frames} frames, {v6} IPv6:\n{pairs}"
    );
    let (_, to_server, to_client) = follow(&file, 0);
    assert_eq!(to_server, client_data(n), "client → server stream");
    let mut want = b"HELLO 0\n".to_vec();
    want.extend(client_data(n));
    assert_eq!(to_client, want, "server → client stream");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcap_stops_at_count_and_on_sigint_and_captures_again() {
    let t = topo();
    let dir = scratch("pcap-stop");
    let mut srv = start_server(&t, &dir, 2);
    let pid = srv.pid();

    // --count 3: the handshake, then the capture ends and the shim lets go.
    let first = dir.join("first.pcap");
    let mut pcap = start_pcap(pid, &first, &dir.join("first.log"), &["--count", "3"]);
    run_client(&t, 10_000);
    let out = wait_exit(&mut pcap);
    assert_eq!(summary(&out, &first), (3, 0), "{out}");
    let flags = tshark(&[
        "-r",
        first.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "tcp.flags.str",
    ]);
    let flags: Vec<&str> = flags.lines().map(str::trim).collect();
    assert!(
        flags.len() == 3
            && flags[0].contains('S')
            && flags[1].contains('S')
            && flags[1].contains('A'),
        "SYN, SYN-ACK, ACK: {flags:?}"
    );

    // A second capture of the same process, ended with Ctrl-C.
    let second = dir.join("second.pcap");
    let mut pcap = start_pcap(pid, &second, &dir.join("second.log"), &[]);
    run_client(&t, 20_000);
    let out = pcap.stop_with(libc::SIGINT);
    let (frames, dropped) = summary(&out, &second);
    assert_eq!(dropped, 0);
    assert!(frames > 10, "{out}");
    assert_eq!(frames_in(&second), frames);
    let (_, to_server, to_client) = follow(&second, 0);
    assert_eq!(to_server, client_data(20_000));
    assert!(to_client.starts_with(b"HELLO 1\n"), "the second connection");
    let _ = srv.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcap_errors_name_the_fix() {
    let dir = scratch("pcap-err");
    let file = dir.join("x.pcap");
    let mut plain = Command::new("sleep").arg("30").spawn().unwrap();
    let out = Command::new(fastnet_bin())
        .args(["pcap", &plain.id().to_string(), "-w"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = plain.kill();
    let _ = plain.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("has no fastnet fast path") && err.contains("fastnet run"),
        "{err}"
    );
    let out = Command::new(fastnet_bin())
        .args(["pcap", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "-w is required");
    assert!(String::from_utf8_lossy(&out.stderr).contains("-w <FILE>"));
    let _ = std::fs::remove_dir_all(&dir);
}
