//! Loopback inside one process: two threads, one TCP connection over 127.0.0.1.
//! `loopback_bench pingpong SECS`: 1-byte round trips (p50/p99 µs, round trips/s);
//! `loopback_bench bulk SECS`: one direction, 64 KiB writes (MB/s).
//! Prints one line `key=value ...` including the process's CPU seconds, so the same
//! binary can run on kernel loopback and under `fastnet run --loopback process`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || l.accept().expect("accept").0);
    let c = TcpStream::connect(addr).expect("connect");
    let s = t.join().unwrap();
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    (c, s)
}

fn pingpong(secs: f64) {
    let (mut c, mut s) = pair();
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut b = [7u8; 1];
    // Warm up, then measure.
    for _ in 0..1000 {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    let mut rtts = Vec::with_capacity(1 << 20);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t = Instant::now();
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    drop(c);
    echo.join().unwrap();
    rtts.sort_unstable();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "mode=pingpong round_trips={} per_sec={:.0} p50_us={:.2} p99_us={:.2} cpu_us_per_rt={:.2}",
        rtts.len(),
        rtts.len() as f64 / wall,
        pct(0.5),
        pct(0.99),
        cpu * 1e6 / rtts.len() as f64
    );
}

fn bulk(secs: f64) {
    let (mut c, mut s) = pair();
    let sink = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let buf = vec![0x5au8; 64 * 1024];
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        c.write_all(&buf).unwrap();
        sent += buf.len() as u64;
    }
    drop(c);
    let got = sink.join().unwrap();
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(got, sent, "bytes lost");
    println!(
        "mode=bulk bytes={} mb_per_sec={:.1} cpu_s_per_gb={:.3}",
        sent,
        sent as f64 / wall / 1e6,
        cpu / (sent as f64 / 1e9)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    match args.get(1).map(String::as_str) {
        Some("pingpong") => pingpong(secs),
        Some("bulk") => bulk(secs),
        _ => {
            eprintln!("usage: loopback_bench pingpong|bulk [SECONDS]");
            std::process::exit(2);
        }
    }
}
