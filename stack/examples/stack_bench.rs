//! fastnet's stack beside smoltcp 0.14, the same work in the same run: two stacks
//! joined in memory by an Ethernet "link" (one thread drives both: figures are per core).
//!
//! - bulk: one TCP connection, A sends, B reads and discards: MB/s.
//! - ping-pong: 1-byte request, 1-byte reply, no Nagle: round trips/s.
//! - memory per idle established connection endpoint: heap bytes counted by a global
//!   allocator, after establishing N connections, divided by 2N (both ends counted,
//!   pools and buffers included), with the same socket buffer sizes for both stacks.
//!
//! Both stacks get the same link (frames in preallocated, recycled buffers), MTU 1500,
//! software checksums, and the real clock (read twice per round trip for either).
//! Each test runs in slices, the stacks taking turns, and reports medians: load on a
//! shared machine then weighs on both alike.
//!
//!   cargo run --release -p stack --example stack_bench -- [seconds-per-test] [mem-conns]
//!
//! Prints a table and `bench<TAB>name<TAB>value<TAB>unit<TAB>note` lines for
//! scripts/bench.sh.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- heap accounting

struct Counting;
static HEAP: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HEAP.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HEAP.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HEAP.fetch_add(new, Ordering::Relaxed);
        HEAP.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// CPU time this thread has used: rates are per CPU second, so other work on a shared
/// machine (which stretches wall time) does not skew the comparison.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// With STACK_BENCH_ONLY (profiling one part), says how much work was done, so
/// instruction counts (callgrind) can be divided per byte or per round trip.
fn work_done(n: u64, unit: &str) {
    if std::env::var_os("STACK_BENCH_ONLY").is_some() {
        eprintln!("work: {n} {unit}");
    }
}

/// Whether a timed loop runs another round: for `secs` of wall time, or for exactly
/// STACK_BENCH_ROUNDS rounds when set (repeatable instruction counts under callgrind).
fn keep_going(start: Instant, limit: Duration, rounds: &mut u64) -> bool {
    static FIXED: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let fixed = FIXED.get_or_init(|| {
        std::env::var("STACK_BENCH_ROUNDS")
            .ok()
            .map(|n| n.parse().expect("STACK_BENCH_ROUNDS: a number"))
    });
    *rounds += 1;
    match fixed {
        Some(n) => *rounds <= *n,
        None => start.elapsed() < limit,
    }
}

fn heap() -> usize {
    HEAP.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- the link

/// Frames in flight each way, in recycled buffers.
#[derive(Default)]
struct Link {
    to: [VecDeque<Vec<u8>>; 2],
    spare: Vec<Vec<u8>>,
}

impl Link {
    fn shared() -> Rc<RefCell<Link>> {
        Rc::new(RefCell::new(Link {
            spare: (0..512).map(|_| Vec::with_capacity(1536)).collect(),
            ..Link::default()
        }))
    }
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }
}

const MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const IP: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
const BUF: usize = 256 * 1024;
const MEM_BUF: usize = 16 * 1024;

// ---------------------------------------------------------------- fastnet

mod fast {
    use super::*;
    use stack::device::{Device, DeviceCaps};
    use stack::iface::{Interface, InterfaceConfig};
    use stack::socket::SocketHandle;
    use stack::tcp::{State, TcpConfig};
    use stack::time::Instant as SInstant;
    use stack::wire::{Ipv4Cidr, MacAddr};

    pub struct Port {
        link: Rc<RefCell<Link>>,
        side: usize,
    }

    impl Device for Port {
        fn caps(&self) -> DeviceCaps {
            DeviceCaps {
                mtu: 1500,
                checksum: Default::default(),
            }
        }
        fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
            let mut l = self.link.borrow_mut();
            let mut b = l.buffer(len);
            fill(&mut b);
            l.to[1 - self.side].push_back(b);
            true
        }
    }

    pub struct Pair {
        pub i: [Interface; 2],
        port: [Port; 2],
        link: Rc<RefCell<Link>>,
        t0: Instant,
    }

    impl Pair {
        pub fn new(max_sockets: usize, buf: usize) -> Pair {
            let link = Link::shared();
            let mk = |s: usize| {
                let mut cfg = InterfaceConfig::new(MacAddr(MAC[s]), Ipv4Cidr::new(IP[s], 24));
                cfg.seed = s as u64 + 1;
                // A TCP benchmark: no UDP socket pool (smoltcp preallocates none either).
                cfg.udp.max_sockets = 0;
                let tcp = TcpConfig {
                    max_sockets,
                    rcvbuf: buf,
                    sndbuf: buf,
                    ..TcpConfig::default()
                };
                let mut i = Interface::new(cfg, tcp);
                i.set_neighbor(IP[1 - s], MacAddr(MAC[1 - s]));
                i
            };
            Pair {
                i: [mk(0), mk(1)],
                port: [
                    Port {
                        link: link.clone(),
                        side: 0,
                    },
                    Port {
                        link: link.clone(),
                        side: 1,
                    },
                ],
                link,
                t0: Instant::now(),
            }
        }

        fn now(&self) -> SInstant {
            SInstant::from_micros(self.t0.elapsed().as_micros() as u64)
        }

        /// Side `s` sends what is due, then the other side takes it in.
        pub fn step(&mut self, s: usize) {
            let now = self.now();
            self.i[s].dispatch(now, &mut self.port[s]);
            loop {
                let f = self.link.borrow_mut().to[1 - s].pop_front();
                let Some(f) = f else { break };
                self.i[1 - s].receive(now, &f);
                self.link.borrow_mut().spare.push(f);
            }
            // Take the readiness changes, as a host (the shim's engine) does after
            // driving the stack: left alone, the queue would only grow.
            for i in &mut self.i {
                while i.pop_readiness_change().is_some() {}
            }
        }

        /// Connects A to a listener on B; returns (a, b) handles once established.
        pub fn connect(
            &mut self,
            listener: SocketHandle,
            port: u16,
        ) -> (SocketHandle, SocketHandle) {
            let a = self.i[0]
                .tcp
                .connect(SocketAddrV4::new(IP[0], 0), SocketAddrV4::new(IP[1], port))
                .unwrap();
            loop {
                self.step(0);
                self.step(1);
                if let Ok(b) = self.i[1].tcp.accept(listener) {
                    while self.i[0].tcp.state(a) != Ok(State::Established) {
                        self.step(1);
                        self.step(0);
                    }
                    return (a, b);
                }
            }
        }
    }

    pub fn bulk(secs: f64) -> f64 {
        let mut p = Pair::new(8, BUF);
        let l = p.i[1].tcp.listen(SocketAddrV4::new(IP[1], 80), 4).unwrap();
        let (a, b) = p.connect(l, 80);
        let data = vec![0x5au8; 64 * 1024];
        let mut sink = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let t = Instant::now();
        let cpu0 = cpu_time();
        let limit = Duration::from_secs_f64(secs);
        let mut rounds = 0;
        while keep_going(t, limit, &mut rounds) {
            for _ in 0..16 {
                while p.i[0].tcp.send(a, &data).is_ok_and(|n| n > 0) {}
                p.step(0);
                while let Ok(n) = p.i[1].tcp.recv(b, &mut sink) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                p.step(1);
            }
        }
        work_done(got as u64, "bytes");
        got as f64 / (cpu_time() - cpu0).as_secs_f64() / 1e6
    }

    pub fn ping_pong(secs: f64) -> f64 {
        let mut p = Pair::new(8, BUF);
        let l = p.i[1].tcp.listen(SocketAddrV4::new(IP[1], 80), 4).unwrap();
        let (a, b) = p.connect(l, 80);
        p.i[0].tcp.set_nodelay(a, true).unwrap();
        p.i[1].tcp.set_nodelay(b, true).unwrap();
        let mut one = [0u8; 1];
        let mut trips = 0u64;
        let t = Instant::now();
        let cpu0 = cpu_time();
        let limit = Duration::from_secs_f64(secs);
        let mut rounds = 0;
        while keep_going(t, limit, &mut rounds) {
            for _ in 0..1000 {
                assert_eq!(p.i[0].tcp.send(a, b"?"), Ok(1));
                p.step(0);
                assert_eq!(p.i[1].tcp.recv(b, &mut one), Ok(1));
                assert_eq!(p.i[1].tcp.send(b, b"!"), Ok(1));
                p.step(1);
                assert_eq!(p.i[0].tcp.recv(a, &mut one), Ok(1));
                trips += 1;
            }
        }
        work_done(trips, "round trips");
        trips as f64 / (cpu_time() - cpu0).as_secs_f64()
    }

    /// Heap bytes per established connection endpoint.
    pub fn memory(n: usize) -> f64 {
        let before = heap();
        let mut p = Pair::new(n + 8, MEM_BUF);
        let l = p.i[1].tcp.listen(SocketAddrV4::new(IP[1], 80), n).unwrap();
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(p.connect(l, 80));
        }
        let after = heap();
        let per = (after - before) as f64 / (2 * n) as f64;
        drop(conns);
        drop(p);
        per
    }
}

// ---------------------------------------------------------------- smoltcp

mod smol {
    use super::*;
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant as SInstant;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

    pub struct Port {
        link: Rc<RefCell<Link>>,
        side: usize,
    }
    pub struct Rx {
        link: Rc<RefCell<Link>>,
        frame: Vec<u8>,
    }
    pub struct Tx {
        link: Rc<RefCell<Link>>,
        side: usize,
    }

    impl RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            let r = f(&self.frame);
            self.link.borrow_mut().spare.push(self.frame);
            r
        }
    }
    impl TxToken for Tx {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut b = self.link.borrow_mut().buffer(len);
            let r = f(&mut b);
            self.link.borrow_mut().to[1 - self.side].push_back(b);
            r
        }
    }
    impl Device for Port {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx;
        fn receive(&mut self, _t: SInstant) -> Option<(Rx, Tx)> {
            let frame = self.link.borrow_mut().to[self.side].pop_front()?;
            Some((
                Rx {
                    link: self.link.clone(),
                    frame,
                },
                Tx {
                    link: self.link.clone(),
                    side: self.side,
                },
            ))
        }
        fn transmit(&mut self, _t: SInstant) -> Option<Tx> {
            Some(Tx {
                link: self.link.clone(),
                side: self.side,
            })
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut c = DeviceCapabilities::default();
            c.medium = Medium::Ethernet;
            c.max_transmission_unit = 1514;
            c
        }
    }

    pub struct Pair {
        pub i: [Interface; 2],
        pub s: [SocketSet<'static>; 2],
        port: [Port; 2],
        t0: Instant,
    }

    fn ip(s: usize) -> IpAddress {
        let o = IP[s].octets();
        IpAddress::v4(o[0], o[1], o[2], o[3])
    }

    impl Pair {
        pub fn new() -> Pair {
            let link = Link::shared();
            let mut port = [
                Port {
                    link: link.clone(),
                    side: 0,
                },
                Port { link, side: 1 },
            ];
            let t0 = Instant::now();
            let mk = |s: usize, port: &mut Port| {
                let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(MAC[s])));
                cfg.random_seed = s as u64 + 1;
                let mut i = Interface::new(cfg, port, SInstant::from_micros(0));
                i.update_ip_addrs(|a| {
                    a.push(IpCidr::new(ip(s), 24)).unwrap();
                });
                i
            };
            let a = mk(0, &mut port[0]);
            let b = mk(1, &mut port[1]);
            Pair {
                i: [a, b],
                s: [SocketSet::new(vec![]), SocketSet::new(vec![])],
                port,
                t0,
            }
        }

        fn now(&self) -> SInstant {
            SInstant::from_micros(self.t0.elapsed().as_micros() as i64)
        }

        /// Side `s` polls (takes in what arrived, sends what is due).
        pub fn step(&mut self, s: usize) {
            let now = self.now();
            self.step_at(s, now);
        }

        /// `step` at a time already read: smoltcp polls once to take a segment in and
        /// again to send the app's answer, which a host does in one pass of its event
        /// loop, under one reading of the clock.
        pub fn step_at(&mut self, s: usize, now: SInstant) {
            let [ref mut ia, ref mut ib] = self.i;
            let [ref mut sa, ref mut sb] = self.s;
            let [ref mut pa, ref mut pb] = self.port;
            if s == 0 {
                ia.poll(now, pa, sa);
            } else {
                ib.poll(now, pb, sb);
            }
        }

        pub fn socket(buf: usize) -> tcp::Socket<'static> {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; buf]),
                tcp::SocketBuffer::new(vec![0u8; buf]),
            )
        }

        /// A connection from A (local port `lport`) to a fresh listener on B port 80.
        pub fn connect(&mut self, buf: usize, lport: u16) -> (SocketHandle, SocketHandle) {
            let mut l = Self::socket(buf);
            l.listen(80).unwrap();
            let b = self.s[1].add(l);
            let mut c = Self::socket(buf);
            c.connect(self.i[0].context(), (ip(1), 80), lport).unwrap();
            let a = self.s[0].add(c);
            while self.s[0].get::<tcp::Socket>(a).state() != tcp::State::Established
                || self.s[1].get::<tcp::Socket>(b).state() != tcp::State::Established
            {
                self.step(0);
                self.step(1);
            }
            (a, b)
        }
    }

    pub fn bulk(secs: f64) -> f64 {
        let mut p = Pair::new();
        let (a, b) = p.connect(BUF, 40000);
        let data = vec![0x5au8; 64 * 1024];
        let mut sink = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let t = Instant::now();
        let cpu0 = cpu_time();
        let limit = Duration::from_secs_f64(secs);
        let mut rounds = 0;
        while keep_going(t, limit, &mut rounds) {
            for _ in 0..16 {
                {
                    let s = p.s[0].get_mut::<tcp::Socket>(a);
                    while s.can_send() && s.send_slice(&data).is_ok_and(|n| n > 0) {}
                }
                p.step(0);
                p.step(1);
                {
                    let s = p.s[1].get_mut::<tcp::Socket>(b);
                    while let Ok(n) = s.recv_slice(&mut sink) {
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                }
            }
        }
        work_done(got as u64, "bytes");
        got as f64 / (cpu_time() - cpu0).as_secs_f64() / 1e6
    }

    pub fn ping_pong(secs: f64) -> f64 {
        let mut p = Pair::new();
        let (a, b) = p.connect(BUF, 40000);
        p.s[0].get_mut::<tcp::Socket>(a).set_nagle_enabled(false);
        p.s[1].get_mut::<tcp::Socket>(b).set_nagle_enabled(false);
        let mut one = [0u8; 1];
        let mut trips = 0u64;
        let t = Instant::now();
        let cpu0 = cpu_time();
        let limit = Duration::from_secs_f64(secs);
        let mut rounds = 0;
        while keep_going(t, limit, &mut rounds) {
            // Two clock readings per round trip, as for fastnet: one per pass of each
            // side's event loop (take the segment in, let the app answer, send).
            let mut a_now = p.now();
            for _ in 0..1000 {
                assert_eq!(p.s[0].get_mut::<tcp::Socket>(a).send_slice(b"?"), Ok(1));
                p.step_at(0, a_now);
                let b_now = p.now();
                p.step_at(1, b_now);
                assert_eq!(p.s[1].get_mut::<tcp::Socket>(b).recv_slice(&mut one), Ok(1));
                assert_eq!(p.s[1].get_mut::<tcp::Socket>(b).send_slice(b"!"), Ok(1));
                p.step_at(1, b_now);
                a_now = p.now();
                p.step_at(0, a_now);
                assert_eq!(p.s[0].get_mut::<tcp::Socket>(a).recv_slice(&mut one), Ok(1));
                trips += 1;
            }
        }
        work_done(trips, "round trips");
        trips as f64 / (cpu_time() - cpu0).as_secs_f64()
    }

    pub fn memory(n: usize) -> f64 {
        let before = heap();
        let mut p = Pair::new();
        let mut conns = Vec::with_capacity(n);
        for k in 0..n {
            conns.push(p.connect(MEM_BUF, 40000 + k as u16));
        }
        let after = heap();
        let per = (after - before) as f64 / (2 * n) as f64;
        drop(conns);
        drop(p);
        per
    }
}

/// Slices of a test, each stack's after the other's: load on the machine that comes
/// and goes (other processes' work evicts caches and takes cycles) then falls on both
/// stacks alike instead of on whichever ran during it.
const SLICES: usize = 5;

/// Runs `fast` and `smol` alternately, `SLICES` times each for `secs` in all per
/// stack. Returns the median rate of each and the median of the slices' ratios.
fn alternate(secs: f64, fast: fn(f64) -> f64, smol: fn(f64) -> f64) -> (f64, f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let slice = secs / SLICES as f64;
    let runs: Vec<(f64, f64)> = (0..SLICES).map(|_| (fast(slice), smol(slice))).collect();
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
        median(runs.iter().map(|r| r.0 / r.1).collect()),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let mem_conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500);

    // For profiling one part: STACK_BENCH_ONLY=fast-bulk|smol-bulk|fast-pp|smol-pp.
    if let Ok(only) = std::env::var("STACK_BENCH_ONLY") {
        let r = match only.as_str() {
            "fast-bulk" => fast::bulk(secs),
            "smol-bulk" => smol::bulk(secs),
            "fast-pp" => fast::ping_pong(secs),
            "smol-pp" => smol::ping_pong(secs),
            other => panic!("unknown STACK_BENCH_ONLY={other}"),
        };
        println!("{only}: {r:.1}");
        return;
    }
    let (f_bulk, s_bulk, bulk_ratio) = alternate(secs, fast::bulk, smol::bulk);
    let (f_pp, s_pp, pp_ratio) = alternate(secs, fast::ping_pong, smol::ping_pong);
    let f_mem = fast::memory(mem_conns);
    let s_mem = smol::memory(mem_conns);

    println!(
        "two stacks in memory, one thread; rates per CPU second, {secs} s per test in \
         {SLICES} slices alternating between the stacks (medians)"
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "", "fastnet", "smoltcp 0.14", "ratio"
    );
    println!(
        "{:<34} {:>14.1} {:>14.1} {:>7.2}x",
        "bulk TCP (MB/s)", f_bulk, s_bulk, bulk_ratio
    );
    println!(
        "{:<34} {:>14.0} {:>14.0} {:>7.2}x",
        "1-byte ping-pong (round trips/s)", f_pp, s_pp, pp_ratio
    );
    println!(
        "{:<34} {:>14.0} {:>14.0} {:>7.2}x",
        format!("heap per idle conn end (B, {}K bufs)", MEM_BUF / 1024),
        f_mem,
        s_mem,
        f_mem / s_mem
    );
    let note = "two stacks in memory, per CPU second, median of 5 alternating slices";
    println!("bench\tstack bulk fastnet\t{f_bulk:.1}\tMB/s\t{note}");
    println!("bench\tstack bulk smoltcp\t{s_bulk:.1}\tMB/s\t{note}");
    println!(
        "bench\tstack bulk ratio\t{bulk_ratio:.2}\tx\tfastnet / smoltcp, median of the slices' ratios (target >= 2.5)"
    );
    println!("bench\tstack ping-pong fastnet\t{f_pp:.0}\tround trips/s\t{note}, 1 byte");
    println!("bench\tstack ping-pong smoltcp\t{s_pp:.0}\tround trips/s\t{note}, 1 byte");
    println!(
        "bench\tstack ping-pong ratio\t{pp_ratio:.2}\tx\tfastnet / smoltcp, median of the slices' ratios (target >= 2.5)"
    );
    println!(
        "bench\tstack memory per idle conn fastnet\t{f_mem:.0}\tbytes\t{mem_conns} conns, {} KiB buffers, heap per endpoint",
        MEM_BUF / 1024
    );
    println!(
        "bench\tstack memory per idle conn smoltcp\t{s_mem:.0}\tbytes\t{mem_conns} conns, {} KiB buffers, heap per endpoint",
        MEM_BUF / 1024
    );
}
