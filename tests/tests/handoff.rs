//! Connections handed from the stack to the kernel (issue 18), at exit: a process
//! that wrote more than the peer has read yet, closed and exited ends at once, and
//! the kernel delivers the rest (TCP repair); the peer gets every byte and no RST.
//! A forking server's child does the same while its parent lives on, and the flow
//! entry that sends the connection to the kernel goes once the kernel is done with it.
//! `fastnet handoff` moves a running redis-server's connections to the kernel and back
//! into the stack, three times, under redis-benchmark, and no request fails.
//! A transfer each way keeps going, byte-exact, while its connection moves between the
//! stack and the kernel every 100 ms or so.
//! With 16 socket slots, 100 concurrent connections are all served: those the stack
//! has no slot for are the kernel's.
//! Without CAP_NET_ADMIN the exit lingers as before, says so in one line, and still
//! delivers everything.

use fastnet_e2e::apps::{
    exit_counters, fastnet_cmd, fastnet_redis, random_file, scratch, sha256_file, spawn,
    wait_listening, Bg,
};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const READER: &str = include_str!("../py/slow_reader.py");
const DROPPING_WRITER: &str = include_str!("../py/dropping_writer.py");
const FORKING_SENDER: &str = include_str!("../py/forking_sender.py");
const PATTERN_SERVER: &str = include_str!("../py/pattern_server.py");
const PATTERN_CLIENTS: &str = include_str!("../py/pattern_clients.py");
const MOVE_SERVER: &str = include_str!("../py/move_server.py");
const MOVE_CLIENT: &str = include_str!("../py/move_client.py");
const MOVE_STREAM: &str = include_str!("../py/move_stream.py");
const OPTIONS_SERVER: &str = include_str!("../py/options_server.py");
const BUSY_SERVER: &str = include_str!("../py/busy_socket_server.py");
const OPTIONS_CLIENT: &str = include_str!("../py/options_client.py");

/// The slow kernel reader in the client namespace, listening on `port` once this returns.
fn slow_reader(t: &Topology, dir: &Path, port: u16, rate: u32) -> Bg {
    let script = dir.join("slow_reader.py");
    std::fs::write(&script, READER).unwrap();
    let ready = dir.join(format!("ready-{port}"));
    let mut c = t.command(Side::Client, "python3");
    c.arg(&script)
        .arg("listen")
        .arg(port.to_string())
        .arg(rate.to_string())
        .arg(&ready);
    let mut bg = spawn(c, &dir.join(format!("reader-{port}.log")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        if let Ok(Some(st)) = bg.child.try_wait() {
            panic!("reader exited ({st}):\n{}", bg.output());
        }
        assert!(Instant::now() < deadline, "reader did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    bg
}

/// What the reader printed when its peer closed: `(bytes, sha256)`.
fn reader_result(bg: &mut Bg) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = bg.child.try_wait() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reader still reading:\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(&bg.log).unwrap();
    let mut w = out.split_whitespace();
    match (w.next().and_then(|n| n.parse().ok()), w.next()) {
        (Some(n), Some(h)) => (n, h.to_string()),
        _ => panic!("reader: {out}"),
    }
}

/// `ss` of the kernel's TCP sockets to `peer` in `side`'s namespace: (state, Send-Q).
fn kernel_sockets_to(t: &Topology, side: Side, peer: &str) -> Vec<(String, u64)> {
    let out = t
        .command(side, "ss")
        .args(["-Htn", "state", "all", "dst", peer])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// `ss -tinoem` of `side`'s TCP sockets other than listeners.
fn ss_info(t: &Topology, side: Side) -> String {
    let out = t
        .command(side, "ss")
        .args(["-tinoem", "state", "connected"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The client's (bytes_acked, bytes_received) on its connection: what moves while a
/// transfer goes on.
fn client_progress(t: &Topology) -> (u64, u64) {
    let info = ss_info(t, Side::Client);
    let field = |name: &str| {
        info.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    (field("bytes_acked:"), field("bytes_received:"))
}

/// `fastnet stat --json` of `pid`.
fn server_stat(pid: u32) -> String {
    let out = std::process::Command::new(fastnet_bin())
        .args(["stat", "--json", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel's count of retransmitted segments in `side`'s namespace (nstat).
fn kernel_retransmits(t: &Topology, side: Side) -> u64 {
    let out = t
        .command(side, "nstat")
        .args(["-az", "TcpRetransSegs"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("TcpRetransSegs")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn a_process_that_closed_with_megabytes_unread_exits_at_once_and_the_kernel_delivers_them() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-exit");
    let file = dir.join("data.bin");
    random_file(&file, 10 << 20, 18);
    let want = sha256_file(&file);
    let port = 7300;
    // 2.5 MB/s (20 Mbit/s): the 10 MB take four seconds to read.
    let mut reader = slow_reader(&t, &dir, port, 2_500_000);
    let before = kernel_retransmits(&t, Side::Server);
    let peer = format!("{}:{port}", t.addr(Side::Client));
    let mut w = fastnet_cmd(&t, Side::Server, "socat");
    w.arg("-u")
        .arg(format!("FILE:{}", file.display()))
        .arg(format!("TCP:{peer},sndbuf=2097152"))
        .env("FASTNET_LOG", "info");
    let out = w.output().unwrap();
    // The writer is gone (waitpid returned): what it wrote and the reader has not read
    // is in a kernel socket now, sending.
    let left = kernel_sockets_to(&t, Side::Server, &peer);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "socat failed:\n{log}");
    let c = exit_counters(&log);
    assert_eq!(c.get("handoff.to_kernel.exit"), Some(&1), "{log}");
    assert!(
        c.get("tx.bytes").copied().unwrap_or(0) >= 1 << 20,
        "the fast path carried the start:\n{log}"
    );
    assert!(
        log.contains("1 connection(s) handed to the kernel"),
        "{log}"
    );
    let queued: u64 = left.iter().map(|(_, q)| q).sum();
    assert!(
        left.iter().any(|(s, _)| s == "FIN-WAIT-1") && queued > 500_000,
        "at exit the kernel should hold the connection with > 500 KB to send: {left:?}\n{log}"
    );
    let (n, got) = reader_result(&mut reader);
    assert_eq!((n, got), (10 << 20, want), "the reader's bytes");
    eprintln!(
        "handed to the kernel with {queued} bytes to send; kernel retransmissions after: {}, the stack's before: {}",
        kernel_retransmits(&t, Side::Server) - before,
        c.get("tcp.retransmits").copied().unwrap_or(0)
    );
    // The kernel finishes the connection as any other: FIN sent and acknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while kernel_sockets_to(&t, Side::Server, &peer)
        .iter()
        .any(|(s, _)| s == "FIN-WAIT-1")
    {
        assert!(
            Instant::now() < deadline,
            "the kernel's FIN was never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_cap_net_admin_exit_lingers_says_so_and_delivers_everything() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-unpriv");
    let _ = std::process::Command::new("chmod")
        .arg("755")
        .arg(&dir)
        .status();
    let file = dir.join("data.bin");
    random_file(&file, 1 << 20, 19);
    let _ = std::process::Command::new("chmod")
        .arg("644")
        .arg(&file)
        .status();
    let want = sha256_file(&file);
    let script = dir.join("dropping_writer.py");
    std::fs::write(&script, DROPPING_WRITER).unwrap();
    let port = 7301;
    let mut reader = slow_reader(&t, &dir, port, 1_000_000);
    let mut w = fastnet_cmd(&t, Side::Server, "python3");
    w.arg(&script)
        .arg(t.addr(Side::Client).to_string())
        .arg(port.to_string())
        .arg(&file);
    let out = w.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "writer failed:\n{log}");
    let warn = "TCP repair is not permitted (needs CAP_NET_ADMIN): lingering for 1 connection(s)";
    assert_eq!(log.matches(warn).count(), 1, "one line says why:\n{log}");
    let c = exit_counters(&log);
    assert_eq!(c.get("handoff.failed"), Some(&1), "{log}");
    assert_eq!(c.get("handoff.to_kernel.exit"), None, "{log}");
    let (n, got) = reader_result(&mut reader);
    assert_eq!((n, got), (1 << 20, want), "the reader's bytes");
}

/// `fastnet handoff --pid PID --to TO`: whether it exited 0, and what it printed
/// (its stderr after its stdout).
fn handoff_verb(pid: u32, to: &str) -> (bool, String) {
    let out = std::process::Command::new(fastnet_bin())
        .args(["handoff", "--pid", &pid.to_string(), "--to", to])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A gauge of `pid` from `fastnet stat --json`.
fn gauge(pid: u32, name: &str) -> Option<u64> {
    let text = server_stat(pid);
    let at = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_forking_servers_child_exits_at_once_and_its_kernel_flow_entry_goes_when_done() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-fork");
    let file = dir.join("data.bin");
    random_file(&file, 8 << 20, 20);
    let want = sha256_file(&file);
    let script = dir.join("forking_sender.py");
    std::fs::write(&script, FORKING_SENDER).unwrap();
    let reader_script = dir.join("slow_reader.py");
    std::fs::write(&reader_script, READER).unwrap();
    let port = 7302;
    let mut s = fastnet_cmd(&t, Side::Server, "python3");
    s.arg(&script).arg(port.to_string()).arg(&file);
    let mut server = spawn(s, &dir.join("server.log"));
    wait_listening(&t, Side::Server, port, &mut server);
    let pid = server.pid();
    // The reader ends with a RST, so neither side keeps the 4-tuple in TIME-WAIT.
    let mut r = t.command(Side::Client, "python3");
    r.arg(&reader_script)
        .args([
            "connect",
            &t.addr(Side::Server).to_string(),
            &port.to_string(),
        ])
        .args(["2500000", "rst"]);
    let mut reader = spawn(r, &dir.join("reader.log"));
    // The child wrote everything into its 2 MB buffer and exited: the kernel holds the
    // rest of the connection, in FIN-WAIT-1, while the reader still reads.
    let peer = format!("{}", t.addr(Side::Client));
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held: Vec<(String, u64)> = kernel_sockets_to(&t, Side::Server, &peer);
        if held.iter().any(|(s, q)| s == "FIN-WAIT-1" && *q > 500_000) {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "no kernel socket took the child's connection: {held:?}\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The parent counts the entry (its `fastnet stat` is refreshed as it ticks).
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(pid, "handoff.kernel_flows") != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the family does not count the kernel's flow: {:?} {held:?}",
            gauge(pid, "handoff.kernel_flows")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (n, got) = reader_result(&mut reader);
    assert_eq!((n, got), (8 << 20, want), "the reader's bytes");
    // The kernel's connection ended (RST): the parent's driver removes the entry (once
    // the kernel has had no connection for it for 8 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(pid, "handoff.kernel_flows") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the flow entry stayed: {:?}",
            gauge(pid, "handoff.kernel_flows")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.stop();
    let c = exit_counters(&log);
    assert_eq!(c.get("handoff.to_kernel.exit"), Some(&1), "{log}");
}

#[test]
fn fastnet_handoff_moves_a_busy_redis_servers_connections_to_the_kernel_and_back() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-verb");
    let port = 6393;
    let mut server = spawn(
        fastnet_redis(&t, Side::Server, port),
        &dir.join("redis.log"),
    );
    wait_listening(&t, Side::Server, port, &mut server);
    let pid = server.pid();
    let mut b = t.command(Side::Client, "redis-benchmark");
    b.args([
        "-h",
        &t.addr(Side::Server).to_string(),
        "-p",
        &port.to_string(),
    ])
    .args(["-c", "20", "-n", "1000000", "-t", "set,get", "--csv"]);
    let mut bench = spawn(b, &dir.join("bench.log"));
    // Under way: the 20 connections are the stack's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gauge(pid, "tcp.state.established") != Some(20) {
        assert!(Instant::now() < deadline, "benchmark did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(apps_kernel_established(&t), 0, "the fast path holds them");
    // Kernel, stack, kernel, ...: three round trips while the benchmark runs.
    let handoff = |to: &str| {
        let (ok, answer) = handoff_verb(pid, to);
        assert!(ok, "{answer}");
        answer
    };
    for round in 0..3 {
        let answer = handoff("kernel");
        assert!(
            answer.starts_with("ok moved=20 kept=0"),
            "round {round}: {answer}"
        );
        // The kernel holds them now, with redis still serving them.
        expect_kernel_established(&t, 20, round);
        let answer = handoff("stack");
        assert!(
            answer.starts_with("ok moved=20 kept=0"),
            "round {round}: {answer}"
        );
        expect_kernel_established(&t, 0, round);
        // The stack has them again (its counters are published within ~50 ms).
        let deadline = Instant::now() + Duration::from_secs(5);
        while gauge(pid, "tcp.state.established") != Some(20) {
            assert!(Instant::now() < deadline, "round {round}: not in the stack");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        bench.child.try_wait().unwrap().is_none(),
        "the benchmark ended before the moves did: make it longer"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(st)) = bench.child.try_wait() {
            break st;
        }
        if Instant::now() >= deadline {
            let ss = t
                .command(Side::Client, "ss")
                .args(["-tin", "state", "established"])
                .output()
                .unwrap();
            let stat = std::process::Command::new(fastnet_bin())
                .args(["stat", &pid.to_string()])
                .output()
                .unwrap();
            panic!(
                "benchmark still running:\n{}\n{}",
                String::from_utf8_lossy(&ss.stdout),
                String::from_utf8_lossy(&stat.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let report = std::fs::read_to_string(&bench.log).unwrap();
    assert!(status.success(), "{report}");
    assert!(!report.contains("Error"), "{report}");
    for test in ["\"SET\"", "\"GET\""] {
        assert!(report.contains(test), "{test} finished:\n{report}");
    }
    let log = server.stop();
    let c = exit_counters(&log);
    assert_eq!(c.get("handoff.to_kernel.verb"), Some(&60), "{log}");
    assert_eq!(c.get("handoff.to_stack.verb"), Some(&60), "{log}");
    // The process is gone: the verb says so and fails.
    assert!(!handoff_verb(pid, "stack").0);
}

/// Waits (5 s at most) until the server's namespace has `n` established kernel TCP
/// connections with the client (`ss` may come back short while sockets change).
fn expect_kernel_established(t: &Topology, n: usize, round: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = apps_kernel_established(t);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: {now} kernel connections, not {n}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Established kernel TCP connections in the server's namespace.
fn apps_kernel_established(t: &Topology) -> usize {
    kernel_sockets_to(t, Side::Server, &t.addr(Side::Client).to_string())
        .iter()
        .filter(|(s, _)| s == "ESTAB")
        .count()
}

#[test]
fn with_sixteen_slots_a_hundred_concurrent_connections_are_all_served() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-slots");
    let server_py = dir.join("pattern_server.py");
    let clients_py = dir.join("pattern_clients.py");
    std::fs::write(&server_py, PATTERN_SERVER).unwrap();
    std::fs::write(&clients_py, PATTERN_CLIENTS).unwrap();
    let port = 7304;
    let size = 200_000;
    let mut s = fastnet_cmd(&t, Side::Server, "python3");
    s.arg(&server_py)
        .arg(port.to_string())
        .arg(size.to_string())
        .env("FASTNET_MAX_SOCKETS", "16")
        .env("FASTNET_LOG", "info");
    let mut server = spawn(s, &dir.join("server.log"));
    wait_listening(&t, Side::Server, port, &mut server);
    let out = t
        .command(Side::Client, "python3")
        .arg(&clients_py)
        .arg(t.addr(Side::Server).to_string())
        .arg(port.to_string())
        .args(["100", &size.to_string()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // SIGINT: Python ends serve_forever and exits normally (counters printed).
    let log = server.stop_with(libc::SIGINT);
    assert!(
        out.status.success(),
        "{report}{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.trim(), "ok 100");
    let c = exit_counters(&log);
    let to_kernel = c.get("handoff.to_kernel.slots").copied().unwrap_or(0);
    let fast = c.get("tcp.passive_opens").copied().unwrap_or(0);
    // Both carried some: at most 15 at once on the stack (the listener has a slot).
    assert!(
        to_kernel >= 1 && fast >= 1,
        "{to_kernel} to the kernel, {fast} on the stack:\n{log}"
    );
    assert!(log.contains("all 16 socket slots in use"), "{log}");
    eprintln!("100 connections: {fast} on the stack, {to_kernel} sent to the kernel");
}

#[test]
fn a_gigabyte_each_way_survives_a_move_every_tenth_of_a_second() {
    transfer_with_moves(1_000_000_000, None);
}

#[test]
fn a_transfer_each_way_survives_moves_with_one_percent_loss() {
    transfer_with_moves(300_000_000, Some(1));
}

/// Drops `percent`% of the TCP segments `side` sends and receives (nftables in its
/// namespace, which goes with the topology).
fn drop_percent(t: &Topology, side: Side, percent: u32) {
    let rules = format!(
        "table inet fastnet_loss {{\n\
         chain input {{ type filter hook input priority 0; meta l4proto tcp numgen random mod 100 < {percent} counter drop; }}\n\
         chain output {{ type filter hook output priority 0; meta l4proto tcp numgen random mod 100 < {percent} counter drop; }}\n\
         }}\n"
    );
    let mut nft = t.command(side, "nft");
    nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = nft.spawn().expect("nft (nftables) runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft refused {rules}");
}

/// The kernel's count of segments `side`'s nftables loss rules dropped.
fn dropped_by_rules(t: &Topology, side: Side) -> String {
    let out = t
        .command(side, "nft")
        .args(["list", "table", "inet", "fastnet_loss"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A transfer of `size` bytes each way between an asyncio server under fastnet and a
/// kernel client (50 MB/s each way), its connection moved kernel <-> stack every
/// ~100 ms, with `loss`% of the client's segments dropped each way.
/// Starts `server` (a script and its text, run under fastnet on `port`, sending `size`
/// bytes of stream 7) and the kernel client `move_client.py` (sending `size` bytes of
/// stream 8 at `rate` bytes/s while reading); returns once they are connected, with the
/// server's pid.
fn start_transfer(
    t: &Topology,
    dir: &Path,
    server: (&str, &str),
    port: u16,
    size: u64,
    rate: u64,
) -> (Bg, Bg, u32) {
    for (name, text) in [
        server,
        ("move_client.py", MOVE_CLIENT),
        ("move_stream.py", MOVE_STREAM),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut s = fastnet_cmd(t, Side::Server, "python3");
    s.arg(dir.join(server.0))
        .arg(port.to_string())
        .arg(size.to_string())
        .arg("7");
    let mut server = spawn(s, &dir.join("server.log"));
    wait_listening(t, Side::Server, port, &mut server);
    let pid = server.pid();
    let mut c = t.command(Side::Client, "python3");
    c.arg(dir.join("move_client.py"))
        .arg(t.addr(Side::Server).to_string())
        .arg(port.to_string())
        .arg(size.to_string())
        .arg("7")
        .arg(rate.to_string());
    let client = spawn(c, &dir.join("client.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while gauge(pid, "tcp.state.established") != Some(1) {
        assert!(Instant::now() < deadline, "client did not connect");
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, client, pid)
}

fn transfer_with_moves(size: u64, loss: Option<u32>) {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-moves");
    if let Some(percent) = loss {
        drop_percent(&t, Side::Client, percent);
    }
    let retrans_before = kernel_retransmits(&t, Side::Client);
    let (mut server, mut client, pid) = start_transfer(
        &t,
        &dir,
        ("move_server.py", MOVE_SERVER),
        7306,
        size,
        50_000_000,
    );
    let mut moves = 0;
    let mut took_us: Vec<u64> = Vec::new();
    // Peer retransmissions after each move: [to the kernel, to the stack].
    let mut per_move: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let (mut last_move, mut retrans_at_move): (Option<usize>, u64) = (None, retrans_before);
    let deadline = Instant::now() + Duration::from_secs(240);
    // Rounds (a move and ~100 ms each) in which the client's socket neither sent nor
    // received a byte: a stall, not slowness, once there are many in a row.
    let (mut progress, mut idle_rounds) = (client_progress(&t), 0);
    // Until either side is done (the server exits once it has everything).
    while client.child.try_wait().unwrap().is_none() && server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "transfer still running after {moves} moves"
        );
        let now = client_progress(&t);
        // No socket: the client is done with the network (and checks its bytes).
        if now != progress || now == (0, 0) {
            (progress, idle_rounds) = (now, 0);
        } else {
            idle_rounds += 1;
        }
        assert!(
            idle_rounds < 50,
            "the transfer stalled after {moves} moves: the client's socket\n{}\n{}\nthe server's kernel socket\n{}\nthe server\n{}",
            ss_info(&t, Side::Client),
            String::from_utf8_lossy(&t.command(Side::Client, "nstat").args(["-az"]).output().unwrap().stdout)
                .lines()
                .filter(|l| !l.contains(" 0 "))
                .collect::<Vec<_>>()
                .join("\n"),
            ss_info(&t, Side::Server),
            server_stat(pid)
        );
        let to = if moves % 2 == 0 { "kernel" } else { "stack" };
        // What the peer sent again since the last move is that move's cost (a move's
        // losses are repaired within milliseconds; moves are ~100 ms apart).
        let retrans_now = kernel_retransmits(&t, Side::Client);
        if let Some(last) = last_move.take() {
            per_move[last].push(retrans_now - retrans_at_move);
        }
        retrans_at_move = retrans_now;
        let (_, answer) = handoff_verb(pid, to);
        if answer.starts_with("ok moved=1 ") {
            last_move = Some((moves % 2) as usize);
            moves += 1;
            if let Some(us) = answer
                .split_whitespace()
                .find_map(|w| w.strip_prefix("took_us="))
                .and_then(|v| v.parse::<u64>().ok())
            {
                took_us.push(us);
            }
        } else {
            eprintln!("move {moves} to the {to}: {answer}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "client did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = std::fs::read_to_string(&client.log).unwrap();
    let w: Vec<&str> = report.split_whitespace().collect();
    // sent-sha S got N H want W
    assert_eq!(w.len(), 7, "client: {report}");
    let (sent_sha, got, got_sha, want) = (w[1], w[3], w[4], w[6]);
    assert_eq!(
        (got, got_sha),
        (size.to_string().as_str(), want),
        "client received"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.output();
    let line = log
        .lines()
        .find(|l| l.starts_with("got "))
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        line,
        format!("got {size} {sent_sha}"),
        "server received:\n{log}"
    );
    let c = exit_counters(&log);
    let (to_k, to_s) = (
        c.get("handoff.to_kernel.verb").copied().unwrap_or(0),
        c.get("handoff.to_stack.verb").copied().unwrap_or(0),
    );
    assert!(
        moves >= 20 && to_k + to_s == moves,
        "{moves} moves, counted {to_k} + {to_s}:\n{log}"
    );
    let dropped = if loss.is_some() {
        let rules = dropped_by_rules(&t, Side::Client);
        let counts: Vec<u64> = rules
            .split("packets ")
            .skip(1)
            .filter_map(|w| w.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(
            counts.len() == 2 && counts.iter().all(|&n| n > 0),
            "the loss rules dropped nothing each way:\n{rules}"
        );
        format!(", segments dropped (in, out): {counts:?}")
    } else {
        String::new()
    };
    let peer = kernel_retransmits(&t, Side::Client) - retrans_before;
    took_us.sort_unstable();
    assert_eq!(
        took_us.len(),
        moves as usize,
        "every answer says how long it took"
    );
    // A move's cost is the peer's retransmissions until the next move. The peer's
    // segments that reached us while a connection was rebuilt as a kernel socket are
    // carried over, so most moves cost nothing; a few still cost a burst (a window the
    // kernel or the stack could not take at once, a loss recovery under way).
    let [to_kernel, to_stack] = per_move.map(|mut v| {
        v.sort_unstable();
        v
    });
    let quantile = |v: &[u64], q: usize| v.get(v.len() * q / 4).copied().unwrap_or(0);
    eprintln!(
        "peer retransmissions per move, median / third quartile / max: to the kernel {} / {} / {}, \
         to the stack {} / {} / {}; moves to the kernel carried {} late bytes and passed {} \
         frames to the kernel ({} dropped)",
        quantile(&to_kernel, 2),
        quantile(&to_kernel, 3),
        to_kernel.last().copied().unwrap_or(0),
        quantile(&to_stack, 2),
        quantile(&to_stack, 3),
        to_stack.last().copied().unwrap_or(0),
        c.get("handoff.late_bytes").copied().unwrap_or(0),
        c.get("handoff.frames_passed").copied().unwrap_or(0),
        c.get("handoff.frames_dropped").copied().unwrap_or(0),
    );
    // Half the moves cost the peer at most 5 retransmissions each way. Measured: the
    // median 0 and the third quartile 0-1 in most runs; in one run of ten on a loaded
    // machine (half the usual moves) many moves lost a whole window, the medians 2 and
    // 1, the third quartiles 180 and 38. Before the late bytes were carried the median
    // was 0 as well (half the moves to the stack cost 20-250 and a fifth of those to
    // the kernel 30-260). Not with loss on the link: its own retransmissions fall
    // between the moves.
    for (to, costs) in [("kernel", &to_kernel), ("stack", &to_stack)] {
        if loss.is_some() {
            break;
        }
        assert!(
            quantile(costs, 2) <= 5,
            "moves to the {to} cost the peer {costs:?} retransmissions"
        );
    }
    eprintln!(
        "{moves} moves, {} MB each way byte-exact{dropped}; retransmissions: peer {peer} \
         ({:.1} per move), stack {}; a move took {} us (median), {} us (max)",
        size / 1_000_000,
        peer as f64 / moves as f64,
        c.get("tcp.retransmits").copied().unwrap_or(0),
        took_us[took_us.len() / 2],
        took_us[took_us.len() - 1]
    );
}

/// An app that calls its socket without pause (non-blocking reads and writes in a
/// loop) while it moves between the stack and the kernel every ~20 ms: no call sees the
/// socket while a move reads it in repair mode (a read would fail with EPERM, a write
/// would be lost), and both streams arrive byte-exact.
#[test]
fn an_app_calling_its_socket_without_pause_survives_moves_both_ways() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-busy");
    let size = 30_000_000u64;
    let (mut server, mut client, pid) = start_transfer(
        &t,
        &dir,
        ("busy_socket_server.py", BUSY_SERVER),
        7309,
        size,
        10_000_000,
    );
    let mut moves = [0u32; 2];
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "server still running:\n{}",
            server.output()
        );
        let i = (moves[0] + moves[1]) as usize % 2;
        let (_, answer) = handoff_verb(pid, ["kernel", "stack"][i]);
        if answer.starts_with("ok moved=1 ") {
            moves[i] += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.output();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "client did not finish:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = std::fs::read_to_string(&client.log).unwrap();
    let w: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(w.len(), 7, "client: {report}\nserver: {log}");
    assert_eq!(
        (w[3], w[4]),
        (size.to_string().as_str(), w[6]),
        "client received; server: {log}"
    );
    let got = log
        .lines()
        .find(|l| l.starts_with("got ") || l.starts_with("error "));
    assert_eq!(
        got,
        Some(format!("got {size} {}", w[1]).as_str()),
        "server: {log}"
    );
    assert!(
        moves[1] >= 5,
        "only {moves:?} moves (to the kernel, to the stack)"
    );
    eprintln!(
        "{moves:?} moves (to the kernel, to the stack), {} MB each way byte-exact",
        size / 1_000_000
    );
}

/// Timeouts, keepalive parameters, TCP_USER_TIMEOUT, SO_LINGER and TCP_NODELAY the app
/// set read back the same after its connection moved to the kernel and back.
#[test]
fn socket_options_the_app_set_survive_moves_both_ways() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-options");
    std::fs::write(dir.join("options_server.py"), OPTIONS_SERVER).unwrap();
    std::fs::write(dir.join("options_client.py"), OPTIONS_CLIENT).unwrap();
    let port = 7308;
    let mut s = fastnet_cmd(&t, Side::Server, "python3");
    s.arg(dir.join("options_server.py")).arg(port.to_string());
    let mut server = spawn(s, &dir.join("server.log"));
    wait_listening(&t, Side::Server, port, &mut server);
    let pid = server.pid();
    let mut c = t.command(Side::Client, "python3");
    c.arg(dir.join("options_client.py"))
        .arg(t.addr(Side::Server).to_string())
        .arg(port.to_string())
        .arg(&dir);
    let mut client = spawn(c, &dir.join("client.log"));
    let answers = |n: usize, client: &mut Bg| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&client.log).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("rcvtimeo="))
                .map(String::from)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "no answer {n}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let handoff = |to: &str| {
        let (_, answer) = handoff_verb(pid, to);
        assert!(answer.starts_with("ok moved=1 "), "to the {to}: {answer}");
    };
    // On the stack, after the move to the kernel, and back on the stack.
    std::fs::write(dir.join("go-0"), "").unwrap();
    answers(1, &mut client);
    handoff("kernel");
    std::fs::write(dir.join("go-1"), "").unwrap();
    answers(2, &mut client);
    handoff("stack");
    std::fs::write(dir.join("go-2"), "").unwrap();
    let got = answers(3, &mut client);
    let _ = client.child.wait();
    // The server ends by itself at the client's end-of-file (and prints its counters
    // at exit); a SIGTERM before that would kill it without them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = false;
    while !exited && Instant::now() < deadline {
        exited = server.child.try_wait().unwrap().is_some();
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = if exited {
        server.output()
    } else {
        server.stop()
    };
    // The timeouts as a kernel socket keeps them (rounded up to its tick).
    let timeouts = log
        .lines()
        .find_map(|l| l.strip_prefix("kernel keeps "))
        .expect("the server's reference line");
    let want = format!(
        "{timeouts} keepalive=1 idle=30 intvl=7 cnt=4 user_timeout=12000 linger=(1, 9) nodelay=1"
    );
    assert_eq!(got, vec![want; 3], "stack, kernel, stack again");
    let c = exit_counters(&log);
    assert_eq!(
        (
            c.get("handoff.to_kernel.verb"),
            c.get("handoff.to_stack.verb")
        ),
        (Some(&1), Some(&1)),
        "{log}"
    );
}

/// A server that exits with a connection open hands it to the kernel, which finishes
/// it (FIN, then TIME-WAIT once the peer closes). A server started again on the port
/// with SO_REUSEADDR, as servers do, binds at once, as on Linux: repair mode had left
/// the moved socket without SO_REUSEADDR, and its TIME-WAIT refused the new listener
/// (EADDRINUSE) for a minute.
#[test]
fn a_server_restarted_at_once_binds_beside_the_time_wait_of_a_moved_connection() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("handoff-restart");
    let port = 7303;
    let server = format!(
        r#"
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port})); s.listen(4)
c, _ = s.accept()
c.sendall(b"bye")
os._exit(0)
"#
    );
    let mut c = fastnet_cmd(&t, Side::Server, "python3");
    c.args(["-c", &server]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, port, &mut srv);
    let client = format!(
        r#"
import socket, time
s = socket.create_connection(("{ip}", {port}), timeout=10)
got = b""
while True:
    d = s.recv(100)
    if not d: break
    got += d
# Closing late: the server's end is the kernel's by then (FIN-WAIT-2).
time.sleep(1)
s.close()
print("client got", got, flush=True)
"#,
        ip = t.addr(Side::Server)
    );
    let out = t
        .command(Side::Client, "python3")
        .args(["-c", &client])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("client got b'bye'"),
        "{text}\n{}",
        srv.output()
    );
    let log = srv.wait_exit(Duration::from_secs(10));
    assert_eq!(
        exit_counters(&log).get("handoff.to_kernel.exit"),
        Some(&1),
        "{log}"
    );
    // The kernel holds the server's end in TIME-WAIT now.
    let peer = format!("{}", t.addr(Side::Client));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kernel_sockets_to(&t, Side::Server, &peer)
        .iter()
        .any(|(s, _)| s == "TIME-WAIT")
    {
        assert!(
            Instant::now() < deadline,
            "no TIME-WAIT: {:?}",
            kernel_sockets_to(&t, Side::Server, &peer)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = format!(
        r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port})); s.listen(4)
print("bound again", flush=True)
"#
    );
    let out = t
        .command(Side::Server, "python3")
        .args(["-c", &again])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bound again"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
