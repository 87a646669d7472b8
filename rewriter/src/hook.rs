//! The hook entry: where the trampoline page at address 0 jumps.
//!
//! The entry first checks that it was reached from a rewritten site (the return address
//! follows `ff d0`), else it faults like the NULL call that brought it here.
//! On entry `%rax` holds the syscall number, the six arguments sit in their registers and
//! `[%rsp]` holds the return address the rewritten `call *%rax` pushed (the only byte the
//! hook ever writes below the caller's `%rsp`). The entry:
//!
//! 1. pass-through (class 0, an fd that is not ours, or a mapping call without
//!    `PROT_EXEC`): `syscall; ret` on the caller's stack, nothing saved — the kernel
//!    itself preserves all but rax/rcx/r11;
//! 2. `rt_sigreturn`: drop the return address so the kernel finds its frame, `syscall`;
//! 3. `clone`/`clone3` with a new stack: copy the return address onto the child's stack;
//!    without one (and `vfork`), keep the return address in a per-thread slot instead of
//!    on the shared stack, so a `vfork` child cannot overwrite it before the parent
//!    resumes;
//! 4. handled: unless this thread is already inside the shim, switch to the thread's
//!    alternate stack (or below the current frame when already on it: nesting), save the
//!    argument registers and the vector registers (see 80/85 below), and call
//!    [`crate::dispatch`]. Its result goes to `%rax`, or, when it is
//!    [`crate::PASSTHROUGH`], the (possibly changed) arguments are passed to the kernel
//!    from the alternate stack with the flag cleared;
//! 5. `exit` (a thread ends): unmap the thread's alternate stack, then exit.

use crate::filter::{class, CLASS, FD_BITS, MAX_FD, MAX_SYSCALL};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicU8};

/// Size of each thread's alternate stack (reserved lazily, `MAP_NORESERVE`; the lowest
/// page is a guard page).
pub(crate) const ALT_STACK_SIZE: usize = 1 << 20;
/// Bytes left untouched below `%rsp` when nesting on the alternate stack (red zone + slack).
const NEST_GAP: usize = 256;
/// Nested `vfork`s a thread may have in flight (each keeps one return address).
const VFORK_SLOTS: usize = 8;

// Layout of the per-thread block `fastnet_hook_tls` (initial-exec TLS).
const T_IN_SHIM: usize = 0;
const T_ALT_BASE: usize = 8;
const T_ALT_TOP: usize = 16;
const T_VDEPTH: usize = 24;
const T_VSLOTS: usize = 32;
const T_SCRATCH: usize = T_VSLOTS + 8 * VFORK_SLOTS;
const T_BUSY: usize = T_SCRATCH + 8 * 8;
const T_MISSED: usize = T_BUSY + 8;
/// The Syscall User Dispatch selector byte of this thread (`sud.rs`): BLOCK (1) while the
/// thread runs app code, ALLOW (0) while it is inside the shim. Written with the flag.
const T_SELECTOR: usize = T_MISSED + 8;
const TLS_SIZE: usize = T_SELECTOR + 8;

/// Bytes `xsave` needs for the enabled state components (set by `install`).
pub(crate) static XSAVE_SIZE: AtomicU64 = AtomicU64::new(4096);
/// 1 when the CPU has `xsavec` (compacted, skips components in their initial state).
pub(crate) static USE_XSAVEC: AtomicU8 = AtomicU8::new(0);
/// Alternate stacks mapped and not yet given back (a thread's goes at its `exit`).
pub(crate) static ALT_STACKS: AtomicU64 = AtomicU64::new(0);
/// How the handled path saves vector state: one of the `VEC_*` values (set by `install`).
pub(crate) static VEC_MODE: AtomicU8 = AtomicU8::new(VEC_XSAVE);
/// `xsave`/`xrstor` of every enabled component (the general fallback).
pub(crate) const VEC_XSAVE: u8 = 0;
/// xmm0-15 (no AVX).
pub(crate) const VEC_SSE: u8 = 1;
/// ymm0-15 (AVX, no AVX-512).
pub(crate) const VEC_AVX: u8 = 2;
/// zmm0-31 and k0-7 (AVX-512F and BW).
pub(crate) const VEC_AVX512: u8 = 3;
/// 1 when Syscall User Dispatch is on in this process: new threads and forked children
/// turn it on for themselves (the kernel clears it in every new task).
pub(crate) static SUD_ON: AtomicU8 = AtomicU8::new(0);
/// This process's PID as SUD's code knows it (set at install, refreshed in every fork
/// child): a caller with another PID shares our memory without being us (a vfork or
/// posix_spawn child before its exec).
pub(crate) static SUD_PID: AtomicU64 = AtomicU64::new(0);
/// The range SUD always allows (the hook's own object): `[SUD_START, SUD_START+SUD_LEN)`.
pub(crate) static SUD_START: AtomicU64 = AtomicU64::new(0);
pub(crate) static SUD_LEN: AtomicU64 = AtomicU64::new(0);
/// Calls handled in assembly: rt_sigreturn, clone, vfork, clone3, exit (for `trace -c`).
pub(crate) static SPECIAL_COUNTS: [AtomicU64; 5] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

const CLONE_VM: u64 = libc::CLONE_VM as u64;
pub(crate) const PR_SET_SYSCALL_USER_DISPATCH: i32 = 59;
const PASSTHROUGH: i64 = crate::PASSTHROUGH;

extern "C" {
    /// The entry the trampoline jumps to. Not callable from Rust.
    pub(crate) fn fastnet_hook_entry();
    /// `rt_sigreturn` made from inside the hook's object (which SUD always allows): the
    /// SIGSYS handler's restorer, and where a trapped `rt_sigreturn` is sent to be made.
    pub(crate) fn fastnet_sud_sigreturn();
}

global_asm!(
    // The per-thread block. Zero-initialised in every new thread (it is .tbss).
    ".section .tbss,\"awT\",@nobits",
    ".p2align 6",
    ".globl fastnet_hook_tls",
    ".hidden fastnet_hook_tls",
    ".type fastnet_hook_tls,@object",
    ".size fastnet_hook_tls, {tls_size}",
    "fastnet_hook_tls:",
    ".zero {tls_size}",
    ".text",
    ".globl fastnet_hook_entry",
    ".hidden fastnet_hook_entry",
    ".type fastnet_hook_entry,@function",
    ".p2align 4",
    "fastnet_hook_entry:",
    // Only a rewritten site may enter: the return address must follow `ff d0`. Anything
    // else (a call through a NULL function pointer lands at 0 too) crashes with SIGSEGV
    // as it would have without us, instead of making a system call.
    "mov rcx, qword ptr [rsp]",
    "cmp word ptr [rcx - 2], 0xd0ff",
    "jne 90f",
    "cmp rax, {max_syscall}",
    "jae 2f",
    "lea rcx, [rip + {class_table}]",
    "movzx ecx, byte ptr [rcx + rax]",
    "test ecx, ecx",
    "jnz 3f",
    "2:",
    "syscall",
    "ret",
    // ---- slow classes
    "3:",
    "cmp ecx, {c_handled}",
    "je 20f",
    "cmp ecx, {c_fd}",
    "je 10f",
    "cmp ecx, {c_exec_mapping}",
    "je 15f",
    "cmp ecx, {c_sigreturn}",
    "je 30f",
    "cmp ecx, {c_clone}",
    "je 40f",
    "cmp ecx, {c_vfork}",
    "je 50f",
    "cmp ecx, {c_clone3}",
    "je 60f",
    "cmp ecx, {c_exit}",
    "je 70f",
    "jmp 2b",
    // ---- mmap/mprotect/pkey_mprotect: handled only when making memory executable
    "15:",
    "test edx, {prot_exec}",
    "jz 2b",
    "jmp 20f",
    // ---- fd-based: handled only when the fd in rdi is marked (falls through to 20)
    "10:",
    "mov ecx, edi",
    "cmp ecx, {max_fd}",
    "jae 2b",
    "shr ecx, 6",
    "lea r11, [rip + {fd_bits}]",
    "mov r11, qword ptr [r11 + rcx*8]",
    "mov ecx, edi",
    "bt r11, rcx",
    "jnc 2b",
    // ---- handled: into Rust unless this thread is already inside the shim
    "20:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "cmp qword ptr fs:[r11 + {t_in_shim}], 0",
    "jne 19f",
    "mov rcx, rsp",
    "sub rcx, qword ptr fs:[r11 + {t_alt_base}]",
    "cmp rcx, {alt_size}",
    "jb 22f",
    // The top of the alternate stack is owned through the busy bit, which stays set
    // while any frame sits there, also during a pass-through with the flag cleared.
    // Atomic: threads made by a raw clone without CLONE_SETTLS share this block; the
    // loser passes its call through and leaves the flag alone. Only the owner (and
    // this thread's own nested frames) writes the flag, so a plain store suffices.
    // From here on a signal handler's syscalls on this thread pass through.
    "lock bts qword ptr fs:[r11 + {t_busy}], 0",
    "jc 2b",
    "mov qword ptr fs:[r11 + {t_in_shim}], 1",
    "mov byte ptr fs:[r11 + {t_selector}], 0",
    "mov rcx, qword ptr fs:[r11 + {t_alt_top}]",
    "test rcx, rcx",
    "jz 25f",
    "21:",
    // rcx = top of the stack to use; keep the caller's rsp in rcx.
    "xchg rsp, rcx",
    "jmp 23f",
    "22:",
    // Already on the alternate stack (a signal handler interrupted a pass-through made
    // from it): continue below the interrupted frame.
    "mov qword ptr fs:[r11 + {t_in_shim}], 1",
    "mov byte ptr fs:[r11 + {t_selector}], 0",
    "lea rcx, [rsp - {nest_gap}]",
    "and rcx, -64",
    "jmp 21b",
    "23:",
    "push rcx",          // [rbp+8]  caller's rsp
    "push rbp",          // [rbp]    caller's rbp
    "mov rbp, rsp",
    "push rdi",          // [rbp-8]
    "push rsi",          // [rbp-16]
    "push rdx",          // [rbp-24]
    "push r10",          // [rbp-32]
    "push r8",           // [rbp-40]
    "push r9",           // [rbp-48]
    "push rax",          // [rbp-56] nr, later the result
    "push rbx",          // [rbp-64]
    "mov rcx, qword ptr [rip + {xsave_size}]",
    "neg rcx",
    // 64 bytes of slack: the `call 80f` below pushes its return address there.
    "lea rbx, [rsp + rcx - 64]",
    "and rbx, -64",
    // The xsave header must be zero where the instruction does not write it.
    "xor ecx, ecx",
    "mov qword ptr [rbx + 512], rcx",
    "mov qword ptr [rbx + 520], rcx",
    "mov qword ptr [rbx + 528], rcx",
    "mov qword ptr [rbx + 536], rcx",
    "mov qword ptr [rbx + 544], rcx",
    "mov qword ptr [rbx + 552], rcx",
    "mov qword ptr [rbx + 560], rcx",
    "mov qword ptr [rbx + 568], rcx",
    "call 80f",
    // SyscallArgs { nr, args[6] } just below the xsave area; rsp stays 16-aligned.
    "lea rsp, [rbx - 64]",
    "mov rax, qword ptr [rbp - 56]",
    "mov qword ptr [rsp], rax",
    "mov qword ptr [rsp + 8], rdi",
    "mov qword ptr [rsp + 16], rsi",
    "mov rdx, qword ptr [rbp - 24]",
    "mov qword ptr [rsp + 24], rdx",
    "mov qword ptr [rsp + 32], r10",
    "mov qword ptr [rsp + 40], r8",
    "mov qword ptr [rsp + 48], r9",
    "mov rdi, rsp",
    "cld",
    "call {dispatch}",
    "mov rcx, {passthrough}",
    "cmp rax, rcx",
    "je 27f",
    "mov qword ptr [rbp - 56], rax",
    "call 85f",
    "28:",
    // Clear the flag while rsp is still below the frame (a signal landing now nests
    // below it), then restore the caller's registers and stack.
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_in_shim}], 0",
    "mov byte ptr fs:[r11 + {t_selector}], 1",
    "mov rbx, qword ptr [rbp - 64]",
    "mov r9, qword ptr [rbp - 48]",
    "mov r8, qword ptr [rbp - 40]",
    "mov r10, qword ptr [rbp - 32]",
    "mov rdx, qword ptr [rbp - 24]",
    "mov rsi, qword ptr [rbp - 16]",
    "mov rdi, qword ptr [rbp - 8]",
    // A frame built at the top (not nested) releases the busy bit, after the last read
    // of the frame; from then on only registers and the caller's stack are used.
    "lea rcx, [rbp + 16]",
    "cmp rcx, qword ptr fs:[r11 + {t_alt_top}]",
    "mov rax, qword ptr [rbp - 56]",
    "mov rcx, qword ptr [rbp + 8]",
    "mov rbp, qword ptr [rbp]",
    "jne 31f",
    "mov qword ptr fs:[r11 + {t_busy}], 0",
    "31:",
    "mov rsp, rcx",
    "ret",
    "27:",
    // The handler passes the call on: real syscall with its arguments, flag cleared (a
    // successful execve from a vfork child must not leave the parent's flag set).
    "call 85f",
    "mov rdi, qword ptr [rsp + 8]",
    "mov rsi, qword ptr [rsp + 16]",
    "mov rdx, qword ptr [rsp + 24]",
    "mov r10, qword ptr [rsp + 32]",
    "mov r8, qword ptr [rsp + 40]",
    "mov r9, qword ptr [rsp + 48]",
    "mov rax, qword ptr [rsp]",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_in_shim}], 0",
    "mov byte ptr fs:[r11 + {t_selector}], 1",
    // A successful exec never comes back to release the busy bit, and a vfork parent
    // shares it: release it first (and take it back if the exec fails).
    "cmp rax, {sys_execve}",
    "je 32f",
    "cmp rax, {sys_execveat}",
    "jne 33f",
    "32:",
    "mov qword ptr fs:[r11 + {t_busy}], 0",
    "syscall",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_busy}], 1",
    "jmp 34f",
    "33:",
    "syscall",
    "34:",
    "mov qword ptr [rbp - 56], rax",
    "jmp 28b",
    // ---- inside the shim: pass through, but remember a call that may have made memory
    // executable, for `crate::rescan_if_missed` when the shim code returns
    "19:",
    "cmp eax, {sys_mmap}",
    "je 18f",
    "cmp eax, {sys_mprotect}",
    "je 18f",
    "cmp eax, {sys_pkey_mprotect}",
    "jne 2b",
    "18:",
    "test edx, {prot_exec}",
    "jz 2b",
    "mov qword ptr fs:[r11 + {t_missed}], 1",
    "jmp 2b",
    // ---- first handled call on this thread: map its alternate stack
    "25:",
    "mov qword ptr fs:[r11 + {t_scratch}], rax",
    "mov qword ptr fs:[r11 + {t_scratch} + 8], rdi",
    "mov qword ptr fs:[r11 + {t_scratch} + 16], rsi",
    "mov qword ptr fs:[r11 + {t_scratch} + 24], rdx",
    "mov qword ptr fs:[r11 + {t_scratch} + 32], r10",
    "mov qword ptr fs:[r11 + {t_scratch} + 40], r8",
    "mov qword ptr fs:[r11 + {t_scratch} + 48], r9",
    "xor edi, edi",
    "mov esi, {alt_size}",
    "mov edx, {prot_rw}",
    "mov r10d, {map_flags}",
    "mov r8, -1",
    "xor r9d, r9d",
    "mov eax, {sys_mmap}",
    "syscall",
    "cmp rax, -4095",
    "jae 36f",
    // A guard page at the bottom: an overflowing handler faults instead of writing over
    // whatever is mapped below.
    "mov rdi, rax",
    "mov esi, 4096",
    "xor edx, edx",
    "mov eax, {sys_mprotect}",
    "syscall",
    "mov rax, rdi",
    "36:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rdi, qword ptr fs:[r11 + {t_scratch} + 8]",
    "mov rsi, qword ptr fs:[r11 + {t_scratch} + 16]",
    "mov rdx, qword ptr fs:[r11 + {t_scratch} + 24]",
    "mov r10, qword ptr fs:[r11 + {t_scratch} + 32]",
    "mov r8, qword ptr fs:[r11 + {t_scratch} + 40]",
    "mov r9, qword ptr fs:[r11 + {t_scratch} + 48]",
    "cmp rax, -4095",
    "jae 35f",
    "mov qword ptr fs:[r11 + {t_alt_base}], rax",
    "lock inc qword ptr [rip + {alt_stacks}]",
    "lea rcx, [rax + {alt_size}]",
    "mov qword ptr fs:[r11 + {t_alt_top}], rcx",
    "mov rax, qword ptr fs:[r11 + {t_scratch}]",
    "jmp 21b",
    "35:",
    // No memory for a stack: degrade to pass-through rather than fail the program.
    "mov rax, qword ptr fs:[r11 + {t_scratch}]",
    "mov qword ptr fs:[r11 + {t_busy}], 0",
    "mov qword ptr fs:[r11 + {t_in_shim}], 0",
    "mov byte ptr fs:[r11 + {t_selector}], 1",
    "jmp 2b",
    // ---- rt_sigreturn: the kernel reads its frame at the caller's rsp
    "30:",
    "lock inc qword ptr [rip + {special}]",
    "lea rsp, [rsp + 8]",
    "syscall",
    "ud2",
    // ---- clone: with a new stack, the child returns through a copy of the address
    "40:",
    "lock inc qword ptr [rip + {special} + 8]",
    "test rsi, rsi",
    "jz 45f",
    "mov rcx, qword ptr [rsp]",
    "mov qword ptr [rsi - 8], rcx",
    "sub rsi, 8",
    "syscall",
    "test rax, rax",
    "jnz 41f",
    "mov r11, rdi",
    "lea rcx, [rip + 41f]",
    "jmp 95f",
    "41:",
    "add rsi, 8",
    "ret",
    "45:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "cmp rcx, {vfork_slots}",
    "jae 59f",
    "pop qword ptr fs:[r11 + rcx*8 + {t_vslots}]",
    "inc rcx",
    "mov qword ptr fs:[r11 + {t_vdepth}], rcx",
    "syscall",
    "test rax, rax",
    "jnz 46f",
    "mov r11, rdi",
    "lea rcx, [rip + 46f]",
    "jmp 95f",
    "46:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "test rax, rax",
    "jnz 56f",
    // Child: with CLONE_VM it shares the parent's slots (the parent still needs its
    // own); otherwise its copy is private and it pops like the parent.
    "bt rdi, {clone_vm_bit}",
    "jnc 56f",
    "jmp qword ptr fs:[r11 + rcx*8 + {t_vslots} - 8]",
    // ---- vfork: the parent sleeps while the child runs on the same stack
    "50:",
    "lock inc qword ptr [rip + {special} + 16]",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "cmp rcx, {vfork_slots}",
    "jae 59f",
    "pop qword ptr fs:[r11 + rcx*8 + {t_vslots}]",
    "inc rcx",
    "mov qword ptr fs:[r11 + {t_vdepth}], rcx",
    "syscall",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "test rax, rax",
    "jnz 56f",
    "jmp qword ptr fs:[r11 + rcx*8 + {t_vslots} - 8]",
    // Parent (or failure): pop the slot and return through it.
    "56:",
    "dec rcx",
    "mov qword ptr fs:[r11 + {t_vdepth}], rcx",
    "jmp qword ptr fs:[r11 + rcx*8 + {t_vslots}]",
    "59:",
    "mov rax, {eagain}",
    "ret",
    // ---- clone3: stack and stack_size live in struct clone_args at rdi
    "60:",
    "lock inc qword ptr [rip + {special} + 24]",
    // Programs probe clone3 with a NULL or short struct: let the kernel refuse those.
    "test rdi, rdi",
    "jz 2b",
    "cmp rsi, 64",
    "jb 2b",
    "mov rcx, qword ptr [rdi + 40]",
    "test rcx, rcx",
    "jz 65f",
    "add rcx, qword ptr [rdi + 48]",
    "mov r11, qword ptr [rsp]",
    "mov qword ptr [rcx - 8], r11",
    // The flags too, below it: the child must not read the struct, whose memory (its
    // creator's stack, perhaps an alternate stack unmapped at that thread's exit) may be
    // gone by the time it runs.
    "mov r11, qword ptr [rdi]",
    "mov qword ptr [rcx - 16], r11",
    "sub qword ptr [rdi + 48], 8",
    "syscall",
    "test rax, rax",
    "jz 61f",
    // Parent: give the caller its struct back unchanged.
    "add qword ptr [rdi + 48], 8",
    "ret",
    "61:",
    "mov r11, qword ptr [rsp - 8]",
    "lea rcx, [rip + 62f]",
    "jmp 95f",
    "62:",
    "ret",
    "65:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "cmp rcx, {vfork_slots}",
    "jae 59b",
    "pop qword ptr fs:[r11 + rcx*8 + {t_vslots}]",
    "inc rcx",
    "mov qword ptr fs:[r11 + {t_vdepth}], rcx",
    "syscall",
    "test rax, rax",
    "jnz 66f",
    "mov r11, qword ptr [rdi]",
    "lea rcx, [rip + 66f]",
    "jmp 95f",
    "66:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "test rax, rax",
    "jnz 56b",
    "test qword ptr [rdi], {clone_vm}",
    "jz 56b",
    "jmp qword ptr fs:[r11 + rcx*8 + {t_vslots} - 8]",
    // ---- exit (a thread ends): give back its alternate stack first. Nothing here
    // returns, so registers other than rdi (the exit code) may be clobbered. Skipped when
    // the stack is busy (this thread exits from a frame on it, or a thread sharing this
    // block through a raw clone without CLONE_SETTLS uses it right now).
    "70:",
    "lock inc qword ptr [rip + {special} + 32]",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "cmp qword ptr fs:[r11 + {t_alt_base}], 0",
    "je 2b",
    "lock bts qword ptr fs:[r11 + {t_busy}], 0",
    "jc 2b",
    "mov rdx, rdi",
    "mov rdi, qword ptr fs:[r11 + {t_alt_base}]",
    "mov esi, {alt_size}",
    "mov eax, {sys_munmap}",
    "syscall",
    "lock dec qword ptr [rip + {alt_stacks}]",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_alt_base}], 0",
    "mov qword ptr fs:[r11 + {t_alt_top}], 0",
    "mov qword ptr fs:[r11 + {t_busy}], 0",
    "mov rdi, rdx",
    "mov eax, {sys_exit}",
    "syscall",
    "ud2",
    // ---- vector state save (80) / restore (85) at [rbx], by VEC_MODE. Clobber rax,
    // rcx, rdx. The explicit register moves cost ~18 ns on AVX-512 where xsave+xrstor
    // costs ~200 (measured on these machines); xsave stays for unknown CPUs.
    "80:",
    "movzx ecx, byte ptr [rip + {vec_mode}]",
    "cmp ecx, {vec_avx512}",
    "je 81f",
    "cmp ecx, {vec_avx}",
    "je 82f",
    "cmp ecx, {vec_sse}",
    "je 83f",
    "mov eax, -1",
    "mov edx, -1",
    "cmp byte ptr [rip + {use_xsavec}], 0",
    "je 24f",
    "xsavec64 [rbx]",
    "ret",
    "24:",
    "xsave64 [rbx]",
    "ret",
    "81:",
    "vmovdqu64 [rbx + 0], zmm0",
    "vmovdqu64 [rbx + 64], zmm1",
    "vmovdqu64 [rbx + 128], zmm2",
    "vmovdqu64 [rbx + 192], zmm3",
    "vmovdqu64 [rbx + 256], zmm4",
    "vmovdqu64 [rbx + 320], zmm5",
    "vmovdqu64 [rbx + 384], zmm6",
    "vmovdqu64 [rbx + 448], zmm7",
    "vmovdqu64 [rbx + 512], zmm8",
    "vmovdqu64 [rbx + 576], zmm9",
    "vmovdqu64 [rbx + 640], zmm10",
    "vmovdqu64 [rbx + 704], zmm11",
    "vmovdqu64 [rbx + 768], zmm12",
    "vmovdqu64 [rbx + 832], zmm13",
    "vmovdqu64 [rbx + 896], zmm14",
    "vmovdqu64 [rbx + 960], zmm15",
    "vmovdqu64 [rbx + 1024], zmm16",
    "vmovdqu64 [rbx + 1088], zmm17",
    "vmovdqu64 [rbx + 1152], zmm18",
    "vmovdqu64 [rbx + 1216], zmm19",
    "vmovdqu64 [rbx + 1280], zmm20",
    "vmovdqu64 [rbx + 1344], zmm21",
    "vmovdqu64 [rbx + 1408], zmm22",
    "vmovdqu64 [rbx + 1472], zmm23",
    "vmovdqu64 [rbx + 1536], zmm24",
    "vmovdqu64 [rbx + 1600], zmm25",
    "vmovdqu64 [rbx + 1664], zmm26",
    "vmovdqu64 [rbx + 1728], zmm27",
    "vmovdqu64 [rbx + 1792], zmm28",
    "vmovdqu64 [rbx + 1856], zmm29",
    "vmovdqu64 [rbx + 1920], zmm30",
    "vmovdqu64 [rbx + 1984], zmm31",
    "kmovq [rbx + 2048], k0",
    "kmovq [rbx + 2056], k1",
    "kmovq [rbx + 2064], k2",
    "kmovq [rbx + 2072], k3",
    "kmovq [rbx + 2080], k4",
    "kmovq [rbx + 2088], k5",
    "kmovq [rbx + 2096], k6",
    "kmovq [rbx + 2104], k7",
    "ret",
    "82:",
    "vmovdqu [rbx + 0], ymm0",
    "vmovdqu [rbx + 32], ymm1",
    "vmovdqu [rbx + 64], ymm2",
    "vmovdqu [rbx + 96], ymm3",
    "vmovdqu [rbx + 128], ymm4",
    "vmovdqu [rbx + 160], ymm5",
    "vmovdqu [rbx + 192], ymm6",
    "vmovdqu [rbx + 224], ymm7",
    "vmovdqu [rbx + 256], ymm8",
    "vmovdqu [rbx + 288], ymm9",
    "vmovdqu [rbx + 320], ymm10",
    "vmovdqu [rbx + 352], ymm11",
    "vmovdqu [rbx + 384], ymm12",
    "vmovdqu [rbx + 416], ymm13",
    "vmovdqu [rbx + 448], ymm14",
    "vmovdqu [rbx + 480], ymm15",
    "ret",
    "83:",
    "movdqu [rbx + 0], xmm0",
    "movdqu [rbx + 16], xmm1",
    "movdqu [rbx + 32], xmm2",
    "movdqu [rbx + 48], xmm3",
    "movdqu [rbx + 64], xmm4",
    "movdqu [rbx + 80], xmm5",
    "movdqu [rbx + 96], xmm6",
    "movdqu [rbx + 112], xmm7",
    "movdqu [rbx + 128], xmm8",
    "movdqu [rbx + 144], xmm9",
    "movdqu [rbx + 160], xmm10",
    "movdqu [rbx + 176], xmm11",
    "movdqu [rbx + 192], xmm12",
    "movdqu [rbx + 208], xmm13",
    "movdqu [rbx + 224], xmm14",
    "movdqu [rbx + 240], xmm15",
    "ret",
    "85:",
    "movzx ecx, byte ptr [rip + {vec_mode}]",
    "cmp ecx, {vec_avx512}",
    "je 86f",
    "cmp ecx, {vec_avx}",
    "je 87f",
    "cmp ecx, {vec_sse}",
    "je 88f",
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rbx]",
    "ret",
    "86:",
    "vmovdqu64 zmm0, [rbx + 0]",
    "vmovdqu64 zmm1, [rbx + 64]",
    "vmovdqu64 zmm2, [rbx + 128]",
    "vmovdqu64 zmm3, [rbx + 192]",
    "vmovdqu64 zmm4, [rbx + 256]",
    "vmovdqu64 zmm5, [rbx + 320]",
    "vmovdqu64 zmm6, [rbx + 384]",
    "vmovdqu64 zmm7, [rbx + 448]",
    "vmovdqu64 zmm8, [rbx + 512]",
    "vmovdqu64 zmm9, [rbx + 576]",
    "vmovdqu64 zmm10, [rbx + 640]",
    "vmovdqu64 zmm11, [rbx + 704]",
    "vmovdqu64 zmm12, [rbx + 768]",
    "vmovdqu64 zmm13, [rbx + 832]",
    "vmovdqu64 zmm14, [rbx + 896]",
    "vmovdqu64 zmm15, [rbx + 960]",
    "vmovdqu64 zmm16, [rbx + 1024]",
    "vmovdqu64 zmm17, [rbx + 1088]",
    "vmovdqu64 zmm18, [rbx + 1152]",
    "vmovdqu64 zmm19, [rbx + 1216]",
    "vmovdqu64 zmm20, [rbx + 1280]",
    "vmovdqu64 zmm21, [rbx + 1344]",
    "vmovdqu64 zmm22, [rbx + 1408]",
    "vmovdqu64 zmm23, [rbx + 1472]",
    "vmovdqu64 zmm24, [rbx + 1536]",
    "vmovdqu64 zmm25, [rbx + 1600]",
    "vmovdqu64 zmm26, [rbx + 1664]",
    "vmovdqu64 zmm27, [rbx + 1728]",
    "vmovdqu64 zmm28, [rbx + 1792]",
    "vmovdqu64 zmm29, [rbx + 1856]",
    "vmovdqu64 zmm30, [rbx + 1920]",
    "vmovdqu64 zmm31, [rbx + 1984]",
    "kmovq k0, [rbx + 2048]",
    "kmovq k1, [rbx + 2056]",
    "kmovq k2, [rbx + 2064]",
    "kmovq k3, [rbx + 2072]",
    "kmovq k4, [rbx + 2080]",
    "kmovq k5, [rbx + 2088]",
    "kmovq k6, [rbx + 2096]",
    "kmovq k7, [rbx + 2104]",
    "ret",
    "87:",
    "vmovdqu ymm0, [rbx + 0]",
    "vmovdqu ymm1, [rbx + 32]",
    "vmovdqu ymm2, [rbx + 64]",
    "vmovdqu ymm3, [rbx + 96]",
    "vmovdqu ymm4, [rbx + 128]",
    "vmovdqu ymm5, [rbx + 160]",
    "vmovdqu ymm6, [rbx + 192]",
    "vmovdqu ymm7, [rbx + 224]",
    "vmovdqu ymm8, [rbx + 256]",
    "vmovdqu ymm9, [rbx + 288]",
    "vmovdqu ymm10, [rbx + 320]",
    "vmovdqu ymm11, [rbx + 352]",
    "vmovdqu ymm12, [rbx + 384]",
    "vmovdqu ymm13, [rbx + 416]",
    "vmovdqu ymm14, [rbx + 448]",
    "vmovdqu ymm15, [rbx + 480]",
    "ret",
    "88:",
    "movdqu xmm0, [rbx + 0]",
    "movdqu xmm1, [rbx + 16]",
    "movdqu xmm2, [rbx + 32]",
    "movdqu xmm3, [rbx + 48]",
    "movdqu xmm4, [rbx + 64]",
    "movdqu xmm5, [rbx + 80]",
    "movdqu xmm6, [rbx + 96]",
    "movdqu xmm7, [rbx + 112]",
    "movdqu xmm8, [rbx + 128]",
    "movdqu xmm9, [rbx + 144]",
    "movdqu xmm10, [rbx + 160]",
    "movdqu xmm11, [rbx + 176]",
    "movdqu xmm12, [rbx + 192]",
    "movdqu xmm13, [rbx + 208]",
    "movdqu xmm14, [rbx + 224]",
    "movdqu xmm15, [rbx + 240]",
    "ret",
    // ---- a new task (clone child, rax = 0): the kernel turned Syscall User Dispatch
    // off in it; turn it on again with this thread's own selector. r11 = clone flags,
    // rcx = where to go on. Preserves every register but rcx, r11 (rax stays 0). A child
    // sharing memory but not the TLS block (a raw thread without CLONE_SETTLS, vfork)
    // is left without: its selector would be its parent's. Uses no stack (a fork
    // child's red zone is live) but the child's own TLS block.
    "95:",
    "cmp byte ptr [rip + {sud_on}], 0",
    "je 98f",
    // eax (the child's 0, restored at the end): 1 for a fork child.
    "mov eax, 1",
    "bt r11, {clone_vm_bit}",
    "jnc 96f",
    "xor eax, eax",
    "bt r11, {clone_settls_bit}",
    "jnc 98f",
    "96:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_scratch} + 48], rax",
    "mov qword ptr fs:[r11 + {t_scratch}], rcx",
    "mov qword ptr fs:[r11 + {t_scratch} + 8], rdi",
    "mov qword ptr fs:[r11 + {t_scratch} + 16], rsi",
    "mov qword ptr fs:[r11 + {t_scratch} + 24], rdx",
    "mov qword ptr fs:[r11 + {t_scratch} + 32], r10",
    "mov qword ptr fs:[r11 + {t_scratch} + 40], r8",
    // BLOCK outside the shim, ALLOW inside (a fork child inherits the flag).
    "cmp qword ptr fs:[r11 + {t_in_shim}], 0",
    "sete byte ptr fs:[r11 + {t_selector}]",
    "mov r8, qword ptr fs:[0]",
    "lea r8, [r8 + r11 + {t_selector}]",
    "mov edi, {pr_sud}",
    "mov esi, 1",
    "mov rdx, qword ptr [rip + {sud_start}]",
    "mov r10, qword ptr [rip + {sud_len}]",
    "mov eax, {sys_prctl}",
    "syscall",
    // A fork child (memory of its own) is a process of its own: note its PID.
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "cmp qword ptr fs:[r11 + {t_scratch} + 48], 0",
    "je 97f",
    "mov eax, {sys_getpid}",
    "syscall",
    "mov qword ptr [rip + {sud_pid}], rax",
    "97:",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_scratch}]",
    "mov rdi, qword ptr fs:[r11 + {t_scratch} + 8]",
    "mov rsi, qword ptr fs:[r11 + {t_scratch} + 16]",
    "mov rdx, qword ptr fs:[r11 + {t_scratch} + 24]",
    "mov r10, qword ptr fs:[r11 + {t_scratch} + 32]",
    "mov r8, qword ptr fs:[r11 + {t_scratch} + 40]",
    "98:",
    "xor eax, eax",
    "jmp rcx",
    "90:",
    "movabs rcx, 0x8000000000000000",
    "mov rcx, qword ptr [rcx]", // non-canonical: #GP, delivered as SIGSEGV
    "ud2",
    ".size fastnet_hook_entry, . - fastnet_hook_entry",
    ".globl fastnet_sud_sigreturn",
    ".hidden fastnet_sud_sigreturn",
    ".type fastnet_sud_sigreturn,@function",
    ".p2align 4",
    "fastnet_sud_sigreturn:",
    "mov eax, {sys_rt_sigreturn}",
    "syscall",
    "ud2",
    ".size fastnet_sud_sigreturn, . - fastnet_sud_sigreturn",
    tls_size = const TLS_SIZE,
    max_syscall = const MAX_SYSCALL,
    max_fd = const MAX_FD,
    class_table = sym CLASS,
    fd_bits = sym FD_BITS,
    c_handled = const class::HANDLED,
    c_fd = const class::FD_BASED,
    c_sigreturn = const class::SIGRETURN,
    c_clone = const class::CLONE,
    c_vfork = const class::VFORK,
    c_clone3 = const class::CLONE3,
    c_exit = const class::EXIT,
    c_exec_mapping = const class::EXEC_MAPPING,
    alt_stacks = sym ALT_STACKS,
    sys_munmap = const libc::SYS_munmap,
    sys_exit = const libc::SYS_exit,
    t_in_shim = const T_IN_SHIM,
    t_alt_base = const T_ALT_BASE,
    t_alt_top = const T_ALT_TOP,
    t_vdepth = const T_VDEPTH,
    t_vslots = const T_VSLOTS,
    t_scratch = const T_SCRATCH,
    t_busy = const T_BUSY,
    t_missed = const T_MISSED,
    t_selector = const T_SELECTOR,
    sud_pid = sym SUD_PID,
    sys_getpid = const libc::SYS_getpid,
    sud_on = sym SUD_ON,
    sud_start = sym SUD_START,
    sud_len = sym SUD_LEN,
    pr_sud = const PR_SET_SYSCALL_USER_DISPATCH,
    sys_prctl = const libc::SYS_prctl,
    sys_rt_sigreturn = const libc::SYS_rt_sigreturn,
    clone_settls_bit = const 19,
    prot_exec = const libc::PROT_EXEC,
    sys_mprotect = const libc::SYS_mprotect,
    sys_pkey_mprotect = const libc::SYS_pkey_mprotect,
    sys_execve = const libc::SYS_execve,
    sys_execveat = const libc::SYS_execveat,
    alt_size = const ALT_STACK_SIZE,
    nest_gap = const NEST_GAP,
    xsave_size = sym XSAVE_SIZE,
    use_xsavec = sym USE_XSAVEC,
    vec_mode = sym VEC_MODE,
    vec_avx512 = const VEC_AVX512,
    vec_avx = const VEC_AVX,
    vec_sse = const VEC_SSE,
    dispatch = sym crate::dispatch,
    passthrough = const PASSTHROUGH,
    prot_rw = const libc::PROT_READ | libc::PROT_WRITE,
    map_flags = const libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
    sys_mmap = const libc::SYS_mmap,
    special = sym SPECIAL_COUNTS,
    vfork_slots = const VFORK_SLOTS,
    clone_vm_bit = const 8,
    clone_vm = const CLONE_VM,
    eagain = const -(libc::EAGAIN as i64),
);

/// Address of this thread's hook block.
fn tls_block() -> *mut u64 {
    let p: *mut u64;
    // SAFETY: computes the address of an initial-exec TLS symbol from the thread pointer
    // (fs:0 holds the TCB's own address on x86-64); reads nothing else.
    unsafe {
        asm!(
            "mov {p}, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            // Not `preserves_flags`: the `add` sets them.
            options(nostack, readonly),
        );
    }
    p
}

/// Current value of this thread's "inside the shim" flag.
pub(crate) fn in_shim_flag() -> u64 {
    // SAFETY: the block is this thread's own, aligned, and lives as long as the thread.
    unsafe { core::ptr::read_volatile(tls_block().add(T_IN_SHIM / 8)) }
}

/// Sets this thread's "inside the shim" flag, and its SUD selector with it (ALLOW
/// inside, BLOCK outside; the kernel reads the byte only where SUD is on).
pub(crate) fn set_in_shim_flag(v: u64) {
    // SAFETY: as in `in_shim_flag`; only this thread (or a signal handler on it, which
    // restores what it changed) writes the flag.
    unsafe {
        let b = tls_block();
        core::ptr::write_volatile(b.add(T_IN_SHIM / 8), v);
        core::ptr::write_volatile(selector_ptr(b), (v == 0) as u8);
    }
}

fn selector_ptr(block: *mut u64) -> *mut u8 {
    // SAFETY: T_SELECTOR lies inside the block.
    unsafe { (block as *mut u8).add(T_SELECTOR) }
}

/// This thread's SUD selector byte (what `prctl` is given).
pub(crate) fn selector() -> *mut u8 {
    selector_ptr(tls_block())
}

/// Sets this thread's selector alone (the flag unchanged): `sud.rs`, to let one call
/// through unhooked.
pub(crate) fn set_selector(v: u8) {
    // SAFETY: this thread's own block.
    unsafe { core::ptr::write_volatile(selector(), v) }
}

/// Reads and clears this thread's "a mapping call passed by while inside the shim" mark.
pub(crate) fn take_missed_mapping() -> bool {
    // SAFETY: as in `in_shim_flag`: this thread's own block.
    unsafe {
        let p = tls_block().add(T_MISSED / 8);
        let v = core::ptr::read_volatile(p);
        core::ptr::write_volatile(p, 0);
        v != 0
    }
}
