//! Local delivery (loopback on): two sockets of one interface talk with nothing
//! reaching the device.

use super::*;
use crate::device::QueueDevice;
use crate::error::Error;
use crate::socket::Readiness;

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
const OWN: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);
const LO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OWN6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 9);

fn looping_iface() -> Interface {
    let mut c = InterfaceConfig::new(MAC, Ipv4Cidr::new(OWN, 24));
    c.addrs.push(Ipv4Cidr::new(LO, 8));
    // ::1 is the interface's like 127.0.0.1, as on Linux's lo.
    c.ipv6_addrs = vec![
        Ipv6Cidr::new(OWN6, 64),
        Ipv6Cidr::new(Ipv6Addr::LOCALHOST, 128),
    ];
    c.neighbor_mode = NeighborMode::External;
    c.loopback_mtu = Some(65535);
    Interface::new(c, TcpConfig::default())
}

/// Dispatches until nothing is due; the device must never see a frame.
fn settle(i: &mut Interface, dev: &mut QueueDevice, now: &mut Instant) {
    for _ in 0..64 {
        i.dispatch(*now, dev);
        assert!(dev.frames.is_empty(), "a local frame reached the device");
        match i.poll_at() {
            Some(t) if t.micros() <= now.micros() => {}
            _ => return,
        }
        *now = Instant::from_micros(now.micros() + 1);
    }
}

fn transfer(dst: impl Into<IpAddr>, listen_on: impl Into<IpAddr>) {
    let (dst, listen_on) = (dst.into(), listen_on.into());
    let mut i = looping_iface();
    let mut dev = QueueDevice::new(1500);
    let mut now = Instant::from_millis(1);
    let l = i.tcp.listen(SocketAddr::new(listen_on, 7000), 8).unwrap();
    let c = i.tcp_connect(None, SocketAddr::new(dst, 7000)).unwrap();
    settle(&mut i, &mut dev, &mut now);
    let a = i
        .tcp
        .accept(l)
        .expect("connection accepted within one settle");
    assert_eq!(i.tcp.peer_addr(a).unwrap(), i.tcp.local_addr(c).unwrap());
    // Linux picks the source from the route: 127.0.0.1 for all of 127/8.
    let src = match dst {
        IpAddr::V4(d) if d.is_loopback() => LO.into(),
        d => d,
    };
    assert_eq!(i.tcp.local_addr(c).unwrap().ip(), src);
    // 4 MB one way, 1 MB the other, byte-exact.
    let up: Vec<u8> = (0..4 << 20)
        .map(|k: u32| (k.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let down: Vec<u8> = (0..1 << 20).map(|k: u32| (k % 251) as u8).collect();
    let (mut sent_up, mut sent_down) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 100_000];
    let mut rounds = 0;
    while got_up.len() < up.len() || got_down.len() < down.len() {
        rounds += 1;
        assert!(rounds < 100_000, "transfer stalled");
        if sent_up < up.len() {
            sent_up += i
                .tcp
                .send(c, &up[sent_up..])
                .or_else(|e| match e {
                    Error::WouldBlock => Ok(0),
                    e => Err(e),
                })
                .unwrap();
        }
        if sent_down < down.len() {
            sent_down += i
                .tcp
                .send(a, &down[sent_down..])
                .or_else(|e| match e {
                    Error::WouldBlock => Ok(0),
                    e => Err(e),
                })
                .unwrap();
        }
        settle(&mut i, &mut dev, &mut now);
        while let Ok(n) = i.tcp.recv(a, &mut buf) {
            got_up.extend_from_slice(&buf[..n]);
        }
        while let Ok(n) = i.tcp.recv(c, &mut buf) {
            got_down.extend_from_slice(&buf[..n]);
        }
        now = Instant::from_micros(now.micros() + 200);
    }
    assert!(got_up == up && got_down == down);
    let s = i.stats();
    assert!(s.looped_frames > 100, "looped {}", s.looped_frames);
    assert_eq!(s.looped_frames, s.rx_frames);
    assert_eq!(s.dropped_total(), 0);
    assert_eq!(i.tcp.stats().retransmits, 0);
    // Segments are as large as the loopback MTU allows, not the device's 1500.
    assert!(s.looped_bytes / s.looped_frames > 3000, "{s}");
    i.tcp.close(c).unwrap();
    i.tcp.close(a).unwrap();
    settle(&mut i, &mut dev, &mut now);
    assert!(i.tcp.readiness(c).contains(Readiness::HANGUP) || i.tcp.state(c).is_err());
}

#[test]
fn tcp_to_127_0_0_1_through_a_wildcard_listener() {
    transfer(LO, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn tcp_to_ipv6_loopback_through_a_wildcard_listener() {
    transfer(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
}

#[test]
fn tcp_to_own_ipv6_address() {
    transfer(OWN6, OWN6);
}

#[test]
fn tcp_to_another_127_address_bound_listener() {
    transfer(Ipv4Addr::new(127, 3, 2, 1), Ipv4Addr::new(127, 3, 2, 1));
}

#[test]
fn tcp_to_the_interfaces_own_address_stays_local() {
    transfer(OWN, OWN);
}

#[test]
fn tcp_to_a_closed_local_port_is_refused() {
    let mut i = looping_iface();
    let mut dev = QueueDevice::new(1500);
    let mut now = Instant::from_millis(1);
    let c = i.tcp_connect(None, SocketAddrV4::new(LO, 7001)).unwrap();
    settle(&mut i, &mut dev, &mut now);
    assert_eq!(i.tcp.take_error(c).unwrap(), Some(Error::ConnectionRefused));
}

#[test]
fn udp_between_loopback_sockets_and_port_unreachable() {
    let mut i = looping_iface();
    let mut dev = QueueDevice::new(1500);
    let mut now = Instant::from_millis(1);
    let a = i.udp.open().unwrap();
    let b = i.udp.open().unwrap();
    i.udp
        .bind(a, SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 5000))
        .unwrap();
    i.udp
        .bind(b, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5001))
        .unwrap();
    let big = vec![7u8; 60_000];
    i.udp
        .send_to(
            b,
            &big,
            Some(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 5000).into()),
        )
        .unwrap();
    settle(&mut i, &mut dev, &mut now);
    let mut buf = vec![0u8; 65536];
    let r = i.udp.recv_from(a, &mut buf).unwrap();
    assert_eq!(r.len, big.len(), "one datagram, not fragmented");
    assert_eq!(&buf[..r.len], &big[..]);
    assert_eq!(r.from, SocketAddrV4::new(LO, 5001).into());
    // A connected socket sending to a port nobody has gets ECONNREFUSED, as on Linux.
    i.udp.connect(a, SocketAddrV4::new(LO, 5999)).unwrap();
    i.udp.send_to(a, b"x", None).unwrap();
    settle(&mut i, &mut dev, &mut now);
    assert_eq!(i.udp.take_error(a).unwrap(), Some(Error::ConnectionRefused));
    assert_eq!(i.stats().dropped(DropReason::UdpNoSocket), 1);
}

#[test]
fn without_loopback_own_address_goes_to_the_device() {
    let mut c = InterfaceConfig::new(MAC, Ipv4Cidr::new(OWN, 24));
    c.neighbor_mode = NeighborMode::External;
    let mut i = Interface::new(c, TcpConfig::default());
    i.set_neighbor(OWN, MAC);
    let mut dev = QueueDevice::new(1500);
    let _c = i.tcp_connect(None, SocketAddrV4::new(OWN, 7000)).unwrap();
    i.dispatch(Instant::from_millis(1), &mut dev);
    assert_eq!(dev.frames.len(), 1);
    assert_eq!(i.stats().looped_frames, 0);
}

/// Buffers far smaller than the loopback MSS (asyncio's sendfile tests set 1 KiB): the
/// receiver must ACK and open its window by half its buffer, not wait for a full
/// segment that can never fit (which left every segment to the 40 ms delayed ACK or
/// the persist timer).
#[test]
fn small_buffers_do_not_wait_for_timers() {
    let mut i = looping_iface();
    let mut dev = QueueDevice::new(1500);
    let mut now = Instant::from_millis(1);
    let l = i.tcp.listen(SocketAddrV4::new(LO, 7002), 8).unwrap();
    let c = i.tcp_connect(None, SocketAddrV4::new(LO, 7002)).unwrap();
    settle(&mut i, &mut dev, &mut now);
    let a = i.tcp.accept(l).unwrap();
    i.tcp.set_rcvbuf(a, 4608).unwrap();
    i.tcp.set_sndbuf(c, 4608).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|k| (k % 253) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    let start = now;
    let mut buf = [0u8; 4096];
    while got.len() < data.len() {
        assert!(
            now.micros() - start.micros() < 1_000_000,
            "1 MB took over a second of stack time: {} bytes",
            got.len()
        );
        if sent < data.len() {
            sent += i.tcp.send(c, &data[sent..]).unwrap_or(0);
        }
        settle(&mut i, &mut dev, &mut now);
        while let Ok(n) = i.tcp.recv(a, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        // A thread switch's worth of time per round, as the shim's app threads see.
        now = Instant::from_micros(now.micros() + 20);
    }
    assert!(got == data);
}

/// UDP between two sockets on ::1: delivered locally with the sender's address, none
/// to the device.
#[test]
fn udp_between_ipv6_loopback_sockets() {
    let mut i = looping_iface();
    let mut dev = QueueDevice::new(1500);
    let mut now = Instant::from_millis(1);
    let lo6 = |p| SocketAddr::new(Ipv6Addr::LOCALHOST.into(), p);
    let a = i.udp.open().unwrap();
    let b = i.udp.open().unwrap();
    i.udp.bind(b, lo6(6000)).unwrap();
    i.udp.connect(a, lo6(6000)).unwrap();
    let big = vec![0x5a; 9000];
    assert_eq!(i.udp.send_to(a, &big, None), Ok(9000));
    settle(&mut i, &mut dev, &mut now);
    let mut buf = vec![0u8; 10_000];
    let r = i.udp.recv_from(b, &mut buf).unwrap();
    assert!(r.len == 9000 && buf[..9000] == big[..]);
    assert_eq!(r.from, lo6(i.udp.local_addr(a).unwrap().unwrap().port()));
    assert_eq!(
        i.stats().ipv6_fragments_sent,
        0,
        "one looped frame, no fragments"
    );
}
