//! The in-process syscall counter behind `fastnet trace -c`.
//!
//! Counts every system call the hook sees (the four it handles in assembly come from
//! `rewriter::special_counts`). A process appends its counts as one line,
//! `<pid> <nr>:<count> ...`, to the file named by `FASTNET_TRACE` when it calls
//! `exit_group` or `execve`/`execveat` (then starts again from zero, so a failed exec
//! loses nothing and a `vfork` child sharing the counters does not count twice). A `fork`
//! child starts from zero (`pthread_atfork`). Lost: processes killed by a signal, and
//! system calls made before the constructor ran (ld.so loading the program and its
//! libraries) or by the shim itself.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use rewriter::{filter::MAX_SYSCALL, sys, SyscallArgs};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

static ENABLED: AtomicBool = AtomicBool::new(false);
static OUT_PATH: OnceLock<CString> = OnceLock::new();
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static COUNTS: [AtomicU64; MAX_SYSCALL] = [ZERO; MAX_SYSCALL];

pub fn is_enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Starts counting every system call; results go to `path`.
pub fn enable(path: &OsStr) {
    let Ok(c) = CString::new(path.as_bytes()) else {
        return;
    };
    let _ = OUT_PATH.set(c);
    for nr in 0..MAX_SYSCALL as u32 {
        rewriter::filter::handle_syscall(nr, true);
    }
    extern "C" fn fork_child() {
        reset();
    }
    // SAFETY: registers a plain function; pthread_atfork has no other preconditions.
    unsafe { libc::pthread_atfork(None, None, Some(fork_child)) };
    ENABLED.store(true, Relaxed);
}

/// Stops counting (the hook could not be installed).
pub fn disable() {
    ENABLED.store(false, Relaxed);
    for nr in 0..MAX_SYSCALL as u32 {
        rewriter::filter::handle_syscall(nr, false);
    }
}

fn reset() {
    for c in &COUNTS {
        c.store(0, Relaxed);
    }
    rewriter::take_special_counts();
}

/// Counts one call; flushes this process's counts before it ends or execs.
pub fn count(args: &SyscallArgs) {
    let nr = args.nr;
    if let Some(c) = usize::try_from(nr).ok().and_then(|n| COUNTS.get(n)) {
        c.fetch_add(1, Relaxed);
    }
    if matches!(
        nr,
        libc::SYS_exit_group | libc::SYS_execve | libc::SYS_execveat
    ) {
        flush();
    }
}

/// Appends `<pid> <nr>:<count>...` to the output file and zeroes the counters.
/// Runs inside the hook: no allocation, raw system calls only.
pub fn flush() {
    let Some(path) = OUT_PATH.get() else { return };
    let mut line = [0u8; 16 * 1024];
    let mut w = Writer {
        buf: &mut line,
        len: 0,
    };
    w.num(sys::getpid() as u64);
    let mut any = false;
    for (nr, c) in COUNTS.iter().enumerate() {
        let n = c.swap(0, Relaxed);
        if n > 0 {
            w.entry(nr as u64, n);
            any = true;
        }
    }
    for (nr, n) in rewriter::take_special_counts() {
        if n > 0 {
            w.entry(nr as u64, n);
            any = true;
        }
    }
    if !any {
        return;
    }
    w.byte(b'\n');
    let len = w.len;
    let fd = sys::open(
        path,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
        0o600,
    );
    if fd >= 0 {
        // One write of a whole line: O_APPEND keeps lines of different processes apart.
        sys::write_all(fd as i32, &line[..len]);
        sys::close(fd as i32);
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }
    fn num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.byte(d);
        }
    }
    fn entry(&mut self, nr: u64, n: u64) {
        self.byte(b' ');
        self.num(nr);
        self.byte(b':');
        self.num(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_formats_entries() {
        let mut buf = [0u8; 64];
        let mut w = Writer {
            buf: &mut buf,
            len: 0,
        };
        w.num(4321);
        w.entry(0, 17);
        w.entry(435, 1);
        let len = w.len;
        assert_eq!(&buf[..len], b"4321 0:17 435:1");
    }
}
