//! Socket options, names, fcntl/ioctl and fd duplication for fast-path sockets.
//!
//! An option either takes effect in the stack, or has the same effect on the shadow
//! (port reuse, v6-only), or is refused with ENOPROTOOPT (as Linux does for options it
//! does not know) and counted in `sockets.unsupported_options` and by name
//! (`setsockopt.SOL_TCP.TCP_...` in `fastnet stat`): never accepted and silently
//! ignored. TCP_INFO is the stack's own view of the connection, in Linux's layout.

use super::appmem;
use super::calls::{err, ours, release_to_kernel, stack_err};
use super::cmsg;
use super::engine::{Engine, FastSocket, Kind};
use super::handoff::AwayKind;
use super::kernel;
use super::process::{engine, is_internal};
use fastnet_stats::{Counter, OptionCall};
use rewriter::PASSTHROUGH;
use stack::tcp::{CongestionState, State, TcpInfo};
use stack::time::Duration;

fn read_int(val: i64, len: u32) -> Result<i32, i32> {
    if (len as usize) < 4 {
        return Err(libc::EINVAL);
    }
    // SAFETY: the app passed (val, len) to setsockopt(2).
    unsafe { appmem::read::<i32>(val) }
}

/// Writes an option value the way getsockopt(2) does (truncating to the app's length).
fn write_opt<T: Copy>(val: i64, lenp: i64, v: T) -> i64 {
    // SAFETY: the app passed (val, lenp) to getsockopt(2).
    let r = unsafe {
        appmem::read::<u32>(lenp).and_then(|cap| {
            let size = std::mem::size_of::<T>();
            let n = (cap as usize).min(size);
            let out = appmem::slice_mut(val, n)?;
            let bytes = std::slice::from_raw_parts(&v as *const T as *const u8, size);
            out.copy_from_slice(&bytes[..n]);
            appmem::write::<u32>(lenp, n as u32)
        })
    };
    match r {
        Ok(()) => 0,
        Err(x) => err(x),
    }
}

/// A socket timeout as Linux keeps it (in jiffies, rounded up: 1.25 s reads back as
/// 1.252 s with HZ=250), so getsockopt answers what it would on a kernel socket and
/// the value survives a move to one unchanged.
fn as_kernel_keeps_it(d: std::time::Duration) -> std::time::Duration {
    let Some(hz) = kernel::socket_timeout_hz() else {
        return d;
    };
    let (hz, tick_us) = (hz as u64, 1_000_000 / hz as u64);
    let jiffies = d.as_secs() * hz + (d.subsec_micros() as u64).div_ceil(tick_us);
    std::time::Duration::from_secs(jiffies / hz)
        + std::time::Duration::from_micros((jiffies % hz) * 1_000_000 / hz)
}

/// Pushes the socket's options into the stack socket, if it has one.
fn apply(e: &mut Engine, s: &FastSocket) -> i64 {
    let r = match s.kind {
        Kind::TcpStream(h) | Kind::TcpListener(h) => e.iface.tcp.set_options(h, s.opts),
        Kind::Udp(h) => e
            .iface
            .udp
            .set_recv_buffer_size(h, s.opts.rcvbuf)
            .and_then(|_| e.iface.udp.set_send_buffer_size(h, s.opts.sndbuf))
            .and_then(|_| e.iface.udp.set_tos(h, s.opts.tos)),
        _ => Ok(()),
    };
    match r {
        Ok(()) => 0,
        Err(x) => stack_err(x),
    }
}

/// An option the fast path does not implement: counted by name, logged at debug level.
fn count_unsupported(e: &Engine, call: OptionCall, level: i32, name: i32) {
    e.count_unsupported_option(call, level, name);
    super::log::debug(format_args!(
        "{} {}: not supported on a fast-path socket",
        call.name(),
        fastnet_stats::option_name(level, name)
    ));
}

fn unsupported(e: &Engine, level: i32, name: i32) -> i64 {
    count_unsupported(e, OptionCall::Set, level, name);
    err(libc::ENOPROTOOPT)
}

pub fn setsockopt(fd: i32, level: i32, name: i32, val: i64, len: u32) -> i64 {
    let mut e = engine();
    let Some(mut s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match (level, name) {
        // Same effect on the shadow: these decide what bind/listen in the kernel allow.
        (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT)
        | (libc::SOL_IP, libc::IP_FREEBIND | libc::IP_BIND_ADDRESS_NO_PORT) => PASSTHROUGH,
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if v != 0 && matches!(s.kind, Kind::TcpFresh | Kind::UdpFresh) && !e.has_ipv6() {
                // IPv6 only, and the stack has no IPv6 address: the kernel's.
                release_to_kernel(&mut e, fd, Counter::KernelRoute);
            }
            // The shadow keeps the flag; bind, listen and connect read it back there.
            PASSTHROUGH
        }
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            s.opts.keepalive = (v != 0).then_some(s.keepalive_params);
            store(&mut e, fd, s)
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT) => {
            let v = match read_int(val, len) {
                Ok(v) if v >= 1 => v,
                Ok(_) => return err(libc::EINVAL),
                Err(x) => return err(x),
            };
            let k = &mut s.keepalive_params;
            match name {
                libc::TCP_KEEPIDLE => k.idle = Duration::from_secs(v as u64),
                libc::TCP_KEEPINTVL => k.interval = Duration::from_secs(v as u64),
                _ => k.count = v as u32,
            }
            if s.opts.keepalive.is_some() {
                s.opts.keepalive = Some(s.keepalive_params);
            }
            store(&mut e, fd, s)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            s.opts.nodelay = v != 0;
            store(&mut e, fd, s)
        }
        // The shadow checks the value and keeps it for getsockopt; the stack marks the
        // socket's packets with it (one value for both families: the last set).
        (libc::SOL_IP, libc::IP_TOS) | (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if let Err(x) = kernel::setsockopt_int(fd, level, name, v) {
                return err(x);
            }
            // IPV6_TCLASS -1: the default (0). Linux leaves the ECN bits of a TCP
            // socket's TOS to TCP, which sends none here.
            let tos = v.max(0) as u8;
            let tcp = matches!(
                s.kind,
                Kind::TcpFresh | Kind::TcpListener(_) | Kind::TcpStream(_)
            );
            s.opts.tos = if tcp { tos & !3 } else { tos };
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            if (len as usize) < std::mem::size_of::<libc::linger>() {
                return err(libc::EINVAL);
            }
            // SAFETY: the app passed a struct linger of `len` bytes.
            let l: libc::linger = match unsafe { appmem::read(val) } {
                Ok(l) => l,
                Err(x) => return err(x),
            };
            s.opts.linger = (l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64));
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            // Linux doubles the value (bookkeeping overhead) and enforces a minimum.
            let bytes = (v.max(0) as usize * 2).clamp(4608, 64 << 20);
            if name == libc::SO_RCVBUF {
                s.opts.rcvbuf = bytes;
            } else {
                s.opts.sndbuf = bytes;
            }
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
            if (len as usize) < std::mem::size_of::<libc::timeval>() {
                return err(libc::EINVAL);
            }
            // SAFETY: the app passed a struct timeval of `len` bytes.
            let tv: libc::timeval = match unsafe { appmem::read(val) } {
                Ok(t) => t,
                Err(x) => return err(x),
            };
            if tv.tv_usec < 0 || tv.tv_usec >= 1_000_000 {
                return err(libc::EDOM);
            }
            let d = if tv.tv_sec < 0 {
                None
            } else {
                Some(std::time::Duration::new(
                    tv.tv_sec as u64,
                    tv.tv_usec as u32 * 1000,
                ))
                .filter(|d| !d.is_zero())
            };
            let d = d.map(as_kernel_keeps_it);
            if name == libc::SO_RCVTIMEO {
                s.rcvtimeo = d;
            } else {
                s.sndtimeo = d;
            }
            store(&mut e, fd, s)
        }
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if let Kind::Udp(h) = s.kind {
                if let Err(x) = e.iface.udp.set_broadcast(h, v != 0) {
                    return stack_err(x);
                }
            }
            // The shadow keeps it too: a fresh socket may still become the kernel's.
            PASSTHROUGH
        }
        _ if matches!(s.kind, Kind::Udp(_) | Kind::UdpFresh)
            && cmsg::is_recv_option(level, name, s.v6) =>
        {
            // The shadow keeps the option (getsockopt reads it there); recvmsg writes
            // the cmsgs it asks for.
            match cmsg::set_on_shadow(fd, level, name, val, len) {
                Ok(c) => {
                    s.recv_cmsgs = c;
                    if let Some(slot) = e.fds.get_mut(fd) {
                        *slot = s;
                    }
                    0
                }
                Err(x) => err(x),
            }
        }
        // No cmsgs on a TCP socket's recvmsg in Linux either: the shadow keeps them.
        (libc::SOL_IP, libc::IP_PKTINFO | libc::IP_RECVTOS | libc::IP_RECVTTL) => PASSTHROUGH,
        (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            s.opts.defer_accept = defer_accept_secs(v).map(|t| Duration::from_secs(t as u64));
            let r = store(&mut e, fd, s);
            if r < 0 {
                return r;
            }
            // The shadow's listener defers what the kernel path accepts, and answers
            // getsockopt with the same rounding.
            PASSTHROUGH
        }
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => {
            let v = match read_int(val, len) {
                Ok(v) if v >= 0 => v,
                Ok(_) => return err(libc::EINVAL),
                Err(x) => return err(x),
            };
            s.opts.user_timeout = (v > 0).then(|| Duration::from_millis(v as u64));
            store(&mut e, fd, s)
        }
        (libc::IPPROTO_TCP, libc::TCP_QUICKACK) => {
            let v = match read_int(val, len) {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            s.opts.quickack = v & 1 != 0;
            if let (true, Kind::TcpStream(h)) = (s.opts.quickack, s.kind) {
                if let Err(x) = e.iface.tcp.quick_ack(h) {
                    return stack_err(x);
                }
                e.drive();
            }
            store(&mut e, fd, s)
        }
        _ => unsupported(&e, level, name),
    }
}

fn store(e: &mut Engine, fd: i32, s: FastSocket) -> i64 {
    let r = apply(e, &s);
    if let Some(slot) = e.fds.get_mut(fd) {
        *slot = s;
    }
    r
}

pub fn getsockopt(fd: i32, level: i32, name: i32, val: i64, lenp: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => {
            let pending = match s.kind {
                Kind::TcpStream(h) => e.iface.tcp.take_error(h).ok().flatten(),
                Kind::Udp(h) => e.iface.udp.take_error(h).ok().flatten(),
                _ => return PASSTHROUGH,
            };
            write_opt::<i32>(val, lenp, pending.map_or(0, |x| x.errno()))
        }
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            write_opt::<i32>(val, lenp, s.opts.keepalive.is_some() as i32)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            write_opt::<i32>(val, lenp, s.opts.nodelay as i32)
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => write_opt::<i32>(
            val,
            lenp,
            s.keepalive_params.idle.micros() as i32 / 1_000_000,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => write_opt::<i32>(
            val,
            lenp,
            s.keepalive_params.interval.micros() as i32 / 1_000_000,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => {
            write_opt::<i32>(val, lenp, s.keepalive_params.count as i32)
        }
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => write_opt::<i32>(
            val,
            lenp,
            s.opts.user_timeout.map_or(0, |d| d.millis() as i32),
        ),
        (libc::IPPROTO_TCP, libc::TCP_QUICKACK) => {
            write_opt::<i32>(val, lenp, s.opts.quickack as i32)
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => write_opt::<i32>(val, lenp, s.opts.rcvbuf as i32),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => write_opt::<i32>(val, lenp, s.opts.sndbuf as i32),
        (libc::SOL_SOCKET, libc::SO_LINGER) => write_opt(
            val,
            lenp,
            libc::linger {
                l_onoff: s.opts.linger.is_some() as i32,
                l_linger: s.opts.linger.map_or(0, |d| (d.micros() / 1_000_000) as i32),
            },
        ),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => {
            write_opt(val, lenp, kernel::timeval_of(s.rcvtimeo))
        }
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => {
            write_opt(val, lenp, kernel::timeval_of(s.sndtimeo))
        }
        (libc::IPPROTO_TCP, libc::TCP_INFO) => match s.kind {
            // The shadow's TCP_INFO would describe an unconnected socket.
            Kind::TcpStream(h) => match e.iface.tcp.tcp_info(h) {
                Ok(i) => write_opt(val, lenp, linux_tcp_info(&i)),
                Err(x) => stack_err(x),
            },
            _ => PASSTHROUGH,
        },
        // Identity options (SO_TYPE, SO_DOMAIN, SO_ACCEPTCONN, ...) from the shadow.
        _ => PASSTHROUGH,
    }
}

/// The deferral Linux makes of a TCP_DEFER_ACCEPT of `secs` seconds: whole SYN-ACK
/// retransmission periods (1 s doubling, at most 120 s each) covering it, as
/// `secs_to_retrans` / `retrans_to_secs` in net/ipv4/tcp.c compute it. `None` is off.
fn defer_accept_secs(secs: i32) -> Option<u32> {
    if secs <= 0 {
        return None;
    }
    let (mut timeout, mut period, mut retrans) = (1u32, 1u32, 1u32);
    while secs as u32 > period && retrans < 255 {
        retrans += 1;
        timeout = (timeout * 2).min(120);
        period += timeout;
    }
    Some(period)
}

/// Linux's `tcp_states.h` numbering.
fn linux_tcp_state(s: State) -> u8 {
    match s {
        State::Established => 1,
        State::SynSent => 2,
        State::SynReceived => 3,
        State::FinWait1 => 4,
        State::FinWait2 => 5,
        State::TimeWait => 6,
        State::Closed => 7,
        State::CloseWait => 8,
        State::LastAck => 9,
        State::Listen => 10,
        State::Closing => 11,
    }
}

/// The stack's [`TcpInfo`] laid out as Linux's `struct tcp_info` (units as Linux's:
/// microseconds for rtt/rto, milliseconds for the `last_*` times, segments for windows).
fn linux_tcp_info(i: &TcpInfo) -> libc::tcp_info {
    let ms = |d: Duration| (d.micros() / 1000).min(u32::MAX as u64) as u32;
    let us = |d: Duration| d.micros().min(u32::MAX as u64) as u32;
    // SAFETY: tcp_info is plain integers; all-zero is a valid value (and what Linux
    // reports for what it does not know).
    let mut t: libc::tcp_info = unsafe { std::mem::zeroed() };
    t.tcpi_state = linux_tcp_state(i.state);
    t.tcpi_ca_state = match i.ca_state {
        CongestionState::Open => 0,
        CongestionState::Disorder => 1,
        CongestionState::Recovery => 3,
        CongestionState::Loss => 4,
    };
    t.tcpi_retransmits = i.retransmits.min(255) as u8;
    t.tcpi_probes = i.probes.min(255) as u8;
    t.tcpi_backoff = i.backoff.min(255) as u8;
    t.tcpi_options = (i.timestamps as u8 * TCPI_OPT_TIMESTAMPS)
        | (i.sack as u8 * TCPI_OPT_SACK)
        | (i.snd_wscale.is_some() as u8 * TCPI_OPT_WSCALE);
    // Two 4-bit fields: snd_wscale in the low bits (x86-64 bitfield order).
    t.tcpi_snd_rcv_wscale = (i.snd_wscale.unwrap_or(0) & 0xf) | (i.rcv_wscale.unwrap_or(0) << 4);
    t.tcpi_rto = us(i.rto);
    t.tcpi_ato = us(i.ato);
    t.tcpi_snd_mss = i.snd_mss;
    t.tcpi_rcv_mss = i.rcv_mss;
    t.tcpi_unacked = i.unacked;
    t.tcpi_sacked = i.sacked;
    t.tcpi_lost = i.lost;
    t.tcpi_retrans = i.retrans;
    t.tcpi_last_data_sent = ms(i.since_data_sent);
    t.tcpi_last_data_recv = ms(i.since_data_recv);
    t.tcpi_last_ack_recv = ms(i.since_ack_recv);
    t.tcpi_pmtu = i.pmtu;
    t.tcpi_rcv_ssthresh = i.rcv_ssthresh;
    t.tcpi_rtt = us(i.srtt);
    t.tcpi_rttvar = us(i.rttvar);
    // Linux's TCP_INFINITE_SSTHRESH.
    t.tcpi_snd_ssthresh = i.snd_ssthresh.unwrap_or(0x7fff_ffff);
    t.tcpi_snd_cwnd = i.snd_cwnd;
    t.tcpi_advmss = i.advmss;
    // Linux's default reordering degree (sysctl net.ipv4.tcp_reordering).
    t.tcpi_reordering = 3;
    t.tcpi_rcv_space = i.rcv_space;
    t.tcpi_total_retrans = i.total_retrans;
    t.tcpi_pacing_rate = i.pacing_rate;
    // No SO_MAX_PACING_RATE: unlimited, as Linux reports it.
    t.tcpi_max_pacing_rate = u64::MAX;
    t.tcpi_bytes_acked = i.bytes_acked;
    t.tcpi_bytes_received = i.bytes_received;
    t.tcpi_segs_out = i.segs_out;
    t.tcpi_segs_in = i.segs_in;
    t.tcpi_notsent_bytes = i.notsent_bytes;
    t.tcpi_min_rtt = if i.min_rtt.micros() == 0 {
        u32::MAX // Linux's "no sample yet" (~0U)
    } else {
        us(i.min_rtt)
    };
    t.tcpi_data_segs_in = i.data_segs_in;
    t.tcpi_data_segs_out = i.data_segs_out;
    t.tcpi_delivery_rate = i.delivery_rate;
    t.tcpi_busy_time = i.busy_time.micros();
    t.tcpi_bytes_sent = i.bytes_sent;
    t.tcpi_bytes_retrans = i.bytes_retrans;
    t.tcpi_rcv_ooopack = i.rcv_ooopack;
    t.tcpi_snd_wnd = i.snd_wnd;
    t.tcpi_rcv_wnd = i.rcv_wnd;
    t.tcpi_total_rto = i.total_rto.min(u16::MAX as u32) as u16;
    t
}

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// getsockname / getpeername.
/// getsockname/getpeername of a connection that lives in another process of the
/// family (an away fd), or, in a forked child that has not joined, in its copy of the
/// parent's stack: answered here, without fetching the connection. ncat `--exec`'s
/// child asks both before it execs the command; fetching took the connection from the
/// process serving it, whose read failed. None: the usual path.
pub fn getname_in_place(fd: i32, addr: i64, lenp: i64, peer: bool) -> Option<i64> {
    let e = engine();
    let away = e
        .family
        .as_ref()
        .and_then(|m| m.away.get(&fd))
        .map(|a| (a.what, a.socket.v6));
    let (a, v6) = match away {
        Some((AwayKind::Conn { conn, .. }, v6)) => {
            (if peer { conn.remote } else { conn.local }, v6)
        }
        Some(_) => return None,
        None if !super::family::drives() && ours(&e, fd).is_some() => {
            drop(e);
            return Some(getname(fd, addr, lenp, peer));
        }
        None => return None,
    };
    drop(e);
    // SAFETY: the app passed (addr, lenp) to getsockname/getpeername(2).
    Some(match unsafe { appmem::write_sockaddr(addr, lenp, a, v6) } {
        Ok(()) => 0,
        Err(x) => err(x),
    })
}

pub fn getname(fd: i32, addr: i64, lenp: i64, peer: bool) -> i64 {
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    let a = match (s.kind, peer) {
        (Kind::TcpStream(h), false) => e.iface.tcp.local_addr(h),
        (Kind::TcpStream(h), true) => e.iface.tcp.peer_addr(h),
        (Kind::Udp(h), true) => e.iface.udp.peer_addr(h),
        _ => return PASSTHROUGH,
    };
    drop(e);
    match a {
        // SAFETY: the app passed (addr, lenp) to getsockname/getpeername(2).
        Ok(a) => match unsafe { appmem::write_sockaddr(addr, lenp, a, s.v6) } {
            Ok(()) => 0,
            Err(x) => err(x),
        },
        Err(x) => stack_err(x),
    }
}

pub fn fcntl(fd: i32, cmd: i32, arg: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match cmd {
        libc::F_GETFL => match kernel::fcntl(fd, cmd, 0) {
            Ok(fl) => {
                let nb = libc::O_NONBLOCK as i64;
                if s.nonblocking {
                    fl | nb
                } else {
                    fl & !nb
                }
            }
            Err(x) => err(x),
        },
        libc::F_SETFL => {
            // The shadow stays nonblocking; the app's mode is ours to honour.
            match kernel::fcntl(fd, cmd, arg | libc::O_NONBLOCK as i64) {
                Ok(_) => {
                    if let Some(m) = e.fds.get_mut(fd) {
                        m.nonblocking = arg & libc::O_NONBLOCK as i64 != 0;
                    }
                    0
                }
                Err(x) => err(x),
            }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => match kernel::fcntl(fd, cmd, arg) {
            Ok(nfd) => {
                let nfd = nfd as i32;
                if e.fds.dup(fd, nfd).is_ok() {
                    rewriter::filter::mark_fd(nfd, true);
                }
                nfd as i64
            }
            Err(x) => err(x),
        },
        _ => PASSTHROUGH,
    }
}

pub fn ioctl(fd: i32, req: u64, arg: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match req {
        libc::FIONBIO => {
            // SAFETY: FIONBIO takes a pointer to an int.
            let v = match unsafe { appmem::read::<i32>(arg) } {
                Ok(v) => v,
                Err(x) => return err(x),
            };
            if let Some(m) = e.fds.get_mut(fd) {
                m.nonblocking = v != 0;
            }
            0
        }
        libc::FIONREAD => {
            let n = match s.kind {
                Kind::TcpStream(h) => e.iface.tcp.recv_queued(h),
                Kind::Udp(h) => match e.iface.udp.next_datagram_len(h) {
                    Ok(n) => Ok(n),
                    Err(_) => Ok(0),
                },
                _ => return PASSTHROUGH,
            };
            match n {
                // SAFETY: FIONREAD writes an int where the app points.
                Ok(n) => match unsafe { appmem::write::<i32>(arg, n as i32) } {
                    Ok(()) => 0,
                    Err(x) => err(x),
                },
                Err(x) => stack_err(x),
            }
        }
        libc::TIOCOUTQ => match s.kind {
            Kind::TcpStream(h) => match e.iface.tcp.send_queued(h) {
                // SAFETY: SIOCOUTQ writes an int where the app points.
                Ok(n) => match unsafe { appmem::write::<i32>(arg, n as i32) } {
                    Ok(()) => 0,
                    Err(x) => err(x),
                },
                Err(x) => stack_err(x),
            },
            _ => PASSTHROUGH,
        },
        _ => PASSTHROUGH,
    }
}

pub fn dup(fd: i32) -> i64 {
    let mut e = engine();
    if ours(&e, fd).is_none() {
        return PASSTHROUGH;
    }
    // SAFETY: dup(2) of the app's own fd.
    let r = unsafe { kernel::raw(libc::SYS_dup, [fd as i64, 0, 0, 0, 0, 0]) };
    if r >= 0 && e.fds.dup(fd, r as i32).is_ok() {
        rewriter::filter::mark_fd(r as i32, true);
    }
    r
}

/// dup2 / dup3: `new_fd` may have been one of ours (it is closed by the call).
pub fn dup3(old: i32, new: i32, flags: i32, is_dup2: bool) -> i64 {
    let mut e = engine();
    if is_internal(&e, new) {
        // The number is the shim's; the app may not take it over.
        return err(libc::EBUSY);
    }
    let old_ours = ours(&e, old).is_some();
    let new_ours = e.fds.contains(new);
    if !old_ours && !new_ours && !e.epolls.contains_key(&new) {
        return PASSTHROUGH;
    }
    let r = if is_dup2 {
        // SAFETY: the app's own dup2(2).
        unsafe { kernel::raw(libc::SYS_dup2, [old as i64, new as i64, 0, 0, 0, 0]) }
    } else {
        // SAFETY: the app's own dup3(2).
        unsafe {
            kernel::raw(
                libc::SYS_dup3,
                [old as i64, new as i64, flags as i64, 0, 0, 0],
            )
        }
    };
    if r < 0 || old == new {
        return r;
    }
    if let Some(set) = e.epolls.remove(&new) {
        let _ = kernel::close(set.waker);
    }
    if old_ours {
        if let Ok(Some(released)) = e.fds.dup(old, new) {
            e.close_socket(released);
        }
        rewriter::filter::mark_fd(new, true);
    } else if let Some(released) = e.fds.remove(new) {
        e.close_socket(released);
        rewriter::filter::mark_fd(new, false);
    }
    r
}

/// close_range: closes the app's fds in the range but never the shim's own.
pub fn close_range(first: u32, last: u32, flags: u32) -> i64 {
    if flags & libc::CLOSE_RANGE_CLOEXEC != 0 {
        // Marking close-on-exec is harmless to ours (they already are).
        return PASSTHROUGH;
    }
    let mut e = engine();
    let ours_in_range: Vec<i32> = e
        .fds
        .fds()
        .filter(|&fd| (fd as u32) >= first && (fd as u32) <= last)
        .collect();
    for fd in ours_in_range {
        if let Some(s) = e.fds.remove(fd) {
            e.close_socket(s);
        }
        rewriter::filter::mark_fd(fd, false);
    }
    let epfds: Vec<i32> = e
        .epolls
        .keys()
        .copied()
        .filter(|&fd| (fd as u32) >= first && (fd as u32) <= last)
        .collect();
    for fd in epfds {
        if let Some(set) = e.epolls.remove(&fd) {
            let _ = kernel::close(set.waker);
        }
        rewriter::filter::mark_fd(fd, false);
    }
    let internal = super::process::internal_fds_sorted(&e);
    drop(e);
    // Close the range piecewise around the shim's own fds.
    let mut lo = first as u64;
    let hi = last as u64;
    for fd in internal.into_iter().map(|f| f as u64) {
        if fd < lo || fd > hi {
            continue;
        }
        if fd > lo {
            // SAFETY: the app asked to close this range; ours are excluded.
            let r = unsafe {
                kernel::raw(
                    libc::SYS_close_range,
                    [lo as i64, fd as i64 - 1, flags as i64, 0, 0, 0],
                )
            };
            if r < 0 {
                return r;
            }
        }
        lo = fd + 1;
    }
    if lo <= hi {
        // SAFETY: as above.
        return unsafe {
            kernel::raw(
                libc::SYS_close_range,
                [lo as i64, hi as i64, flags as i64, 0, 0, 0],
            )
        };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defer_accept_rounds_as_the_kernel_does() {
        // SAFETY: a plain TCP socket of this test's own, closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        for secs in [-1, 0, 1, 2, 3, 4, 5, 7, 8, 30, 100, 300, 1000] {
            let mut got: i32 = -1;
            let mut len = 4u32;
            // SAFETY: int-sized option buffers on a socket we own.
            unsafe {
                let v = secs;
                assert_eq!(
                    libc::setsockopt(
                        fd,
                        libc::IPPROTO_TCP,
                        libc::TCP_DEFER_ACCEPT,
                        (&v as *const i32).cast(),
                        4
                    ),
                    0
                );
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    (&mut got as *mut i32).cast(),
                    &mut len,
                );
            }
            assert_eq!(
                defer_accept_secs(secs).unwrap_or(0) as i32,
                got,
                "TCP_DEFER_ACCEPT {secs}"
            );
        }
        // SAFETY: closing our own socket.
        unsafe { libc::close(fd) };
    }
}
