//! The stack against the Linux kernel: the stack runs over a TAP device whose kernel
//! side sits in a namespace of a test topology; kernel sockets in that namespace talk
//! to it. ICMP echo, ARP both ways, UDP both ways with ICMP errors, and TCP: option
//! negotiation as `ss -ti` shows it, bulk transfer each way (sha256) with the kernel as
//! client and as server, half-close, and RST on a closed port.
//!
//! Needs root; skipped (with a message) otherwise. `TAP_INTEROP_MB` sets the bulk
//! size per direction (default 100).

use fastnet_e2e::tap_driver::{Loss, TapStack};
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use sha2::{Digest, Sha256};
use stack::error::Error;
use stack::iface::{DropReason, Interface, InterfaceConfig};
use stack::socket::SocketHandle;
use stack::tcp::{Shutdown, State, TcpConfig};
use stack::wire::{Ipv4Cidr, MacAddr};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use xdp_backend::tap::{enter_netns, TapDevice};

const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 1);
const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 2);
const STACK_MAC: MacAddr = MacAddr([0x02, 0x77, 0xfa, 0, 0, 2]);
const T: Duration = Duration::from_secs(30);

static SEQ: AtomicU32 = AtomicU32::new(0);

struct Rig {
    // Field order: the stack (and its TAP fd) goes before the namespaces.
    stack: TapStack,
    ns: String,
    _topo: Topology,
}

fn rig() -> Option<Rig> {
    rig_lossy(Loss::default())
}

fn rig_lossy(loss: Loss) -> Option<Rig> {
    if !is_root() {
        eprintln!("skipped: needs root (namespaces, TAP)");
        return None;
    }
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let ns = topo.ns(Side::Server).to_string();
    let name = format!(
        "fntap{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let tap = TapDevice::open_in_netns(&ns, &name, 1500).expect("open tap");
    let ip = |args: &[&str]| {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &ns, "ip"])
                .args(args),
        );
    };
    ip(&["link", "set", &name, "mtu", "1500"]);
    ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", &name]);
    ip(&["link", "set", &name, "up"]);
    let mut cfg = InterfaceConfig::new(STACK_MAC, Ipv4Cidr::new(STACK_IP, 24));
    cfg.seed = 0x7a9 + SEQ.load(Ordering::Relaxed) as u64;
    let tcp = TcpConfig {
        rcvbuf: 1 << 20,
        sndbuf: 1 << 20,
        ..TcpConfig::default()
    };
    let iface = Interface::new(cfg, tcp);
    let stack = TapStack::start_lossy(iface, tap, loss).expect("start driver");
    Some(Rig {
        stack,
        ns,
        _topo: topo,
    })
}

/// Runs `f` on a thread inside namespace `ns` (kernel sockets are created there).
fn in_ns<R: Send + 'static>(ns: &str, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).expect("setns");
        f()
    })
}

/// A deterministic byte stream whose period (1 MiB + 4093) lines up with no segment size.
struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    fn new(seed: u64) -> Pattern {
        let mut x = seed | 1;
        let block = (0..(1 << 20) + 4093)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Pattern { block }
    }
    /// Up to `max` bytes of the stream starting at `offset`.
    fn chunk(&self, offset: usize, max: usize) -> &[u8] {
        let at = offset % self.block.len();
        &self.block[at..(at + max).min(self.block.len())]
    }
    fn sha256(&self, len: usize) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut off = 0;
        while off < len {
            let c = self.chunk(off, len - off);
            h.update(c);
            off += c.len();
        }
        h.finalize().into()
    }
}

fn bulk_len() -> usize {
    std::env::var("TAP_INTEROP_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100)
        << 20
}

/// Kernel side: writes `len` bytes of `pattern` then shuts down writing, reads until
/// EOF; returns (bytes read, sha256 of them).
fn kernel_exchange(mut s: TcpStream, pattern: &Pattern, len: usize) -> (usize, [u8; 32]) {
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    let mut off = 0;
    while off < len {
        let c = pattern.chunk(off, (len - off).min(256 << 10));
        s.write_all(c).expect("kernel write");
        off += c.len();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut h = Sha256::new();
    let mut got = 0;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = s.read(&mut buf).expect("kernel read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n;
    }
    (got, h.finalize().into())
}

/// Stack side: reads until EOF (the kernel's FIN), then — the connection half-closed —
/// writes `len` bytes of `pattern` and closes. Returns (bytes read, sha256).
fn stack_exchange(
    stack: &TapStack,
    h: SocketHandle,
    pattern: &Pattern,
    len: usize,
) -> (usize, [u8; 32]) {
    let mut hasher = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let r = stack
            .wait_until(T, |i| {
                let mut n = 0;
                loop {
                    match i.tcp.recv(h, &mut buf[n..]) {
                        Ok(0) if n == 0 => return Some(Ok(0)),
                        Ok(0) => return Some(Ok(n)),
                        Ok(k) => {
                            n += k;
                            if n == buf.len() {
                                return Some(Ok(n));
                            }
                        }
                        Err(Error::WouldBlock) if n > 0 => return Some(Ok(n)),
                        Err(Error::WouldBlock) => return None,
                        Err(e) => return Some(Err(e)),
                    }
                }
            })
            .expect("stack recv timed out")
            .expect("stack recv");
        if r == 0 {
            break;
        }
        hasher.update(&buf[..r]);
        got += r;
    }
    // Half-closed by the peer: we can still send.
    assert_eq!(stack.with(|i| i.tcp.state(h)), Ok(State::CloseWait));
    let mut off = 0usize;
    while off < len {
        off += stack
            .wait_until(T, |i| {
                let mut sent = 0;
                while off + sent < len {
                    match i.tcp.send(h, pattern.chunk(off + sent, len - off - sent)) {
                        Ok(k) => sent += k,
                        Err(Error::WouldBlock) => break,
                        Err(e) => panic!("stack send: {e}"),
                    }
                }
                (sent > 0).then_some(sent)
            })
            .expect("stack send timed out");
    }
    stack.with(|i| i.tcp.close(h)).unwrap();
    (got, hasher.finalize().into())
}

#[test]
fn ping_and_arp() {
    let Some(rig) = rig() else { return };
    let out = run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &rig.ns,
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-s",
        "1000",
        &STACK_IP.to_string(),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 received"), "{text}");
    let st = rig.stack.stats();
    assert!(st.icmp_echo_replies_sent >= 3, "{st}");
    assert!(st.arp_replies_sent >= 1, "{st}");
    // The kernel's ARP request taught the stack the kernel's MAC.
    let learned = rig
        .stack
        .with(|i| i.neighbor(KERNEL_IP, stack::time::Instant::ZERO));
    assert!(learned.is_some());
    // Only the kernel's IPv6 chatter (multicast MACs) may have been dropped.
    let foreign =
        st.dropped(DropReason::EthernetNotForUs) + st.dropped(DropReason::UnknownEthertype);
    assert_eq!(st.dropped_total(), foreign, "{st}");
}

#[test]
fn udp_both_ways_and_icmp_errors() {
    let Some(rig) = rig() else { return };
    let stack = &rig.stack;
    let s = stack
        .with(|i| {
            let s = i.udp.open()?;
            i.udp
                .bind(s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000))?;
            Ok::<_, Error>(s)
        })
        .unwrap();
    // Kernel client: 50 datagrams of varied sizes up to the MTU; the stack echoes them.
    let client = in_ns(&rig.ns, move || {
        let u = UdpSocket::bind((KERNEL_IP, 0)).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.connect((STACK_IP, 7000)).unwrap();
        let mut buf = [0u8; 2000];
        for k in 0..50usize {
            let len = [1, 17, 512, 1000, 1472][k % 5];
            let msg: Vec<u8> = (0..len).map(|j| (j + k) as u8).collect();
            u.send(&msg).unwrap();
            let n = u.recv(&mut buf).expect("echo");
            assert_eq!(&buf[..n], &msg[..], "datagram {k}");
        }
        // A closed port on the stack: ICMP port unreachable → ECONNREFUSED.
        let v = UdpSocket::bind((KERNEL_IP, 0)).unwrap();
        v.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        v.connect((STACK_IP, 7999)).unwrap();
        v.send(b"nobody").unwrap();
        let e = v.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    });
    let mut buf = [0u8; 2000];
    for _ in 0..50 {
        let (n, from) = stack
            .wait_until(T, |i| {
                i.udp.recv_from(s, &mut buf).ok().map(|r| (r.len, r.from))
            })
            .expect("datagram from the kernel");
        assert_eq!(from.ip(), KERNEL_IP);
        stack
            .with(|i| i.udp.send_to(s, &buf[..n], Some(from)))
            .unwrap();
    }
    client.join().expect("kernel client");

    // Stack → kernel: a closed kernel port gives the stack's connected socket
    // ECONNREFUSED; an open one gets the data.
    let c = stack
        .with(|i| {
            let c = i.udp.open()?;
            i.udp.connect(c, SocketAddrV4::new(KERNEL_IP, 7998))?;
            i.udp.send_to(c, b"hello?", None)?;
            Ok::<_, Error>(c)
        })
        .unwrap();
    let refused = stack.wait_until(T, |i| match i.udp.recv_from(c, &mut [0u8; 8]) {
        Err(Error::ConnectionRefused) => Some(true),
        Err(Error::WouldBlock) => None,
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(refused, Some(true));
    let (bound, is_bound) = std::sync::mpsc::channel();
    let server = in_ns(&rig.ns, move || {
        let u = UdpSocket::bind((KERNEL_IP, 7100)).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bound.send(()).unwrap();
        let mut b = [0u8; 8000];
        let (n, from) = u.recv_from(&mut b).expect("datagram from the stack");
        let first = b[..n].to_vec();
        // Then one larger than the MTU: the stack fragments it, the kernel reassembles.
        let (big, _) = u
            .recv_from(&mut b)
            .expect("fragmented datagram from the stack");
        (first, from, b[..big].to_vec())
    });
    is_bound.recv().unwrap();
    stack
        .with(|i| {
            i.udp.send_to(
                s,
                b"from the stack",
                Some(SocketAddrV4::new(KERNEL_IP, 7100).into()),
            )
        })
        .unwrap();
    let big: Vec<u8> = (0..5000u32).map(|k| (k % 251) as u8).collect();
    stack
        .with(|i| {
            i.udp
                .send_to(s, &big, Some(SocketAddrV4::new(KERNEL_IP, 7100).into()))
        })
        .unwrap();
    let (data, from, got_big) = server.join().unwrap();
    assert_eq!(got_big, big, "fragmented datagram differs after reassembly");
    assert_eq!(data, b"from the stack");
    assert_eq!(
        from,
        std::net::SocketAddr::V4(SocketAddrV4::new(STACK_IP, 7000))
    );
    let st = stack.stats();
    assert_eq!(st.udp_datagrams_received, 50, "{st}");
    assert!(st.icmp_unreachables_sent >= 1, "{st}");
}

/// `ss -ti` in the namespace for the connection to the stack.
fn ss_info(ns: &str) -> String {
    let out = run_ok(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "ss",
        "-tin",
        "state",
        "established",
        "dst",
        &STACK_IP.to_string(),
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the kernel negotiated on `s`: `tcpi_options` and the window scales from
/// TCP_INFO (the same data `ss -ti` prints; iproute2 6.1 on kernel 6.18 omits the
/// "ts"/"sack" words, so they are read here directly).
struct Negotiated {
    /// tcpi_total_retrans: segments the kernel retransmitted on this connection.
    total_retrans: u32,
    options: u8,
    snd_wscale: u8,
    rcv_wscale: u8,
    ss: String,
}

fn negotiated(s: &TcpStream, ns: &str) -> Negotiated {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 104];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: info is a live buffer of `len` bytes; getsockopt writes at most that.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO");
    Negotiated {
        total_retrans: u32::from_ne_bytes([info[100], info[101], info[102], info[103]]),
        options: info[5],
        snd_wscale: info[6] & 0x0f,
        rcv_wscale: info[6] >> 4,
        ss: ss_info(ns),
    }
}

fn assert_options_negotiated(n: &Negotiated) {
    const TS: u8 = 1;
    const SACK: u8 = 2;
    const WSCALE: u8 = 4;
    let ss = &n.ss;
    assert!(ss.contains("wscale:"), "no window scaling in ss -ti:\n{ss}");
    assert!(
        n.options & WSCALE != 0,
        "no window scaling: {:#x}\n{ss}",
        n.options
    );
    assert!(n.options & SACK != 0, "no SACK: {:#x}\n{ss}", n.options);
    assert!(n.options & TS != 0, "no timestamps: {:#x}\n{ss}", n.options);
    assert!(
        n.snd_wscale > 0,
        "the stack advertised no window scale\n{ss}"
    );
    assert!(n.rcv_wscale > 0);
}

#[test]
fn tcp_kernel_client_bulk_each_way_with_options() {
    let Some(rig) = rig() else { return };
    let stack = &rig.stack;
    let len = bulk_len();
    let listener = stack
        .with(|i| i.tcp.listen(SocketAddrV4::new(STACK_IP, 8000), 8))
        .unwrap();
    let ns = rig.ns.clone();
    let client = in_ns(&rig.ns, move || {
        let p = Pattern::new(1);
        let s = TcpStream::connect((STACK_IP, 8000)).expect("kernel connect");
        let ss = negotiated(&s, &ns);
        (ss, kernel_exchange(s, &p, len))
    });
    let h = stack
        .wait_until(T, |i| i.tcp.accept(listener).ok())
        .expect("accept");
    let theirs = Pattern::new(1);
    let ours = Pattern::new(2);
    let (got, hash) = stack_exchange(stack, h, &ours, len);
    assert_eq!(got, len);
    assert_eq!(hash, theirs.sha256(len), "kernel → stack bytes differ");
    let (ss, (kgot, khash)) = client.join().expect("kernel client");
    assert_options_negotiated(&ss);
    assert_eq!(kgot, len);
    assert_eq!(khash, ours.sha256(len), "stack → kernel bytes differ");
}

#[test]
fn tcp_kernel_server_bulk_each_way() {
    let Some(rig) = rig() else { return };
    let stack = &rig.stack;
    let len = bulk_len();
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = rig.ns.clone();
    let server = in_ns(&rig.ns, move || {
        let l = TcpListener::bind((KERNEL_IP, 8100)).unwrap();
        tx.send(()).unwrap();
        let (s, _) = l.accept().expect("kernel accept");
        let ss = negotiated(&s, &ns);
        (ss, kernel_exchange(s, &Pattern::new(3), len))
    });
    rx.recv().unwrap();
    let h = stack
        .with(|i| {
            i.tcp.connect(
                SocketAddrV4::new(STACK_IP, 0),
                SocketAddrV4::new(KERNEL_IP, 8100),
            )
        })
        .unwrap();
    stack
        .wait_until(T, |i| {
            (i.tcp.state(h) == Ok(State::Established)).then_some(())
        })
        .expect("established");
    let ours = Pattern::new(4);
    let (got, hash) = stack_exchange(stack, h, &ours, len);
    assert_eq!(got, len);
    assert_eq!(
        hash,
        Pattern::new(3).sha256(len),
        "kernel → stack bytes differ"
    );
    let (ss, (kgot, khash)) = server.join().expect("kernel server");
    assert_options_negotiated(&ss);
    assert_eq!(kgot, len);
    assert_eq!(khash, ours.sha256(len), "stack → kernel bytes differ");
}

#[test]
fn tcp_half_close_from_the_stack() {
    let Some(rig) = rig() else { return };
    let stack = &rig.stack;
    let (listening, is_listening) = std::sync::mpsc::channel();
    let server = in_ns(&rig.ns, move || {
        let l = TcpListener::bind((KERNEL_IP, 8200)).unwrap();
        listening.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).unwrap(); // ends at the stack's FIN
        s.write_all(&req.iter().rev().copied().collect::<Vec<_>>())
            .unwrap();
        req
    });
    is_listening.recv().unwrap();
    let h = stack
        .with(|i| {
            i.tcp.connect(
                SocketAddrV4::new(STACK_IP, 0),
                SocketAddrV4::new(KERNEL_IP, 8200),
            )
        })
        .unwrap();
    stack
        .wait_until(T, |i| {
            (i.tcp.state(h) == Ok(State::Established)).then_some(())
        })
        .expect("established");
    stack.with(|i| i.tcp.send(h, b"half-close me")).unwrap();
    stack.with(|i| i.tcp.shutdown(h, Shutdown::Write)).unwrap();
    assert_eq!(
        stack.with(|i| i.tcp.send(h, b"more")),
        Err(Error::BrokenPipe)
    );
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 64];
        let n = stack
            .wait_until(T, |i| match i.tcp.recv(h, &mut buf) {
                Err(Error::WouldBlock) => None,
                r => Some(r),
            })
            .expect("reply")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"em esolc-flah");
    assert_eq!(server.join().unwrap(), b"half-close me");
}

#[test]
fn tcp_rst_on_closed_ports_both_ways() {
    let Some(rig) = rig() else { return };
    let stack = &rig.stack;
    // Kernel → stack, nothing listening: the stack answers RST, connect is refused.
    let r = in_ns(&rig.ns, || TcpStream::connect((STACK_IP, 8999)).map(|_| ()))
        .join()
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    // Stack → kernel, nothing listening: the kernel's RST gives ECONNREFUSED.
    let h = stack
        .with(|i| {
            i.tcp.connect(
                SocketAddrV4::new(STACK_IP, 0),
                SocketAddrV4::new(KERNEL_IP, 8998),
            )
        })
        .unwrap();
    let e = stack.wait_until(T, |i| i.tcp.take_error(h).ok().flatten());
    assert_eq!(e, Some(Error::ConnectionRefused));
}

#[test]
fn tcp_loss_both_ways_kernel_and_stack_retransmit() {
    // Every 50th frame lost each way: both TCPs must retransmit, bytes still exact.
    let Some(rig) = rig_lossy(Loss {
        rx_every: 50,
        tx_every: 50,
    }) else {
        return;
    };
    let stack = &rig.stack;
    let len = bulk_len() / 5;
    let listener = stack
        .with(|i| i.tcp.listen(SocketAddrV4::new(STACK_IP, 8300), 8))
        .unwrap();
    let ns = rig.ns.clone();
    let client = in_ns(&rig.ns, move || {
        let s = TcpStream::connect((STACK_IP, 8300)).expect("kernel connect");
        let probe = s.try_clone().unwrap();
        let r = kernel_exchange(s, &Pattern::new(5), len);
        (r, negotiated(&probe, &ns).total_retrans)
    });
    let h = stack
        .wait_until(T, |i| i.tcp.accept(listener).ok())
        .expect("accept");
    let ours = Pattern::new(6);
    let (got, hash) = stack_exchange(stack, h, &ours, len);
    assert_eq!(got, len);
    assert_eq!(
        hash,
        Pattern::new(5).sha256(len),
        "kernel → stack bytes differ"
    );
    let ((kgot, khash), kernel_retrans) = client.join().expect("kernel client");
    assert_eq!(kgot, len);
    assert_eq!(khash, ours.sha256(len), "stack → kernel bytes differ");
    let lost = stack.loss_counts();
    assert!(lost.rx_dropped > 0 && lost.tx_dropped > 0, "{lost:?}");
    assert!(kernel_retrans > 0, "the kernel never retransmitted");
    let tcp = stack.with(|i| i.tcp.stats().clone());
    assert!(
        tcp.retransmits > 0,
        "the stack never retransmitted: {tcp:?}"
    );
}
