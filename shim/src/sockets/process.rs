//! The process-wide engine, its start-up, and how a thread sleeps until a socket
//! changes.

use super::config::{Config, LogLevel, XdpMode};
use super::engine::{Engine, Waiter};
use super::kernel::{self, HIGH_FD_FLOOR};
use super::lock::{FutexGuard, FutexLock};
use super::log::log;
use super::netdev::FastIface;
use parking_lot::Mutex;
use stack::socket::SocketHandle;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ENGINE: OnceLock<FutexLock<Engine>> = OnceLock::new();
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set when the fast path stopped (or never started) although an interface was named:
/// new sockets use the kernel from then on.
static FALLEN_BACK: AtomicBool = AtomicBool::new(false);
/// The counters segment of a process whose fast path never started: it carries the
/// reason for `fastnet stat` ("kernel: ...").
static KERNEL_ONLY_STATS: Mutex<Option<fastnet_stats::StatsSegment>> = Mutex::new(None);

/// True when the fast path runs in this process.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// True when the fast path stopped and new sockets go to the kernel.
pub fn fallen_back() -> bool {
    FALLEN_BACK.load(Ordering::Acquire)
}

/// Sends every new socket to the kernel from now on, says why in the log, and keeps
/// the reason for `fastnet stat`. Sockets already on the fast path stay there.
pub fn fall_back(e: &Engine, reason: &str) {
    if FALLEN_BACK.swap(true, Ordering::AcqRel) {
        return;
    }
    log(
        LogLevel::Warn,
        format_args!("kernel: {reason}; new sockets use the kernel"),
    );
    if let Some(seg) = &e.stats {
        seg.set_kernel_reason(reason);
    }
}

/// The engine, locked; only call when [`active`]. While the guard lives, signals
/// for this thread are deferred (see `signals`).
pub fn engine() -> EngineGuard {
    super::signals::enter();
    EngineGuard(std::mem::ManuallyDrop::new(
        ENGINE.get().expect("engine initialised").lock(),
    ))
}

/// The locked engine; leaving it raises the signals that arrived meanwhile.
pub struct EngineGuard(std::mem::ManuallyDrop<FutexGuard<'static, Engine>>);

impl std::ops::Deref for EngineGuard {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.0
    }
}

impl std::ops::DerefMut for EngineGuard {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.0
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        let wakes = self.0.take_wakes();
        let ring = DRIVER_ASLEEP.load(Ordering::Relaxed) && driver_plan_stale(&self.0);
        // SAFETY: dropped exactly once, here; the guard is not used afterwards.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.0) };
        wakes.signal_all();
        if ring {
            wake_sleeping_driver();
        }
        super::signals::leave();
    }
}

/// The background driver's wake-up eventfd (-1: no driver).
static DRIVER_BELL: AtomicI32 = AtomicI32::new(-1);
/// True while the driver sleeps until a frame, a message or its next timer, planned
/// from the engine as it was: a thread that used the engine since (a send that armed
/// a retransmission timer, a connect) rings the bell so the driver plans again.
static DRIVER_ASLEEP: AtomicBool = AtomicBool::new(false);

/// When the sleeping driver means to wake (engine clock, µs; u64::MAX: never).
static DRIVER_DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);

/// True when what an app thread did to the engine needs the driver before its planned
/// wake-up: a timer now due earlier (a send armed a retransmission), frames queued
/// without a kick, a next hop to resolve. Reading the app's data or polling does not.
fn driver_plan_stale(e: &Engine) -> bool {
    e.iface
        .poll_at()
        .is_some_and(|t| t.micros() < DRIVER_DEADLINE.load(Ordering::Relaxed))
        || e.dev.tx_unkicked() > 0
        || e.has_missing_neighbors()
}

/// Wakes the driver from a sleep planned on an older engine.
fn wake_sleeping_driver() {
    if DRIVER_ASLEEP.swap(false, Ordering::AcqRel) {
        let bell = DRIVER_BELL.load(Ordering::Acquire);
        if bell >= 0 {
            kernel::eventfd_signal(bell);
        }
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();
static START: parking_lot::Once = parking_lot::Once::new();

/// Reads the configuration at load. The fast path itself starts on the first socket
/// the app makes (`start`), so wrappers (`timeout`, shells) that never open one
/// leave the interface to the program that does.
pub fn init() {
    let (config, errors) = Config::from_env();
    let log_fd = match &config.log_file {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .and_then(|f| {
                use std::os::fd::IntoRawFd;
                kernel::move_high(f.into_raw_fd(), HIGH_FD_FLOOR).ok()
            })
            .unwrap_or(2),
        None => 2,
    };
    super::log::set(config.log, log_fd);
    if log_fd != 2 {
        add_internal(log_fd);
    }
    for e in &errors {
        log(LogLevel::Warn, format_args!("{e}"));
    }
    if config.iface.is_none() && config.loopback == super::config::LoopbackMode::Off {
        log(
            LogLevel::Info,
            format_args!("no fast-path interface named (FASTNET_IFACE / --iface): every socket stays on the kernel"),
        );
        return;
    }
    let _ = CONFIG.set(config);
    super::family::remember_pid();
    // SAFETY: registering plain functions; they only touch our own statics.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    rewriter::filter::handle_syscall(libc::SYS_socket as u32, true);
    rewriter::filter::handle_syscall(libc::SYS_rt_sigaction as u32, true);
    for nr in PRIVILEGE_DROPS {
        rewriter::filter::handle_syscall(nr as u32, true);
    }
}

/// Brings the fast path up (once per process); true when it runs.
pub fn start() -> bool {
    start_then(true)
}

/// Calls that drop root (or capabilities): the fast path needs root to start, so a
/// process about to drop it starts it first (see [`start_before_dropping_root`]).
pub const PRIVILEGE_DROPS: [i64; 4] = [
    libc::SYS_setuid,
    libc::SYS_setreuid,
    libc::SYS_setresuid,
    libc::SYS_capset,
];

/// True when [`start_before_dropping_root`] applies: the fast path is configured and
/// not tried yet, in a root process that is not a vfork child and has one thread.
pub fn may_start_before_dropping_root() -> bool {
    CONFIG.get().is_some()
        && START.state() == parking_lot::OnceState::New
        && kernel::getpid() == super::family::pid()
        && kernel::geteuid() == 0
        && kernel::threads_of_this_process() == Some(1)
}

/// A process that has not started the fast path and is about to drop root (memcached
/// becomes `nobody` before it opens its first socket, and with `-d` after it forked)
/// starts it now, while it may: the sockets it opens later use what was opened as root
/// (AF_XDP sockets, the program and its maps through their fds: no privilege needed).
/// Only a single-threaded process, whose drop changes only its own thread's
/// credentials: the background driver is spawned after the drop (`then`, run after
/// the call), so it holds no root the app gave up. Returns whether it started.
pub fn start_before_dropping_root() -> bool {
    log(
        LogLevel::Info,
        format_args!("starting the fast path before the app drops root"),
    );
    if !start_then(false) {
        return false;
    }
    // A daemon forks after it dropped root (memcached -d): its child joins with
    // AF_XDP sockets made now, while making them is allowed.
    engine().dev.prepare_spares();
    true
}

fn start_then(spawn_driver_now: bool) -> bool {
    START.call_once(|| {
        let Some(config) = CONFIG.get().cloned() else {
            return;
        };
        let busy = config.poll == super::config::PollMode::Busy;
        let attach = match config.xdp_mode {
            XdpMode::Auto => None,
            XdpMode::Native => Some(xdp_backend::AttachMode::Native),
            XdpMode::Generic => Some(xdp_backend::AttachMode::Generic),
        };
        let dev = match &config.iface {
            Some(name) => match with_fd_floor(|| FastIface::open(name, busy, attach)) {
                Ok(d) => d,
                Err(e) => {
                    let reason = e.to_string();
                    log(
                        LogLevel::Warn,
                        format_args!(
                            "kernel: fast path off: {reason}; every socket uses the kernel"
                        ),
                    );
                    FALLEN_BACK.store(true, Ordering::Release);
                    if let Ok(seg) =
                        fastnet_stats::StatsSegment::create(kernel::getpid() as u32, name)
                    {
                        seg.set_kernel_reason(&reason);
                        *KERNEL_ONLY_STATS.lock() = Some(seg);
                    }
                    return;
                }
            },
            // FASTNET_LOOPBACK=process with no interface: the stack runs for loopback.
            None => FastIface::loopback_only(),
        };
        let mut dev = dev;
        if config.loopback == super::config::LoopbackMode::Host {
            match super::hostlo::HostLoop::open(kernel::getpid() as u32) {
                Ok(h) => dev.host = Some(h),
                Err(e) => log(
                    LogLevel::Warn,
                    format_args!("host loopback off (process loopback still on): {e}"),
                ),
            }
        }
        let name = dev.name.clone();
        let stats = fastnet_stats::StatsSegment::create(kernel::getpid() as u32, &name).ok();
        log(
            LogLevel::Info,
            format_args!(
                "fast path on {name} ({}/{}), mtu {}, queues {}",
                dev.addr,
                dev.prefix_len,
                dev.mtu,
                dev.queues().map_or("none".to_string(), |q| q.describe())
            ),
        );
        if !super::family::found() {
            log(
                LogLevel::Warn,
                format_args!("fast path off: cannot map the family page"),
            );
            return;
        }
        let mut engine = Engine::new(config, dev, stats);
        engine.open_control();
        match super::mailbox::Mailbox::open(0) {
            Ok(m) => engine.family = Some(super::handoff::Membership::new(0, m)),
            Err(e) => log(
                LogLevel::Warn,
                format_args!(
                    "no family mailbox (errno {e}): sockets this process shares with \
                     children it forks stay with it"
                ),
            ),
        }
        for fd in engine.dev.owned_fds() {
            rewriter::filter::mark_fd(fd, true);
        }
        if ENGINE.set(FutexLock::new(engine)).is_ok() {
            ACTIVE.store(true, Ordering::Release);
            if spawn_driver_now {
                spawn_driver();
            }
        }
    });
    active()
}

/// At exit: deliver what the app wrote (bounded by FASTNET_LINGER, as the kernel
/// would after close()), print the counters if asked, remove the counters segment.
pub fn at_exit() {
    if !active() {
        KERNEL_ONLY_STATS.lock().take();
        return;
    }
    if !super::family::drives() {
        // Removes this process's own counters segment, if it made one.
        engine().stats.take();
        return;
    }
    let mut e = engine();
    let deadline = Instant::now() + Duration::from_millis(e.config.linger_ms as u64);
    e.drive();
    if e.config.handoff_at_exit {
        // What the app wrote goes on in kernel sockets; the process need not wait.
        e.hand_closing_to_kernel();
    }
    while e.has_unsent() && Instant::now() < deadline {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; 8];
        let mut n = 0;
        for fd in e.dev.poll_fds().take(8) {
            fds[n].fd = fd;
            n += 1;
        }
        let wait = e
            .timer_timeout()
            .unwrap_or(Duration::from_millis(10))
            .min(Duration::from_millis(10));
        drop(e);
        let _ = kernel::poll(&mut fds[..n], wait.as_millis().max(1) as i32);
        e = engine();
        e.drive();
        // Other members' requests, and what a closed group listener still holds.
        e.serve_mailbox();
        e.tend_family(true);
    }
    if e.has_unsent() {
        log(
            LogLevel::Warn,
            format_args!(
                "exit: unsent data dropped after FASTNET_LINGER={} ms",
                e.config.linger_ms
            ),
        );
    }
    if e.config.stats_at_exit {
        let report = e.stats_report();
        log(LogLevel::Off, format_args!("{report}"));
    }
    if let Some(h) = e.dev.host.take() {
        // Our ports on loopback go back to the kernel's; peers stop finding us.
        h.close();
    }
    if let Some(slot) = super::family::slot().filter(|&s| s != 0) {
        // A member's listener-group places and flows go with it, and its slot is free.
        e.dev.forget_slot(slot);
        super::family::release_slot(slot);
        // Its counters outlive it in the founder's (a forking server's totals).
        e.publish_stats_now();
        let founder = super::family::member(0).filter(|&p| p != super::family::pid());
        if let (Some(own), Some(pid)) = (&e.stats, founder) {
            let path = fastnet_stats::segment_path(pid as u32);
            if let Ok(into) = fastnet_stats::StatsSegment::open_to_fold(&path) {
                into.fold(own);
            }
        }
    }
    e.stats.take();
}

// Fork with the engine lock held by another thread would leave the child's copy
// locked forever: hold it across fork in the forking thread instead. The child may use
// any connection it inherits, so each gets its tether first (see `handoff`).
extern "C" fn fork_prepare() {
    // The app called fork: what these handlers call (libc, std) must reach the kernel,
    // not come back to the socket layer whose lock they hold.
    let _inside = rewriter::in_shim();
    if let Some(m) = ENGINE.get() {
        let mut g = m.lock();
        if super::family::drives() {
            g.tether_connections();
            g.dev.prepare_spares();
        }
        std::mem::forget(g);
    }
}

extern "C" fn fork_parent() {
    let _inside = rewriter::in_shim();
    if let Some(m) = ENGINE.get() {
        // SAFETY: locked by fork_prepare in this thread, guard forgotten.
        unsafe { m.force_unlock() };
        m.lock().dev.drop_spares();
    }
}

extern "C" fn fork_child() {
    let _inside = rewriter::in_shim();
    super::family::after_fork_child();
    if let Some(m) = ENGINE.get() {
        // SAFETY: the child's only thread; whoever held the lock in the parent (this
        // thread, through fork_prepare's forgotten guard) is gone with the fork.
        unsafe { m.reset_in_child() };
        // The child's copy of the engine is the parent's memory: its tethers and
        // mailbox are the parent's to hold. (Its copy of the XDP link stays while it
        // names an inherited socket; see `calls::not_member`.)
        let mut e = m.lock();
        e.forget_parents_family();
        drop(e);
        forget_parents_wake_fd();
    }
}

/// Makes this forked child a member of its family with a stack of its own (see
/// `family`): its own AF_XDP sockets in a free slot, a fresh engine, and every
/// fast-path fd it inherited marked as living elsewhere until it uses it. False when
/// it cannot (no free slot, the interface refused): its inherited fast-path sockets
/// then fail as they would on a kernel with the connection gone.
pub fn join_family() -> bool {
    if ENGINE.get().is_none() {
        return false;
    }
    let mut g = engine();
    if super::family::drives() {
        return true;
    }
    let Some(parent) = super::family::origin() else {
        return false;
    };
    let Some((slot, dead)) = super::family::take_slot() else {
        log(
            LogLevel::Warn,
            format_args!(
                "cannot join the fast path: all {} family slots are taken",
                super::family::MAX_MEMBERS
            ),
        );
        return false;
    };
    if dead.is_some() {
        g.dev.forget_slot(slot);
    }
    let joined = with_fd_floor(|| g.dev.join(slot))
        .map_err(|e| e.to_string())
        .and_then(|dev| {
            let mailbox =
                super::mailbox::Mailbox::open(slot).map_err(|e| format!("mailbox (errno {e})"))?;
            Ok((dev, mailbox))
        });
    let (dev, mailbox) = match joined {
        Ok(j) => j,
        Err(why) => {
            super::family::release_slot(slot);
            log(
                LogLevel::Warn,
                format_args!("cannot join the fast path: {why}"),
            );
            return false;
        }
    };
    let pid = kernel::getpid() as u32;
    let stats = fastnet_stats::StatsSegment::create(pid, &dev.name).ok();
    let mut fresh = Engine::new(g.config.clone(), dev, stats);
    fresh.family = Some(super::handoff::Membership::new(slot, mailbox));
    fresh.inherit_fds(&g, parent);
    fresh.epolls = std::mem::take(&mut g.epolls);
    // The parent's control socket is named after the parent: this process has its own.
    if let Some(c) = g.control.take() {
        c.close();
    }
    fresh.open_control();
    for fd in fresh.dev.owned_fds() {
        rewriter::filter::mark_fd(fd, true);
    }
    fresh.count(fastnet_stats::Counter::FamilyJoins);
    // The copy of the parent's engine is never driven nor dropped: dropping it would
    // unmap the UMEM this process's own sockets share.
    std::mem::forget(std::mem::replace(&mut *g, fresh));
    super::family::set_slot(slot);
    drop(g);
    log(
        LogLevel::Info,
        format_args!("joined the fast path as member {slot} of the family of member {parent}"),
    );
    spawn_driver();
    true
}

/// Starts the background driver: when no app thread has driven the stack for a
/// millisecond (the app is busy computing), it runs timers, ACKs and receives. It
/// blocks every signal, so the app's handlers never run on it.
pub fn spawn_driver() {
    let mut all: libc::sigset_t = unsafe_sigset();
    let mut old: libc::sigset_t = unsafe_sigset();
    // SAFETY: sigset manipulation on local sets; the mask is restored right after.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let r = std::thread::Builder::new()
        .name("fastnet-driver".into())
        .stack_size(256 * 1024)
        .spawn(driver_loop);
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if let Err(e) = r {
        log(
            LogLevel::Warn,
            format_args!("no background driver ({e}): timers run only inside the app's calls"),
        );
    }
}

fn unsafe_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigfillset initialise it before use.
    unsafe { std::mem::zeroed() }
}

/// The driver reads the interface's change notifications every this many ticks (a
/// non-blocking read of two netlink sockets): a queue that came into use is served
/// within ~20 ms, before a client's first SYN retransmission.
const LINK_CHECK_TICKS: u32 = 20;

/// The driver looks for members of the family that died (a kill(2) probe per member),
/// for groups that changed and for handshakes to pin every this many ticks (~0.1 s).
const FAMILY_CHECK_TICKS: u32 = 100;

fn driver_loop() {
    // Everything this thread calls goes straight to the kernel.
    let _inside = rewriter::in_shim();
    let tick = Duration::from_millis(1);
    let mut ticks = 0u32;
    let mut family_ticks = 0u32;
    let Some(m) = ENGINE.get() else { return };
    let bell = thread_wake_fd().unwrap_or(-1);
    DRIVER_BELL.store(bell, Ordering::Release);
    let mut mailbox = -1;
    let mut control = -1;
    // What to sleep on: while the stack is busy (a thread drove it within the last
    // tick, frames wait) the driver ticks every millisecond, woken early by mail;
    // once it is idle, it sleeps until a frame, a message, a link change, a thread
    // that used the engine, or the stack's next timer, and costs nothing meanwhile.
    let mut sleep = Sleep::Tick;
    let mut wait_set: Vec<libc::pollfd> = Vec::with_capacity(16);
    loop {
        let mut asked = false;
        let woke = match sleep {
            Sleep::Tick if mailbox >= 0 || control >= 0 => {
                // Mail, and requests of `fastnet handoff`, end the tick early.
                let mut p = [mailbox, control].map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                let woke = kernel::poll(&mut p, tick.as_millis() as i32).is_ok_and(|n| n > 0);
                asked = p[1].revents & libc::POLLIN != 0;
                woke
            }
            Sleep::Tick => {
                std::thread::sleep(tick);
                false
            }
            Sleep::Until(timeout_ms) => {
                let n = kernel::poll(&mut wait_set, timeout_ms).unwrap_or(0);
                DRIVER_ASLEEP.store(false, Ordering::Release);
                kernel::eventfd_reset(bell);
                n > 0
            }
        };
        if !super::family::drives() {
            return;
        }
        let Some(mut e) = m.try_lock() else {
            if woke {
                // An app thread has the stack: let it finish before asking again.
                std::thread::sleep(Duration::from_micros(100));
            }
            sleep = Sleep::Tick;
            continue;
        };
        let was_asleep = matches!(sleep, Sleep::Until(_));
        mailbox = e.family.as_ref().map_or(-1, |f| f.mailbox.fd());
        control = e.control.as_ref().map_or(-1, |c| c.fd());
        // Other members' requests and forwarded frames, closed tethers: every tick,
        // whether or not the app drives the stack itself.
        e.serve_mailbox();
        family_ticks = family_ticks.wrapping_add(1);
        if asked
            || was_asleep
            || e.pending_control.is_some()
            || family_ticks.is_multiple_of(FAMILY_CHECK_TICKS)
        {
            e.serve_control();
        }
        e.tend_family(was_asleep || family_ticks.is_multiple_of(FAMILY_CHECK_TICKS));
        if e.pump_relays() {
            e.drive();
        }
        // What the mail changed (a connection given away, one taken in, frames
        // forwarded to us) is told to the threads that wait for it.
        e.notify();
        let now = e.now().micros();
        let last = super::engine::LAST_DRIVE.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000 {
            let wakes = e.take_wakes();
            drop(e);
            wakes.signal_all();
            sleep = Sleep::Tick;
            continue;
        }
        ticks = ticks.wrapping_add(1);
        if (was_asleep || ticks.is_multiple_of(LINK_CHECK_TICKS)) && !fallen_back() {
            if let Err(reason) = e.follow_link() {
                fall_back(&e, &reason);
            }
        }
        // Frames held for a next hop the kernel has yet to give us (the stack's
        // poll_at leaves that to the host) must not wait for the app's next call.
        let due = e.dev.rx_pending() > 0
            || e.dev.tx_unkicked() > 0
            || e.iface.poll_at().is_some_and(|t| t.micros() <= now)
            || e.has_missing_neighbors();
        if due {
            e.drive();
        } else {
            // Keep `fastnet stat` current while the app sleeps.
            e.publish_stats();
        }
        sleep = plan_sleep(&e, bell, mailbox, &mut wait_set);
        if let Sleep::Until(_) = sleep {
            e.publish_stats_now();
            // Set while the engine is still ours: a thread that takes it after us
            // rings the bell.
            DRIVER_ASLEEP.store(true, Ordering::Release);
        }
        let wakes = e.take_wakes();
        drop(e);
        wakes.signal_all();
    }
}

/// How the background driver waits for its next round.
#[derive(Clone, Copy)]
enum Sleep {
    /// One tick (1 ms), or less when mail comes.
    Tick,
    /// Until an fd of the wait set is readable or this many ms (-1: no timer) pass.
    Until(i32),
}

/// The longest the driver sleeps while its family needs a periodic look (a member
/// killed with -9 is noticed within this).
const FAMILY_IDLE_MS: u64 = 100;

/// After a round: tick again while anything is under way, else sleep on the engine's
/// fds (filled into `set`) until its next timer.
fn plan_sleep(e: &Engine, bell: i32, mailbox: i32, set: &mut Vec<libc::pollfd>) -> Sleep {
    let now = e.now().micros();
    let busy = bell < 0
        || now.saturating_sub(super::engine::LAST_DRIVE.load(Ordering::Relaxed)) < 1000
        || e.dev.rx_pending() > 0
        || e.dev.tx_unkicked() > 0
        || e.has_missing_neighbors()
        // A relay moves bytes each round (a full tether is not in the wait set);
        // messages that found no room in their receiver's queue go again.
        || e
            .family
            .as_ref()
            .is_some_and(|m| m.mail_waiting() || m.mail_to_send() || m.relaying())
        // A move waits for the app's calls in flight.
        || e.pending_control.is_some();
    if busy {
        return Sleep::Tick;
    }
    let mut deadline = match e.iface.poll_at() {
        Some(at) if at.micros() <= now => return Sleep::Tick,
        Some(at) => at.micros(),
        None => u64::MAX,
    };
    let family_quiet = e.family.as_ref().is_none_or(|m| m.quiet())
        && !super::family::has_others()
        && super::family::kernel_flows() == 0;
    if !family_quiet {
        deadline = deadline.min(now + FAMILY_IDLE_MS * 1000);
    }
    DRIVER_DEADLINE.store(deadline, Ordering::Relaxed);
    let timeout_ms = match deadline {
        u64::MAX => -1,
        d => (d - now).div_ceil(1000).min(i32::MAX as u64) as i32,
    };
    set.clear();
    let control = e.control.as_ref().map_or(-1, |c| c.fd());
    let fds = [bell, mailbox, control]
        .into_iter()
        .chain(e.dev.poll_fds())
        .chain(e.dev.monitor_fds())
        .filter(|&fd| fd >= 0);
    set.extend(fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    Sleep::Until(timeout_ms)
}

/// Fds the shim made for itself outside the engine (threads' eventfds, the log).
/// A FutexLock: a forked child resets it (see `lock`).
static INTERNAL: FutexLock<Vec<i32>> = FutexLock::new(Vec::new());

fn add_internal(fd: i32) {
    INTERNAL.lock().push(fd);
    rewriter::filter::mark_fd(fd, true);
}

/// Every fd the shim owns, sorted: the app's close/close_range/dup2 leave them alone.
pub fn internal_fds_sorted(e: &Engine) -> Vec<i32> {
    let mut v = e.dev.owned_fds();
    v.extend(e.epolls.values().map(|s| s.waker));
    if let Some(m) = &e.family {
        v.extend(m.owned_fds());
    }
    v.extend(e.control.as_ref().map(|c| c.fd()));
    v.extend(INTERNAL.lock().iter().copied());
    v.sort_unstable();
    v.dedup();
    v
}

/// True when `fd` is one of the shim's own fds.
pub fn is_internal(e: &Engine, fd: i32) -> bool {
    fd >= HIGH_FD_FLOOR && internal_fds_sorted(e).binary_search(&fd).is_ok()
}

/// Runs `f` with the interface's fds (XSKs, BPF maps and program, link, netlink)
/// numbered from [`HIGH_FD_FLOOR`] up (lower when the fd limit is low), out of the
/// app's way: each is renumbered as it is made (one fcntl), which costs a forked
/// child's join a few syscalls where filling every low number first cost ~1,800.
fn with_fd_floor<T>(f: impl FnOnce() -> T) -> T {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local struct.
    let r = unsafe {
        kernel::raw(
            libc::SYS_getrlimit,
            [
                libc::RLIMIT_NOFILE as i64,
                &mut lim as *mut libc::rlimit as i64,
                0,
                0,
                0,
                0,
            ],
        )
    };
    // Leave room above the floor for what `f` opens.
    let floor = if r == 0 {
        (lim.rlim_cur.saturating_sub(128) as i32).clamp(0, HIGH_FD_FLOOR)
    } else {
        0
    };
    xdp_backend::set_fd_floor(floor);
    f()
}

thread_local! {
    /// This thread's eventfd for sleeping in blocking calls (-1 until first needed).
    static WAKE_FD: Cell<i32> = const { Cell::new(-1) };
    /// This thread's own pipe for splicing with the app's pipes (`[-1, -1]` until
    /// first needed; see `splice`).
    static SPLICE_PIPE: Cell<[i32; 2]> = const { Cell::new([-1, -1]) };
}

/// In a forked child: the forking thread's eventfd is the parent thread's too (the
/// same kernel object): a wake-up meant for one would be read away by the other's
/// reset, and a child left asleep with data to read. The child makes its own.
fn forget_parents_wake_fd() {
    // SAFETY: in the child right after fork, with one thread.
    unsafe { INTERNAL.reset_in_child() };
    // The parent's driver is not the child's: its bell is the parent's to ring.
    DRIVER_ASLEEP.store(false, Ordering::Release);
    let bell = DRIVER_BELL.swap(-1, Ordering::AcqRel);
    if bell >= 0 {
        INTERNAL.lock().retain(|&fd| fd != bell);
        rewriter::filter::mark_fd(bell, false);
        let _ = kernel::close(bell);
    }
    let old = WAKE_FD.with(|c| c.replace(-1));
    let old_pipe = SPLICE_PIPE.with(|c| c.replace([-1, -1]));
    for old in [old, old_pipe[0], old_pipe[1]] {
        if old >= 0 {
            INTERNAL.lock().retain(|&fd| fd != old);
            rewriter::filter::mark_fd(old, false);
            let _ = kernel::close(old);
        }
    }
}

pub fn thread_wake_fd() -> Result<i32, i32> {
    WAKE_FD.with(|c| {
        if c.get() >= 0 {
            return Ok(c.get());
        }
        let fd = kernel::eventfd(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let fd = kernel::move_high(fd, HIGH_FD_FLOOR)?;
        add_internal(fd);
        c.set(fd);
        Ok(fd)
    })
}

/// This thread's own nonblocking pipe, `[read end, write end]`, kept empty between
/// calls: bytes pass through it between the stack and an app's pipe, so a pipe-to-pipe
/// splice with SPLICE_F_NONBLOCK moves them without blocking whatever the app's pipe's
/// own mode (see `splice`). A forked child makes its own, as for the eventfd.
pub fn thread_pipe() -> Result<[i32; 2], i32> {
    SPLICE_PIPE.with(|c| {
        if c.get()[0] >= 0 {
            return Ok(c.get());
        }
        let [r, w] = kernel::pipe_nonblocking()?;
        let r = kernel::move_high(r, HIGH_FD_FLOOR);
        let w = kernel::move_high(w, HIGH_FD_FLOOR);
        let (r, w) = match (r, w) {
            (Ok(r), Ok(w)) => (r, w),
            (r, w) => {
                for fd in [r, w].into_iter().flatten() {
                    let _ = kernel::close(fd);
                }
                return Err(libc::EMFILE);
            }
        };
        add_internal(r);
        add_internal(w);
        c.set([r, w]);
        Ok([r, w])
    })
}

/// Busy mode (FASTNET_POLL=busy): watches the RX rings, and the stack's readiness
/// changes made by other threads (loopback), for up to `budget` instead of sleeping in
/// the kernel at once, so a reply that comes within the budget costs no sleep and
/// wake-up (iip's "unified" pattern). True when something arrived. It only tries the
/// lock, so a spinning thread never holds up the one about to answer it.
pub fn spin_for_frames(budget: Duration) -> bool {
    let start = Instant::now();
    let events = super::engine::READINESS_EVENTS.load(Ordering::Acquire);
    let Some(m) = ENGINE.get() else { return false };
    loop {
        if super::engine::READINESS_EVENTS.load(Ordering::Acquire) != events {
            return true;
        }
        if m.try_lock().is_some_and(|e| e.dev.rx_pending() > 0) {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// When a blocking call gives up.
#[derive(Clone, Copy, Debug)]
pub enum Deadline {
    Never,
    At(Instant),
}

impl Deadline {
    pub fn after(t: Option<Duration>) -> Deadline {
        match t {
            Some(d) if !d.is_zero() => Deadline::At(Instant::now() + d),
            _ => Deadline::Never,
        }
    }
}

/// Outcome of one attempt of a blocking call.
pub enum Attempt<T> {
    Done(T),
    /// Not yet: sleep until `handle` changes (or `also` becomes readable).
    Wait,
}

/// Not an errno the app ever sees: the socket a waiting call acted on left this
/// process's stack (another member of the family took it); `calls::handle` fetches
/// it back and makes the call again. Above every errno Linux has, below MAX_ERRNO.
pub const LEFT_THIS_STACK: i32 = 4000;

/// Runs `attempt` under the lock until it is done, sleeping between attempts without
/// the lock. `fd` is the app's fd naming `handle`: `LEFT_THIS_STACK` when it names
/// another socket now. `also` is a kernel fd whose readability also ends the sleep (a
/// listening shadow). Returns `-EAGAIN` for a nonblocking socket, `-ETIMEDOUT`-style
/// errors are the attempt's business; `timeout_errno` is returned when the deadline
/// passes.
pub fn block_on<T>(
    fd: i32,
    handle: SocketHandle,
    nonblocking: bool,
    deadline: Deadline,
    timeout_errno: i32,
    also: Option<i32>,
    mut attempt: impl FnMut(&mut Engine) -> Attempt<Result<T, i32>>,
) -> Result<T, i32> {
    let wake = if nonblocking { -1 } else { thread_wake_fd()? };
    // Busy mode spins once per sleep, and again after each arrival of frames.
    let mut spun = false;
    loop {
        let mut e = engine();
        e.drive_batched();
        if e.names_elsewhere(fd, handle) {
            return Err(LEFT_THIS_STACK);
        }
        if let Attempt::Done(r) = attempt(&mut e) {
            // What the call queued goes out with the app's next wait (or batch).
            e.drive_batched();
            return r;
        }
        if nonblocking {
            // The app may spin on EAGAIN without ever waiting: kick now.
            e.drive();
            return Err(libc::EAGAIN);
        }
        // About to sleep (or give up): nothing may stay unsent meanwhile.
        e.flush_tx();
        let mut timeout = e.timer_timeout();
        if let Deadline::At(t) = deadline {
            let left = t.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout_errno);
            }
            timeout = Some(timeout.map_or(left, |x| x.min(left)));
        }
        if let (false, Some(spin)) = (spun, e.spin_budget()) {
            drop(e);
            let budget = match deadline {
                Deadline::At(t) => spin.min(t.saturating_duration_since(Instant::now())),
                Deadline::Never => spin,
            };
            // Frames came: attempt again (and spin again if they were not ours).
            spun = !spin_for_frames(budget);
            continue;
        }
        spun = false;
        // Cleared under the lock before registering: a signal from an earlier wait
        // is gone, and none meant for this one can be lost.
        kernel::eventfd_reset(wake);
        e.waiters.push(Waiter {
            handle,
            eventfd: wake,
        });
        let mut fds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; 10];
        let mut n = 0;
        fds[n].fd = wake;
        n += 1;
        if let Some(fd) = also {
            fds[n].fd = fd;
            n += 1;
        }
        for fd in e.dev.poll_fds() {
            if n < fds.len() {
                fds[n].fd = fd;
                n += 1;
            }
        }
        drop(e);
        let ms = timeout.map_or(-1, |t| {
            // Round up so a timer 300 µs away does not spin with a 0 ms timeout.
            (t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
        });
        let r = kernel::poll(&mut fds[..n], ms);
        let mut e = engine();
        if let Some(i) = e
            .waiters
            .iter()
            .position(|w| w.eventfd == wake && w.handle == handle)
        {
            e.waiters.swap_remove(i);
        }
        drop(e);
        if r == Err(libc::EINTR) {
            return Err(libc::EINTR);
        }
    }
}

/// For a debugger attached to a stuck process (`gdb -p PID -batch -ex 'call
/// fastnet_debug_dump()'`): every fast-path fd of this process, its socket and its
/// readiness, and the waiters, to the log.
#[no_mangle]
pub extern "C" fn fastnet_debug_dump() {
    let _inside = rewriter::in_shim();
    let Some(m) = ENGINE.get() else { return };
    let Some(e) = m.try_lock() else {
        log(LogLevel::Off, format_args!("debug dump: engine locked"));
        return;
    };
    for fd in e.fds.fds() {
        let s = e.fds.get(fd).copied();
        log(
            LogLevel::Off,
            format_args!(
                "debug dump: fd {fd} {:?} readiness {:#x}",
                s.map(|s| s.kind),
                e.readiness_of(fd)
            ),
        );
    }
    let away: Vec<i32> = e
        .family
        .as_ref()
        .map(|f| f.away.keys().copied().collect())
        .unwrap_or_default();
    log(
        LogLevel::Off,
        format_args!("debug dump: waiters {:?} away {away:?}", e.waiters),
    );
}

/// Makes sure every fd in `fds` names a socket of this process's stack, fetching from
/// other members what lives there (a connection's state, or a listener/UDP socket made
/// again here). Err: the errno for the app's call.
pub fn bring_home(fds: &[i32]) -> Result<(), i32> {
    let deadline = std::time::Instant::now() + super::handoff::FETCH_TIMEOUT;
    let mut waiting = false;
    loop {
        let mut e = engine();
        e.serve_mailbox();
        let Some(m) = e.family.as_ref() else {
            return Ok(());
        };
        let pending: Vec<i32> = fds
            .iter()
            .copied()
            .filter(|fd| m.away.contains_key(fd))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for &fd in &pending {
            waiting |= e.start_fetch(fd);
        }
        if !waiting {
            continue;
        }
        if std::time::Instant::now() >= deadline {
            for fd in pending {
                if let Some(super::handoff::AwayKind::Conn { conn, .. }) = e
                    .family
                    .as_ref()
                    .and_then(|m| m.away.get(&fd))
                    .map(|a| a.what)
                {
                    e.lost(conn);
                }
            }
            return Err(libc::ENOTCONN);
        }
        let mbox = e.family.as_ref().map_or(-1, |m| m.mailbox.fd());
        drop(e);
        let mut p = [libc::pollfd {
            fd: mbox,
            events: libc::POLLIN,
            revents: 0,
        }];
        let _ = kernel::poll(&mut p, 10);
    }
}
