//! The hook entry: where the trampoline page at address 0 jumps.
//!
//! On entry `%rax` holds the syscall number, the six arguments sit in their registers and
//! `[%rsp]` holds the return address the rewritten `call *%rax` pushed (the only byte the
//! hook ever writes below the caller's `%rsp`). The entry:
//!
//! 1. pass-through (class 0, or an fd that is not ours): `syscall; ret` on the caller's
//!    stack, nothing saved — the kernel itself preserves all but rax/rcx/r11;
//! 2. `rt_sigreturn`: drop the return address so the kernel finds its frame, `syscall`;
//! 3. `clone`/`clone3` with a new stack: copy the return address onto the child's stack;
//!    without one (and `vfork`), keep the return address in a per-thread slot instead of
//!    on the shared stack, so a `vfork` child cannot overwrite it before the parent
//!    resumes;
//! 4. handled: unless this thread is already inside the shim, switch to the thread's
//!    alternate stack (or below the current frame when already on it: nesting), save the
//!    argument registers and the whole vector state (`xsave`), and call
//!    [`crate::dispatch`]. Its result goes to `%rax`, or, when it is
//!    [`crate::PASSTHROUGH`], the (possibly changed) arguments are passed to the kernel
//!    from the alternate stack with the flag cleared.

use crate::filter::{class, CLASS, FD_BITS, MAX_FD, MAX_SYSCALL};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicU8};

/// Size of each thread's alternate stack (reserved lazily, `MAP_NORESERVE`).
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
const TLS_SIZE: usize = T_SCRATCH + 8 * 8;

/// Bytes `xsave` needs for the enabled state components (set by `install`).
pub(crate) static XSAVE_SIZE: AtomicU64 = AtomicU64::new(4096);
/// 1 when the CPU has `xsavec` (compacted, skips components in their initial state).
pub(crate) static USE_XSAVEC: AtomicU8 = AtomicU8::new(0);
/// Calls handled in assembly: rt_sigreturn, clone, vfork, clone3 (for `trace -c`).
pub(crate) static SPECIAL_COUNTS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

const CLONE_VM: u64 = libc::CLONE_VM as u64;
const PASSTHROUGH: i64 = crate::PASSTHROUGH;

extern "C" {
    /// The entry the trampoline jumps to. Not callable from Rust.
    pub(crate) fn fastnet_hook_entry();
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
    "cmp ecx, {c_sigreturn}",
    "je 30f",
    "cmp ecx, {c_clone}",
    "je 40f",
    "cmp ecx, {c_vfork}",
    "je 50f",
    "cmp ecx, {c_clone3}",
    "je 60f",
    "jmp 2b",
    // ---- fd-based: handled only when the fd in rdi is marked
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
    "jne 2b",
    // Set the flag atomically: threads made by a raw clone without CLONE_SETTLS share
    // this block, and only one of them may own the alternate stack at a time (the
    // loser passes its call through). From here on a signal handler's syscalls on this
    // thread pass through too.
    "lock bts qword ptr fs:[r11 + {t_in_shim}], 0",
    "jc 2b",
    "mov rcx, rsp",
    "sub rcx, qword ptr fs:[r11 + {t_alt_base}]",
    "cmp rcx, {alt_size}",
    "jb 22f",
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
    "lea rbx, [rsp + rcx]",
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
    "mov eax, -1",
    "mov edx, -1",
    "cmp byte ptr [rip + {use_xsavec}], 0",
    "je 24f",
    "xsavec64 [rbx]",
    "jmp 26f",
    "24:",
    "xsave64 [rbx]",
    "26:",
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
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rbx]",
    "28:",
    // Clear the flag while rsp is still below the frame (a signal landing now nests
    // below it), then restore the caller's registers and stack.
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_in_shim}], 0",
    "mov rbx, qword ptr [rbp - 64]",
    "mov r9, qword ptr [rbp - 48]",
    "mov r8, qword ptr [rbp - 40]",
    "mov r10, qword ptr [rbp - 32]",
    "mov rdx, qword ptr [rbp - 24]",
    "mov rsi, qword ptr [rbp - 16]",
    "mov rdi, qword ptr [rbp - 8]",
    "mov rax, qword ptr [rbp - 56]",
    "mov rcx, qword ptr [rbp + 8]",
    "mov rbp, qword ptr [rbp]",
    "mov rsp, rcx",
    "ret",
    "27:",
    // The handler passes the call on: real syscall with its arguments, flag cleared (a
    // successful execve from a vfork child must not leave the parent's flag set).
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rbx]",
    "mov rdi, qword ptr [rsp + 8]",
    "mov rsi, qword ptr [rsp + 16]",
    "mov rdx, qword ptr [rsp + 24]",
    "mov r10, qword ptr [rsp + 32]",
    "mov r8, qword ptr [rsp + 40]",
    "mov r9, qword ptr [rsp + 48]",
    "mov rax, qword ptr [rsp]",
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov qword ptr fs:[r11 + {t_in_shim}], 0",
    "syscall",
    "mov qword ptr [rbp - 56], rax",
    "jmp 28b",
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
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rdi, qword ptr fs:[r11 + {t_scratch} + 8]",
    "mov rsi, qword ptr fs:[r11 + {t_scratch} + 16]",
    "mov rdx, qword ptr fs:[r11 + {t_scratch} + 24]",
    "mov r10, qword ptr fs:[r11 + {t_scratch} + 32]",
    "mov r8, qword ptr fs:[r11 + {t_scratch} + 40]",
    "mov r9, qword ptr fs:[r11 + {t_scratch} + 48]",
    "cmp rax, -4095",
    "jae 29f",
    "mov qword ptr fs:[r11 + {t_alt_base}], rax",
    "lea rcx, [rax + {alt_size}]",
    "mov qword ptr fs:[r11 + {t_alt_top}], rcx",
    "mov rax, qword ptr fs:[r11 + {t_scratch}]",
    "jmp 21b",
    "29:",
    // No memory for a stack: degrade to pass-through rather than fail the program.
    "mov rax, qword ptr fs:[r11 + {t_scratch}]",
    "mov qword ptr fs:[r11 + {t_in_shim}], 0",
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
    "mov rcx, qword ptr [rdi + 40]",
    "test rcx, rcx",
    "jz 65f",
    "add rcx, qword ptr [rdi + 48]",
    "mov r11, qword ptr [rsp]",
    "mov qword ptr [rcx - 8], r11",
    "sub qword ptr [rdi + 48], 8",
    "syscall",
    "test rax, rax",
    "jz 61f",
    // Parent: give the caller its struct back unchanged.
    "add qword ptr [rdi + 48], 8",
    "61:",
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
    "mov r11, qword ptr [rip + fastnet_hook_tls@GOTTPOFF]",
    "mov rcx, qword ptr fs:[r11 + {t_vdepth}]",
    "test rax, rax",
    "jnz 56b",
    "test qword ptr [rdi], {clone_vm}",
    "jz 56b",
    "jmp qword ptr fs:[r11 + rcx*8 + {t_vslots} - 8]",
    ".size fastnet_hook_entry, . - fastnet_hook_entry",
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
    t_in_shim = const T_IN_SHIM,
    t_alt_base = const T_ALT_BASE,
    t_alt_top = const T_ALT_TOP,
    t_vdepth = const T_VDEPTH,
    t_vslots = const T_VSLOTS,
    t_scratch = const T_SCRATCH,
    alt_size = const ALT_STACK_SIZE,
    nest_gap = const NEST_GAP,
    xsave_size = sym XSAVE_SIZE,
    use_xsavec = sym USE_XSAVEC,
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
            options(nostack, readonly, preserves_flags),
        );
    }
    p
}

/// Current value of this thread's "inside the shim" flag.
pub(crate) fn in_shim_flag() -> u64 {
    // SAFETY: the block is this thread's own, aligned, and lives as long as the thread.
    unsafe { core::ptr::read_volatile(tls_block().add(T_IN_SHIM / 8)) }
}

/// Sets this thread's "inside the shim" flag.
pub(crate) fn set_in_shim_flag(v: u64) {
    // SAFETY: as in `in_shim_flag`; only this thread (or a signal handler on it, which
    // restores what it changed) writes the flag.
    unsafe { core::ptr::write_volatile(tls_block().add(T_IN_SHIM / 8), v) }
}
