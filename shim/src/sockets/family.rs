//! The processes of one family: the process that started the fast path and the
//! children it forks (until they exec). Each member that uses a fast-path socket
//! drives a stack of its own, in a *slot* of its own (its AF_XDP sockets sit at that
//! slot in the XDP program's socket map). A forked child starts with none: its copy of
//! the parent's stack is only memory, never driven. The first time it uses a socket
//! it inherited it joins (takes a free slot, binds its own AF_XDP sockets on the
//! family's UMEM, starts its own stack) and fetches that socket (see `handoff`).
//!
//! The family page is a MAP_SHARED page every member sees: a family id (for naming
//! the members' mailboxes) and the PID in each slot. A slot whose PID is dead (kill -9)
//! is taken over by the next process that joins.

use super::kernel;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Slots of a family (the XDP program's limit).
pub const MAX_MEMBERS: usize = xdp_backend::program::MAX_SLOTS as usize;

const MAGIC: u64 = 0x6661_6d69_6c79_0001;

#[repr(C)]
struct Page {
    magic: AtomicU64,
    /// Names the members' mailboxes (see `mailbox_name`).
    id: AtomicU64,
    /// PID of the member updating a shared XDP map entry (see `locked`); 0: free.
    lock: AtomicI32,
    _pad: i32,
    members: [AtomicI32; MAX_MEMBERS],
    /// Messages sent to each slot's mailbox (see `note_mail`): a member reads its
    /// mailbox before its rings only when this moved.
    mail: [AtomicU32; MAX_MEMBERS],
    /// Flow entries that send a connection handed to the kernel there (see
    /// `kernel_handoff`): while any exist, a driver looks for ended ones to remove.
    kernel_flows: AtomicU32,
}

static PAGE: AtomicPtr<Page> = AtomicPtr::new(std::ptr::null_mut());
/// This process's PID, refreshed in the child after fork (no syscall per call).
static PID: AtomicI32 = AtomicI32::new(0);
/// This process's slot; -1 while it drives no stack of its own (a forked child).
static SLOT: AtomicI32 = AtomicI32::new(-1);

/// Caches this process's PID (at load; refreshed after fork).
pub fn remember_pid() {
    PID.store(kernel::getpid(), Ordering::Relaxed);
}

/// This process's PID (cached).
pub fn pid() -> i32 {
    PID.load(Ordering::Relaxed)
}

fn page() -> Option<&'static Page> {
    let p = PAGE.load(Ordering::Acquire);
    // SAFETY: set once in `found` to a mapping that is never unmapped; every field is
    // an atomic, so any bit pattern another process wrote is valid.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Starts a family with this process in slot 0 (at fast-path start).
pub fn found() -> bool {
    let pid = kernel::getpid();
    PID.store(pid, Ordering::Relaxed);
    // SAFETY: a fresh anonymous shared mapping; nothing else uses it yet.
    let p = unsafe {
        kernel::raw(
            libc::SYS_mmap,
            [
                0,
                std::mem::size_of::<Page>().next_multiple_of(4096) as i64,
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
    let page = p as *mut Page;
    // SAFETY: the mapping is fresh, zeroed, writable and page-aligned; Page is all
    // atomics, for which zero is a valid value.
    let pg = unsafe { &*page };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    pg.id.store(now ^ ((pid as u64) << 40), Ordering::Relaxed);
    pg.members[0].store(pid, Ordering::Relaxed);
    pg.magic.store(MAGIC, Ordering::Release);
    PAGE.store(page, Ordering::Release);
    SLOT.store(0, Ordering::Release);
    true
}

/// This process's slot, when it drives a stack of its own.
pub fn slot() -> Option<u32> {
    let s = SLOT.load(Ordering::Acquire);
    (s >= 0).then_some(s as u32)
}

/// True when this process drives a stack of its own (the family's founder, or a
/// child that joined).
pub fn drives() -> bool {
    SLOT.load(Ordering::Acquire) >= 0
}

/// The slot whose stack holds the sockets this process inherited (its parent's, or
/// for a child of a child that never joined, that child's parent's).
static ORIGIN: AtomicI32 = AtomicI32::new(-1);

/// In the child right after fork: it has no stack of its own (yet); its inherited
/// sockets live in the stack of the slot its parent had, if any.
pub fn after_fork_child() {
    let parent = SLOT.swap(-1, Ordering::AcqRel);
    if parent >= 0 {
        ORIGIN.store(parent, Ordering::Release);
    }
    PID.store(kernel::getpid(), Ordering::Relaxed);
}

/// See `ORIGIN`.
pub fn origin() -> Option<u32> {
    let s = ORIGIN.load(Ordering::Acquire);
    (s >= 0).then_some(s as u32)
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { kernel::raw(libc::SYS_kill, [pid as i64, 0, 0, 0, 0, 0]) };
    r == 0 || r == -(libc::EPERM as i64)
}

/// A slot for this process: a free one, or one whose process died. Returns the slot
/// and the dead PID it replaced (whose leftovers the caller clears).
pub fn take_slot() -> Option<(u32, Option<i32>)> {
    let pg = page()?;
    let me = pid();
    for (i, m) in pg.members.iter().enumerate().skip(1) {
        let cur = m.load(Ordering::Acquire);
        let free = cur == 0;
        if !free && (cur == me || alive(cur)) {
            continue;
        }
        if m.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Some((i as u32, (!free).then_some(cur)));
        }
    }
    None
}

/// Makes `slot` this process's (after `take_slot` and a successful start).
pub fn set_slot(slot: u32) {
    SLOT.store(slot as i32, Ordering::Release);
}

/// Gives a slot back (a join that failed, or at exit).
pub fn release_slot(slot: u32) {
    if let Some(pg) = page() {
        let _ = pg.members[slot as usize].compare_exchange(
            pid(),
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// True when a slot other than this process's holds a PID (a member, live or not yet
/// reaped): the driver then looks at the family periodically.
pub fn has_others() -> bool {
    let me = pid();
    page().is_some_and(|pg| {
        pg.members.iter().any(|m| {
            let p = m.load(Ordering::Acquire);
            p != 0 && p != me
        })
    })
}

/// Counts flow entries written for connections handed to the kernel.
pub fn add_kernel_flows(n: u32) {
    if let Some(pg) = page() {
        pg.kernel_flows.fetch_add(n, Ordering::AcqRel);
    }
}

/// Counts one such entry removed.
pub fn remove_kernel_flow() {
    if let Some(pg) = page() {
        let _ = pg
            .kernel_flows
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Flow entries of connections handed to the kernel that may still exist.
pub fn kernel_flows() -> u32 {
    page().map_or(0, |pg| pg.kernel_flows.load(Ordering::Acquire))
}

/// The live process in `slot`, if any.
pub fn member(slot: u32) -> Option<i32> {
    let pid = page()?.members.get(slot as usize)?.load(Ordering::Acquire);
    (pid != 0 && alive(pid)).then_some(pid)
}

/// Slots whose process died without giving them back (killed): their XDP entries
/// and flows are stale. Each is freed here (so it is reported once).
pub fn reap_dead() -> impl Iterator<Item = u32> {
    let mut dead = [false; MAX_MEMBERS];
    if let Some(pg) = page() {
        for (i, m) in pg.members.iter().enumerate() {
            let pid = m.load(Ordering::Acquire);
            if pid != 0
                && !alive(pid)
                && m.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                dead[i] = true;
            }
        }
    }
    (0..MAX_MEMBERS as u32).filter(move |&i| dead[i as usize])
}

/// Runs `f` while no other member runs its own: for read-modify-write updates of the
/// XDP port map's entries (listener groups, owners), which two workers starting at
/// once would otherwise overwrite. The lock word holds the holder's PID; a waiter
/// that finds the holder dead (killed inside) takes it over.
pub fn locked<T>(f: impl FnOnce() -> T) -> T {
    let Some(pg) = page() else { return f() };
    let me = pid();
    let mut spins = 0u32;
    loop {
        let cur = pg.lock.load(Ordering::Acquire);
        let free = cur == 0 || ((spins + 1).is_multiple_of(1024) && !alive(cur));
        if free
            && pg
                .lock
                .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            break;
        }
        spins = spins.wrapping_add(1);
        std::hint::spin_loop();
        if spins.is_multiple_of(64) {
            // SAFETY: sched_yield has no arguments or preconditions.
            unsafe { kernel::raw(libc::SYS_sched_yield, [0; 6]) };
        }
    }
    let r = f();
    let _ = pg
        .lock
        .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
    r
}

/// Counts a message just sent to `slot` (after the send: a reader that sees the count
/// finds the message in its mailbox).
pub fn note_mail(slot: u32) {
    if let Some(m) = page().and_then(|p| p.mail.get(slot as usize)) {
        m.fetch_add(1, Ordering::Release);
    }
}

/// The count of messages sent to `slot` so far.
pub fn mail_count(slot: u32) -> u32 {
    page()
        .and_then(|p| p.mail.get(slot as usize))
        .map_or(0, |m| m.load(Ordering::Acquire))
}

/// The abstract Unix address of `slot`'s mailbox (a `sockaddr_un`'s bytes). The
/// name carries the member's PID: a slot taken over from a process that just exited
/// gets a name of its own while the old one is still bound.
pub fn mailbox_name(slot: u32) -> ([u8; 64], usize) {
    let id = page().map_or(0, |p| p.id.load(Ordering::Relaxed));
    let pid = page()
        .and_then(|p| p.members.get(slot as usize))
        .map_or(0, |m| m.load(Ordering::Acquire));
    let name = format!("fastnet-{id:016x}-{slot}-{pid}");
    let mut a = [0u8; 64];
    a[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    // a[2] = 0: the abstract namespace (no file; gone when the socket closes).
    a[3..3 + name.len()].copy_from_slice(name.as_bytes());
    (a, 3 + name.len())
}
