//! The compatibility matrix (issue 25): stock programs in the roles users run them,
//! the fast-path side under `fastnet run --iface` and the other side stock, in a fresh
//! two-namespace topology per row. Each row checks the result byte for byte with at
//! least 10 clients at once, that the fast path carried it (XDP attached, the stack's
//! counters moved, the kernel holding no connection or datagram for the flow) and that
//! nothing crashed.
//!
//! `FASTNET_COMPAT=full` runs every row and writes docs/COMPATIBILITY.md (`make
//! compat`); otherwise the quick rows run (`make test`). `FASTNET_COMPAT_ROWS=a,b` runs
//! the rows whose name contains one of the words. `FASTNET_TOPOLOGY` picks the
//! queue layout (see [`topology`]). A failing row fails the test unless it names the open
//! issue it waits on.

use fastnet_e2e::apps::{
    exit_counters, kernel_connections, kernel_udp_datagrams, random_file, scratch, sha256_file,
    spawn, xdp_attached, Bg,
};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Clients at once in every row.
const PARALLEL: usize = 10;
const PY: &str = "/usr/bin/python3";

/// The topology rows run in: FASTNET_TOPOLOGY's queue layout (see
/// `fastnet_tools::netns::QueueLayout`), by default a veth with the kernel's default
/// queue counts, as users make it.
fn topology() -> Topology {
    assert!(is_root(), "the compatibility matrix needs root");
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

/// What a row's run showed about the fast path.
#[derive(Default)]
struct Evidence {
    xdp_attached: bool,
    /// Summed over the fastnet processes on the row's interface, sampled after the load.
    rx_bytes: u64,
    tx_bytes: u64,
    processes: usize,
    /// Most kernel TCP connections on the row's port seen during the load (fast side).
    kernel_conns: usize,
    /// Datagrams the kernel delivered on the fast side during the load.
    kernel_datagrams: u64,
}

impl Evidence {
    fn summary(&self) -> String {
        format!(
            "XDP {}; {} fastnet process(es): rx {} B, tx {} B; kernel: {} conn, {} datagrams",
            if self.xdp_attached { "on" } else { "OFF" },
            self.processes,
            self.rx_bytes,
            self.tx_bytes,
            self.kernel_conns,
            self.kernel_datagrams
        )
    }

    /// Why this is not fast-path evidence, if it is not.
    fn lacking(&self, min_bytes: u64) -> Option<String> {
        if !self.xdp_attached {
            return Some("no XDP program attached".into());
        }
        if self.rx_bytes < min_bytes || self.tx_bytes == 0 {
            return Some(format!(
                "the stack's counters did not move enough (rx {} B, tx {} B, want rx ≥ {min_bytes})",
                self.rx_bytes, self.tx_bytes
            ));
        }
        if self.kernel_conns > 0 {
            return Some(format!(
                "the kernel held {} connection(s)",
                self.kernel_conns
            ));
        }
        if self.kernel_datagrams > 0 {
            return Some(format!(
                "the kernel received {} datagram(s)",
                self.kernel_datagrams
            ));
        }
        None
    }
}

/// One row's world: its topology, scratch directory and which side runs fastnet.
struct Ctx {
    t: Topology,
    dir: PathBuf,
    fast: Side,
}

impl Ctx {
    /// `program args` on the fast side, under fastnet.
    fn fast_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.t.ns(self.fast)])
            .arg(fastnet_bin())
            .args(["run", "--iface", self.t.iface(self.fast), "--", program])
            .args(args)
            .env("FASTNET_STATS", "1");
        c
    }

    /// `program args` on `side`, stock.
    fn cmd(&self, side: Side, program: &str, args: &[&str]) -> Command {
        let mut c = self.t.command(side, program);
        c.args(args);
        c
    }

    fn start(&self, name: &str, c: Command) -> Bg {
        spawn(c, &self.dir.join(format!("{name}.log")))
    }

    fn server_ip(&self) -> String {
        self.t.server_ip.to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn xdp_attached(&self) -> bool {
        xdp_attached(&self.t, self.fast)
    }

    /// Every nonzero counter of the fastnet processes on the fast side's interface.
    fn counter_dump(&self) -> String {
        let iface = self.t.iface(self.fast);
        let mut out = String::new();
        for (pid, path) in fastnet_stats::live_segments() {
            let Ok(seg) = fastnet_stats::StatsSegment::open(&path) else {
                continue;
            };
            if seg.iface() == iface {
                let _ = write!(out, " [pid {pid}:");
                for (c, v) in seg.snapshot() {
                    if v != 0 {
                        let _ = write!(out, " {}={v}", c.name());
                    }
                }
                out.push(']');
            }
        }
        out
    }

    /// The counters of every live fastnet process on the fast side's interface.
    fn counters(&self, ev: &mut Evidence) {
        let iface = self.t.iface(self.fast);
        for (_, path) in fastnet_stats::live_segments() {
            let Ok(seg) = fastnet_stats::StatsSegment::open(&path) else {
                continue;
            };
            if seg.iface() == iface {
                ev.processes += 1;
                ev.rx_bytes += seg.get(fastnet_stats::Counter::RxBytes);
                ev.tx_bytes += seg.get(fastnet_stats::Counter::TxBytes);
            }
        }
    }
}

/// Waits until TCP `port` listens on `side` (the server process still alive).
fn wait_tcp(ctx: &Ctx, side: Side, port: u16, bg: &mut Bg) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = bg.child.try_wait() {
            return Err(format!(
                "server exited ({st}) before listening: {}",
                tail(&bg.output())
            ));
        }
        if listening(ctx, side, port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on {port}: {}", tail(&bg.output())))
}

fn wait_log(bg: &mut Bg, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bg.output().contains(what) {
        if let Ok(Some(st)) = bg.child.try_wait() {
            return Err(format!(
                "exited ({st}) before {what:?}: {}",
                tail(&bg.output())
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("no {what:?}: {}", tail(&bg.output())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The last lines of a log, for a reason column.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// Runs the clients at once (each `make(i)`), sampling the fast side's kernel TCP
/// connections on `port` (and its kernel UDP datagrams) while they run; 180 s at most.
fn load(
    ctx: &Ctx,
    port: u16,
    n: usize,
    make: impl Fn(usize) -> Command,
    ev: &mut Evidence,
) -> Result<Vec<Output>, String> {
    let udp_before = kernel_udp_datagrams(&ctx.t, ctx.fast);
    let mut kids: Vec<_> = (0..n)
        .map(|i| {
            make(i)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("client {i}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    // Drain the pipes in threads so a client never blocks on a full pipe.
    let readers: Vec<_> = kids
        .iter_mut()
        .map(|k| {
            let mut out = k.stdout.take().unwrap();
            let mut err = k.stderr.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut o = Vec::new();
                let mut e = Vec::new();
                let _ = out.read_to_end(&mut o);
                let _ = err.read_to_end(&mut e);
                (o, e)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut statuses = vec![None; n];
    while statuses.iter().any(|s| s.is_none()) {
        ev.kernel_conns = ev
            .kernel_conns
            .max(kernel_connections(&ctx.t, ctx.fast, port));
        ev.xdp_attached |= ctx.xdp_attached();
        // Processes forked per connection take their counters with them when they
        // exit: keep the most seen during the load.
        let mut now = Evidence::default();
        ctx.counters(&mut now);
        ev.processes = ev.processes.max(now.processes);
        ev.rx_bytes = ev.rx_bytes.max(now.rx_bytes);
        ev.tx_bytes = ev.tx_bytes.max(now.tx_bytes);
        for (i, k) in kids.iter_mut().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = k.try_wait().unwrap();
            }
        }
        if Instant::now() > deadline {
            for k in kids.iter_mut() {
                let _ = k.kill();
                let _ = k.wait();
            }
            return Err("clients still running after 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    ev.kernel_datagrams = kernel_udp_datagrams(&ctx.t, ctx.fast) - udp_before;
    Ok(readers
        .into_iter()
        .zip(statuses)
        .map(|(r, st)| {
            let (stdout, stderr) = r.join().unwrap();
            Output {
                status: st.unwrap(),
                stdout,
                stderr,
            }
        })
        .collect())
}

fn all_ok(outs: &[Output], check: impl Fn(usize, &str) -> bool) -> Result<(), String> {
    for (i, o) in outs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() || !check(i, &stdout) {
            if std::env::var_os("FASTNET_COMPAT_DEBUG").is_some() {
                eprintln!("client {i} stdout:\n{stdout}");
            }
            return Err(format!(
                "client {i}: {} stdout {:?} stderr {:?}",
                o.status,
                tail(&stdout),
                tail(&String::from_utf8_lossy(&o.stderr))
            ));
        }
    }
    Ok(())
}

/// After the load: the counters, and the server still alive and free of crash messages.
fn finish(ctx: &Ctx, srv: &mut Bg, ev: &mut Evidence) -> Result<(), String> {
    settle(ctx, ev);
    if let Ok(Some(st)) = srv.child.try_wait() {
        return Err(format!(
            "the fast-path process exited ({st}): {}",
            tail(&srv.output())
        ));
    }
    no_crash(&srv.output())
}

/// Whether XDP is attached, and the fast side's counters once they settled.
fn settle(ctx: &Ctx, ev: &mut Evidence) {
    ev.xdp_attached = ctx.xdp_attached();
    // Bytes the clients' kernels still had in flight when the clients exited: wait
    // until the counters settle (3 s at most).
    let mut last = Evidence::default();
    ctx.counters(&mut last);
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        let mut now = Evidence::default();
        ctx.counters(&mut now);
        let settled = now.rx_bytes == last.rx_bytes;
        last = now;
        if settled {
            break;
        }
    }
    ev.processes = ev.processes.max(last.processes);
    ev.rx_bytes = ev.rx_bytes.max(last.rx_bytes);
    ev.tx_bytes = ev.tx_bytes.max(last.tx_bytes);
    if std::env::var_os("FASTNET_COMPAT_DEBUG").is_some() {
        eprintln!("counters:{}", ctx.counter_dump());
    }
}

/// A server's log free of crash messages.
fn no_crash(log: &str) -> Result<(), String> {
    for bad in [
        "panicked",
        "Segmentation fault",
        "core dumped",
        "about to kill",
    ] {
        if log.contains(bad) {
            return Err(format!("{bad}: {}", tail(log)));
        }
    }
    Ok(())
}

/// A server that daemonizes (forks, and the process fastnet started exits): found by
/// its pid file; ended when dropped, also when the row failed (SIGTERM, then SIGKILL
/// for it and its children).
struct Daemon {
    pid: i32,
    /// Where it writes (its stderr after daemonizing), and where the process fastnet
    /// started wrote: checked for crash messages and for a fall-back to the kernel.
    logs: [PathBuf; 2],
    /// The process fastnet started (exited): kept for its log, which goes with it.
    _first: Bg,
}

impl Daemon {
    /// Runs `c`, which daemonizes: its first process must exit with 0, `pid_file` name
    /// a live process, and `port` listen.
    fn start(
        ctx: &Ctx,
        c: Command,
        pid_file: &Path,
        log: &Path,
        port: u16,
    ) -> Result<Daemon, String> {
        let mut first = ctx.start("server", c);
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            if let Ok(Some(st)) = first.child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = first.child.kill();
                let _ = first.child.wait();
                return Err(format!(
                    "did not daemonize in 20 s: {}",
                    tail(&read(&first.log))
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !st.success() {
            return Err(format!(
                "the first process exited ({st}): {}",
                tail(&read(&first.log))
            ));
        }
        let pid = loop {
            let pid = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
                .filter(|&p| alive(p));
            if let Some(pid) = pid {
                break pid;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no live process in {}: {}",
                    pid_file.display(),
                    tail(&read(&first.log))
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let d = Daemon {
            pid,
            logs: [log.to_path_buf(), first.log.clone()],
            _first: first,
        };
        while !listening(ctx, Side::Server, port) {
            if !alive(pid) || Instant::now() > deadline {
                return Err(format!(
                    "the daemon never listened on {port}: {}",
                    tail(&d.output())
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn output(&self) -> String {
        self.logs.iter().map(|l| read(l)).collect()
    }

    /// After the load: the counters, and the daemon alive, on the fast path and free
    /// of crash messages.
    fn finish(&self, ctx: &Ctx, ev: &mut Evidence) -> Result<(), String> {
        settle(ctx, ev);
        let log = self.output();
        if !alive(self.pid) {
            return Err(format!("the daemon exited: {}", tail(&log)));
        }
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(fastnet_e2e::apps::FELL_BACK))
        {
            return Err(format!("the daemon runs on the kernel: {line}"));
        }
        no_crash(&log)
    }

    /// Ends it and checks that nothing of the fast path stays behind: the XDP program
    /// goes with the last process of the family.
    fn stop(self, ctx: &Ctx) -> Result<(), String> {
        drop(self);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ctx.xdp_attached() {
            if Instant::now() > deadline {
                return Err("the XDP program stayed attached after the daemon stopped".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let kids: Vec<i32> =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        // SAFETY: kill(2) on the daemon this row started (its pid file names it).
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in std::iter::once(self.pid).chain(kids) {
            if alive(pid) {
                // SAFETY: as above, and its children (forked by it, e.g. workers).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A log as it is so far (a daemon's: [`Bg::output`] would panic on a fall-back,
/// which [`Daemon::finish`] reports as the row's failure instead).
fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// True while `pid` runs (a zombie does not count).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// True when something listens on TCP `port` on `side`.
fn listening(ctx: &Ctx, side: Side, port: u16) -> bool {
    let out = ctx
        .cmd(side, "ss", &["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// A web root with one file of `len` pseudo-random bytes; returns its sha256.
fn web_root(ctx: &Ctx, len: usize) -> String {
    let www = ctx.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let f = www.join("data.bin");
    random_file(&f, len, 25);
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&www)
        .status();
    sha256_file(&f)
}

/// `PARALLEL` downloads of /data.bin from `ip:port` by curl or wget on the client side, each
/// checked against `sha`.
fn downloads(
    ctx: &Ctx,
    tool: &str,
    ip: &str,
    port: u16,
    sha: &str,
    fast_client: bool,
    ev: &mut Evidence,
) -> Result<(), String> {
    let url = format!("http://{ip}:{port}/data.bin");
    let outs = load(
        ctx,
        port,
        PARALLEL,
        |i| {
            let out = ctx.path(&format!("got{i}.bin"));
            let args: Vec<&str> = match tool {
                "wget" => vec!["-q", "-O", &out, &url],
                _ => vec!["-sS", "--fail", "-o", &out, &url],
            };
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if fast_client {
                ctx.fast_cmd(tool, &args)
            } else {
                ctx.cmd(Side::Client, tool, &args)
            }
        },
        ev,
    )?;
    all_ok(&outs, |_, _| true)?;
    if fast_client {
        client_counters(&outs, ev);
    }
    for i in 0..PARALLEL {
        let got = sha256_file(&ctx.dir.join(format!("got{i}.bin")));
        if got != sha {
            return Err(format!("download {i}: sha256 {got}, want {sha}"));
        }
    }
    Ok(())
}

/// A stock HTTP server under fastnet, `PARALLEL` curl downloads of a 4 MB file.
fn http_server(ctx: &Ctx, port: u16, srv: Command, client: &str) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let sha = web_root(ctx, 4 << 20);
    let mut srv = ctx.start("server", srv);
    wait_tcp(ctx, Side::Server, port, &mut srv)?;
    downloads(ctx, client, &ctx.server_ip(), port, &sha, false, &mut ev)?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

fn nginx_conf(ctx: &Ctx, port: u16, workers: u32) -> String {
    nginx_conf_with(ctx, port, workers, "off")
}

/// nginx's configuration with `daemon on|off` (Debian ships `on`, its default).
fn nginx_conf_with(ctx: &Ctx, port: u16, workers: u32, daemon: &str) -> String {
    let d = ctx.dir.display();
    std::fs::create_dir_all(ctx.dir.join("tmp")).unwrap();
    let conf = ctx.path("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user nobody nogroup;\nworker_processes {workers};\ndaemon {daemon};\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen {port}; root {d}/www; }} }}\n"
        ),
    )
    .unwrap();
    conf
}

fn row_nginx(ctx: &Ctx, workers: u32) -> Result<Evidence, String> {
    let conf = nginx_conf(ctx, 8080, workers);
    let srv = ctx.fast_cmd("nginx", &["-c", &conf]);
    http_server(ctx, 8080, srv, "curl")
}

/// nginx as it ships: `daemon on` (the process fastnet started opens the listener,
/// forks the master and exits; the master forks the workers), 2 workers.
fn row_nginx_daemon(ctx: &Ctx) -> Result<Evidence, String> {
    let sha = web_root(ctx, 4 << 20);
    let conf = nginx_conf_with(ctx, 8080, 2, "on");
    daemon_row(
        ctx,
        ctx.fast_cmd("nginx", &["-c", &conf]),
        &ctx.dir.join("nginx.pid"),
        &ctx.dir.join("error.log"),
        8080,
        |ctx, ev| downloads(ctx, "curl", &ctx.server_ip(), 8080, &sha, false, ev),
    )
}

/// A daemonizing server under fastnet: started (see [`Daemon::start`]), loaded by
/// `clients`, checked, stopped (the XDP program must go with it).
fn daemon_row(
    ctx: &Ctx,
    c: Command,
    pid_file: &Path,
    log: &Path,
    port: u16,
    clients: impl Fn(&Ctx, &mut Evidence) -> Result<(), String>,
) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let d = Daemon::start(ctx, c, pid_file, log, port)?;
    clients(ctx, &mut ev)?;
    d.finish(ctx, &mut ev)?;
    d.stop(ctx)?;
    Ok(ev)
}

fn row_python_http(ctx: &Ctx) -> Result<Evidence, String> {
    let www = ctx.path("www");
    let srv = ctx.fast_cmd(
        PY,
        &[
            "-m",
            "http.server",
            "8081",
            "--bind",
            "0.0.0.0",
            "--directory",
            &www,
        ],
    );
    http_server(ctx, 8081, srv, "wget")
}

fn row_lighttpd(ctx: &Ctx) -> Result<Evidence, String> {
    let conf = ctx.path("lighttpd.conf");
    std::fs::write(
        &conf,
        format!(
            "server.document-root = \"{d}/www\"\nserver.port = 8082\nserver.bind = \"0.0.0.0\"\n\
             server.errorlog = \"{d}/lighttpd-error.log\"\n",
            d = ctx.dir.display()
        ),
    )
    .unwrap();
    let srv = ctx.fast_cmd("lighttpd", &["-D", "-f", &conf]);
    http_server(ctx, 8082, srv, "curl")
}

fn apache_conf(ctx: &Ctx, port: u16, mpm: &str) -> String {
    let d = ctx.dir.display();
    let conf = ctx.path("apache2.conf");
    let m = "/usr/lib/apache2/modules";
    std::fs::write(
        &conf,
        format!(
            "LoadModule mpm_{mpm}_module {m}/mod_mpm_{mpm}.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             ServerName compat.test\nListen {port}\nUser nobody\nGroup nogroup\n\
             PidFile {d}/apache.pid\nErrorLog {d}/apache-error.log\nDefaultRuntimeDir {d}\n\
             Mutex file:{d}\nDocumentRoot {d}/www\nEnableSendfile On\n\
             <Directory {d}/www>\n  Require all granted\n</Directory>\n"
        ),
    )
    .unwrap();
    conf
}

fn row_apache(ctx: &Ctx, mpm: &str) -> Result<Evidence, String> {
    let conf = apache_conf(ctx, 8083, mpm);
    let srv = ctx.fast_cmd("apache2", &["-f", &conf, "-DFOREGROUND"]);
    http_server(ctx, 8083, srv, "curl")
}

fn row_node_http(ctx: &Ctx) -> Result<Evidence, String> {
    let www = ctx.path("www");
    let script = format!(
        "const http=require('http'),fs=require('fs');\
         http.createServer((q,r)=>{{fs.createReadStream('{www}'+q.url).on('error',()=>{{r.statusCode=404;r.end();}}).pipe(r);}})\
         .listen(8084,'0.0.0.0');"
    );
    let srv = ctx.fast_cmd("node", &["-e", &script]);
    http_server(ctx, 8084, srv, "curl")
}

/// An echo client: sends `n` pseudo-random bytes (seeded by its index), reads them
/// back, prints "echo ok" when they match.
const ECHO_CLIENT: &str = r#"
import socket, sys, threading
host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = bytes(((i * 131 + seed * 7 + (i >> 9)) & 255) for i in range(n))
s = socket.create_connection((host, port), timeout=60)
got = bytearray()
def rd():
    while len(got) < len(data):
        d = s.recv(1 << 20)
        if not d: break
        got.extend(d)
t = threading.Thread(target=rd); t.start()
s.sendall(data)
t.join(60)
s.close()
print("echo", "ok" if bytes(got) == data else "MISMATCH %d/%d" % (len(got), len(data)))
"#;

/// An echo client that sends 1 MB in 4 KiB turns, each echoed whole before the next:
/// for servers that relay through pipes with blocking writes (ncat --exec writes to
/// its child's stdin without reading its stdout meanwhile, so a client that streams
/// 1 MB while reading deadlocks it on the kernel too once both pipes are full).
const ECHO_TURNS_CLIENT: &str = r#"
import socket, sys
host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = bytes(((i * 131 + seed * 7 + (i >> 9)) & 255) for i in range(n))
s = socket.create_connection((host, port), timeout=60)
got = bytearray()
for off in range(0, n, 4096):
    s.sendall(data[off:off + 4096])
    while len(got) < min(off + 4096, n):
        d = s.recv(65536)
        if not d: break
        got.extend(d)
s.close()
print("echo", "ok" if bytes(got) == data else "MISMATCH %d/%d" % (len(got), len(data)))
"#;

/// An echo server under fastnet on `port`, `PARALLEL` echo clients of 1 MB each.
fn echo_server(ctx: &Ctx, port: u16, srv: Command) -> Result<Evidence, String> {
    echo_server_with(ctx, port, srv, ECHO_CLIENT)
}

/// `echo_server` with the given client script.
fn echo_server_with(ctx: &Ctx, port: u16, srv: Command, client: &str) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start("server", srv);
    wait_tcp(ctx, Side::Server, port, &mut srv)?;
    let ip = ctx.server_ip();
    let n = (1 << 20).to_string();
    let outs = load(
        ctx,
        port,
        PARALLEL,
        |i| {
            ctx.cmd(
                Side::Client,
                PY,
                &["-c", client, &ip, &port.to_string(), &n, &i.to_string()],
            )
        },
        &mut ev,
    )?;
    all_ok(&outs, |_, o| o.contains("echo ok"))?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

fn row_asyncio(ctx: &Ctx) -> Result<Evidence, String> {
    let script = r#"
import asyncio
async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d: break
        w.write(d); await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", 8090)
    async with srv: await srv.serve_forever()
asyncio.run(main())
"#;
    echo_server(ctx, 8090, ctx.fast_cmd(PY, &["-c", script]))
}

fn row_socketserver(ctx: &Ctx) -> Result<Evidence, String> {
    let script = r#"
import socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d: break
            self.request.sendall(d)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 8091), H).serve_forever()
"#;
    echo_server(ctx, 8091, ctx.fast_cmd(PY, &["-c", script]))
}

fn row_socat_fork(ctx: &Ctx) -> Result<Evidence, String> {
    echo_server(
        ctx,
        8092,
        ctx.fast_cmd("socat", &["TCP-LISTEN:8092,reuseaddr,fork", "PIPE"]),
    )
}

/// inetd's shape: the forked child execs the service with the connection as its
/// stdin and stdout (`nofork`: socat relays nothing, cat holds the socket itself).
fn row_socat_exec(ctx: &Ctx) -> Result<Evidence, String> {
    echo_server(
        ctx,
        8095,
        ctx.fast_cmd(
            "socat",
            &["TCP-LISTEN:8095,reuseaddr,fork", "EXEC:cat,nofork"],
        ),
    )
}

fn row_ncat_exec(ctx: &Ctx) -> Result<Evidence, String> {
    echo_server_with(
        ctx,
        8093,
        ctx.fast_cmd("ncat", &["-l", "-k", "8093", "--exec", "/bin/cat"]),
        ECHO_TURNS_CLIENT,
    )
}

/// `ncat -l -k` without --exec: each client's bytes reach ncat's stdout.
fn row_ncat_keep(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start("server", ctx.fast_cmd("ncat", &["-l", "-k", "8094"]));
    wait_tcp(ctx, Side::Server, 8094, &mut srv)?;
    let ip = ctx.server_ip();
    let send = "import socket,sys; s=socket.create_connection((sys.argv[1], 8094)); \
                s.sendall(('client-%s-' % sys.argv[2] + 'x' * 5000 + '\\n').encode()); s.close(); print('sent')";
    let outs = load(
        ctx,
        8094,
        PARALLEL,
        |i| ctx.cmd(Side::Client, PY, &["-c", send, &ip, &i.to_string()]),
        &mut ev,
    )?;
    all_ok(&outs, |_, o| o.contains("sent"))?;
    std::thread::sleep(Duration::from_millis(300));
    let log = srv.output();
    for i in 0..PARALLEL {
        let want = format!("client-{i}-{}", "x".repeat(5000));
        if !log.lines().any(|l| l == want) {
            return Err(format!("client {i}'s line is missing from ncat's output"));
        }
    }
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

/// A throwaway redis-server on `port`: no persistence, reachable from the other side.
fn redis_args(port: &str) -> [&str; 10] {
    [
        "--port",
        port,
        "--bind",
        "0.0.0.0",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]
}

fn row_redis(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start("server", ctx.fast_cmd("redis-server", &redis_args("6380")));
    wait_tcp(ctx, Side::Server, 6380, &mut srv)?;
    redis_clients(ctx, &mut ev)?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

/// redis with `--daemonize yes` (it forks before it opens a socket; the first process
/// exits).
fn row_redis_daemon(ctx: &Ctx) -> Result<Evidence, String> {
    let (pid_file, log) = (ctx.path("redis.pid"), ctx.path("redis.log"));
    let mut args = redis_args("6380").to_vec();
    args.extend([
        "--daemonize",
        "yes",
        "--pidfile",
        &pid_file,
        "--logfile",
        &log,
    ]);
    daemon_row(
        ctx,
        ctx.fast_cmd("redis-server", &args),
        Path::new(&pid_file),
        Path::new(&log),
        6380,
        redis_clients,
    )
}

/// redis-benchmark and 9 clients that each check 100 values of their own, at once.
fn redis_clients(ctx: &Ctx, ev: &mut Evidence) -> Result<(), String> {
    let ip = ctx.server_ip();
    // Each client sets then reads back its own 100 keys (values it can check), while
    // redis-benchmark runs alongside.
    let script = r#"
import socket, sys
ip, k = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((ip, 6380)); f = s.makefile("rb")
def cmd(*a):
    s.sendall(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a))
    line = f.readline()
    if line.startswith(b"$"):
        n = int(line[1:]); v = f.read(n + 2)[:-2]; return v
    return line.strip()
ok = True
for i in range(100):
    key = b"k%d-%d" % (k, i); val = bytes((i * 37 + k + j) & 255 for j in range(1000 + i))
    ok &= cmd(b"SET", key, val) == b"+OK"
    ok &= cmd(b"GET", key) == val
print("redis ok" if ok else "redis MISMATCH")
"#;
    let outs = load(
        ctx,
        6380,
        PARALLEL,
        |i| {
            if i == 0 {
                ctx.cmd(
                    Side::Client,
                    "redis-benchmark",
                    &[
                        "-h", &ip, "-p", "6380", "-c", "10", "-n", "20000", "-t", "set,get", "-q",
                    ],
                )
            } else {
                ctx.cmd(Side::Client, PY, &["-c", script, &ip, &i.to_string()])
            }
        },
        ev,
    )?;
    all_ok(&outs, |i, o| {
        if i == 0 {
            o.contains("SET:") && o.contains("GET:")
        } else {
            o.contains("redis ok")
        }
    })
}

const MEMCACHED_ARGS: [&str; 8] = ["-u", "nobody", "-p", "11212", "-U", "0", "-l", "0.0.0.0"];

fn row_memcached(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start("server", ctx.fast_cmd("memcached", &MEMCACHED_ARGS));
    wait_tcp(ctx, Side::Server, 11212, &mut srv)?;
    memcached_clients(ctx, &mut ev)?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

/// memcached with `-d` (it forks and the first process exits).
fn row_memcached_daemon(ctx: &Ctx) -> Result<Evidence, String> {
    // memcached writes its pid file after it became `nobody`.
    let run = ctx.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pid_file = run.join("memcached.pid").to_str().unwrap().to_string();
    let mut args = MEMCACHED_ARGS.to_vec();
    args.extend(["-d", "-P", &pid_file]);
    daemon_row(
        ctx,
        ctx.fast_cmd("memcached", &args),
        Path::new(&pid_file),
        &ctx.dir.join("server.log"),
        11212,
        memcached_clients,
    )
}

/// 10 clients that each set and get back 300 values of their own, at once.
fn memcached_clients(ctx: &Ctx, ev: &mut Evidence) -> Result<(), String> {
    let ip = ctx.server_ip();
    let script = r#"
import socket, sys
ip, k = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((ip, 11212)); f = s.makefile("rb")
ok = True
for i in range(300):
    key = b"k%d-%d" % (k, i); val = bytes((i * 31 + k + j) & 255 for j in range(500 + i))
    s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(val), val))
    ok &= f.readline() == b"STORED\r\n"
    s.sendall(b"get %s\r\n" % key)
    hdr = f.readline().split()
    got = f.read(int(hdr[3]) + 2)[:-2] if len(hdr) == 4 else b""
    ok &= f.readline() == b"END\r\n" and got == val
print("memcached ok" if ok else "memcached MISMATCH")
"#;
    let outs = load(
        ctx,
        11212,
        PARALLEL,
        |i| ctx.cmd(Side::Client, PY, &["-c", script, &ip, &i.to_string()]),
        ev,
    )?;
    all_ok(&outs, |_, o| o.contains("memcached ok"))
}

/// The address host`i`.compat.test has in the rows' hosts file.
fn dns_answer(i: usize) -> String {
    format!("10.77.{}.{}", 100 + i / 50, i)
}

/// dnsmasq's own config (port 5353, no upstream) and a hosts file of 100 names.
fn dnsmasq_conf(ctx: &Ctx) -> String {
    let hosts: String = (1..=100)
        .map(|i| format!("{} host{i}.compat.test\n", dns_answer(i)))
        .collect();
    std::fs::write(ctx.dir.join("hosts"), hosts).unwrap();
    let conf = ctx.path("dnsmasq.conf");
    std::fs::write(
        &conf,
        format!(
            "no-resolv\nno-hosts\naddn-hosts={}\nport=5353\nuser=root\npid-file=\nlog-facility=-\n",
            ctx.path("hosts")
        ),
    )
    .unwrap();
    conf
}

fn row_dnsmasq(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let conf = dnsmasq_conf(ctx);
    let mut srv = ctx.start(
        "server",
        ctx.fast_cmd("dnsmasq", &["--no-daemon", "-C", &conf]),
    );
    wait_log(&mut srv, "read ")?;
    let ip = format!("@{}", ctx.server_ip());
    let outs = load(
        ctx,
        5353,
        PARALLEL,
        |k| {
            let batch: String = (0..100)
                .map(|q| format!("host{}.compat.test\n", (k * 7 + q) % 100 + 1))
                .collect();
            let f = ctx.path(&format!("batch{k}"));
            std::fs::write(&f, batch).unwrap();
            // A source port of its own per dig: dig binds its random ports with
            // SO_REUSEPORT, so two dig processes can share one, and the kernel then hands
            // one's answer to the other (it drops it; the first times out): 4 of 30
            // rounds with a kernel dnsmasq lost a query that way, 0 of 30 with `-b`.
            let src = format!("{}#{}", ctx.t.client_ip, 20000 + k);
            ctx.cmd(
                Side::Client,
                "dig",
                &[
                    "-p", "5353", &ip, "-b", &src, "+short", "+tries=1", "+time=5", "-f", &f,
                ],
            )
        },
        &mut ev,
    )?;
    finish(ctx, &mut srv, &mut ev)?;
    all_ok(&outs, |k, o| {
        let want: String = (0..100)
            .map(|q| dns_answer((k * 7 + q) % 100 + 1) + "\n")
            .collect();
        o == want
    })?;
    Ok(ev)
}

/// HAProxy under fastnet in front of a kernel nginx in the other namespace;
/// `PARALLEL` downloads of `size` bytes through it.
fn row_haproxy(ctx: &Ctx, mode: &str, size: usize) -> Result<Evidence, String> {
    haproxy_with(ctx, mode, "", size)
}

/// `extra` goes into HAProxy's defaults (e.g. `option splice-auto`).
fn haproxy_with(ctx: &Ctx, mode: &str, extra: &str, size: usize) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let sha = web_root(ctx, size);
    let conf = nginx_conf(ctx, 8085, 1);
    let mut backend = ctx.start("backend", ctx.cmd(Side::Client, "nginx", &["-c", &conf]));
    wait_tcp(ctx, Side::Client, 8085, &mut backend)?;
    let hconf = ctx.path("haproxy.cfg");
    std::fs::write(
        &hconf,
        format!(
            "global\n  nbthread 1\ndefaults\n  mode {mode}\n{extra}  timeout connect 5s\n  timeout client 60s\n\
             timeout server 60s\nfrontend f\n  bind 0.0.0.0:8086\n  default_backend b\n\
             backend b\n  server s1 {}:8085\n",
            ctx.t.client_ip
        ),
    )
    .unwrap();
    let mut srv = ctx.start("server", ctx.fast_cmd("haproxy", &["-db", "-f", &hconf]));
    wait_tcp(ctx, Side::Server, 8086, &mut srv)?;
    downloads(ctx, "curl", &ctx.server_ip(), 8086, &sha, false, &mut ev)?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// PostgreSQL under fastnet (as the postgres user), pgbench -c10 from the other side,
/// then psql checking pgbench's invariant (the accounts' balances sum to the history).
fn row_postgres(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let data = ctx.path("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres", &data])
        .status();
    let init = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/initdb"),
            "-A",
            "trust",
            "-D",
            &data,
        ])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "initdb: {}",
            tail(&String::from_utf8_lossy(&init.stderr))
        ));
    }
    std::fs::write(
        format!("{data}/pg_hba.conf"),
        "local all all trust\nhost all all 10.77.0.0/16 trust\n",
    )
    .unwrap();
    let postgres = format!("{PG_BIN}/postgres");
    let mut srv = ctx.start(
        "server",
        ctx.fast_cmd(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &postgres,
                "-D",
                &data,
                "-k",
                &data,
                "-p",
                "5433",
                "-c",
                "listen_addresses=*",
            ],
        ),
    );
    wait_tcp(ctx, Side::Server, 5433, &mut srv)?;
    let ip = ctx.server_ip();
    let conn = ["-h", &ip, "-p", "5433", "-U", "postgres"];
    let init = ctx
        .cmd(
            Side::Client,
            "pgbench",
            &[&conn[..], &["-i", "-s", "1", "postgres"]].concat(),
        )
        .output()
        .unwrap();
    if !init.status.success() {
        return Err(format!(
            "pgbench -i: {}",
            tail(&String::from_utf8_lossy(&init.stderr))
        ));
    }
    let outs = load(
        ctx,
        5433,
        1,
        |_| {
            ctx.cmd(
                Side::Client,
                "pgbench",
                &[&conn[..], &["-c", "10", "-j", "2", "-t", "200", "postgres"]].concat(),
            )
        },
        &mut ev,
    )?;
    all_ok(&outs, |_, o| {
        o.contains("number of transactions actually processed: 2000/2000")
    })?;
    let check = ctx
        .cmd(
            Side::Client,
            "psql",
            &[&conn[..], &["-tAc", "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history) and (select count(*) from pgbench_history) = 2000", "postgres"]].concat(),
        )
        .output()
        .unwrap();
    if String::from_utf8_lossy(&check.stdout).trim() != "t" {
        return Err(format!(
            "psql check: {} {}",
            String::from_utf8_lossy(&check.stdout),
            tail(&String::from_utf8_lossy(&check.stderr))
        ));
    }
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

fn row_iperf3_server(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start("server", ctx.fast_cmd("iperf3", &["-s", "-p", "5201"]));
    wait_tcp(ctx, Side::Server, 5201, &mut srv)?;
    let ip = ctx.server_ip();
    // One iperf3 client with 10 parallel streams (an iperf3 server serves one test at
    // a time).
    let outs = load(
        ctx,
        5201,
        1,
        |_| {
            ctx.cmd(
                Side::Client,
                "iperf3",
                &["-c", &ip, "-p", "5201", "-P", "10", "-n", "100M"],
            )
        },
        &mut ev,
    )?;
    // Byte content is not iperf3's to check: the totals and the stack's counters are.
    all_ok(&outs, |_, o| iperf3_sent_all(o))?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

/// iperf3's summary: the sender sent the 100 MB and the receiver reported (its figure
/// is what the server had read when the test ended, a little less even on the kernel;
/// every byte's arrival is the stack's rx counter, checked after the load).
fn iperf3_sent_all(o: &str) -> bool {
    // "[SUM]   0.00-0.44   sec   100 MBytes  1.92 Gbits/sec ... sender"
    let mbytes = |what: &str| {
        let l = o
            .lines()
            .find(|l| l.starts_with("[SUM]") && l.trim_end().ends_with(what))?;
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&"MBytes")).then(|| f.get(3)?.parse::<f64>().ok())?
    };
    mbytes("sender").is_some_and(|m| m >= 100.0) && mbytes("receiver").is_some_and(|m| m > 0.0)
}

fn row_sockperf_server(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start(
        "server",
        ctx.fast_cmd(
            "sockperf",
            &["server", "--tcp", "-i", "0.0.0.0", "-p", "11111"],
        ),
    );
    wait_tcp(ctx, Side::Server, 11111, &mut srv)?;
    let ip = ctx.server_ip();
    // One client: sockperf's server answers only one ping-pong client at a time (on
    // the kernel too).
    let outs = load(
        ctx,
        11111,
        1,
        |_| {
            ctx.cmd(
                Side::Client,
                "sockperf",
                &[
                    "ping-pong",
                    "--tcp",
                    "-i",
                    &ip,
                    "-p",
                    "11111",
                    "-t",
                    "2",
                    "--msg-size",
                    "64",
                ],
            )
        },
        &mut ev,
    )?;
    all_ok(&outs, |_, o| o.contains("ReceivedMessages"))?;
    finish(ctx, &mut srv, &mut ev)?;
    Ok(ev)
}

/// A stock kernel nginx on the server side, `tool` under fastnet as the client.
fn row_http_client(ctx: &Ctx, tool: &str) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let sha = web_root(ctx, 4 << 20);
    let conf = nginx_conf(ctx, 8087, 1);
    let mut backend = ctx.start("backend", ctx.cmd(Side::Server, "nginx", &["-c", &conf]));
    wait_tcp(ctx, Side::Server, 8087, &mut backend)?;
    downloads(ctx, tool, &ctx.server_ip(), 8087, &sha, true, &mut ev)?;
    kernel_server_alive(&mut backend)?;
    Ok(ev)
}

fn kernel_server_alive(server: &mut Bg) -> Result<(), String> {
    match server.child.try_wait() {
        Ok(Some(st)) => Err(format!("the kernel server exited ({st})")),
        _ => Ok(()),
    }
}

/// Adds a fastnet client's exit counters (FASTNET_STATS=1) to the evidence.
fn client_counters(outs: &[Output], ev: &mut Evidence) {
    for o in outs {
        let c = exit_counters(&String::from_utf8_lossy(&o.stderr));
        ev.processes += 1;
        ev.rx_bytes += c.get("rx.bytes").copied().unwrap_or(0);
        ev.tx_bytes += c.get("tx.bytes").copied().unwrap_or(0);
    }
}

/// One curl process under fastnet making 10 downloads at once (`--parallel`).
fn row_curl_parallel(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let sha = web_root(ctx, 4 << 20);
    let conf = nginx_conf(ctx, 8087, 1);
    let mut backend = ctx.start("backend", ctx.cmd(Side::Server, "nginx", &["-c", &conf]));
    wait_tcp(ctx, Side::Server, 8087, &mut backend)?;
    let url = format!("http://{}:8087/data.bin", ctx.server_ip());
    let mut args: Vec<String> = ["-sS", "--fail", "-Z", "--parallel-max", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..PARALLEL {
        args.extend(["-o".into(), ctx.path(&format!("got{i}.bin")), url.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outs = load(ctx, 8087, 1, |_| ctx.fast_cmd("curl", &args), &mut ev)?;
    all_ok(&outs, |_, _| true)?;
    client_counters(&outs, &mut ev);
    for i in 0..PARALLEL {
        let got = sha256_file(&ctx.dir.join(format!("got{i}.bin")));
        if got != sha {
            return Err(format!("download {i}: sha256 {got}, want {sha}"));
        }
    }
    kernel_server_alive(&mut backend)?;
    Ok(ev)
}

/// redis-benchmark under fastnet (10 connections) against a kernel redis; then a
/// check that its SETs stored the bytes it sent.
fn row_redis_benchmark_client(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start(
        "server",
        ctx.cmd(Side::Server, "redis-server", &redis_args("6381")),
    );
    wait_tcp(ctx, Side::Server, 6381, &mut srv)?;
    let ip = ctx.server_ip();
    let outs = load(
        ctx,
        6381,
        1,
        |_| {
            ctx.fast_cmd(
                "redis-benchmark",
                &[
                    "-h", &ip, "-p", "6381", "-c", "10", "-n", "20000", "-t", "set,get", "-d",
                    "100", "-q",
                ],
            )
        },
        &mut ev,
    )?;
    all_ok(&outs, |_, o| o.contains("SET:") && o.contains("GET:"))?;
    client_counters(&outs, &mut ev);
    // redis-benchmark's SET stores a 100-byte value at key:__rand_int__ (random bytes
    // in Redis 7: its length is what can be checked).
    let v = ctx
        .cmd(
            Side::Server,
            "redis-cli",
            &["-p", "6381", "STRLEN", "key:__rand_int__"],
        )
        .output()
        .unwrap();
    if String::from_utf8_lossy(&v.stdout).trim() != "100" {
        return Err(format!(
            "stored value length {:?}",
            String::from_utf8_lossy(&v.stdout)
        ));
    }
    kernel_server_alive(&mut srv)?;
    Ok(ev)
}

/// dig under fastnet: one process, 1000 queries to a kernel dnsmasq.
fn row_dig_client(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let conf = dnsmasq_conf(ctx);
    let mut srv = ctx.start(
        "server",
        ctx.cmd(Side::Server, "dnsmasq", &["--no-daemon", "-C", &conf]),
    );
    wait_log(&mut srv, "read ")?;
    let batch: String = (0..1000)
        .map(|q| format!("host{}.compat.test\n", q % 100 + 1))
        .collect();
    let f = ctx.path("batch");
    std::fs::write(&f, batch).unwrap();
    let at = format!("@{}", ctx.server_ip());
    let outs = load(
        ctx,
        5353,
        1,
        |_| {
            ctx.fast_cmd(
                "dig",
                &["-p", "5353", &at, "+short", "+tries=1", "+time=5", "-f", &f],
            )
        },
        &mut ev,
    )?;
    all_ok(&outs, |_, o| {
        let want: String = (0..1000).map(|q| dns_answer(q % 100 + 1) + "\n").collect();
        o == want
    })?;
    client_counters(&outs, &mut ev);
    kernel_server_alive(&mut srv)?;
    Ok(ev)
}

/// iperf3 under fastnet sending 100 MB over 10 streams to a kernel iperf3 -s.
fn row_iperf3_client(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    let mut srv = ctx.start(
        "server",
        ctx.cmd(Side::Server, "iperf3", &["-s", "-p", "5202"]),
    );
    wait_tcp(ctx, Side::Server, 5202, &mut srv)?;
    let ip = ctx.server_ip();
    let outs = load(
        ctx,
        5202,
        1,
        |_| {
            ctx.fast_cmd(
                "iperf3",
                &["-c", &ip, "-p", "5202", "-P", "10", "-n", "100M"],
            )
        },
        &mut ev,
    )?;
    all_ok(&outs, |_, o| iperf3_sent_all(o))?;
    client_counters(&outs, &mut ev);
    // The sender's counters: what it received is ACKs; it sent the bulk.
    ev.rx_bytes = ev.rx_bytes.max(ev.tx_bytes);
    kernel_server_alive(&mut srv)?;
    Ok(ev)
}

/// wrk under fastnet: 10 connections for 2 s against a kernel nginx; every response
/// must be a 200 of the right length.
fn row_wrk_client(ctx: &Ctx) -> Result<Evidence, String> {
    let mut ev = Evidence::default();
    web_root(ctx, 4096);
    let conf = nginx_conf(ctx, 8088, 1);
    let mut backend = ctx.start("backend", ctx.cmd(Side::Server, "nginx", &["-c", &conf]));
    wait_tcp(ctx, Side::Server, 8088, &mut backend)?;
    let url = format!("http://{}:8088/data.bin", ctx.server_ip());
    let outs = load(
        ctx,
        8088,
        1,
        |_| ctx.fast_cmd("wrk", &["-t", "1", "-c", "10", "-d", "2s", &url]),
        &mut ev,
    )?;
    all_ok(&outs, |_, o| {
        o.contains("requests in") && !o.contains("Non-2xx") && !o.contains("Socket errors")
    })?;
    client_counters(&outs, &mut ev);
    kernel_server_alive(&mut backend)?;
    Ok(ev)
}

struct Row {
    name: &'static str,
    /// Command whose first output line names the version.
    version: &'static [&'static str],
    role: &'static str,
    fast: Side,
    quick: bool,
    /// The open issue a failure of this row waits on.
    waits_on: Option<&'static str>,
    run: fn(&Ctx) -> Result<Evidence, String>,
    /// Fewest bytes the fast side must have received.
    min_rx: u64,
}

fn rows() -> Vec<Row> {
    use Side::*;
    vec![
        Row { name: "nginx-1-worker", version: &["nginx", "-v"], role: "HTTP server (1 worker), 10 curl downloads of 4 MB", fast: Server, quick: true, waits_on: None, run: |c| row_nginx(c, 1), min_rx: 10_000 },
        Row { name: "nginx-2-workers", version: &["nginx", "-v"], role: "HTTP server (2 workers), 10 curl downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: |c| row_nginx(c, 2), min_rx: 10_000 },
        Row { name: "nginx-daemon", version: &["nginx", "-v"], role: "HTTP server as shipped (`daemon on`: the process started opens the listener, forks the master and exits), 2 workers, 10 curl downloads of 4 MB; the XDP program goes when nginx stops", fast: Server, quick: true, waits_on: None, run: row_nginx_daemon, min_rx: 10_000 },
        Row { name: "redis", version: &["redis-server", "--version"], role: "key-value server: redis-benchmark -c10 plus 9 clients checking 100 values each", fast: Server, quick: true, waits_on: None, run: row_redis, min_rx: 100_000 },
        Row { name: "redis-daemonize", version: &["redis-server", "--version"], role: "key-value server with --daemonize yes, redis-benchmark -c10 plus 9 checking clients; the XDP program goes when redis stops", fast: Server, quick: false, waits_on: None, run: row_redis_daemon, min_rx: 100_000 },
        Row { name: "memcached", version: &["memcached", "-V"], role: "cache server, 10 clients set/get 300 values each", fast: Server, quick: false, waits_on: None, run: row_memcached, min_rx: 100_000 },
        Row { name: "memcached-daemon", version: &["memcached", "-V"], role: "cache server with -d (it becomes `nobody`, then forks and the first process exits, before it opens a socket), 10 clients set/get 300 values each; the XDP program goes when memcached stops", fast: Server, quick: false, waits_on: None, run: row_memcached_daemon, min_rx: 100_000 },
        Row { name: "dnsmasq", version: &["dnsmasq", "--version"], role: "UDP DNS server (IP_PKTINFO), 10 dig clients × 100 queries", fast: Server, quick: false, waits_on: None, run: row_dnsmasq, min_rx: 30_000 },
        Row { name: "python-http.server", version: &[PY, "--version"], role: "HTTP server, 10 wget downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: row_python_http, min_rx: 1_000 },
        Row { name: "python-asyncio-echo", version: &[PY, "--version"], role: "asyncio echo server, 10 clients × 1 MB", fast: Server, quick: true, waits_on: None, run: row_asyncio, min_rx: 10 << 20 },
        Row { name: "python-socketserver-echo", version: &[PY, "--version"], role: "ThreadingTCPServer echo, 10 clients × 1 MB", fast: Server, quick: false, waits_on: None, run: row_socketserver, min_rx: 10 << 20 },
        Row { name: "lighttpd", version: &["lighttpd", "-v"], role: "HTTP server, 10 curl downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: row_lighttpd, min_rx: 1_000 },
        Row { name: "apache2-event", version: &["apache2", "-v"], role: "HTTP server (mpm_event), 10 curl downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: |c| row_apache(c, "event"), min_rx: 1_000 },
        Row { name: "apache2-prefork", version: &["apache2", "-v"], role: "HTTP server (mpm_prefork), 10 curl downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: |c| row_apache(c, "prefork"), min_rx: 1_000 },
        Row { name: "node-http", version: &["node", "--version"], role: "HTTP server, 10 curl downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: row_node_http, min_rx: 1_000 },
        Row { name: "haproxy-tcp", version: &["haproxy", "-v"], role: "TCP proxy in front of nginx in the other namespace, 10 curl downloads of 4 MB", fast: Server, quick: false, waits_on: None, run: |c| row_haproxy(c, "tcp", 4 << 20), min_rx: 40 << 20 },
        Row { name: "haproxy-http", version: &["haproxy", "-v"], role: "HTTP proxy (no splicing) in front of nginx in the other namespace, 10 curl downloads of 20 MB", fast: Server, quick: false, waits_on: None, run: |c| row_haproxy(c, "http", 20 << 20), min_rx: 200 << 20 },
        Row { name: "haproxy-http-splice", version: &["haproxy", "-v"], role: "HTTP proxy with option splice-auto in front of nginx in the other namespace, 10 curl downloads of 20 MB", fast: Server, quick: false, waits_on: None, run: |c| haproxy_with(c, "http", "  option splice-auto\n", 20 << 20), min_rx: 200 << 20 },
        Row { name: "postgresql-pgbench", version: &["/usr/lib/postgresql/15/bin/postgres", "--version"], role: "PostgreSQL server (a backend forked per connection), pgbench -c10 -t200, psql checking the balances", fast: Server, quick: false, waits_on: Some("22 (reach: without root; postgres refuses to run as root, and as its own user the hook cannot map page 0, so it runs unaccelerated; unprivileged use through fastnetd is not built yet)"), run: row_postgres, min_rx: 100_000 },
        Row { name: "socat-fork", version: &["socat", "-V"], role: "TCP-LISTEN,fork echo (PIPE), 10 clients × 1 MB", fast: Server, quick: false, waits_on: None, run: row_socat_fork, min_rx: 10 << 20 },
        Row { name: "socat-fork-exec", version: &["socat", "-V"], role: "TCP-LISTEN,fork EXEC:cat,nofork (inetd's shape: cat holds the connection), 10 clients × 1 MB", fast: Server, quick: false, waits_on: None, run: row_socat_exec, min_rx: 10 << 20 },
        Row { name: "ncat-keep", version: &["ncat", "--version"], role: "ncat -l -k, 10 clients sending a line each", fast: Server, quick: false, waits_on: None, run: row_ncat_keep, min_rx: 50_000 },
        Row { name: "ncat-exec", version: &["ncat", "--version"], role: "ncat -l -k --exec /bin/cat echo, 10 clients × 1 MB in 4 KiB turns", fast: Server, quick: false, waits_on: None, run: row_ncat_exec, min_rx: 10 << 20 },
        Row { name: "iperf3-server", version: &["iperf3", "--version"], role: "iperf3 -s, a client with -P 10 sending 100 MB", fast: Server, quick: false, waits_on: None, run: row_iperf3_server, min_rx: 50 << 20 },
        Row { name: "sockperf-server", version: &["sockperf", "--version"], role: "sockperf server --tcp, 1 ping-pong client for 2 s (its server serves one at a time, on the kernel too)", fast: Server, quick: false, waits_on: None, run: row_sockperf_server, min_rx: 10_000 },
        Row { name: "curl-client", version: &["curl", "--version"], role: "HTTP client: one curl, 10 downloads of 4 MB at once (--parallel) from a kernel nginx", fast: Client, quick: true, waits_on: None, run: row_curl_parallel, min_rx: 40 << 20 },
        Row { name: "wget-client", version: &["wget", "--version"], role: "HTTP client: 10 wget processes at once, 4 MB each, from a kernel nginx", fast: Client, quick: false, waits_on: Some("17 (unrelated fastnet processes on one interface: the first attaches, the others exit 2 naming its program; a daemon that hands every process its share, issue 22's fastnetd, is the planned way)"), run: |c| row_http_client(c, "wget"), min_rx: 40 << 20 },
        Row { name: "redis-benchmark-client", version: &["redis-benchmark", "--version"], role: "redis-benchmark -c10 (SET/GET, 100 B values) against a kernel redis", fast: Client, quick: false, waits_on: None, run: row_redis_benchmark_client, min_rx: 100_000 },
        Row { name: "dig-client", version: &["dig", "-v"], role: "DNS client: 1000 queries to a kernel dnsmasq (one dig process, queries in turn)", fast: Client, quick: false, waits_on: None, run: row_dig_client, min_rx: 30_000 },
        Row { name: "iperf3-client", version: &["iperf3", "--version"], role: "iperf3 -c -P 10 sending 100 MB to a kernel iperf3 -s", fast: Client, quick: false, waits_on: None, run: row_iperf3_client, min_rx: 100 << 20 },
        Row { name: "wrk-client", version: &["wrk", "-v"], role: "wrk -c10 for 2 s against a kernel nginx (every response a 200)", fast: Client, quick: false, waits_on: None, run: row_wrk_client, min_rx: 100_000 },
    ]
}

fn version(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output();
    let Ok(out) = out else {
        return "not installed".into();
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("?")
        .trim();
    line.chars().take(60).collect::<String>().replace('|', "/")
}

enum Verdict {
    Pass,
    Waits(String),
    Fail(String),
}

#[test]
fn compat_matrix() {
    let full = std::env::var("FASTNET_COMPAT").is_ok_and(|v| v == "full");
    let only: Vec<String> = std::env::var("FASTNET_COMPAT_ROWS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut table = Vec::new();
    for row in rows() {
        let chosen = if only.is_empty() {
            full || row.quick
        } else {
            only.iter().any(|w| row.name.contains(w.as_str()))
        };
        if !chosen {
            continue;
        }
        let t = topology();
        let ctx = Ctx {
            t,
            dir: scratch(&format!("compat-{}", row.name)),
            fast: row.fast,
        };
        let started = Instant::now();
        let r = (row.run)(&ctx);
        let (verdict, evidence) = match r {
            Ok(ev) => match ev.lacking(row.min_rx) {
                Some(why) => (
                    Verdict::Fail(format!("not on the fast path: {why}")),
                    ev.summary(),
                ),
                None => (Verdict::Pass, ev.summary()),
            },
            Err(why) => (
                Verdict::Fail(if std::env::var_os("FASTNET_COMPAT_DEBUG").is_some() {
                    why + &ctx.counter_dump()
                } else {
                    why
                }),
                String::new(),
            ),
        };
        let verdict = match (verdict, row.waits_on) {
            (Verdict::Fail(why), Some(issue)) => {
                Verdict::Waits(format!("{why} — waits on issue {issue}"))
            }
            (v, _) => v,
        };
        eprintln!(
            "compat {:<26} {:>5.1}s {}",
            row.name,
            started.elapsed().as_secs_f64(),
            match &verdict {
                Verdict::Pass => "pass".to_string(),
                Verdict::Waits(w) => format!("waits: {w}"),
                Verdict::Fail(f) => format!("FAIL: {f}"),
            }
        );
        table.push((row.name, version(row.version), row.role, verdict, evidence));
        let _ = std::fs::remove_dir_all(&ctx.dir);
    }
    let mut md = String::from(
        "# Compatibility matrix\n\n\
         Generated by `make compat` (tests/tests/compat_matrix.rs). Each row runs in a fresh \
         two-namespace topology: the program under `fastnet run --iface` on one side, stock \
         programs on the other, at least 10 clients at once, every result checked byte for byte. \
         Fast-path evidence: the XDP program attached, the stack's counters of the fastnet \
         processes on that interface (rx/tx bytes), and the kernel of the fast side holding no \
         TCP connection on the row's port (sampled with `ss` during the load) and receiving no \
         UDP datagram (`Udp: InDatagrams`).\n\n",
    );
    let layout = TopologyOptions::for_tests().queues;
    let _ = writeln!(
        md,
        "Queues of each veth end: `{layout}` (FASTNET_TOPOLOGY; `default` is a plain `ip link add`: \
         one queue in use of one per CPU allocated, what users get).\n"
    );
    md.push_str(
        "| program | version | role | result | fast-path evidence / reason |\n|---|---|---|---|---|\n",
    );
    let mut failed = Vec::new();
    for (name, ver, role, verdict, ev) in &table {
        let (res, why) = match verdict {
            Verdict::Pass => ("pass".to_string(), ev.clone()),
            Verdict::Waits(w) => ("waits".to_string(), w.clone()),
            Verdict::Fail(f) => {
                failed.push(format!("{name}: {f}"));
                ("FAIL".to_string(), f.clone())
            }
        };
        let _ = writeln!(
            md,
            "| {name} | {ver} | {role} | {res} | {} |",
            why.replace('|', "/").replace('\n', " ")
        );
    }
    md.push_str(
        "\nClient rows run fastnet on the client side: their counters are the clients' exit \
         counters (`FASTNET_STATS=1`), XDP and the kernel's connections are sampled while they run.\n",
    );
    if full && only.is_empty() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/COMPATIBILITY.md");
        std::fs::write(&path, &md).unwrap();
    }
    eprintln!("{md}");
    assert!(failed.is_empty(), "rows failed:\n{}", failed.join("\n"));
}
