//! Runs a stack `Interface` over a TAP device on a thread of its own: the host loop a
//! real program would have (poll on the TAP fd and a wake-up eventfd, with the stack's
//! next timer as timeout; receive every waiting frame; dispatch).
//!
//! Tests call socket functions through [`TapStack::with`] (which wakes the loop so
//! what they queued leaves at once) and wait for results with
//! [`TapStack::wait_until`].

use stack::iface::{Interface, Stats};
use stack::time::Instant as StackInstant;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdp_backend::tap::{poll_fds, TapDevice};

struct Driven {
    iface: Interface,
    tap: TapDevice,
}

struct Shared {
    state: Mutex<Driven>,
    /// Notified after every loop iteration that received or sent something.
    progress: Condvar,
    wake: OwnedFd,
    stop: AtomicBool,
    epoch: Instant,
}

impl Shared {
    fn now(&self) -> StackInstant {
        StackInstant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }
    fn kick(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live array to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

/// A stack driven over a TAP device by a background thread. Dropping it stops the
/// thread.
pub struct TapStack {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TapStack {
    pub fn start(iface: Interface, tap: TapDevice) -> io::Result<TapStack> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let shared = Arc::new(Shared {
            state: Mutex::new(Driven { iface, tap }),
            progress: Condvar::new(),
            wake,
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tap-stack".into())
            .spawn(move || drive(&s))?;
        Ok(TapStack {
            shared,
            thread: Some(thread),
        })
    }

    /// Runs `f` on the interface (socket calls), then wakes the driver loop.
    pub fn with<R>(&self, f: impl FnOnce(&mut Interface) -> R) -> R {
        let r = {
            let mut st = self.shared.state.lock().unwrap();
            f(&mut st.iface)
        };
        self.shared.kick();
        r
    }

    /// Calls `f` until it returns Some (after each driver iteration), or `timeout`.
    pub fn wait_until<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&mut Interface) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if let Some(r) = f(&mut st.iface) {
                drop(st);
                self.shared.kick();
                return Some(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.shared.kick();
            st = self
                .shared
                .progress
                .wait_timeout(st, left.min(Duration::from_millis(50)))
                .unwrap()
                .0;
        }
    }

    pub fn stats(&self) -> Stats {
        self.shared.state.lock().unwrap().iface.stats().clone()
    }

    pub fn tap_stats(&self) -> xdp_backend::tap::TapStats {
        self.shared.state.lock().unwrap().tap.stats
    }
}

impl Drop for TapStack {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drive(s: &Shared) {
    let tap_fd = s.state.lock().unwrap().tap.as_raw_fd();
    let wake_fd = s.wake.as_raw_fd();
    let mut frame = vec![0u8; 65536];
    while !s.stop.load(Ordering::Relaxed) {
        let timeout = {
            let st = s.state.lock().unwrap();
            let now = s.now();
            match st.iface.poll_at() {
                Some(t) if t <= now => Duration::ZERO,
                Some(t) => Duration::from_micros((t - now).micros()),
                None => Duration::from_millis(100),
            }
            .min(Duration::from_millis(100))
        };
        if poll_fds(&[tap_fd, wake_fd], libc::POLLIN, Some(timeout)).is_err() {
            break;
        }
        let mut drain = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live array from our eventfd.
        unsafe { libc::read(wake_fd, drain.as_mut_ptr().cast(), 8) };
        {
            let mut st = s.state.lock().unwrap();
            let Driven { iface, tap } = &mut *st;
            let now = s.now();
            // A bounded batch, so socket calls from tests get the lock in between.
            for _ in 0..256 {
                match tap.recv(&mut frame) {
                    Ok(Some(n)) => iface.receive(now, &frame[..n]),
                    _ => break,
                }
            }
            iface.dispatch(now, tap);
        }
        s.progress.notify_all();
    }
}
