//! Runs a stack `Interface` over a TAP device on a thread of its own: the host loop a
//! real program would have (poll on the TAP fd and a wake-up eventfd, with the stack's
//! next timer as timeout; receive every waiting frame; dispatch).
//!
//! Tests call socket functions through [`TapStack::with`] (which wakes the loop so
//! what they queued leaves at once) and wait for results with
//! [`TapStack::wait_until`].

use stack::device::{Device, DeviceCaps};
use stack::iface::{Interface, Stats};
use stack::time::Instant as StackInstant;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdp_backend::tap::{poll_fds, TapDevice};

/// Frames the driver drops on purpose, to make both sides retransmit: every n-th
/// frame from the kernel (`rx_every`) and to the kernel (`tx_every`); 0 drops none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loss {
    pub rx_every: u64,
    pub tx_every: u64,
}

/// Counts of frames dropped on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounts {
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

struct Driven {
    iface: Interface,
    tap: TapDevice,
    loss: Loss,
    rx_seen: u64,
    tx_seen: u64,
    dropped: LossCounts,
}

/// The TAP as the stack's device, losing every `every`-th frame like a bad wire.
struct LossyTap<'a> {
    tap: &'a mut TapDevice,
    every: u64,
    seen: &'a mut u64,
    dropped: &'a mut u64,
    scratch: &'a mut Vec<u8>,
}

impl Device for LossyTap<'_> {
    fn caps(&self) -> DeviceCaps {
        self.tap.caps()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if self.every != 0 && (*self.seen + 1).is_multiple_of(self.every) {
            *self.seen += 1;
            *self.dropped += 1;
            self.scratch.resize(len, 0);
            fill(&mut self.scratch[..len]);
            return true;
        }
        let sent = self.tap.transmit(len, fill);
        if sent {
            *self.seen += 1;
        }
        sent
    }
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
        Self::start_lossy(iface, tap, Loss::default())
    }

    /// Like `start`, dropping frames as `loss` says.
    pub fn start_lossy(iface: Interface, tap: TapDevice, loss: Loss) -> io::Result<TapStack> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let shared = Arc::new(Shared {
            state: Mutex::new(Driven {
                iface,
                tap,
                loss,
                rx_seen: 0,
                tx_seen: 0,
                dropped: LossCounts::default(),
            }),
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

    pub fn loss_counts(&self) -> LossCounts {
        self.shared.state.lock().unwrap().dropped
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
    let mut scratch = Vec::with_capacity(2048);
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
            let Driven {
                iface,
                tap,
                loss,
                rx_seen,
                tx_seen,
                dropped,
            } = &mut *st;
            let now = s.now();
            // A bounded batch, so socket calls from tests get the lock in between.
            for _ in 0..256 {
                match tap.recv(&mut frame) {
                    Ok(Some(n)) => {
                        *rx_seen += 1;
                        if loss.rx_every != 0 && rx_seen.is_multiple_of(loss.rx_every) {
                            dropped.rx_dropped += 1;
                            continue;
                        }
                        iface.receive(now, &frame[..n])
                    }
                    _ => break,
                }
            }
            let mut dev = LossyTap {
                tap,
                every: loss.tx_every,
                seen: tx_seen,
                dropped: &mut dropped.tx_dropped,
                scratch: &mut scratch,
            };
            iface.dispatch(now, &mut dev);
        }
        s.progress.notify_all();
    }
}
