//! The stack's single-subflow MPTCP (stack::mptcp) against Linux's own MPTCP: the stack
//! runs over a TAP device into a namespace of a test topology, with an `MptcpConn`
//! adding its option to every TCP segment the interface sends and checking the options
//! of every one it receives (what the IP layer will do once MPTCP is wired in). A
//! Python program in the namespace is the kernel side (`IPPROTO_MPTCP`); it reports
//! what Linux's MPTCP_INFO says of the connection.
//!
//! Needs root; skipped (with a message) otherwise.

use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use stack::device::{Device, DeviceCaps};
use stack::error::Error;
use stack::iface::{Interface, InterfaceConfig};
use stack::mptcp::conn::{MptcpConn, State as MpState, Verdict, OPTION_SPACE};
use stack::mptcp::segment::with_option;
use stack::socket::SocketHandle;
use stack::tcp::{Shutdown, TcpConfig};
use stack::time::Instant as StackInstant;
use stack::wire::checksum::{checksum, transport_checksum};
use stack::wire::tcp::{TcpPacket, TcpRepr};
use stack::wire::{Ipv4Cidr, MacAddr};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xdp_backend::tap::TapDevice;

const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 251, 1);
const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 251, 2);
const STACK_MAC: MacAddr = MacAddr([0x02, 0x77, 0xfb, 0, 0, 2]);
const PORT: u16 = 5000;
const ETH: usize = 14;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The kernel side: an MPTCP (or plain TCP) echo peer in the namespace, as server
/// (listens on PORT) or client (connects to the stack). It echoes until EOF, shuts
/// down writing, and prints `fallback=<0|1> remote_key=<0|1>` from MPTCP_INFO's flags
/// (none for plain TCP).
const KERNEL_PEER: &str = r#"
import socket, sys
role, proto = sys.argv[1], int(sys.argv[2])
if role == "server":
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", 5000)); l.listen(1)
    print("ready", flush=True)
    s, _ = l.accept()
else:
    print("ready", flush=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.settimeout(30)
    s.connect(("10.77.251.2", 5000))
s.settimeout(30)
n = 0
while True:
    b = s.recv(65536)
    if not b:
        break
    s.sendall(b)
    n += len(b)
s.shutdown(socket.SHUT_WR)
if proto == 262:
    # struct mptcp_info: six u8, then u32 mptcpi_flags (FALLBACK 1, REMOTE_KEY_RECEIVED 2).
    flags = int.from_bytes(s.getsockopt(284, 1, 96)[8:12], "little")
    print(f"echoed={n} fallback={flags & 1} remote_key={(flags >> 1) & 1}", flush=True)
else:
    print(f"echoed={n}", flush=True)
s.settimeout(5)
try:
    while s.recv(65536):
        pass
except OSError:
    pass
s.close()
"#;

/// The peer process, ended (by its PID, which this test started) when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rig {
    tap: TapDevice,
    ns: String,
    _topo: Topology,
}

fn rig(checksums: bool) -> Option<Rig> {
    if !is_root() {
        eprintln!("skipped: needs root (namespaces, TAP)");
        return None;
    }
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let ns = topo.ns(Side::Server).to_string();
    let name = format!(
        "fnmp{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let tap = TapDevice::open_in_netns(&ns, &name, 1500).expect("open tap");
    let exec = |args: &[&str]| {
        run_ok(Command::new("ip").args(["netns", "exec", &ns]).args(args));
    };
    exec(&[
        "ip",
        "addr",
        "add",
        &format!("{KERNEL_IP}/24"),
        "dev",
        &name,
    ]);
    exec(&["ip", "link", "set", &name, "up"]);
    exec(&["sysctl", "-q", "net.mptcp.enabled=1"]);
    let csum = format!("net.mptcp.checksum_enabled={}", checksums as u8);
    exec(&["sysctl", "-q", &csum]);
    Some(Rig {
        tap,
        ns,
        _topo: topo,
    })
}

fn start_peer(ns: &str, role: &str, mptcp: bool) -> (Peer, BufReader<std::process::ChildStdout>) {
    let proto = if mptcp { "262" } else { "6" };
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "python3",
            "-c",
            KERNEL_PEER,
            role,
            proto,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let peer = Peer(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (peer, out)
}

/// The TAP as the interface's device, the MPTCP option added to each TCP segment.
struct MptcpTap<'a> {
    tap: &'a mut TapDevice,
    conn: &'a mut Option<MptcpConn>,
    segment: Vec<u8>,
    frame: Vec<u8>,
}

/// Where the TCP segment of an IPv4 frame is: `(start, end)`.
fn tcp_in(frame: &[u8]) -> Option<(usize, usize)> {
    const IPV4: [u8; 2] = [0x08, 0x00];
    if frame.len() < ETH + 20 || frame[12..14] != IPV4 || frame[ETH + 9] != 6 {
        return None;
    }
    let ihl = usize::from(frame[ETH] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ETH + 2], frame[ETH + 3]]));
    (ETH + total <= frame.len() && ihl <= total).then_some((ETH + ihl, ETH + total))
}

impl Device for MptcpTap<'_> {
    fn caps(&self) -> DeviceCaps {
        self.tap.caps()
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.frame.clear();
        self.frame.resize(len, 0);
        fill(&mut self.frame);
        let option = tcp_in(&self.frame).and_then(|(t, end)| {
            let conn = self.conn.as_mut()?;
            let seg = &self.frame[t..end];
            let p = TcpPacket::new_checked(seg).ok()?;
            let r = TcpRepr::parse(&p).ok()?;
            Some((t, end, conn.outgoing(&r, p.payload())?))
        });
        if let Some((t, end, option)) = option {
            with_option(&self.frame[t..end], &option, &mut self.segment).expect("option fits");
            let f = &mut self.frame;
            f.truncate(t);
            f.extend_from_slice(&self.segment);
            let ip_len = (f.len() - ETH) as u16;
            f[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
            f[ETH + 10..ETH + 12].fill(0);
            let c = checksum(&f[ETH..t]);
            f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            let src = Ipv4Addr::new(f[ETH + 12], f[ETH + 13], f[ETH + 14], f[ETH + 15]);
            let dst = Ipv4Addr::new(f[ETH + 16], f[ETH + 17], f[ETH + 18], f[ETH + 19]);
            f[t + 16..t + 18].fill(0);
            let c = transport_checksum(src, dst, 6, &f[t..]);
            f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        }
        let frame = &self.frame;
        self.tap
            .transmit(frame.len(), &mut |b| b.copy_from_slice(frame))
    }
}

/// What one exchange showed.
struct Outcome {
    conn: Option<MptcpConn>,
    /// The kernel peer's last line.
    kernel: String,
    refused: u64,
}

/// The stack sends `len` bytes to the kernel peer, which echoes them; the stack checks
/// the echo byte for byte and that both sides closed.
fn exchange(rig: &mut Rig, stack_is_client: bool, kernel_mptcp: bool, checksums: bool) -> Outcome {
    let role = if stack_is_client { "server" } else { "client" };
    let (_peer, mut kernel_out) = start_peer(&rig.ns, role, kernel_mptcp);
    let mut cfg = InterfaceConfig::new(STACK_MAC, Ipv4Cidr::new(STACK_IP, 24));
    // TCP leaves room for the option in every segment.
    cfg.mtu = 1500 - OPTION_SPACE;
    let tcp = TcpConfig {
        rcvbuf: 1 << 20,
        sndbuf: 1 << 20,
        ..TcpConfig::default()
    };
    let mut iface = Interface::new(cfg, tcp);
    let key = 0x6d70_7463_7000_0000 | u64::from(SEQ.load(Ordering::Relaxed));
    let mut conn = Some(if stack_is_client {
        MptcpConn::client(key, checksums)
    } else {
        MptcpConn::server(key, false)
    });
    let epoch = Instant::now();
    let now = || StackInstant::from_micros(epoch.elapsed().as_micros() as u64);
    let listener = (!stack_is_client).then(|| {
        iface
            .tcp
            .listen(SocketAddrV4::new(STACK_IP, PORT), 4)
            .unwrap()
    });
    let mut h: Option<SocketHandle> = stack_is_client.then(|| {
        iface
            .tcp_connect(None, SocketAddrV4::new(KERNEL_IP, PORT))
            .unwrap()
    });
    let data: Vec<u8> = (0..3_000_000usize)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let (mut sent, mut shut, mut eof) = (0, false, false);
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 1 << 16];
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Until EOF, then a second more for the last ACKs.
    let mut linger_until = None;
    while linger_until.is_none_or(|t| Instant::now() < t) {
        assert!(
            Instant::now() < deadline,
            "stuck: sent {sent} got {}",
            got.len()
        );
        while let Some(n) = rig.tap.recv(&mut buf).unwrap() {
            let f = &buf[..n];
            if let (Some((t, end)), Some(c)) = (tcp_in(f), conn.as_mut()) {
                if let Ok(p) = TcpPacket::new_checked(&f[t..end]) {
                    let r = TcpRepr::parse(&p).unwrap();
                    if c.incoming(&r, p.options(), p.payload()) == Verdict::Reset {
                        refused += 1;
                        continue;
                    }
                }
            }
            iface.receive(now(), f);
            if let (Some(c), Some(h)) = (conn.as_ref(), h) {
                if c.wants_ack() {
                    iface.tcp.send_ack(h).unwrap();
                }
            }
        }
        if let Some(l) = listener.filter(|_| h.is_none()) {
            h = iface.tcp.accept(l).ok();
        }
        if let Some(h) = h {
            while sent < data.len() {
                match iface.tcp.send(h, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(Error::WouldBlock | Error::NotConnected) => break,
                    Err(e) => panic!("send: {e:?}"),
                }
            }
            if sent == data.len() && !shut && iface.tcp.shutdown(h, Shutdown::Write).is_ok() {
                shut = true;
            }
            while !eof {
                match iface.tcp.recv(h, &mut buf) {
                    Ok(0) => eof = true,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if eof && linger_until.is_none() {
                linger_until = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        let mut dev = MptcpTap {
            tap: &mut rig.tap,
            conn: &mut conn,
            segment: Vec::new(),
            frame: Vec::new(),
        };
        iface.dispatch(now(), &mut dev);
        let _ = rig.tap.wait_readable(Some(Duration::from_millis(1)));
    }
    assert!(
        got == data,
        "echo differs: {} of {} bytes",
        got.len(),
        data.len()
    );
    let mut kernel = String::new();
    kernel_out.read_line(&mut kernel).unwrap();
    Outcome {
        conn,
        kernel: kernel.trim().to_string(),
        refused,
    }
}

fn check_mptcp(o: &Outcome, checksums: bool) {
    let c = o.conn.as_ref().unwrap();
    assert_eq!(c.state(), MpState::Established, "{c:?}");
    assert_eq!(c.checksums(), checksums);
    assert_eq!(o.refused, 0, "{c:?}");
    let n = c.counters();
    assert!(n.mappings_ok > 100, "{n:?}");
    // Linux's mappings span several segments: their checksums are checked once whole
    // (a frame the TAP dropped would leave one unchecked, so no count of those).
    assert_eq!(n.checksums_ok > 10, checksums, "{n:?}");
    // Both DATA_FINs: ours acknowledged by Linux, Linux's at the end of the echo.
    assert!(c.data_fin_acked(), "{c:?}");
    assert_eq!(c.data_acked(), Some(3_000_001));
    assert_eq!(c.peer_data_fin(), Some(3_000_000));
    assert_eq!(o.kernel, "echoed=3000000 fallback=0 remote_key=1");
}

#[test]
fn stack_client_with_a_linux_mptcp_server() {
    let Some(mut rig) = rig(false) else { return };
    let o = exchange(&mut rig, true, true, false);
    check_mptcp(&o, false);
}

#[test]
fn stack_client_with_a_linux_mptcp_server_asking_for_checksums() {
    let Some(mut rig) = rig(true) else { return };
    let o = exchange(&mut rig, true, true, false);
    check_mptcp(&o, true);
}

#[test]
fn stack_server_with_a_linux_mptcp_client() {
    let Some(mut rig) = rig(false) else { return };
    let o = exchange(&mut rig, false, true, false);
    check_mptcp(&o, false);
}

#[test]
fn stack_client_falls_back_with_a_plain_tcp_server() {
    let Some(mut rig) = rig(false) else { return };
    let o = exchange(&mut rig, true, false, false);
    assert_eq!(o.conn.unwrap().state(), MpState::Fallback);
    assert_eq!(o.kernel, "echoed=3000000");
}

#[test]
fn stack_server_gives_plain_tcp_to_a_plain_tcp_client() {
    let Some(mut rig) = rig(false) else { return };
    let o = exchange(&mut rig, false, false, false);
    assert_eq!(o.conn.unwrap().state(), MpState::Fallback);
    assert_eq!(o.kernel, "echoed=3000000");
}
