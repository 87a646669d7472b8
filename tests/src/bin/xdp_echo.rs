//! Test server on the raw XSK path (no TCP needed): answers UDP datagrams to a claimed
//! port by swapping the headers, and counts what it rejects. Run inside a namespace:
//!
//! `xdp_echo --iface IF --udp-port P [--xsk-queues N] [--generic] [--busy-poll]`
//!
//! Prints `READY mode=<native|generic> zero_copy=<bool> queues=<n> role=.. pid=..` once
//! attached. `--fork`: serve from a forked child (inherited UMEM and rings).
//! Commands on stdin: `stats` prints one `STATS key=value ...` line; `quit` (or EOF)
//! exits.

use stack::wire::checksum;
use stack::wire::ethernet::{EtherType, EthernetFrame};
use stack::wire::ipv4::Ipv4Packet;
use stack::wire::udp::UdpPacket;
use std::io::{BufRead, Write};
use std::time::Duration;
use xdp_backend::{netlink, AttachMode, RxMode, Transport, XdpProgram, XskConfig, XskSocket};

#[derive(Default)]
struct Rejects {
    not_udp_to_port: u64,
    bad_frame: u64,
    bad_ip_checksum: u64,
    bad_udp_checksum: u64,
    no_tx_room: u64,
    echoed: u64,
}

/// Builds the reply to a UDP datagram for `port` into a fresh frame: MACs, addresses
/// and ports swapped, checksums recomputed. Returns the reply length or why not.
fn reply(frame: &[u8], port: u16, rej: &mut Rejects, out: &mut Vec<u8>) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        rej.bad_frame += 1;
        return false;
    };
    if eth.ethertype() != EtherType::Ipv4 {
        rej.not_udp_to_port += 1;
        return false;
    }
    let l3 = eth.header_len();
    let Ok(ip) = Ipv4Packet::new_checked(&frame[l3..]) else {
        rej.bad_frame += 1;
        return false;
    };
    if ip.version() != 4 || ip.protocol() != 17 || ip.is_fragment() {
        rej.not_udp_to_port += 1;
        return false;
    }
    if !ip.verify_checksum() {
        rej.bad_ip_checksum += 1;
        return false;
    }
    let ihl = ip.header_len() as usize;
    let total = ip.total_len() as usize;
    let Ok(udp) = UdpPacket::new_checked(&frame[l3 + ihl..l3 + total]) else {
        rej.bad_frame += 1;
        return false;
    };
    if udp.dst_port() != port {
        rej.not_udp_to_port += 1;
        return false;
    }
    if !udp.verify_checksum(ip.src(), ip.dst()) {
        rej.bad_udp_checksum += 1;
        return false;
    }
    let (src, dst) = (ip.src(), ip.dst());
    let udp_len = udp.len() as usize;
    out.clear();
    out.extend_from_slice(&frame[..l3 + ihl + udp_len]);
    out.copy_within(6..12, 0);
    out[6..12].copy_from_slice(&frame[0..6]);
    let ipb = l3;
    out[ipb + 2..ipb + 4].copy_from_slice(&((ihl + udp_len) as u16).to_be_bytes());
    out[ipb + 8] = 64;
    out[ipb + 12..ipb + 16].copy_from_slice(&dst.octets());
    out[ipb + 16..ipb + 20].copy_from_slice(&src.octets());
    out[ipb + 10..ipb + 12].fill(0);
    let c = checksum::checksum(&out[ipb..ipb + ihl]);
    out[ipb + 10..ipb + 12].copy_from_slice(&c.to_be_bytes());
    let u = ipb + ihl;
    out.copy_within(u + 2..u + 4, u); // src port = their dst port
    out[u + 2..u + 4].copy_from_slice(&frame[u..u + 2]);
    out[u + 6..u + 8].fill(0);
    let mut c = checksum::transport_checksum(dst, src, 17, &out[u..u + udp_len]);
    if c == 0 {
        c = 0xffff;
    }
    out[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    true
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let iface = arg("--iface").expect("--iface");
    let port: u16 = arg("--udp-port").expect("--udp-port").parse().unwrap();
    let mode = if args.iter().any(|a| a == "--generic") {
        Some(AttachMode::Generic)
    } else {
        None
    };
    let busy = args.iter().any(|a| a == "--busy-poll");

    let link = netlink::link_by_name(&iface).expect("interface");
    let xsk_queues: u32 = arg("--xsk-queues")
        .map(|q| q.parse().unwrap())
        .unwrap_or_else(|| {
            xdp_backend::queues::of(&link)
                .expect("queues in use")
                .bindable()
        });
    let mut prog = XdpProgram::load().expect("load XDP program");
    prog.port_map()
        .claim(Transport::Udp, port)
        .expect("claim port");
    let config = XskConfig {
        rx_mode: if busy {
            RxMode::BusyPoll
        } else {
            RxMode::Blocking
        },
        mtu: link.mtu as usize,
        ..Default::default()
    };
    let mut socks = Vec::new();
    for q in 0..xsk_queues {
        let s = XskSocket::bind(link.index, q, &config).expect("bind XSK");
        prog.register_xsk(q, s.fd()).expect("register XSK");
        socks.push(s);
    }
    let attached = prog.attach(link.index, mode).expect("attach");
    // --fork: a child process serves through the UMEM and rings it inherited (shared
    // mappings); the parent only waits (still single-threaded here, so fork is safe).
    let mut role = "single";
    if args.iter().any(|a| a == "--fork") {
        // SAFETY: no other threads exist yet; the child continues with its own copy.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid > 0 {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            std::process::exit(0);
        }
        role = "forked-child";
    }
    println!(
        "READY mode={} zero_copy={} queues={} role={role} pid={}",
        match attached {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        },
        socks.iter().any(|s| s.is_zero_copy()),
        socks.len(),
        std::process::id()
    );
    std::io::stdout().flush().unwrap();

    // stdin commands come from a thread; the loop below never blocks on them.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        let _ = tx.send("quit".into());
    });

    let mut rej = Rejects::default();
    let mut out = Vec::with_capacity(4096);
    let mut replies: Vec<Vec<u8>> = Vec::new();
    loop {
        for s in socks.iter_mut() {
            let mut got = Vec::new();
            s.receive(64, |frame| {
                if reply(frame, port, &mut rej, &mut out) {
                    got.push(out.clone());
                }
            });
            replies.append(&mut got);
            for r in replies.drain(..) {
                if s.send(&r) {
                    rej.echoed += 1;
                } else {
                    rej.no_tx_room += 1;
                }
            }
            s.flush();
        }
        if socks.len() == 1 {
            let _ = socks[0].wait(Some(Duration::from_millis(20)));
        } else if socks.iter().all(|s| s.rx_available() == 0) {
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd.trim() {
                "stats" => {
                    let c = prog.counters().expect("counters");
                    let mut st = xdp_backend::XskStats::default();
                    for s in &socks {
                        let x = s.stats();
                        st.rx_frames += x.rx_frames;
                        st.tx_frames += x.tx_frames;
                        st.tx_wakeups += x.tx_wakeups;
                        st.kernel_rx_dropped += x.kernel_rx_dropped;
                    }
                    println!(
                        "STATS passed={} redirected={} dropped_no_xsk={} malformed={} \
                         rx_frames={} tx_frames={} tx_wakeups={} kernel_rx_dropped={} \
                         echoed={} not_udp_to_port={} bad_frame={} bad_ip_checksum={} \
                         bad_udp_checksum={} no_tx_room={}",
                        c.passed,
                        c.redirected,
                        c.dropped_no_xsk,
                        c.malformed,
                        st.rx_frames,
                        st.tx_frames,
                        st.tx_wakeups,
                        st.kernel_rx_dropped,
                        rej.echoed,
                        rej.not_udp_to_port,
                        rej.bad_frame,
                        rej.bad_ip_checksum,
                        rej.bad_udp_checksum,
                        rej.no_tx_room
                    );
                    std::io::stdout().flush().unwrap();
                }
                "quit" => return,
                _ => {}
            }
        }
    }
}
