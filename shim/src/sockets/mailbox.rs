//! Messages between the members of a family (see `family`): each member's mailbox is
//! an abstract Unix datagram socket named after the family and its slot, so any member
//! can write to any other without sharing an fd, and the kernel removes the name when
//! the member dies. A connection's state travels as a memfd passed with the message
//! (no size limit), with the connection's tether (see `handoff`) beside it.

use super::family;
use super::kernel::{self, Errno};
use std::collections::VecDeque;
use std::net::SocketAddr;

/// A connection, named by its addresses (unique on the interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// What one member tells another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Send the connection to me (`from`).
    Fetch { conn: ConnKey, from: u32 },
    /// The connection: its state in the first fd passed, then its tether and its
    /// kernel shadow when `with` says so (handoff's WITH_* flags).
    State { conn: ConnKey, with: u32 },
    /// Not here any more: ask `slot`.
    Moved { conn: ConnKey, slot: u32 },
    /// Nobody has it: it closed.
    Gone { conn: ConnKey },
    /// A frame of a connection that moved from the sender to you (it reached the
    /// sender before the XDP program's map sent the flow to you).
    Frame { conn: ConnKey, frame: Vec<u8> },
    /// I (`from`) listen on `conn.local` too, in the port's listener group: send me
    /// (and the group) what your listener there queues and never accepts.
    Listening { conn: ConnKey, from: u32 },
    /// A connection your listener on `conn.local` is to queue for `accept`: its state
    /// in the fd passed (a connection another member's listener took but never
    /// accepted).
    Queued { conn: ConnKey },
    /// A process exec'd with an fd naming your connection `conn` (inetd's shape): its
    /// new program has only the tether's other end, so carry the connection's bytes
    /// over the tether from now on.
    Relay { conn: ConnKey },
}

const HEADER: usize = 48;
/// The largest message: a frame of the largest MTU the fast path runs (see
/// xdp_backend::attach) with its header.
pub const MAX_MESSAGE: usize = HEADER + 4096;

fn put_addr(b: &mut [u8], a: SocketAddr) {
    b[..18].copy_from_slice(&super::sockaddr::to_wire(a));
}

fn get_addr(b: &[u8]) -> SocketAddr {
    super::sockaddr::from_wire(b[..18].try_into().expect("18 bytes"))
}

impl Message {
    fn conn(&self) -> ConnKey {
        match self {
            Message::Fetch { conn, .. }
            | Message::State { conn, .. }
            | Message::Moved { conn, .. }
            | Message::Gone { conn }
            | Message::Frame { conn, .. }
            | Message::Listening { conn, .. }
            | Message::Queued { conn }
            | Message::Relay { conn } => *conn,
        }
    }

    /// Bytes: kind, 3 pad, u32 argument, local and remote address (16 bytes of IPv6
    /// or v4-mapped IPv4, port), 4 pad, then the frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.resize(HEADER, 0);
        let (kind, arg) = match self {
            Message::Fetch { from, .. } => (1, *from),
            Message::State { with, .. } => (2, *with),
            Message::Moved { slot, .. } => (3, *slot),
            Message::Gone { .. } => (4, 0),
            Message::Frame { .. } => (5, 0),
            Message::Listening { from, .. } => (6, *from),
            Message::Queued { .. } => (7, 0),
            Message::Relay { .. } => (8, 0),
        };
        out[0] = kind;
        out[4..8].copy_from_slice(&arg.to_le_bytes());
        let c = self.conn();
        put_addr(&mut out[8..26], c.local);
        put_addr(&mut out[26..44], c.remote);
        if let Message::Frame { frame, .. } = self {
            out.extend_from_slice(frame);
        }
    }

    /// None for anything malformed (the sender is a member, but a stale or foreign
    /// process could write to the name).
    pub fn decode(b: &[u8]) -> Option<Message> {
        if b.len() < HEADER {
            return None;
        }
        let arg = u32::from_le_bytes(b[4..8].try_into().ok()?);
        let conn = ConnKey {
            local: get_addr(&b[8..26]),
            remote: get_addr(&b[26..44]),
        };
        let bare = b.len() == HEADER;
        Some(match b[0] {
            1 if bare && (arg as usize) < family::MAX_MEMBERS => Message::Fetch { conn, from: arg },
            2 if bare && arg < 4 => Message::State { conn, with: arg },
            3 if bare && (arg as usize) < family::MAX_MEMBERS => Message::Moved { conn, slot: arg },
            4 if bare => Message::Gone { conn },
            6 if bare && (arg as usize) < family::MAX_MEMBERS => {
                Message::Listening { conn, from: arg }
            }
            7 if bare => Message::Queued { conn },
            8 if bare => Message::Relay { conn },
            5 if !bare => Message::Frame {
                conn,
                frame: b[HEADER..].to_vec(),
            },
            _ => return None,
        })
    }
}

/// This member's mailbox.
pub struct Mailbox {
    fd: i32,
    buf: Vec<u8>,
    /// Messages the receiver had no room for, in the order they were sent.
    outbox: VecDeque<Pending>,
}

/// A message waiting for room in its receiver's queue. The kernel queues at most
/// `net.unix.max_dgram_qlen` datagrams per Unix socket (10 by default), whatever its
/// buffer: a burst (20 children exec'ing at once, each asking for a relay) fills it
/// within microseconds, and a message dropped there loses a connection.
struct Pending {
    slot: u32,
    bytes: Vec<u8>,
    /// Copies of the fds passed with it, owned here until it is sent.
    fds: Vec<i32>,
}

/// Messages held at most; beyond, a send fails as the kernel's would.
const OUTBOX_MAX: usize = 4096;
/// How long a process about to exec waits for room in its holder's queue.
const POST_TIMEOUT_MS: i64 = 5_000;

impl Mailbox {
    /// Binds the mailbox of `slot` (high fd, nonblocking, close-on-exec).
    pub fn open(slot: u32) -> Result<Mailbox, Errno> {
        let fd = kernel::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )?;
        let fd = kernel::move_high(fd, kernel::HIGH_FD_FLOOR)?;
        let (addr, len) = family::mailbox_name(slot);
        if let Err(e) = kernel::bind(fd, &addr[..len]) {
            let _ = kernel::close(fd);
            return Err(e);
        }
        // Room for a burst of forwarded frames while the member is busy.
        let _ = kernel::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        Ok(Mailbox {
            fd,
            buf: vec![0; MAX_MESSAGE],
            outbox: VecDeque::new(),
        })
    }

    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Sends `msg` (with `fds`) to the member in `slot`. When its queue is full the
    /// message waits here (with copies of `fds`) and goes, in order, at a later
    /// [`Mailbox::flush`]: Ok means it will be delivered unless the member dies.
    pub fn send(&mut self, slot: u32, msg: &Message, fds: &[i32]) -> Result<(), Errno> {
        let mut bytes = Vec::with_capacity(HEADER);
        msg.encode(&mut bytes);
        self.flush();
        // Behind what already waits for the same member: messages keep their order.
        if !self.waits_for(slot) {
            let (addr, len) = family::mailbox_name(slot);
            match kernel::send_with_fds(self.fd, &addr[..len], &bytes, fds, false) {
                Ok(_) => {
                    family::note_mail(slot);
                    return Ok(());
                }
                Err(libc::EAGAIN) => {}
                Err(e) => return Err(e),
            }
        }
        if self.outbox.len() >= OUTBOX_MAX {
            return Err(libc::EAGAIN);
        }
        let mut copies = Vec::with_capacity(fds.len());
        for &fd in fds {
            match kernel::move_high_copy(fd) {
                Ok(c) => copies.push(c),
                Err(e) => {
                    for c in copies {
                        let _ = kernel::close(c);
                    }
                    return Err(e);
                }
            }
        }
        self.outbox.push_back(Pending {
            slot,
            bytes,
            fds: copies,
        });
        Ok(())
    }

    /// Sends what waits for room, in order; a member's messages stop at its first
    /// that still finds its queue full. Messages to a member that is gone are dropped.
    pub fn flush(&mut self) {
        let mut full: Vec<u32> = Vec::new();
        let mut i = 0;
        while i < self.outbox.len() {
            let p = &self.outbox[i];
            if full.contains(&p.slot) {
                i += 1;
                continue;
            }
            let (addr, len) = family::mailbox_name(p.slot);
            match kernel::send_with_fds(self.fd, &addr[..len], &p.bytes, &p.fds, false) {
                Err(libc::EAGAIN) => {
                    full.push(p.slot);
                    i += 1;
                    continue;
                }
                Ok(_) => family::note_mail(p.slot),
                Err(_) => {}
            }
            let p = self.outbox.remove(i).expect("in range");
            for fd in p.fds {
                let _ = kernel::close(fd);
            }
        }
    }

    /// True while messages wait for room.
    pub fn holds_messages(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// True while messages to `slot` wait for room (every earlier one was delivered
    /// once this is false: they go in order).
    pub fn waits_for(&self, slot: u32) -> bool {
        self.outbox.iter().any(|p| p.slot == slot)
    }

    /// The fds held with waiting messages (protected from the app's close_range).
    pub fn held_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.outbox.iter().flat_map(|p| p.fds.iter().copied())
    }

    /// Sends `msg` to the member in `slot` from a process that has no mailbox (a child
    /// that never joined, about to exec): waits for room in the member's queue (its
    /// driver empties it every round), at most [`POST_TIMEOUT_MS`].
    pub fn post(slot: u32, msg: &Message) -> Result<(), Errno> {
        let fd = kernel::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)?;
        let mut bytes = Vec::with_capacity(HEADER);
        msg.encode(&mut bytes);
        let (addr, len) = family::mailbox_name(slot);
        let r = kernel::set_send_timeout(fd, POST_TIMEOUT_MS)
            .and_then(|_| kernel::send_with_fds(fd, &addr[..len], &bytes, &[], true));
        let _ = kernel::close(fd);
        r?;
        family::note_mail(slot);
        Ok(())
    }

    /// The next message, with the fds that came with it (the caller owns them).
    /// Malformed messages are dropped (their fds closed).
    pub fn recv(&mut self) -> Option<(Message, [i32; 4], usize)> {
        loop {
            let mut fds = [-1; 4];
            let (n, nfds) = kernel::recv_with_fds(self.fd, &mut self.buf, &mut fds).ok()?;
            match Message::decode(&self.buf[..n]) {
                Some(m) => return Some((m, fds, nfds)),
                None => {
                    for &fd in &fds[..nfds] {
                        let _ = kernel::close(fd);
                    }
                }
            }
        }
    }

    /// Closes the mailbox (a forked child's copy of its parent's, with the copies of
    /// fds its parent's waiting messages hold).
    pub fn close(self) {
        let _ = kernel::close(self.fd);
        for p in self.outbox {
            for fd in p.fds {
                let _ = kernel::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConnKey {
        ConnKey {
            local: "10.77.0.1:7001".parse().unwrap(),
            remote: "10.77.0.2:40000".parse().unwrap(),
        }
    }

    #[test]
    fn an_ipv6_connection_survives_the_round_trip() {
        let conn = ConnKey {
            local: "[fd77::1]:8080".parse().unwrap(),
            remote: "[fd77::2]:40000".parse().unwrap(),
        };
        let mut b = Vec::new();
        Message::Fetch { conn, from: 5 }.encode(&mut b);
        assert_eq!(Message::decode(&b), Some(Message::Fetch { conn, from: 5 }));
        Message::Frame {
            conn,
            frame: vec![9; 4],
        }
        .encode(&mut b);
        assert_eq!(
            Message::decode(&b),
            Some(Message::Frame {
                conn,
                frame: vec![9; 4]
            })
        );
    }

    #[test]
    fn every_message_survives_the_round_trip() {
        let conn = key();
        let mut b = Vec::new();
        for m in [
            Message::Fetch { conn, from: 5 },
            Message::State { conn, with: 3 },
            Message::Moved { conn, slot: 63 },
            Message::Gone { conn },
            Message::Frame {
                conn,
                frame: vec![1, 2, 3],
            },
            Message::Listening { conn, from: 2 },
            Message::Queued { conn },
            Message::Relay { conn },
        ] {
            m.encode(&mut b);
            assert_eq!(Message::decode(&b), Some(m));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let conn = key();
        let mut b = Vec::new();
        Message::Fetch { conn, from: 1 }.encode(&mut b);
        assert_eq!(Message::decode(&b[..HEADER - 1]), None);
        b[4] = 64; // no such slot
        assert_eq!(Message::decode(&b), None);
        b[4] = 1;
        b[0] = 9; // no such kind
        assert_eq!(Message::decode(&b), None);
        b[0] = 2;
        b.push(0); // a State carries nothing after its header
        assert_eq!(Message::decode(&b), None);
        Message::Frame {
            conn,
            frame: vec![],
        }
        .encode(&mut b);
        assert_eq!(Message::decode(&b), None, "a frame message without a frame");
    }

    /// Runs `f` in a thread of its own network namespace: the mailboxes' abstract
    /// names cannot meet another test run's.
    fn in_own_netns(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            // SAFETY: unshare only changes this thread's namespace.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "unshare(CLONE_NEWNET) needs root");
            f()
        })
        .join()
        .unwrap();
    }

    fn drain(b: &mut Mailbox, got: &mut Vec<(Message, Vec<i32>)>) {
        while let Some((m, fds, n)) = b.recv() {
            got.push((m, fds[..n].to_vec()));
        }
    }

    #[test]
    fn a_burst_beyond_the_kernels_queue_arrives_whole_and_in_order() {
        in_own_netns(|| {
            let mut a = Mailbox::open(61).unwrap();
            let mut b = Mailbox::open(62).unwrap();
            let conn = |i: u16| ConnKey {
                local: "10.77.0.1:7001".parse().unwrap(),
                remote: SocketAddr::new("10.77.0.2".parse().unwrap(), 40000 + i),
            };
            for i in 0..30 {
                a.send(62, &Message::Relay { conn: conn(i) }, &[]).unwrap();
            }
            // The state of a connection, in a memfd the sender closes at once.
            let memfd = kernel::memfd(c"state").unwrap();
            kernel::write(memfd, b"state").unwrap();
            let state = Message::State {
                conn: conn(99),
                with: 0,
            };
            a.send(62, &state, &[memfd]).unwrap();
            kernel::close(memfd).unwrap();
            assert!(a.holds_messages(), "the kernel queues 10 at most");
            let mut got = Vec::new();
            for _ in 0..100 {
                drain(&mut b, &mut got);
                a.flush();
                if !a.holds_messages() {
                    break;
                }
            }
            drain(&mut b, &mut got);
            assert_eq!(got.len(), 31);
            for (i, (m, fds)) in got[..30].iter().enumerate() {
                assert_eq!(
                    *m,
                    Message::Relay {
                        conn: conn(i as u16)
                    }
                );
                assert!(fds.is_empty());
            }
            assert_eq!(got[30].0, state);
            let fd = got[30].1[0];
            let mut buf = [0u8; 8];
            assert_eq!(kernel::pread(fd, &mut buf, 0), Ok(5));
            assert_eq!(&buf[..5], b"state");
            kernel::close(fd).unwrap();
            assert_eq!(a.held_fds().count(), 0);
        });
    }

    #[test]
    fn messages_for_a_member_that_is_gone_are_dropped_with_their_fds() {
        in_own_netns(|| {
            let mut a = Mailbox::open(61).unwrap();
            let b = Mailbox::open(62).unwrap();
            let conn = key();
            for _ in 0..12 {
                a.send(62, &Message::Gone { conn }, &[]).unwrap();
            }
            let memfd = kernel::memfd(c"state").unwrap();
            a.send(62, &Message::State { conn, with: 0 }, &[memfd])
                .unwrap();
            kernel::close(memfd).unwrap();
            assert_eq!(a.held_fds().count(), 1);
            b.close();
            a.flush();
            assert!(!a.holds_messages());
            assert_eq!(a.held_fds().count(), 0);
        });
    }
}
