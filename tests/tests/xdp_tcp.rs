//! The TCP test server built on `stack` + `xdp-backend` (`xdp_tcp_server`) in the
//! server namespace; stock kernel clients (socat, nc, curl) in the other move 100 MB
//! each way byte-exact, while a kernel TCP server on another port of the same interface
//! keeps answering the whole time.

use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ECHO: u16 = 7000;
const KERNEL: u16 = 7001;
const SINK: u16 = 7002;
const SOURCE: u16 = 7003;
const BULK: u64 = 100 * 1000 * 1000;

/// Same as the server's body generator.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8 ^ (i >> 12) as u8
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l
    }
    fn stats(&mut self) -> HashMap<String, u64> {
        writeln!(self.stdin, "stats").unwrap();
        let line = loop {
            let l = self.line();
            if l.starts_with("STATS") || l.is_empty() {
                break l;
            }
        };
        line.trim()
            .strip_prefix("STATS ")
            .expect("STATS line")
            .split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client_sh(topo: &Topology, script: &str) -> std::process::Output {
    run_ok(topo.command(Side::Client, "sh").args(["-c", script]))
}

fn file_sha(path: &str) -> (u64, String) {
    let data = std::fs::read(path).unwrap();
    (data.len() as u64, hex(&Sha256::digest(&data)))
}

#[test]
fn tcp_echo_and_100mb_each_way_with_kernel_clients() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let dir = std::env::temp_dir().join(format!("fastnet-xdp-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let d = dir.to_str().unwrap().to_string();

    // Kernel server on another port of the same interface, probed all along.
    let _kernel = Killed(
        topo.command(Side::Server, "socat")
            .args([&format!("TCP-LISTEN:{KERNEL},fork,reuseaddr"), "EXEC:cat"])
            .spawn()
            .unwrap(),
    );
    let mut child = topo
        .command(Side::Server, env!("CARGO_BIN_EXE_xdp_tcp_server"))
        .args(["--iface", topo.iface(Side::Server)])
        .args(["--echo-port", &ECHO.to_string()])
        .args(["--sink-port", &SINK.to_string()])
        .args(["--source-port", &SOURCE.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    let ready = server.line();
    assert!(ready.starts_with("READY"), "{ready}");

    let stop = Arc::new(AtomicBool::new(false));
    let probes_ok = Arc::new(AtomicU64::new(0));
    let probe = {
        let (stop, ok) = (stop.clone(), probes_ok.clone());
        let ns = topo.client_ns.clone();
        let ip = topo.server_ip;
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let msg = format!("probe {i}");
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns, "sh", "-c"])
                    .arg(format!(
                        "printf '{msg}' | socat -t2 -T5 - TCP:{ip}:{KERNEL},connect-timeout=3"
                    ))
                    .output()
                    .unwrap();
                if out.stdout == msg.as_bytes() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.push(format!(
                        "{msg}: {:?} {}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            failures
        })
    };

    // Echo: 8 MB of random bytes through socat, both directions at once.
    client_sh(
        &topo,
        &format!("head -c 8000000 /dev/urandom > {d}/echo.in"),
    );
    let t = Instant::now();
    client_sh(
        &topo,
        &format!(
            "socat -t30 -T30 - TCP:{}:{ECHO} < {d}/echo.in > {d}/echo.out",
            topo.server_ip
        ),
    );
    let echo_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        file_sha(&format!("{d}/echo.in")),
        file_sha(&format!("{d}/echo.out")),
        "echo not byte-exact"
    );

    // Upload 100 MB with nc into the sink; the server reports length and SHA-256.
    client_sh(&topo, &format!("head -c {BULK} /dev/urandom > {d}/up.bin"));
    let (up_len, up_sha) = file_sha(&format!("{d}/up.bin"));
    let t = Instant::now();
    let out = client_sh(
        &topo,
        &format!("nc -N {} {SINK} < {d}/up.bin", topo.server_ip),
    );
    let up_secs = t.elapsed().as_secs_f64();
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(reply.trim(), format!("SINK bytes={up_len} sha256={up_sha}"));
    let line = server.line();
    assert_eq!(line.trim(), reply.trim());
    std::fs::remove_file(format!("{d}/up.bin")).unwrap();

    // Download 100 MB with curl from the HTTP source.
    let t = Instant::now();
    client_sh(
        &topo,
        &format!(
            "curl -sS --fail -o {d}/down.bin http://{}:{SOURCE}/{BULK}",
            topo.server_ip
        ),
    );
    let down_secs = t.elapsed().as_secs_f64();
    let mut want = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut i = 0u64;
    while i < BULK {
        let n = chunk.len().min((BULK - i) as usize);
        for (k, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern(i + k as u64);
        }
        want.update(&chunk[..n]);
        i += n as u64;
    }
    assert_eq!(
        file_sha(&format!("{d}/down.bin")),
        (BULK, hex(&want.finalize())),
        "download not byte-exact"
    );

    // At least a few probes, even when the transfers were quick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while probes_ok.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let failures = probe.join().unwrap();
    assert!(
        failures.is_empty(),
        "kernel server stopped answering: {failures:?}"
    );
    assert!(probes_ok.load(Ordering::Relaxed) >= 3);

    let s = server.stats();
    assert_eq!(s["errors"], 0, "{s:?}");
    assert_eq!(s["accepted"], 3, "{s:?}");
    assert_eq!(s["malformed"], 0, "{s:?}");
    assert_eq!(s["dropped_no_xsk"], 0, "{s:?}");
    eprintln!(
        "echo 8 MB x2: {echo_secs:.2}s; upload 100 MB: {up_secs:.2}s ({:.0} MB/s); \
         download 100 MB: {down_secs:.2}s ({:.0} MB/s); {s:?}",
        100.0 / up_secs,
        100.0 / down_secs
    );
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn kill9_mid_transfer_then_kernel_tcp_server_on_same_port_answers() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let mut child = topo
        .command(Side::Server, env!("CARGO_BIN_EXE_xdp_tcp_server"))
        .args(["--iface", topo.iface(Side::Server)])
        .args(["--echo-port", &ECHO.to_string()])
        .args(["--sink-port", &SINK.to_string()])
        .args(["--source-port", &SOURCE.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    assert!(server.line().starts_with("READY"));
    let out = client_sh(
        &topo,
        &format!(
            "printf 'fast path' | socat -t2 - TCP:{}:{ECHO}",
            topo.server_ip
        ),
    );
    assert_eq!(out.stdout, b"fast path");
    // A download in flight when the server dies.
    let download = Killed(
        topo.command(Side::Client, "curl")
            .args(["-s", "-o", "/dev/null"])
            .arg(format!("http://{}:{SOURCE}/{BULK}", topo.server_ip))
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill(2) on the PID of the child we started.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGKILL) };
    let _ = server.child.wait();
    drop(download);
    let link =
        run_ok(
            topo.command(Side::Server, "ip")
                .args(["link", "show", topo.iface(Side::Server)]),
        );
    let text = String::from_utf8_lossy(&link.stdout);
    assert!(!text.contains("xdp"), "XDP program left: {text}");

    let _kernel = Killed(
        topo.command(Side::Server, "socat")
            .args([&format!("TCP-LISTEN:{ECHO},fork,reuseaddr"), "EXEC:cat"])
            .spawn()
            .unwrap(),
    );
    let out = client_sh(
        &topo,
        &format!(
            "for i in $(seq 50); do r=$(printf kernel | socat -t2 - TCP:{}:{ECHO} 2>/dev/null) \
             && [ \"$r\" = kernel ] && echo ok && exit 0; sleep 0.02; done; exit 1",
            topo.server_ip
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "the kernel's server never answered after the fast-path server died"
    );
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns on a namespace fd; it changes only this thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A well-formed SYN to the echo port, checksums right.
fn syn_frame(dst_mac: [u8; 6], src_mac: [u8; 6], topo: &Topology) -> Vec<u8> {
    let (src, dst) = (topo.client_ip.octets(), topo.server_ip.octets());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&41000u16.to_be_bytes());
    tcp.extend_from_slice(&ECHO.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = inet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

fn send_raw(ifindex: u32, frames: &[Vec<u8>]) {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    for f in frames {
        // SAFETY: zeroed sockaddr_ll is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&f[..6]);
        // SAFETY: `f` and `sll` are valid for the lengths passed.
        let r = unsafe {
            libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, f.len() as isize);
    }
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
}

#[test]
fn bad_tcp_frames_to_a_claimed_port_are_dropped_by_xdp_or_the_stack() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let mut child = topo
        .command(Side::Server, env!("CARGO_BIN_EXE_xdp_tcp_server"))
        .args(["--iface", topo.iface(Side::Server)])
        .args(["--echo-port", &ECHO.to_string()])
        .args(["--sink-port", &SINK.to_string()])
        .args(["--source-port", &SOURCE.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    assert!(server.line().starts_with("READY"));
    let srv_if = topo.server_if.clone();
    let srv_mac = in_netns(&topo.server_ns, move || {
        xdp_backend::netlink::link_by_name(&srv_if).unwrap().mac
    });
    let cli_if = topo.client_if.clone();
    let (cli_idx, cli_mac) = in_netns(&topo.client_ns, move || {
        let l = xdp_backend::netlink::link_by_name(&cli_if).unwrap();
        (l.index, l.mac)
    });
    let good = syn_frame(srv_mac, cli_mac, &topo);
    let mut bad_tcp = good.clone();
    bad_tcp[14 + 20 + 16] ^= 0x5a;
    let mut bad_ip = good.clone();
    bad_ip[14 + 10] ^= 0x5a;
    let truncated = good[..14 + 20 + 10].to_vec();
    let before = server.stats();
    in_netns(&topo.client_ns, move || {
        send_raw(cli_idx, &[bad_tcp, bad_ip, truncated])
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut s = server.stats();
    while Instant::now() < deadline && s["ipv4_bad_checksum"] + s["tcp_bad_checksum"] < 2 {
        std::thread::sleep(Duration::from_millis(50));
        s = server.stats();
    }
    assert_eq!(s["tcp_bad_checksum"], 1, "{s:?}");
    assert_eq!(s["ipv4_bad_checksum"], 1, "{s:?}");
    assert_eq!(s["malformed"] - before["malformed"], 1, "{s:?}");
    assert_eq!(s["accepted"], 0, "{s:?}");
    let out = client_sh(
        &topo,
        &format!(
            "printf 'still fine' | socat -t2 - TCP:{}:{ECHO}",
            topo.server_ip
        ),
    );
    assert_eq!(out.stdout, b"still fine");
}
