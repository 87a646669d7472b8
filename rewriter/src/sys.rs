//! Raw system calls: the only place in fastnet that executes the `syscall` instruction.
//!
//! The shim's own code is never rewritten, so these reach the kernel directly and never
//! re-enter the hook. They return the kernel's raw result: `-errno` on failure.

use core::arch::asm;

/// Executes system call `nr` with six arguments; unused ones are ignored by the kernel.
///
/// # Safety
/// The caller upholds the contract of the specific system call (valid pointers etc.).
#[inline(always)]
pub unsafe fn syscall6(nr: i64, a0: i64, a1: i64, a2: i64, a3: i64, a4: i64, a5: i64) -> i64 {
    let ret: i64;
    // SAFETY: the caller upholds the system call's contract; the kernel clobbers only
    // rax, rcx and r11 and leaves the stack alone.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a0, in("rsi") a1, in("rdx") a2, in("r10") a3, in("r8") a4, in("r9") a5,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Three-argument form of [`syscall6`].
///
/// # Safety
/// As for [`syscall6`].
#[inline(always)]
pub unsafe fn syscall3(nr: i64, a0: i64, a1: i64, a2: i64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { syscall6(nr, a0, a1, a2, 0, 0, 0) }
}

/// True when a raw result is an error (`-4095..=-1`).
pub fn is_err(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

pub fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> i64 {
    // SAFETY: mmap validates its arguments; with MAP_FIXED the caller owns the range
    // (callers only pass MAP_FIXED for the page at address 0, which nothing else uses).
    unsafe {
        syscall6(
            libc::SYS_mmap,
            addr as i64,
            len as i64,
            prot as i64,
            flags as i64,
            fd as i64,
            off,
        )
    }
}

/// Changes protection of `[addr, addr+len)`.
///
/// # Safety
/// Removing access from memory that live code uses is the caller's responsibility.
pub unsafe fn mprotect(addr: usize, len: usize, prot: i32) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { syscall3(libc::SYS_mprotect, addr as i64, len as i64, prot as i64) }
}

/// Unmaps `[addr, addr+len)`.
///
/// # Safety
/// Nothing may use the range afterwards.
pub unsafe fn munmap(addr: usize, len: usize) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { syscall3(libc::SYS_munmap, addr as i64, len as i64, 0) }
}

/// Opens `path` (NUL-terminated) relative to the working directory.
pub fn open(path: &core::ffi::CStr, flags: i32, mode: u32) -> i64 {
    // SAFETY: the path is a valid NUL-terminated string for the duration of the call.
    unsafe {
        syscall6(
            libc::SYS_openat,
            libc::AT_FDCWD as i64,
            path.as_ptr() as i64,
            flags as i64,
            mode as i64,
            0,
            0,
        )
    }
}

pub fn read(fd: i32, buf: &mut [u8]) -> i64 {
    // SAFETY: the buffer is valid for writes of its length.
    unsafe {
        syscall3(
            libc::SYS_read,
            fd as i64,
            buf.as_mut_ptr() as i64,
            buf.len() as i64,
        )
    }
}

pub fn write(fd: i32, buf: &[u8]) -> i64 {
    // SAFETY: the buffer is valid for reads of its length.
    unsafe {
        syscall3(
            libc::SYS_write,
            fd as i64,
            buf.as_ptr() as i64,
            buf.len() as i64,
        )
    }
}

pub fn close(fd: i32) -> i64 {
    // SAFETY: closing an fd has no memory-safety preconditions.
    unsafe { syscall3(libc::SYS_close, fd as i64, 0, 0) }
}

pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { syscall3(libc::SYS_getpid, 0, 0, 0) as i32 }
}

/// Writes all of `buf` to `fd`, retrying short writes and EINTR.
pub fn write_all(fd: i32, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        let n = write(fd, buf);
        if n == -(libc::EINTR as i64) {
            continue;
        }
        if n <= 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}
