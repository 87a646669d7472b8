//! `fastnet stat` shows what actually happened: bytes, connections, sockets.

use fastnet_e2e::apps::{fastnet_cmd, scratch, spawn, wait_listening};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn counters(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn stat_counts_a_live_connection_and_its_bytes() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let dir = scratch("stat");
    // A sink that reports what it received, then holds the connection open.
    let server = r#"
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7400)); s.listen(4)
c, _ = s.accept()
n = 0
while n < 3000000:
    d = c.recv(1 << 16)
    if not d: break
    n += len(d)
print("got", n, flush=True)
time.sleep(30)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, "/usr/bin/python3");
    c.args(["-c", server]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7400, &mut srv);
    let client = r#"
import socket, sys, time
c = socket.create_connection((sys.argv[1], 7400))
c.sendall(b"z" * 3000000)
time.sleep(30)
"#;
    let mut cl = t.command(Side::Client, "/usr/bin/python3");
    cl.args(["-c", client, &t.server_ip.to_string()]);
    let _cl = spawn(cl, &dir.join("client.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !srv.output().contains("got 3000000") {
        assert!(Instant::now() < deadline, "{}", srv.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The background driver publishes within ~50 ms even while the app sleeps.
    std::thread::sleep(Duration::from_millis(300));
    let out =
        run_ok(std::process::Command::new(fastnet_bin()).args(["stat", &srv.pid().to_string()]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(&format!("fastnet process {} on {}", srv.pid(), t.server_if)),
        "{text}"
    );
    let c = counters(&text);
    let rx = c["rx.bytes"];
    // 3 MB of payload plus Ethernet/IP/TCP headers (at most one frame per 1448 bytes).
    let frames = c["rx.frames"];
    assert!(
        rx >= 3_000_000 && rx <= 3_000_000 + frames * 80,
        "rx.bytes {rx}, rx.frames {frames}:\n{text}"
    );
    assert!(frames >= 3_000_000 / 1448, "{text}");
    assert_eq!(c["tcp.state.established"], 1, "{text}");
    assert_eq!(c["tcp.state.listen"], 1, "{text}");
    assert_eq!(c["sockets.fast"], 2, "listener + connection:\n{text}");
    // Without a PID: every fastnet process, this one among them.
    let out = run_ok(std::process::Command::new(fastnet_bin()).arg("stat"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("fastnet process {}", srv.pid()))
    );
    // A PID that is not a fastnet process: one clear line, exit 1.
    let out = std::process::Command::new(fastnet_bin())
        .args(["stat", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no fastnet counters"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
