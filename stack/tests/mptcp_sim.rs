//! MPTCP over one subflow in the simulator: two unmodified TCP layers, each with an
//! [`MptcpConn`] that adds its option to every segment the layer sends and checks the
//! options of every segment it receives (the harness does what the stack's IP layer
//! will do). Byte-exact transfers both ways under loss, reordering and duplication,
//! with and without DSS checksums, and fallback to TCP when the peer does not speak
//! MPTCP or a middlebox strips the options.

mod tcp_common;
use tcp_common::*;

use core::net::IpAddr;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use stack::ip_tx::{IpProtocol, IpTx};
use stack::mptcp::conn::{MptcpConn, State as MpState, Verdict, OPTION_SPACE};
use stack::mptcp::segment::with_option;
use stack::sim::{ipv4, LinkConfig, SimIpTx, TcpPair};
use stack::socket::SocketHandle;
use stack::time::Instant;
use stack::wire::checksum::transport_checksum;
use stack::wire::mptcp::{mptcp_options, OPTION_KIND};
use stack::wire::tcp::{TcpPacket, TcpRepr};

/// What the harness saw on the wire, per direction (0: a to b, 1: b to a).
#[derive(Debug, Default)]
struct Wire {
    /// TCP segments carrying at least one MPTCP option.
    with_option: [u64; 2],
    segments: [u64; 2],
    /// Segments an [`MptcpConn`] refused.
    refused: [u64; 2],
    /// SACK blocks left out to make room for the MPTCP option.
    sack_trimmed: u64,
}

/// A [`TcpPair`] whose sides may run MPTCP (`a` the client, `b` the server).
struct MptcpPair {
    p: TcpPair,
    mp: [Option<MptcpConn>; 2],
    /// A middlebox that removes MPTCP options from b's segments.
    strip_b_to_a: bool,
    wire: Wire,
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// Each side's connection, once established.
    handles: [Option<SocketHandle>; 2],
}

/// The sending side's IP layer: the segment TCP built, with the MPTCP option added.
struct MptcpTx<'a> {
    inner: SimIpTx<'a>,
    conn: Option<&'a mut MptcpConn>,
    scratch: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
    wire: &'a mut Wire,
}

impl IpTx for MptcpTx<'_> {
    fn max_segment(&self, dst: IpAddr) -> usize {
        // TCP sizes its segments to leave room for the largest option.
        let reserve = if self.conn.is_some() { OPTION_SPACE } else { 0 };
        self.inner.max_segment(dst) - reserve
    }

    fn send(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        fill(self.scratch);
        let seg = &self.scratch[..];
        let pkt = TcpPacket::new_checked(seg).expect("TCP built a segment");
        let repr = TcpRepr::parse(&pkt).expect("TCP built a parsable segment");
        let Some(option) = self
            .conn
            .as_mut()
            .and_then(|c| c.outgoing(&repr, pkt.payload()))
        else {
            return self
                .inner
                .send(src, dst, proto, len, &mut |b| b.copy_from_slice(seg));
        };
        let trimmed = with_option(seg, &option, self.out).expect("the option fits");
        self.wire.sack_trimmed += trimmed as u64;
        let out = &self.out[..];
        self.inner
            .send(src, dst, proto, out.len(), &mut |b| b.copy_from_slice(out))
    }
}

impl MptcpPair {
    fn new(link: LinkConfig, seed: u64, mp: [Option<MptcpConn>; 2]) -> MptcpPair {
        MptcpPair {
            p: TcpPair::new(cfg(), link, seed),
            mp,
            strip_b_to_a: false,
            wire: Wire::default(),
            scratch: Vec::new(),
            out: Vec::new(),
            handles: [None, None],
        }
    }

    fn dispatch(&mut self) {
        let now = self.p.now;
        let [ma, mb] = &mut self.mp;
        let mut tx = MptcpTx {
            inner: SimIpTx {
                link: &mut self.p.a_to_b,
                now,
                budget: None,
            },
            conn: ma.as_mut(),
            scratch: &mut self.scratch,
            out: &mut self.out,
            wire: &mut self.wire,
        };
        self.p.a.dispatch(now, &mut tx);
        let mut tx = MptcpTx {
            inner: SimIpTx {
                link: &mut self.p.b_to_a,
                now,
                budget: None,
            },
            conn: mb.as_mut(),
            scratch: &mut self.scratch,
            out: &mut self.out,
            wire: &mut self.wire,
        };
        self.p.b.dispatch(now, &mut tx);
    }

    /// Delivers what arrived by `now` to side `to`, through its MPTCP connection.
    fn deliver(&mut self, to: usize, now: Instant) {
        let dir = 1 - to;
        loop {
            let link = if to == 1 {
                &mut self.p.a_to_b
            } else {
                &mut self.p.b_to_a
            };
            let Some(mut packet) = link.deliver(now) else {
                break;
            };
            let Some((src, dst, 6, seg)) = ipv4::parse(&packet) else {
                panic!("the simulator corrupts nothing");
            };
            assert_eq!(transport_checksum(src, dst, 6, seg), 0);
            let mut seg = seg.to_vec();
            link.recycle(core::mem::take(&mut packet));
            let pkt = TcpPacket::new_checked(&seg[..]).unwrap();
            self.wire.segments[dir] += 1;
            if mptcp_options(pkt.options()).next().is_some() {
                self.wire.with_option[dir] += 1;
                if dir == 1 && self.strip_b_to_a {
                    strip_mptcp_options(&mut seg);
                }
            }
            let pkt = TcpPacket::new_checked(&seg[..]).unwrap();
            let repr = TcpRepr::parse(&pkt).unwrap();
            if let Some(conn) = self.mp[to].as_mut() {
                if conn.incoming(&repr, pkt.options(), pkt.payload()) == Verdict::Reset {
                    self.wire.refused[dir] += 1;
                    continue;
                }
            }
            let layer = if to == 1 {
                &mut self.p.b
            } else {
                &mut self.p.a
            };
            layer.receive(now, src, dst, &seg);
            // A DATA_FIN TCP does not acknowledge by itself.
            if let (Some(c), Some(h)) = (self.mp[to].as_ref(), self.handles[to]) {
                if c.wants_ack() {
                    layer.send_ack(h).unwrap();
                }
            }
        }
    }

    fn step(&mut self, limit: Instant) -> bool {
        let next = self.p.next_event();
        let Some(t) = next.filter(|&t| t <= limit) else {
            self.p.now = self.p.now.max(limit);
            return false;
        };
        self.p.now = t.max(self.p.now);
        let now = self.p.now;
        self.deliver(1, now);
        self.deliver(0, now);
        self.dispatch();
        true
    }

    fn run_until(&mut self, limit: Instant, mut cond: impl FnMut(&mut MptcpPair) -> bool) -> bool {
        self.dispatch();
        loop {
            if cond(self) {
                return true;
            }
            if !self.step(limit) {
                return cond(self);
            }
        }
    }

    /// b listens, a connects; returns (client on a, server connection on b).
    fn establish(&mut self) -> (SocketHandle, SocketHandle) {
        let l = self.p.b.listen(TcpPair::addr_b(SERVER_PORT), 16).unwrap();
        let c = self
            .p
            .a
            .connect(TcpPair::addr_a(0), TcpPair::addr_b(SERVER_PORT))
            .unwrap();
        let limit = self.p.now + secs(600);
        let mut server = None;
        assert!(
            self.run_until(limit, |m| {
                server = server.or_else(|| m.p.b.accept(l).ok());
                server.is_some() && m.p.a.state(c).unwrap() == stack::tcp::State::Established
            }),
            "handshake did not complete"
        );
        self.handles = [Some(c), server];
        (c, server.unwrap())
    }

    /// Sends `a_data` a to b and `b_data` b to a, closes both write sides, returns what
    /// each side read until EOF, then lets the last ACKs land.
    fn exchange(&mut self, a_data: &[u8], b_data: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (ca, cb) = self.establish();
        let (mut a_sent, mut b_sent) = (0, 0);
        let (mut a_got, mut b_got) = (Vec::new(), Vec::new());
        let (mut a_eof, mut b_eof) = (false, false);
        let (mut a_shut, mut b_shut) = (false, false);
        let mut buf = vec![0u8; 16 * 1024];
        let limit = self.p.now + secs(600);
        let done = self.run_until(limit, |m| {
            pump(&mut m.p.a, ca, a_data, &mut a_sent, &mut a_shut);
            pump(&mut m.p.b, cb, b_data, &mut b_sent, &mut b_shut);
            drain(&mut m.p.a, ca, &mut buf, &mut a_got, &mut a_eof);
            drain(&mut m.p.b, cb, &mut buf, &mut b_got, &mut b_eof);
            a_eof && b_eof
        });
        assert!(
            done,
            "exchange stuck: a got {} b got {}; {:?}",
            a_got.len(),
            b_got.len(),
            self.wire
        );
        let quiet = self.p.now + secs(30);
        self.run_until(quiet, |_| false);
        (a_got, b_got)
    }

    fn conn(&self, side: usize) -> &MptcpConn {
        self.mp[side].as_ref().unwrap()
    }
}

/// Overwrites every MPTCP option of a segment with NOPs, as a middlebox might.
fn strip_mptcp_options(seg: &mut [u8]) {
    let hl = TcpPacket::new_checked(&seg[..]).unwrap().header_len();
    let mut at = 20;
    while at < hl {
        match seg[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let n = seg[at + 1] as usize;
                if kind == OPTION_KIND {
                    seg[at..at + n].fill(1);
                }
                at += n;
            }
        }
    }
}

fn mptcp_both(checksums: bool, seed: u64) -> [Option<MptcpConn>; 2] {
    [
        Some(MptcpConn::client(0x1111_0000_0000_0000 ^ seed, checksums)),
        Some(MptcpConn::server(0x2222_0000_0000_0000 ^ seed, false)),
    ]
}

fn transfer_under_loss(seed: u64, checksums: bool) {
    let m = transfer(seed, checksums, 0.05, 300_000, 200_000);
    let links = (&m.p.a_to_b.stats, &m.p.b_to_a.stats);
    assert!(
        links.0.lost > 0 && links.0.reordered > 0 && links.1.lost > 0,
        "{links:?}"
    );
    assert!(m.p.a.stats().retransmits > 0);
    for side in 0..2 {
        assert!(m.conn(side).counters().mappings_ok > 100);
    }
}

/// A byte-exact exchange with MPTCP on both sides; checks what every such exchange must
/// show and returns the pair for more.
fn transfer(seed: u64, checksums: bool, loss: f64, a_len: usize, b_len: usize) -> MptcpPair {
    let mut m = MptcpPair::new(LinkConfig::lossy(loss), seed, mptcp_both(checksums, seed));
    let a_data = pattern(a_len, seed as u8);
    let b_data = pattern(b_len, !(seed as u8));
    let (a_got, b_got) = m.exchange(&a_data, &b_data);
    assert!(b_got == a_data, "a->b differs (seed {seed})");
    assert!(a_got == b_data, "b->a differs (seed {seed})");
    for side in 0..2 {
        let c = m.conn(side);
        let n = c.counters();
        assert_eq!(c.state(), MpState::Established, "side {side}: {c:?}");
        assert_eq!(c.checksums(), checksums);
        assert_eq!(n.refused, 0, "side {side}: {n:?}");
        if checksums {
            assert!(n.checksums_ok >= n.mappings_ok - n.checksums_unchecked);
            assert_eq!(n.checksums_unchecked, 0, "one segment, one mapping");
        } else {
            assert_eq!(n.checksums_ok, 0);
        }
        // Both DATA_FINs arrived at the right offset and were acknowledged.
        assert!(c.data_fin_acked(), "side {side}: {c:?}");
    }
    assert_eq!(m.conn(0).data_acked(), Some(a_data.len() as u64 + 1));
    assert_eq!(m.conn(1).data_acked(), Some(b_data.len() as u64 + 1));
    assert_eq!(m.conn(1).peer_data_fin(), Some(a_data.len() as u64));
    assert_eq!(m.conn(0).peer_data_fin(), Some(b_data.len() as u64));
    // Every segment carried an option, retransmissions included.
    assert_eq!(m.wire.with_option, m.wire.segments, "{:?}", m.wire);
    assert_eq!(m.wire.refused, [0, 0]);
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, rng_seed: RngSeed::Fixed(2020), failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn mptcp_byte_exact_over_many_seeds(seed in any::<u64>(), checksums in any::<bool>(),
                                        loss in 0.0f64..0.1, a_len in 0usize..120_000,
                                        b_len in 0usize..120_000) {
        transfer(seed, checksums, loss, a_len, b_len);
    }
}

#[test]
fn mptcp_transfer_both_ways_under_loss_and_reordering() {
    for seed in [1, 2, 3] {
        transfer_under_loss(seed, false);
    }
}

#[test]
fn mptcp_transfer_with_dss_checksums_under_loss_and_reordering() {
    for seed in [4, 5] {
        transfer_under_loss(seed, true);
    }
}

#[test]
fn a_client_falls_back_to_tcp_when_the_server_does_not_speak_mptcp() {
    let mut m = MptcpPair::new(
        LinkConfig::lossy(0.05),
        6,
        [Some(MptcpConn::client(1, false)), None],
    );
    let a_data = pattern(100_000, 1);
    let b_data = pattern(100_000, 2);
    let (a_got, b_got) = m.exchange(&a_data, &b_data);
    assert!(b_got == a_data && a_got == b_data);
    assert_eq!(m.conn(0).state(), MpState::Fallback);
    // Only SYNs (first and retransmitted) carried MP_CAPABLE.
    let syns = m.conn(0).counters().options_sent;
    assert!(syns >= 1);
    assert_eq!(m.wire.with_option, [syns, 0]);
}

#[test]
fn a_server_gives_plain_tcp_to_a_client_without_mptcp() {
    let mut m = MptcpPair::new(
        LinkConfig::lossy(0.05),
        7,
        [None, Some(MptcpConn::server(2, false))],
    );
    let a_data = pattern(100_000, 3);
    let b_data = pattern(100_000, 4);
    let (a_got, b_got) = m.exchange(&a_data, &b_data);
    assert!(b_got == a_data && a_got == b_data);
    assert_eq!(m.conn(1).state(), MpState::Fallback);
    assert_eq!(m.wire.with_option, [0, 0]);
}

#[test]
fn both_sides_fall_back_when_a_middlebox_strips_the_options() {
    // b's options never reach a: a sees a SYN-ACK without MP_CAPABLE and falls back;
    // b, which saw a's MP_CAPABLE, then gets data without a mapping and falls back too.
    let mut m = MptcpPair::new(LinkConfig::default(), 8, mptcp_both(false, 8));
    m.strip_b_to_a = true;
    let a_data = pattern(50_000, 5);
    let b_data = pattern(50_000, 6);
    let (a_got, b_got) = m.exchange(&a_data, &b_data);
    assert!(b_got == a_data && a_got == b_data);
    assert_eq!(m.conn(0).state(), MpState::Fallback);
    assert_eq!(m.conn(1).state(), MpState::Fallback);
    assert_eq!(m.wire.refused, [0, 0]);
    // a sent MP_CAPABLE only on its SYN; b only on its SYN-ACK.
    assert_eq!(m.wire.with_option, [1, 1]);
}

#[test]
fn send_ack_makes_an_idle_connection_send_one_pure_ack() {
    // The hook MPTCP needs for a DATA_FIN TCP does not see: an ACK with nothing new.
    let mut p = TcpPair::new(cfg(), LinkConfig::default(), 9);
    let (_l, c, _s) = establish(&mut p);
    p.run_for(secs(1));
    let before = p.a_to_b.stats.sent;
    p.run_for(secs(1));
    assert_eq!(p.a_to_b.stats.sent, before, "idle: nothing to send");
    p.a.send_ack(c).unwrap();
    p.run_for(secs(1));
    assert_eq!(p.a_to_b.stats.sent, before + 1);
    assert!(p.a.send_ack(SocketHandle::tcp(u32::MAX)).is_err());
}
