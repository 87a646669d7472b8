//! CPU time per frame of one XSK's TX and RX paths, measured as the thread's CPU
//! time (a busy 2-core machine changes it far less than a rate): the focused check
//! that the family page's frame accounting (lock per batch, shared pool) costs the
//! single-process path nothing measurable. Run two builds alternately and compare:
//! `xsk_cpu [seconds]` prints `tx_cpu_ns_per_frame N ... rx_cpu_ns_per_frame M ...`.
use fastnet_tools::netns::{Topology, TopologyOptions};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdp_backend::{netlink, Transport, XdpProgram, XskConfig, XskSocket};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec on our stack.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a namespace fd changes this thread's network namespace only.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(2.0);
    let topo = Topology::up(&TopologyOptions::default()).unwrap();
    let (sns, cns, sif) = (
        topo.server_ns.clone(),
        topo.client_ns.clone(),
        topo.server_if.clone(),
    );
    let (sip, cip) = (topo.server_ip, topo.client_ip);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        enter(&sns);
        let link = netlink::link_by_name(&sif).unwrap();
        let mut prog = XdpProgram::load().unwrap();
        let mut x = XskSocket::bind(link.index, 0, &XskConfig::default()).unwrap();
        prog.register_xsk(0, x.fd()).unwrap();
        prog.port_map().claim(Transport::Udp, 9000).unwrap();
        prog.attach(link.index, None).unwrap();
        // TX: frames to a MAC nobody has (the peer drops them at once).
        let mut frame = [0u8; 60];
        frame[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xff]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let (t0, c0) = (Instant::now(), thread_cpu_ns());
        let mut sent = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            for _ in 0..32 {
                if x.send(&frame) {
                    sent += 1;
                }
            }
            x.flush();
        }
        let tx_ns = (thread_cpu_ns() - c0) as f64 / sent as f64;
        // RX: count what the kernel sender offers until told to stop.
        let (c1, mut got) = (thread_cpu_ns(), 0u64);
        while !stop2.load(Ordering::Relaxed) {
            got += x.receive(64, |_| {}) as u64;
            let _ = x.wait(Some(Duration::from_millis(5)));
        }
        let rx_ns = (thread_cpu_ns() - c1) as f64 / got.max(1) as f64;
        (tx_ns, sent, rx_ns, got)
    });
    std::thread::sleep(Duration::from_secs_f64(secs + 0.5));
    let client = std::thread::spawn(move || {
        enter(&cns);
        let s = UdpSocket::bind((cip, 0)).unwrap();
        s.connect((sip, 9000)).unwrap();
        let t0 = Instant::now();
        let payload = [0x5a; 18];
        let mut n = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            if s.send(&payload).is_ok() {
                n += 1;
            }
        }
        n
    });
    let offered = client.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (tx_ns, sent, rx_ns, got) = server.join().unwrap();
    println!("tx_cpu_ns_per_frame {tx_ns:.0} ({sent} frames) rx_cpu_ns_per_frame {rx_ns:.0} ({got} of {offered} frames)");
}
