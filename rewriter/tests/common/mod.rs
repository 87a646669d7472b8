//! The hook installed in a test process: libc's syscalls are rewritten (the test
//! executable, the hook's own object, is not). Shared by `hook.rs` and `hook_xsave.rs`;
//! one test function per file, since install is per process.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use rewriter::{filter, Config, SyscallArgs, PASSTHROUGH};

static SEEN_GETPPID: AtomicU64 = AtomicU64::new(0);
static FAKE_GETPPID: AtomicBool = AtomicBool::new(false);
static SEEN_WHILE_IN_SHIM: AtomicU64 = AtomicU64::new(0);
static SEEN_READ: AtomicU64 = AtomicU64::new(0);

extern "C" fn handler(a: &mut SyscallArgs) -> i64 {
    if rewriter::is_in_shim() {
        SEEN_WHILE_IN_SHIM.fetch_add(1, SeqCst);
    }
    if a.nr == libc::SYS_getppid {
        SEEN_GETPPID.fetch_add(1, SeqCst);
        // Trash vector registers the way Rust code or memcpy may: the hook must restore them.
        // SAFETY: only clobbers registers declared as clobbered.
        unsafe {
            core::arch::asm!(
                "vpcmpeqb ymm0, ymm0, ymm0",
                "vpcmpeqb ymm15, ymm15, ymm15",
                out("ymm0") _, out("ymm15") _,
            );
        }
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: clobbers zmm16-31 and k1 the way glibc's EVEX memcpy may; the
            // function is declared to clobber only caller-saved state.
            unsafe { clobber_avx512() };
        }
        // Allocation and libc calls inside the handler go straight to the kernel.
        let v = std::hint::black_box(vec![1u8; 100]);
        // SAFETY: getpid has no preconditions; it re-enters the hook, which passes it on.
        let pid = unsafe { libc::getpid() };
        assert!(pid > 0 && v.len() == 100);
        if FAKE_GETPPID.load(SeqCst) {
            return 4242;
        }
    }
    if a.nr == libc::SYS_read {
        // Only reads of marked fds come here: answer them with a recognisable count.
        SEEN_READ.fetch_add(1, SeqCst);
        return 77;
    }
    if a.nr == libc::SYS_getpid {
        // getpid(): change nothing, but pass an unrelated number to prove PASSTHROUGH
        // uses the arguments from SyscallArgs: turn it into gettid.
        a.nr = libc::SYS_gettid;
    }
    PASSTHROUGH
}

// A position-independent probe copied into fresh executable memory after install (so it
// is rewritten through the mmap/mprotect path): loads ymm0/ymm15 and rbx/r12 from [rdi],
// makes getppid with a raw `syscall`, stores them back to [rsi], returns getppid's result.
global_asm!(
    ".globl probe_start",
    ".globl probe_end",
    "probe_start:",
    "push rbx",
    "push r12",
    "vmovdqu ymm0, [rdi]",
    "vmovdqu ymm15, [rdi + 32]",
    "mov rbx, [rdi + 64]",
    "mov r12, [rdi + 72]",
    "mov eax, 110",
    "syscall",
    "vmovdqu [rsi], ymm0",
    "vmovdqu [rsi + 32], ymm15",
    "mov [rsi + 64], rbx",
    "mov [rsi + 72], r12",
    "mov [rsi + 80], rdi",
    "pop r12",
    "pop rbx",
    "vzeroupper",
    "ret",
    "probe_end:",
);

// Clobbers zmm16, zmm31 and k1 (caller-saved in the SysV ABI).
global_asm!(
    ".globl clobber_avx512",
    "clobber_avx512:",
    "vpternlogd zmm16, zmm16, zmm16, 0xff",
    "vpternlogd zmm31, zmm31, zmm31, 0xff",
    "kxnorq k1, k1, k1",
    "ret",
);

// Like the probe, for AVX-512 state: loads zmm16/zmm31 from [rdi], k1 from [rdi+128],
// getppid via a raw `syscall`, stores them to [rsi].
global_asm!(
    ".globl probe512_start",
    ".globl probe512_end",
    "probe512_start:",
    "vmovdqu64 zmm16, [rdi]",
    "vmovdqu64 zmm31, [rdi + 64]",
    "kmovq k1, [rdi + 128]",
    "mov eax, 110",
    "syscall",
    "vmovdqu64 [rsi], zmm16",
    "vmovdqu64 [rsi + 64], zmm31",
    "kmovq [rsi + 128], k1",
    "ret",
    "probe512_end:",
);

extern "C" {
    fn clobber_avx512();
    static probe512_start: u8;
    static probe512_end: u8;
    static probe_start: u8;
    static probe_end: u8;
}

/// Copies the code between `start` and `end` into fresh memory made executable (and so
/// rewritten), returns its address.
fn load_code(start: usize, end: usize) -> *mut libc::c_void {
    let page = load_code_unchecked(start, end);
    assert!(
        is_rewritten(page, end - start),
        "the probe's syscall was rewritten when it became executable"
    );
    page
}

/// True when the code at `page` holds `call *%rax` and no `syscall`.
fn is_rewritten(page: *mut libc::c_void, len: usize) -> bool {
    // SAFETY: the page is mapped readable.
    let code = unsafe { core::slice::from_raw_parts(page as *const u8, len) };
    code.windows(2).any(|w| w == [0xff, 0xd0]) && !code.windows(2).any(|w| w == [0x0f, 0x05])
}

fn load_code_unchecked(start: usize, end: usize) -> *mut libc::c_void {
    let len = end - start;
    // SAFETY: a fresh private anonymous mapping we own.
    let page = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: copies the probe's bytes into the page (len < 4096), then makes it
    // executable; the probe is position-independent.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, page as *mut u8, len);
        assert_eq!(
            libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC),
            0
        );
    }
    page
}

fn run_probe() -> (i64, [u8; 88], [u8; 88], u64) {
    let page = load_code(
        &raw const probe_start as usize,
        &raw const probe_end as usize,
    );
    let mut input = [0u8; 88];
    for (i, b) in input.iter_mut().enumerate() {
        *b = i as u8 ^ 0x5a;
    }
    let mut output = [0u8; 88];
    // SAFETY: the page holds the probe, an extern "C" fn(*const u8, *mut u8) -> i64.
    let f: extern "C" fn(*const u8, *mut u8) -> i64 = unsafe { core::mem::transmute(page) };
    let r = f(input.as_ptr(), output.as_mut_ptr());
    let input_addr = input.as_ptr() as u64;
    // SAFETY: unmapping our own page.
    unsafe { libc::munmap(page, 4096) };
    (r, input, output, input_addr)
}

/// Installs the hook (vector state saved with xsave when `force_xsave`) and checks it.
pub fn hook_end_to_end(force_xsave: bool) {
    // SAFETY: no preconditions.
    let real_ppid = unsafe { libc::getppid() } as i64;
    let report = rewriter::install(&Config {
        handler: Some(handler),
        log: true,
        force_xsave,
        sud: false,
    })
    .expect("install (needs root or vm.mmap_min_addr=0)");
    assert!(report.stats.rewritten > 10, "{report:?}");
    assert!(rewriter::is_installed());
    assert!(matches!(
        rewriter::install(&Config {
            handler: None,
            log: false,
            force_xsave,
            sud: false,
        }),
        Err(rewriter::InstallError::AlreadyInstalled)
    ));

    // Pass-through: not handled, the kernel answers.
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::getppid() } as i64, real_ppid);
    assert_eq!(SEEN_GETPPID.load(SeqCst), 0);

    // Handled: the handler sees it and may answer it.
    filter::handle_syscall(libc::SYS_getppid as u32, true);
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::getppid() } as i64, real_ppid);
    assert_eq!(SEEN_GETPPID.load(SeqCst), 1);
    FAKE_GETPPID.store(true, SeqCst);
    // SAFETY: as above; libc::syscall is another rewritten site.
    assert_eq!(unsafe { libc::syscall(libc::SYS_getppid) }, 4242);
    assert_eq!(SEEN_GETPPID.load(SeqCst), 2);
    assert_eq!(
        SEEN_WHILE_IN_SHIM.load(SeqCst),
        2,
        "handler runs with the flag set"
    );

    // Fd-based: only calls on a marked fd reach the handler, whatever their other
    // arguments (the pre-filter's other classes test argument registers too).
    filter::handle_fd_syscall(libc::SYS_read as u32, true);
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array. Nonblocking: a read the kernel
    // answers instead fails at once with EAGAIN.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
        0
    );
    filter::mark_fd(fds[0], true);
    let mut buf = [0u8; 8];
    for len in 1..=8 {
        // SAFETY: reads at most `len` <= 8 bytes into `buf`.
        let r = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), len) };
        assert_eq!(r, 77, "read of {len} bytes from a marked fd is handled");
    }
    assert_eq!(SEEN_READ.load(SeqCst), 8);
    // SAFETY: writes 1 byte from a live buffer; reads it back from the unmarked end.
    unsafe {
        filter::mark_fd(fds[0], false);
        assert_eq!(libc::write(fds[1], b"x".as_ptr().cast(), 1), 1);
        assert_eq!(libc::read(fds[0], buf.as_mut_ptr().cast(), 8), 1);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(
        SEEN_READ.load(SeqCst),
        8,
        "unmarked fd: the kernel answered"
    );
    filter::handle_fd_syscall(libc::SYS_read as u32, false);

    // Inside the shim, handled calls go straight to the kernel.
    {
        let _g = rewriter::in_shim();
        // SAFETY: no preconditions.
        assert_eq!(unsafe { libc::getppid() } as i64, real_ppid);
    }
    assert!(!rewriter::is_in_shim());

    // Code mapped by shim code (inside the shim, its calls pass straight through) is
    // rewritten when the shim code returns.
    let (start, end) = (
        &raw const probe_start as usize,
        &raw const probe_end as usize,
    );
    let page = {
        let _g = rewriter::in_shim();
        let page = load_code_unchecked(start, end);
        assert!(!is_rewritten(page, end - start), "inside the shim: not yet");
        page
    };
    assert!(
        is_rewritten(page, end - start),
        "rewritten when the guard dropped"
    );
    // SAFETY: unmapping our own page.
    unsafe { libc::munmap(page, 4096) };
    assert_eq!(SEEN_GETPPID.load(SeqCst), 2);

    // AVX-512 registers and mask registers survive a handled call too.
    let seen = SEEN_GETPPID.load(SeqCst);
    if std::arch::is_x86_feature_detected!("avx512bw") {
        let page = load_code(
            &raw const probe512_start as usize,
            &raw const probe512_end as usize,
        );
        let input: [u8; 136] = core::array::from_fn(|i| (i as u8).wrapping_mul(7) ^ 0x33);
        let mut output = [0u8; 136];
        // SAFETY: the page holds probe512, an extern "C" fn(*const u8, *mut u8).
        let f: extern "C" fn(*const u8, *mut u8) = unsafe { core::mem::transmute(page) };
        f(input.as_ptr(), output.as_mut_ptr());
        assert_eq!(input, output, "zmm16, zmm31, k1 preserved");
        assert_eq!(SEEN_GETPPID.load(SeqCst), seen + 1);
        SEEN_GETPPID.store(seen, SeqCst);
        // SAFETY: unmapping our own page.
        unsafe { libc::munmap(page, 4096) };
    }

    // Later-mapped code is rewritten; registers and vector state survive a handled call.
    let (r, input, output, input_addr) = run_probe();
    assert_eq!(r, 4242);
    assert_eq!(SEEN_GETPPID.load(SeqCst), 3);
    assert_eq!(
        &output[..80],
        &input[..80],
        "ymm0, ymm15, rbx, r12 preserved"
    );
    assert_eq!(
        u64::from_le_bytes(output[80..88].try_into().unwrap()),
        input_addr,
        "rdi preserved"
    );
    FAKE_GETPPID.store(false, SeqCst);

    // PASSTHROUGH with changed arguments: getpid turned into gettid on a new thread.
    filter::handle_syscall(libc::SYS_getpid as u32, true);
    let (pid, tid) = std::thread::spawn(|| {
        // SAFETY: no preconditions.
        (unsafe { libc::getpid() }, unsafe { libc::gettid() })
    })
    .join()
    .unwrap();
    assert_eq!(pid, tid);
    filter::handle_syscall(libc::SYS_getpid as u32, false);

    // Many threads, each with its own alternate stack, making handled calls at once;
    // each gives its stack back when it exits.
    let stacks_before = rewriter::alt_stacks();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    // SAFETY: no preconditions.
                    assert_eq!(unsafe { libc::getppid() } as i64, real_ppid);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // join returns when the thread's tid is cleared, after its exit syscall.
    assert_eq!(
        rewriter::alt_stacks(),
        stacks_before,
        "alternate stacks leaked"
    );
    assert_eq!(SEEN_GETPPID.load(SeqCst), 3 + 8000);

    // fork: the child returns through the hook's per-thread slot, the parent too.
    // SAFETY: the child only makes async-signal-safe calls and _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(if libc::getppid() as i64 > 0 { 7 } else { 8 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(libc::WEXITSTATUS(status), 7);

    // vfork: the child runs on the parent's stack while the parent sleeps in the hook.
    // SAFETY: the child only calls _exit. (libc::vfork is deprecated because Rust code
    // after it may clobber the shared stack; the child here does nothing but _exit.)
    #[allow(deprecated)]
    let child = unsafe { libc::vfork() };
    if child == 0 {
        // SAFETY: _exit is allowed in a vfork child.
        unsafe { libc::_exit(9) };
    }
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(libc::WEXITSTATUS(status), 9);
    let specials = rewriter::special_counts();
    assert!(specials
        .iter()
        .any(|&(nr, n)| nr == libc::SYS_vfork && n >= 1));
    filter::handle_syscall(libc::SYS_getppid as u32, false);
}
