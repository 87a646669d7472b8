//! Socket system calls on the fast path: which calls the hook sends here, and the
//! life of a socket (socket, bind, listen, accept, connect, close).
//! Data calls are in `data.rs`, options in `options.rs`, readiness in `readiness.rs`.

use super::appmem;
use super::engine::v6only;
use super::engine::{
    forget_moved_kernel_fds, is_moved_kernel_fd, set_moved_kernel_fd, CALLS_IN_FLIGHT, MOVE_PENDING,
};
use super::engine::{Engine, FastSocket, Kind};
use super::kernel;
use super::log::debug;
use super::process::{self, active, block_on, engine, Attempt, Deadline};
use super::sockaddr;
use fastnet_stats::Counter;
use rewriter::{SyscallArgs, PASSTHROUGH};
use stack::error::Error;
use stack::tcp::SocketOptions;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use xdp_backend::portmap::Transport;

/// `-errno` as a system call result.
pub fn err(e: i32) -> i64 {
    -(e as i64)
}

pub fn stack_err(e: Error) -> i64 {
    err(e.errno())
}

pub fn res(r: Result<i64, i32>) -> i64 {
    r.unwrap_or_else(err)
}

/// Calls handled whatever their first argument.
const ALWAYS: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_close_range,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    // The fd that matters is the third argument (and the epoll may predate us).
    libc::SYS_epoll_ctl,
    // `_exit` skips atexit: the exit work (FINs, lingering for unsent data, counters)
    // runs here instead (forking servers' children end with it).
    libc::SYS_exit_group,
    // An fd naming a connection that crosses exec is relayed by its holder (`relay`).
    libc::SYS_execve,
    libc::SYS_execveat,
    // Either end may be ours (splice: the first and third arguments; sendfile: the
    // first and second, a socket read into a pipe).
    libc::SYS_splice,
    libc::SYS_sendfile,
];

/// Calls handled only when their first argument is a marked fd (ours or an app epoll).
const ON_OUR_FDS: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendmmsg,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_close,
    libc::SYS_dup,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
];

/// The work of a normal exit, once (from atexit, or from `_exit`'s exit_group when the
/// app skips atexit): the sockets the app left open close as the kernel would close
/// them, what it wrote is delivered, the counters are reported.
pub fn exit_work() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    close_all_at_exit();
    process::at_exit();
}

/// Tells the hook's pre-filter which calls come here.
pub fn register_filters() {
    for &nr in ALWAYS {
        rewriter::filter::handle_syscall(nr as u32, true);
    }
    for &nr in ON_OUR_FDS {
        rewriter::filter::handle_fd_syscall(nr as u32, true);
    }
}

/// The fast path did not start (and never will in this process: it starts once): from
/// now on nothing of the socket layer is routed here, so every call costs only the hook's
/// pre-filter, and the app's signal handlers go back to the kernel unwrapped. Once.
fn stay_on_kernel() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // `fastnet trace` counts every number through the same filter: it keeps them.
        if !crate::trace::is_enabled() {
            rewriter::filter::handle_syscall(libc::SYS_socket as u32, false);
            rewriter::filter::handle_syscall(libc::SYS_rt_sigaction as u32, false);
            for nr in process::PRIVILEGE_DROPS {
                rewriter::filter::handle_syscall(nr as u32, false);
            }
        }
        super::signals::unwrap_all();
        debug(format_args!(
            "fast path off: every call goes to the kernel; numbers still routed past the \
             hook's pre-filter: {:?}",
            rewriter::filter::routed_numbers()
        ));
    });
}

/// Entry from the dispatcher: the result, or `PASSTHROUGH` for the kernel.
pub fn handle(a: &mut SyscallArgs) -> i64 {
    if a.nr == libc::SYS_rt_sigaction {
        if kernel::getpid() != super::family::pid() {
            // A vfork/posix_spawn child resetting handlers before exec: its handler table
            // is its own in the kernel, but ours is the parent's memory; leave it alone.
            return PASSTHROUGH;
        }
        return super::signals::rt_sigaction(
            a.args[0] as i32,
            a.args[1],
            a.args[2],
            a.args[3] as usize,
        );
    }
    if a.nr == libc::SYS_exit_group {
        // Not in a vfork child, which shares its parent's memory (and stack).
        if active() && kernel::getpid() == super::family::pid() {
            exit_work();
        }
        return PASSTHROUGH;
    }
    if a.nr == libc::SYS_execve || a.nr == libc::SYS_execveat {
        // Not in a vfork child: the table it would read is its parent's.
        if active() && kernel::getpid() == super::family::pid() {
            process::engine().before_exec();
        }
        return PASSTHROUGH;
    }
    if process::PRIVILEGE_DROPS.contains(&a.nr) {
        if active() || !process::may_start_before_dropping_root() {
            return PASSTHROUGH;
        }
        if !process::start_before_dropping_root() {
            stay_on_kernel();
            return PASSTHROUGH;
        }
        register_filters();
        // SAFETY: the app's own call, made here so that the driver thread is made
        // after it (with the credentials the app chose).
        let r = unsafe { kernel::raw(a.nr, a.args) };
        process::spawn_driver();
        return r;
    }
    if !active() {
        // Only an IP socket starts the fast path: glibc opens AF_UNIX sockets of its
        // own (nscd, systemd's user database, when a shell without HOME looks the user
        // up), and a wrapper doing that would take the interface from the program it
        // runs, which then falls back to the kernel.
        if a.nr == libc::SYS_socket && matches!(a.args[0] as i32, libc::AF_INET | libc::AF_INET6) {
            if process::start() {
                register_filters();
            } else {
                stay_on_kernel();
            }
        }
        if !active() {
            return PASSTHROUGH;
        }
    }
    let other_end = match a.nr {
        libc::SYS_splice => Some(a.args[2]),
        libc::SYS_sendfile => Some(a.args[1]),
        _ => None,
    };
    if other_end.is_some_and(|o| {
        !rewriter::filter::is_fd_marked(a.args[0] as i32)
            && !rewriter::filter::is_fd_marked(o as i32)
    }) {
        // Pipes and files only: the kernel's, at the cost of this check.
        return PASSTHROUGH;
    }
    if in_shared_memory_child(a.nr) {
        // A vfork/posix_spawn child runs in the parent's memory until it execs: the
        // fds it closes or dups are its own copies, and our tables are the parent's.
        return PASSTHROUGH;
    }
    match a.nr {
        libc::SYS_dup2 | libc::SYS_dup3 => {
            forget_moved_kernel_fds(a.args[1] as u32 as u64, a.args[1] as u32 as u64)
        }
        libc::SYS_close_range => {
            forget_moved_kernel_fds(a.args[0] as u32 as u64, a.args[1] as u32 as u64)
        }
        _ => {}
    }
    if let Some(r) = on_moved_kernel_fd(a) {
        return r;
    }
    if matches!(a.nr, libc::SYS_getsockname | libc::SYS_getpeername) {
        let peer = a.nr == libc::SYS_getpeername;
        if let Some(r) =
            super::options::getname_in_place(a.args[0] as i32, a.args[1], a.args[2], peer)
        {
            return r;
        }
    }
    if let Some(r) = dup_inherited(a) {
        return r;
    }
    if !super::family::drives() {
        return not_member(a);
    }
    // Counted from before the call first looks a socket up: a move to or from the
    // kernel waits until no such call is in flight (see `CallsInFlight`).
    let _in_flight = (!waits_for_readiness(a.nr)).then(CallsInFlight::enter);
    let r = loop {
        if let Err(x) = bring_named_fds_home(a) {
            return err(x);
        }
        let r = handle_call(a);
        // A wait whose socket another member took meanwhile: fetched back, made again.
        if r != -(process::LEFT_THIS_STACK as i64) {
            break r;
        }
    };
    if super::log::tracing() {
        debug(format_args!(
            "call {} ({:#x}, {:#x}, {:#x}, {:#x}) = {}",
            a.nr,
            a.args[0],
            a.args[1],
            a.args[2],
            a.args[3],
            if r == PASSTHROUGH {
                "kernel".to_string()
            } else {
                r.to_string()
            }
        ));
    }
    r
}

/// A call on a kernel socket that came from a move to the kernel: made here, by the
/// kernel, counted at the door (a move back to the stack reads the socket in repair
/// mode: it waits for the call, and the call waits for it). Readiness waits pass as on
/// fast-path fds; a close forgets the fd first.
fn on_moved_kernel_fd(a: &SyscallArgs) -> Option<i64> {
    let fd = a.args[0] as i32;
    // The bit first: one load on the hot path (args[0] of other calls is no fd, and
    // may match a bit: the number decides then).
    if !is_moved_kernel_fd(fd) || !ON_OUR_FDS.contains(&a.nr) || waits_for_readiness(a.nr) {
        return None;
    }
    let in_flight = CallsInFlight::enter();
    if !is_moved_kernel_fd(fd) {
        // It moved back to the stack while this call waited at the door.
        drop(in_flight);
        return None;
    }
    if a.nr == libc::SYS_close {
        set_moved_kernel_fd(fd, false);
        rewriter::filter::mark_fd(fd, false);
    }
    // SAFETY: the app's own call with its own arguments.
    let r = unsafe { kernel::raw(a.nr, a.args) };
    drop(in_flight);
    Some(r)
}

/// dup/dup2/dup3 of an inherited fast-path fd whose socket is not in this process's
/// stack (a child that never joined, or an away fd): the kernel dups the fd and the
/// new number names the same socket in the shim's tables. Nothing is fetched: a child
/// making a connection its stdin before exec leaves it with its holder (see `relay`).
fn dup_inherited(a: &SyscallArgs) -> Option<i64> {
    if !matches!(a.nr, libc::SYS_dup | libc::SYS_dup2 | libc::SYS_dup3) {
        return None;
    }
    let old = a.args[0] as i32;
    let member = super::family::drives();
    let mut e = engine();
    let inherited = if member {
        e.family.as_ref().is_some_and(|m| m.away.contains_key(&old))
    } else {
        e.fds.contains(old)
    };
    if !inherited {
        return None;
    }
    if a.nr != libc::SYS_dup && process::is_internal(&e, a.args[1] as i32) {
        return Some(err(libc::EBUSY));
    }
    // SAFETY: the app's own dup call with its own arguments.
    let r = unsafe { kernel::raw(a.nr, [a.args[0], a.args[1], a.args[2], 0, 0, 0]) };
    if r < 0 || r as i32 == old {
        return Some(r);
    }
    let new = r as i32;
    if member {
        if let Some(released) = e.fds.remove(new) {
            e.close_socket(released);
        }
        if let Some(m) = e.family.as_mut() {
            if let Some(away) = m.away.get(&old).copied() {
                m.away.insert(new, away);
            }
        }
    } else {
        // The table of a child that never joined is bookkeeping only: its sockets
        // are the parent's, nothing here closes them.
        let _ = e.fds.remove(new);
        let _ = e.fds.dup(old, new);
    }
    rewriter::filter::mark_fd(new, true);
    Some(r)
}

/// True in a child that shares the parent's memory (vfork, posix_spawn's
/// CLONE_VM|CLONE_VFORK) for the calls such a child makes before exec. fork's atfork
/// handler refreshes the cached PID; these children run no handler, so the real PID
/// differs from the cached one. Only the fd-table calls pay for the check.
fn in_shared_memory_child(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_close | libc::SYS_dup2 | libc::SYS_dup3 | libc::SYS_close_range | libc::SYS_fcntl
    ) && kernel::getpid() != super::family::pid()
}

/// Counts an app thread's call inside the socket layer (see `CALLS_IN_FLIGHT`).
struct CallsInFlight;

impl CallsInFlight {
    /// Counts this call in, waiting at the door while a move is pending (the mover
    /// holds the door closed at most `CALLS_WAIT_US`).
    fn enter() -> CallsInFlight {
        loop {
            CALLS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
            if !MOVE_PENDING.load(Ordering::SeqCst) {
                return CallsInFlight;
            }
            CALLS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            while MOVE_PENDING.load(Ordering::SeqCst) {
                kernel::sched_yield();
            }
        }
    }
}

impl Drop for CallsInFlight {
    fn drop(&mut self) {
        CALLS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The calls that wait for readiness of many fds (they hold no connection's handle
/// across the engine's lock).
fn waits_for_readiness(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_epoll_wait
            | libc::SYS_epoll_pwait
            | libc::SYS_epoll_pwait2
            | libc::SYS_poll
            | libc::SYS_ppoll
            | libc::SYS_select
            | libc::SYS_pselect6
            | libc::SYS_accept
            | libc::SYS_accept4
    )
}

/// Calls that use an existing socket (the argument naming it): a forked child making
/// one joins its family (nginx's worker, socat's forked handler).
fn uses_socket(nr: i64) -> Option<usize> {
    match nr {
        libc::SYS_epoll_ctl => Some(2),
        libc::SYS_read
        | libc::SYS_write
        | libc::SYS_readv
        | libc::SYS_writev
        | libc::SYS_recvfrom
        | libc::SYS_sendto
        | libc::SYS_recvmsg
        | libc::SYS_sendmsg
        | libc::SYS_recvmmsg
        | libc::SYS_sendmmsg
        | libc::SYS_listen
        | libc::SYS_accept
        | libc::SYS_accept4
        | libc::SYS_connect
        | libc::SYS_shutdown
        // Options and names too: the fd is a tether until the connection comes home
        // (a child's SO_SNDBUF before its first write was set on the tether, and lost).
        | libc::SYS_setsockopt
        | libc::SYS_getsockopt
        | libc::SYS_getsockname
        | libc::SYS_getpeername
        | libc::SYS_ioctl
        | libc::SYS_epoll_wait
        | libc::SYS_epoll_pwait
        | libc::SYS_epoll_pwait2 => Some(0),
        _ => None,
    }
}

/// A call in a forked child that has no stack of its own yet (see `family`): one that
/// uses a fast-path socket it inherited, or makes a new Internet socket, makes it a
/// member of the family first; anything else is the kernel's.
fn not_member(a: &mut SyscallArgs) -> i64 {
    let fast = |fd: i64| {
        let e = engine();
        e.fds.contains(fd as i32) || e.epolls.contains_key(&(fd as i32))
    };
    let wants = match a.nr {
        libc::SYS_socket => matches!(a.args[0] as i32, libc::AF_INET | libc::AF_INET6),
        libc::SYS_poll | libc::SYS_ppoll | libc::SYS_select | libc::SYS_pselect6 => {
            let e = engine();
            !super::readiness::fds_named_by(a, |fd| e.fds.contains(fd)).is_empty()
        }
        libc::SYS_splice => fast(a.args[0]) || fast(a.args[2]),
        libc::SYS_sendfile => fast(a.args[0]) || fast(a.args[1]),
        // O_NONBLOCK set before the first use went to the tether and was lost.
        libc::SYS_fcntl => {
            matches!(a.args[1] as i32, libc::F_SETFL | libc::F_GETFL) && fast(a.args[0])
        }
        nr => uses_socket(nr).is_some_and(|i| fast(a.args[i])),
    };
    if wants && process::join_family() {
        return handle(a);
    }
    if a.nr == libc::SYS_close && fast(a.args[0]) {
        let mut e = engine();
        let _ = e.fds.remove(a.args[0] as i32);
        if e.fds.sockets_in_use() == 0 {
            // It names no inherited socket any more (redis's BGSAVE child, a child
            // that closed the listener): its copy of the XDP link must not keep the
            // program attached after the family's last member is gone.
            e.dev.close_link_copy();
        }
    }
    strip_if_epoll_wait(a)
}

/// Before a call of a member whose fds may name sockets living in another member's
/// stack: fetches those the call names (see `handoff`).
fn bring_named_fds_home(a: &SyscallArgs) -> Result<(), i32> {
    let named: Vec<i32> = {
        let e = engine();
        let Some(m) = e.family.as_ref().filter(|m| !m.away.is_empty()) else {
            return Ok(());
        };
        let away = |fd: i32| m.away.contains_key(&fd);
        match a.nr {
            libc::SYS_close | libc::SYS_socket | libc::SYS_close_range => return Ok(()),
            libc::SYS_epoll_ctl => vec![a.args[2] as i32],
            libc::SYS_poll | libc::SYS_ppoll | libc::SYS_select | libc::SYS_pselect6 => {
                super::readiness::fds_named_by(a, away)
            }
            libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => {
                m.away_in_epoll(a.args[0] as i32).collect()
            }
            libc::SYS_sendfile => vec![a.args[0] as i32, a.args[1] as i32],
            libc::SYS_splice => vec![a.args[0] as i32, a.args[2] as i32],
            _ => vec![a.args[0] as i32],
        }
        .into_iter()
        .filter(|&fd| away(fd))
        .collect()
    };
    if named.is_empty() {
        return Ok(());
    }
    process::bring_home(&named)
}

/// Epoll waits in a process that does not drive: the kernel's answer without our
/// marker events (the XSK fds and wakers still sit in epolls inherited from the parent).
fn strip_if_epoll_wait(a: &mut SyscallArgs) -> i64 {
    match a.nr {
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => {
            super::readiness::kernel_wait_stripped(a)
        }
        _ => PASSTHROUGH,
    }
}

fn handle_call(a: &mut SyscallArgs) -> i64 {
    let [a0, a1, a2, a3, a4, a5] = a.args;
    let fd = a0 as i32;
    match a.nr {
        libc::SYS_socket => socket(a0 as i32, a1 as i32, a2 as i32),
        libc::SYS_bind => bind(fd, a1, a2 as usize),
        libc::SYS_listen => listen(fd, a1 as i32),
        libc::SYS_accept => accept(fd, a1, a2, 0),
        libc::SYS_accept4 => accept(fd, a1, a2, a3 as i32),
        libc::SYS_connect => connect(fd, a1, a2 as usize),
        libc::SYS_close => close(fd),
        libc::SYS_shutdown => super::data::shutdown(fd, a1 as i32),
        libc::SYS_read => super::data::recvfrom(fd, a1, a2 as usize, 0, 0, 0),
        libc::SYS_recvfrom => super::data::recvfrom(fd, a1, a2 as usize, a3 as i32, a4, a5),
        libc::SYS_write => super::data::sendto(fd, a1, a2 as usize, 0, 0, 0),
        libc::SYS_sendto => super::data::sendto(fd, a1, a2 as usize, a3 as i32, a4, a5 as usize),
        libc::SYS_readv => super::data::readv(fd, a1, a2 as usize),
        libc::SYS_writev => super::data::writev(fd, a1, a2 as usize),
        libc::SYS_recvmsg => super::data::recvmsg(fd, a1, a2 as i32),
        libc::SYS_sendmsg => super::data::sendmsg(fd, a1, a2 as i32),
        libc::SYS_recvmmsg => super::data::recvmmsg(fd, a1, a2 as u32, a3 as i32),
        libc::SYS_sendmmsg => super::data::sendmmsg(fd, a1, a2 as u32, a3 as i32),
        libc::SYS_sendfile => super::data::sendfile(fd, a1 as i32, a2, a3 as usize),
        libc::SYS_splice => super::splice::splice(fd, a1, a2 as i32, a3, a4 as usize, a5 as u32),
        libc::SYS_getsockopt => super::options::getsockopt(fd, a1 as i32, a2 as i32, a3, a4),
        libc::SYS_setsockopt => super::options::setsockopt(fd, a1 as i32, a2 as i32, a3, a4 as u32),
        libc::SYS_getsockname => super::options::getname(fd, a1, a2, false),
        libc::SYS_getpeername => super::options::getname(fd, a1, a2, true),
        libc::SYS_fcntl => super::options::fcntl(fd, a1 as i32, a2),
        libc::SYS_ioctl => super::options::ioctl(fd, a1 as u64, a2),
        libc::SYS_dup => super::options::dup(fd),
        libc::SYS_dup2 => super::options::dup3(fd, a1 as i32, 0, true),
        libc::SYS_dup3 => super::options::dup3(fd, a1 as i32, a2 as i32, false),
        libc::SYS_close_range => super::options::close_range(a0 as u32, a1 as u32, a2 as u32),
        libc::SYS_epoll_create => super::readiness::epoll_create(0, a0 as i32),
        libc::SYS_epoll_create1 => super::readiness::epoll_create(a0 as i32, 1),
        libc::SYS_epoll_ctl => super::readiness::epoll_ctl(fd, a1 as i32, a2 as i32, a3),
        libc::SYS_epoll_wait => super::readiness::epoll_wait(fd, a1, a2 as i32, a3 as i32, None),
        libc::SYS_epoll_pwait => {
            super::readiness::epoll_pwait(fd, a1, a2 as i32, a3 as i32, a4, a5 as usize, None)
        }
        libc::SYS_epoll_pwait2 => {
            super::readiness::epoll_pwait2(fd, a1, a2 as i32, a3, a4, a5 as usize)
        }
        libc::SYS_poll => super::readiness::poll(a0, a1 as usize, a2 as i32),
        libc::SYS_ppoll => super::readiness::ppoll(a0, a1 as usize, a2, a3, a4 as usize),
        libc::SYS_select => super::readiness::select(a0 as i32, a1, a2, a3, a4),
        libc::SYS_pselect6 => super::readiness::pselect6(a0 as i32, a1, a2, a3, a4, a5),
        _ => PASSTHROUGH,
    }
}

/// The socket behind `fd` when it is ours and this process drives the fast path.
pub fn ours(e: &Engine, fd: i32) -> Option<FastSocket> {
    if !super::family::drives() {
        return None;
    }
    e.fds.get(fd).copied()
}

/// Hands `fd` back to the kernel: it is an ordinary socket from now on.
pub fn release_to_kernel(e: &mut Engine, fd: i32, why: Counter) {
    if let Some(old) = e.fds.get(fd).map(|s| s.kind) {
        super::readiness::sync_epolls(e, fd, old, true);
    }
    if let Some(s) = e.fds.remove(fd) {
        let nonblocking = s.nonblocking;
        e.close_socket(s);
        // The shadow was nonblocking for our own use; give the app its mode back.
        if !nonblocking {
            if let Ok(fl) = kernel::fcntl(fd, libc::F_GETFL, 0) {
                let _ = kernel::fcntl(fd, libc::F_SETFL, fl & !(libc::O_NONBLOCK as i64));
            }
        }
    }
    rewriter::filter::mark_fd(fd, false);
    e.count(why);
    debug(format_args!("fd {fd}: left to the kernel ({})", why.name()));
}

fn socket(domain: i32, ty: i32, proto: i32) -> i64 {
    let base = ty & 0xf;
    let candidate = (domain == libc::AF_INET || domain == libc::AF_INET6)
        && ((base == libc::SOCK_STREAM && (proto == 0 || proto == libc::IPPROTO_TCP))
            || (base == libc::SOCK_DGRAM && (proto == 0 || proto == libc::IPPROTO_UDP)));
    if !candidate {
        return PASSTHROUGH;
    }
    if process::fallen_back() {
        engine().count(Counter::KernelFallback);
        return PASSTHROUGH;
    }
    // The shadow: a real kernel socket, always nonblocking for our own use of it.
    let fd = match kernel::socket(domain, ty | libc::SOCK_NONBLOCK, proto) {
        Ok(fd) => fd,
        Err(e) => return err(e),
    };
    let mut e = engine();
    let kind = if base == libc::SOCK_STREAM {
        Kind::TcpFresh
    } else {
        Kind::UdpFresh
    };
    let s = FastSocket {
        kind,
        v6: domain == libc::AF_INET6,
        nonblocking: ty & libc::SOCK_NONBLOCK != 0,
        rcvtimeo: None,
        sndtimeo: None,
        opts: SocketOptions {
            rcvbuf: 256 * 1024,
            sndbuf: 256 * 1024,
            nodelay: false,
            keepalive: None,
            linger: None,
            user_timeout: None,
            defer_accept: None,
            quickack: true,
            tos: 0,
        },
        keepalive_params: Default::default(),
        claimed: None,
        epolls: Default::default(),
        primary_fd: fd,
        holds_port: false,
        recv_cmsgs: Default::default(),
    };
    if let Some(stale) = e.fds.remove(fd) {
        // The kernel reused a number we still tracked (closed behind our back).
        e.close_socket(stale);
    }
    match e.fds.insert(fd, s) {
        Ok(()) => rewriter::filter::mark_fd(fd, true),
        Err(_) => {
            e.count(Counter::KernelResources);
            if ty & libc::SOCK_NONBLOCK == 0 {
                let _ = kernel::fcntl(fd, libc::F_SETFL, 0);
            }
        }
    }
    fd as i64
}

/// Shadow address for binding to the fast-path interface address, in the socket's family.
fn shadow_addr(v6: bool, a: SocketAddr) -> ([u8; 28], usize) {
    let mut buf = [0u8; 28];
    let n = sockaddr::write(a, v6, &mut buf);
    (buf, n)
}

/// The shadow's port, binding it to `local` (port 0: the kernel picks) if the app
/// did not bind it.
fn bound_port(fd: i32, v6: bool, local: SocketAddr) -> Result<u16, i32> {
    match shadow_port(fd)? {
        0 => {
            let (a, n) = shadow_addr(v6, local);
            kernel::bind(fd, &a[..n])?;
            shadow_port(fd)
        }
        p => Ok(p),
    }
}

/// Replaces the shadow behind `fd` with a fresh, unbound kernel socket (same number,
/// same close-on-exec flag).
fn fresh_shadow(fd: i32, v6: bool) -> Result<(), i32> {
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let cloexec = kernel::fcntl(fd, libc::F_GETFD, 0)? as i32 & libc::FD_CLOEXEC != 0;
    let ns = kernel::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 of our new socket onto the app's fd number (closing the old shadow).
    let r = unsafe {
        kernel::raw(
            libc::SYS_dup3,
            [ns as i64, fd as i64, flags as i64, 0, 0, 0],
        )
    };
    let _ = kernel::close(ns);
    if r < 0 {
        return Err(-r as i32);
    }
    Ok(())
}

/// The port the kernel gave the shadow.
fn shadow_port(fd: i32) -> Result<u16, i32> {
    shadow_local(fd).map(|a| a.port())
}

/// The shadow's local address (IPv4 also when v4-mapped).
fn shadow_local(fd: i32) -> Result<SocketAddr, i32> {
    let mut buf = [0u8; 128];
    let n = kernel::getsockname(fd, &mut buf)?;
    sockaddr::parse(&buf[..n])
}

fn bind(fd: i32, addr: i64, len: usize) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    // SAFETY: the app passed (addr, len) to bind(2).
    let buf = match unsafe { appmem::slice(addr, len) } {
        Ok(b) => b,
        Err(x) => return err(x),
    };
    // The shadow's bind reserves the port in the kernel and gives Linux's errors.
    if let Err(x) = kernel::bind(fd, buf) {
        return err(x);
    }
    let local = match sockaddr::parse(buf) {
        Ok(a) if a.ip().is_unspecified() || e.is_own_addr(a.ip()) => a,
        // Loopback on: the stack carries 127/8 between this process's sockets (not ::1).
        Ok(a @ SocketAddr::V4(v4)) if v4.ip().is_loopback() && e.loopback_on() => a,
        Ok(a) if a.ip().is_loopback() => {
            release_to_kernel(&mut e, fd, Counter::KernelLoopback);
            return 0;
        }
        _ => {
            release_to_kernel(&mut e, fd, Counter::KernelRoute);
            return 0;
        }
    };
    if s.kind == Kind::UdpFresh {
        let port = match shadow_port(fd) {
            Ok(p) => p,
            Err(x) => return err(x),
        };
        let bound = SocketAddr::new(local.ip(), port);
        if let Err(why) = make_udp(&mut e, fd, bound) {
            release_to_kernel(&mut e, fd, why);
        }
    }
    0
}

/// The XDP port map entry a socket bound to `local` needs: none on 127/8, which no
/// frame from outside reaches.
fn claim_for(t: Transport, local: SocketAddr) -> Option<(Transport, u16)> {
    (!local.ip().is_loopback()).then_some((t, local.port()))
}

/// Turns a fresh UDP socket into a fast-path one bound to `local`. `::` takes IPv6
/// (and, without IPV6_V6ONLY, IPv4 too: a dual-stack stack socket) when the stack
/// has IPv6 addresses; without them a dual-stack socket takes IPv4 alone, as before
/// IPv6 was on the fast path, and an IPv6-only one is the kernel's.
fn make_udp(e: &mut Engine, fd: i32, local: SocketAddr) -> Result<(), Counter> {
    let v6 = e.fds.get(fd).is_some_and(|s| s.v6);
    let mut dual = false;
    let local = match local {
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            let only = v6only(fd, v6);
            if !e.has_ipv6() && only {
                return Err(Counter::KernelRoute);
            }
            dual = !only && e.has_ipv6();
            if e.has_ipv6() {
                local
            } else {
                sockaddr::any(false, a.port())
            }
        }
        SocketAddr::V6(_) if !e.has_ipv6() => return Err(Counter::KernelRoute),
        _ => local,
    };
    let claim = claim_for(Transport::Udp, local);
    e.claim_entry(claim).map_err(|_| Counter::KernelResources)?;
    let h = match e.iface.udp.open() {
        Ok(h) => h,
        Err(_) => {
            e.unclaim_entry(claim);
            return Err(Counter::KernelResources);
        }
    };
    let tos = e.fds.get(fd).map_or(0, |s| s.opts.tos);
    if (dual && e.iface.udp.set_dual_stack(h, true).is_err())
        || e.iface.udp.set_tos(h, tos).is_err()
        || e.iface.udp.bind(h, local).is_err()
    {
        let _ = e.iface.udp.close(h);
        e.unclaim_entry(claim);
        return Err(Counter::KernelResources);
    }
    // Host mode: other fastnet processes' datagrams to this port come to us.
    e.host_register(Transport::Udp, local);
    e.bind_handle(h, fd);
    let s = e.fds.get_mut(fd).expect("ours");
    s.kind = Kind::Udp(h);
    s.claimed = claim;
    super::readiness::sync_epolls(e, fd, Kind::UdpFresh, false);
    Ok(())
}

fn listen(fd: i32, backlog: i32) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    match s.kind {
        Kind::TcpFresh => {}
        Kind::TcpListener(_) => return res(kernel::listen(fd, backlog).map(|_| 0)),
        _ => return err(libc::EINVAL),
    }
    // Unbound: let the kernel pick the port, as listen(2) would.
    let bound = match shadow_local(fd) {
        Ok(a) if a.port() == 0 => {
            let (a, n) = shadow_addr(s.v6, sockaddr::any(s.v6, 0));
            if let Err(x) = kernel::bind(fd, &a[..n]) {
                return err(x);
            }
            match shadow_local(fd) {
                Ok(a) => a,
                Err(x) => return err(x),
            }
        }
        Ok(a) => a,
        Err(x) => return err(x),
    };
    let Some((local, also)) = e.listen_addrs(bound, v6only(fd, s.v6)) else {
        release_to_kernel(&mut e, fd, Counter::KernelRoute);
        return res(kernel::listen(fd, backlog).map(|_| 0));
    };
    if let Some(h) = reuseport_twin_of(&e, fd, local) {
        // The kernel let the shadow bind beside our listener's: both asked for
        // SO_REUSEPORT (nginx's `listen ... reuseport` opens one per worker in its
        // master). One accept queue in this stack; a worker that uses either listens
        // in its own stack and joins the port's listener group.
        if let Err(x) = kernel::listen(fd, backlog) {
            return err(x);
        }
        e.add_listener_twin(fd, h);
        super::readiness::sync_epolls(&mut e, fd, Kind::TcpFresh, false);
        debug(format_args!(
            "fd {fd}: listening on {local} (fast path, SO_REUSEPORT: another fd of its listener)"
        ));
        return 0;
    }
    let claim = claim_for(Transport::Tcp, local);
    // Claim before the shadow listens: no SYN may reach the kernel socket first.
    if e.claim_entry(claim).is_err() {
        release_to_kernel(&mut e, fd, Counter::KernelResources);
        return res(kernel::listen(fd, backlog).map(|_| 0));
    }
    if let Err(x) = kernel::listen(fd, backlog) {
        e.unclaim_entry(claim);
        return err(x);
    }
    let backlog = backlog.clamp(1, 65535) as usize;
    match e.listen_on(local, &also, backlog, s.opts) {
        Ok(h) => {
            // Host mode: other fastnet processes' connections to this port on
            // loopback come to our stack.
            e.host_register(Transport::Tcp, local);
            e.bind_handle(h, fd);
            let s = e.fds.get_mut(fd).expect("ours");
            s.kind = Kind::TcpListener(h);
            s.claimed = claim;
            super::readiness::sync_epolls(&mut e, fd, Kind::TcpFresh, false);
            debug(format_args!("fd {fd}: listening on {local} (fast path)"));
            0
        }
        Err(_) => {
            e.unclaim_entry(claim);
            release_to_kernel(&mut e, fd, Counter::KernelResources);
            0
        }
    }
}

/// The listener of this stack on `local` when `fd` asked for SO_REUSEPORT (its shadow
/// could bind to the port only because our listener's shadow asked for it too).
fn reuseport_twin_of(
    e: &Engine,
    fd: i32,
    local: std::net::SocketAddr,
) -> Option<stack::socket::SocketHandle> {
    let on = kernel::getsockopt::<i32>(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT).ok()?;
    (on != 0).then(|| e.listener_on(local)).flatten()
}

fn accept(fd: i32, addr: i64, lenp: i64, flags: i32) -> i64 {
    let e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    let Kind::TcpListener(lh) = s.kind else {
        return err(libc::EINVAL);
    };
    drop(e);
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return err(libc::EINVAL);
    }
    let r = block_on(
        fd,
        lh,
        s.nonblocking,
        Deadline::after(s.rcvtimeo),
        libc::EAGAIN,
        Some(fd),
        |e| {
            match e.iface.tcp.accept(lh) {
                Ok(h) => return Attempt::Done(Ok(Accepted::Fast(h))),
                Err(Error::WouldBlock) => {}
                Err(x) => return Attempt::Done(Err(x.errno())),
            }
            // A connection that reached the kernel (loopback, other interfaces).
            let mut buf = [0u8; 128];
            match kernel::accept4(fd, &mut buf, flags) {
                Ok((cfd, n)) => Attempt::Done(Ok(Accepted::Kernel(cfd, buf, n))),
                Err(libc::EAGAIN) => Attempt::Wait,
                Err(x) => Attempt::Done(Err(x)),
            }
        },
    );
    match r {
        Ok(Accepted::Kernel(cfd, buf, n)) => {
            if addr != 0 && lenp != 0 {
                // SAFETY: the app passed (addr, lenp) to accept(2).
                let r = unsafe {
                    appmem::read::<u32>(lenp).and_then(|cap| {
                        let out = appmem::slice_mut(addr, (cap as usize).min(n))?;
                        let k = out.len();
                        out.copy_from_slice(&buf[..k]);
                        appmem::write::<u32>(lenp, n as u32)
                    })
                };
                if let Err(x) = r {
                    return err(x);
                }
            }
            cfd as i64
        }
        Ok(Accepted::Fast(h)) => adopt_accepted(h, s.v6, flags, addr, lenp, s.opts),
        Err(x) => err(x),
    }
}

enum Accepted {
    Fast(stack::socket::SocketHandle),
    Kernel(i32, [u8; 128], usize),
}

/// Gives an accepted fast-path connection an fd: a fresh unconnected kernel socket
/// holds the number.
fn adopt_accepted(
    h: stack::socket::SocketHandle,
    v6: bool,
    flags: i32,
    addr: i64,
    lenp: i64,
    opts: SocketOptions,
) -> i64 {
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let cfd = kernel::socket(
        domain,
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | (flags & libc::SOCK_CLOEXEC),
        0,
    );
    let mut e = engine();
    let cfd = match cfd {
        Ok(f) => f,
        Err(x) => {
            let _ = e.iface.tcp.abort(h);
            return err(x);
        }
    };
    let peer = e.iface.tcp.peer_addr(h).ok();
    // The connection keeps its port steered to us even after the listener closes.
    let local = e.iface.tcp.local_addr(h).unwrap_or(sockaddr::any(false, 0));
    let claimed = claim_for(Transport::Tcp, local).filter(|&(t, p)| e.claim(t, p).is_ok());
    if let Some(stale) = e.fds.remove(cfd) {
        e.close_socket(stale);
    }
    let s = FastSocket {
        kind: Kind::TcpStream(h),
        v6,
        nonblocking: flags & libc::SOCK_NONBLOCK != 0,
        rcvtimeo: None,
        sndtimeo: None,
        opts,
        keepalive_params: Default::default(),
        claimed,
        epolls: Default::default(),
        primary_fd: cfd,
        holds_port: false,
        recv_cmsgs: Default::default(),
    };
    if e.fds.insert(cfd, s).is_err() {
        let _ = e.iface.tcp.abort(h);
        if let Some((t, p)) = claimed {
            e.unclaim(t, p);
        }
        let _ = kernel::close(cfd);
        e.count(Counter::KernelResources);
        return err(libc::EMFILE);
    }
    e.bind_handle(h, cfd);
    e.pin_accepted(h);
    rewriter::filter::mark_fd(cfd, true);
    drop(e);
    if let Some(p) = peer {
        // SAFETY: the app passed (addr, lenp) to accept(2).
        if let Err(x) = unsafe { appmem::write_sockaddr(addr, lenp, p, v6) } {
            return err(x);
        }
    }
    cfd as i64
}

fn connect(fd: i32, addr: i64, len: usize) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    // SAFETY: the app passed (addr, len) to connect(2).
    let buf = match unsafe { appmem::slice(addr, len) } {
        Ok(b) => b,
        Err(x) => return err(x),
    };
    match s.kind {
        Kind::TcpStream(h) => {
            return match e.iface.tcp.state(h) {
                Ok(stack::tcp::State::SynSent) => err(libc::EALREADY),
                Ok(_) => match e.iface.tcp.take_error(h) {
                    Ok(Some(x)) => stack_err(x),
                    _ => err(libc::EISCONN),
                },
                Err(_) => err(libc::EISCONN),
            }
        }
        Kind::TcpListener(_) => return err(libc::EISCONN),
        Kind::Udp(h) => {
            return match sockaddr::parse(buf) {
                Ok(dst) => match e.iface.udp.connect(h, dst) {
                    Ok(()) => {
                        let _ = kernel::connect(fd, buf);
                        0
                    }
                    Err(x) => stack_err(x),
                },
                _ => PASSTHROUGH,
            };
        }
        Kind::TcpFresh | Kind::UdpFresh => {}
    }
    let dst = match sockaddr::parse(buf) {
        // IPv6 needs the stack's IPv6 addresses; an IPv6-only socket's v4-mapped
        // destination is the kernel's to refuse.
        Ok(d) if d.is_ipv6() && !e.has_ipv6() => {
            release_to_kernel(&mut e, fd, Counter::KernelRoute);
            return PASSTHROUGH;
        }
        Ok(d) if d.is_ipv4() && v6only(fd, s.v6) => {
            release_to_kernel(&mut e, fd, Counter::KernelRoute);
            return PASSTHROUGH;
        }
        // A link-local peer on another interface.
        Ok(SocketAddr::V6(d)) if d.scope_id() != 0 && d.scope_id() != e.dev.ifindex => {
            release_to_kernel(&mut e, fd, Counter::KernelRoute);
            return PASSTHROUGH;
        }
        Ok(d) => d,
        Err(_) => {
            release_to_kernel(&mut e, fd, Counter::KernelRoute);
            return PASSTHROUGH;
        }
    };
    // This host (127/8, our own address): the stack's only when a socket of this
    // process takes the destination; otherwise another program may be listening.
    let mut to_peer = false;
    // This host over IPv6 (::1, our own IPv6 address): the kernel's (no IPv6 loopback
    // in the stack yet).
    if dst.is_ipv6() && e.is_host_addr(dst.ip()) {
        release_to_kernel(&mut e, fd, Counter::KernelLoopback);
        return PASSTHROUGH;
    }
    let src_ip = if e.is_host_addr(dst.ip()) {
        let ours = e.loopback_on()
            && if s.kind == Kind::UdpFresh {
                e.iface.udp.has_receiver(dst)
            } else {
                e.iface.tcp.has_listener(dst)
            };
        // Host mode: another fastnet process serves that port on loopback.
        let t = if s.kind == Kind::UdpFresh {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        to_peer = !ours && e.host_peer(t, dst);
        if !ours && !to_peer {
            release_to_kernel(&mut e, fd, Counter::KernelLoopback);
            return PASSTHROUGH;
        }
        e.host_source(dst.ip())
    } else {
        let Some(route) = e.dev.routes_to(dst.ip()) else {
            release_to_kernel(&mut e, fd, Counter::KernelRoute);
            return PASSTHROUGH;
        };
        match route.gateway {
            Some(IpAddr::V4(gw)) => e.iface.set_gateway(Some(gw)),
            Some(IpAddr::V6(gw)) => e.iface.set_ipv6_gateway(Some(gw)),
            None => {}
        }
        match e.source_for(dst.ip(), route.pref_src) {
            Some(ip) => ip,
            None => {
                release_to_kernel(&mut e, fd, Counter::KernelRoute);
                return PASSTHROUGH;
            }
        }
    };
    let at = |port| SocketAddr::new(src_ip, port);
    // Reserve the local port in the kernel: bind the shadow to our address.
    let app_bound = matches!(shadow_port(fd), Ok(p) if p != 0);
    let mut port = match bound_port(fd, s.v6, at(0)) {
        Ok(p) => p,
        Err(x) => return err(x),
    };
    if s.kind == Kind::UdpFresh {
        if let Err(why) = make_udp(&mut e, fd, at(port)) {
            release_to_kernel(&mut e, fd, why);
            return PASSTHROUGH;
        }
        drop(e);
        return connect(fd, addr, len);
    }
    let claim_of = |port| claim_for(Transport::Tcp, at(port));
    let mut tries = 0;
    let h = loop {
        if e.claim_entry(claim_of(port)).is_err() {
            release_to_kernel(&mut e, fd, Counter::KernelResources);
            return PASSTHROUGH;
        }
        match e.iface.tcp.connect_with(at(port), dst, s.opts) {
            Ok(h) => break h,
            // The kernel handed out a port whose last connection to this peer the stack
            // is still finishing (TIME-WAIT): take a fresh shadow and another port.
            Err(Error::AddrInUse) if tries < 8 && !app_bound => {
                e.unclaim_entry(claim_of(port));
                tries += 1;
                port = match fresh_shadow(fd, s.v6).and_then(|_| bound_port(fd, s.v6, at(0))) {
                    Ok(p) => p,
                    Err(x) => return err(x),
                };
            }
            // The stack's socket pool is full: the connection is the kernel's, as it
            // would be without us (counted, never an error the kernel would not give).
            Err(Error::NoBufferSpace | Error::OutOfMemory) => {
                e.unclaim_entry(claim_of(port));
                release_to_kernel(&mut e, fd, Counter::KernelResources);
                return PASSTHROUGH;
            }
            Err(x) => {
                e.unclaim_entry(claim_of(port));
                return stack_err(x);
            }
        }
    };
    let local = at(port);
    if e.is_host_addr(dst.ip()) {
        e.count(if to_peer {
            Counter::LoopbackHostConnections
        } else {
            Counter::LoopbackConnections
        });
    }
    if local.ip().is_loopback() {
        // Host mode: the peer's frames to this port come to our inbox.
        e.host_register(Transport::Tcp, local);
    }
    e.bind_handle(h, fd);
    if claim_of(port).is_some() {
        e.pin_connecting(h, local, dst);
    }
    debug(format_args!(
        "fd {fd}: connecting {local} -> {dst} (fast path)"
    ));
    {
        let sm = e.fds.get_mut(fd).expect("ours");
        sm.kind = Kind::TcpStream(h);
        sm.claimed = claim_of(port);
        sm.holds_port = true;
    }
    super::readiness::sync_epolls(&mut e, fd, Kind::TcpFresh, false);
    e.drive();
    drop(e);
    if s.nonblocking {
        return err(libc::EINPROGRESS);
    }
    let r = block_on(
        fd,
        h,
        false,
        Deadline::after(s.sndtimeo),
        libc::EINPROGRESS,
        None,
        |e| match e.iface.tcp.state(h) {
            Ok(stack::tcp::State::SynSent) | Ok(stack::tcp::State::SynReceived) => Attempt::Wait,
            Ok(_) => match e.iface.tcp.take_error(h) {
                Ok(Some(x)) => Attempt::Done(Err(x.errno())),
                _ => Attempt::Done(Ok(())),
            },
            Err(_) => Attempt::Done(Err(libc::ECONNREFUSED)),
        },
    );
    res(r.map(|_| 0))
}

fn close(fd: i32) -> i64 {
    let mut e = engine();
    if process::is_internal(&e, fd) {
        // Daemons close every fd they did not open; the shim's stay open.
        return 0;
    }
    if let Some(set) = e.epolls.remove(&fd) {
        // An app epoll: our waker goes with it.
        let _ = kernel::close(set.waker);
        rewriter::filter::mark_fd(fd, false);
        drop(e);
        return res(kernel::close(fd).map(|_| 0));
    }
    if e.close_away(fd) {
        // Its socket lives in another member's stack: this process only lets go.
        rewriter::filter::mark_fd(fd, false);
        drop(e);
        return res(kernel::close(fd).map(|_| 0));
    }
    if let Some(s) = e.fds.remove(fd) {
        if e.is_tethered(&s) {
            // Closed in the kernel first: the tether then tells whether another
            // process still names the connection.
            rewriter::filter::mark_fd(fd, false);
            let r = kernel::close(fd);
            e.close_or_detach(s);
            e.drive();
            return res(r.map(|_| 0));
        }
        if let Kind::TcpStream(h) = s.kind {
            if let Ok(i) = e.iface.tcp.tcp_info(h) {
                debug(format_args!(
                    "fd {fd}: closed ({:?}); srtt {} us, rttvar {} us, {} segments sent again",
                    i.state,
                    i.srtt.micros(),
                    i.rttvar.micros(),
                    i.total_retrans
                ));
            }
        }
        let held = if s.holds_port && matches!(s.kind, Kind::TcpStream(_)) {
            kernel::fcntl(fd, libc::F_DUPFD_CLOEXEC, kernel::HIGH_FD_FLOOR as i64)
                .map_or(-1, |f| f as i32)
        } else {
            -1
        };
        e.close_socket_holding(s, held);
        e.drive();
    }
    rewriter::filter::mark_fd(fd, false);
    drop(e);
    res(kernel::close(fd).map(|_| 0))
}

/// At exit the kernel closes every fd a process still has, and closing a TCP socket
/// sends its FIN (a RST with unread data): the fast path's sockets get the same, before
/// `at_exit` lingers until the FINs are acknowledged. Left open (`wrk -d` exits with
/// its connections open), a peer that had closed first waited in FIN-WAIT-2 for a FIN
/// that never came, and met the next connection from the same port with a challenge
/// ACK: a RST and a 1 s SYN retransmission. The linger then also waits for the peers'
/// FINs (`Engine::exiting`). Only the process that drives the stack closes them; the
/// fds themselves stay the kernel's to close.
pub fn close_all_at_exit() {
    if !active() || !super::family::drives() {
        return;
    }
    let mut e = engine();
    e.exiting = true;
    let fds: Vec<i32> = e.fds.fds().collect();
    for fd in fds {
        let tethered = e.fds.get(fd).is_some_and(|s| e.is_tethered(s));
        if tethered {
            // Another process may still name it: the tether tells, once ours is shut.
            let _ = kernel::close(fd);
        }
        if let Some(s) = e.fds.remove(fd) {
            if tethered {
                e.close_or_detach(s);
            } else {
                e.close_socket(s);
            }
        }
        rewriter::filter::mark_fd(fd, false);
    }
    e.drive();
}

/// Binds a fresh UDP socket the way Linux's autobind does (any address, ephemeral
/// port) and makes it a fast-path socket.
pub fn udp_autobind(fd: i32) -> Result<(), i32> {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return Err(libc::EBADF);
    };
    if s.kind != Kind::UdpFresh {
        return Ok(());
    }
    let port = match shadow_port(fd)? {
        0 => {
            let (a, n) = shadow_addr(s.v6, sockaddr::any(s.v6, 0));
            kernel::bind(fd, &a[..n])?;
            shadow_port(fd)?
        }
        p => p,
    };
    let local = sockaddr::any(s.v6, port);
    make_udp(&mut e, fd, local).map_err(|why| {
        release_to_kernel(&mut e, fd, why);
        libc::EAGAIN
    })
}
