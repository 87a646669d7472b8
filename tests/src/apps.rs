//! Running stock programs in the topology, plain or under `fastnet run`, and checking
//! what they did.

use crate::shim::fastnet_bin;
use crate::{Side, Topology};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the shim logs when the fast path does not start (process.rs `start`).
pub const FELL_BACK: &str = "kernel: fast path off:";

/// A background process, killed (by its PID) when dropped.
pub struct Bg {
    pub child: Child,
    pub log: PathBuf,
}

impl Bg {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (stdout and stderr). A fastnet process that
    /// fell back to the kernel at start fails the test here: no test passes on the
    /// kernel path by accident.
    pub fn output(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !text.contains(FELL_BACK),
            "a fastnet process ran on the kernel:\n{text}"
        );
        text
    }

    /// Waits for the process to end by itself (panics after `within`); its output.
    pub fn wait_exit(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "pid {} still runs after {within:?}:\n{}",
                self.pid(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.output()
    }

    /// Ends the process with SIGTERM and waits for it (so at-exit work runs).
    pub fn stop(&mut self) -> String {
        self.stop_with(libc::SIGTERM)
    }

    /// Ends the process with `sig` and waits for it.
    pub fn stop_with(&mut self, sig: i32) -> String {
        // SAFETY: kill(2) on the PID of a child we started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.output();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still running: say where it is stuck before ending it.
        let pid = self.child.id();
        let mut stuck = format!("\n[test] pid {pid} ignored signal {sig} for 10 s;");
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let wchan = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                stuck += &format!(" task {:?} wchan={wchan} stat={stat};", t.file_name());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output() + &stuck
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Where a test's files go: unique per test process and call.
pub fn scratch(tag: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("fastnet-e2e-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    // Servers that drop privileges (nginx workers) must read it.
    let _ = Command::new("chmod").arg("755").arg(&p).status();
    p
}

/// `program args...` in `side`'s namespace, under `fastnet run --iface` of that side.
pub fn fastnet_cmd(topo: &Topology, side: Side, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", topo.ns(side)])
        .arg(fastnet_bin())
        .args(["run", "--iface", topo.iface(side), "--", program])
        .env("FASTNET_STATS", "1")
        // A test never runs on the kernel by accident: the fast path starts or
        // `fastnet run` exits non-zero.
        .env_remove("FASTNET_FALLBACK");
    c
}

/// An nginx configuration in `dir` (1 worker as `nobody`, files from `dir`/www) listening
/// on `port`.
pub fn nginx_conf(dir: &Path, port: u16) -> std::path::PathBuf {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user nobody nogroup;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 4096; }}\n\
             http {{ access_log off; sendfile on; keepalive_requests 100000;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen {port}; root {d}/www; }} }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    conf
}

/// `redis-server` on `port` under fastnet in `side`, without persistence and
/// answering other hosts (protected mode off); add `--dir` etc. as needed.
pub fn fastnet_redis(topo: &Topology, side: Side, port: u16) -> Command {
    let mut c = fastnet_cmd(topo, side, "redis-server");
    c.args(["--port", &port.to_string()]).args([
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]);
    c
}

/// Starts `cmd` in the background with its output in a log file.
pub fn spawn(mut cmd: Command, log: &Path) -> Bg {
    let f = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Bg {
        child,
        log: log.to_path_buf(),
    }
}

/// Waits until something listens on TCP `port` in `side`'s namespace.
pub fn wait_listening(topo: &Topology, side: Side, port: u16, bg: &mut Bg) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = bg.child.try_wait() {
            panic!("server exited ({st}) before listening:\n{}", bg.output());
        }
        let out = topo
            .command(side, "ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .unwrap();
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}:\n{}", bg.output());
}

/// Established kernel TCP connections on `port` in `side`'s namespace (the fast path
/// makes none: its flows never touch the kernel's TCP).
pub fn kernel_connections(topo: &Topology, side: Side, port: u16) -> usize {
    let out = topo
        .command(side, "ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} or dport = :{port} )"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// `ip -d link show` of `side`'s interface (its XDP program, if any, on a `prog/xdp` line).
pub fn link_details(topo: &Topology, side: Side) -> String {
    let out = topo
        .command(side, "ip")
        .args(["-d", "link", "show", "dev", topo.iface(side)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Some XDP program is attached to `side`'s interface now.
pub fn xdp_attached(topo: &Topology, side: Side) -> bool {
    link_details(topo, side).contains("prog/xdp")
}

/// Part of the proof that the fast path carried a flow: fastnet's steering program is
/// attached to `side`'s interface now (call while the server runs).
pub fn assert_xdp_attached(topo: &Topology, side: Side) {
    let text = link_details(topo, side);
    assert!(
        text.contains("prog/xdp") && text.contains("name fastnet_steer"),
        "fastnet's XDP program is not attached to {}:\n{text}",
        topo.iface(side)
    );
}

/// The rest of the proof, from the counters a fastnet process printed at exit: its
/// stack received and sent at least `min_bytes` each way over AF_XDP, it had a socket on
/// each of the `queues` queues in use, and no frame for its ports fell on a queue
/// without one.
pub fn assert_fast_path_counters(log: &str, min_bytes: u64, queues: u64) {
    let c = exit_counters(log);
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    assert!(
        get("rx.bytes") >= min_bytes && get("tx.bytes") >= min_bytes,
        "the stack did not carry the flow (rx.bytes {} tx.bytes {}, wanted >= {min_bytes}):\n{log}",
        get("rx.bytes"),
        get("tx.bytes")
    );
    assert!(get("tcp.segments_in") + get("rx.frames") > 0, "{log}");
    assert_eq!(get("iface.queues"), queues, "AF_XDP sockets bound:\n{log}");
    assert_eq!(
        get("drop.no_xsk"),
        0,
        "frames on a queue without a socket:\n{log}"
    );
    assert!(
        !log.contains("kernel: "),
        "the process fell back to the kernel:\n{log}"
    );
}

/// The counters a fastnet process printed at exit (`FASTNET_STATS=1`), by name: of the
/// processes in `log`, the one whose stack carried the most bytes (nginx's worker, not
/// its master, which prints its own idle counters too).
pub fn exit_counters(log: &str) -> std::collections::HashMap<String, u64> {
    let traffic = |m: &std::collections::HashMap<String, u64>| {
        m.get("rx.bytes").copied().unwrap_or(0) + m.get("tx.bytes").copied().unwrap_or(0)
    };
    let mut best = std::collections::HashMap::new();
    for line in log.lines().filter(|l| l.contains("counters:")) {
        let mut m = std::collections::HashMap::new();
        add_counters(&mut m, line);
        if best.is_empty() || traffic(&m) >= traffic(&best) {
            best = m;
        }
    }
    best
}

/// The counters every fastnet process in `log` printed at exit, added up by name (a
/// server's master and its workers).
pub fn summed_exit_counters(log: &str) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for line in log.lines().filter(|l| l.contains("counters:")) {
        add_counters(&mut m, line);
    }
    m
}

fn add_counters(m: &mut std::collections::HashMap<String, u64>, line: &str) {
    for kv in line.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            if let Ok(v) = v.parse::<u64>() {
                *m.entry(k.to_string()).or_insert(0) += v;
            }
        }
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Writes `len` pseudo-random bytes (deterministic per seed) to `p`.
pub fn random_file(p: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(p).unwrap());
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
}

/// UDP datagrams the kernel delivered to its sockets in `side`'s namespace so far
/// (`Udp: InDatagrams` of /proc/net/snmp and `Udp6InDatagrams` of snmp6): a fast-path
/// UDP flow adds none.
pub fn kernel_udp_datagrams(topo: &Topology, side: Side) -> u64 {
    let out = topo
        .command(side, "cat")
        .arg("/proc/net/snmp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDatagrams")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .expect("Udp InDatagrams in /proc/net/snmp")
        + kernel_udp6_datagrams(topo, side)
}

/// The kernel's IPv6 UDP datagrams received in `side`'s namespace (Udp6InDatagrams).
fn kernel_udp6_datagrams(topo: &Topology, side: Side) -> u64 {
    let out = topo
        .command(side, "cat")
        .arg("/proc/net/snmp6")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Udp6InDatagrams"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A client script that sends `n` bytes, reads the echo back, prints "ready" and the
/// socket's family, holds the connection for a moment (so the test can look at the
/// kernel's sockets), and prints whether the echo matched.
const ECHO_CLIENT: &str = r#"
import socket, sys, threading, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes((i * 7 + i // 251) & 255 for i in range(1 << 16)) * (n >> 16)
s = socket.create_connection((host, port))
got = bytearray()
def rd():
    while len(got) < len(data):
        d = s.recv(1 << 20)
        if not d: break
        got.extend(d)
t = threading.Thread(target=rd); t.start()
s.sendall(data)
t.join(60)
print("ready", "family", s.family.name, flush=True)
time.sleep(1.0)
s.close()
print("echo", "ok" if bytes(got) == data else "MISMATCH %d/%d" % (len(got), len(data)), flush=True)
"#;

/// Runs the echo client (stock, in the client namespace) against `host` `port` with
/// `n` bytes; `during` runs while its connection is still open (after the echo), and
/// `stuck` describes the state for the failure message if it never gets there.
pub fn echo_client(
    t: &Topology,
    host: &str,
    port: u16,
    n: usize,
    during: impl FnOnce(),
    stuck: &dyn Fn() -> String,
) -> String {
    let dir = scratch("echo-client");
    let log = dir.join("client.log");
    let mut c = t.command(Side::Client, "/usr/bin/python3");
    c.args(["-c", ECHO_CLIENT, host, &port.to_string(), &n.to_string()]);
    let mut bg = spawn(c, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bg.output().contains("ready") {
        if let Ok(Some(_)) = bg.child.try_wait() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client stuck:\n{}\n{}",
            bg.output(),
            stuck()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    during();
    let _ = bg.child.wait();
    let out = bg.output();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A stock (kernel) nginx in the client namespace serving `dir`/www on `listen`
/// (`addr:port` or `[addr]:port`), waited for on `port`.
pub fn kernel_nginx(t: &Topology, dir: &Path, listen: &str, port: u16) -> Bg {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile on; server {{ listen {listen}; root {d}/www; }} }}\n",
            d = dir.display(),
        ),
    )
    .unwrap();
    let mut c = t.command(Side::Client, "nginx");
    c.args(["-c", conf.to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("nginx.log"));
    wait_listening(t, Side::Client, port, &mut srv);
    srv
}
