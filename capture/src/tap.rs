//! The writer side, inside the app: finds a reader's segment, appends frames to it,
//! and lets go when the reader does.

use crate::layout::{
    capture_path, process_alive, record_len, Direction, Mapping, RecordHeader, HEADER_LEN,
    RECORD_HEADER_LEN,
};
use stack::time::Instant;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// How often (in the caller's microseconds) [`CaptureTap::maybe_attach`] looks at the
/// file system: a capture starts, or stops, within this long of the reader asking.
pub const CHECK_INTERVAL_US: u64 = 250_000;

/// The capture writer of one process. Idle, it costs one comparison per drive and one
/// branch per frame; it looks for a reader at most every [`CHECK_INTERVAL_US`].
pub struct CaptureTap {
    path: PathBuf,
    next_check_us: u64,
    active: Option<Active>,
}

/// An attached segment.
struct Active {
    map: Mapping,
    ring_bytes: u64,
    snaplen: usize,
    /// Identity of the file we mapped: a new reader replaces it with another one.
    dev: u64,
    ino: u64,
}

// SAFETY: the mapping is only accessed through atomics, the fixed header, and ring bytes
// the protocol gives to the single producer (whoever holds the stack's lock).
unsafe impl Send for Active {}

impl CaptureTap {
    /// The tap of process `pid`: the pid its counters segment is named after.
    pub fn new(pid: u32) -> CaptureTap {
        Self::at(capture_path(pid))
    }

    /// A tap on an explicit segment path (tests).
    pub fn at(path: PathBuf) -> CaptureTap {
        CaptureTap {
            path,
            next_check_us: 0,
            active: None,
        }
    }

    /// Attaches to a reader that appeared, or detaches from one that left, at most
    /// once per [`CHECK_INTERVAL_US`] of `now` (any monotonic clock in µs).
    #[inline]
    pub fn maybe_attach(&mut self, now: Instant) {
        if now.micros() < self.next_check_us {
            return;
        }
        self.next_check_us = now.micros() + CHECK_INTERVAL_US;
        self.check();
    }

    /// Looks at the segment now; returns whether a capture is active afterwards.
    pub fn check(&mut self) -> bool {
        let meta = std::fs::metadata(&self.path).ok();
        if let Some(a) = &self.active {
            let same_file = meta
                .as_ref()
                .is_some_and(|m| m.dev() == a.dev && m.ino() == a.ino);
            let wanted = a.map.header().wanted.load(Ordering::Acquire) != 0;
            let reader_alive = process_alive(a.map.header().reader_pid as u32);
            if same_file && wanted && reader_alive {
                return true;
            }
            if same_file && !reader_alive {
                // A reader killed before it could clean up: nobody else will.
                let _ = std::fs::remove_file(&self.path);
            }
            self.active = None;
            if !same_file && meta.is_some() {
                self.attach();
            }
        } else if meta.is_some() {
            self.attach();
        }
        self.active.is_some()
    }

    fn attach(&mut self) {
        self.active = Self::open(&self.path);
        if let Some(a) = &self.active {
            a.map
                .header()
                .writer_pid
                .store(std::process::id() as u64, Ordering::Relaxed);
        }
    }

    fn open(path: &Path) -> Option<Active> {
        let file = File::options().read(true).write(true).open(path).ok()?;
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok()?;
        if len < HEADER_LEN {
            return None;
        }
        let map = Mapping::new(&file, len).ok()?;
        let h = map.header();
        if !h.valid(len) || h.wanted.load(Ordering::Acquire) == 0 {
            return None;
        }
        if !process_alive(h.reader_pid as u32) {
            return None;
        }
        Some(Active {
            ring_bytes: h.ring_bytes,
            snaplen: h.snaplen as usize,
            dev: meta.dev(),
            ino: meta.ino(),
            map,
        })
    }

    /// Whether frames are being recorded now.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Records one frame if a capture is active (up to the reader's snap length), or
    /// counts a drop when the reader is behind. Allocates nothing.
    #[inline]
    pub fn frame(&mut self, direction: Direction, frame: &[u8]) {
        if let Some(a) = &self.active {
            a.write(direction, frame);
        }
    }
}

impl Active {
    fn write(&self, direction: Direction, frame: &[u8]) {
        let h = self.map.header();
        let cap = frame.len().min(self.snaplen);
        let need = record_len(cap);
        // Only this process stores the head; the reader's tail says what is free.
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Acquire);
        let free = self.ring_bytes.saturating_sub(head.wrapping_sub(tail));
        if need > free {
            h.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rh = RecordHeader {
            ts_ns: realtime_ns(),
            orig_len: frame.len() as u32,
            cap_len: cap as u32,
            direction: direction as u32,
            _reserved: 0,
        };
        self.map.copy_in(self.ring_bytes, head, &rh.to_bytes());
        self.map.copy_in(
            self.ring_bytes,
            head + RECORD_HEADER_LEN as u64,
            &frame[..cap],
        );
        h.head.store(head + need, Ordering::Release);
    }
}

/// Wall-clock time for pcap timestamps (vDSO: no system call).
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
