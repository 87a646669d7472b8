//! Syscall User Dispatch (SUD, Linux ≥ 5.11): the backstop for `syscall` instructions the
//! rewriter never saw (code a JIT writes into memory that is already executable, a site
//! it left alone).
//!
//! `prctl(PR_SET_SYSCALL_USER_DISPATCH, ON, start, len, &selector)` per thread: a system
//! call made from outside `[start, start+len)` (the hook's own object, where every
//! rewritten call and every raw call of ours is made) while the thread's selector byte
//! reads BLOCK does not run; the kernel sends the thread a SIGSYS (`si_code`
//! SYS_USER_DISPATCH, `si_call_addr` after the instruction) with `%rax` rolled back to
//! the number. The selector lives in the hook's per-thread block and follows the "inside
//! the shim" flag (ALLOW inside, BLOCK outside), so nothing of ours traps.
//!
//! The SIGSYS handler ([`on_sigsys`]) rewrites the site to `call *%rax` when the
//! rewriter's rules allow it (a real two-byte `syscall` in a private executable mapping,
//! not the vDSO, no red zone live after it, not across a cache line, so the two-byte
//! store is atomic for a thread running it) and then makes the interrupted context look
//! as if that `call` had run: return address pushed, `%rip` at the hook entry. The call
//! then takes exactly the path of every rewritten site (pre-filter, dispatch, clone,
//! vfork, rt_sigreturn handling) and every later call from the site is an ordinary
//! hooked one. A site that cannot be rewritten traps at every call; the handler serves
//! it through the same dispatch, in the signal handler.
//!
//! The kernel clears SUD in every new task and at exec: the hook's clone paths turn it
//! on again in each child with the child's own selector (`hook.rs`, label 95).
//!
//! SIGSYS stays the app's: its `rt_sigaction(SIGSYS)` is virtualised (ours stays
//! installed), a SIGSYS that SUD did not cause (seccomp's SECCOMP_RET_TRAP, kill) goes to
//! the app's handler with its siginfo and context, or to the default action. The kernel
//! kills a thread whose SUD SIGSYS is blocked, so SIGSYS is taken out of every mask the
//! app sets (rt_sigprocmask, sa_mask).

use crate::{hook, scan, sys, SyscallArgs, PASSTHROUGH};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// `si_code` of a SIGSYS sent by Syscall User Dispatch.
const SYS_USER_DISPATCH: i32 = 2;
const SIGSYS_BIT: u64 = 1 << (libc::SIGSYS - 1);
/// Signals no mask can hold.
const UNBLOCKABLE: u64 = 1 << (libc::SIGKILL - 1) | 1 << (libc::SIGSTOP - 1);
/// The kernel's flag for a caller-supplied `rt_sigreturn` stub.
const SA_RESTORER: u64 = 0x0400_0000;
const SEL_ALLOW: u8 = 0;
const SEL_BLOCK: u8 = 1;
/// Lowest address an app pointer may have (the trampoline page is below).
const MIN_APP_ADDR: usize = 0x10000;

/// Sites rewritten at their first call (found by SUD).
pub(crate) static SITES: AtomicUsize = AtomicUsize::new(0);
/// System calls that trapped: each late site's first call, and every call of a site
/// that cannot be rewritten.
pub(crate) static TRAPS: AtomicU64 = AtomicU64::new(0);
/// Sites found unpatchable (direct-mapped by address), so their later calls skip the
/// look at /proc/self/maps. A stale entry (new code at the address) only costs speed.
static UNPATCHABLE: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
/// The vDSO: never patched (its fallback calls trap and are served).
static VDSO: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The app's own SIGSYS disposition (what it asked for; ours stays in the kernel).
static APP_HANDLER: AtomicUsize = AtomicUsize::new(0);
static APP_FLAGS: AtomicU64 = AtomicU64::new(0);
static APP_RESTORER: AtomicUsize = AtomicUsize::new(0);
static APP_MASK: AtomicU64 = AtomicU64::new(0);

/// The kernel's `struct sigaction` (x86-64).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Room for an argument the app points at, copied with SIGSYS taken out of its mask.
#[derive(Default)]
pub(crate) struct ArgCopy {
    action: KSigaction,
    set: u64,
    used: bool,
}

impl ArgCopy {
    /// True when an argument of the call now points here: whoever makes the call must
    /// make it before this copy goes.
    pub(crate) fn used(&self) -> bool {
        self.used
    }
}

/// Why SUD is not on. The hook works as before: code that becomes executable through
/// `mmap`/`mprotect` is still rewritten; code written into memory that already was
/// executable (a JIT's RWX pages) runs unhooked.
#[derive(Debug)]
pub enum SudError {
    /// `prctl` refused: EINVAL on kernels before 5.11 or built without
    /// CONFIG_SYSCALL_USER_DISPATCH (only the generic-entry architectures have it),
    /// EPERM where the administrator denies it (`kernel.syscall_user_dispatch=0`).
    Prctl(i32),
    /// Installing our SIGSYS handler failed.
    Sigaction(i32),
}

impl core::fmt::Display for SudError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SudError::Prctl(e) if *e == libc::EINVAL => write!(
                f,
                "this kernel has no Syscall User Dispatch (needs Linux 5.11+ with \
                 CONFIG_SYSCALL_USER_DISPATCH)"
            ),
            SudError::Prctl(e) if *e == libc::EPERM => write!(
                f,
                "Syscall User Dispatch is denied here (sysctl kernel.syscall_user_dispatch=0)"
            ),
            SudError::Prctl(e) => {
                write!(f, "prctl(PR_SET_SYSCALL_USER_DISPATCH) failed: errno {e}")
            }
            SudError::Sigaction(e) => write!(f, "installing the SIGSYS handler failed: errno {e}"),
        }
    }
}

/// True when SUD is on in this process.
pub(crate) fn is_on() -> bool {
    hook::SUD_ON.load(Relaxed) != 0
}

/// Turns SUD on for the process (this thread now; new threads and forked children in
/// the hook's clone paths). `[start, end)` is the hook's own object. Call once, from
/// `install`, inside the shim, while the process has one thread.
pub(crate) fn enable(start: usize, end: usize, vdso: (usize, usize)) -> Result<(), SudError> {
    hook::SUD_PID.store(sys::getpid() as u64, Relaxed);
    hook::SUD_START.store(start as u64, Relaxed);
    hook::SUD_LEN.store((end - start) as u64, Relaxed);
    VDSO[0].store(vdso.0, Relaxed);
    VDSO[1].store(vdso.1, Relaxed);
    let ours = KSigaction {
        handler: on_sigsys as *const () as usize,
        // NODEFER: a SIGSYS blocked while SUD traps kills the thread (the kernel resets
        // a blocked forced signal to its default), so ours never blocks it.
        flags: (libc::SA_SIGINFO | libc::SA_NODEFER) as u64 | SA_RESTORER,
        restorer: hook::fastnet_sud_sigreturn as *const () as usize,
        mask: 0,
    };
    let mut before = KSigaction::default();
    // SAFETY: our handler and restorer, and a struct of the kernel's layout.
    let r = unsafe { sigaction_raw(libc::SIGSYS, Some(&ours), Some(&mut before)) };
    if r < 0 {
        return Err(SudError::Sigaction(-r as i32));
    }
    let r = enable_this_thread();
    if r < 0 {
        // SAFETY: puts back what was there.
        unsafe { sigaction_raw(libc::SIGSYS, Some(&before), None) };
        return Err(SudError::Prctl(-r as i32));
    }
    // Whatever SIGSYS disposition came over exec (SIG_IGN, SIG_DFL) is the app's.
    store_app_action(&before);
    for nr in [libc::SYS_rt_sigaction, libc::SYS_rt_sigprocmask] {
        crate::filter::handle_always_internally(nr);
    }
    unblock_sigsys();
    hook::SUD_ON.store(1, Relaxed);
    Ok(())
}

/// `prctl(PR_SET_SYSCALL_USER_DISPATCH, ON)` for the calling thread with its own
/// selector (set to match its flag first). The raw result.
pub(crate) fn enable_this_thread() -> i64 {
    hook::set_selector(if crate::is_in_shim() {
        SEL_ALLOW
    } else {
        SEL_BLOCK
    });
    // SAFETY: the selector is this thread's own byte, live as long as the thread.
    unsafe {
        sys::syscall6(
            libc::SYS_prctl,
            hook::PR_SET_SYSCALL_USER_DISPATCH as i64,
            1,
            hook::SUD_START.load(Relaxed) as i64,
            hook::SUD_LEN.load(Relaxed) as i64,
            hook::selector() as i64,
            0,
        )
    }
}

/// An inherited mask may hold SIGSYS (the kernel keeps it over exec).
fn unblock_sigsys() {
    let set = SIGSYS_BIT;
    // SAFETY: an 8-byte set of our own.
    unsafe {
        sys::syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_UNBLOCK as i64,
            &set as *const u64 as i64,
            0,
            8,
            0,
            0,
        )
    };
}

fn store_app_action(a: &KSigaction) {
    APP_HANDLER.store(a.handler, Relaxed);
    APP_FLAGS.store(a.flags, Relaxed);
    APP_RESTORER.store(a.restorer, Relaxed);
    APP_MASK.store(a.mask, Relaxed);
}

/// rt_sigaction(2) on our own structs, straight to the kernel.
///
/// # Safety
/// `act`'s handler must be a valid handler for the kernel to install.
unsafe fn sigaction_raw(sig: i32, act: Option<&KSigaction>, old: Option<&mut KSigaction>) -> i64 {
    // SAFETY: both pointers are null or point at live structs of the kernel's layout.
    unsafe {
        sys::syscall6(
            libc::SYS_rt_sigaction,
            sig as i64,
            act.map_or(0, |a| a as *const KSigaction as i64),
            old.map_or(0, |o| o as *mut KSigaction as i64),
            8,
            0,
            0,
        )
    }
}

/// Reads a `T` the app points at; EFAULT for the pointers the kernel would refuse that
/// can be told without a system call (as the shim's own app-memory reads do).
///
/// # Safety
/// `ptr` is what the app passed for a `T`.
unsafe fn app_read<T: Copy>(ptr: i64) -> Result<T, i64> {
    if (ptr as usize) < MIN_APP_ADDR {
        return Err(-(libc::EFAULT as i64));
    }
    // SAFETY: caller's contract; unaligned reads are allowed.
    Ok(unsafe { (ptr as *const T).read_unaligned() })
}

/// # Safety
/// `ptr` is what the app passed to be written with a `T`.
unsafe fn app_write<T: Copy>(ptr: i64, v: T) -> Result<(), i64> {
    if (ptr as usize) < MIN_APP_ADDR {
        return Err(-(libc::EFAULT as i64));
    }
    // SAFETY: caller's contract.
    unsafe { (ptr as *mut T).write_unaligned(v) };
    Ok(())
}

/// Calls SUD must see before anyone else: the app's `rt_sigaction(SIGSYS)` (answered
/// here, from the virtual disposition), and masks holding SIGSYS (the argument is
/// pointed at a copy without it, in `copy`). `Some` is the call's result.
pub(crate) fn intercept(a: &mut SyscallArgs, copy: &mut ArgCopy) -> Option<i64> {
    if !is_on() {
        return None;
    }
    match a.nr {
        libc::SYS_rt_sigaction if a.args[0] == libc::SIGSYS as i64 => {
            if sys::getpid() as u64 != hook::SUD_PID.load(Relaxed) {
                // A vfork/posix_spawn child resetting its handlers before exec: its
                // handler table is its own in the kernel, the virtual one is its
                // parent's memory.
                return None;
            }
            Some(app_sigaction(a.args[1], a.args[2], a.args[3]))
        }
        libc::SYS_rt_sigaction if a.args[1] != 0 && a.args[3] == 8 => {
            // SAFETY: the app passed a struct sigaction for this call.
            let act: KSigaction = match unsafe { app_read(a.args[1]) } {
                Ok(v) => v,
                Err(e) => return Some(e),
            };
            if act.mask & SIGSYS_BIT != 0 {
                copy.action = KSigaction {
                    mask: act.mask & !SIGSYS_BIT,
                    ..act
                };
                copy.used = true;
                a.args[1] = &copy.action as *const KSigaction as i64;
            }
            None
        }
        libc::SYS_rt_sigprocmask
            if a.args[1] != 0 && a.args[3] == 8 && a.args[0] != libc::SIG_UNBLOCK as i64 =>
        {
            // SAFETY: the app passed a sigset for this call.
            let set: u64 = match unsafe { app_read(a.args[1]) } {
                Ok(v) => v,
                Err(e) => return Some(e),
            };
            if set & SIGSYS_BIT != 0 {
                copy.set = set & !SIGSYS_BIT;
                copy.used = true;
                a.args[1] = &copy.set as *const u64 as i64;
            }
            None
        }
        _ => None,
    }
}

/// The app's rt_sigaction(SIGSYS, act, oldact): reads and writes the virtual disposition.
fn app_sigaction(act: i64, oldact: i64, size: i64) -> i64 {
    if size != 8 {
        return -(libc::EINVAL as i64);
    }
    let new = if act != 0 {
        // SAFETY: the app passed a struct sigaction for this call.
        match unsafe { app_read::<KSigaction>(act) } {
            Ok(v) => Some(v),
            Err(e) => return e,
        }
    } else {
        None
    };
    if oldact != 0 {
        let old = KSigaction {
            handler: APP_HANDLER.load(Relaxed),
            flags: APP_FLAGS.load(Relaxed),
            restorer: APP_RESTORER.load(Relaxed),
            mask: APP_MASK.load(Relaxed),
        };
        // SAFETY: the app passed oldact to be written.
        if let Err(e) = unsafe { app_write(oldact, old) } {
            return e;
        }
    }
    if let Some(n) = new {
        store_app_action(&KSigaction {
            mask: n.mask & !SIGSYS_BIT,
            ..n
        });
    }
    0
}

// siginfo_t for SIGSYS on x86-64: si_signo, si_errno, si_code (ints), then
// `void *si_call_addr` at 16, `int si_syscall` at 24.
const SI_CODE_AT: usize = 8;
const SI_CALL_ADDR_AT: usize = 16;
const SI_SYSCALL_AT: usize = 24;

/// Our SIGSYS handler.
extern "C" fn on_sigsys(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext (SA_SIGINFO).
    let (code, call_addr, nr) = unsafe {
        let p = info as *const u8;
        (
            (p.add(SI_CODE_AT) as *const i32).read(),
            (p.add(SI_CALL_ADDR_AT) as *const usize).read(),
            (p.add(SI_SYSCALL_AT) as *const i32).read() as i64,
        )
    };
    if code != SYS_USER_DISPATCH {
        forward_to_app(sig, info, ctx);
        return;
    }
    TRAPS.fetch_add(1, Relaxed);
    // SAFETY: as above; the context is this thread's and ours until we return.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let site = call_addr.wrapping_sub(2);
    let mut let_through = false;
    {
        let _inside = crate::in_shim();
        if patch_site(site) {
            // As if the rewritten `call *%rax` had run: the return address below the
            // app's stack pointer (the rewriter checked that nothing lives there),
            // then the hook entry with the number in %rax.
            let g = &mut uc.uc_mcontext.gregs;
            let rsp = g[libc::REG_RSP as usize] as usize - 8;
            // SAFETY: the slot the `call` would have written: below the interrupted
            // stack pointer, above our own frame (the kernel skips the red zone).
            unsafe { (rsp as *mut usize).write(call_addr) };
            g[libc::REG_RSP as usize] = rsp as i64;
            g[libc::REG_RAX as usize] = nr;
            g[libc::REG_RIP as usize] = hook::fastnet_hook_entry as *const () as i64;
        } else {
            let_through = serve(uc, nr, site);
        }
    }
    if let_through {
        // After the flag went back: the call is made again from its site, unhooked, and
        // the selector is BLOCK again when this thread next leaves the shim.
        hook::set_selector(SEL_ALLOW);
    }
}

/// Rewrites the `syscall` at `site` to `call *%rax` when the rewriter's rules allow it.
/// True when the site now holds `call *%rax` (also when another thread got there first).
fn patch_site(site: usize) -> bool {
    let slot = &UNPATCHABLE[(site >> 1) % UNPATCHABLE.len()];
    if slot.load(Relaxed) == site {
        return false;
    }
    let patched = try_patch(site);
    if !patched {
        slot.store(site, Relaxed);
    }
    patched
}

fn try_patch(site: usize) -> bool {
    let (vdso_start, vdso_end) = (VDSO[0].load(Relaxed), VDSO[1].load(Relaxed));
    if (vdso_start..vdso_end).contains(&site) || site % 64 == 63 {
        // The vDSO is never patched; a site across a cache line cannot be replaced
        // with one store another thread sees whole.
        return false;
    }
    let Some(m) = scan::find_mapping(site) else {
        return false;
    };
    if m.prot & libc::PROT_EXEC == 0
        || m.prot & libc::PROT_READ == 0
        || m.shared
        || m.special
        || site + 2 > m.end
    {
        return false;
    }
    // SAFETY: the mapping is readable and holds [site, site+2).
    let bytes = unsafe { core::slice::from_raw_parts(site as *const u8, m.end - site) };
    if bytes[..2] == [0xff, 0xd0] {
        return true;
    }
    if bytes[..2] != [0x0f, 0x05] {
        return false;
    }
    let look = &bytes[..bytes.len().min(2 + 16 * 15)];
    if scan::red_zone_live_after(look, site, site + 2) {
        return false;
    }
    let page = site & !4095;
    let writable = m.prot & libc::PROT_WRITE != 0;
    if !writable {
        // SAFETY: the page stays executable for threads running it; write is added.
        let r = unsafe { sys::mprotect(page, 4096, m.prot | libc::PROT_WRITE) };
        if sys::is_err(r) {
            return false;
        }
    }
    // SAFETY: two bytes inside one cache line of a writable mapping: a single 16-bit
    // store, which x86 makes atomic for every observer, replaces the instruction whole.
    unsafe {
        core::arch::asm!(
            "mov word ptr [{p}], {v:x}",
            p = in(reg) site,
            v = in(reg) 0xd0ffu16,
            options(nostack, preserves_flags)
        )
    };
    if !writable {
        // SAFETY: restores the protection the page had.
        unsafe { sys::mprotect(page, 4096, m.prot) };
    }
    SITES.fetch_add(1, Relaxed);
    true
}

/// Serves a trapped call whose site stays as it is, inside the signal handler. True
/// when it must instead be made again from its site with the selector ALLOW (calls
/// that cannot be made from a handler: a new thread or vfork child would start here).
fn serve(uc: &mut libc::ucontext_t, nr: i64, site: usize) -> bool {
    let g = &mut uc.uc_mcontext.gregs;
    let r = |i: libc::c_int| g[i as usize];
    let mut a = SyscallArgs {
        nr,
        args: [
            r(libc::REG_RDI),
            r(libc::REG_RSI),
            r(libc::REG_RDX),
            r(libc::REG_R10),
            r(libc::REG_R8),
            r(libc::REG_R9),
        ],
    };
    let forks_plainly = |flags: i64, stack: i64| {
        flags & (libc::CLONE_VM | libc::CLONE_VFORK) as i64 == 0 && stack == 0
    };
    let ret = match nr {
        libc::SYS_rt_sigreturn => {
            // Made from our own stub with the app's stack pointer, where its frame is.
            g[libc::REG_RIP as usize] = hook::fastnet_sud_sigreturn as *const () as i64;
            return false;
        }
        libc::SYS_fork => fork_here(&a),
        libc::SYS_clone if forks_plainly(a.args[0], a.args[1]) => fork_here(&a),
        libc::SYS_clone | libc::SYS_clone3 | libc::SYS_vfork => {
            g[libc::REG_RIP as usize] = site as i64;
            return true;
        }
        libc::SYS_rt_sigprocmask => sigprocmask_in_context(
            &mut uc.uc_sigmask,
            a.args[0],
            a.args[1],
            a.args[2],
            a.args[3],
        ),
        libc::SYS_sigaltstack => {
            let r = make(&a);
            if r == 0 && a.args[0] != 0 {
                // rt_sigreturn restores the alternate stack from the context: keep the
                // new one there.
                // SAFETY: reading the thread's settings into the context's own field.
                unsafe {
                    sys::syscall6(
                        libc::SYS_sigaltstack,
                        0,
                        &mut uc.uc_stack as *mut libc::stack_t as i64,
                        0,
                        0,
                        0,
                        0,
                    )
                };
            }
            r
        }
        _ => {
            let r = crate::dispatch(&mut a);
            if r == PASSTHROUGH {
                make(&a)
            } else {
                r
            }
        }
    };
    uc.uc_mcontext.gregs[libc::REG_RAX as usize] = ret;
    false
}

/// Makes the call as it stands.
fn make(a: &SyscallArgs) -> i64 {
    let [a0, a1, a2, a3, a4, a5] = a.args;
    // SAFETY: the app's own call, made on its behalf with its arguments.
    unsafe { sys::syscall6(a.nr, a0, a1, a2, a3, a4, a5) }
}

/// fork (or a clone without shared memory or a new stack) from inside the handler: the
/// child returns through the same signal frame, with SUD on again.
fn fork_here(a: &SyscallArgs) -> i64 {
    let r = make(a);
    if r == 0 {
        hook::SUD_PID.store(sys::getpid() as u64, Relaxed);
        enable_this_thread();
    }
    r
}

/// rt_sigprocmask on the mask the interrupted code gets back at rt_sigreturn.
fn sigprocmask_in_context(
    mask: &mut libc::sigset_t,
    how: i64,
    set: i64,
    old: i64,
    size: i64,
) -> i64 {
    if size != 8 {
        return -(libc::EINVAL as i64);
    }
    let cur_p = mask as *mut libc::sigset_t as *mut u64;
    // SAFETY: the kernel's 8-byte mask is the start of the context's sigset.
    let cur = unsafe { cur_p.read() };
    let new = if set != 0 {
        // SAFETY: the app passed a sigset for this call.
        let s: u64 = match unsafe { app_read(set) } {
            Ok(v) => v,
            Err(e) => return e,
        };
        Some(match how as i32 {
            libc::SIG_BLOCK => cur | s,
            libc::SIG_UNBLOCK => cur & !s,
            libc::SIG_SETMASK => s,
            _ => return -(libc::EINVAL as i64),
        })
    } else {
        None
    };
    if old != 0 {
        // SAFETY: the app passed oldset to be written.
        if let Err(e) = unsafe { app_write(old, cur) } {
            return e;
        }
    }
    if let Some(n) = new {
        // SAFETY: as above.
        unsafe { cur_p.write(n & !(UNBLOCKABLE | SIGSYS_BIT)) };
    }
    0
}

/// A SIGSYS that SUD did not send: the app's handler, as it asked for it, or the
/// default action (the process ends with SIGSYS, as it would have without us).
fn forward_to_app(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let h = APP_HANDLER.load(Relaxed);
    let flags = APP_FLAGS.load(Relaxed);
    // SAFETY: the kernel's siginfo.
    let code = unsafe { ((info as *const u8).add(SI_CODE_AT) as *const i32).read() };
    if h == libc::SIG_IGN && code <= 0 {
        return; // sent by a process (kill, tgkill, sigqueue): ignored as asked
    }
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // The kernel's default; a forced SIGSYS (seccomp) that is ignored kills too.
        let dfl = KSigaction {
            handler: libc::SIG_DFL,
            ..KSigaction::default()
        };
        // SAFETY: SIG_DFL needs no handler; re-sends the same siginfo to this thread.
        unsafe {
            sigaction_raw(libc::SIGSYS, Some(&dfl), None);
            let tid = sys::syscall6(libc::SYS_gettid, 0, 0, 0, 0, 0, 0);
            let r = sys::syscall6(
                libc::SYS_rt_tgsigqueueinfo,
                sys::getpid() as i64,
                tid,
                sig as i64,
                info as i64,
                0,
                0,
            );
            if r < 0 {
                sys::syscall6(
                    libc::SYS_tgkill,
                    sys::getpid() as i64,
                    tid,
                    sig as i64,
                    0,
                    0,
                    0,
                );
            }
        }
        return;
    }
    let mask = APP_MASK.load(Relaxed) & !SIGSYS_BIT;
    if mask != 0 {
        // The app's sa_mask while its handler runs; rt_sigreturn restores the mask.
        // SAFETY: an 8-byte set of our own.
        unsafe {
            sys::syscall6(
                libc::SYS_rt_sigprocmask,
                libc::SIG_BLOCK as i64,
                &mask as *const u64 as i64,
                0,
                8,
                0,
                0,
            )
        };
    }
    if flags & libc::SA_RESETHAND as u64 != 0 {
        APP_HANDLER.store(libc::SIG_DFL, Relaxed);
        APP_FLAGS.store(0, Relaxed);
    }
    if flags & libc::SA_SIGINFO as u64 != 0 {
        // SAFETY: the app registered this function as an SA_SIGINFO handler.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the app registered this function as a plain handler.
        let f: extern "C" fn(i32) = unsafe { core::mem::transmute(h) };
        f(sig);
    }
}
