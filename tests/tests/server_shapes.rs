//! Server shapes on the fast path (issue 17): a socket created before `fork` works in
//! the process that uses it. Stock servers run under `fastnet run` in the server
//! namespace; many stock clients at once in the other check every byte that comes
//! back; the proof that the fast path carried the flows is the XDP program attached,
//! no kernel TCP connection on the port, and the family's counters (connections moved
//! to the children that served them).

use fastnet_e2e::apps::{
    assert_xdp_attached, fastnet_cmd, kernel_connections, scratch, spawn, summed_exit_counters,
    wait_listening, Bg,
};
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
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
