//! epoll, poll and select over any mix of kernel fds and fast-path sockets.
//!
//! The kernel waits; we make sure it wakes: the app's epoll holds our waker eventfd and
//! the XSK fds, and poll/select add the thread's eventfd and the XSK fds to what they
//! sleep on. Timeouts are capped by the stack's next timer so that the sleeping thread
//! also runs retransmissions and delayed ACKs.

use super::appmem;
use super::calls::{err, ours};
use super::engine::{Engine, Kind, Waiter};
use super::epoll::{self, EpollSet, Event};
use super::kernel;
use super::kernel::HIGH_FD_FLOOR;
use super::process::{engine, thread_wake_fd};
use rewriter::PASSTHROUGH;
use std::cell::RefCell;
use std::time::{Duration, Instant};

const EV_SIZE: i64 = std::mem::size_of::<libc::epoll_event>() as i64;

pub fn epoll_create(flags: i32, size: i32) -> i64 {
    if size <= 0 {
        return err(libc::EINVAL);
    }
    // SAFETY: epoll_create1 with the app's flags.
    let epfd = unsafe { kernel::raw(libc::SYS_epoll_create1, [flags as i64, 0, 0, 0, 0, 0]) };
    if epfd < 0 {
        return epfd;
    }
    let mut e = engine();
    adopt_epoll(&mut e, epfd as i32);
    epfd
}

/// Gives an app epoll its fast-path half: our waker and the XSK fds join it. Also used
/// for epolls the app created before the fast path started.
fn adopt_epoll(e: &mut Engine, epfd: i32) -> bool {
    let waker = match kernel::eventfd(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        .and_then(|fd| kernel::move_high(fd, HIGH_FD_FLOOR))
    {
        Ok(fd) => fd,
        // Without a waker the epoll still works for kernel fds: leave it plain.
        Err(_) => return false,
    };
    if kernel::epoll_ctl(
        epfd,
        libc::EPOLL_CTL_ADD,
        waker,
        libc::EPOLLIN as u32,
        epoll::MARKER_WAKER,
    )
    .is_err()
    {
        let _ = kernel::close(waker);
        return false;
    }
    let xsks: Vec<i32> = e.dev.poll_fds().collect();
    for x in xsks {
        let _ = kernel::epoll_ctl(
            epfd,
            libc::EPOLL_CTL_ADD,
            x,
            libc::EPOLLIN as u32,
            epoll::MARKER_XSK,
        );
    }
    rewriter::filter::mark_fd(waker, true);
    rewriter::filter::mark_fd(epfd, true);
    e.epolls.insert(epfd, EpollSet::new(waker));
    true
}

pub fn epoll_ctl(epfd: i32, op: i32, fd: i32, evp: i64) -> i64 {
    let mut e = engine();
    let Some(s) = ours(&e, fd) else {
        return PASSTHROUGH;
    };
    if !e.epolls.contains_key(&epfd) && !adopt_epoll(&mut e, epfd) {
        // Not an epoll fd (EINVAL/EBADF come from the kernel) or out of fds.
        return PASSTHROUGH;
    }
    let (events, data) = if op == libc::EPOLL_CTL_DEL {
        (0, 0)
    } else {
        // SAFETY: the app passed an epoll_event for ADD/MOD.
        match unsafe { appmem::read::<libc::epoll_event>(evp) } {
            Ok(ev) => (ev.events, ev.u64),
            Err(x) => return err(x),
        }
    };
    let set = e.epolls.get_mut(&epfd).expect("checked");
    let r = match op {
        libc::EPOLL_CTL_ADD => set.add(fd, events, data),
        libc::EPOLL_CTL_MOD => set.modify(fd, events, data),
        libc::EPOLL_CTL_DEL => set.delete(fd),
        _ => Err(libc::EINVAL),
    };
    if let Err(x) = r {
        return err(x);
    }
    set.set_fast(fd, s.kind.in_fast_epoll());
    if s.kind.shadow_in_kernel_epoll() {
        let r = kernel::epoll_ctl(epfd, op, fd, events, data);
        if let Err(x) = r {
            if op != libc::EPOLL_CTL_DEL {
                let _ = e.epolls.get_mut(&epfd).expect("checked").delete(fd);
                return err(x);
            }
        }
    }
    let watched_before = !s.epolls.is_empty();
    if let Some(m) = e.fds.get_mut(fd) {
        if op == libc::EPOLL_CTL_DEL {
            m.epolls.remove(epfd);
        } else if !m.epolls.insert(epfd) {
            let _ = e.epolls.get_mut(&epfd).expect("checked").delete(fd);
            return err(libc::ENOSPC);
        }
    }
    if let (Kind::TcpListener(lh), Some(now)) = (s.kind, e.fds.get(fd)) {
        // A group listener no epoll watches takes no share of new connections.
        match (watched_before, !now.epolls.is_empty()) {
            (true, false) => e.listener_unwatched(lh),
            (false, true) => e.listener_watched(lh),
            _ => {}
        }
    }
    // A thread already waiting on this epoll must look at the new interest.
    if let Some(set) = e.epolls.get_mut(&epfd) {
        set.wake();
    }
    0
}

/// Moves `fd`'s registrations to match its kind after it changed (fresh → listener,
/// fresh → kernel): the shadow joins or leaves the kernel epolls.
pub fn sync_epolls(e: &mut Engine, fd: i32, old: Kind, released: bool) {
    let Some(s) = e.fds.get(fd).copied() else {
        return;
    };
    let new = s.kind;
    for epfd in s.epolls.iter() {
        let Some(set) = e.epolls.get_mut(&epfd) else {
            continue;
        };
        let Some((events, data)) = set.interest(fd) else {
            continue;
        };
        let was = old.shadow_in_kernel_epoll();
        let now = released || new.shadow_in_kernel_epoll();
        set.set_fast(fd, !released && new.in_fast_epoll());
        if released {
            set.forget(fd);
        }
        if now && !was {
            let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, events, data);
        } else if was && !now {
            let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0);
        }
        set.wake();
    }
}

/// Collects the fast-path events of `epfd` (the set is taken out of the map so the
/// engine can be read while it is filled).
/// `woke` says the kernel epoll just reported our waker.
fn collect(e: &mut Engine, epfd: i32, out: &mut [Event], woke: bool) -> usize {
    let Some(mut set) = e.epolls.remove(&epfd) else {
        return 0;
    };
    let n = set.collect(|fd| e.readiness_of(fd), out);
    if n == 0 {
        set.clear_wake(woke);
    }
    e.epolls.insert(epfd, set);
    n
}

/// Removes our marker events from what the kernel wrote; returns the app's count and
/// whether our waker was among them.
fn strip_markers(evs: i64, n: usize) -> Result<(usize, bool), i32> {
    let mut kept = 0;
    let mut woke = false;
    for i in 0..n {
        // SAFETY: the kernel just wrote n events into the app's array.
        let ev: libc::epoll_event = unsafe { appmem::read(evs + i as i64 * EV_SIZE)? };
        if epoll::is_marker(ev.u64) {
            woke |= ev.u64 == epoll::MARKER_WAKER;
            continue;
        }
        if kept != i {
            // SAFETY: compacting inside the same array.
            unsafe { appmem::write(evs + kept as i64 * EV_SIZE, ev)? };
        }
        kept += 1;
    }
    Ok((kept, woke))
}

/// Copies fast-path events into the app's epoll_event array (which has room for
/// `max` >= events.len() entries: collect never returns more).
fn write_events(evs: i64, events: &[Event]) -> Result<(), i32> {
    for (i, ev) in events.iter().enumerate() {
        let out = libc::epoll_event {
            events: ev.events,
            u64: ev.data,
        };
        // SAFETY: within the app's events array, as above.
        unsafe { appmem::write(evs + i as i64 * EV_SIZE, out)? };
    }
    Ok(())
}

/// A kernel timespec for a timeout we pass on.
fn kernel_timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// The app's timeout argument of epoll_pwait2/ppoll/pselect6: NULL waits forever, an
/// out-of-range timespec is EINVAL as in the kernel.
fn app_timeout(tsp: i64) -> Result<Option<Duration>, i32> {
    if tsp == 0 {
        return Ok(None);
    }
    // SAFETY: the app passed a timespec for this call.
    let ts = unsafe { appmem::read::<libc::timespec>(tsp)? };
    if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
        Ok(Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)))
    } else {
        Err(libc::EINVAL)
    }
}

fn kernel_epoll_wait(
    epfd: i32,
    evs: i64,
    max: i32,
    timeout: Option<Duration>,
    sigmask: i64,
    sigsize: usize,
) -> i64 {
    let ts = timeout.map(kernel_timespec);
    let tsp = ts.as_ref().map_or(0, |t| t as *const libc::timespec as i64);
    // SAFETY: epoll_pwait2 into the app's array with our timeout and its sigmask.
    unsafe {
        kernel::raw(
            libc::SYS_epoll_pwait2,
            [epfd as i64, evs, max as i64, tsp, sigmask, sigsize as i64],
        )
    }
}

fn wait_core(
    epfd: i32,
    evs: i64,
    max: i32,
    timeout: Option<Duration>,
    sigmask: i64,
    sigsize: usize,
) -> i64 {
    {
        let mut e = engine();
        if !e.epolls.contains_key(&epfd) {
            return PASSTHROUGH;
        }
        e.apply_unwatched();
    }
    if max <= 0 {
        return err(libc::EINVAL);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = [Event { events: 0, data: 0 }; 64];
    let mut woke = false;
    let mut spun = false;
    loop {
        let mut e = engine();
        e.drive();
        let n = collect(&mut e, epfd, &mut buf[..(max as usize).min(64)], woke);
        if n == 0 && woke && registers_away(&e, epfd) {
            // A connection in this epoll went to another member of the family (the
            // app uses it in both processes): `calls::handle` fetches it back, as a
            // first wait would, and waits again (only its holder sees its readiness).
            return err(super::process::LEFT_THIS_STACK);
        }
        // The next timer only matters when the wait sleeps (it scans every socket's
        // deadline in the stack).
        let timer = if n == 0 { e.timer_timeout() } else { None };
        let spin = e.spin_budget();
        let now_us = e.now().micros();
        let merge = n > 0
            && (n as i32) < max
            && e.epolls
                .get_mut(&epfd)
                .is_some_and(|s| s.kernel_merge_due(now_us));
        drop(e);
        if let Err(x) = write_events(evs, &buf[..n]) {
            return err(x);
        }
        if n > 0 && !merge {
            return n as i64;
        }
        if n > 0 {
            // Merge what the kernel has ready now, without waiting.
            let r = kernel_epoll_wait(
                epfd,
                evs + n as i64 * EV_SIZE,
                max - n as i32,
                Some(Duration::ZERO),
                0,
                8,
            );
            let k = if r > 0 {
                strip_markers(evs + n as i64 * EV_SIZE, r as usize).map_or(0, |(k, _)| k)
            } else {
                0
            };
            return (n + k) as i64;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if let (false, Some(spin)) = (spun, spin) {
            // Busy mode: watch the rings before sleeping; frames: drive and collect.
            spun = !super::process::spin_for_frames(left.map_or(spin, |l| l.min(spin)));
            woke = false;
            continue;
        }
        spun = false;
        let sleep = match (left, timer) {
            (Some(l), Some(t)) => Some(l.min(t)),
            (Some(l), None) => Some(l),
            (None, t) => t,
        };
        let r = kernel_epoll_wait(epfd, evs, max, sleep, sigmask, sigsize);
        if r < 0 {
            return r;
        }
        let k = match strip_markers(evs, r as usize) {
            Ok((k, w)) => {
                woke = w;
                k
            }
            Err(x) => return err(x),
        };
        if k > 0 {
            return k as i64;
        }
        if left.is_some_and(|l| l.is_zero()) || deadline.is_some_and(|d| Instant::now() >= d) {
            // One last look at the fast path before reporting a timeout.
            let mut e = engine();
            e.drive();
            let n = collect(&mut e, epfd, &mut buf[..(max as usize).min(64)], woke);
            drop(e);
            if let Err(x) = write_events(evs, &buf[..n]) {
                return err(x);
            }
            return n as i64;
        }
    }
}

fn ms_timeout(ms: i32) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

pub fn epoll_wait(epfd: i32, evs: i64, max: i32, ms: i32, _: Option<()>) -> i64 {
    wait_core(epfd, evs, max, ms_timeout(ms), 0, 8)
}

pub fn epoll_pwait(
    epfd: i32,
    evs: i64,
    max: i32,
    ms: i32,
    sigmask: i64,
    sigsize: usize,
    _: Option<()>,
) -> i64 {
    wait_core(epfd, evs, max, ms_timeout(ms), sigmask, sigsize)
}

pub fn epoll_pwait2(epfd: i32, evs: i64, max: i32, tsp: i64, sigmask: i64, sigsize: usize) -> i64 {
    let timeout = match app_timeout(tsp) {
        Ok(t) => t,
        Err(x) => return err(x),
    };
    wait_core(epfd, evs, max, timeout, sigmask, sigsize)
}

// ---- poll / select -------------------------------------------------------------

thread_local! {
    static POLL_BUF: RefCell<Vec<libc::pollfd>> = const { RefCell::new(Vec::new()) };
    static MAP_BUF: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether an fd registered in `epfd` names a socket living in another member's stack.
fn registers_away(e: &Engine, epfd: i32) -> bool {
    e.family
        .as_ref()
        .is_some_and(|m| m.away_in_epoll(epfd).next().is_some())
}

/// The fds of `fds` whose sockets live in another member's stack (empty, without
/// allocating, when none do).
fn away_among(fds: &[libc::pollfd]) -> Vec<i32> {
    let e = engine();
    match e.family.as_ref().filter(|m| !m.away.is_empty()) {
        Some(m) => fds
            .iter()
            .map(|p| p.fd)
            .filter(|fd| m.away.contains_key(fd))
            .collect(),
        None => Vec::new(),
    }
}

/// How one app pollfd is served.
fn fast_kind(e: &Engine, fd: i32) -> Option<Kind> {
    ours(e, fd).map(|s| s.kind).filter(|k| k.in_fast_epoll())
}

/// The core of poll/ppoll/select: `fds` is the app's array (or our copy for select).
/// Returns the number of entries with events, or -errno.
fn poll_core(fds: &mut [libc::pollfd], timeout: Option<Duration>, sigmask: i64) -> i64 {
    let deadline = timeout.map(|t| Instant::now() + t);
    let wake = match thread_wake_fd() {
        Ok(w) => w,
        Err(x) => return err(x),
    };
    POLL_BUF.with(|pb| {
        MAP_BUF.with(|mb| {
            let mut kfds = pb.borrow_mut();
            let mut map = mb.borrow_mut();
            loop {
                kernel::eventfd_reset(wake);
                // A named fd whose connection another member of the family took while
                // this poll waited (the app uses it in both processes): fetched back,
                // as a first call on it would (only its holder sees its readiness).
                let taken = away_among(fds);
                if !taken.is_empty() {
                    let _ = super::process::bring_home(&taken);
                }
                let mut e = engine();
                e.drive();
                kfds.clear();
                map.clear();
                let mut ready = 0;
                for (i, p) in fds.iter_mut().enumerate() {
                    p.revents = 0;
                    match fast_kind(&e, p.fd) {
                        Some(k) => {
                            let want = p.events as u32 | (libc::POLLERR | libc::POLLHUP) as u32;
                            let r = e.readiness_of(p.fd) & want;
                            p.revents = r as i16;
                            if r != 0 {
                                ready += 1;
                            }
                            if k.shadow_in_kernel_epoll() {
                                kfds.push(libc::pollfd {
                                    fd: p.fd,
                                    events: p.events,
                                    revents: 0,
                                });
                                map.push(i);
                            }
                            if let Some(h) = k.handle() {
                                e.waiters.push(Waiter {
                                    handle: h,
                                    eventfd: wake,
                                });
                            }
                        }
                        None => {
                            kfds.push(libc::pollfd {
                                fd: p.fd,
                                events: p.events,
                                revents: 0,
                            });
                            map.push(i);
                        }
                    }
                }
                let app_kernel = kfds.len();
                kfds.push(libc::pollfd {
                    fd: wake,
                    events: libc::POLLIN,
                    revents: 0,
                });
                for x in e.dev.poll_fds() {
                    kfds.push(libc::pollfd {
                        fd: x,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
                let timer = e.timer_timeout();
                drop(e);
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                let sleep = if ready > 0 {
                    Some(Duration::ZERO)
                } else {
                    match (left, timer) {
                        (Some(l), Some(t)) => Some(l.min(t)),
                        (Some(l), None) => Some(l),
                        (None, t) => t,
                    }
                };
                let r = kernel_ppoll(&mut kfds, sleep, sigmask);
                remove_waiters(wake);
                if r < 0 {
                    return r;
                }
                for (j, &i) in map.iter().enumerate() {
                    let rev = kfds[j].revents;
                    if rev != 0 {
                        if fds[i].revents == 0 {
                            ready += 1;
                        }
                        fds[i].revents |= rev;
                    }
                }
                let _ = app_kernel;
                if ready > 0 {
                    return ready as i64;
                }
                if left.is_some_and(|l| l.is_zero())
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return 0;
                }
            }
        })
    })
}

fn remove_waiters(wake: i32) {
    let mut e = engine();
    e.waiters.retain(|w| w.eventfd != wake);
}

fn kernel_ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>, sigmask: i64) -> i64 {
    let ts = timeout.map(kernel_timespec);
    let tsp = ts.as_ref().map_or(0, |t| t as *const libc::timespec as i64);
    // SAFETY: ppoll on our own array with the app's signal mask.
    unsafe {
        kernel::raw(
            libc::SYS_ppoll,
            [
                fds.as_mut_ptr() as i64,
                fds.len() as i64,
                tsp,
                sigmask,
                8,
                0,
            ],
        )
    }
}

/// True when any of the app's pollfds is a fast-path socket (else: the kernel's call).
fn any_fast(fds: &[libc::pollfd]) -> bool {
    let e = engine();
    fds.iter().any(|p| fast_kind(&e, p.fd).is_some())
}

fn app_pollfds<'a>(ptr: i64, n: usize) -> Result<&'a mut [libc::pollfd], i32> {
    if n > (1 << 20) {
        return Err(libc::EINVAL);
    }
    if n == 0 {
        return Ok(&mut []);
    }
    // SAFETY: the app passed (fds, nfds) to poll(2); pollfd arrays are aligned.
    let bytes = unsafe { appmem::slice_mut(ptr, n * std::mem::size_of::<libc::pollfd>())? };
    // SAFETY: same memory, viewed as the pollfds it holds.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), n) })
}

pub fn poll(fds: i64, n: usize, ms: i32) -> i64 {
    let Ok(p) = app_pollfds(fds, n) else {
        return PASSTHROUGH;
    };
    if !any_fast(p) {
        return PASSTHROUGH;
    }
    poll_core(p, ms_timeout(ms), 0)
}

pub fn ppoll(fds: i64, n: usize, tsp: i64, sigmask: i64, _sigsize: usize) -> i64 {
    let Ok(p) = app_pollfds(fds, n) else {
        return PASSTHROUGH;
    };
    if !any_fast(p) {
        return PASSTHROUGH;
    }
    let timeout = match app_timeout(tsp) {
        Ok(t) => t,
        Err(x) => return err(x),
    };
    poll_core(p, timeout, sigmask)
}

const FD_BITS: usize = 8 * std::mem::size_of::<libc::c_ulong>();

fn fdset_get(set: i64, fd: usize) -> bool {
    if set == 0 {
        return false;
    }
    let word = set + (fd / FD_BITS * std::mem::size_of::<libc::c_ulong>()) as i64;
    // SAFETY: fd < nfds, and the app's fd_set covers nfds bits.
    unsafe { appmem::read::<libc::c_ulong>(word) }.is_ok_and(|w| w & (1 << (fd % FD_BITS)) != 0)
}

fn fdset_write(set: i64, nfds: usize, on: &dyn Fn(usize) -> bool) {
    if set == 0 {
        return;
    }
    for wi in 0..nfds.div_ceil(FD_BITS) {
        let mut w: libc::c_ulong = 0;
        for b in 0..FD_BITS {
            let fd = wi * FD_BITS + b;
            if fd < nfds && on(fd) {
                w |= 1 << b;
            }
        }
        let addr = set + (wi * std::mem::size_of::<libc::c_ulong>()) as i64;
        // SAFETY: rewriting the app's own fd_set words.
        let _ = unsafe { appmem::write::<libc::c_ulong>(addr, w) };
    }
}

fn select_core(nfds: i32, r: i64, w: i64, x: i64, timeout: Option<Duration>, sigmask: i64) -> i64 {
    if !(0..=libc::FD_SETSIZE as i32).contains(&nfds) {
        return PASSTHROUGH;
    }
    let nfds = nfds as usize;
    let mut list: Vec<libc::pollfd> = Vec::new();
    {
        let e = engine();
        let mut fast = false;
        for fd in 0..nfds {
            let mut ev = 0;
            if fdset_get(r, fd) {
                ev |= libc::POLLIN;
            }
            if fdset_get(w, fd) {
                ev |= libc::POLLOUT;
            }
            if fdset_get(x, fd) {
                ev |= libc::POLLPRI;
            }
            if ev != 0 {
                fast |= fast_kind(&e, fd as i32).is_some();
                list.push(libc::pollfd {
                    fd: fd as i32,
                    events: ev,
                    revents: 0,
                });
            }
        }
        if !fast {
            return PASSTHROUGH;
        }
    }
    let n = poll_core(&mut list, timeout, sigmask);
    if n < 0 {
        return n;
    }
    let get = |fd: usize, bits: i16| {
        list.iter()
            .find(|p| p.fd as usize == fd)
            .is_some_and(|p| p.revents & bits != 0)
    };
    // select counts each (fd, set) pair; errors and hang-ups make an fd readable.
    let rbits = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
    let wbits = libc::POLLOUT | libc::POLLERR;
    let mut count = 0;
    for p in &list {
        let fd = p.fd as usize;
        count += (fdset_get(r, fd) && p.revents & rbits != 0) as i64;
        count += (fdset_get(w, fd) && p.revents & wbits != 0) as i64;
        count += (fdset_get(x, fd) && p.revents & libc::POLLPRI != 0) as i64;
    }
    let rr = r;
    fdset_write(r, nfds, &|fd| fdset_get(rr, fd) && get(fd, rbits));
    let ww = w;
    fdset_write(w, nfds, &|fd| fdset_get(ww, fd) && get(fd, wbits));
    let xx = x;
    fdset_write(x, nfds, &|fd| fdset_get(xx, fd) && get(fd, libc::POLLPRI));
    count
}

pub fn select(nfds: i32, r: i64, w: i64, x: i64, tvp: i64) -> i64 {
    let timeout = if tvp == 0 {
        None
    } else {
        // SAFETY: the app passed a timeval to select(2).
        match unsafe { appmem::read::<libc::timeval>(tvp) } {
            Ok(tv) if tv.tv_sec >= 0 && (0..1_000_000).contains(&tv.tv_usec) => {
                Some(Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
            }
            Ok(_) => return err(libc::EINVAL),
            Err(x) => return err(x),
        }
    };
    let start = Instant::now();
    let n = select_core(nfds, r, w, x, timeout, 0);
    if n != PASSTHROUGH {
        if let Some(t) = timeout {
            // Linux writes back the time left.
            let left = t.saturating_sub(start.elapsed());
            let tv = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: left.subsec_micros() as libc::suseconds_t,
            };
            // SAFETY: the app's timeval, updated as select(2) does.
            let _ = unsafe { appmem::write(tvp, tv) };
        }
    }
    n
}

pub fn pselect6(nfds: i32, r: i64, w: i64, x: i64, tsp: i64, sig: i64) -> i64 {
    let timeout = match app_timeout(tsp) {
        Ok(t) => t,
        Err(x) => return err(x),
    };
    // The sixth argument points at {sigset pointer, size}.
    let sigmask = if sig == 0 {
        0
    } else {
        // SAFETY: pselect6's packed (sigset_t *, size_t) argument.
        match unsafe { appmem::read::<[i64; 2]>(sig) } {
            Ok([p, _]) => p,
            Err(x) => return err(x),
        }
    };
    select_core(nfds, r, w, x, timeout, sigmask)
}

/// The app's epoll wait made as is, with our marker events removed (for processes that
/// do not drive the fast path); waits again when only markers fired.
pub fn kernel_wait_stripped(a: &mut rewriter::SyscallArgs) -> i64 {
    loop {
        // SAFETY: the app's own epoll_wait/pwait/pwait2 with its own arguments.
        let r = unsafe { kernel::raw(a.nr, a.args) };
        if r <= 0 {
            return r;
        }
        match strip_markers(a.args[1], r as usize).map(|(k, _)| k) {
            Ok(0) => {
                if a.args[3] == 0 {
                    return 0;
                }
                // Only our fds fired; they stay ready, so avoid a busy loop.
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(k) => return k as i64,
            Err(x) => return err(x),
        }
    }
}

/// The fds a poll/ppoll/select/pselect6 call names that satisfy `want` (for calls in
/// a process whose sockets may live in another member's stack; see `handoff`).
pub fn fds_named_by(a: &rewriter::SyscallArgs, want: impl Fn(i32) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    match a.nr {
        libc::SYS_poll | libc::SYS_ppoll => {
            if let Ok(p) = app_pollfds(a.args[0], a.args[1] as usize) {
                out.extend(p.iter().map(|p| p.fd).filter(|&fd| want(fd)));
            }
        }
        libc::SYS_select | libc::SYS_pselect6 => {
            let nfds = (a.args[0].clamp(0, libc::FD_SETSIZE as i64)) as usize;
            for fd in 0..nfds {
                let named = [a.args[1], a.args[2], a.args[3]]
                    .iter()
                    .any(|&set| fdset_get(set, fd));
                if named && want(fd as i32) {
                    out.push(fd as i32);
                }
            }
        }
        _ => {}
    }
    out
}
