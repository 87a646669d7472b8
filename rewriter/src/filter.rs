//! The pre-filter the assembly entry reads: which syscall numbers go to Rust, and which
//! fds are "ours" for fd-based calls. Lock-free: plain atomic bytes and bits, read by the
//! hook without any ordering beyond what `Relaxed` gives (a call racing with a change may
//! see either the old or the new class, as with any concurrent fd-table change).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

/// Syscall numbers the hook classifies; calls with larger numbers always go to the kernel.
pub const MAX_SYSCALL: usize = 512;
/// Fds the fd bitmap covers; larger fds are never "ours".
pub const MAX_FD: usize = 65536;

/// What the assembly entry does with a syscall number (values are read by `hook.rs`).
pub(crate) mod class {
    pub const PASS: u8 = 0;
    pub const HANDLED: u8 = 1;
    pub const FD_BASED: u8 = 2;
    pub const SIGRETURN: u8 = 3;
    pub const CLONE: u8 = 4;
    pub const VFORK: u8 = 5;
    pub const CLONE3: u8 = 6;
    pub const EXIT: u8 = 7;
    /// `mmap`/`mprotect`/`pkey_mprotect`: handled only when the protection (`%rdx`)
    /// includes `PROT_EXEC` (the rewriter patches code mapped later; other mappings, such
    /// as every large malloc, pass at once).
    pub const EXEC_MAPPING: u8 = 8;
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO8: AtomicU8 = AtomicU8::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO64: AtomicU64 = AtomicU64::new(0);

/// Per number: one of [`class`]. Read by the assembly entry.
pub(crate) static CLASS: [AtomicU8; MAX_SYSCALL] = [ZERO8; MAX_SYSCALL];
/// One bit per fd: set when the shim owns the fd.
pub(crate) static FD_BITS: [AtomicU64; MAX_FD / 64] = [ZERO64; MAX_FD / 64];

/// What the handler asked for (the class table also carries the rewriter's own needs).
static USER_ALWAYS: [AtomicU64; MAX_SYSCALL / 64] = [ZERO64; MAX_SYSCALL / 64];
static USER_FD: [AtomicU64; MAX_SYSCALL / 64] = [ZERO64; MAX_SYSCALL / 64];
/// Numbers the rewriter itself must see (mappings that may become executable).
static INTERNAL: [AtomicU64; MAX_SYSCALL / 64] = [ZERO64; MAX_SYSCALL / 64];
/// Numbers the rewriter itself must see on every call (the Syscall User Dispatch
/// backstop keeps SIGSYS deliverable and its handler installed: `sud.rs`).
static INTERNAL_ALWAYS: [AtomicU64; MAX_SYSCALL / 64] = [ZERO64; MAX_SYSCALL / 64];

fn bit(set: &[AtomicU64], n: usize) -> bool {
    set[n / 64].load(Relaxed) & (1 << (n % 64)) != 0
}

fn set_bit(set: &[AtomicU64], n: usize, on: bool) {
    if on {
        set[n / 64].fetch_or(1 << (n % 64), Relaxed);
    } else {
        set[n / 64].fetch_and(!(1 << (n % 64)), Relaxed);
    }
}

fn special_class(nr: usize) -> Option<u8> {
    match nr as i64 {
        libc::SYS_rt_sigreturn => Some(class::SIGRETURN),
        libc::SYS_clone => Some(class::CLONE),
        libc::SYS_vfork => Some(class::VFORK),
        libc::SYS_clone3 => Some(class::CLONE3),
        libc::SYS_exit => Some(class::EXIT),
        _ => None,
    }
}

fn recompute(nr: usize) {
    let c = if let Some(c) = special_class(nr) {
        c
    } else if bit(&USER_ALWAYS, nr) || bit(&INTERNAL_ALWAYS, nr) {
        class::HANDLED
    } else if bit(&INTERNAL, nr) {
        class::EXEC_MAPPING
    } else if bit(&USER_FD, nr) {
        class::FD_BASED
    } else {
        class::PASS
    };
    CLASS[nr].store(c, Relaxed);
}

/// Every call of `nr` goes to the handler (`on`), or no longer does. `rt_sigreturn`,
/// `clone`, `clone3`, `vfork` and `exit` are always handled in assembly and never reach it.
pub fn handle_syscall(nr: u32, on: bool) {
    let nr = nr as usize;
    if nr < MAX_SYSCALL {
        set_bit(&USER_ALWAYS, nr, on);
        recompute(nr);
    }
}

/// Calls of `nr` whose first argument is an fd marked with [`mark_fd`] go to the handler.
pub fn handle_fd_syscall(nr: u32, on: bool) {
    let nr = nr as usize;
    if nr < MAX_SYSCALL {
        set_bit(&USER_FD, nr, on);
        recompute(nr);
    }
}

/// Marks `fd` as the shim's (`ours`), or clears it. Fds outside `0..MAX_FD` are ignored.
pub fn mark_fd(fd: i32, ours: bool) {
    if (0..MAX_FD as i32).contains(&fd) {
        set_bit(&FD_BITS, fd as usize, ours);
    }
}

/// True when `fd` is marked as the shim's.
pub fn is_fd_marked(fd: i32) -> bool {
    (0..MAX_FD as i32).contains(&fd) && bit(&FD_BITS, fd as usize)
}

/// True when the handler asked for this call (by number, or by number and marked fd).
pub fn wants(nr: i64, first_arg: i64) -> bool {
    if !(0..MAX_SYSCALL as i64).contains(&nr) {
        return false;
    }
    let nr = nr as usize;
    bit(&USER_ALWAYS, nr) || (bit(&USER_FD, nr) && is_fd_marked(first_arg as i32))
}

/// Numbers whose calls reach Rust code (the handler, or the rewriter's own check of
/// mappings that become executable): every number but the ones the assembly entry
/// passes to the kernel at once or handles itself. For fd-based numbers only calls on a
/// marked fd go on, for mapping numbers only calls with `PROT_EXEC`. Sorted.
pub fn routed_numbers() -> Vec<u32> {
    (0..MAX_SYSCALL)
        .filter(|&nr| {
            matches!(
                CLASS[nr].load(Relaxed),
                class::HANDLED | class::FD_BASED | class::EXEC_MAPPING
            )
        })
        .map(|nr| nr as u32)
        .collect()
}

pub(crate) fn handle_internally(nr: i64) {
    set_bit(&INTERNAL, nr as usize, true);
    recompute(nr as usize);
}

/// Every call of `nr` reaches the rewriter's own dispatch (and the handler only when it
/// asked for the number too: [`wants`]).
pub(crate) fn handle_always_internally(nr: i64) {
    set_bit(&INTERNAL_ALWAYS, nr as usize, true);
    recompute(nr as usize);
}

pub(crate) fn init_specials() {
    for nr in [
        libc::SYS_rt_sigreturn,
        libc::SYS_clone,
        libc::SYS_vfork,
        libc::SYS_clone3,
        libc::SYS_exit,
    ] {
        recompute(nr as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_requests() {
        handle_syscall(libc::SYS_getppid as u32, true);
        assert_eq!(
            CLASS[libc::SYS_getppid as usize].load(Relaxed),
            class::HANDLED
        );
        handle_syscall(libc::SYS_getppid as u32, false);
        assert_eq!(CLASS[libc::SYS_getppid as usize].load(Relaxed), class::PASS);

        handle_fd_syscall(libc::SYS_read as u32, true);
        assert_eq!(CLASS[0].load(Relaxed), class::FD_BASED);
        assert!(!wants(libc::SYS_read, 7));
        mark_fd(7, true);
        assert!(wants(libc::SYS_read, 7) && is_fd_marked(7) && !is_fd_marked(8));
        mark_fd(7, false);
        assert!(!wants(libc::SYS_read, 7));
        handle_fd_syscall(libc::SYS_read as u32, false);
        assert_eq!(CLASS[0].load(Relaxed), class::PASS);
        mark_fd(-1, true);
        mark_fd(MAX_FD as i32, true);
        assert!(!is_fd_marked(-1) && !is_fd_marked(MAX_FD as i32));

        // The specials stay in assembly whatever the handler asks.
        handle_syscall(libc::SYS_clone as u32, true);
        assert_eq!(CLASS[libc::SYS_clone as usize].load(Relaxed), class::CLONE);
        handle_syscall(libc::SYS_clone as u32, false);
        assert!(!wants(4000, 0));
        assert!(!routed_numbers().contains(&(libc::SYS_clone as u32)));

        handle_syscall(libc::SYS_getppid as u32, true);
        handle_fd_syscall(libc::SYS_read as u32, true);
        let routed = routed_numbers();
        assert!(routed.contains(&(libc::SYS_getppid as u32)) && routed.contains(&0));
        handle_syscall(libc::SYS_getppid as u32, false);
        handle_fd_syscall(libc::SYS_read as u32, false);
        let routed = routed_numbers();
        assert!(!routed.contains(&(libc::SYS_getppid as u32)) && !routed.contains(&0));

        // The rewriter's own numbers go on only with PROT_EXEC, unless the handler asks
        // for every call (trace).
        let nr = libc::SYS_pkey_mprotect;
        handle_internally(nr);
        assert_eq!(CLASS[nr as usize].load(Relaxed), class::EXEC_MAPPING);
        assert!(routed_numbers().contains(&(nr as u32)));
        handle_syscall(nr as u32, true);
        assert_eq!(CLASS[nr as usize].load(Relaxed), class::HANDLED);
        handle_syscall(nr as u32, false);
        assert_eq!(CLASS[nr as usize].load(Relaxed), class::EXEC_MAPPING);
    }
}
