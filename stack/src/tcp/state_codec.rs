//! A byte encoding of [`ConnectionState`], for moving a connection to another process.
//!
//! Little-endian fixed-width fields in declaration order, optional values behind a
//! presence byte, queues behind a u32 length. The first bytes are a magic and a
//! version: a reader of another version refuses the state instead of misreading it.
//! Decoding checks every length and every enum value; it never panics on any input.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::cc::CongestionAlgorithm;
use super::conn::State;
use super::export::ConnectionState;
use super::{Keepalive, SocketOptions};
use crate::error::{Error, Result};
use crate::time::Duration;

const MAGIC: u32 = 0x6663_7374; // "fcst"
/// 2: addresses carry their family (IPv6).
const VERSION: u16 = 2;
/// Upper bound on either queue: far above any buffer the stack sizes (a bad length
/// must not make the reader allocate gigabytes).
const MAX_QUEUE: usize = 256 << 20;

impl ConnectionState {
    /// The state as bytes (see the module comment for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(
            192 + self.send_queue.len() + self.recv_queue.len(),
        ));
        w.u32(MAGIC);
        w.u16(VERSION);
        w.u8(self.state.index() as u8);
        w.addr(self.local);
        w.addr(self.remote);
        for v in [
            self.iss,
            self.irs,
            self.snd_una,
            self.snd_nxt,
            self.snd_max,
            self.snd_wnd,
            self.snd_wl1,
            self.snd_wl2,
            self.max_snd_wnd,
            self.rcv_nxt,
            self.rcv_adv,
        ] {
            w.u32(v);
        }
        w.opt(self.snd_wscale, |w, v| w.u8(v));
        w.opt(self.rcv_wscale, |w, v| w.u8(v));
        w.u16(self.peer_mss);
        w.u16(self.our_mss);
        w.opt(self.timestamps, |w, (val, recent)| {
            w.u32(val);
            w.u32(recent);
        });
        w.bool(self.sack);
        w.bytes(&self.send_queue);
        w.bytes(&self.recv_queue);
        w.bool(self.fin_queued);
        w.bool(self.read_shut);
        for v in [self.srtt_us, self.rttvar_us, self.rto_us] {
            w.u64(v);
        }
        w.u32(self.backoff);
        w.u32(self.cwnd);
        w.u32(self.ssthresh);
        w.u8(match self.congestion {
            CongestionAlgorithm::Cubic => 0,
            CongestionAlgorithm::NewReno => 1,
        });
        w.options(&self.options);
        w.opt(self.rto_in, |w, d| w.u64(d.0));
        w.opt(self.close_in, |w, d| w.u64(d.0));
        w.0
    }

    /// Reads what [`ConnectionState::encode`] wrote. `InvalidInput` for anything else:
    /// a short or long buffer, another version, an unknown enum value.
    pub fn decode(bytes: &[u8]) -> Result<ConnectionState> {
        let mut r = Reader(bytes);
        if r.u32()? != MAGIC || r.u16()? != VERSION {
            return Err(Error::InvalidInput);
        }
        let state = *State::ALL
            .get(r.u8()? as usize)
            .ok_or(Error::InvalidInput)?;
        let local = r.addr()?;
        let remote = r.addr()?;
        let mut seq = [0u32; 11];
        for v in &mut seq {
            *v = r.u32()?;
        }
        let [iss, irs, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2, max_snd_wnd, rcv_nxt, rcv_adv] =
            seq;
        let snd_wscale = r.opt(|r| r.u8())?;
        let rcv_wscale = r.opt(|r| r.u8())?;
        let peer_mss = r.u16()?;
        let our_mss = r.u16()?;
        let timestamps = r.opt(|r| Ok((r.u32()?, r.u32()?)))?;
        let sack = r.bool()?;
        let send_queue = r.bytes()?;
        let recv_queue = r.bytes()?;
        let fin_queued = r.bool()?;
        let read_shut = r.bool()?;
        let srtt_us = r.u64()?;
        let rttvar_us = r.u64()?;
        let rto_us = r.u64()?;
        let backoff = r.u32()?;
        let cwnd = r.u32()?;
        let ssthresh = r.u32()?;
        let congestion = match r.u8()? {
            0 => CongestionAlgorithm::Cubic,
            1 => CongestionAlgorithm::NewReno,
            _ => return Err(Error::InvalidInput),
        };
        let options = r.options()?;
        let rto_in = r.opt(|r| Ok(Duration(r.u64()?)))?;
        let close_in = r.opt(|r| Ok(Duration(r.u64()?)))?;
        if !r.0.is_empty() {
            return Err(Error::InvalidInput);
        }
        Ok(ConnectionState {
            state,
            local,
            remote,
            iss,
            irs,
            snd_una,
            snd_nxt,
            snd_max,
            snd_wnd,
            snd_wl1,
            snd_wl2,
            max_snd_wnd,
            rcv_nxt,
            rcv_adv,
            snd_wscale,
            rcv_wscale,
            peer_mss,
            our_mss,
            timestamps,
            sack,
            send_queue,
            recv_queue,
            fin_queued,
            read_shut,
            srtt_us,
            rttvar_us,
            rto_us,
            backoff,
            cwnd,
            ssthresh,
            congestion,
            options,
            rto_in,
            close_in,
        })
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// The family (4 or 6), the address's octets, the port.
    fn addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.u16(a.port());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Writer, T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            f(self, v);
        }
    }
    fn options(&mut self, o: &SocketOptions) {
        self.u64(o.rcvbuf as u64);
        self.u64(o.sndbuf as u64);
        self.bool(o.nodelay);
        self.opt(o.keepalive, |w, k| {
            w.u64(k.idle.0);
            w.u64(k.interval.0);
            w.u32(k.count);
        });
        for d in [o.linger, o.user_timeout, o.defer_accept] {
            self.opt(d, |w, d| w.u64(d.0));
        }
        self.bool(o.quickack);
        self.u8(o.tos);
    }
}

/// Checked reads from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Error::InvalidInput)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::InvalidInput),
        }
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn addr(&mut self) -> Result<SocketAddr> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.take::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.take::<16>()?)),
            _ => return Err(Error::InvalidInput),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > MAX_QUEUE || n > self.0.len() {
            return Err(Error::InvalidInput);
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b.to_vec())
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.bool()? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }
    fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| Error::InvalidInput)
    }
    fn options(&mut self) -> Result<SocketOptions> {
        let rcvbuf = self.usize()?;
        let sndbuf = self.usize()?;
        let nodelay = self.bool()?;
        let keepalive = self.opt(|r| {
            Ok(Keepalive {
                idle: Duration(r.u64()?),
                interval: Duration(r.u64()?),
                count: r.u32()?,
            })
        })?;
        let linger = self.opt(|r| Ok(Duration(r.u64()?)))?;
        let user_timeout = self.opt(|r| Ok(Duration(r.u64()?)))?;
        let defer_accept = self.opt(|r| Ok(Duration(r.u64()?)))?;
        let quickack = self.bool()?;
        let tos = self.u8()?;
        Ok(SocketOptions {
            rcvbuf,
            sndbuf,
            nodelay,
            keepalive,
            linger,
            user_timeout,
            defer_accept,
            quickack,
            tos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An IPv6 address from the 16 bytes, or an IPv4 one from the first 4.
    fn ip_of((v6, b): (bool, [u8; 16])) -> IpAddr {
        if v6 {
            IpAddr::V6(b.into())
        } else {
            IpAddr::V4([b[0], b[1], b[2], b[3]].into())
        }
    }

    fn state() -> impl Strategy<Value = ConnectionState> {
        let seqs = proptest::array::uniform11(any::<u32>());
        let queues = (
            proptest::collection::vec(any::<u8>(), 0..3000),
            proptest::collection::vec(any::<u8>(), 0..3000),
        );
        let opts = (
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            proptest::option::of((any::<u64>(), any::<u64>(), any::<u32>())),
            proptest::array::uniform3(proptest::option::of(any::<u64>())),
            any::<bool>(),
        );
        let misc = (
            0..State::ALL.len(),
            any::<(bool, [u8; 16])>(),
            any::<u16>(),
            any::<(bool, [u8; 16])>(),
            any::<u16>(),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of((any::<u32>(), any::<u32>())),
            any::<[bool; 4]>(),
            any::<[u64; 3]>(),
            any::<[u32; 3]>(),
            proptest::array::uniform2(proptest::option::of(any::<u64>())),
        );
        (seqs, queues, opts, misc).prop_map(|(s, (sq, rq), o, m)| {
            let (st, la, lp, ra, rp, sws, rws, ts, flags, rtt, cc, timers) = m;
            ConnectionState {
                state: State::ALL[st],
                local: SocketAddr::new(ip_of(la), lp),
                remote: SocketAddr::new(ip_of(ra), rp),
                iss: s[0],
                irs: s[1],
                snd_una: s[2],
                snd_nxt: s[3],
                snd_max: s[4],
                snd_wnd: s[5],
                snd_wl1: s[6],
                snd_wl2: s[7],
                max_snd_wnd: s[8],
                rcv_nxt: s[9],
                rcv_adv: s[10],
                snd_wscale: sws,
                rcv_wscale: rws,
                peer_mss: lp ^ rp,
                our_mss: rp,
                timestamps: ts,
                sack: flags[0],
                send_queue: sq,
                recv_queue: rq,
                fin_queued: flags[1],
                read_shut: flags[2],
                srtt_us: rtt[0],
                rttvar_us: rtt[1],
                rto_us: rtt[2],
                backoff: cc[0],
                cwnd: cc[1],
                ssthresh: cc[2],
                congestion: if flags[3] {
                    CongestionAlgorithm::Cubic
                } else {
                    CongestionAlgorithm::NewReno
                },
                options: SocketOptions {
                    rcvbuf: o.0 as usize,
                    sndbuf: o.1 as usize,
                    nodelay: o.2,
                    keepalive: o.3.map(|(i, v, c)| Keepalive {
                        idle: Duration(i),
                        interval: Duration(v),
                        count: c,
                    }),
                    linger: o.4[0].map(Duration),
                    user_timeout: o.4[1].map(Duration),
                    defer_accept: o.4[2].map(Duration),
                    quickack: o.5,
                    tos: 0,
                },
                rto_in: timers[0].map(Duration),
                close_in: timers[1].map(Duration),
            }
        })
    }

    proptest! {
        #[test]
        fn every_state_survives_the_round_trip(st in state()) {
            let bytes = st.encode();
            prop_assert_eq!(ConnectionState::decode(&bytes), Ok(st));
        }

        #[test]
        fn every_truncation_or_extension_is_refused(st in state(), cut in any::<prop::sample::Index>()) {
            let bytes = st.encode();
            let n = cut.index(bytes.len());
            prop_assert_eq!(ConnectionState::decode(&bytes[..n]), Err(Error::InvalidInput));
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(ConnectionState::decode(&longer), Err(Error::InvalidInput));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ConnectionState::decode(&b);
        }
    }

    #[test]
    fn another_version_is_refused() {
        let st = ConnectionState::decode(
            &ConnectionState {
                state: State::Established,
                local: SocketAddr::new(Ipv4Addr::new(10, 77, 0, 1).into(), 80),
                remote: SocketAddr::new(Ipv4Addr::new(10, 77, 0, 2).into(), 40000),
                iss: 1,
                irs: 2,
                snd_una: 3,
                snd_nxt: 3,
                snd_max: 3,
                snd_wnd: 65535,
                snd_wl1: 2,
                snd_wl2: 3,
                max_snd_wnd: 65535,
                rcv_nxt: 3,
                rcv_adv: 65538,
                snd_wscale: Some(7),
                rcv_wscale: Some(7),
                peer_mss: 1460,
                our_mss: 1460,
                timestamps: None,
                sack: true,
                send_queue: b"abc".to_vec(),
                recv_queue: vec![],
                fin_queued: false,
                read_shut: false,
                srtt_us: 100,
                rttvar_us: 50,
                rto_us: 200_000,
                backoff: 0,
                cwnd: 14600,
                ssthresh: u32::MAX,
                congestion: CongestionAlgorithm::Cubic,
                options: SocketOptions {
                    rcvbuf: 1 << 20,
                    sndbuf: 1 << 20,
                    nodelay: true,
                    keepalive: Some(Keepalive::default()),
                    linger: None,
                    user_timeout: None,
                    defer_accept: None,
                    quickack: false,
                    tos: 0x2e,
                },
                rto_in: None,
                close_in: None,
            }
            .encode(),
        )
        .unwrap();
        let mut bytes = st.encode();
        bytes[4] = 1; // version 1 (IPv4 addresses only)
        assert_eq!(ConnectionState::decode(&bytes), Err(Error::InvalidInput));
        bytes[4] = 3; // a later one
        assert_eq!(ConnectionState::decode(&bytes), Err(Error::InvalidInput));
        bytes[4] = VERSION as u8;
        bytes[6] = State::ALL.len() as u8; // no such state
        assert_eq!(ConnectionState::decode(&bytes), Err(Error::InvalidInput));
    }
}
