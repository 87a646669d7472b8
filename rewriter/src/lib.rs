//! zpoline-style syscall hooking: find `syscall` instructions, rewrite them to
//! `call *%rax`, and land them in a trampoline page at address 0 that jumps to an assembly
//! entry with a pre-filter (see `hook.rs`).
//!
//! Use: set the filter ([`filter::handle_syscall`], [`filter::handle_fd_syscall`],
//! [`filter::mark_fd`]), then [`install`] with a [`Handler`]. The handler runs for
//! handled calls only, on the thread's alternate stack, with this thread's "inside the
//! shim" flag set (so the libc calls it makes go straight to the kernel). It returns the
//! syscall's result, or [`PASSTHROUGH`] to have the hook make the real call with the
//! (possibly changed) arguments in [`SyscallArgs`].
//!
//! Known limits: a `syscall` whose code reads the 8 bytes below `%rsp` afterwards is left
//! alone (unhooked; glibc has one, `sigaltstack` in `__longjmp_chk`). Address 0 is mapped,
//! so the kernel reads the trampoline where a syscall argument is a NULL pointer it only
//! reads from (EFAULT becomes success or EINVAL). Numbers past the sled (about 600 and
//! above, such as x32 ones) fault instead of failing with ENOSYS.
//! Threads whose `%fs` does not point at a glibc TLS block (raw `arch_prctl` users) break
//! the per-thread state used by handled calls, `vfork`, `clone` without a new stack and
//! `exit`. The vDSO is never rewritten.

mod elf;
pub mod filter;
mod hook;
mod scan;
mod sud;
pub mod sys;
mod trampoline;

pub use scan::ScanStats;
pub use sud::SudError;

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::fmt;

/// A system call as the hook saw it: number and the six argument registers
/// (rdi, rsi, rdx, r10, r8, r9). A handler may change them before passing the call on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallArgs {
    pub nr: i64,
    pub args: [i64; 6],
}

/// Returned by a [`Handler`] to have the hook make the real system call.
pub const PASSTHROUGH: i64 = i64::MIN;

/// Called for handled system calls. Must not unwind; must not call `execve`, `exit` or
/// `exit_group` itself (return [`PASSTHROUGH`] for those: the hook then clears the
/// thread's flag first, which a `vfork` parent sharing it relies on).
pub type Handler = extern "C" fn(args: &mut SyscallArgs) -> i64;

/// What [`install`] needs.
#[derive(Clone, Copy)]
pub struct Config {
    /// Called for the numbers enabled in [`filter`]; `None` passes everything through.
    pub handler: Option<Handler>,
    /// Print a one-line summary of the rewrite on stderr.
    pub log: bool,
    /// Save vector state with xsave/xrstor even where explicit register moves suffice
    /// (slower; for testing the fallback).
    pub force_xsave: bool,
    /// Turn on Syscall User Dispatch (`sud.rs`) where the kernel has it: a `syscall`
    /// the rewrite missed traps at its first call and is rewritten then.
    pub sud: bool,
}

/// What [`install`] did.
#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    /// Totals over the executable mappings present at install time.
    pub stats: ScanStats,
    /// Path of the object the hook lives in (never rewritten).
    pub own_object: String,
    /// Why Syscall User Dispatch is off although asked for (`None`: on, or not asked).
    pub sud_unavailable: Option<String>,
}

/// Why the hook is not installed. The program runs on unhooked.
#[derive(Debug)]
pub enum InstallError {
    /// The page at address 0 is forbidden (vm.mmap_min_addr and no CAP_SYS_RAWIO).
    AddressZeroDenied { mmap_min_addr: Option<u64> },
    /// Something is already mapped at address 0.
    AddressZeroInUse,
    /// Installed already in this process.
    AlreadyInstalled,
    /// The CPU lacks `xsave` (needed to preserve vector state around the handler).
    NoXsave,
    /// A system call failed (which, and the errno).
    Sys(&'static str, i32),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::AddressZeroDenied { mmap_min_addr } => write!(
                f,
                "cannot map the trampoline page at address 0 (vm.mmap_min_addr={}, no \
                 CAP_SYS_RAWIO): run as root or `sysctl -w vm.mmap_min_addr=0`",
                mmap_min_addr.map_or("?".to_string(), |v| v.to_string())
            ),
            InstallError::AddressZeroInUse => write!(f, "address 0 is already mapped"),
            InstallError::AlreadyInstalled => write!(f, "the hook is already installed"),
            InstallError::NoXsave => write!(f, "the CPU lacks xsave"),
            InstallError::Sys(what, errno) => write!(f, "{what} failed: errno {errno}"),
        }
    }
}

impl std::error::Error for InstallError {}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The hook's own object: `[OWN_START, OWN_END)` is never rewritten.
static OWN_START: AtomicUsize = AtomicUsize::new(0);
static OWN_END: AtomicUsize = AtomicUsize::new(0);
/// Sites rewritten in code mapped after install (dlopen, mmap/mprotect with PROT_EXEC).
static LATE_REWRITTEN: AtomicUsize = AtomicUsize::new(0);

/// Sets this thread's "inside the shim" flag for as long as it lives: every system call
/// the thread makes meanwhile (through libc, std, crates) goes straight to the kernel.
/// Nests: dropping restores the previous state.
#[must_use = "the flag is cleared again when the guard drops"]
pub struct InShim {
    prev: u64,
}

/// Enters the shim on this thread; see [`InShim`].
pub fn in_shim() -> InShim {
    let prev = hook::in_shim_flag();
    hook::set_in_shim_flag(1);
    InShim { prev }
}

impl Drop for InShim {
    fn drop(&mut self) {
        if self.prev == 0 {
            // Shim code may have mapped code (a dlopen of its own) that went unrewritten.
            rescan_if_missed();
        }
        hook::set_in_shim_flag(self.prev);
    }
}

/// True when this thread is inside the shim (a handler runs, or an [`InShim`] lives).
pub fn is_in_shim() -> bool {
    hook::in_shim_flag() != 0
}

/// True once [`install`] succeeded in this process.
pub fn is_installed() -> bool {
    INSTALLED.load(Relaxed)
}

/// Calls handled in assembly, which never reach the handler:
/// `[(rt_sigreturn, n), (clone, n), (vfork, n), (clone3, n), (exit, n)]`.
pub fn special_counts() -> [(i64, u64); 5] {
    let c = |i: usize| hook::SPECIAL_COUNTS[i].load(Relaxed);
    [
        (libc::SYS_rt_sigreturn, c(0)),
        (libc::SYS_clone, c(1)),
        (libc::SYS_vfork, c(2)),
        (libc::SYS_clone3, c(3)),
        (libc::SYS_exit, c(4)),
    ]
}

/// Reads and zeroes [`special_counts`] (for a counter that flushes per process).
pub fn take_special_counts() -> [(i64, u64); 5] {
    let mut out = special_counts();
    for (i, o) in out.iter_mut().enumerate() {
        o.1 = hook::SPECIAL_COUNTS[i].swap(0, Relaxed);
    }
    out
}

/// Per-thread alternate stacks currently mapped (threads that made a handled call and
/// have not exited).
pub fn alt_stacks() -> u64 {
    hook::ALT_STACKS.load(Relaxed)
}

/// Sites rewritten in code mapped after install.
pub fn late_rewritten() -> usize {
    LATE_REWRITTEN.load(Relaxed)
}

/// True when Syscall User Dispatch backs the rewrite in this process.
pub fn sud_active() -> bool {
    sud::is_on()
}

/// Sites found by Syscall User Dispatch at their first call and rewritten.
pub fn sud_sites() -> usize {
    sud::SITES.load(Relaxed)
}

/// System calls that trapped to the SUD handler: each late site's first call, and
/// every call of a site that cannot be rewritten (vDSO fallbacks, red-zone sites).
pub fn sud_traps() -> u64 {
    sud::TRAPS.load(Relaxed)
}

fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, sub)
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ecx=0 is valid once OSXSAVE is set (checked by the caller).
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (hi as u64) << 32 | lo as u64
}

fn setup_xsave(force_xsave: bool) -> Result<(), InstallError> {
    if cpuid(1, 0).ecx & (1 << 27) == 0 {
        return Err(InstallError::NoXsave); // OSXSAVE: xsave usable
    }
    // ebx: bytes needed for the components enabled in XCR0 (standard form, an upper
    // bound for the compacted form too).
    let size = cpuid(0xd, 0).ebx as u64;
    let xsavec = cpuid(0xd, 1).eax & (1 << 1) != 0;
    hook::USE_XSAVEC.store(xsavec as u8, Relaxed);
    // Which registers the handler (Rust, and the libc it calls: glibc's memcpy uses
    // ymm16-31 and mask registers on AVX-512 machines) may clobber. Explicit moves of
    // those are ~10x cheaper than xsave+xrstor. State beyond them (AMX tiles) means
    // xsave. The mode needs no more room than the xsave area.
    let xcr0 = xcr0();
    const AMX: u64 = 3 << 17;
    let mode = if force_xsave || xcr0 & AMX != 0 {
        hook::VEC_XSAVE
    } else if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        hook::VEC_AVX512
    } else if std::arch::is_x86_feature_detected!("avx") {
        hook::VEC_AVX
    } else {
        hook::VEC_SSE
    };
    hook::VEC_MODE.store(mode, Relaxed);
    hook::XSAVE_SIZE.store(size.max(576).max(2048 + 64), Relaxed);
    Ok(())
}

fn mmap_min_addr() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Maps the trampoline page at 0 and rewrites every `syscall` in the executable mappings
/// (main program, ld.so, libc, other libraries; never the object this crate is linked
/// into, `[vdso]` or `[vsyscall]`). From then on code mapped executable later is
/// rewritten before the mapping call returns.
///
/// Call it once, early (the shim's constructor), while the process has one thread.
pub fn install(config: &Config) -> Result<InstallReport, InstallError> {
    if INSTALLED.swap(true, Relaxed) {
        return Err(InstallError::AlreadyInstalled);
    }
    let result = install_inner(config);
    if result.is_err() {
        INSTALLED.store(false, Relaxed);
    }
    result
}

fn install_inner(config: &Config) -> Result<InstallReport, InstallError> {
    let _guard = in_shim();
    setup_xsave(config.force_xsave)?;
    if let Some(h) = config.handler {
        HANDLER.store(h as *mut (), Relaxed);
    }
    filter::init_specials();
    // Find our own object before anything is rewritten.
    let maps_text =
        scan::read_maps().map_err(|e| InstallError::Sys("read /proc/self/maps", -e as i32))?;
    let maps = scan::parse_maps(&maps_text);
    let entry = hook::fastnet_hook_entry as *const () as usize;
    let own_path = maps
        .iter()
        .find(|m| (m.start..m.end).contains(&entry))
        .map(|m| m.path.clone())
        .unwrap_or_default();
    let own: Vec<_> = maps
        .iter()
        .filter(|m| !own_path.is_empty() && m.path == own_path)
        .collect();
    OWN_START.store(own.iter().map(|m| m.start).min().unwrap_or(0), Relaxed);
    OWN_END.store(own.iter().map(|m| m.end).max().unwrap_or(0), Relaxed);

    trampoline::map_at_zero(entry as u64).map_err(|e| match e {
        trampoline::MapError::Denied => InstallError::AddressZeroDenied {
            mmap_min_addr: mmap_min_addr(),
        },
        trampoline::MapError::Occupied => InstallError::AddressZeroInUse,
        trampoline::MapError::Other(what, errno) => InstallError::Sys(what, -errno as i32),
    })?;
    // From now on mappings that become executable are rewritten as they appear.
    for nr in [libc::SYS_mmap, libc::SYS_mprotect, libc::SYS_pkey_mprotect] {
        filter::handle_internally(nr);
    }

    let mut stats = ScanStats::default();
    for m in &maps {
        if !rewritable(m, &own_path) {
            continue;
        }
        let mut code = [(0, 0); elf::MAX_RANGES];
        let (n, starts) = code_of_file_mapping(m, &mut code);
        // SAFETY: an executable private mapping of this process; only this thread runs
        // (install happens in the constructor), and the patch keeps instruction lengths.
        unsafe {
            scan::rewrite_range(
                m.start,
                m.end,
                m.prot,
                n.map(|n| &code[..n]),
                &starts,
                &mut stats,
            )
        }
        .map_err(|e| InstallError::Sys("mprotect", -e as i32))?;
    }
    let mut sud_unavailable = None;
    if config.sud {
        let vdso = maps
            .iter()
            .find(|m| m.path == "[vdso]")
            .map_or((0, 0), |m| (m.start, m.end));
        if let Err(e) = sud::enable(OWN_START.load(Relaxed), OWN_END.load(Relaxed), vdso) {
            sud_unavailable = Some(e.to_string());
        }
    }
    if config.log {
        eprintln!(
            "fastnet: hook installed: {} syscall sites rewritten in {} ranges ({} KiB), {} \
             left alone (red zone live after the site); syscall user dispatch {}",
            stats.rewritten,
            stats.ranges,
            stats.bytes / 1024,
            stats.red_zone_skipped,
            match (&sud_unavailable, config.sud) {
                (None, true) => "on",
                (None, false) => "off (FASTNET_SUD=0)",
                (Some(_), _) => "unavailable",
            }
        );
    }
    Ok(InstallReport {
        stats,
        own_object: own_path,
        sud_unavailable,
    })
}

/// The code sections of a file-backed mapping (`None`: not known, sweep it all), and
/// the function starts inside them. Checks that the file on disk is still the one mapped
/// (same inode).
fn code_of_file_mapping(
    m: &scan::MapsEntry,
    out: &mut [(usize, usize); elf::MAX_RANGES],
) -> (Option<usize>, Vec<usize>) {
    let none = (None, Vec::new());
    if !m.path.starts_with('/') {
        return none;
    }
    let Ok(path) = std::ffi::CString::new(m.path.as_bytes()) else {
        return none;
    };
    let fd = sys::open(&path, libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if sys::is_err(fd) {
        return none;
    }
    let fd = fd as i32;
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes one struct stat into `st`.
    let r = unsafe { sys::syscall3(libc::SYS_fstat, fd as i64, &mut st as *mut _ as i64, 0) };
    let n = if r == 0 && st.st_ino == m.inode {
        elf::exec_ranges(fd, m.offset, m.start, m.end - m.start, out)
    } else {
        None
    };
    let starts = match n {
        Some(n) => elf::function_starts(fd, m.offset, m.start, &out[..n]),
        None => Vec::new(),
    };
    sys::close(fd);
    (n, starts)
}

/// When a `mmap`/`mprotect` passed through while this thread was inside the shim, scans
/// the executable mappings again and rewrites what is new (code already rewritten has
/// no `syscall` left to patch). Call with the thread's flag set.
fn rescan_if_missed() {
    if !INSTALLED.load(Relaxed) || !hook::take_missed_mapping() {
        return;
    }
    let Ok(text) = scan::read_maps() else { return };
    let (own_start, own_end) = (OWN_START.load(Relaxed), OWN_END.load(Relaxed));
    let mut stats = ScanStats::default();
    for m in scan::parse_maps(&text) {
        if !rewritable(&m, "") || (m.start < own_end && m.end > own_start) {
            continue;
        }
        let mut code = [(0, 0); elf::MAX_RANGES];
        let (n, starts) = code_of_file_mapping(&m, &mut code);
        // SAFETY: as for mappings made executable after install; code already rewritten
        // holds no `syscall` to patch, and patches keep instruction lengths.
        let _ = unsafe {
            scan::rewrite_range(
                m.start,
                m.end,
                m.prot,
                n.map(|n| &code[..n]),
                &starts,
                &mut stats,
            )
        };
    }
    LATE_REWRITTEN.fetch_add(stats.rewritten, Relaxed);
}

/// True for an executable private mapping the rewriter may patch.
fn rewritable(m: &scan::MapsEntry, own_path: &str) -> bool {
    !(m.prot & libc::PROT_EXEC == 0
        || m.start == 0
        || m.shared
        || (!own_path.is_empty() && m.path == own_path)
        || matches!(
            m.path.as_str(),
            "[vdso]" | "[vsyscall]" | "[vvar]" | "[uprobes]"
        ))
}

/// Called by the assembly entry for handled calls (on the alternate stack, flag set).
extern "C" fn dispatch(args: &mut SyscallArgs) -> i64 {
    let mut copy = sud::ArgCopy::default();
    if let Some(r) = sud::intercept(args, &mut copy) {
        return r;
    }
    let mut ret = PASSTHROUGH;
    if filter::wants(args.nr, args.args[0]) {
        let h = HANDLER.load(Relaxed);
        if !h.is_null() {
            // SAFETY: only `install` stores into HANDLER, and only a `Handler`.
            let h: Handler = unsafe { core::mem::transmute::<*mut (), Handler>(h) };
            ret = h(args);
        }
    }
    if ret == PASSTHROUGH {
        if let Some(r) = map_executable(args) {
            ret = r;
        }
    }
    if ret == PASSTHROUGH && copy.used() {
        // An argument points at `copy`, which goes when this returns: make the call now.
        let [a0, a1, a2, a3, a4, a5] = args.args;
        // SAFETY: the app's own call, made on its behalf (one argument a copy of its own).
        ret = unsafe { sys::syscall6(args.nr, a0, a1, a2, a3, a4, a5) };
    }
    rescan_if_missed();
    ret
}

/// For `mmap`/`mprotect`/`pkey_mprotect` that make memory executable: makes the call,
/// then rewrites the new code before returning. `None` for every other call.
fn map_executable(a: &SyscallArgs) -> Option<i64> {
    let [a0, a1, a2, a3, a4, a5] = a.args;
    let prot = a2 as i32;
    if prot & libc::PROT_EXEC == 0 {
        return None;
    }
    let (start, len) = match a.nr {
        libc::SYS_mmap => {
            // A shared file mapping cannot be patched without writing the file.
            if a3 as i32 & libc::MAP_SHARED != 0 && a4 as i32 >= 0 {
                return None;
            }
            // SAFETY: the caller's own mmap, made on its behalf with its arguments.
            let r = unsafe { sys::syscall6(a.nr, a0, a1, a2, a3, a4, a5) };
            if sys::is_err(r) {
                return Some(r);
            }
            (r as usize, a1 as usize)
        }
        libc::SYS_mprotect | libc::SYS_pkey_mprotect => {
            // SAFETY: the caller's own call, made on its behalf with its arguments.
            let r = unsafe { sys::syscall6(a.nr, a0, a1, a2, a3, a4, a5) };
            if r != 0 {
                return Some(r);
            }
            if (a0 as usize) < OWN_END.load(Relaxed) && (a0 + a1) as usize > OWN_START.load(Relaxed)
            {
                return Some(r);
            }
            (a0 as usize, a1 as usize)
        }
        _ => return None,
    };
    let end = (start + len + 4095) & !4095;
    let mut stats = ScanStats::default();
    // A file mapped by mmap (dlopen): its section headers say where the code is.
    let mut code = [(0, 0); elf::MAX_RANGES];
    let n = if a.nr == libc::SYS_mmap && a3 as i32 & libc::MAP_ANONYMOUS == 0 && a4 >= 0 {
        elf::exec_ranges(a4 as i32, a5 as u64, start, end - start, &mut code)
    } else {
        None
    };
    if start != 0 && end > start {
        // SAFETY: the range was just mapped or made executable by this call, which has not
        // returned to its caller yet, so nothing runs the new code.
        let _ = unsafe {
            scan::rewrite_range(start, end, prot, n.map(|n| &code[..n]), &[], &mut stats)
        };
        LATE_REWRITTEN.fetch_add(stats.rewritten, Relaxed);
    }
    Some(if a.nr == libc::SYS_mmap {
        start as i64
    } else {
        0
    })
}
