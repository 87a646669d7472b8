//! Stock programs on the fast path (issue: shim). The server runs under `fastnet run`
//! in the server namespace, the client is stock in the other; results are checked byte
//! for byte, and the counters prove the fast path carried the traffic.

use fastnet_e2e::apps::{
    echo_client, exit_counters, fastnet_cmd, fastnet_redis, kernel_connections, kernel_nginx,
    random_file, scratch, sha256_file, spawn, wait_listening,
};
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};

const PY: &str = "/usr/bin/python3";

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions::for_tests()).expect("topology")
}

/// What a stuck transfer looks like: the client's kernel socket and the server's
/// fastnet counters (for the test's failure message).
fn stuck_state(t: &Topology) -> String {
    let ss = t
        .command(Side::Client, "ss")
        .args(["-tnoi"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let stat = t
        .command(
            Side::Server,
            fastnet_e2e::shim::fastnet_bin().to_str().unwrap(),
        )
        .args(["stat", "--all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!(
        "client ss:\n{ss}\nserver stat:\n{stat}\nshim threads:\n{}",
        shim_threads()
    )
}

/// Where every thread of every process with the shim mapped is blocked: its syscall
/// line (number and arguments, from /proc) and kernel wait channel.
fn shim_threads() -> String {
    let mut out = String::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let dir = p.path();
        let mapped =
            std::fs::read_to_string(dir.join("maps")).is_ok_and(|m| m.contains("libfastnet"));
        if !mapped {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            out += &format!(
                "{} {} task {}: syscall {} wchan {}\n",
                p.file_name().to_string_lossy(),
                comm.trim(),
                t.file_name().to_string_lossy(),
                read("syscall").trim(),
                read("wchan").trim()
            );
        }
    }
    out
}

fn run_echo_client(t: &Topology, port: u16, n: usize, during: impl FnOnce()) -> String {
    echo_client(t, &t.server_ip.to_string(), port, n, during, &|| {
        stuck_state(t)
    })
}

#[test]
fn python_echo_server_on_the_fast_path() {
    let t = topo();
    let dir = scratch("pyecho");
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET6)            # dual-stack, like Go's ":port"
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 7000)); s.listen(8)
c, a = s.accept()
while True:
    d = c.recv(1 << 16)
    if not d: break
    c.sendall(d)
c.close(); s.close()
print("peer", a[0], flush=True)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7000, &mut srv);
    let n = 20 << 20;
    let out = run_echo_client(&t, 7000, n, || {
        assert_eq!(
            kernel_connections(&t, Side::Server, 7000),
            0,
            "the kernel carried the flow"
        );
    });
    assert!(out.contains("echo ok"), "{out}");
    let _ = srv.child.wait();
    let log = srv.output();
    assert!(
        log.contains("peer ::ffff:10.77.0.2"),
        "v4-mapped peer on a v6 socket: {log}"
    );
    let c = exit_counters(&log);
    assert!(c.get("rx.bytes").copied().unwrap_or(0) >= n as u64, "{log}");
    assert!(c.get("tx.bytes").copied().unwrap_or(0) >= n as u64, "{log}");
}

#[test]
fn redis_benchmark_big_values_and_a_million_keys() {
    let t = topo();
    let dir = scratch("redis");
    let mut c = fastnet_redis(&t, Side::Server, 6390);
    c.args(["--dir", dir.to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 6390, &mut srv);
    let host = t.server_ip.to_string();

    // The default test set, kernel client.
    let out = run_ok(
        t.command(Side::Client, "redis-benchmark")
            .args(["-h", &host, "-p", "6390", "-c", "32", "-n", "3000", "-q"]),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("SET:") && text.contains("LRANGE_600"),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("error"), "{text}");

    // The client under fastnet too (fastnet <-> fastnet).
    let mut c = fastnet_cmd(&t, Side::Client, "redis-benchmark");
    c.args([
        "-h",
        &host,
        "-p",
        "6390",
        "-c",
        "32",
        "-n",
        "20000",
        "-q",
        "-t",
        "set,get,incr,lpush,mset",
    ]);
    let out = run_ok(&mut c);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("MSET") && !text.to_lowercase().contains("error"),
        "{text}"
    );
    let cc = exit_counters(&text);
    assert!(
        cc.get("tx.frames").copied().unwrap_or(0) > 20_000,
        "client not on the fast path: {text}"
    );

    // 1 MB value byte-exact.
    let big = dir.join("big.bin");
    let hex: String = (0..(1 << 20) / 2)
        .map(|i| format!("{:02x}", (i * 31 % 251) as u8))
        .collect();
    std::fs::write(&big, &hex).unwrap();
    run_ok(t.command(Side::Client, "sh").args([
        "-c",
        &format!("redis-cli -h {host} -p 6390 -x set big < {}", big.display()),
    ]));
    let out = run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &host, "-p", "6390", "--raw", "get", "big"]),
    );
    assert_eq!(out.stdout.len(), hex.len() + 1);
    assert!(out.stdout.starts_with(hex.as_bytes()), "1 MB value differs");

    // 1 M keys through --pipe.
    let cmds = dir.join("cmds.txt");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&cmds).unwrap());
        for i in 0..1_000_000u32 {
            let k = format!("k{i}");
            let v = format!("v{}", i ^ 0x5a5a);
            write!(
                f,
                "*3\r\n$3\r\nSET\r\n${}\r\n{}\r\n${}\r\n{}\r\n",
                k.len(),
                k,
                v.len(),
                v
            )
            .unwrap();
        }
    }
    // redis-benchmark leaves its own keys behind: count from here.
    let out = run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &host, "-p", "6390", "dbsize"]),
    );
    let before: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = run_ok(t.command(Side::Client, "sh").args([
        "-c",
        &format!("redis-cli -h {host} -p 6390 --pipe < {}", cmds.display()),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 1000000"), "{text}");
    let out = run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &host, "-p", "6390", "dbsize"]),
    );
    let after: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(after - before, 1_000_000, "1 M new keys");
    let out = run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &host, "-p", "6390", "get", "k777"]),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("v{}", 777 ^ 0x5a5a)
    );

    let log = srv.stop();
    let c = exit_counters(&log);
    assert!(c.get("rx.frames").copied().unwrap_or(0) > 10_000, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memcached_ten_thousand_keys() {
    let t = topo();
    let dir = scratch("memcached");
    let mut c = fastnet_cmd(&t, Side::Server, "memcached");
    c.args([
        "-u", "root", "-p", "11299", "-U", "0", "-l", "0.0.0.0", "-c", "1024",
    ]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 11299, &mut srv);
    let client = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 11299))
f = s.makefile("rwb")
for i in range(10000):
    v = ("value-%d-" % i).encode() * (1 + i % 13)
    f.write(b"set key%d 0 0 %d\r\n%s\r\n" % (i, len(v), v))
f.flush()
for i in range(10000):
    assert f.readline() == b"STORED\r\n", i
bad = 0
for i in range(10000):
    f.write(b"get key%d\r\n" % i)
f.flush()
for i in range(10000):
    v = ("value-%d-" % i).encode() * (1 + i % 13)
    head = f.readline()
    if head != b"VALUE key%d 0 %d\r\n" % (i, len(v)): bad += 1; continue
    if f.read(len(v) + 2) != v + b"\r\n": bad += 1
    if f.readline() != b"END\r\n": bad += 1
print("bad", bad)
"#;
    let out = run_ok(
        t.command(Side::Client, PY)
            .args(["-c", client, &t.server_ip.to_string()]),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bad 0");
    let log = srv.stop();
    assert!(
        exit_counters(&log).get("rx.frames").copied().unwrap_or(0) > 100,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn curl_client_fetches_a_gigabyte_from_kernel_nginx() {
    let t = topo();
    let dir = scratch("curl");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file = www.join("big.bin");
    random_file(&file, 1 << 30, 42);
    let want = sha256_file(&file);
    // Kernel nginx on the client side; curl under fastnet on the server side.
    let srv = kernel_nginx(&t, &dir, &format!("{}:8088", t.client_ip), 8088);
    let got = dir.join("got.bin");
    let log = dir.join("curl.log");
    let mut c = fastnet_cmd(&t, Side::Server, "curl");
    c.args([
        "-sS",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{}:8088/big.bin", t.client_ip),
    ]);
    let mut cl = spawn(c, &log);
    let st = cl.child.wait().unwrap();
    let out = cl.output();
    assert!(st.success(), "curl failed: {out}");
    assert_eq!(sha256_file(&got), want, "1 GB differs");
    let c = exit_counters(&out);
    assert!(c.get("rx.bytes").copied().unwrap_or(0) >= 1 << 30, "{out}");
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socat_echo_server() {
    let t = topo();
    let dir = scratch("socat");
    let mut c = fastnet_cmd(&t, Side::Server, "socat");
    // Not PIPE: socat then writes to a pipe only it reads, with a blocking write that
    // can fill the pipe while the socket is not writable, and waits on itself for good
    // (on the kernel too; a smaller send buffer makes it likelier). cat reads apart.
    c.args(["TCP-LISTEN:7002,reuseaddr", "EXEC:cat"]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7002, &mut srv);
    let out = run_echo_client(&t, 7002, 4 << 20, || {
        assert_eq!(kernel_connections(&t, Side::Server, 7002), 0);
    });
    assert!(out.contains("echo ok"), "{out}");
    let _ = srv.child.wait();
    assert!(
        exit_counters(&srv.output())
            .get("rx.bytes")
            .copied()
            .unwrap_or(0)
            >= 4 << 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn python_asyncio_echo_server() {
    let t = topo();
    let dir = scratch("asyncio");
    let script = r#"
import asyncio
async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d: break
        w.write(d); await w.drain()
    w.close(); await w.wait_closed()
    asyncio.get_running_loop().call_soon(stop.set)
async def main():
    global stop
    stop = asyncio.Event()
    srv = await asyncio.start_server(handle, "0.0.0.0", 7003)
    async with srv:
        await stop.wait()
asyncio.run(main())
print("served", flush=True)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args(["-c", script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7003, &mut srv);
    let out = run_echo_client(&t, 7003, 8 << 20, || {
        assert_eq!(kernel_connections(&t, Side::Server, 7003), 0);
    });
    assert!(out.contains("echo ok"), "{out}");
    let _ = srv.child.wait();
    let log = srv.output();
    assert!(log.contains("served"), "{log}");
    assert!(
        exit_counters(&log).get("rx.bytes").copied().unwrap_or(0) >= 8 << 20,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn python_http_server_fast_path_and_loopback_kernel_path() {
    let t = topo();
    let dir = scratch("httpserver");
    let file = dir.join("data.bin");
    random_file(&file, 5 << 20, 7);
    let want = sha256_file(&file);
    let mut c = fastnet_cmd(&t, Side::Server, PY);
    c.args([
        "-m",
        "http.server",
        "7004",
        "--bind",
        "0.0.0.0",
        "--directory",
        dir.to_str().unwrap(),
    ]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_listening(&t, Side::Server, 7004, &mut srv);
    let got = dir.join("got-fast.bin");
    run_ok(t.command(Side::Client, "curl").args([
        "-sS",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{}:7004/data.bin", t.server_ip),
    ]));
    assert_eq!(sha256_file(&got), want);
    // Same listener, kernel path: loopback inside the server namespace.
    let got2 = dir.join("got-lo.bin");
    run_ok(t.command(Side::Server, "curl").args([
        "-sS",
        "-o",
        got2.to_str().unwrap(),
        "http://127.0.0.1:7004/data.bin",
    ]));
    assert_eq!(sha256_file(&got2), want);
    // SIGINT: http.server exits through KeyboardInterrupt, so at-exit work runs.
    let log = srv.stop_with(libc::SIGINT);
    let c = exit_counters(&log);
    assert!(c.get("tx.bytes").copied().unwrap_or(0) >= 5 << 20, "{log}");
    assert!(
        c.get("tx.bytes").copied().unwrap_or(0) < 10 << 20,
        "the loopback download must not have taken the fast path: {log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
