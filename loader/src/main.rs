//! `fastnet-loader`: starts a static executable (no PT_INTERP: Go with `CGO_ENABLED=0`,
//! musl- or glibc-static C, static-PIE) the way the kernel would, from inside a process
//! that is already ours (issue 22; docs/DESIGN.md, "Static executables").
//!
//! Usage: `fastnet-loader PROGRAM [ARGS...]`. The program's argv is this process's
//! argv without its second entry: its argv[0] is the loader's argv[0] (so `fastnet run`
//! passes the name the user typed as the loader's argv[0], as a shell would), its
//! argv[1..] are ARGS. Its environment is this process's, unchanged.
//!
//! What it does, in order: applies its own relocations (a static-PIE has no ld.so to do
//! it); opens PROGRAM and reads its ELF and program headers; reserves the address span
//! of its PT_LOAD segments (at their fixed addresses for ET_EXEC, at a base the kernel
//! picks for ET_DYN) and maps each segment there with its protection, the tail of the
//! last file page and the rest of .bss zeroed; makes the stack executable when the
//! program's PT_GNU_STACK asks for it; rewrites its own initial stack into the
//! program's (argc - 1, argv without PROGRAM, envp as is, auxv with AT_PHDR, AT_PHENT,
//! AT_PHNUM, AT_ENTRY and AT_EXECFN describing the program and AT_BASE 0: everything
//! else, AT_RANDOM, AT_HWCAP, AT_SYSINFO_EHDR, AT_PAGESZ..., is the kernel's); names the
//! task after the program (`comm`); and jumps to the program's entry with the stack
//! pointer on its argc and %rdx = 0 (no exit function to register), as the kernel does.
//!
//! Known differences from an execve of the program: `/proc/self/exe` names the loader;
//! the heap (`brk`) starts after the loader's image rather than the program's (only
//! its growth matters to the program's malloc); the loader's image stays mapped.
//!
//! No libc, no allocation: system calls are made directly, errors go to fd 2 and exit
//! with status 127 (what a shell uses for "cannot execute").

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

// The entry point: the kernel leaves %rsp on argc. Keep that pointer (first argument),
// align the stack for the call, and never return.
global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym loader_main,
);

const PAGE: usize = 4096;

const SYS_WRITE: usize = 1;
const SYS_OPEN: usize = 2;
const SYS_CLOSE: usize = 3;
const SYS_MMAP: usize = 9;
const SYS_MPROTECT: usize = 10;
const SYS_MUNMAP: usize = 11;
const SYS_PREAD64: usize = 17;
const SYS_PRCTL: usize = 157;
const SYS_EXIT_GROUP: usize = 231;

const O_RDONLY: usize = 0;
const O_CLOEXEC: usize = 0o2000000;
const PROT_NONE: usize = 0;
const PROT_READ: usize = 1;
const PROT_WRITE: usize = 2;
const PROT_EXEC: usize = 4;
const PROT_GROWSDOWN: usize = 0x0100_0000;
const MAP_PRIVATE: usize = 0x02;
const MAP_FIXED: usize = 0x10;
const MAP_ANONYMOUS: usize = 0x20;
const MAP_FIXED_NOREPLACE: usize = 0x10_0000;
const PR_SET_NAME: usize = 15;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
const PHDR_SIZE: usize = 56;
/// Most program headers we read (3.5 KiB of stack); real programs have about a dozen.
const MAX_PHDRS: usize = 64;

const AT_NULL: usize = 0;
const AT_PHDR: usize = 3;
const AT_PHENT: usize = 4;
const AT_PHNUM: usize = 5;
const AT_BASE: usize = 7;
const AT_ENTRY: usize = 9;
const AT_EXECFN: usize = 31;

const DT_NULL: usize = 0;
const DT_RELA: usize = 7;
const DT_RELASZ: usize = 8;
const DT_RELAENT: usize = 9;
const DT_RELR: usize = 36;
const R_X86_64_RELATIVE: usize = 8;

/// Raw system call with up to six arguments; returns the kernel's value (-errno on error).
///
/// # Safety
/// The arguments must be valid for the call `nr` makes of them.
unsafe fn syscall6(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: a plain Linux x86-64 system call; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn write_err(s: &[u8]) {
    // SAFETY: the buffer is valid for reads of its length.
    unsafe { syscall6(SYS_WRITE, [2, s.as_ptr() as usize, s.len(), 0, 0, 0]) };
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group does not return.
        unsafe { syscall6(SYS_EXIT_GROUP, [code, 0, 0, 0, 0, 0]) };
    }
}

/// The bytes of a NUL-terminated string.
///
/// # Safety
/// `p` must point at a NUL-terminated string that outlives the result.
unsafe fn c_str<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: the caller's promise: readable up to and including the NUL.
    unsafe {
        // Volatile: a plain loop would become a call to strlen, which we do not have.
        while core::ptr::read_volatile(p.add(n)) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

/// Prints `fastnet-loader: <path>: <why>` and exits with 127.
fn fail(path: &[u8], why: &str, errno: isize) -> ! {
    write_err(b"fastnet-loader: ");
    write_err(path);
    write_err(b": ");
    write_err(why.as_bytes());
    if errno < 0 {
        let mut digits = [0u8; 24];
        let mut i = digits.len();
        let mut e = (-errno) as usize;
        loop {
            i -= 1;
            digits[i] = b'0' + (e % 10) as u8;
            e /= 10;
            if e == 0 {
                break;
            }
        }
        write_err(b" (errno ");
        write_err(&digits[i..]);
        write_err(b")");
    }
    write_err(b"\n");
    exit(127)
}

/// Applies the loader's own R_X86_64_RELATIVE relocations. Runs before anything reads a
/// pointer stored in the image (vtables, string tables of panics): the addresses of
/// the image and its dynamic section come from `lea` relative to %rip, not the GOT.
///
/// # Safety
/// Called once, first thing, by the entry point of this static-PIE.
unsafe fn relocate_self() {
    let base: usize;
    let dynamic: *const usize;
    // SAFETY: address computations only; both symbols are defined by the linker.
    unsafe {
        asm!("lea {}, [rip + __ehdr_start]", out(reg) base, options(nostack, pure, nomem));
        asm!("lea {}, [rip + _DYNAMIC]", out(reg) dynamic, options(nostack, pure, nomem));
    }
    let (mut rela, mut relasz, mut relaent) = (0usize, 0usize, 24usize);
    let mut d = dynamic;
    // SAFETY: _DYNAMIC is the image's dynamic array, ended by DT_NULL; the relocations
    // it names are in the image, and their targets are in its writable segment.
    unsafe {
        loop {
            let (tag, val) = (*d, *d.add(1));
            match tag {
                DT_NULL => break,
                DT_RELA => rela = val,
                DT_RELASZ => relasz = val,
                DT_RELAENT => relaent = val,
                DT_RELR => fail(b"self", "packed relocations (DT_RELR) are not supported", 0),
                _ => {}
            }
            d = d.add(2);
        }
        let mut off = 0;
        while off + 24 <= relasz {
            let r = (base + rela + off) as *const usize;
            let (r_offset, r_info, r_addend) = (*r, *r.add(1), *r.add(2));
            if r_info & 0xffff_ffff != R_X86_64_RELATIVE {
                fail(b"self", "a relocation other than R_X86_64_RELATIVE", 0);
            }
            *((base + r_offset) as *mut usize) = base.wrapping_add(r_addend);
            off += relaent;
        }
    }
}

fn page_down(a: usize) -> usize {
    a & !(PAGE - 1)
}
fn page_up(a: usize) -> usize {
    (a + PAGE - 1) & !(PAGE - 1)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> usize {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v) as usize
}

/// One program header, the fields the loader uses.
#[derive(Clone, Copy)]
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: usize,
    vaddr: usize,
    filesz: usize,
    memsz: usize,
    align: usize,
}

impl Phdr {
    fn parse(b: &[u8]) -> Phdr {
        Phdr {
            p_type: u32_at(b, 0),
            flags: u32_at(b, 4),
            offset: u64_at(b, 8),
            vaddr: u64_at(b, 16),
            filesz: u64_at(b, 32),
            memsz: u64_at(b, 40),
            align: u64_at(b, 48),
        }
    }
    fn prot(&self) -> usize {
        let mut p = PROT_NONE;
        if self.flags & PF_R != 0 {
            p |= PROT_READ;
        }
        if self.flags & PF_W != 0 {
            p |= PROT_WRITE;
        }
        if self.flags & PF_X != 0 {
            p |= PROT_EXEC;
        }
        p
    }
}

/// What the program's start needs to know of the mapped image.
struct Loaded {
    entry: usize,
    phdr: usize,
    phnum: usize,
    exec_stack: bool,
}

fn pread_all(fd: usize, buf: &mut [u8], off: usize) -> bool {
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe {
        syscall6(
            SYS_PREAD64,
            [fd, buf.as_mut_ptr() as usize, buf.len(), off, 0, 0],
        )
    };
    n == buf.len() as isize
}

/// mmap, exiting with a message naming `what` when it fails.
fn map(path: &[u8], what: &str, a: [usize; 6]) -> usize {
    // SAFETY: every caller maps into the span reserved for the program (MAP_FIXED) or
    // lets the kernel choose; nothing of the loader's lives there.
    let r = unsafe { syscall6(SYS_MMAP, a) };
    if r < 0 && r > -4096 {
        fail(path, what, r);
    }
    r as usize
}

/// Maps the program `fd` (named `path`) as the kernel's ELF loader would.
fn load(path: &[u8], fd: usize) -> Loaded {
    let mut ehdr = [0u8; 64];
    if !pread_all(fd, &mut ehdr, 0) || ehdr[..4] != *b"\x7fELF" {
        fail(path, "not an ELF executable", 0);
    }
    if ehdr[4] != 2 || ehdr[5] != 1 || u16_at(&ehdr, 0x12) != EM_X86_64 {
        fail(path, "not a 64-bit little-endian x86-64 ELF", 0);
    }
    let e_type = u16_at(&ehdr, 0x10);
    if e_type != ET_EXEC && e_type != ET_DYN {
        fail(path, "neither ET_EXEC nor ET_DYN", 0);
    }
    let entry = u64_at(&ehdr, 0x18);
    let phoff = u64_at(&ehdr, 0x20);
    let phentsize = usize::from(u16_at(&ehdr, 0x36));
    let phnum = usize::from(u16_at(&ehdr, 0x38));
    if phentsize != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        fail(path, "unexpected program header table", 0);
    }
    let mut buf = [0u8; PHDR_SIZE * MAX_PHDRS];
    let table = &mut buf[..PHDR_SIZE * phnum];
    if !pread_all(fd, table, phoff) {
        fail(path, "cannot read the program headers", 0);
    }

    let (mut lo, mut hi, mut align) = (usize::MAX, 0usize, PAGE);
    let mut exec_stack = false;
    let mut phdr_vaddr = None;
    for ph in table.chunks_exact(PHDR_SIZE).map(Phdr::parse) {
        match ph.p_type {
            PT_LOAD => {
                if ph.offset % PAGE != ph.vaddr % PAGE || ph.filesz > ph.memsz {
                    fail(path, "a PT_LOAD segment the kernel would refuse", 0);
                }
                lo = lo.min(page_down(ph.vaddr));
                hi = hi.max(page_up(ph.vaddr + ph.memsz));
                if ph.align.is_power_of_two() {
                    align = align.max(ph.align);
                }
            }
            PT_INTERP => fail(
                path,
                "has an ELF interpreter: a dynamic program, start it directly",
                0,
            ),
            PT_GNU_STACK => exec_stack = ph.flags & PF_X != 0,
            PT_PHDR => phdr_vaddr = Some(ph.vaddr),
            _ => {}
        }
    }
    if lo >= hi {
        fail(path, "no PT_LOAD segment", 0);
    }
    let span = hi - lo;

    // Reserve the whole span first, so that the segments land together and a non-PIE
    // program's fixed addresses are checked against what is already mapped (the loader,
    // the stack, the vDSO) instead of replacing it.
    let base = if e_type == ET_EXEC {
        map(
            path,
            "its fixed addresses are taken in this process",
            [
                lo,
                span,
                PROT_NONE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                usize::MAX,
                0,
            ],
        );
        0
    } else {
        let raw = map(
            path,
            "cannot reserve address space",
            [
                0,
                span + align,
                PROT_NONE,
                MAP_PRIVATE | MAP_ANONYMOUS,
                usize::MAX,
                0,
            ],
        );
        let start = (raw + align - 1) & !(align - 1);
        // SAFETY: unmapping the slack of our own reservation on either side.
        unsafe {
            if start > raw {
                syscall6(SYS_MUNMAP, [raw, start - raw, 0, 0, 0, 0]);
            }
            let end = raw + span + align;
            if end > start + span {
                syscall6(SYS_MUNMAP, [start + span, end - start - span, 0, 0, 0, 0]);
            }
        }
        start - lo
    };

    for ph in table.chunks_exact(PHDR_SIZE).map(Phdr::parse) {
        if ph.p_type != PT_LOAD || ph.memsz == 0 {
            continue;
        }
        let prot = ph.prot();
        let start = base + ph.vaddr;
        let file_end = start + ph.filesz;
        let mem_end = start + ph.memsz;
        let mut anon_from = page_down(start);
        if ph.filesz > 0 {
            let map_start = page_down(start);
            let bss_in_last_page = ph.memsz > ph.filesz && file_end % PAGE != 0;
            let first_prot = if bss_in_last_page {
                prot | PROT_WRITE
            } else {
                prot
            };
            map(
                path,
                "cannot map a segment",
                [
                    map_start,
                    page_up(file_end) - map_start,
                    first_prot,
                    MAP_PRIVATE | MAP_FIXED,
                    fd,
                    page_down(ph.offset),
                ],
            );
            if bss_in_last_page {
                // SAFETY: the rest of the last file page, inside the mapping just made
                // writable; what the file holds there is not the program's.
                unsafe {
                    zero(file_end as *mut u8, page_up(file_end) - file_end);
                }
                if first_prot != prot {
                    // SAFETY: our own mapping of the program.
                    unsafe {
                        syscall6(
                            SYS_MPROTECT,
                            [map_start, page_up(file_end) - map_start, prot, 0, 0, 0],
                        )
                    };
                }
            }
            anon_from = page_up(file_end);
        }
        if page_up(mem_end) > anon_from {
            map(
                path,
                "cannot map .bss",
                [
                    anon_from,
                    page_up(mem_end) - anon_from,
                    prot,
                    MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS,
                    usize::MAX,
                    0,
                ],
            );
        }
    }

    // Where the program headers are in memory: PT_PHDR, else the PT_LOAD that holds
    // them in the file (as the kernel computes AT_PHDR).
    let phdr = match phdr_vaddr {
        Some(v) => base + v,
        None => table
            .chunks_exact(PHDR_SIZE)
            .map(Phdr::parse)
            .find(|ph| {
                ph.p_type == PT_LOAD
                    && ph.offset <= phoff
                    && phoff + phnum * PHDR_SIZE <= ph.offset + ph.filesz
            })
            .map(|ph| base + ph.vaddr + (phoff - ph.offset))
            .unwrap_or(0),
    };
    Loaded {
        entry: base + entry,
        phdr,
        phnum,
        exec_stack,
    }
}

/// # Safety
/// `p` must be valid for writes of `n` bytes.
unsafe fn zero(p: *mut u8, n: usize) {
    // SAFETY: the caller's promise.
    unsafe {
        asm!("rep stosb", inout("rdi") p => _, inout("rcx") n => _, in("al") 0u8, options(nostack))
    };
}

/// The program's start, from the loader's: `sp` is where the kernel left %rsp.
///
/// # Safety
/// Called once by `_start`, with the kernel's initial stack at `sp`.
unsafe extern "C" fn loader_main(sp: *mut usize) -> ! {
    // SAFETY: first thing, as it requires.
    unsafe { relocate_self() };
    // SAFETY: the kernel's initial stack: argc, argv[argc] and NULL, envp and NULL,
    // auxv pairs up to AT_NULL; the strings they point at lie above them.
    unsafe {
        let argc = *sp;
        if argc < 2 {
            write_err(b"usage: fastnet-loader PROGRAM [ARGS...]: starts the static executable PROGRAM with this argv[0] and ARGS\n");
            exit(127);
        }
        let path_ptr = *sp.add(2) as *const u8;
        let path = c_str(path_ptr);
        let fd = syscall6(
            SYS_OPEN,
            [path_ptr as usize, O_RDONLY | O_CLOEXEC, 0, 0, 0, 0],
        );
        if fd < 0 {
            fail(path, "cannot open", fd);
        }
        let loaded = load(path, fd as usize);
        syscall6(SYS_CLOSE, [fd as usize, 0, 0, 0, 0, 0]);

        // The vectors end after the AT_NULL pair of auxv.
        let mut p = sp.add(1 + argc + 1);
        while *p != 0 {
            p = p.add(1);
        }
        p = p.add(1);
        while *p != AT_NULL {
            p = p.add(2);
        }
        let end = p.add(2);
        // The program's vectors start where the loader's did (so the stack pointer
        // keeps the ABI's 16-byte alignment): argc - 1, argv[0], then everything from
        // the loader's argv[2] on, one word lower.
        *sp = argc - 1;
        let from = sp.add(3);
        let words = end.offset_from(from) as usize;
        core::ptr::copy(from, sp.add(2), words);
        let mut aux = sp.add(1 + argc);
        while *aux != 0 {
            aux = aux.add(1);
        }
        aux = aux.add(1);
        while *aux != AT_NULL {
            let val = aux.add(1);
            match *aux {
                AT_PHDR => *val = loaded.phdr,
                AT_PHENT => *val = PHDR_SIZE,
                AT_PHNUM => *val = loaded.phnum,
                AT_ENTRY => *val = loaded.entry,
                AT_BASE => *val = 0,
                AT_EXECFN => *val = path_ptr as usize,
                _ => {}
            }
            aux = aux.add(2);
        }

        if loaded.exec_stack {
            // PROT_GROWSDOWN carries the change to the whole stack mapping and its
            // future growth, as ld.so's _dl_make_stack_executable does.
            let r = syscall6(
                SYS_MPROTECT,
                [
                    page_down(sp as usize),
                    PAGE,
                    PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN,
                    0,
                    0,
                    0,
                ],
            );
            if r < 0 {
                fail(path, "cannot make the stack executable (PT_GNU_STACK)", r);
            }
        }

        // The task's name, as execve sets it: the file's last component, 15 bytes.
        let base_name = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => &path[i + 1..],
            None => path,
        };
        let mut comm = [0u8; 16];
        let n = base_name.len().min(15);
        comm[..n].copy_from_slice(&base_name[..n]);
        syscall6(SYS_PRCTL, [PR_SET_NAME, comm.as_ptr() as usize, 0, 0, 0, 0]);

        // As the kernel starts a program: %rsp on argc, %rdx 0 (no function for atexit).
        asm!(
            "mov rsp, rdi",
            "xor edx, edx",
            "xor ebp, ebp",
            "xor edi, edi",
            "jmp rsi",
            in("rdi") sp,
            in("rsi") loaded.entry,
            options(noreturn),
        );
    }
}

// The loader has no libc: the memory functions the compiler may call.

/// # Safety
/// As C's memcpy.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's promise; `rep movsb` copies forwards.
    unsafe {
        asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _, options(nostack))
    };
    dst
}

/// # Safety
/// As C's memmove.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: a forward copy is correct when dst is below src or they do not overlap.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: the caller's promise; copy backwards (direction flag set, then cleared).
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            inout("rcx") n => _,
            options(nostack),
        )
    };
    dst
}

/// # Safety
/// As C's memset.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's promise.
    unsafe {
        asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _, in("al") c as u8, options(nostack))
    };
    dst
}

/// # Safety
/// As C's memcmp.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller's promise: both valid for `n` bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As C's bcmp.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise.
    unsafe { memcmp(a, b, n) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    write_err(b"fastnet-loader: internal error\n");
    exit(127)
}

/// The precompiled `core` refers to the unwinder's personality routine; nothing unwinds
/// here (the panic handler exits), but the linker wants it named.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
