//! The page every socket sharing one UMEM maps (MAP_SHARED, created with the first
//! socket, inherited across fork): the lock that serialises the fill and completion
//! rings, the pool of free TX frames, and one entry per socket (its owner's PID and
//! its small cache of TX frames).
//!
//! Frame accounting, the same for one process or many:
//! - RX frames circulate fill ring -> kernel -> some socket's RX ring -> back to the
//!   one fill ring, whichever socket received them.
//! - TX frames go pool -> a socket's cache -> its TX ring -> kernel -> the shared
//!   completion ring -> pool; any socket reads completions.
//! - The lock word holds the PID of its holder; a waiter that finds the holder gone
//!   (or a zombie) takes the lock over, so a process killed with -9 inside the
//!   critical section cannot deadlock the others. What the dead holder was doing is
//!   left consistent: every change writes its data first and its count or producer
//!   word last.
//! - A socket whose process died is *reaped* by any survivor: its cache goes back to
//!   the pool, its entry is freed. What it had in its own RX and TX rings is lost:
//!   at most its RX ring's frames not read yet and its TX ring's frames not sent yet
//!   (with `flush` after every batch, the latter is only what it queued since).

use crate::sys::{self, SharedMapping};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Sockets (of any processes) on one UMEM at once.
pub const MAX_MEMBERS: usize = 64;
/// TX frames a socket keeps for itself, to take the lock once per batch.
pub(crate) const CACHE: usize = 64;
/// Frames taken from the pool at once when the cache runs empty.
const CACHE_REFILL: usize = 32;
/// Spins on a held lock between checks that its holder still lives.
const SPINS_PER_CHECK: u32 = 256;

#[repr(C)]
struct Member {
    /// Process that created the socket; 0 = entry free.
    pid: AtomicU32,
    cache_len: AtomicU32,
    cache: [AtomicU64; CACHE],
}

#[repr(C)]
struct Header {
    lock: AtomicU32,
    /// Times a waiter took the lock from a dead holder.
    takeovers: AtomicU32,
    /// Free TX frames in `pool` (changed under the lock).
    pool_len: AtomicU32,
    _pad: u32,
    members: [Member; MAX_MEMBERS],
}

/// The family page of one UMEM.
pub(crate) struct FamilyPage {
    page: SharedMapping,
    tx_frames: usize,
}

/// Where the frames of a UMEM are right now (see [`crate::XskSocket::census`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCensus {
    /// RX frames on the fill ring (given to the kernel, not yet used).
    pub fill_ring: u32,
    /// TX frames in the shared pool.
    pub tx_pool: u32,
    /// TX frames in the sockets' caches (live sockets only: dead ones are reaped first).
    pub tx_cached: u32,
    /// Sockets registered in the page.
    pub members: u32,
    /// Times the lock was taken over from a dead holder.
    pub lock_takeovers: u32,
}

/// The family lock, released on drop.
pub(crate) struct Guard<'a> {
    lock: &'a AtomicU32,
    /// The lock was held by someone else when we asked: another socket on this queue
    /// (another process of the family, or a thread of ours) was using the rings.
    pub(crate) waited: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.store(0, Ordering::Release);
    }
}

impl FamilyPage {
    /// A fresh page whose pool holds `tx_addrs`.
    pub(crate) fn create(tx_addrs: impl ExactSizeIterator<Item = u64>) -> io::Result<FamilyPage> {
        let tx_frames = tx_addrs.len();
        let len = std::mem::size_of::<Header>() + 8 * tx_frames;
        let page = SharedMapping::new(len.next_multiple_of(4096))?;
        let me = FamilyPage { page, tx_frames };
        // The mapping is zero-filled: lock free, no members, empty caches.
        let h = me.header();
        for (i, a) in tx_addrs.enumerate() {
            me.pool()[i].store(a, Ordering::Relaxed);
        }
        h.pool_len.store(tx_frames as u32, Ordering::Release);
        Ok(me)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a `Header` (page aligned, zero-initialised
        // when created, all fields atomics or written once before sharing) and lives
        // as long as `self`.
        unsafe { &*self.page.as_ptr().cast::<Header>() }
    }

    fn pool(&self) -> &[AtomicU64] {
        // SAFETY: `tx_frames` u64 slots follow the header inside the mapping (sized in
        // `create`), 8-byte aligned since the header's size is a multiple of 8.
        unsafe {
            std::slice::from_raw_parts(
                self.page
                    .as_ptr()
                    .add(std::mem::size_of::<Header>())
                    .cast::<AtomicU64>(),
                self.tx_frames,
            )
        }
    }

    /// Takes the family lock as process `pid`.
    pub(crate) fn lock(&self, pid: u32) -> Guard<'_> {
        let h = self.header();
        let mut spins = 0u32;
        loop {
            match h
                .lock
                .compare_exchange_weak(0, pid, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Guard {
                        lock: &h.lock,
                        waited: spins > 0,
                    }
                }
                Err(0) => continue,
                Err(holder) => {
                    spins += 1;
                    if !spins.is_multiple_of(SPINS_PER_CHECK) {
                        std::hint::spin_loop();
                        continue;
                    }
                    if holder != pid && !sys::process_alive(holder) {
                        if h.lock
                            .compare_exchange(holder, pid, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            h.takeovers.fetch_add(1, Ordering::Relaxed);
                            return Guard {
                                lock: &h.lock,
                                waited: true,
                            };
                        }
                        continue;
                    }
                    // A holder preempted on a shared core: let it run.
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Test hook: takes the lock and never releases it (as a process killed inside
    /// the critical section would).
    pub(crate) fn leak_lock(&self, pid: u32) {
        std::mem::forget(self.lock(pid));
    }

    /// Registers a socket of process `pid`; returns its entry. Reaps dead sockets
    /// first when the page is full.
    pub(crate) fn join(&self, pid: u32) -> io::Result<usize> {
        for attempt in 0..2 {
            for (i, m) in self.header().members.iter().enumerate() {
                if m.pid
                    .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(i);
                }
            }
            if attempt == 0 {
                let _g = self.lock(pid);
                self.reap_locked();
            }
        }
        Err(io::Error::other(format!(
            "{MAX_MEMBERS} AF_XDP sockets already share this UMEM"
        )))
    }

    /// Names process `pid` as the owner of entry `member` (it took the socket over).
    pub(crate) fn adopt(&self, member: usize, pid: u32) {
        self.header().members[member]
            .pid
            .store(pid, Ordering::Release);
    }

    /// Gives entry `member`'s cache back to the pool and frees the entry (the socket
    /// is closing).
    pub(crate) fn leave(&self, pid: u32, member: usize) {
        let _g = self.lock(pid);
        self.release_member_locked(member);
    }

    fn release_member_locked(&self, member: usize) {
        let m = &self.header().members[member];
        let n = m.cache_len.load(Ordering::Relaxed) as usize;
        for i in 0..n.min(CACHE) {
            self.pool_push_locked(m.cache[i].load(Ordering::Relaxed));
        }
        m.cache_len.store(0, Ordering::Relaxed);
        m.pid.store(0, Ordering::Release);
    }

    /// Reaps the entries of dead processes (their caches back to the pool). Returns
    /// how many.
    pub(crate) fn reap_locked(&self) -> usize {
        let mut n = 0;
        for (i, m) in self.header().members.iter().enumerate() {
            let pid = m.pid.load(Ordering::Acquire);
            if pid != 0 && !sys::process_alive(pid) {
                self.release_member_locked(i);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn pool_push_locked(&self, addr: u64) {
        let h = self.header();
        let len = h.pool_len.load(Ordering::Relaxed) as usize;
        if len >= self.tx_frames {
            return; // a frame returned twice: never expected, never overflow the pool
        }
        self.pool()[len].store(addr, Ordering::Relaxed);
        h.pool_len.store(len as u32 + 1, Ordering::Release);
    }

    /// Moves up to a refill's worth of frames from the pool into `member`'s cache.
    pub(crate) fn refill_cache_locked(&self, member: usize) -> usize {
        let h = self.header();
        let m = &h.members[member];
        let have = m.cache_len.load(Ordering::Relaxed) as usize;
        let pool_len = h.pool_len.load(Ordering::Relaxed) as usize;
        let n = CACHE_REFILL.min(CACHE - have).min(pool_len);
        for i in 0..n {
            let a = self.pool()[pool_len - 1 - i].load(Ordering::Relaxed);
            m.cache[have + i].store(a, Ordering::Relaxed);
        }
        // Cache first, then the pool: a holder killed in between leaves a frame in
        // both (found twice by a census) rather than in neither.
        m.cache_len.store((have + n) as u32, Ordering::Release);
        h.pool_len.store((pool_len - n) as u32, Ordering::Release);
        n
    }

    /// The frame on top of `member`'s cache, not taken yet.
    pub(crate) fn cache_peek(&self, member: usize) -> Option<u64> {
        let m = &self.header().members[member];
        let n = m.cache_len.load(Ordering::Relaxed) as usize;
        (n > 0).then(|| m.cache[n.min(CACHE) - 1].load(Ordering::Relaxed))
    }

    /// Takes the frame `cache_peek` returned (only the owner touches its cache).
    pub(crate) fn cache_pop(&self, member: usize) {
        let m = &self.header().members[member];
        let n = m.cache_len.load(Ordering::Relaxed);
        m.cache_len.store(n.saturating_sub(1), Ordering::Release);
    }

    pub(crate) fn cache_len(&self, member: usize) -> usize {
        self.header().members[member]
            .cache_len
            .load(Ordering::Relaxed) as usize
    }

    pub(crate) fn pool_len(&self) -> usize {
        self.header().pool_len.load(Ordering::Acquire) as usize
    }

    /// Pool, caches, members, takeovers (under the lock, after reaping).
    pub(crate) fn census_locked(&self, fill_ring: u32) -> FrameCensus {
        self.reap_locked();
        let h = self.header();
        let mut c = FrameCensus {
            fill_ring,
            tx_pool: h.pool_len.load(Ordering::Relaxed),
            lock_takeovers: h.takeovers.load(Ordering::Relaxed),
            ..Default::default()
        };
        for m in &h.members {
            if m.pid.load(Ordering::Acquire) != 0 {
                c.members += 1;
                c.tx_cached += m.cache_len.load(Ordering::Relaxed);
            }
        }
        c
    }
}
