//! The four AF_XDP rings of a socket, mapped from its fd, read and written through
//! the producer/consumer words in the shared mapping itself (no cached copies), so
//! several processes can drive the fill and completion rings of one UMEM in turn
//! (serialised by the family lock, see `family`).

use crate::sys;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) const SOL_XDP: i32 = 283;
pub(crate) const XDP_MMAP_OFFSETS: i32 = 1;
pub(crate) const XDP_RX_RING: i32 = 2;
pub(crate) const XDP_TX_RING: i32 = 3;
pub(crate) const XDP_UMEM_REG: i32 = 4;
pub(crate) const XDP_UMEM_FILL_RING: i32 = 5;
pub(crate) const XDP_UMEM_COMPLETION_RING: i32 = 6;
pub(crate) const XDP_STATISTICS: i32 = 7;

const XDP_PGOFF_RX_RING: i64 = 0;
const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;
/// `XDP_RING_NEED_WAKEUP` in a ring's flags word.
const NEED_WAKEUP: u32 = 1;

/// `struct xdp_ring_offset` (with flags, Linux >= 5.4).
#[derive(Clone, Copy, Debug, Default)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

/// `struct xdp_mmap_offsets`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fill: RingOffset,
    comp: RingOffset,
}

impl MmapOffsets {
    pub(crate) fn of(fd: RawFd) -> io::Result<MmapOffsets> {
        let mut raw = [0u64; 16];
        // SAFETY: `raw` is 128 writable bytes, the size of `struct xdp_mmap_offsets`.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                raw.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(&raw),
            )
        };
        let n = sys::getsockopt_bytes(fd, SOL_XDP, XDP_MMAP_OFFSETS, bytes)?;
        if n != 128 {
            return Err(io::Error::other(format!(
                "XDP_MMAP_OFFSETS returned {n} bytes: kernel before 5.4 (no ring flags)"
            )));
        }
        let ring = |i: usize| RingOffset {
            producer: raw[i * 4],
            consumer: raw[i * 4 + 1],
            desc: raw[i * 4 + 2],
            flags: raw[i * 4 + 3],
        };
        Ok(MmapOffsets {
            rx: ring(0),
            tx: ring(1),
            fill: ring(2),
            comp: ring(3),
        })
    }
}

/// Which ring of a socket to map.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RingKind {
    Rx,
    Tx,
    Fill,
    Completion,
}

/// One mapped ring. Descriptors are `xdp_desc` (16 bytes: addr, len, options) on RX
/// and TX, plain u64 addresses on the fill and completion rings.
pub(crate) struct Ring {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<u8>,
    size: u32,
}

// SAFETY: the pointers point into a mapping this value owns; the words they point to
// are atomics, the descriptors are written only by the ring's one producer.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps `kind` of socket `fd`, which has `entries` (a power of two) configured.
    pub(crate) fn map(
        fd: RawFd,
        off: &MmapOffsets,
        kind: RingKind,
        entries: u32,
    ) -> io::Result<Ring> {
        let (o, pgoff, desc_size) = match kind {
            RingKind::Rx => (off.rx, XDP_PGOFF_RX_RING, 16),
            RingKind::Tx => (off.tx, XDP_PGOFF_TX_RING, 16),
            RingKind::Fill => (off.fill, XDP_UMEM_PGOFF_FILL_RING, 8),
            RingKind::Completion => (off.comp, XDP_UMEM_PGOFF_COMPLETION_RING, 8),
        };
        let len = o.desc as usize + entries as usize * desc_size;
        let map = sys::mmap_fd(fd, len, pgoff)
            .map_err(|e| io::Error::new(e.kind(), format!("mapping the {kind:?} ring: {e}")))?;
        let at = |off: u64| {
            // SAFETY: the kernel's offsets lie inside the `len` bytes just mapped.
            unsafe { NonNull::new_unchecked(map.as_ptr().add(off as usize)) }
        };
        Ok(Ring {
            map,
            map_len: len,
            producer: at(o.producer).cast(),
            consumer: at(o.consumer).cast(),
            flags: at(o.flags).cast(),
            desc: at(o.desc),
            size: entries,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a 4-byte aligned word inside our mapping, shared with the kernel
        // (and other processes) and only accessed atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }

    fn index(&self, i: u32) -> usize {
        (i & (self.size - 1)) as usize
    }

    // Producer side (fill, TX): user space writes descriptors, then the producer word.

    /// Entries written but not consumed yet.
    pub(crate) fn pending(&self) -> u32 {
        self.producer()
            .load(Ordering::Relaxed)
            .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    pub(crate) fn free(&self) -> u32 {
        self.size - self.pending()
    }

    /// Writes as many of `addrs` as fit (fill ring) and publishes them.
    pub(crate) fn produce_addrs(&self, addrs: &[u64]) -> usize {
        let prod = self.producer().load(Ordering::Relaxed);
        let n = (self.free() as usize).min(addrs.len());
        for (i, &a) in addrs[..n].iter().enumerate() {
            let at = self.index(prod.wrapping_add(i as u32));
            // SAFETY: `at` < size: an 8-byte slot of the ring's descriptor array that
            // the kernel does not read until the producer word moves past it.
            unsafe { self.desc.cast::<u64>().as_ptr().add(at).write_volatile(a) };
        }
        self.producer()
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        n
    }

    /// Writes one `xdp_desc` (TX ring) and publishes it; false when the ring is full.
    pub(crate) fn produce_desc(&self, addr: u64, len: u32) -> bool {
        if self.free() == 0 {
            return false;
        }
        let prod = self.producer().load(Ordering::Relaxed);
        let at = self.index(prod);
        // SAFETY: a free 16-byte slot of the descriptor array (as in `produce_addrs`).
        unsafe {
            let d = self.desc.as_ptr().add(at * 16);
            d.cast::<u64>().write_volatile(addr);
            d.add(8).cast::<u32>().write_volatile(len);
            d.add(12).cast::<u32>().write_volatile(0);
        }
        self.producer()
            .store(prod.wrapping_add(1), Ordering::Release);
        true
    }

    // Consumer side (RX, completion): the kernel writes, user space reads and then
    // moves the consumer word.

    pub(crate) fn available(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.consumer().load(Ordering::Relaxed))
    }

    /// Reads up to `max` addresses (completion ring) and releases them.
    pub(crate) fn consume_addrs(&self, max: u32, mut f: impl FnMut(u64)) -> u32 {
        let cons = self.consumer().load(Ordering::Relaxed);
        let n = self.available().min(max);
        for i in 0..n {
            let at = self.index(cons.wrapping_add(i));
            // SAFETY: an 8-byte slot the kernel published (below the producer word).
            f(unsafe { self.desc.cast::<u64>().as_ptr().add(at).read_volatile() });
        }
        self.consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
        n
    }

    /// Reads up to `max` descriptors (RX ring) as (addr, len), then releases them:
    /// `f` must be done with each frame when it returns.
    pub(crate) fn consume_descs(&self, max: u32, mut f: impl FnMut(u64, u32)) -> u32 {
        let cons = self.consumer().load(Ordering::Relaxed);
        let n = self.available().min(max);
        for i in 0..n {
            let at = self.index(cons.wrapping_add(i));
            // SAFETY: a 16-byte descriptor the kernel published.
            let (addr, len) = unsafe {
                let d = self.desc.as_ptr().add(at * 16);
                (
                    d.cast::<u64>().read_volatile(),
                    d.add(8).cast::<u32>().read_volatile(),
                )
            };
            f(addr, len);
        }
        self.consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
        n
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `map` and unmap it once.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// The four rings of one bound socket.
pub(crate) struct Rings {
    pub rx: Ring,
    pub tx: Ring,
    pub fill: Ring,
    pub comp: Ring,
}

impl Rings {
    /// Maps the rings of a bound socket: its own RX and TX rings, and the fill and
    /// completion rings of the buffer pool it uses (a socket sharing another's pool
    /// maps that pool's rings through its own fd). The fill ring has as many entries
    /// as the RX ring, the completion ring as the TX ring (every RX frame fits on the
    /// fill ring, every TX frame on the completion ring).
    pub(crate) fn map(fd: RawFd, rx_entries: u32, tx_entries: u32) -> io::Result<Rings> {
        let off = MmapOffsets::of(fd)?;
        Ok(Rings {
            rx: Ring::map(fd, &off, RingKind::Rx, rx_entries)?,
            tx: Ring::map(fd, &off, RingKind::Tx, tx_entries)?,
            fill: Ring::map(fd, &off, RingKind::Fill, rx_entries)?,
            comp: Ring::map(fd, &off, RingKind::Completion, tx_entries)?,
        })
    }
}
