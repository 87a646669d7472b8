//! XSK path vs kernel UDP sockets, in one run, on the two-namespace topology:
//! frames per second received (same kernel sender for both) and sent (same kernel
//! receiver for both). Prints `bench<TAB>name<TAB>value<TAB>unit<TAB>note` lines
//! (the `make bench` plug-in contract).
//!
//! Uses the topology from the environment (SERVER_NS, CLIENT_NS, SERVER_IF, SERVER_IP,
//! CLIENT_IP) when set, else makes its own. `--seconds N` per phase (BENCH_SECONDS).

use fastnet_tools::netns::{Topology, TopologyOptions};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdp_backend::{netlink, RxMode, Transport, XdpProgram, XskConfig, XskSocket};

const PAYLOAD: usize = 18; // 64-byte Ethernet frames on the wire (without FCS: 60)
const BATCH: usize = 32;

struct Env {
    server_ns: String,
    client_ns: String,
    server_if: String,
    server_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
    server_cpu: usize,
    client_cpu: usize,
    secs: f64,
}

fn on_thread<T: Send + 'static>(
    ns: &str,
    cpu: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns");
        // SAFETY: setns on a namespace fd changes this thread's network namespace only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        f()
    })
}

/// Sends PAYLOAD-byte datagrams with sendmmsg until `stop`; returns how many.
fn kernel_send(sock: &UdpSocket, stop: &AtomicBool) -> u64 {
    let payload = [0x5au8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut _,
        iov_len: PAYLOAD,
    };
    // SAFETY: zeroed mmsghdr is valid; we set the iovec below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` points to live iovecs over `payload`.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    sent
}

/// Receives with recvmmsg until `stop`; returns how many datagrams.
fn kernel_recv(sock: &UdpSocket, stop: &AtomicBool) -> u64 {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; iovecs set below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut got = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` points to live iovecs over `bufs`.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                0,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            got += n as u64;
        }
    }
    got
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

fn udp_template(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![
        0x45,
        0,
        0,
        (28 + PAYLOAD) as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&9999u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
    f.extend_from_slice(&[0x5a; PAYLOAD]);
    f
}

struct Phase {
    sent: u64,
    received: u64,
    secs: f64,
}

fn rx_kernel(env: &Env, port: u16) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let (sip, stop_r) = (env.server_ip, stop.clone());
    let recv = on_thread(&env.server_ns, env.server_cpu, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(sip, port)).unwrap();
        kernel_recv(&s, &stop_r)
    });
    std::thread::sleep(Duration::from_millis(200));
    let (sent, secs) = run_sender(env, port, &stop);
    Phase {
        sent,
        received: recv.join().unwrap(),
        secs,
    }
}

fn run_sender(env: &Env, port: u16, stop_all: &Arc<AtomicBool>) -> (u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (sip, cip, stop_s) = (env.server_ip, env.client_ip, stop.clone());
    let sender = on_thread(&env.client_ns, env.client_cpu, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(cip, 0)).unwrap();
        s.connect(SocketAddrV4::new(sip, port)).unwrap();
        kernel_send(&s, &stop_s)
    });
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(env.secs));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100)); // let the receiver drain
    stop_all.store(true, Ordering::Relaxed);
    (sent, secs)
}

fn open_xsk(env: &Env) -> (XdpProgram, Vec<XskSocket>, netlink::LinkInfo) {
    let link = netlink::link_by_name(&env.server_if).unwrap();
    let mut prog = XdpProgram::load().unwrap();
    let config = XskConfig {
        rx_mode: RxMode::BusyPoll,
        ..Default::default()
    };
    let mut socks = Vec::new();
    for q in 0..xdp_backend::queues::of(&link)
        .expect("queues in use")
        .bindable()
    {
        let s = XskSocket::bind(link.index, q, &config).unwrap();
        prog.register_xsk(q, s.fd()).unwrap();
        socks.push(s);
    }
    prog.attach(link.index, None).unwrap();
    (prog, socks, link)
}

fn rx_xsk(env: &Env, port: u16) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop_r = stop.clone();
    let server_if = env.server_if.clone();
    let env2 = Env {
        server_if,
        server_ns: env.server_ns.clone(),
        client_ns: env.client_ns.clone(),
        ..*env
    };
    let recv = on_thread(&env.server_ns, env.server_cpu, move || {
        let (prog, mut socks, _) = open_xsk(&env2);
        prog.port_map().claim(Transport::Udp, port).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = 0u64;
        while !stop_r.load(Ordering::Relaxed) {
            for s in socks.iter_mut() {
                got += s.receive(64, |f| {
                    std::hint::black_box(f);
                }) as u64;
            }
        }
        got
    });
    ready_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (sent, secs) = run_sender(env, port, &stop);
    Phase {
        sent,
        received: recv.join().unwrap(),
        secs,
    }
}

fn tx_phase(env: &Env, port: u16, xsk: bool) -> Phase {
    let stop_recv = Arc::new(AtomicBool::new(false));
    let stop_send = Arc::new(AtomicBool::new(false));
    let (cip, stop_r) = (env.client_ip, stop_recv.clone());
    let recv = on_thread(&env.client_ns, env.client_cpu, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(cip, port)).unwrap();
        kernel_recv(&s, &stop_r)
    });
    std::thread::sleep(Duration::from_millis(200));
    let (sip, stop_s) = (env.server_ip, stop_send.clone());
    let env2 = Env {
        server_if: env.server_if.clone(),
        server_ns: env.server_ns.clone(),
        client_ns: env.client_ns.clone(),
        ..*env
    };
    let sender = on_thread(&env.server_ns, env.server_cpu, move || {
        if !xsk {
            let s = UdpSocket::bind(SocketAddrV4::new(sip, 0)).unwrap();
            s.connect(SocketAddrV4::new(cip, port)).unwrap();
            return kernel_send(&s, &stop_s);
        }
        let (_prog, mut socks, link) = open_xsk(&env2);
        let route = netlink::route_get(cip).unwrap();
        let mac =
            netlink::resolve_neighbour(route.oif, route.next_hop(cip), Duration::from_secs(3))
                .unwrap();
        let frame = udp_template(link.mac, mac, sip, cip, port);
        let s = &mut socks[0];
        let mut sent = 0u64;
        while !stop_s.load(Ordering::Relaxed) {
            for _ in 0..BATCH {
                if s.send(&frame) {
                    sent += 1;
                }
            }
            s.flush();
        }
        sent
    });
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(env.secs));
    stop_send.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    stop_recv.store(true, Ordering::Relaxed);
    Phase {
        sent,
        received: recv.join().unwrap(),
        secs,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("BENCH_SECONDS").ok())
        .map(|s| s.parse().unwrap())
        .unwrap_or(3.0);
    let var = |k: &str| std::env::var(k).ok();
    let cpu = |k: &str, d: usize| var(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let _own;
    let env = if let (Some(s), Some(c), Some(i), Some(sip), Some(cip)) = (
        var("SERVER_NS"),
        var("CLIENT_NS"),
        var("SERVER_IF"),
        var("SERVER_IP"),
        var("CLIENT_IP"),
    ) {
        Env {
            server_ns: s,
            client_ns: c,
            server_if: i,
            server_ip: sip.parse().unwrap(),
            client_ip: cip.parse().unwrap(),
            server_cpu: 0,
            client_cpu: 1,
            secs,
        }
    } else {
        let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
        let e = Env {
            server_ns: t.server_ns.clone(),
            client_ns: t.client_ns.clone(),
            server_if: t.server_if.clone(),
            server_ip: t.server_ip,
            client_ip: t.client_ip,
            server_cpu: 0,
            client_cpu: 1,
            secs,
        };
        _own = t;
        e
    };
    let env = Env {
        server_cpu: cpu("BENCH_SERVER_CPU", 0),
        client_cpu: cpu("BENCH_CLIENT_CPU", 1),
        ..env
    };

    // Kernel phases first, with no XDP program on the interface at all.
    let rk = rx_kernel(&env, 9001);
    let rx = rx_xsk(&env, 9000);
    let tk = tx_phase(&env, 9002, false);
    let tx = tx_phase(&env, 9003, true);
    let rate = |n: u64, p: &Phase| n as f64 / p.secs;
    let line = |name: &str, v: f64, unit: &str, note: String| {
        println!("bench\t{name}\t{v:.0}\t{unit}\t{note}");
    };
    line(
        "xdp_rx_kernel_udp",
        rate(rk.received, &rk),
        "frames/s",
        format!(
            "kernel UDP socket, recvmmsg; sender offered {:.0}/s",
            rate(rk.sent, &rk)
        ),
    );
    line(
        "xdp_rx_xsk",
        rate(rx.received, &rx),
        "frames/s",
        format!(
            "AF_XDP copy mode, busy-poll; same sender offered {:.0}/s",
            rate(rx.sent, &rx)
        ),
    );
    println!(
        "bench\txdp_rx_ratio\t{:.2}\tx\tXSK / kernel, frames received per second",
        rate(rx.received, &rx) / rate(rk.received, &rk).max(1.0)
    );
    line(
        "xdp_tx_kernel_udp",
        rate(tk.sent, &tk),
        "frames/s",
        format!(
            "kernel UDP socket, sendmmsg; peer received {:.0}/s",
            rate(tk.received, &tk)
        ),
    );
    line(
        "xdp_tx_xsk",
        rate(tx.sent, &tx),
        "frames/s",
        format!(
            "AF_XDP TX ring, sendto kick per {BATCH}; peer received {:.0}/s",
            rate(tx.received, &tx)
        ),
    );
    println!(
        "bench\txdp_tx_ratio\t{:.2}\tx\tXSK / kernel, frames sent per second",
        rate(tx.sent, &tx) / rate(tk.sent, &tk).max(1.0)
    );
    println!(
        "bench\txdp_tx_delivered_ratio\t{:.2}\tx\tXSK / kernel, frames the peer's kernel socket \
         received per second (bounded by that receiver)",
        rate(tx.received, &tx) / rate(tk.received, &tk).max(1.0)
    );
}
