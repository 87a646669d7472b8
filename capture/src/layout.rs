//! The segment's layout, shared by reader and writer, and the mapping helpers.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// Directory that holds the segments (next to the counters segments).
pub const SHM_DIR: &str = "/dev/shm";
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"FNCAPTR1");
pub(crate) const VERSION: u64 = 1;
/// Largest snap length a reader may ask for (a whole 64 KiB frame and then some).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Smallest ring: room for a few records of the largest snap length.
pub const MIN_RING_BYTES: u64 = 1 << 20;
/// Ring size `fastnet pcap` uses unless told otherwise.
pub const DEFAULT_RING_BYTES: u64 = 16 << 20;

/// Whether a frame came in or went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Direction {
    Rx = 0,
    Tx = 1,
}

/// The segment header. Fields above `wanted` are written once by the reader before
/// the file gets its final name and never change; the atomics are shared. Producer
/// and consumer positions sit on cache lines of their own.
#[repr(C)]
pub(crate) struct Header {
    pub magic: u64,
    pub version: u64,
    /// Bytes in the record ring (a power of two).
    pub ring_bytes: u64,
    pub snaplen: u64,
    pub reader_pid: u64,
    _fixed_pad: [u64; 3],
    /// 1 while the reader wants frames; the reader clears it before leaving.
    pub wanted: AtomicU64,
    /// The pid of the last process that attached as writer (0: none yet).
    pub writer_pid: AtomicU64,
    /// Records the writer could not fit because the reader was behind.
    pub dropped: AtomicU64,
    _shared_pad: [u64; 5],
    /// Bytes ever written (producer position); only the writer stores it.
    pub head: AtomicU64,
    _head_pad: [u64; 7],
    /// Bytes ever consumed (consumer position); only the reader stores it.
    pub tail: AtomicU64,
    _tail_pad: [u64; 7],
}

pub(crate) const HEADER_LEN: usize = std::mem::size_of::<Header>();
const _: () = assert!(HEADER_LEN == 256);

impl Header {
    pub fn new(ring_bytes: u64, snaplen: u32, reader_pid: u32) -> Header {
        Header {
            magic: MAGIC,
            version: VERSION,
            ring_bytes,
            snaplen: snaplen as u64,
            reader_pid: reader_pid as u64,
            _fixed_pad: [0; 3],
            wanted: AtomicU64::new(1),
            writer_pid: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            _shared_pad: [0; 5],
            head: AtomicU64::new(0),
            _head_pad: [0; 7],
            tail: AtomicU64::new(0),
            _tail_pad: [0; 7],
        }
    }

    /// Whether a mapping of `file_len` bytes with this header is one we can use.
    pub fn valid(&self, file_len: usize) -> bool {
        self.magic == MAGIC
            && self.version == VERSION
            && self.ring_bytes.is_power_of_two()
            && self.ring_bytes >= MIN_RING_BYTES
            && file_len as u64 == HEADER_LEN as u64 + self.ring_bytes
            && self.snaplen > 0
            && self.snaplen <= MAX_SNAPLEN as u64
    }
}

/// What precedes each frame's bytes in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub cap_len: u32,
    pub direction: u32,
    pub _reserved: u32,
}

pub(crate) const RECORD_HEADER_LEN: usize = std::mem::size_of::<RecordHeader>();

impl RecordHeader {
    pub fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..8].copy_from_slice(&self.ts_ns.to_le_bytes());
        b[8..12].copy_from_slice(&self.orig_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.cap_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.direction.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        RecordHeader {
            ts_ns: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            orig_len: u32_at(8),
            cap_len: u32_at(12),
            direction: u32_at(16),
            _reserved: 0,
        }
    }
}

/// Ring bytes a record of `cap_len` captured bytes takes (8-byte aligned).
pub(crate) fn record_len(cap_len: usize) -> u64 {
    ((RECORD_HEADER_LEN + cap_len + 7) & !7) as u64
}

/// Path of the capture segment of process `pid`.
pub fn capture_path(pid: u32) -> PathBuf {
    Path::new(SHM_DIR).join(format!("fastnet-{pid}.capture"))
}

/// A shared read-write mapping of a whole segment file.
pub(crate) struct Mapping {
    pub base: NonNull<u8>,
    pub len: usize,
}

impl Mapping {
    pub fn new(file: &File, len: usize) -> io::Result<Mapping> {
        if len < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "capture segment too short",
            ));
        }
        // SAFETY: a fresh shared mapping of a file we hold open, of the file's length.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least HEADER_LEN long (checked in
        // `new`); the fixed fields are only read, the shared ones only used atomically.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// The record ring. Callers checked `header().valid(len)`.
    fn ring(&self) -> *mut u8 {
        // SAFETY: HEADER_LEN < len (checked in `new`).
        unsafe { self.base.as_ptr().add(HEADER_LEN) }
    }

    /// Copies `src` into the ring at position `pos` (modulo the ring size), wrapping.
    /// The caller owns those ring bytes (writer: between head and tail + size).
    pub fn copy_in(&self, ring_bytes: u64, pos: u64, src: &[u8]) {
        let at = (pos & (ring_bytes - 1)) as usize;
        let first = src.len().min(ring_bytes as usize - at);
        // SAFETY: at + first <= ring_bytes and the rest wraps to the start; the ring
        // lies inside the mapping (valid()), and the reader does not read these bytes
        // until the head moves past them.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ring().add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.ring(), src.len() - first);
        }
    }

    /// Copies ring bytes at `pos` (modulo the ring size) into `dst`, wrapping.
    pub fn copy_out(&self, ring_bytes: u64, pos: u64, dst: &mut [u8]) {
        let at = (pos & (ring_bytes - 1)) as usize;
        let first = dst.len().min(ring_bytes as usize - at);
        // SAFETY: as in copy_in; the caller reads only bytes below the published head,
        // which the writer does not touch again until the tail moves past them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring().add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.ring(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no reference outlives self.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// True unless `pid` certainly no longer exists.
pub(crate) fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
