//! The shim's log: one switch (FASTNET_LOG), one destination (stderr or
//! FASTNET_LOG_FILE), never the app's stdout.

use super::config::LogLevel;
use super::kernel;
use std::sync::OnceLock;

static LOG: OnceLock<(LogLevel, i32)> = OnceLock::new();

/// Sets the level and the fd lines go to (once, at load).
pub fn set(level: LogLevel, fd: i32) {
    let _ = LOG.set((level, fd));
}

/// True with FASTNET_LOG=trace: every call the socket layer sees is logged.
pub fn tracing() -> bool {
    LOG.get().is_some_and(|l| l.0 == LogLevel::Trace)
}

/// True with FASTNET_LOG=debug or trace (for lines that cost something to make).
pub fn debugging() -> bool {
    LOG.get().is_some_and(|l| l.0 >= LogLevel::Debug)
}

/// Writes one log line (stderr or FASTNET_LOG_FILE; never stdout).
pub fn log(level: LogLevel, msg: std::fmt::Arguments<'_>) {
    let (max, fd) = LOG.get().copied().unwrap_or((LogLevel::Warn, 2));
    // `Off` as a message level means "always" (what the user asked for explicitly).
    if level != LogLevel::Off && (level > max || max == LogLevel::Off) {
        return;
    }
    let line = format!("fastnet[{}]: {}\n", kernel::getpid(), msg);
    let _ = rewriter::sys::write_all(fd, line.as_bytes());
}

/// Logs at debug level.
pub fn debug(msg: std::fmt::Arguments<'_>) {
    log(LogLevel::Debug, msg);
}
