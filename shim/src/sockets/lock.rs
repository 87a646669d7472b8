//! The engine's lock: one futex word (0 free, 1 held, 2 held with sleepers).
//!
//! parking_lot keeps its sleepers in a process-wide table: after `fork`, the child's
//! copy of the table still lists the parent's sleeping threads, which do not exist in
//! the child, and an unlock hands the lock to one of those ghosts, so the child's next
//! lock never returns (a worker forked while the parent's driver thread waited for
//! the engine hung that way). Here everything is in the word, so the child resets it.

use super::kernel;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct FutexLock<T> {
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, and one guard exists at a time.
unsafe impl<T: Send> Sync for FutexLock<T> {}
// SAFETY: as above; moving the lock moves the data.
unsafe impl<T: Send> Send for FutexLock<T> {}

/// Spins before sleeping: the engine is held for microseconds.
const SPINS: u32 = 100;

impl<T> FutexLock<T> {
    pub const fn new(value: T) -> Self {
        FutexLock {
            state: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> FutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        FutexGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            if self.state.load(Ordering::Relaxed) == 0
                && self
                    .state
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        // Marked "sleepers" from here on, so the holder's unlock wakes one.
        while self.state.swap(2, Ordering::Acquire) != 0 {
            futex(&self.state, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, 2);
        }
    }

    pub fn try_lock(&self) -> Option<FutexGuard<'_, T>> {
        self.state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| FutexGuard { lock: self })
    }

    fn unlock(&self) {
        if self.state.swap(0, Ordering::Release) == 2 {
            futex(&self.state, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
        }
    }

    /// Unlocks a lock whose guard was forgotten (held across fork in the parent).
    ///
    /// # Safety
    /// The caller's thread holds the lock, through a guard it forgot.
    pub unsafe fn force_unlock(&self) {
        self.unlock();
    }

    /// In a forked child: the lock as nobody holds it. The thread that held it (if
    /// not the forking one) and every sleeper are not in this process.
    ///
    /// # Safety
    /// Only in the child right after fork, while it has one thread.
    pub unsafe fn reset_in_child(&self) {
        self.state.store(0, Ordering::Release);
    }
}

fn futex(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: a futex call on a live, aligned u32; no timeout, no second word.
    unsafe {
        kernel::raw(
            libc::SYS_futex,
            [word.as_ptr() as i64, op as i64, val as i64, 0, 0, 0],
        );
    }
}

pub struct FutexGuard<'a, T> {
    lock: &'a FutexLock<T>,
}

impl<T> std::ops::Deref for FutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference to the data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> std::ops::DerefMut for FutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and the guard is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for FutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threads_never_overlap_and_every_increment_counts() {
        let lock = Arc::new(FutexLock::new((0u64, false)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut g = lock.lock();
                        assert!(!g.1, "two holders at once");
                        g.1 = true;
                        g.0 += 1;
                        g.1 = false;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(lock.lock().0, 80_000);
    }

    #[test]
    fn try_lock_fails_while_held_and_reset_frees_a_forgotten_lock() {
        let lock = FutexLock::new(1);
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        std::mem::forget(g);
        // SAFETY: one thread; the guard above was forgotten (as across fork).
        unsafe { lock.reset_in_child() };
        assert_eq!(*lock.try_lock().expect("free after reset"), 1);
    }
}
