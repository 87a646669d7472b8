//! splice(2) between a fast-path TCP socket and a pipe.
//!
//! The socket's fd number is its kernel shadow, so the kernel's splice would act on the
//! wrong socket; here the stack's buffers take its place. Bytes pass through the
//! thread's own empty pipe (`process::thread_pipe`): a pipe-to-pipe splice with
//! SPLICE_F_NONBLOCK never blocks, whatever the app's pipe's mode, and moves only what
//! fits, so nothing is lost. Socket → pipe peeks the receive buffer and drops from it
//! only what the app's pipe took; pipe → socket takes from the app's pipe only what the
//! send buffer has room for.
//!
//! Everything else is the kernel's, and on the shadow (a TCP socket like any other) it
//! answers as Linux does: zero length, unknown flags, offsets (ESPIPE on the pipe
//! side, EINVAL on the socket side), an other end that is not a pipe, two sockets, a
//! socket not connected on the fast path, and `tee`/`copy_file_range`/`sendfile` from
//! a socket (never intercepted: EINVAL for a socket either way).

use super::calls::{err, ours};
use super::engine::{Engine, Kind};
use super::kernel;
use super::process::{self, block_on, engine, Attempt, Deadline, LEFT_THIS_STACK};
use fastnet_stats::Counter;
use rewriter::PASSTHROUGH;
use stack::error::Error;
use stack::socket::SocketHandle;
use std::cell::RefCell;
use std::time::Duration;

/// Bytes moved per pass through the thread's pipe (a pipe's default capacity).
const CHUNK: usize = 64 * 1024;

const SPLICE_F_ALL: u32 =
    libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MORE | libc::SPLICE_F_GIFT;

thread_local! {
    /// The bytes of one pass (peeked from the stack, or read from the thread's pipe).
    static PASS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A connected fast-path TCP socket, as the call found it.
#[derive(Clone, Copy)]
struct Stream {
    fd: i32,
    h: SocketHandle,
    nonblocking: bool,
    rcvtimeo: Option<Duration>,
    sndtimeo: Option<Duration>,
}

/// How one attempt under the engine's lock ended.
enum Flow {
    /// Return what moved (end of stream, the length reached, nothing more now).
    Done,
    /// Moved some; go on (pipe → socket on a blocking socket).
    More,
    /// The app's pipe has no room (socket → pipe) or no data (pipe → socket).
    PipeWait,
    /// The socket cannot send: the errno it gave.
    SocketError(i32),
}

pub fn splice(fd_in: i32, off_in: i64, fd_out: i32, off_out: i64, len: usize, flags: u32) -> i64 {
    if !rewriter::filter::is_fd_marked(fd_in) && !rewriter::filter::is_fd_marked(fd_out) {
        return PASSTHROUGH;
    }
    // The kernel checks these before it looks at the socket: the shadow answers right.
    if len == 0 || flags & !SPLICE_F_ALL != 0 || off_in != 0 || off_out != 0 {
        return PASSTHROUGH;
    }
    let (from, to) = {
        let e = engine();
        (stream(&e, fd_in), stream(&e, fd_out))
    };
    let is_pipe = |fd: i32| kernel::file_type(fd) == Ok(libc::S_IFIFO);
    match (from, to) {
        (Some(s), None) if is_pipe(fd_out) => socket_to_pipe(s, fd_out, len, flags),
        (None, Some(s)) if is_pipe(fd_in) => pipe_to_socket(fd_in, s, len, flags),
        _ => PASSTHROUGH,
    }
}

/// The connected fast-path TCP socket behind `fd`, if it is one.
fn stream(e: &Engine, fd: i32) -> Option<Stream> {
    ours(e, fd).and_then(|s| match s.kind {
        Kind::TcpStream(h) => Some(Stream {
            fd,
            h,
            nonblocking: s.nonblocking,
            rcvtimeo: s.rcvtimeo,
            sndtimeo: s.sndtimeo,
        }),
        _ => None,
    })
}

/// sendfile(2) from a fast-path TCP socket into a pipe: Linux splices (a socket can be
/// read that way with no offset; everything else is the kernel's answer for the shadow).
pub fn sendfile_to_pipe(out_fd: i32, in_fd: i32, offp: i64, count: usize) -> i64 {
    if offp != 0 || count == 0 {
        return PASSTHROUGH;
    }
    let from = {
        let e = engine();
        match (stream(&e, in_fd), ours(&e, out_fd)) {
            (Some(s), None) => s,
            _ => return PASSTHROUGH,
        }
    };
    if kernel::file_type(out_fd) != Ok(libc::S_IFIFO) {
        return PASSTHROUGH;
    }
    socket_to_pipe(from, out_fd, count, 0)
}

/// Whether the pipe side of the splice is nonblocking (SPLICE_F_NONBLOCK or the
/// pipe's own O_NONBLOCK, as in Linux's do_splice); EBADF when `fd` is not open for
/// the direction the splice uses (`write`: the splice writes into it).
fn pipe_nonblocking(fd: i32, write: bool, flags: u32) -> Result<bool, i32> {
    let fl = kernel::fcntl(fd, libc::F_GETFL, 0)? as i32;
    let acc = fl & libc::O_ACCMODE;
    let usable = acc == libc::O_RDWR
        || acc
            == if write {
                libc::O_WRONLY
            } else {
                libc::O_RDONLY
            };
    if !usable {
        return Err(libc::EBADF);
    }
    Ok(flags & libc::SPLICE_F_NONBLOCK != 0 || fl & libc::O_NONBLOCK != 0)
}

/// Runs a splice with what it needs: whether the app's `pipe` side is nonblocking
/// (`writes`: the splice writes into it), the thread's pipe, and the pass buffer.
fn with_pass(
    pipe: i32,
    writes: bool,
    flags: u32,
    splice: impl FnOnce(bool, [i32; 2], &mut [u8]) -> i64,
) -> i64 {
    let pipe_nb = match pipe_nonblocking(pipe, writes, flags) {
        Ok(nb) => nb,
        Err(x) => return err(x),
    };
    let own = match process::thread_pipe() {
        Ok(p) => p,
        Err(x) => return err(x),
    };
    PASS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < CHUNK {
            b.resize(CHUNK, 0);
        }
        splice(pipe_nb, own, &mut b[..CHUNK])
    })
}

/// The stack's receive buffer into the app's pipe.
fn socket_to_pipe(s: Stream, pipe: i32, len: usize, flags: u32) -> i64 {
    with_pass(pipe, true, flags, |pipe_nb, own, b| {
        let mut moved = 0usize;
        loop {
            let r = block_on(
                s.fd,
                s.h,
                s.nonblocking,
                Deadline::after(s.rcvtimeo),
                libc::EAGAIN,
                None,
                |e| loop {
                    let want = (len - moved).min(CHUNK);
                    let n = match e.iface.tcp.peek(s.h, &mut b[..want]) {
                        Ok(0) => return Attempt::Done(Ok(Flow::Done)),
                        Ok(n) => n,
                        Err(_) if moved > 0 => return Attempt::Done(Ok(Flow::Done)),
                        Err(Error::WouldBlock) => {
                            // Linux waits for room in the pipe before it looks at the
                            // socket: a full nonblocking pipe says EAGAIN at once.
                            if pipe_nb && !s.nonblocking && pipe_full(pipe) {
                                return Attempt::Done(Ok(Flow::PipeWait));
                            }
                            return Attempt::Wait;
                        }
                        Err(x) => return Attempt::Done(Err(x.errno())),
                    };
                    match into_pipe(own, pipe, &mut b[..n]) {
                        Ok(m) => {
                            let _ = e.iface.tcp.discard(s.h, m);
                            e.count_n(Counter::SpliceToPipe, m as u64);
                            moved += m;
                            if m < n || moved == len {
                                return Attempt::Done(Ok(Flow::Done));
                            }
                        }
                        Err(_) if moved > 0 => return Attempt::Done(Ok(Flow::Done)),
                        Err(libc::EAGAIN) => return Attempt::Done(Ok(Flow::PipeWait)),
                        Err(x) => return Attempt::Done(Err(x)),
                    }
                },
            );
            match r {
                Ok(Flow::PipeWait) if !pipe_nb => {
                    if let Err(x) = wait_pipe(pipe, libc::POLLOUT) {
                        return err(x);
                    }
                }
                Ok(Flow::PipeWait) => return err(libc::EAGAIN),
                Ok(_) => return moved as i64,
                Err(LEFT_THIS_STACK) if moved > 0 => return moved as i64,
                Err(x) => return err(x),
            }
        }
    })
}

/// The app's pipe into the stack's send buffer.
fn pipe_to_socket(pipe: i32, s: Stream, len: usize, flags: u32) -> i64 {
    with_pass(pipe, false, flags, |pipe_nb, own, b| {
        let mut moved = 0usize;
        loop {
            let r = block_on(
                s.fd,
                s.h,
                s.nonblocking,
                Deadline::after(s.sndtimeo),
                libc::EAGAIN,
                None,
                |e| {
                    let room = match e.iface.tcp.send(s.h, &[]) {
                        Ok(_) => e.iface.tcp.send_room(s.h).unwrap_or(0),
                        // Still connecting: wait as a send would.
                        Err(Error::WouldBlock) => 0,
                        Err(x) => return Attempt::Done(Ok(Flow::SocketError(x.errno()))),
                    };
                    if room == 0 {
                        return match pipe_state(pipe) {
                            PipeState::Data => Attempt::Wait,
                            PipeState::Empty => Attempt::Done(Ok(Flow::PipeWait)),
                            PipeState::Ended => Attempt::Done(Ok(Flow::Done)),
                        };
                    }
                    let want = room.min(len - moved).min(CHUNK);
                    match from_pipe(pipe, own, &mut b[..want]) {
                        // No writer and nothing left: end of file.
                        Ok(0) => Attempt::Done(Ok(Flow::Done)),
                        Ok(n) => {
                            // The room was measured under this lock: all of it goes.
                            let sent = e.iface.tcp.send(s.h, &b[..n]);
                            debug_assert_eq!(sent, Ok(n));
                            e.count_n(Counter::SpliceFromPipe, n as u64);
                            moved += n;
                            Attempt::Done(Ok(if moved == len { Flow::Done } else { Flow::More }))
                        }
                        Err(libc::EAGAIN) => Attempt::Done(Ok(Flow::PipeWait)),
                        Err(x) => Attempt::Done(Err(x)),
                    }
                },
            );
            match r {
                Ok(Flow::More) => continue,
                Ok(Flow::Done) => return moved as i64,
                Ok(_) | Err(libc::EAGAIN | libc::EINTR | LEFT_THIS_STACK) if moved > 0 => {
                    return moved as i64
                }
                Ok(Flow::PipeWait) if pipe_nb => return err(libc::EAGAIN),
                Ok(Flow::PipeWait) => {
                    if let Err(x) = wait_pipe(pipe, libc::POLLIN) {
                        return err(x);
                    }
                }
                Ok(Flow::SocketError(x)) => {
                    // Linux waits for the pipe before it sends: an empty pipe answers
                    // first (end of file, EAGAIN, or a wait), then the socket's error.
                    match pipe_state(pipe) {
                        PipeState::Ended => return 0,
                        PipeState::Empty if pipe_nb => return err(libc::EAGAIN),
                        PipeState::Empty => {
                            if let Err(w) = wait_pipe(pipe, libc::POLLIN) {
                                return err(w);
                            }
                        }
                        PipeState::Data => {}
                    }
                    if x == libc::EPIPE {
                        // splice sends without MSG_NOSIGNAL.
                        kernel::raise(libc::SIGPIPE);
                    }
                    return err(x);
                }
                Err(x) => return err(x),
            }
        }
    })
}

/// Puts `buf` into the app's pipe `to` without blocking; returns how much it took.
/// The rest stays the caller's (it is still in the stack).
fn into_pipe(own: [i32; 2], to: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // The thread's pipe is empty: it takes a pass whole (less only when the user's
    // pipe quota shrank it; then the rest simply was not moved).
    let w = kernel::write(own[1], buf)?;
    let r = kernel::splice_pipes(own[0], to, w, libc::SPLICE_F_NONBLOCK);
    if r != Ok(w) {
        drain(own[0], buf);
    }
    r
}

/// Takes up to `buf.len()` bytes from the app's pipe `from` without blocking; `Ok(0)`
/// is end of file (no writer, nothing left), EAGAIN an empty pipe.
fn from_pipe(from: i32, own: [i32; 2], buf: &mut [u8]) -> Result<usize, i32> {
    let m = kernel::splice_pipes(from, own[1], buf.len(), libc::SPLICE_F_NONBLOCK)?;
    let mut got = 0;
    while got < m {
        match kernel::read(own[0], &mut buf[got..m]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    Ok(got)
}

/// Empties the thread's pipe (what the app's pipe did not take).
fn drain(own_read: i32, scratch: &mut [u8]) {
    while let Ok(k) = kernel::read(own_read, scratch) {
        if k == 0 {
            break;
        }
    }
}

enum PipeState {
    Data,
    Empty,
    /// Empty with no writer left.
    Ended,
}

fn pipe_state(fd: i32) -> PipeState {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let _ = kernel::poll(&mut p, 0);
    if p[0].revents & libc::POLLIN != 0 {
        PipeState::Data
    } else if p[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        PipeState::Ended
    } else {
        PipeState::Empty
    }
}

/// No slot free in the pipe (a pipe with no reader is not full: the splice says EPIPE).
fn pipe_full(fd: i32) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    let _ = kernel::poll(&mut p, 0);
    p[0].revents & (libc::POLLOUT | libc::POLLERR) == 0
}

/// Sleeps until the app's pipe has `events` (or hangs up); EINTR for a signal.
fn wait_pipe(fd: i32, events: i16) -> Result<(), i32> {
    let mut p = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    kernel::poll(&mut p, -1).map(|_| ())
}
