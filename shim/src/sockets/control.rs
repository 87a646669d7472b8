//! The control channel of a running process: `fastnet handoff` (and later verbs) send
//! one request per datagram to an abstract Unix socket named after the process's PID
//! in its network namespace (`fastnet_stats::control_address`); the background driver
//! reads it and answers the sender. Only root or the process's own user is heard (the
//! uid the kernel attaches, SCM_CREDENTIALS), and a request changes nothing but where
//! the process's own connections live.

use super::kernel::{self, Errno};

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Move the process's TCP connections (those on `port`, local or remote, if
    /// given) to the kernel or to the stack.
    Handoff { to_kernel: bool, port: Option<u16> },
}

/// Parses `handoff to=kernel|stack [port=N]`.
pub fn parse(text: &str) -> Result<Request, String> {
    let mut words = text.split_whitespace();
    if words.next() != Some("handoff") {
        return Err(format!("unknown request {text:?}"));
    }
    let (mut to, mut port) = (None, None);
    for w in words {
        match w.split_once('=') {
            Some(("to", "kernel")) => to = Some(true),
            Some(("to", "stack")) => to = Some(false),
            Some(("port", p)) => {
                port = Some(p.parse().map_err(|_| format!("bad port {p:?}"))?);
            }
            _ => return Err(format!("unknown argument {w:?}")),
        }
    }
    let to_kernel = to.ok_or("to=kernel or to=stack is missing")?;
    Ok(Request::Handoff { to_kernel, port })
}

pub struct ControlSocket {
    fd: i32,
}

impl ControlSocket {
    /// Binds this process's control socket (high fd, nonblocking, close-on-exec).
    pub fn open(pid: u32) -> Result<ControlSocket, Errno> {
        let fd = kernel::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )?;
        let fd = kernel::move_high(fd, kernel::HIGH_FD_FLOOR)?;
        let _ = kernel::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1);
        if let Err(e) = kernel::bind(fd, &fastnet_stats::control_address(pid)) {
            let _ = kernel::close(fd);
            return Err(e);
        }
        Ok(ControlSocket { fd })
    }

    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The next request, if one waits, with the address to answer. A sender that is
    /// neither root nor this process's user is refused.
    pub fn next(&self) -> Option<(Result<Request, String>, Vec<u8>)> {
        let mut buf = [0u8; 256];
        let mut from = [0u8; 128];
        let (n, len, uid) = kernel::recv_with_creds(self.fd, &mut buf, &mut from).ok()?;
        let me = kernel::getuid();
        let request = if uid.is_some_and(|u| u == 0 || u == me) {
            parse(&String::from_utf8_lossy(&buf[..n]))
        } else {
            Err(format!("user {uid:?} may not control this process"))
        };
        Some((request, from[..len].to_vec()))
    }

    /// Answers a request (one datagram; a sender that went away loses it).
    pub fn reply(&self, to: &[u8], text: &str) {
        let _ = kernel::send_to(self.fd, text.as_bytes(), to);
    }

    /// Closed in a forked child (the name is the parent's PID's).
    pub fn close(self) {
        let _ = kernel::close(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("handoff to=kernel"),
            Ok(Request::Handoff {
                to_kernel: true,
                port: None
            })
        );
        assert_eq!(
            parse("handoff to=stack port=6379"),
            Ok(Request::Handoff {
                to_kernel: false,
                port: Some(6379)
            })
        );
        assert!(parse("handoff").unwrap_err().contains("to=kernel"));
        assert!(parse("handoff to=moon").unwrap_err().contains("to=moon"));
        assert!(parse("handoff to=kernel port=x")
            .unwrap_err()
            .contains("bad port"));
        assert!(parse("reboot").unwrap_err().contains("unknown request"));
    }
}
