//! Connections relayed to a program exec'd with them: inetd's shape (`socat
//! TCP-LISTEN,fork EXEC:cat,nofork`, xinetd, tcpserver), where a forked child makes the
//! connection its stdin and stdout and execs a service.
//!
//! The service's fds are the tether's app end (see `handoff`): a Unix stream socket. Its
//! new image has a fresh shim that knows nothing of the connection, and no stack to
//! fetch it into. So before execve the child asks the connection's holder to *relay*
//! it: from then on the holder's driver carries the connection's bytes over the tether
//! both ways, and the service reads and writes a Unix socket with plain kernel calls.
//! The wire stays on the fast path (the kernel holds no TCP connection).
//!
//! Only stdin, stdout and stderr count (inetd's contract): a connection on a higher fd
//! that survives exec was merely inherited (`ncat --exec` leaks its socket into a
//! command that talks over pipes while ncat serves the connection). And the holder
//! relays only once its own app let go of the connection (inetd's parent closes its
//! copy after fork): while an fd of the holder names it, its app is the user.
//!
//! Bytes are peeked and consumed only once the other side took them, so a relay that
//! stops at any point loses nothing. The peer's FIN becomes end-of-file for the
//! service (SHUT_WR on the tether); the service's end-of-file ends the relay, and the
//! tether's end-of-file then closes the connection as for any tethered one.

use super::engine::{Engine, Kind};
use super::handoff::AwayKind;
use super::kernel;
use super::log::debug;
use super::mailbox::{ConnKey, Mailbox, Message};
use fastnet_stats::Counter;
use stack::error::Error;
use stack::socket::SocketHandle;

/// A connection whose app end went through exec.
#[derive(Clone, Copy, Debug)]
pub struct Relay {
    /// The tether (the holder's end of the Unix socket pair).
    fd: i32,
    /// The peer's FIN was passed on (the service reads end-of-file).
    peer_done: bool,
}

/// Bytes moved per call, each way.
const CHUNK: usize = 64 << 10;

/// True when `fd` is the exec'd program's stdin, stdout or stderr: inetd's shape. A
/// connection on a higher fd that survives exec is one the program merely inherited
/// (`ncat --exec` leaks its socket into a command that talks over pipes, while ncat
/// itself serves the connection); relaying it would race its real user.
fn service_fd(fd: i32) -> bool {
    (0..=2).contains(&fd)
        && kernel::fcntl(fd, libc::F_GETFD, 0).is_ok_and(|fl| fl & libc::FD_CLOEXEC as i64 == 0)
}

impl Engine {
    /// Before execve: every connection that the new program's stdin, stdout or stderr
    /// names and that lives in another member's stack is relayed by that member. A
    /// connection in this process's own stack dies with it (handing it to the kernel
    /// is the handoff issue's).
    pub fn before_exec(&mut self) {
        let mut conns: Vec<(ConnKey, u32)> = Vec::new();
        match (&self.family, super::family::origin()) {
            (Some(m), _) if super::family::drives() => {
                for (&fd, a) in &m.away {
                    if let AwayKind::Conn { conn, holder } = a.what {
                        if service_fd(fd) {
                            conns.push((conn, holder));
                        }
                    }
                }
            }
            // A child that never joined: its table is its parent's, whose stack
            // holds every connection it names.
            (_, Some(holder)) if !super::family::drives() => {
                for fd in self.fds.fds() {
                    let Some(Kind::TcpStream(h)) = self.fds.get(fd).map(|s| s.kind) else {
                        continue;
                    };
                    let (Ok(local), Ok(remote)) =
                        (self.iface.tcp.local_addr(h), self.iface.tcp.peer_addr(h))
                    else {
                        continue;
                    };
                    if service_fd(fd) {
                        conns.push((ConnKey { local, remote }, holder));
                    }
                }
            }
            _ => {}
        }
        conns.sort_by_key(|(c, _)| (c.remote.ip(), c.remote.port(), c.local.port()));
        conns.dedup();
        conns.retain(|(c, _)| !self.relays_asked.contains(c));
        for (conn, holder) in conns {
            let msg = Message::Relay { conn };
            let sent = match &mut self.family {
                Some(m) => m.mailbox.send(holder, &msg, &[]),
                None => Mailbox::post(holder, &msg),
            };
            match sent {
                Ok(()) => self.relays_asked.push(conn),
                Err(e) => debug(format_args!(
                    "exec: cannot ask member {holder} to relay {conn:?}: errno {e}"
                )),
            }
        }
    }

    /// A member exec'd with `conn`: relay it over its tether (once).
    pub(super) fn start_relay(&mut self, conn: ConnKey) {
        let Some(h) = self.iface.tcp.find(conn.local, conn.remote) else {
            debug(format_args!("relay: {conn:?} is not here"));
            return;
        };
        let Some(m) = self.family.as_mut() else {
            return;
        };
        let Some(fd) = m.tether_of(h) else {
            debug(format_args!("relay: {conn:?} has no tether"));
            return;
        };
        if m.relays.contains_key(&h) {
            return;
        }
        m.relays.insert(
            h,
            Relay {
                fd,
                peer_done: false,
            },
        );
        self.count(Counter::FamilyRelayed);
        debug(format_args!("relaying {conn:?} over its tether"));
    }

    /// Moves what is ready across every relay. True when the stack took bytes to send.
    pub fn pump_relays(&mut self) -> bool {
        let Some(m) = self.family.as_ref() else {
            return false;
        };
        if m.relays.is_empty() {
            return false;
        }
        // Only once this process's app let go of the connection: while it names it,
        // it is the connection's user and the exec'd program merely inherited an fd
        // it does not use (ncat --exec's cat, which talks over pipes).
        let relays: Vec<(SocketHandle, Relay)> = m
            .relays
            .iter()
            .filter(|(&h, _)| m.is_detached(h))
            .map(|(&h, &r)| (h, r))
            .collect();
        let mut buf = vec![0u8; CHUNK];
        let mut sent = false;
        let mut ended = Vec::new();
        for (h, mut r) in relays {
            let done = self.relay_to_service(h, &mut r, &mut buf)
                || self.relay_to_peer(h, r, &mut buf, &mut sent);
            let m = self.family.as_mut().expect("checked");
            if done {
                m.relays.remove(&h);
                ended.push(h);
            } else {
                m.relays.insert(h, r);
            }
        }
        for h in ended {
            debug(format_args!("relay of {h:?} ended"));
        }
        sent
    }

    /// Peer → service. True when the relay is over (the service or the connection
    /// is gone).
    fn relay_to_service(&mut self, h: SocketHandle, r: &mut Relay, buf: &mut [u8]) -> bool {
        loop {
            match self.iface.tcp.peek(h, buf) {
                Ok(0) => {
                    if !r.peer_done {
                        let _ = kernel::shutdown(r.fd, libc::SHUT_WR);
                        r.peer_done = true;
                    }
                    return false;
                }
                Ok(n) => match kernel::send_now(r.fd, &buf[..n]) {
                    Ok(k) => {
                        let _ = self.iface.tcp.recv(h, &mut buf[..k]);
                        if k < n {
                            return false;
                        }
                    }
                    Err(libc::EAGAIN) => return false,
                    // The service closed its end: nobody reads any more.
                    Err(_) => return true,
                },
                Err(Error::WouldBlock) => return false,
                Err(_) => {
                    // Reset or closed: the service sees end-of-file both ways.
                    let _ = kernel::shutdown(r.fd, libc::SHUT_RDWR);
                    return true;
                }
            }
        }
    }

    /// Service → peer. True when the relay is over.
    fn relay_to_peer(
        &mut self,
        h: SocketHandle,
        r: Relay,
        buf: &mut [u8],
        sent: &mut bool,
    ) -> bool {
        loop {
            match kernel::recv_now(r.fd, buf, true) {
                // The service closed (or shut its writing): the tether's end-of-file
                // closes the connection once no fd names it.
                Ok(0) => return true,
                Ok(n) => match self.iface.tcp.send(h, &buf[..n]) {
                    Ok(k) => {
                        let _ = kernel::recv_now(r.fd, &mut buf[..k], false);
                        *sent = true;
                        if k < n {
                            return false;
                        }
                    }
                    Err(Error::WouldBlock) => return false,
                    Err(_) => {
                        let _ = kernel::shutdown(r.fd, libc::SHUT_RDWR);
                        return true;
                    }
                },
                Err(libc::EAGAIN) => return false,
                Err(_) => return true,
            }
        }
    }
}
