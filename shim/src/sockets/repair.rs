//! A fast-path connection becomes a kernel socket through Linux's TCP repair (issue
//! 18), and a kernel connection is read out of the kernel the same way
//! (`read_kernel_socket`) to continue in the stack: the kernel socket continues the connection where the stack left it, with the
//! same sequence numbers, queues, options, windows and timestamp clock, so the peer
//! sees nothing but the next segment.
//!
//! [`RepairPlan`] is the pure part: what the kernel must be told, from an exported
//! [`ConnectionState`]. [`RepairedSocket`] and [`finish_live`] carry it out, in the
//! order the kernel accepts (CRIU's order): repair on, both queue sequence numbers
//! (only while the socket is closed), the MSS, bind and connect (in repair mode connect
//! sends nothing and the socket is established at once), the options negotiated at the
//! handshake (only before any data is queued), the window clamp, the timestamp clock,
//! the queues (the receive queue, and the part of the send queue the peer has already
//! been sent); then the bytes received since the snapshot, the windows, repair off (the
//! kernel then sends a window probe: an ACK that tells the peer nothing new), then the
//! part of the send queue never sent, written as ordinary data, and our FIN if the app
//! had closed or shut down writing.
//!
//! A socket in repair mode is not deaf: Linux's receive path (`tcp_v4_rcv`,
//! `tcp_rcv_established`) never looks at `tp->repair`, so a segment that reaches it is
//! queued and acknowledged as on any socket, and a repair write to the receive queue
//! (`tcp_send_rcvq`) then lands at the new RCV.NXT, after it. The caller keeps the
//! connection's flow away from the socket until it is live.
//!
//! A FIN the peer sent is not something repair can tell the kernel: the kernel socket
//! starts one sequence number short of it (it has the peer's data, not its FIN). The
//! peer's FIN was already acknowledged, so the peer never sends it again, and the
//! kernel's ACKs, one short, are merely old ACKs to it. The kernel socket then
//! finishes our side (data, FIN) and ends in FIN-WAIT-2, which the kernel times out
//! (`tcp_fin_timeout`) once the app no longer holds it.

use super::kernel::{self, Errno};
use stack::tcp::{ConnectionState, State};

/// `TCP_REPAIR_QUEUE` values.
const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
/// `TCP_REPAIR_OPTIONS` codes (the TCP option kinds).
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// `struct tcp_repair_opt`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RepairOption {
    pub code: u32,
    pub value: u32,
}

/// `struct tcp_repair_window`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// Why a connection cannot become a kernel socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairError {
    /// Its state has nothing a kernel socket could continue (TIME-WAIT: only the wait
    /// is left) or cannot be restored (a handshake under way).
    NotMovable(State),
    /// TCP repair needs CAP_NET_ADMIN in the network namespace.
    NotPermitted,
    /// The kernel refused a step (which one, and its errno).
    Kernel(&'static str, Errno),
}

impl std::fmt::Display for RepairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairError::NotMovable(s) => write!(f, "a connection in {s:?} cannot move"),
            RepairError::NotPermitted => {
                write!(f, "TCP repair is not permitted (needs CAP_NET_ADMIN)")
            }
            RepairError::Kernel(step, e) => write!(
                f,
                "the kernel refused {step}: {}",
                std::io::Error::from_raw_os_error(*e)
            ),
        }
    }
}

/// What the kernel socket is told, computed from an exported connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairPlan<'a> {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// Sequence number of the first byte of the send queue (SND.UNA, or one before it
    /// when our FIN was already acknowledged).
    pub send_seq: u32,
    /// The send queue's bytes already sent (restored as in flight).
    pub sent: &'a [u8],
    /// The send queue's bytes never sent (written after repair, as ordinary data).
    pub unsent: &'a [u8],
    /// Sequence number of the first unread byte.
    pub recv_seq: u32,
    /// Received, unread.
    pub unread: &'a [u8],
    pub options: Vec<RepairOption>,
    /// Our TSval now (the kernel's clock for this socket continues from it).
    pub timestamp: Option<u32>,
    pub window: RepairWindow,
    /// Our FIN follows the data (the app closed or shut down writing).
    pub shut_write: bool,
    /// The app closed the socket (none of its fds name it).
    pub recv_shut: bool,
    /// SO_SNDBUF and SO_RCVBUF as the app would set them (half what it reads back).
    pub app_buffers: (i32, i32),
    /// The largest window the kernel socket may offer (TCP_WINDOW_CLAMP): what the
    /// stack's receive buffer would have offered. Unclamped, the kernel's first window
    /// follows from the room `buffers` forced, at its guess of the buffer each segment
    /// takes; on veth a segment took more than it guessed, and the kernel dropped the
    /// last ~100 segments of a window it had offered.
    pub window_clamp: u32,
}

impl<'a> RepairPlan<'a> {
    pub fn new(st: &'a ConnectionState) -> Result<RepairPlan<'a>, RepairError> {
        let peer_fin = match st.state {
            State::Established | State::FinWait1 | State::FinWait2 => false,
            State::CloseWait | State::Closing | State::LastAck => true,
            s => return Err(RepairError::NotMovable(s)),
        };
        // Our FIN is in sequence space once sent; acknowledged only in FIN-WAIT-2.
        let fin_acked = st.state == State::FinWait2;
        let send_seq = st.snd_una.wrapping_sub(fin_acked as u32);
        let in_flight = st.snd_max.wrapping_sub(st.snd_una) as usize;
        let (sent, unsent) = if fin_acked {
            (&st.send_queue[..0], &st.send_queue[..0])
        } else {
            st.send_queue.split_at(in_flight.min(st.send_queue.len()))
        };
        let rcv_nxt = st.rcv_nxt.wrapping_sub(peer_fin as u32);
        let recv_seq = rcv_nxt.wrapping_sub(st.recv_queue.len() as u32);
        let mut options = vec![RepairOption {
            code: TCPOPT_MSS,
            value: u32::from(st.peer_mss),
        }];
        if let (Some(snd), Some(rcv)) = (st.snd_wscale, st.rcv_wscale) {
            options.push(RepairOption {
                code: TCPOPT_WINDOW,
                value: u32::from(snd) | u32::from(rcv) << 16,
            });
        }
        if st.sack {
            options.push(RepairOption {
                code: TCPOPT_SACK_PERM,
                value: 0,
            });
        }
        if st.timestamps.is_some() {
            options.push(RepairOption {
                code: TCPOPT_TIMESTAMP,
                value: 0,
            });
        }
        // The right edge we advertised stays where it is (the kernel never shrinks a
        // window it is told was offered).
        // The kernel refuses SND.WL1 past RCV.NXT + RCV.WND (sequence comparisons), so
        // neither may wrap: a right edge behind RCV.NXT is no window, and SND.WL1 (the
        // segment that last moved the peer's window) is never past RCV.NXT for it.
        let ahead = |a: u32, b: u32| (a.wrapping_sub(b) as i32) > 0;
        let rcv_wnd = if ahead(st.rcv_adv, rcv_nxt) {
            st.rcv_adv.wrapping_sub(rcv_nxt).min(1 << 30)
        } else {
            0
        };
        let window = RepairWindow {
            snd_wl1: if ahead(st.snd_wl1, rcv_nxt) {
                rcv_nxt
            } else {
                st.snd_wl1
            },
            snd_wnd: st.snd_wnd,
            max_window: st.max_snd_wnd.max(st.snd_wnd),
            rcv_wnd,
            rcv_wup: rcv_nxt,
        };
        Ok(RepairPlan {
            local: st.local,
            remote: st.remote,
            send_seq,
            sent,
            unsent,
            recv_seq,
            unread: &st.recv_queue,
            options,
            // Linux reads the low bit of TCP_TIMESTAMP as "microsecond clock"
            // (tcp_usec_ts, 6.7+): an odd value would make the socket's TSval run a
            // thousand times faster. Rounded up to even, the clock is at most a tick
            // ahead of what we sent (never behind: the peer's PAWS would drop it).
            timestamp: st.timestamps.map(|(now, _)| now.wrapping_add(1) & !1),
            window,
            shut_write: st.fin_queued,
            recv_shut: st.read_shut,
            app_buffers: (
                (st.options.sndbuf / 2).min(i32::MAX as usize) as i32,
                (st.options.rcvbuf / 2).min(i32::MAX as usize) as i32,
            ),
            window_clamp: rcv_wnd.max(st.options.rcvbuf.min(1 << 30) as u32),
        })
    }

    /// The peer's MSS (the clamp on the segments the kernel sends).
    fn mss(&self) -> Option<u32> {
        self.options
            .iter()
            .find(|o| o.code == TCPOPT_MSS)
            .map(|o| o.value)
    }

    /// Buffer room the kernel socket needs to take the queues at once (the kernel
    /// counts per-packet overhead too: twice the data, plus a margin).
    fn buffers(&self) -> (i32, i32) {
        let room = |n: usize| (2 * n + (256 << 10)).min(i32::MAX as usize / 2) as i32;
        (
            room(self.sent.len() + self.unsent.len()),
            room(self.unread.len() + self.window_clamp as usize),
        )
    }
}

/// What `after` (the same connection a moment later, the stack having only received
/// since `before`) has received in order since `before`: the bytes a kernel socket
/// built from `before` still needs at the end of its receive queue (none after the
/// peer's FIN). None when that cannot be told to it: the peer's FIN came in between
/// (repair has no way to say it), or the unread data is not `before`'s followed by new
/// bytes.
pub fn received_since<'a>(
    before: &ConnectionState,
    after: &'a ConnectionState,
) -> Option<&'a [u8]> {
    let peer_fin = |s: State| {
        matches!(
            s,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
        )
    };
    if peer_fin(before.state) != peer_fin(after.state) {
        return None;
    }
    let new = after.rcv_nxt.wrapping_sub(before.rcv_nxt) as usize;
    let len = after.recv_queue.len();
    let kept = len.checked_sub(new)?;
    (kept == before.recv_queue.len() && after.recv_queue[..kept] == before.recv_queue[..])
        .then(|| &after.recv_queue[kept..])
}

/// A kernel TCP socket rebuilt from a plan, still in repair mode: it sends nothing,
/// and closing it (dropping this) ends it without a FIN or a RST. It processes
/// whatever segments reach it even so (Linux's receive path does not look at repair:
/// it queues the data and sends ACKs), so the connection's flow must stay ours until
/// [`RepairedSocket::go_live`].
pub struct RepairedSocket {
    fd: i32,
}

impl RepairedSocket {
    /// Everything of `plan` but the windows: addresses, options, clock and both
    /// queues. Blocking, close-on-exec. On error the connection is still wholly the
    /// caller's.
    pub fn build(plan: &RepairPlan) -> Result<RepairedSocket, RepairError> {
        let family = if plan.local.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        let fd = kernel::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
            .map_err(|e| RepairError::Kernel("socket", e))?;
        let sock = RepairedSocket { fd };
        restore_queues(fd, plan)?;
        Ok(sock)
    }

    /// Appends `late` to the receive queue (bytes received in order after the plan's
    /// snapshot: a repair write goes to RCV.NXT, whatever it is, so nothing else may
    /// have reached the socket), sets `window` (from the latest snapshot: its RCV.NXT
    /// is the queue's end now) and leaves repair mode: the kernel sends its window
    /// probe and from then on owns the connection. Returns its fd.
    pub fn go_live(self, late: &[u8], window: &RepairWindow) -> Result<i32, RepairError> {
        let fd = self.fd;
        let tcp = |name: i32, v: i32, step: &'static str| {
            kernel::setsockopt(fd, libc::IPPROTO_TCP, name, &v)
                .map_err(|e| RepairError::Kernel(step, e))
        };
        if !late.is_empty() {
            tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
            kernel::send_all(fd, late)
                .map_err(|e| RepairError::Kernel("writing late bytes to the receive queue", e))?;
        }
        if let Err(e) = kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW, window) {
            super::log::debug(format_args!(
                "TCP_REPAIR_WINDOW {window:?} refused ({} late bytes)",
                late.len()
            ));
            return Err(RepairError::Kernel("TCP_REPAIR_WINDOW", e));
        }
        tcp(libc::TCP_REPAIR_QUEUE, TCP_NO_QUEUE, "TCP_REPAIR_QUEUE")?;
        tcp(libc::TCP_REPAIR, 0, "TCP_REPAIR off")?;
        // Repair off leaves the socket with SO_REUSEADDR off, and its TIME-WAIT would
        // then keep the app's next listener off the port for a minute (EADDRINUSE on a
        // server's restart). A connection a listener accepted has it on Linux, taken
        // from the listener (servers set it); one the app connected is the app's.
        if let Err(e) = kernel::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32) {
            super::log::debug(format_args!("SO_REUSEADDR on a moved connection: {e}"));
        }
        std::mem::forget(self);
        Ok(fd)
    }
}

impl Drop for RepairedSocket {
    fn drop(&mut self) {
        // Still in repair mode: the kernel forgets the connection without a word.
        let _ = kernel::close(self.fd);
    }
}

/// What is left of `plan` once kernel socket `fd` is live: the send queue's part never
/// sent and our FIN (ordinary writes), and the buffer sizes the app had. On error the
/// socket is back in repair mode (closing it then says nothing to the peer).
pub fn finish_live(fd: i32, plan: &RepairPlan) -> Result<(), RepairError> {
    let unsent = if plan.unsent.is_empty() {
        Ok(())
    } else {
        kernel::send_all(fd, plan.unsent).map_err(|e| RepairError::Kernel("writing unsent data", e))
    };
    let shut = match unsent {
        Ok(()) if plan.shut_write => {
            kernel::shutdown(fd, libc::SHUT_WR).map_err(|e| RepairError::Kernel("shutdown", e))
        }
        other => other,
    };
    if let Err(e) = shut {
        let _ = kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &1i32);
        return Err(e);
    }
    // The queues are in: from now on the app sees the buffer sizes it had (the kernel
    // keeps what is queued beyond them). Not a receive buffer smaller than the window
    // the stack offered needs, though: the kernel keeps that window's right edge but
    // drops what arrives in it beyond its buffer (it counts each segment's whole
    // buffer, about twice its data), and the peer, whose window is open, sends it
    // again after a timeout (22 segments a move, measured).
    let (_, rcv_needed) = plan.buffers();
    let _ = kernel::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &plan.app_buffers.0);
    if plan.app_buffers.1 >= rcv_needed {
        let _ = kernel::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &plan.app_buffers.1);
    }
    Ok(())
}

fn restore_queues(fd: i32, plan: &RepairPlan) -> Result<(), RepairError> {
    let tcp = |name: i32, v: i32, step: &'static str| {
        kernel::setsockopt(fd, libc::IPPROTO_TCP, name, &v)
            .map_err(|e| RepairError::Kernel(step, e))
    };
    match kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &1i32) {
        Ok(()) => {}
        Err(libc::EPERM) => return Err(RepairError::NotPermitted),
        Err(e) => return Err(RepairError::Kernel("TCP_REPAIR", e)),
    }
    let (sndbuf, rcvbuf) = plan.buffers();
    let _ = kernel::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &sndbuf);
    let _ = kernel::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf);
    tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    tcp(
        libc::TCP_QUEUE_SEQ,
        plan.recv_seq as i32,
        "TCP_QUEUE_SEQ (receive)",
    )?;
    tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    tcp(
        libc::TCP_QUEUE_SEQ,
        plan.send_seq as i32,
        "TCP_QUEUE_SEQ (send)",
    )?;
    // The kernel sizes its segments at connect from the MSS clamp; the repair option
    // below sets the clamp only after that, so it is given here too (else 536).
    if let Some(mss) = plan.mss() {
        tcp(libc::TCP_MAXSEG, mss as i32, "TCP_MAXSEG")?;
    }
    let mut a = [0u8; 28];
    let n = super::sockaddr::write(plan.local, plan.local.is_ipv6(), &mut a);
    kernel::bind(fd, &a[..n]).map_err(|e| RepairError::Kernel("bind", e))?;
    let n = super::sockaddr::write(plan.remote, plan.remote.is_ipv6(), &mut a);
    kernel::connect(fd, &a[..n]).map_err(|e| RepairError::Kernel("connect", e))?;
    for o in &plan.options {
        kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_OPTIONS, o)
            .map_err(|e| RepairError::Kernel("TCP_REPAIR_OPTIONS", e))?;
    }
    tcp(
        libc::TCP_WINDOW_CLAMP,
        plan.window_clamp as i32,
        "TCP_WINDOW_CLAMP",
    )?;
    if let Some(ts) = plan.timestamp {
        tcp(libc::TCP_TIMESTAMP, ts as i32, "TCP_TIMESTAMP")?;
    }
    if !plan.unread.is_empty() {
        tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
        kernel::send_all(fd, plan.unread)
            .map_err(|e| RepairError::Kernel("writing the receive queue", e))?;
    }
    if !plan.sent.is_empty() {
        tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
        kernel::send_all(fd, plan.sent)
            .map_err(|e| RepairError::Kernel("writing the send queue", e))?;
    }
    Ok(())
}

/// `ioctl`s of a socket's queues.
const SIOCINQ: u64 = 0x541b;
const SIOCOUTQ: u64 = 0x5411;
const SIOCOUTQNSD: u64 = 0x894b;
/// `tcp_info.tcpi_options` bits.
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// The state of kernel TCP connection `fd` (ESTABLISHED, CLOSE-WAIT, or FIN-WAIT-1/2
/// after the app shut down writing; IPv4; FINs count in the sequence numbers as in the
/// stack), read in repair mode,
/// which stays on: the kernel sends nothing for it any more, and closing `fd` then
/// ends it without a FIN or RST. On error, repair is off again (the connection goes on
/// in the kernel, untouched).
pub fn read_kernel_socket(
    fd: i32,
    opts: stack::tcp::SocketOptions,
) -> Result<ConnectionState, RepairError> {
    match kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &1i32) {
        Ok(()) => {}
        Err(libc::EPERM) => return Err(RepairError::NotPermitted),
        Err(e) => return Err(RepairError::Kernel("TCP_REPAIR", e)),
    }
    let r = read_in_repair(fd, opts);
    if r.is_err() {
        // -1: off without the window probe (nothing changed).
        let _ = kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &-1i32);
    }
    r
}

fn read_in_repair(
    fd: i32,
    opts: stack::tcp::SocketOptions,
) -> Result<ConnectionState, RepairError> {
    let k = |step: &'static str| move |e| RepairError::Kernel(step, e);
    // SAFETY: tcp_info is plain integers; zero is a valid value of each.
    let zero: libc::tcp_info = unsafe { std::mem::zeroed() };
    let info = kernel::getsockopt_into(fd, libc::IPPROTO_TCP, libc::TCP_INFO, zero)
        .map_err(k("TCP_INFO"))?;
    // Linux's TCP_* state numbers.
    let state = match info.tcpi_state {
        1 => State::Established,
        8 => State::CloseWait,
        2 => return Err(RepairError::NotMovable(State::SynSent)),
        3 => return Err(RepairError::NotMovable(State::SynReceived)),
        4 => State::FinWait1,
        5 => State::FinWait2,
        6 => return Err(RepairError::NotMovable(State::TimeWait)),
        9 => return Err(RepairError::NotMovable(State::LastAck)),
        10 => return Err(RepairError::NotMovable(State::Listen)),
        11 => return Err(RepairError::NotMovable(State::Closing)),
        _ => return Err(RepairError::NotMovable(State::Closed)),
    };
    let addr = |name: fn(i32, &mut [u8; 128]) -> Result<usize, Errno>| {
        let mut b = [0u8; 128];
        let n = name(fd, &mut b).map_err(k("getsockname"))?;
        match super::sockaddr::parse(&b[..n]) {
            // IPv4 only: moving an IPv6 connection is not done yet.
            Ok(a @ std::net::SocketAddr::V4(_)) => Ok(a),
            _ => Err(RepairError::NotMovable(State::Established)),
        }
    };
    let local = addr(kernel::getsockname)?;
    let remote = addr(kernel::getpeername)?;
    let queue = |q: i32| {
        kernel::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, &q)
            .map_err(k("TCP_REPAIR_QUEUE"))
    };
    let peek = |len: i32| -> Result<Vec<u8>, RepairError> {
        let mut v = vec![0u8; len.max(0) as usize];
        let n = if v.is_empty() {
            0
        } else {
            kernel::recv_now(fd, &mut v, true).map_err(k("peeking a queue"))?
        };
        v.truncate(n);
        Ok(v)
    };
    let fin_in_queue = state == State::FinWait1;
    // The receive queue first, then the send queue, and the socket stays on the send
    // queue until it is closed: there, Linux "sends" new data without transmitting it
    // (repair's way of restoring sent data). On any other queue its pacing or loss
    // probe timer may transmit data after we read SND.NXT, and the peer's ACK of it
    // would be one of unsent data to the stack. Segments still in the kernel's receive
    // path when the flow was switched may land while we read: read again until SIOCINQ
    // and SIOCOUTQ held still around the whole read.
    let mut attempts = 0;
    let (rcv_nxt, recv_queue, write_seq, outq, unsent, send_queue) = loop {
        queue(TCP_RECV_QUEUE)?;
        let rcv_nxt: i32 = kernel::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ)
            .map_err(k("TCP_QUEUE_SEQ"))?;
        let inq = kernel::ioctl_int(fd, SIOCINQ).map_err(k("SIOCINQ"))?;
        let recv_queue = peek(inq)?;
        queue(TCP_SEND_QUEUE)?;
        let write_seq: i32 = kernel::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ)
            .map_err(k("TCP_QUEUE_SEQ"))?;
        let outq = kernel::ioctl_int(fd, SIOCOUTQ).map_err(k("SIOCOUTQ"))?;
        let unsent = kernel::ioctl_int(fd, SIOCOUTQNSD).map_err(k("SIOCOUTQNSD"))?;
        let send_queue = peek(outq)?;
        let still = kernel::ioctl_int(fd, SIOCINQ) == Ok(inq)
            && kernel::ioctl_int(fd, SIOCOUTQ) == Ok(outq);
        let whole = send_queue.len() + fin_in_queue as usize == outq as usize
            && recv_queue.len() == inq as usize;
        if still && whole {
            break (rcv_nxt, recv_queue, write_seq, outq, unsent, send_queue);
        }
        attempts += 1;
        if attempts == 5 {
            return Err(RepairError::Kernel(
                "reading the queues (they kept changing)",
                libc::EAGAIN,
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    };
    let w: RepairWindow = kernel::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW)
        .map_err(k("TCP_REPAIR_WINDOW"))?;
    let ts = info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0;
    let timestamps = if ts {
        let now: i32 = kernel::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_TIMESTAMP)
            .map_err(k("TCP_TIMESTAMP"))?;
        // TS.Recent is not readable: the peer's next segment sets it. A millisecond
        // clock reads with its low bit cleared (see `RepairPlan::timestamp`): the
        // clock is that or one more, and we must not run behind what it sent.
        Some((now as u32 | 1, 0))
    } else {
        None
    };
    let ws = info.tcpi_options & TCPI_OPT_WSCALE != 0;
    let (snd_ws, rcv_ws) = (
        info.tcpi_snd_rcv_wscale & 0xf,
        info.tcpi_snd_rcv_wscale >> 4,
    );
    // Our FIN, once queued, is in the kernel's sequence space and SIOCOUTQ (one past
    // the data), not in the bytes peeked; acknowledged in FIN-WAIT-2.
    let fin_queued = matches!(state, State::FinWait1 | State::FinWait2);
    let snd_una = (write_seq as u32).wrapping_sub(outq as u32);
    let snd_max = (write_seq as u32).wrapping_sub(unsent as u32);
    let rcv_nxt = rcv_nxt as u32;
    let mss = info.tcpi_snd_mss as u16 + if ts { 12 } else { 0 };
    Ok(ConnectionState {
        state,
        local,
        remote,
        iss: snd_una.wrapping_sub(1),
        irs: rcv_nxt
            .wrapping_sub(recv_queue.len() as u32)
            .wrapping_sub(1),
        snd_una,
        snd_nxt: snd_max,
        snd_max,
        snd_wnd: w.snd_wnd,
        snd_wl1: w.snd_wl1,
        snd_wl2: snd_una,
        max_snd_wnd: w.max_window,
        rcv_nxt,
        rcv_adv: w.rcv_wup.wrapping_add(w.rcv_wnd),
        snd_wscale: ws.then_some(snd_ws),
        rcv_wscale: ws.then_some(rcv_ws),
        peer_mss: mss,
        our_mss: info.tcpi_advmss as u16,
        timestamps,
        sack: info.tcpi_options & TCPI_OPT_SACK != 0,
        send_queue,
        recv_queue,
        fin_queued,
        read_shut: false,
        srtt_us: info.tcpi_rtt as u64,
        rttvar_us: info.tcpi_rttvar as u64,
        rto_us: info.tcpi_rto as u64,
        backoff: 0,
        cwnd: info.tcpi_snd_cwnd.saturating_mul(info.tcpi_snd_mss),
        ssthresh: info.tcpi_snd_ssthresh.saturating_mul(info.tcpi_snd_mss),
        congestion: Default::default(),
        options: opts,
        rto_in: None,
        close_in: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stack::tcp::{CongestionAlgorithm, TcpConfig};
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn state(s: State) -> ConnectionState {
        ConnectionState {
            state: s,
            local: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 80).into(),
            remote: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40000).into(),
            iss: 1000,
            irs: 5000,
            snd_una: 2000,
            snd_nxt: 2300,
            snd_max: 2300,
            snd_wnd: 65535 << 7,
            snd_wl1: 5900,
            snd_wl2: 2000,
            max_snd_wnd: 65535 << 7,
            rcv_nxt: 6000,
            rcv_adv: 6000 + 131072,
            snd_wscale: Some(7),
            rcv_wscale: Some(9),
            peer_mss: 1460,
            our_mss: 1460,
            timestamps: Some((777, 888)),
            sack: true,
            send_queue: (0..500u32).map(|i| i as u8).collect(),
            recv_queue: vec![7; 100],
            fin_queued: false,
            read_shut: false,
            srtt_us: 1000,
            rttvar_us: 500,
            rto_us: 200_000,
            backoff: 0,
            cwnd: 14600,
            ssthresh: u32::MAX,
            congestion: CongestionAlgorithm::default(),
            options: TcpConfig::default().default_socket_options(),
            rto_in: None,
            close_in: None,
        }
    }

    #[test]
    fn established_splits_the_send_queue_at_what_was_sent() {
        let st = state(State::Established);
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!(p.send_seq, 2000);
        assert_eq!((p.sent.len(), p.unsent.len()), (300, 200));
        assert_eq!(p.sent[299], 43); // byte 299 of 0..500 as u8
        assert_eq!(p.unsent[0], 44);
        assert_eq!(p.recv_seq, 6000 - 100);
        assert_eq!(p.unread.len(), 100);
        assert_eq!(
            p.options,
            vec![
                RepairOption {
                    code: 2,
                    value: 1460
                },
                RepairOption {
                    code: 3,
                    value: 7 | 9 << 16
                },
                RepairOption { code: 4, value: 0 },
                RepairOption { code: 8, value: 0 },
            ]
        );
        assert_eq!(
            p.timestamp,
            Some(778),
            "odd would be Linux's microsecond clock"
        );
        assert_eq!(
            p.window,
            RepairWindow {
                snd_wl1: 5900,
                snd_wnd: 65535 << 7,
                max_window: 65535 << 7,
                rcv_wnd: 131072,
                rcv_wup: 6000,
            }
        );
        assert!(!p.shut_write);
    }

    #[test]
    fn our_fin_sent_is_not_data_and_follows_it() {
        // FIN-WAIT-1: 500 bytes and the FIN sent (SND.MAX counts the FIN).
        let mut st = state(State::FinWait1);
        st.snd_max = 2501;
        st.snd_nxt = 2501;
        st.fin_queued = true;
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!((p.send_seq, p.sent.len(), p.unsent.len()), (2000, 500, 0));
        assert!(p.shut_write);
        // FIN-WAIT-2: everything and the FIN acknowledged; the kernel starts at the FIN.
        let mut st = state(State::FinWait2);
        st.snd_una = 2501;
        st.snd_max = 2501;
        st.send_queue.clear();
        st.fin_queued = true;
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!((p.send_seq, p.sent.len(), p.unsent.len()), (2500, 0, 0));
        assert!(p.shut_write);
    }

    #[test]
    fn the_peers_fin_is_left_out_of_the_receive_sequence() {
        for s in [State::CloseWait, State::LastAck, State::Closing] {
            let mut st = state(s);
            st.rcv_nxt = 6001; // the peer's FIN at 6000
            st.rcv_adv = 6001 + 1000;
            let p = RepairPlan::new(&st).unwrap();
            assert_eq!(p.recv_seq, 6000 - 100, "{s:?}");
            assert_eq!((p.window.rcv_wup, p.window.rcv_wnd), (6000, 1001), "{s:?}");
        }
    }

    #[test]
    fn the_window_never_wraps_past_what_the_kernel_accepts() {
        // A right edge behind RCV.NXT (stale) is no window, not 4 GB; SND.WL1 from a
        // segment past RCV.NXT (out of order) is brought back to it.
        let mut st = state(State::Established);
        st.rcv_adv = 6000 - 10;
        st.snd_wl1 = 6100;
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!((p.window.rcv_wnd, p.window.snd_wl1), (0, 6000));
    }

    #[test]
    fn no_options_that_were_not_negotiated() {
        let mut st = state(State::Established);
        st.snd_wscale = None;
        st.rcv_wscale = None;
        st.sack = false;
        st.timestamps = None;
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!(
            p.options,
            vec![RepairOption {
                code: 2,
                value: 1460
            }]
        );
        assert_eq!(p.timestamp, None);
    }

    #[test]
    fn handshakes_and_time_wait_do_not_move() {
        for s in [
            State::SynSent,
            State::SynReceived,
            State::TimeWait,
            State::Closed,
            State::Listen,
        ] {
            assert_eq!(
                RepairPlan::new(&state(s)).unwrap_err(),
                RepairError::NotMovable(s)
            );
        }
    }

    #[test]
    fn late_bytes_are_what_came_in_order_after_the_snapshot() {
        let before = state(State::Established);
        let mut after = before.clone();
        after.recv_queue.extend_from_slice(&[9; 30]);
        after.rcv_nxt += 30;
        assert_eq!(received_since(&before, &after), Some(&[9u8; 30][..]));
        assert_eq!(received_since(&before, &before), Some(&[][..]));
        // The peer's FIN came meanwhile: repair cannot tell the kernel.
        let mut fin = after.clone();
        fin.state = State::CloseWait;
        fin.rcv_nxt += 1;
        assert_eq!(received_since(&before, &fin), None);
        // A FIN before the snapshot: nothing can follow it.
        assert_eq!(received_since(&fin, &fin), Some(&[][..]));
        // Unread data that is not the snapshot's (the app read meanwhile): no.
        let mut read = after.clone();
        read.recv_queue.drain(..10);
        assert_eq!(received_since(&before, &read), None);
        let mut changed = after;
        changed.recv_queue[0] ^= 1;
        assert_eq!(received_since(&before, &changed), None);
    }

    #[test]
    fn the_kernel_offers_no_more_window_than_the_stack_would_have() {
        let st = state(State::Established);
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!(p.window_clamp, 256 * 1024);
        // The forced buffer has room for the unread data and the whole clamped window.
        assert!(p.buffers().1 as usize >= 2 * (100 + 256 * 1024));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut st = state(State::Established);
        st.snd_una = u32::MAX - 10;
        st.snd_max = 20;
        st.rcv_nxt = 50;
        let p = RepairPlan::new(&st).unwrap();
        assert_eq!(p.sent.len(), 31);
        assert_eq!(p.recv_seq, 50u32.wrapping_sub(100));
    }
}
