//! Two TCP stacks in memory, ours and smoltcp's, doing the same work in one run:
//! bulk transfer (MB per CPU second) and 1-byte ping-pong (round trips per CPU second).
//! Both compute and verify IPv4 and TCP checksums in software; same MTU and buffers;
//! both copy the data in from a 64 KiB application buffer and out into another (the
//! socket calls an application makes). IP packets, no Ethernet, and a simulated clock
//! (no clock reads); `stack_bench` is the same comparison over Ethernet with the real
//! clock, and gives the rows of BENCHMARKS.md.
//!
//! `cargo run --release -p stack --example tcp_vs_smoltcp [-- MB ROUNDTRIPS MTU]`

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration as CpuTime;

use stack::error::Error;
use stack::ip_tx::{IpProtocol, IpTx};
use stack::sim::ipv4;
use stack::tcp::{TcpConfig, TcpLayer};
use stack::time::Instant;
use stack::wire::checksum::transport_checksum;

const BUF: usize = 256 * 1024;

/// CPU time this thread has used: rates are per CPU second, so other work on a shared
/// machine (which stretches wall time) does not skew the comparison.
fn cpu_time() -> CpuTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    CpuTime::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// A zero-delay wire: packets in a queue, buffers recycled.
struct Wire {
    q: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    mtu: usize,
}

impl Wire {
    fn new(mtu: usize) -> Wire {
        Wire {
            q: VecDeque::new(),
            pool: Vec::new(),
            mtu,
        }
    }
}

impl IpTx for Wire {
    fn max_segment(&self, _dst: IpAddr) -> usize {
        self.mtu - ipv4::HEADER
    }
    fn send(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
            unreachable!("the benchmark's addresses are IPv4")
        };
        let mut p = self.pool.pop().unwrap_or_default();
        p.clear();
        p.resize(ipv4::HEADER + len, 0);
        ipv4::write_header(&mut p, src, dst, proto.number(), ipv4::HEADER + len);
        let seg = &mut p[ipv4::HEADER..];
        fill(seg);
        let c = transport_checksum(src, dst, 6, seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        self.q.push_back(p);
        true
    }
}

fn deliver(from: &mut Wire, to: &mut TcpLayer, now: Instant) {
    while let Some(p) = from.q.pop_front() {
        if let Some((src, dst, 6, seg)) = ipv4::parse(&p) {
            if transport_checksum(src, dst, 6, seg) == 0 {
                to.receive(now, src, dst, seg);
            }
        }
        from.pool.push(p);
    }
}

struct Ours {
    a: TcpLayer,
    b: TcpLayer,
    ab: Wire,
    ba: Wire,
    now: Instant,
}

impl Ours {
    fn new(mtu: usize) -> Ours {
        let cfg = TcpConfig {
            max_sockets: 8,
            rcvbuf: BUF,
            sndbuf: BUF,
            ..TcpConfig::default()
        };
        Ours {
            a: TcpLayer::new(cfg.clone(), 1),
            b: TcpLayer::new(cfg, 2),
            ab: Wire::new(mtu),
            ba: Wire::new(mtu),
            now: Instant::from_millis(1),
        }
    }
    fn turn(&mut self) {
        self.now += stack::time::Duration::from_micros(1);
        self.a.dispatch(self.now, &mut self.ab);
        deliver(&mut self.ab, &mut self.b, self.now);
        self.b.dispatch(self.now, &mut self.ba);
        deliver(&mut self.ba, &mut self.a, self.now);
    }
}

fn ours_bulk(total: usize, mtu: usize) -> f64 {
    let mut o = Ours::new(mtu);
    let l = o.b.listen(SocketAddrV4::new(B, 80), 4).unwrap();
    let c =
        o.a.connect(SocketAddrV4::new(A, 0), SocketAddrV4::new(B, 80))
            .unwrap();
    let s = loop {
        o.turn();
        if let Ok(s) = o.b.accept(l) {
            break s;
        }
    };
    let chunk = vec![0x5au8; 64 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut got) = (0usize, 0usize);
    let start = cpu_time();
    while got < total {
        while sent < total {
            match o.a.send(c, &chunk[..(total - sent).min(chunk.len())]) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("{e}"),
            }
        }
        o.turn();
        while let Ok(n) = o.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        o.a.drain_changed(|_| {});
        o.b.drain_changed(|_| {});
    }
    total as f64 / (cpu_time() - start).as_secs_f64() / 1e6
}

fn ours_pingpong(rounds: usize, mtu: usize) -> f64 {
    let mut o = Ours::new(mtu);
    let l = o.b.listen(SocketAddrV4::new(B, 80), 4).unwrap();
    let c =
        o.a.connect(SocketAddrV4::new(A, 0), SocketAddrV4::new(B, 80))
            .unwrap();
    let s = loop {
        o.turn();
        if let Ok(s) = o.b.accept(l) {
            break s;
        }
    };
    let mut b1 = [0u8; 1];
    let start = cpu_time();
    for _ in 0..rounds {
        o.a.send(c, b"p").unwrap();
        o.now += stack::time::Duration::from_micros(1);
        o.a.dispatch(o.now, &mut o.ab);
        deliver(&mut o.ab, &mut o.b, o.now);
        assert_eq!(o.b.recv(s, &mut b1), Ok(1));
        o.b.send(s, b"q").unwrap();
        o.b.dispatch(o.now, &mut o.ba);
        deliver(&mut o.ba, &mut o.a, o.now);
        assert_eq!(o.a.recv(c, &mut b1), Ok(1));
        // A host (the shim's epoll) drains readiness changes as it goes.
        o.a.drain_changed(|_| {});
        o.b.drain_changed(|_| {});
    }
    rounds as f64 / (cpu_time() - start).as_secs_f64()
}

mod smol {
    use super::cpu_time;
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant;
    use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// Frame buffers, shared by both devices: a frame received goes back to the pool
    /// the sender takes from (as the `Wire` of ours does). Per-device pools would
    /// leave the sender's empty and make it allocate (and page-fault) every frame.
    pub type Pool = Rc<RefCell<Vec<Vec<u8>>>>;

    pub struct QueueDev {
        pub rx: VecDeque<Vec<u8>>,
        pub tx: VecDeque<Vec<u8>>,
        pub pool: Pool,
        pub mtu: usize,
    }
    pub struct Rx(Vec<u8>, Pool);
    pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, &'a Pool);

    impl RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            let r = f(&self.0);
            self.1.borrow_mut().push(self.0);
            r
        }
    }
    impl TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut v = self.1.borrow_mut().pop().unwrap_or_default();
            v.clear();
            v.resize(len, 0);
            let r = f(&mut v);
            self.0.push_back(v);
            r
        }
    }
    impl Device for QueueDev {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;
        fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
            let p = self.rx.pop_front()?;
            Some((Rx(p, self.pool.clone()), Tx(&mut self.tx, &self.pool)))
        }
        fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
            Some(Tx(&mut self.tx, &self.pool))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut c = DeviceCapabilities::default();
            c.medium = Medium::Ip;
            c.max_transmission_unit = self.mtu;
            c
        }
    }

    pub struct Pair {
        pub ia: Interface,
        pub ib: Interface,
        pub da: QueueDev,
        pub db: QueueDev,
        pub sa: SocketSet<'static>,
        pub sb: SocketSet<'static>,
        pub ca: SocketHandle,
        pub cb: SocketHandle,
        pub now: i64,
    }

    fn dev(mtu: usize, pool: &Pool) -> QueueDev {
        QueueDev {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            pool: pool.clone(),
            mtu,
        }
    }

    fn sock(buf: usize) -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buf]),
            tcp::SocketBuffer::new(vec![0; buf]),
        )
    }

    impl Pair {
        pub fn new(mtu: usize, buf: usize) -> Pair {
            let pool = Pool::default();
            let mut da = dev(mtu, &pool);
            let mut db = dev(mtu, &pool);
            let now = Instant::from_micros(1000);
            let mut ia = Interface::new(Config::new(HardwareAddress::Ip), &mut da, now);
            ia.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 1), 24)).unwrap());
            let mut ib = Interface::new(Config::new(HardwareAddress::Ip), &mut db, now);
            ib.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24)).unwrap());
            let mut sa = SocketSet::new(vec![]);
            let mut sb = SocketSet::new(vec![]);
            let ca = sa.add(sock(buf));
            let mut s = sock(buf);
            s.listen(80).unwrap();
            let cb = sb.add(s);
            let cx = ia.context();
            sa.get_mut::<tcp::Socket>(ca)
                .connect(cx, (IpAddress::v4(10, 0, 0, 2), 80), 40000)
                .unwrap();
            let mut p = Pair {
                ia,
                ib,
                da,
                db,
                sa,
                sb,
                ca,
                cb,
                now: 1000,
            };
            while !p.sb.get::<tcp::Socket>(p.cb).may_send()
                || !p.sa.get::<tcp::Socket>(p.ca).may_send()
            {
                p.turn();
            }
            p
        }
        pub fn poll_a(&mut self) {
            let t = Instant::from_micros(self.now);
            self.ia.poll(t, &mut self.da, &mut self.sa);
            while let Some(x) = self.da.tx.pop_front() {
                self.db.rx.push_back(x);
            }
        }
        pub fn poll_b(&mut self) {
            let t = Instant::from_micros(self.now);
            self.ib.poll(t, &mut self.db, &mut self.sb);
            while let Some(x) = self.db.tx.pop_front() {
                self.da.rx.push_back(x);
            }
        }
        pub fn turn(&mut self) {
            self.now += 1;
            self.poll_a();
            self.poll_b();
            self.poll_a();
        }
    }

    pub fn bulk(total: usize, mtu: usize, buf: usize) -> f64 {
        let mut p = Pair::new(mtu, buf);
        // As for ours: copied in from the app's chunk, copied out into its buffer.
        let chunk = vec![0x5au8; 64 * 1024];
        let mut buf = vec![0u8; 64 * 1024];
        let (mut sent, mut got) = (0usize, 0usize);
        let start = cpu_time();
        while got < total {
            let s = p.sa.get_mut::<tcp::Socket>(p.ca);
            while sent < total && s.can_send() {
                match s.send_slice(&chunk[..(total - sent).min(chunk.len())]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) => panic!("{e}"),
                }
            }
            p.turn();
            let s = p.sb.get_mut::<tcp::Socket>(p.cb);
            while s.can_recv() {
                got += s.recv_slice(&mut buf).unwrap();
            }
        }
        total as f64 / (cpu_time() - start).as_secs_f64() / 1e6
    }

    pub fn pingpong(rounds: usize, mtu: usize, buf: usize) -> f64 {
        let mut p = Pair::new(mtu, buf);
        let start = cpu_time();
        let mut b1 = [0u8; 1];
        for _ in 0..rounds {
            p.sa.get_mut::<tcp::Socket>(p.ca).send_slice(b"p").unwrap();
            p.now += 1;
            p.poll_a();
            p.poll_b();
            assert_eq!(p.sb.get_mut::<tcp::Socket>(p.cb).recv_slice(&mut b1), Ok(1));
            p.sb.get_mut::<tcp::Socket>(p.cb).send_slice(b"q").unwrap();
            p.poll_b();
            p.poll_a();
            assert_eq!(p.sa.get_mut::<tcp::Socket>(p.ca).recv_slice(&mut b1), Ok(1));
        }
        rounds as f64 / (cpu_time() - start).as_secs_f64()
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mb = args.first().copied().unwrap_or(1000);
    let rounds = args.get(1).copied().unwrap_or(500_000);
    let mtu = args.get(2).copied().unwrap_or(1500);
    let total = mb * 1_000_000;
    if let Ok(only) = std::env::var("ONLY") {
        // For profiling one side: ONLY=ours-pp | ours-bulk | smol-pp | smol-bulk.
        let r = match only.as_str() {
            "ours-pp" => ours_pingpong(rounds, mtu),
            "ours-bulk" => ours_bulk(total, mtu),
            "smol-pp" => smol::pingpong(rounds, mtu, BUF),
            _ => smol::bulk(total, mtu, BUF),
        };
        println!("{only}: {r:.0}");
        return;
    }
    let ob = ours_bulk(total, mtu);
    let sb = smol::bulk(total, mtu, BUF);
    let op = ours_pingpong(rounds, mtu);
    let sp = smol::pingpong(rounds, mtu, BUF);
    println!(
        "bulk {mb} MB, MTU {mtu}: fastnet {ob:.0} MB/s, smoltcp {sb:.0} MB/s (per CPU second), ratio {:.2}",
        ob / sb
    );
    println!(
        "ping-pong {rounds} x 1 byte: fastnet {op:.0} rt/s, smoltcp {sp:.0} rt/s (per CPU second), ratio {:.2}",
        op / sp
    );
}
