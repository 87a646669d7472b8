//! Signal handlers that arrive while their thread is inside the stack.
//!
//! The stack sits behind one lock. A handler that runs on a thread holding it and
//! makes a socket call would wait for itself forever. So, as Onload does, the app's
//! handlers are wrapped (rt_sigaction is intercepted): a signal that lands while the
//! thread is inside is recorded and raised again the moment the thread leaves, where
//! the app's handler runs as usual, with the siginfo the signal first came with (a
//! handler that checks si_code, as HAProxy's watchdog does for its CPU-time timer,
//! must not see a tgkill of ours). The wrapper also notes whether the handler asked
//! for SA_RESTART, so a blocking socket call it interrupted restarts as on Linux.

use super::kernel;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const NSIG: usize = 65;

/// The app's handler and flags per signal (0: not wrapped).
static HANDLERS: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
static FLAGS: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];

thread_local! {
    /// Depth of engine locks held by this thread.
    static INSIDE: Cell<u32> = const { Cell::new(0) };
    /// Signals that arrived while inside (bit n-1 for signal n).
    static PENDING: Cell<u64> = const { Cell::new(0) };
    /// The siginfo each pending signal arrived with (a standard signal is pending at
    /// most once, as in the kernel).
    static PENDING_INFO: [Cell<SigInfoBytes>; NSIG] =
        const { [const { Cell::new(SigInfoBytes([0; 16])) }; NSIG] };
    /// The last wrapped handler that ran asked for SA_RESTART.
    static RESTART: Cell<bool> = const { Cell::new(false) };
}

/// The kernel's `struct sigaction` for rt_sigaction(2) on x86-64.
#[repr(C)]
#[derive(Clone, Copy)]
struct KSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// A siginfo_t kept as plain words (128 bytes), so it can sit in a `Cell`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SigInfoBytes([u64; 16]);

const _: () = assert!(std::mem::size_of::<libc::siginfo_t>() == 128);

const SA_SIGINFO: u64 = libc::SA_SIGINFO as u64;
const SA_RESTART: u64 = libc::SA_RESTART as u64;

extern "C" fn wrapper(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let s = sig as usize;
    if s == 0 || s >= NSIG {
        return;
    }
    if INSIDE.with(|c| c.get()) > 0 {
        if !info.is_null() {
            // SAFETY: the kernel passed a valid siginfo_t (SA_SIGINFO is always set on
            // the wrapper); 128 bytes, checked above.
            let bytes = unsafe { std::ptr::read(info as *const SigInfoBytes) };
            PENDING_INFO.with(|a| a[s].set(bytes));
        }
        PENDING.with(|p| p.set(p.get() | 1 << (s - 1)));
        return;
    }
    let h = HANDLERS[s].load(Ordering::Acquire);
    let flags = FLAGS[s].load(Ordering::Acquire);
    RESTART.with(|r| r.set(flags & SA_RESTART != 0));
    if h <= 1 {
        return;
    }
    if flags & SA_SIGINFO != 0 {
        // SAFETY: the app registered this function as an SA_SIGINFO handler.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the app registered this function as a plain handler.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// rt_sigaction(sig, act, oldact, size) from the app. Returns the result.
pub fn rt_sigaction(sig: i32, act: i64, oldact: i64, size: usize) -> i64 {
    let s = sig as usize;
    if s == 0 || s >= NSIG || size != 8 || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return rewriter::PASSTHROUGH;
    }
    let prev_app = HANDLERS[s].load(Ordering::Acquire);
    let prev_flags = FLAGS[s].load(Ordering::Acquire);
    let mut new: Option<KSigaction> = None;
    if act != 0 {
        // SAFETY: the app passed a struct sigaction for this call.
        let a: KSigaction = match unsafe { super::appmem::read(act) } {
            Ok(a) => a,
            Err(e) => return -(e as i64),
        };
        new = Some(a);
    }
    let mut kact = new;
    if let Some(a) = kact.as_mut() {
        if a.handler > 1 {
            a.handler = wrapper as *const () as usize;
            a.flags |= SA_SIGINFO;
        }
    }
    let mut kold = KSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: the app's handler (or SIG_DFL/SIG_IGN), or our wrapper, with its struct.
    let r = unsafe { sigaction_raw(sig, kact.as_ref(), Some(&mut kold)) };
    if r < 0 {
        return r;
    }
    if let Some(a) = new {
        if a.handler > 1 {
            HANDLERS[s].store(a.handler, Ordering::Release);
            FLAGS[s].store(a.flags, Ordering::Release);
        } else {
            HANDLERS[s].store(0, Ordering::Release);
            FLAGS[s].store(0, Ordering::Release);
        }
    }
    if oldact != 0 {
        // Report the app's own handler, not our wrapper.
        if kold.handler == wrapper as *const () as usize {
            kold.handler = prev_app;
            kold.flags = prev_flags;
        }
        // SAFETY: the app passed oldact to be written.
        if let Err(e) = unsafe { super::appmem::write(oldact, kold) } {
            return -(e as i64);
        }
    }
    0
}

/// Gives every wrapped handler back to the kernel as the app installed it (the fast path
/// is off for good, so no signal needs deferring). Call after rt_sigaction stopped being
/// routed here: an app call racing with this one between its read and its write would
/// be undone, a window of two system calls at a moment that happens once.
pub fn unwrap_all() {
    for s in 1..NSIG {
        let (h, flags) = (
            HANDLERS[s].load(Ordering::Acquire),
            FLAGS[s].load(Ordering::Acquire),
        );
        if h == 0 {
            continue;
        }
        let mut cur = KSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction reading into our own struct.
        let r = unsafe { sigaction_raw(s as i32, None, Some(&mut cur)) };
        if r == 0 && cur.handler == wrapper as *const () as usize {
            // The app's handler, flags, restorer and mask: only the first two were changed.
            cur.handler = h;
            cur.flags = flags;
            // SAFETY: rt_sigaction with our own struct.
            unsafe { sigaction_raw(s as i32, Some(&cur), None) };
        }
        // Only now: a signal landing in the wrapper until here still finds the handler.
        HANDLERS[s].store(0, Ordering::Release);
        FLAGS[s].store(0, Ordering::Release);
    }
}

/// rt_sigaction(2) on our own structs, straight to the kernel.
///
/// # Safety
/// `act`'s handler must be a valid handler for the kernel to install.
unsafe fn sigaction_raw(sig: i32, act: Option<&KSigaction>, old: Option<&mut KSigaction>) -> i64 {
    // SAFETY: both pointers are null or point at live structs of the kernel's layout.
    unsafe {
        kernel::raw(
            libc::SYS_rt_sigaction,
            [
                sig as i64,
                act.map_or(0, |a| a as *const KSigaction as i64),
                old.map_or(0, |o| o as *mut KSigaction as i64),
                8,
                0,
                0,
            ],
        )
    }
}

/// Entering the engine lock on this thread.
pub fn enter() {
    INSIDE.with(|c| c.set(c.get() + 1));
}

/// Leaving it: signals that arrived meanwhile are raised again now.
pub fn leave() {
    let depth = INSIDE.with(|c| {
        let d = c.get().saturating_sub(1);
        c.set(d);
        d
    });
    if depth > 0 {
        return;
    }
    let pending = PENDING.with(|p| p.replace(0));
    if pending == 0 {
        return;
    }
    for s in 1..NSIG {
        if pending & (1 << (s - 1)) != 0 {
            let bytes = PENDING_INFO.with(|a| a[s].get());
            // SAFETY: SigInfoBytes has siginfo_t's size and an 8-byte alignment.
            let info = unsafe { &*(&bytes as *const SigInfoBytes as *const libc::siginfo_t) };
            if info.si_signo != s as i32 || kernel::raise_with_info(s as i32, info).is_err() {
                kernel::raise(s as i32);
            }
        }
    }
}

/// Whether the handler that interrupted the last blocking wait asked for SA_RESTART
/// (cleared by reading).
pub fn take_restart() -> bool {
    RESTART.with(|r| r.replace(false))
}
