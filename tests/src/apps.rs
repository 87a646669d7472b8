//! Running stock programs in the topology, plain or under `fastnet run`, and checking
//! what they did.

use crate::shim::fastnet_bin;
use crate::{Side, Topology};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A background process, killed (by its PID) when dropped.
pub struct Bg {
    pub child: Child,
    pub log: PathBuf,
}

impl Bg {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        .env("FASTNET_STATS", "1");
    c
}

/// `redis-server` on `port` under fastnet in `side`, without persistence and
/// answering other hosts (protected mode off); add `--dir` etc. as needed.
pub fn fastnet_redis(topo: &Topology, side: Side, port: u16) -> Command {
    let mut c = fastnet_cmd(topo, side, "redis-server");
    c.args([
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--protected-mode", "no"]);
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

/// The counters a fastnet process printed at exit (`FASTNET_STATS=1`), by name.
pub fn exit_counters(log: &str) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    if let Some(line) = log.lines().rev().find(|l| l.contains("counters:")) {
        for kv in line.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                if let Ok(v) = v.parse() {
                    m.insert(k.to_string(), v);
                }
            }
        }
    }
    m
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
