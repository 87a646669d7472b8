//! Test server on `stack` + `xdp-backend`: TCP echo, a bulk sink and an HTTP bulk
//! source, all over AF_XDP sockets on every queue of the interface. Run inside a
//! namespace:
//!
//! `xdp_tcp_server --iface IF --echo-port P --sink-port P --source-port P`
//!
//! - echo: sends back every byte; closes after the peer's FIN once all is echoed.
//! - sink: reads to end of stream, then prints `SINK bytes=N sha256=HEX` on stdout
//!   and writes the same line to the peer before closing.
//! - source: reads an HTTP request `GET /N`, answers `200 OK` with N bytes of
//!   [`pattern`] and closes.
//!
//! Prints `READY ...` once attached. Commands on stdin: `stats`, `quit` (or EOF).

use sha2::{Digest, Sha256};
use stack::error::Error;
use stack::iface::{DropReason, Interface, InterfaceConfig, NeighborMode};
use stack::socket::SocketHandle;
use stack::tcp::TcpConfig;
use stack::time::Instant;
use stack::wire::{ipv4::Ipv4Cidr, MacAddr};
use std::io::{BufRead, Write};
use std::net::SocketAddrV4;
use std::time::Duration;
use xdp_backend::{netlink, Transport, XdpProgram, XskConfig, XskSocket};

/// Byte `i` of the source's body (the test computes the same).
fn pattern(i: u64) -> u8 {
    (i % 251) as u8 ^ (i >> 12) as u8
}

enum Kind {
    Echo {
        pending: Vec<u8>,
        eof: bool,
    },
    Sink {
        hash: Sha256,
        bytes: u64,
    },
    Source {
        /// None while the request is still being read.
        header: Option<Vec<u8>>,
        request: Vec<u8>,
        body_len: u64,
        sent: u64,
    },
}

struct Conn {
    h: SocketHandle,
    kind: Kind,
    done: bool,
}

/// Moves what it can for one connection; false when it is finished.
fn service(tcp: &mut stack::tcp::TcpLayer, c: &mut Conn, buf: &mut [u8]) -> Result<(), Error> {
    match &mut c.kind {
        Kind::Echo { pending, eof } => loop {
            if !pending.is_empty() {
                match tcp.send(c.h, pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        continue;
                    }
                    Err(Error::WouldBlock) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if *eof {
                tcp.close(c.h)?;
                c.done = true;
                return Ok(());
            }
            match tcp.recv(c.h, buf) {
                Ok(0) => *eof = true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(Error::WouldBlock) => return Ok(()),
                Err(e) => return Err(e),
            }
        },
        Kind::Sink { hash, bytes } => loop {
            match tcp.recv(c.h, buf) {
                Ok(0) => {
                    let line = format!(
                        "SINK bytes={} sha256={}\n",
                        bytes,
                        hex(&std::mem::take(hash).finalize())
                    );
                    print!("{line}");
                    std::io::stdout().flush().unwrap();
                    let _ = tcp.send(c.h, line.as_bytes());
                    tcp.close(c.h)?;
                    c.done = true;
                    return Ok(());
                }
                Ok(n) => {
                    hash.update(&buf[..n]);
                    *bytes += n as u64;
                }
                Err(Error::WouldBlock) => return Ok(()),
                Err(e) => return Err(e),
            }
        },
        Kind::Source {
            request,
            header,
            body_len,
            sent,
        } => loop {
            let Some(header) = header else {
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match tcp.recv(c.h, buf) {
                        Ok(0) => return Err(Error::ConnectionReset),
                        Ok(n) => {
                            request.extend_from_slice(&buf[..n]);
                            continue;
                        }
                        Err(Error::WouldBlock) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                };
                let text = String::from_utf8_lossy(&request[..end]);
                let path = text.split_whitespace().nth(1).unwrap_or("/0");
                *body_len = path.trim_start_matches('/').parse().unwrap_or(0);
                *header = Some(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes(),
                );
                continue;
            };
            if !header.is_empty() {
                match tcp.send(c.h, header) {
                    Ok(n) => {
                        header.drain(..n);
                        continue;
                    }
                    Err(Error::WouldBlock) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if *sent >= *body_len {
                tcp.close(c.h)?;
                c.done = true;
                return Ok(());
            }
            let n = (buf.len() as u64).min(*body_len - *sent) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(*sent + i as u64);
            }
            match tcp.send(c.h, &buf[..n]) {
                Ok(k) => *sent += k as u64,
                Err(Error::WouldBlock) => return Ok(()),
                Err(e) => return Err(e),
            }
        },
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let iface_name = arg("--iface");
    let echo_port: u16 = arg("--echo-port").parse().unwrap();
    let sink_port: u16 = arg("--sink-port").parse().unwrap();
    let source_port: u16 = arg("--source-port").parse().unwrap();

    let link = netlink::link_by_name(&iface_name).expect("interface");
    let (addr, prefix) = netlink::ipv4_addresses(link.index).expect("addresses")[0];
    let mut prog = XdpProgram::load().expect("load XDP program");
    // Claimed before listening: no SYN can reach a kernel socket first.
    for p in [echo_port, sink_port, source_port] {
        prog.port_map().claim(Transport::Tcp, p).expect("claim");
    }
    let config = XskConfig {
        mtu: link.mtu as usize,
        ..Default::default()
    };
    let mut socks = Vec::new();
    for q in 0..xdp_backend::queues::of(&link)
        .expect("queues in use")
        .bindable()
    {
        let s = XskSocket::bind(link.index, q, &config).expect("bind XSK");
        prog.register_xsk(q, s.fd()).expect("register XSK");
        socks.push(s);
    }
    let mut icfg = InterfaceConfig::new(MacAddr(link.mac), Ipv4Cidr::new(addr, prefix));
    icfg.neighbor_mode = NeighborMode::External;
    icfg.mtu = link.mtu as usize;
    let mut iface = Interface::new(icfg, TcpConfig::default());
    let mut listeners = Vec::new();
    for (p, kind) in [(echo_port, 0), (sink_port, 1), (source_port, 2)] {
        let l = iface
            .tcp
            .listen(SocketAddrV4::new(addr, p), 128)
            .expect("listen");
        listeners.push((l, kind));
    }
    let mode = prog.attach(link.index, None).expect("attach");
    println!("READY mode={mode:?} queues={}", socks.len());
    std::io::stdout().flush().unwrap();

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

    let start = std::time::Instant::now();
    let now = || Instant::from_micros(start.elapsed().as_micros() as u64);
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut errors = 0u64;
    let mut accepted = 0u64;
    loop {
        let t = now();
        for s in socks.iter_mut() {
            s.receive(256, |f| iface.receive(t, f));
        }
        for &(l, kind) in &listeners {
            while let Ok(h) = iface.tcp.accept(l) {
                accepted += 1;
                let kind = match kind {
                    0 => Kind::Echo {
                        pending: Vec::new(),
                        eof: false,
                    },
                    1 => Kind::Sink {
                        hash: Sha256::new(),
                        bytes: 0,
                    },
                    _ => Kind::Source {
                        request: Vec::new(),
                        header: None,
                        body_len: 0,
                        sent: 0,
                    },
                };
                conns.push(Conn {
                    h,
                    kind,
                    done: false,
                });
            }
        }
        for c in conns.iter_mut() {
            if let Err(e) = service(&mut iface.tcp, c, &mut buf) {
                let what = match c.kind {
                    Kind::Echo { .. } => "echo",
                    Kind::Sink { .. } => "sink",
                    Kind::Source { .. } => "source",
                };
                eprintln!("{what} connection error: {e:?}");
                errors += 1;
                let _ = iface.tcp.close(c.h);
                c.done = true;
            }
        }
        conns.retain(|c| !c.done);
        let missing: Vec<_> = iface.missing_neighbors().collect();
        for ip in missing {
            match netlink::resolve_neighbour(link.index, ip, Duration::from_secs(1)) {
                Ok(mac) => iface.set_neighbor(ip, MacAddr(mac)),
                Err(e) => eprintln!("neighbour {ip}: {e}"),
            }
        }
        let t = now();
        iface.dispatch(t, &mut socks[0]);
        socks[0].flush();

        let idle = socks.iter().all(|s| s.rx_available() == 0);
        if idle {
            let wait_us = match iface.poll_at() {
                Some(at) => at.0.saturating_sub(now().0).min(5_000),
                None => 5_000,
            };
            if wait_us > 0 {
                let d = Duration::from_micros(wait_us);
                if socks.len() == 1 {
                    let _ = socks[0].wait(Some(d));
                } else {
                    std::thread::sleep(d.min(Duration::from_micros(200)));
                }
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd.trim() {
                "stats" => {
                    let c = prog.counters().expect("counters");
                    let s = socks[0].stats();
                    println!(
                        "STATS redirected={} passed={} malformed={} dropped_no_xsk={} \
                         accepted={accepted} open={} errors={errors} tx_frames={} \
                         tx_ring_full={} rx_frames={} stack_dropped={} tcp_bad_checksum={} \
                         ipv4_bad_checksum={}",
                        c.redirected,
                        c.passed,
                        c.malformed,
                        c.dropped_no_xsk,
                        conns.len(),
                        s.tx_frames,
                        s.tx_ring_full,
                        s.rx_frames,
                        iface.stats().dropped_total(),
                        iface.stats().dropped(DropReason::TcpBadChecksum),
                        iface.stats().dropped(DropReason::Ipv4BadChecksum)
                    );
                    std::io::stdout().flush().unwrap();
                }
                "quit" => return,
                _ => {}
            }
        }
    }
}
