//! The XDP path without TCP: a raw-frame UDP echo server on an AF_XDP socket
//! (`xdp_echo`) in the server namespace, stock kernel clients in the other one.

use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

const UDP_PORT: u16 = 7000;
const TCP_PORT: u16 = 7001;

/// The `xdp_echo` test server, killed on drop.
struct EchoServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ready: String,
}

impl EchoServer {
    fn start(topo: &Topology, extra: &[&str]) -> EchoServer {
        let mut child = topo
            .command(Side::Server, env!("CARGO_BIN_EXE_xdp_echo"))
            .args(["--iface", topo.iface(Side::Server)])
            .args(["--udp-port", &UDP_PORT.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start xdp_echo");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert!(ready.starts_with("READY"), "xdp_echo said {ready:?}");
        EchoServer {
            child,
            stdin,
            stdout,
            ready,
        }
    }

    fn stats(&mut self) -> HashMap<String, u64> {
        writeln!(self.stdin, "stats").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let rest = line.strip_prefix("STATS ").expect("STATS line");
        rest.split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kernel process in one namespace, killed on drop.
struct Kernel(Child);

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kernel_tcp_echo(topo: &Topology) -> Kernel {
    let k = Kernel(
        topo.command(Side::Server, "socat")
            .args([&format!("TCP-LISTEN:{TCP_PORT},fork,reuseaddr"), "EXEC:cat"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_listener(topo, "-tln", TCP_PORT);
    k
}

fn wait_for_listener(topo: &Topology, ss_flags: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = run_ok(topo.command(Side::Server, "ss").arg(ss_flags));
        if String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} ")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

/// One request/response through a kernel socat client in the client namespace. After
/// its input ends socat waits `-t` for the answer (UDP has no end of stream).
fn socat_roundtrip(topo: &Topology, addr: &str, payload: &[u8]) -> Vec<u8> {
    let linger = if addr.starts_with("UDP") {
        "-t0.5"
    } else {
        "-t2"
    };
    let mut c = topo
        .command(Side::Client, "socat")
        .args([linger, "-T3", "-", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(payload).unwrap();
    let out = c.wait_with_output().unwrap();
    out.stdout
}

fn tcp_echo_ok(topo: &Topology, round: usize) {
    let msg = format!("kernel tcp {round}\n");
    let got = socat_roundtrip(
        topo,
        &format!("TCP:{}:{TCP_PORT}", topo.server_ip),
        msg.as_bytes(),
    );
    assert_eq!(String::from_utf8_lossy(&got), msg, "kernel TCP server");
}

fn xdp_attached(topo: &Topology) -> bool {
    let out =
        run_ok(
            topo.command(Side::Server, "ip")
                .args(["link", "show", topo.iface(Side::Server)]),
        );
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp") || text.contains(" xdp")
}

#[test]
fn udp_echo_over_xsk_while_kernel_tcp_keeps_answering() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let _tcp = kernel_tcp_echo(&topo);
    tcp_echo_ok(&topo, 0);
    let mut server = EchoServer::start(&topo, &[]);
    assert!(
        server.ready.contains("zero_copy=false"),
        "veth is copy mode"
    );
    assert!(xdp_attached(&topo));

    let mut sent = 0u64;
    for round in 0..20 {
        // Sizes from tiny to a full 1472-byte datagram (MTU 1500).
        let len = [1usize, 17, 512, 1472][round % 4];
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + round) as u8).collect();
        let got = socat_roundtrip(
            &topo,
            &format!("UDP:{}:{UDP_PORT}", topo.server_ip),
            &payload,
        );
        assert_eq!(got, payload, "UDP echo round {round} ({len} bytes)");
        sent += 1;
        if round % 5 == 0 {
            tcp_echo_ok(&topo, round + 1);
        }
    }
    // ICMP and ARP still belong to the kernel.
    run_ok(
        topo.command(Side::Client, "ping")
            .args(["-c1", "-W2", &topo.server_ip.to_string()]),
    );
    let s = server.stats();
    assert_eq!(s["echoed"], sent, "{s:?}");
    assert!(s["redirected"] >= sent, "{s:?}");
    assert_eq!(s["rx_frames"], s["redirected"], "{s:?}");
    assert!(s["passed"] > 0, "TCP/ARP/ICMP passed to the kernel: {s:?}");
    assert_eq!(s["malformed"], 0, "{s:?}");
    assert_eq!(s["dropped_no_xsk"], 0, "{s:?}");
    assert!(s["tx_wakeups"] > 0, "copy mode kicks TX: {s:?}");
    tcp_echo_ok(&topo, 99);
}

#[test]
fn kill9_detaches_program_and_kernel_gets_port_back() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let mut server = EchoServer::start(&topo, &[]);
    let got = socat_roundtrip(&topo, &format!("UDP:{}:{UDP_PORT}", topo.server_ip), b"x");
    assert_eq!(got, b"x");
    assert!(xdp_attached(&topo));
    // SAFETY: kill(2) on the PID of the child we started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGKILL) };
    let _ = server.child.wait();
    // The link dies with its last fd: no program left, without any cleanup of ours.
    assert!(!xdp_attached(&topo), "XDP program left after kill -9");
    let _k = Kernel(
        topo.command(Side::Server, "socat")
            .args([&format!("UDP-LISTEN:{UDP_PORT}"), "PIPE"])
            .spawn()
            .unwrap(),
    );
    wait_for_listener(&topo, "-uln", UDP_PORT);
    let got = socat_roundtrip(
        &topo,
        &format!("UDP:{}:{UDP_PORT}", topo.server_ip),
        b"kernel again",
    );
    assert_eq!(got, b"kernel again");
}

#[test]
fn claimed_port_on_queue_without_xsk_is_dropped_not_passed() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    // A kernel socket on the same port: it must see nothing while the port is claimed.
    let kernel = topo
        .command(Side::Server, "socat")
        .args(["-u", &format!("UDP-RECV:{UDP_PORT}"), "STDOUT"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let kernel = Kernel(kernel);
    wait_for_listener(&topo, "-uln", UDP_PORT);
    let mut server = EchoServer::start(&topo, &["--xsk-queues", "0"]);
    for _ in 0..3 {
        let got = socat_roundtrip(
            &topo,
            &format!("UDP:{}:{UDP_PORT}", topo.server_ip),
            b"nobody",
        );
        assert!(got.is_empty());
    }
    let s = server.stats();
    assert_eq!(s["dropped_no_xsk"], 3, "{s:?}");
    assert_eq!(s["redirected"], 0, "{s:?}");
    drop(server);
    let mut kernel = kernel;
    let _ = kernel.0.kill();
    let out = kernel.0.wait_with_output_ref();
    assert!(out.is_empty(), "kernel socket received {out:?}");
}

trait ReadAll {
    fn wait_with_output_ref(&mut self) -> Vec<u8>;
}

impl ReadAll for Child {
    fn wait_with_output_ref(&mut self) -> Vec<u8> {
        use std::io::Read;
        let _ = self.wait();
        let mut v = Vec::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_end(&mut v);
        }
        v
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A well-formed Ethernet+IPv4+UDP frame; tests then break one thing in it.
fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&UDP_PORT.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let c = checksum(&pseudo);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
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
        assert_eq!(
            r,
            f.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let mut server = EchoServer::start(&topo, &[]);
    let srv_if = topo.server_if.clone();
    let srv_mac = in_netns(&topo.server_ns, move || {
        xdp_backend::netlink::link_by_name(&srv_if).unwrap().mac
    });
    let cli_if = topo.client_if.clone();
    let (cli_idx, cli_mac) = in_netns(&topo.client_ns, move || {
        let l = xdp_backend::netlink::link_by_name(&cli_if).unwrap();
        (l.index, l.mac)
    });
    let (src, dst) = (topo.client_ip, topo.server_ip);
    let good = udp_frame(srv_mac, cli_mac, src, dst, b"well formed");
    let ip = 14;
    let udp = ip + 20;
    let mut xdp_drops: Vec<(&str, Vec<u8>)> = Vec::new();
    // IPv4 header cut short.
    xdp_drops.push(("truncated ip", good[..ip + 10].to_vec()));
    // IHL 3 (12 bytes), less than the minimum.
    let mut f = good.clone();
    f[ip] = 0x43;
    xdp_drops.push(("ihl 3", f));
    // Version 6 in an IPv4 ethertype.
    let mut f = good.clone();
    f[ip] = 0x65;
    xdp_drops.push(("version 6", f));
    // Total length past the end of the frame.
    let mut f = good.clone();
    f[ip + 2..ip + 4].copy_from_slice(&1400u16.to_be_bytes());
    xdp_drops.push(("total length too long", f));
    // Total length shorter than the header.
    let mut f = good.clone();
    f[ip + 2..ip + 4].copy_from_slice(&12u16.to_be_bytes());
    xdp_drops.push(("total length < ihl", f));
    // UDP header cut short (IP says 24 bytes).
    let mut f = good[..udp + 4].to_vec();
    f[ip + 2..ip + 4].copy_from_slice(&24u16.to_be_bytes());
    xdp_drops.push(("truncated udp", f));
    // UDP length beyond the IP payload, and below the header size.
    let mut f = good.clone();
    f[udp + 4..udp + 6].copy_from_slice(&600u16.to_be_bytes());
    xdp_drops.push(("udp length too long", f));
    let mut f = good.clone();
    f[udp + 4..udp + 6].copy_from_slice(&4u16.to_be_bytes());
    xdp_drops.push(("udp length < 8", f));
    // TCP with a data offset of 2 words.
    let mut f = good.clone();
    f[ip + 9] = 6;
    f.resize(ip + 40, 0);
    f[ip + 2..ip + 4].copy_from_slice(&40u16.to_be_bytes());
    f[udp + 12] = 0x20;
    xdp_drops.push(("tcp doff 2", f));
    // Structurally fine but with wrong checksums: the XSK side must reject them.
    let mut bad_ip_csum = good.clone();
    bad_ip_csum[ip + 10] ^= 0x55;
    let mut bad_udp_csum = good.clone();
    bad_udp_csum[udp + 6] ^= 0x55;

    let before = server.stats();
    let mut frames: Vec<Vec<u8>> = xdp_drops.iter().map(|(_, f)| f.clone()).collect();
    frames.push(bad_ip_csum);
    frames.push(bad_udp_csum);
    in_netns(&topo.client_ns, move || send_raw(cli_idx, &frames));
    // Counters settle within a few polls.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut s = server.stats();
    while Instant::now() < deadline
        && (s["malformed"] < before["malformed"] + xdp_drops.len() as u64
            || s["bad_udp_checksum"] < 1)
    {
        std::thread::sleep(Duration::from_millis(50));
        s = server.stats();
    }
    let names: Vec<&str> = xdp_drops.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        s["malformed"] - before["malformed"],
        xdp_drops.len() as u64,
        "XDP malformed counter; frames: {names:?}; {s:?}"
    );
    assert_eq!(s["bad_ip_checksum"], 1, "{s:?}");
    assert_eq!(s["bad_udp_checksum"], 1, "{s:?}");
    assert_eq!(
        s["echoed"], before["echoed"],
        "nothing malformed was answered"
    );
    // Still alive and answering.
    let got = socat_roundtrip(
        &topo,
        &format!("UDP:{}:{UDP_PORT}", topo.server_ip),
        b"after",
    );
    assert_eq!(got, b"after");
    assert!(server.child.try_wait().unwrap().is_none(), "server died");
}

#[test]
fn forked_child_serves_through_inherited_umem_then_busy_poll_and_generic_modes() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let mut server = EchoServer::start(&topo, &["--fork"]);
    assert!(
        server.ready.contains("role=forked-child"),
        "{}",
        server.ready
    );
    let child_pid: u32 = server
        .ready
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(child_pid, server.pid(), "served by a different process");
    for i in 0..3 {
        let msg = format!("to the child {i}");
        let got = socat_roundtrip(
            &topo,
            &format!("UDP:{}:{UDP_PORT}", topo.server_ip),
            msg.as_bytes(),
        );
        assert_eq!(got, msg.as_bytes());
    }
    let s = server.stats();
    assert_eq!(s["echoed"], 3, "{s:?}");
    writeln!(server.stdin, "quit").unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success());
    assert!(!xdp_attached(&topo), "link closed with both processes gone");

    for (flags, mode) in [
        (&["--busy-poll"][..], "native"),
        (&["--generic"][..], "generic"),
    ] {
        let mut server = EchoServer::start(&topo, flags);
        assert!(
            server.ready.contains(&format!("mode={mode}")),
            "{}",
            server.ready
        );
        for i in 0..3 {
            let msg = format!("{flags:?} {i}");
            let got = socat_roundtrip(
                &topo,
                &format!("UDP:{}:{UDP_PORT}", topo.server_ip),
                msg.as_bytes(),
            );
            assert_eq!(got, msg.as_bytes());
        }
        assert_eq!(server.stats()["echoed"], 3);
        writeln!(server.stdin, "quit").unwrap();
        assert!(server.child.wait().unwrap().success());
        assert!(!xdp_attached(&topo));
    }
}
