//! Which process drives the fast path after `fork`.
//!
//! The UMEM and rings are shared mappings, inherited by children; the stack's state is
//! copied. Exactly one process may drive them: the *owner*, whose PID sits in a word of
//! shared memory. Ownership moves to a child that uses an inherited fast-path socket
//! (nginx's worker, after the master bound the port and forked) provided the owner is
//! its parent. A process that is not the owner never touches rings, maps or
//! connections: its calls go to the kernel (on the shadows), and once it knows it will
//! not drive (it lost ownership, or it closes an inherited fast-path socket, as redis's
//! BGSAVE child does) it closes its copies of the XSK and link fds, so that the death of
//! the owner detaches the XDP program and the kernel answers the port again.

use super::kernel;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

/// The owner's PID, in a MAP_SHARED page every descendant sees.
static OWNER: AtomicPtr<AtomicI32> = AtomicPtr::new(std::ptr::null_mut());
/// This process's PID, refreshed in the child after fork (no syscall per call).
static PID: AtomicI32 = AtomicI32::new(0);
/// This process closed its copies of the interface's fds: it can never drive.
static ABANDONED: AtomicBool = AtomicBool::new(false);

/// Caches this process's PID (at load; refreshed after fork).
pub fn remember_pid() {
    PID.store(kernel::getpid(), Ordering::Relaxed);
}

/// Sets up the shared owner word with this process as the owner.
pub fn init() -> bool {
    let pid = kernel::getpid();
    PID.store(pid, Ordering::Relaxed);
    // SAFETY: a fresh anonymous shared mapping of one page; nothing else uses it.
    let p = unsafe {
        kernel::raw(
            libc::SYS_mmap,
            [
                0,
                4096,
                (libc::PROT_READ | libc::PROT_WRITE) as i64,
                (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as i64,
                -1,
                0,
            ],
        )
    };
    if (-4095..0).contains(&p) {
        return false;
    }
    let word = p as *mut AtomicI32;
    // SAFETY: the page is mapped, writable and aligned; AtomicI32 has no invalid values.
    unsafe { (*word).store(pid, Ordering::Release) };
    OWNER.store(word, Ordering::Release);
    true
}

fn owner_word() -> Option<&'static AtomicI32> {
    let p = OWNER.load(Ordering::Acquire);
    // SAFETY: set once in `init` to a mapping that is never unmapped.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// This process's PID (cached).
pub fn pid() -> i32 {
    PID.load(Ordering::Relaxed)
}

/// Called in the child right after fork.
pub fn after_fork_child() {
    PID.store(kernel::getpid(), Ordering::Relaxed);
}

/// True when this process drives the fast path.
pub fn is_owner() -> bool {
    !ABANDONED.load(Ordering::Relaxed)
        && owner_word().is_some_and(|w| w.load(Ordering::Acquire) == pid())
}

/// The current owner.
pub fn owner() -> i32 {
    owner_word().map_or(0, |w| w.load(Ordering::Acquire))
}

/// Takes ownership from the parent (a child that uses an inherited socket). Returns
/// true when this process is the owner afterwards.
pub fn take_from_parent() -> bool {
    if ABANDONED.load(Ordering::Relaxed) {
        return false;
    }
    let Some(w) = owner_word() else { return false };
    let me = pid();
    let cur = w.load(Ordering::Acquire);
    if cur == me {
        return true;
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { kernel::raw(libc::SYS_getppid, [0; 6]) } as i32;
    cur == parent
        && w.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// True once this process gave up its copies of the interface's fds.
pub fn abandoned() -> bool {
    ABANDONED.load(Ordering::Relaxed)
}

/// Closes this process's copies of `fds` (XSK, program, maps, link) and never drives
/// again. The owner's copies keep them alive.
pub fn abandon(fds: &[i32]) {
    if ABANDONED.swap(true, Ordering::AcqRel) {
        return;
    }
    for &fd in fds {
        let _ = kernel::close(fd);
        rewriter::filter::mark_fd(fd, false);
    }
}
