//! The reader side (`fastnet pcap`): creates the segment, consumes records, and
//! removes the segment when it goes away (which detaches the writer).

use crate::layout::{
    capture_path, process_alive, record_len, Direction, Header, Mapping, RecordHeader, HEADER_LEN,
    MAGIC, MAX_SNAPLEN, MIN_RING_BYTES, RECORD_HEADER_LEN,
};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// One captured frame; its bytes are in the buffer passed to [`CaptureReader::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Wall-clock time (CLOCK_REALTIME) the writer saw the frame, in nanoseconds.
    pub ts_ns: u64,
    /// Length of the frame on the wire; the buffer holds at most the snap length.
    pub orig_len: u32,
    pub direction: Direction,
}

/// The consumer of one process's capture ring.
pub struct CaptureReader {
    map: Mapping,
    path: PathBuf,
    ring_bytes: u64,
    snaplen: u32,
}

// SAFETY: the mapping is only accessed through atomics, the fixed header, and ring bytes
// the protocol gives to the consumer.
unsafe impl Send for CaptureReader {}

impl CaptureReader {
    /// Starts capturing process `pid`: creates its segment with a ring of `ring_bytes`
    /// (rounded up to a power of two) and snap length `snaplen`. The segment is readable
    /// and writable only by the process's user (the frames are its traffic).
    pub fn create(pid: u32, snaplen: u32, ring_bytes: u64) -> io::Result<CaptureReader> {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("/proc/{pid}"))
            .ok()
            .map(|m| (m.uid(), m.gid()));
        Self::create_owned(capture_path(pid), snaplen, ring_bytes, owner)
    }

    /// Creates a segment at an explicit path (tests). Fails with `AlreadyExists` when a
    /// live reader already captures there; a dead reader's segment is replaced.
    pub fn create_at(path: PathBuf, snaplen: u32, ring_bytes: u64) -> io::Result<CaptureReader> {
        Self::create_owned(path, snaplen, ring_bytes, None)
    }

    pub(crate) fn create_owned(
        path: PathBuf,
        snaplen: u32,
        ring_bytes: u64,
        owner: Option<(u32, u32)>,
    ) -> io::Result<CaptureReader> {
        if snaplen == 0 || snaplen > MAX_SNAPLEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snap length must be 1..={MAX_SNAPLEN}"),
            ));
        }
        let ring_bytes = ring_bytes.max(MIN_RING_BYTES).next_power_of_two();
        if let Some(other) = live_reader_of(&path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "another capture (fastnet pcap, pid {other}) is running on {}: stop it first",
                    path.display()
                ),
            ));
        }
        let me = std::process::id();
        // Build the segment under a temporary name and rename it into place, so a
        // writer never maps a half-initialized header.
        let tmp = path.with_extension(format!("capture.tmp{me}"));
        let len = HEADER_LEN + ring_bytes as usize;
        let build = || -> io::Result<Mapping> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.set_len(len as u64)?;
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some((uid, gid)) = owner {
                // Only root can give it away; another user's reader is that user anyway.
                let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
            }
            let map = Mapping::new(&file, len)?;
            // SAFETY: the mapping is page-aligned, at least HEADER_LEN long, and nobody
            // else knows the temporary file yet.
            unsafe {
                map.base
                    .as_ptr()
                    .cast::<Header>()
                    .write(Header::new(ring_bytes, snaplen, me))
            };
            std::fs::rename(&tmp, &path)?;
            Ok(map)
        };
        let map = build().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(CaptureReader {
            map,
            path,
            ring_bytes,
            snaplen,
        })
    }

    /// Takes the oldest record: its bytes go to `buf` (replacing what was there).
    /// `Ok(None)` when the ring is empty; an error when the writer left garbage.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Record>> {
        let h = self.map.header();
        let tail = h.tail.load(Ordering::Relaxed);
        let head = h.head.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if used == 0 {
            return Ok(None);
        }
        let corrupt = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("capture ring {} is corrupt: {what}", self.path.display()),
            ))
        };
        if used > self.ring_bytes || used < RECORD_HEADER_LEN as u64 {
            return corrupt("positions out of range");
        }
        let mut hb = [0u8; RECORD_HEADER_LEN];
        self.map.copy_out(self.ring_bytes, tail, &mut hb);
        let rh = RecordHeader::from_bytes(&hb);
        let cap = rh.cap_len as usize;
        if rh.cap_len > self.snaplen || rh.cap_len > rh.orig_len || record_len(cap) > used {
            return corrupt("bad record length");
        }
        let direction = match rh.direction {
            0 => Direction::Rx,
            1 => Direction::Tx,
            _ => return corrupt("bad direction"),
        };
        buf.clear();
        buf.resize(cap, 0);
        self.map
            .copy_out(self.ring_bytes, tail + RECORD_HEADER_LEN as u64, buf);
        h.tail.store(tail + record_len(cap), Ordering::Release);
        Ok(Some(Record {
            ts_ns: rh.ts_ns,
            orig_len: rh.orig_len,
            direction,
        }))
    }

    /// Records the writer had to drop because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.map.header().dropped.load(Ordering::Relaxed)
    }

    /// The last process that attached as writer, if any has.
    pub fn writer_pid(&self) -> Option<u32> {
        match self.map.header().writer_pid.load(Ordering::Relaxed) {
            0 => None,
            p => Some(p as u32),
        }
    }

    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    pub fn ring_bytes(&self) -> u64 {
        self.ring_bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CaptureReader {
    fn drop(&mut self) {
        // Clear the flag first: a writer that checks between the two steps detaches
        // either way.
        self.map.header().wanted.store(0, Ordering::Release);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid of a live reader owning the segment at `path`, if there is one.
fn live_reader_of(path: &Path) -> Option<u32> {
    let mut hb = [0u8; HEADER_LEN];
    std::io::Read::read_exact(&mut File::open(path).ok()?, &mut hb).ok()?;
    let field =
        |offset: usize| u64::from_le_bytes(hb[offset..offset + 8].try_into().expect("8 bytes"));
    let magic = field(std::mem::offset_of!(Header, magic));
    let pid = field(std::mem::offset_of!(Header, reader_pid)) as u32;
    let wanted = field(std::mem::offset_of!(Header, wanted));
    (magic == MAGIC && wanted != 0 && pid != 0 && process_alive(pid)).then_some(pid)
}
