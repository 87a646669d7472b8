//! Helpers shared by the TCP simulator tests.
#![allow(dead_code)]

use stack::error::Error;
use stack::sim::{LinkConfig, TcpPair};
use stack::socket::SocketHandle;
use stack::tcp::{State, TcpConfig, TcpLayer};
use stack::time::{Duration, Instant};

pub const SERVER_PORT: u16 = 8080;

pub fn cfg() -> TcpConfig {
    TcpConfig {
        max_sockets: 64,
        rcvbuf: 64 * 1024,
        sndbuf: 64 * 1024,
        ..TcpConfig::default()
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn later(p: &TcpPair, d: Duration) -> Instant {
    p.now + d
}

/// b listens, a connects; returns (listener on b, client on a, server conn on b).
pub fn establish(p: &mut TcpPair) -> (SocketHandle, SocketHandle, SocketHandle) {
    let l = p.b.listen(TcpPair::addr_b(SERVER_PORT), 16).unwrap();
    let c =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    let limit = later(p, secs(600));
    let mut server = None;
    assert!(
        p.run_until(limit, |p| {
            if server.is_none() {
                server = p.b.accept(l).ok();
            }
            server.is_some() && p.a.state(c).unwrap() == State::Established
        }),
        "handshake did not complete"
    );
    (l, c, server.unwrap())
}

/// a connects to b's listener `l` (from an ephemeral port); returns (client on a, the
/// connection b accepted) once b accepted it.
pub fn connect_accepted(p: &mut TcpPair, l: SocketHandle) -> (SocketHandle, SocketHandle) {
    let c =
        p.a.connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
    let limit = later(p, secs(1));
    let mut s = None;
    assert!(p.run_until(limit, |p| {
        s = s.or_else(|| p.b.accept(l).ok());
        s.is_some()
    }));
    (c, s.unwrap())
}

pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 251) as u8) ^ salt).collect()
}

/// Moves `a_data` from a's `ca` to b's `cb` and `b_data` the other way, then closes
/// both write sides; returns what each side read until EOF.
pub fn exchange(
    p: &mut TcpPair,
    ca: SocketHandle,
    cb: SocketHandle,
    a_data: &[u8],
    b_data: &[u8],
    limit: Duration,
) -> (Vec<u8>, Vec<u8>) {
    let (mut a_sent, mut b_sent) = (0, 0);
    let (mut a_got, mut b_got) = (Vec::new(), Vec::new());
    let (mut a_eof, mut b_eof) = (false, false);
    let (mut a_shut, mut b_shut) = (false, false);
    let mut buf = vec![0u8; 16 * 1024];
    let end = p.now + limit;
    let ok = p.run_until(end, |p| {
        pump(&mut p.a, ca, a_data, &mut a_sent, &mut a_shut);
        pump(&mut p.b, cb, b_data, &mut b_sent, &mut b_shut);
        drain(&mut p.a, ca, &mut buf, &mut a_got, &mut a_eof);
        drain(&mut p.b, cb, &mut buf, &mut b_got, &mut b_eof);
        a_eof && b_eof
    });
    assert!(
        ok,
        "exchange did not finish at {:?}: a sent {a_sent}/{} got {}/{}, b sent {b_sent}/{} got {}/{};\n a {}\n b {}\n a {:?}\n b {:?}\n links {:?} {:?} corrupt {:?}",
        p.now,
        a_data.len(),
        a_got.len(),
        b_data.len(),
        b_data.len(),
        b_got.len(),
        a_data.len(),
        p.a.debug_summary(ca),
        p.b.debug_summary(cb),
        p.a.stats(),
        p.b.stats(),
        p.a_to_b.stats,
        p.b_to_a.stats,
        p.corrupt,
    );
    (a_got, b_got)
}

pub fn pump(t: &mut TcpLayer, h: SocketHandle, data: &[u8], sent: &mut usize, shut: &mut bool) {
    while *sent < data.len() {
        match t.send(h, &data[*sent..]) {
            Ok(n) => *sent += n,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("send: {e}"),
        }
    }
    if *sent == data.len() && !*shut {
        t.shutdown(h, stack::tcp::Shutdown::Write).unwrap();
        *shut = true;
    }
}

pub fn drain(t: &mut TcpLayer, h: SocketHandle, buf: &mut [u8], got: &mut Vec<u8>, eof: &mut bool) {
    if *eof {
        return;
    }
    loop {
        match t.recv(h, buf) {
            Ok(0) => {
                *eof = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

pub fn lossless() -> LinkConfig {
    LinkConfig::default()
}

/// Builds a raw segment (for injecting into a layer with `receive`).
pub fn segment(repr: &stack::wire::tcp::TcpRepr, payload: &[u8]) -> Vec<u8> {
    let hl = repr.header_len();
    let mut v = vec![0u8; hl + payload.len()];
    repr.emit(&mut v);
    v[hl..].copy_from_slice(payload);
    v
}

/// Reads everything available now; true if EOF was seen.
pub fn read_all(t: &mut TcpLayer, h: SocketHandle, out: &mut Vec<u8>) -> Result<bool, Error> {
    let mut buf = [0u8; 4096];
    loop {
        match t.recv(h, &mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Drops everything on both links from now on (or stops dropping).
pub fn cut(p: &mut TcpPair, on: bool) {
    let loss = if on { 1.0 } else { 0.0 };
    p.a_to_b.cfg.loss = loss;
    p.b_to_a.cfg.loss = loss;
}
