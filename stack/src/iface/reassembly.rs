//! IPv6 fragment reassembly (RFC 8200 §4.5) for UDP: bounded, no I/O, no clock.
//!
//! Fragments are keyed by (source, destination, identification). Everything is bounded:
//! datagrams in progress, bytes per datagram, bytes held in total, fragments per
//! datagram, and time (60 s from the first fragment that arrived). A fragment that
//! overlaps another makes the whole datagram be dropped, including fragments still to
//! come (RFC 5722); an identical copy of a fragment already held is tolerated. Every
//! drop is counted by reason in [`ReassemblyStats`].

use crate::time::{Duration, Instant};
use crate::wire::ipv6_ext::FragmentRepr;
use core::net::Ipv6Addr;

/// Limits of the reassembly buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Datagrams being reassembled (or remembered as dropped) at once.
    pub max_datagrams: usize,
    /// Largest reassembled fragmentable part; at most 65535 (no jumbograms).
    pub max_datagram_len: usize,
    /// Bytes held by all datagrams in progress together.
    pub max_total_bytes: usize,
    /// Fragments of one datagram (without a bound, 8-byte fragments of a 64 KiB
    /// datagram would make 8192 pieces to track).
    pub max_fragments: usize,
    /// How long a datagram may take from its first fragment (RFC 8200: 60 s).
    pub timeout: Duration,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_datagrams: 64,
            max_datagram_len: 65535,
            max_total_bytes: 1 << 20,
            max_fragments: 64,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Which datagram a fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub ident: u32,
}

/// Why a fragment was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FragmentDrop {
    /// More fragments follow but the length is not a multiple of 8 (RFC 8200 §4.5:
    /// Parameter Problem code 0 pointing at the Payload Length).
    Unaligned,
    /// Offset and length reach past 65535 or `max_datagram_len` (for 65535: Parameter
    /// Problem code 0 pointing at the Fragment Offset).
    TooBig,
    /// It overlaps a fragment held (and is not an identical copy): the datagram is
    /// dropped and remembered until its timeout (RFC 5722).
    Overlap,
    /// It belongs to a datagram already dropped for overlap or inconsistency.
    DatagramDropped,
    /// Its end disagrees with the datagram's known end (a second last fragment with
    /// another end, or data past the last fragment's end): the datagram is dropped.
    Inconsistent,
    /// The datagram has `max_fragments` fragments already: the datagram is dropped.
    TooManyFragments,
    /// `max_datagrams` datagrams are in progress.
    TableFull,
    /// Holding it would exceed `max_total_bytes`.
    MemoryFull,
}

/// Counters of the reassembly buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Datagrams put together from two or more fragments.
    pub reassembled: u64,
    /// Fragments with offset 0 and no more fragments, passed through whole (RFC 6946).
    pub atomic: u64,
    /// Identical copies of a fragment held, ignored.
    pub duplicates: u64,
    /// Datagrams dropped unfinished at their timeout.
    pub timed_out: u64,
    pub unaligned: u64,
    pub too_big: u64,
    pub overlap: u64,
    pub datagram_dropped: u64,
    pub inconsistent: u64,
    pub too_many_fragments: u64,
    pub table_full: u64,
    pub memory_full: u64,
}

impl ReassemblyStats {
    /// Fragments dropped for `reason`.
    pub fn drops(&self, reason: FragmentDrop) -> u64 {
        match reason {
            FragmentDrop::Unaligned => self.unaligned,
            FragmentDrop::TooBig => self.too_big,
            FragmentDrop::Overlap => self.overlap,
            FragmentDrop::DatagramDropped => self.datagram_dropped,
            FragmentDrop::Inconsistent => self.inconsistent,
            FragmentDrop::TooManyFragments => self.too_many_fragments,
            FragmentDrop::TableFull => self.table_full,
            FragmentDrop::MemoryFull => self.memory_full,
        }
    }
    fn count(&mut self, reason: FragmentDrop) {
        let c = match reason {
            FragmentDrop::Unaligned => &mut self.unaligned,
            FragmentDrop::TooBig => &mut self.too_big,
            FragmentDrop::Overlap => &mut self.overlap,
            FragmentDrop::DatagramDropped => &mut self.datagram_dropped,
            FragmentDrop::Inconsistent => &mut self.inconsistent,
            FragmentDrop::TooManyFragments => &mut self.too_many_fragments,
            FragmentDrop::TableFull => &mut self.table_full,
            FragmentDrop::MemoryFull => &mut self.memory_full,
        };
        *c += 1;
    }
}

/// A datagram put back together: its fragmentable part (what followed the Fragment
/// headers), starting with a header of type `next_header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassembled {
    pub key: FragmentKey,
    pub next_header: u8,
    pub payload: Vec<u8>,
}

/// A datagram being collected.
#[derive(Debug, Default)]
struct Collecting {
    /// The fragmentable part as far as any fragment reached (gaps are zeros).
    data: Vec<u8>,
    /// The fragments held, `[start, end)`, sorted, not overlapping, non-empty.
    pieces: Vec<(usize, usize)>,
    /// Bytes the pieces cover: the datagram is complete when this reaches `end`.
    covered: usize,
    /// Its length, once the last fragment arrived.
    end: Option<usize>,
    /// From the fragment at offset 0.
    next_header: Option<u8>,
}

#[derive(Debug)]
enum State {
    Collecting(Collecting),
    /// Dropped (overlap, inconsistency): its later fragments are dropped too.
    Dropped,
}

#[derive(Debug)]
struct Entry {
    key: FragmentKey,
    deadline: Instant,
    state: State,
}

/// The reassembly buffer.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    entries: Vec<Entry>,
    held_bytes: usize,
    stats: ReassemblyStats,
}

impl Reassembler {
    pub fn new(config: ReassemblyConfig) -> Self {
        Reassembler {
            config,
            entries: Vec::new(),
            held_bytes: 0,
            stats: ReassemblyStats::default(),
        }
    }
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }
    /// Datagrams in progress (or remembered as dropped).
    pub fn in_progress(&self) -> usize {
        self.entries.len()
    }
    /// Bytes held for datagrams in progress.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
    /// When the earliest datagram times out (for the interface's `poll_at`).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.deadline).min()
    }

    /// Drops datagrams whose time is up; returns how many unfinished ones were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut timed_out = 0;
        let held = &mut self.held_bytes;
        self.entries.retain(|e| {
            if e.deadline > now {
                return true;
            }
            if let State::Collecting(c) = &e.state {
                *held -= c.data.len();
                timed_out += 1;
            }
            false
        });
        self.stats.timed_out += timed_out as u64;
        timed_out as usize
    }

    /// Takes a fragment: `frag` is its Fragment header, `data` what followed it.
    /// Returns the datagram when this fragment completes it.
    pub fn insert(
        &mut self,
        now: Instant,
        key: FragmentKey,
        frag: &FragmentRepr,
        data: &[u8],
    ) -> Result<Option<Reassembled>, FragmentDrop> {
        self.expire(now);
        if frag.is_atomic() {
            self.stats.atomic += 1;
            return Ok(Some(Reassembled {
                key,
                next_header: frag.next_header,
                payload: data.to_vec(),
            }));
        }
        let r = self.insert_fragment(now, key, frag, data);
        if let Err(reason) = r {
            self.stats.count(reason);
        }
        r
    }

    fn insert_fragment(
        &mut self,
        now: Instant,
        key: FragmentKey,
        frag: &FragmentRepr,
        data: &[u8],
    ) -> Result<Option<Reassembled>, FragmentDrop> {
        let start = frag.offset as usize;
        let end = start + data.len();
        if frag.more_fragments && !data.len().is_multiple_of(8) {
            return Err(FragmentDrop::Unaligned);
        }
        if end > 65535 || end > self.config.max_datagram_len {
            return Err(FragmentDrop::TooBig);
        }
        let i = match self.entries.iter().position(|e| e.key == key) {
            Some(i) => i,
            None => {
                if self.entries.len() >= self.config.max_datagrams {
                    return Err(FragmentDrop::TableFull);
                }
                self.entries.push(Entry {
                    key,
                    deadline: now + self.config.timeout,
                    state: State::Collecting(Collecting::default()),
                });
                self.entries.len() - 1
            }
        };
        let State::Collecting(c) = &mut self.entries[i].state else {
            return Err(FragmentDrop::DatagramDropped);
        };
        match c.place(start, end, frag.more_fragments, data, &self.config) {
            Placed::Duplicate => {
                self.stats.duplicates += 1;
                return Ok(None);
            }
            Placed::DropDatagram(reason) => {
                self.held_bytes -= c.data.len();
                self.entries[i].state = State::Dropped;
                return Err(reason);
            }
            Placed::New => {}
        }
        // Room for the bytes this fragment adds past what the datagram holds.
        let grow = end.saturating_sub(c.data.len());
        if self.held_bytes + grow > self.config.max_total_bytes {
            if c.pieces.is_empty() && c.end.is_none() {
                self.entries.swap_remove(i);
            }
            return Err(FragmentDrop::MemoryFull);
        }
        self.held_bytes += grow;
        c.store(start, end, frag, data);
        if c.end != Some(c.covered) {
            return Ok(None);
        }
        let State::Collecting(c) = self.entries.swap_remove(i).state else {
            unreachable!("the entry was collecting just above");
        };
        self.held_bytes -= c.data.len();
        self.stats.reassembled += 1;
        Ok(Some(Reassembled {
            key,
            // The piece at offset 0 is held: `covered == end > 0` with no overlaps.
            next_header: c.next_header.unwrap_or(frag.next_header),
            payload: c.data,
        }))
    }
}

enum Placed {
    New,
    Duplicate,
    DropDatagram(FragmentDrop),
}

impl Collecting {
    /// Where `[start, end)` goes: new, an identical copy, or a reason to drop the whole
    /// datagram.
    fn place(
        &self,
        start: usize,
        end: usize,
        more: bool,
        data: &[u8],
        config: &ReassemblyConfig,
    ) -> Placed {
        let past_end = match self.end {
            Some(e) => end > e || (!more && end != e),
            // A last fragment must end at or after everything held.
            None => !more && self.pieces.last().is_some_and(|&(_, e)| e > end),
        };
        if past_end {
            return Placed::DropDatagram(FragmentDrop::Inconsistent);
        }
        if let Some(&(s, e)) = self.pieces.iter().find(|&&(s, e)| s < end && start < e) {
            if (s, e) == (start, end) && self.data[s..e] == *data {
                return Placed::Duplicate;
            }
            return Placed::DropDatagram(FragmentDrop::Overlap);
        }
        if start == end && (more || self.end == Some(end)) {
            // An empty fragment adds nothing (a repeated empty last one neither).
            return Placed::Duplicate;
        }
        if self.pieces.len() >= config.max_fragments {
            return Placed::DropDatagram(FragmentDrop::TooManyFragments);
        }
        Placed::New
    }

    /// Copies a placed fragment in (the caller made room for it).
    fn store(&mut self, start: usize, end: usize, frag: &FragmentRepr, data: &[u8]) {
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(data);
        if start < end {
            let at = self.pieces.partition_point(|&(s, _)| s < start);
            self.pieces.insert(at, (start, end));
            self.covered += end - start;
        }
        if start == 0 {
            self.next_header = Some(frag.next_header);
        }
        if !frag.more_fragments {
            self.end = Some(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UDP: u8 = 17;

    fn key(ident: u32) -> FragmentKey {
        FragmentKey {
            src: "fd77::1".parse().unwrap(),
            dst: "fd77::2".parse().unwrap(),
            ident,
        }
    }

    fn frag(offset: usize, more: bool) -> FragmentRepr {
        FragmentRepr {
            next_header: UDP,
            offset: offset as u16,
            more_fragments: more,
            ident: 0,
        }
    }

    /// A datagram whose byte i is a function of i and the identification.
    fn datagram(ident: u32, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u32 * 7 + ident) as u8).collect()
    }

    /// Cuts `d` into fragments of `size` bytes (a multiple of 8): (offset, more, bytes).
    fn cut(d: &[u8], size: usize) -> Vec<(usize, bool, &[u8])> {
        d.chunks(size)
            .enumerate()
            .map(|(i, c)| (i * size, (i + 1) * size < d.len(), c))
            .collect()
    }

    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    fn feed(
        r: &mut Reassembler,
        now: Instant,
        ident: u32,
        pieces: &[(usize, bool, &[u8])],
    ) -> Vec<Result<Option<Reassembled>, FragmentDrop>> {
        pieces
            .iter()
            .map(|&(off, more, data)| r.insert(now, key(ident), &frag(off, more), data))
            .collect()
    }

    fn completed(results: &[Result<Option<Reassembled>, FragmentDrop>]) -> Vec<Vec<u8>> {
        results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|o| o.as_ref()))
            .map(|d| d.payload.clone())
            .collect()
    }

    #[test]
    fn in_order() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let d = datagram(1, 3000);
        let res = feed(&mut r, t(0), 1, &cut(&d, 1232));
        assert_eq!(res.len(), 3);
        assert_eq!(res[0], Ok(None));
        assert_eq!(res[1], Ok(None));
        let done = res[2].clone().unwrap().unwrap();
        assert_eq!(done.payload, d);
        assert_eq!((done.key, done.next_header), (key(1), UDP));
        assert_eq!(r.in_progress(), 0);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.stats().reassembled, 1);
    }

    #[test]
    fn reversed() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let d = datagram(2, 1000);
        let mut pieces = cut(&d, 104);
        pieces.reverse();
        let res = feed(&mut r, t(0), 2, &pieces);
        assert!(res[..res.len() - 1].iter().all(|x| *x == Ok(None)));
        assert_eq!(completed(&res), vec![d]);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn two_datagrams_interleaved() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let (a, b) = (datagram(10, 500), datagram(11, 700));
        let (pa, pb) = (cut(&a, 128), cut(&b, 160));
        let mut got = Vec::new();
        for i in 0..pa.len().max(pb.len()) {
            // B in reverse, A in order, alternating.
            if let Some(&(o, m, d)) = pb.get(pb.len().wrapping_sub(1 + i)) {
                got.push(r.insert(t(1), key(11), &frag(o, m), d));
            }
            if let Some(&(o, m, d)) = pa.get(i) {
                got.push(r.insert(t(1), key(10), &frag(o, m), d));
            }
        }
        let done: Vec<Reassembled> = got.into_iter().filter_map(|x| x.unwrap()).collect();
        assert_eq!(done.len(), 2);
        for d in done {
            let want = if d.key == key(10) { &a } else { &b };
            assert_eq!(&d.payload, want);
        }
        assert_eq!(r.stats().reassembled, 2);
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn same_ident_other_addresses_kept_apart() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let d = datagram(5, 32);
        let other = FragmentKey {
            src: "fd77::9".parse().unwrap(),
            ..key(5)
        };
        assert_eq!(r.insert(t(0), key(5), &frag(0, true), &d[..16]), Ok(None));
        assert_eq!(r.insert(t(0), other, &frag(16, false), &d[16..]), Ok(None));
        assert_eq!(r.in_progress(), 2);
    }

    #[test]
    fn overlap_drops_the_whole_datagram() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let d = datagram(3, 64);
        assert_eq!(r.insert(t(0), key(3), &frag(0, true), &d[..32]), Ok(None));
        assert_eq!(r.held_bytes(), 32);
        // [24, 40) overlaps [0, 32), even with the same bytes.
        assert_eq!(
            r.insert(t(0), key(3), &frag(24, true), &d[24..40]),
            Err(FragmentDrop::Overlap)
        );
        assert_eq!(r.held_bytes(), 0);
        // The rest of the datagram, even what would have completed it, is dropped.
        assert_eq!(
            r.insert(t(0), key(3), &frag(32, false), &d[32..]),
            Err(FragmentDrop::DatagramDropped)
        );
        assert_eq!(r.stats().overlap, 1);
        assert_eq!(r.stats().drops(FragmentDrop::DatagramDropped), 1);
        assert_eq!(r.stats().reassembled, 0);
        // Remembered until its timeout, then the identification may be used again.
        assert_eq!(r.in_progress(), 1);
        let res = feed(&mut r, t(60), 3, &cut(&d, 32));
        assert_eq!(completed(&res), vec![d]);
    }

    #[test]
    fn identical_duplicate_tolerated_different_one_not() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let d = datagram(4, 48);
        assert_eq!(
            r.insert(t(0), key(4), &frag(16, true), &d[16..32]),
            Ok(None)
        );
        assert_eq!(
            r.insert(t(0), key(4), &frag(16, true), &d[16..32]),
            Ok(None)
        );
        assert_eq!(r.stats().duplicates, 1);
        assert_eq!(r.held_bytes(), 32);
        assert_eq!(r.insert(t(0), key(4), &frag(0, true), &d[..16]), Ok(None));
        let done = r.insert(t(0), key(4), &frag(32, false), &d[32..]);
        assert_eq!(done.unwrap().unwrap().payload, d);
        // Same range, other bytes: an overlap.
        let mut r = Reassembler::new(ReassemblyConfig::default());
        assert_eq!(
            r.insert(t(0), key(4), &frag(16, true), &d[16..32]),
            Ok(None)
        );
        assert_eq!(
            r.insert(t(0), key(4), &frag(16, true), &[0u8; 16]),
            Err(FragmentDrop::Overlap)
        );
    }

    #[test]
    fn timeout_evicts() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let d = datagram(6, 64);
        assert_eq!(r.insert(t(5), key(6), &frag(0, true), &d[..32]), Ok(None));
        assert_eq!(r.next_deadline(), Some(t(65)));
        assert_eq!(r.expire(t(64)), 0);
        assert_eq!(r.in_progress(), 1);
        // The timer runs from the first fragment, not the latest.
        assert_eq!(
            r.insert(t(64), key(6), &frag(40, true), &d[40..48]),
            Ok(None)
        );
        assert_eq!(r.expire(t(65)), 1);
        assert_eq!((r.in_progress(), r.held_bytes()), (0, 0));
        assert_eq!(r.stats().timed_out, 1);
        assert_eq!(r.next_deadline(), None);
        // The last fragment after the timeout starts a new datagram; it does not complete.
        assert_eq!(
            r.insert(t(66), key(6), &frag(32, false), &d[32..]),
            Ok(None)
        );
        // Any later insert expires what is due.
        assert_eq!(r.insert(t(126), key(7), &frag(0, true), &d[..8]), Ok(None));
        assert_eq!(r.stats().timed_out, 2);
        assert_eq!(r.in_progress(), 1);
    }

    #[test]
    fn unaligned_and_too_big() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        assert_eq!(
            r.insert(t(0), key(8), &frag(0, true), &[0u8; 12]),
            Err(FragmentDrop::Unaligned)
        );
        // A last fragment may be any length.
        assert_eq!(
            r.insert(t(0), key(8), &frag(16, false), &[0u8; 12]),
            Ok(None)
        );
        assert_eq!(
            r.insert(t(0), key(9), &frag(65528, false), &[0u8; 8]),
            Err(FragmentDrop::TooBig)
        );
        let mut small = Reassembler::new(ReassemblyConfig {
            max_datagram_len: 1500,
            ..ReassemblyConfig::default()
        });
        assert_eq!(
            small.insert(t(0), key(9), &frag(1496, false), &[0u8; 8]),
            Err(FragmentDrop::TooBig)
        );
        assert_eq!(
            small.insert(t(0), key(9), &frag(1488, false), &[0u8; 12]),
            Ok(None)
        );
        assert_eq!(r.stats().unaligned, 1);
        assert_eq!(r.stats().too_big, 1);
        assert_eq!(small.stats().too_big, 1);
    }

    #[test]
    fn inconsistent_ends() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        assert_eq!(
            r.insert(t(0), key(1), &frag(16, false), &[0u8; 8]),
            Ok(None)
        );
        // A second last fragment ending elsewhere.
        assert_eq!(
            r.insert(t(0), key(1), &frag(32, false), &[0u8; 8]),
            Err(FragmentDrop::Inconsistent)
        );
        let mut r = Reassembler::new(ReassemblyConfig::default());
        assert_eq!(
            r.insert(t(0), key(2), &frag(16, false), &[0u8; 8]),
            Ok(None)
        );
        // Data past the end.
        assert_eq!(
            r.insert(t(0), key(2), &frag(24, true), &[0u8; 8]),
            Err(FragmentDrop::Inconsistent)
        );
        let mut r = Reassembler::new(ReassemblyConfig::default());
        assert_eq!(r.insert(t(0), key(3), &frag(32, true), &[0u8; 8]), Ok(None));
        // A last fragment ending before data already held.
        assert_eq!(
            r.insert(t(0), key(3), &frag(8, false), &[0u8; 8]),
            Err(FragmentDrop::Inconsistent)
        );
        assert_eq!(r.stats().inconsistent, 1);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn atomic_fragment_passes_through() {
        let mut r = Reassembler::new(ReassemblyConfig::default());
        assert_eq!(r.insert(t(0), key(1), &frag(8, true), &[1u8; 8]), Ok(None));
        // Offset 0, no more fragments: whole, and the datagram in progress is untouched.
        let whole = r
            .insert(t(0), key(1), &frag(0, false), b"hello")
            .unwrap()
            .unwrap();
        assert_eq!(whole.payload, b"hello");
        assert_eq!(r.stats().atomic, 1);
        assert_eq!((r.in_progress(), r.held_bytes()), (1, 16));
    }

    #[test]
    fn limits() {
        let config = ReassemblyConfig {
            max_datagrams: 2,
            max_total_bytes: 100,
            max_fragments: 3,
            ..ReassemblyConfig::default()
        };
        let mut r = Reassembler::new(config);
        assert_eq!(r.insert(t(0), key(1), &frag(0, true), &[0u8; 8]), Ok(None));
        assert_eq!(r.insert(t(0), key(2), &frag(0, true), &[0u8; 8]), Ok(None));
        assert_eq!(
            r.insert(t(0), key(3), &frag(0, true), &[0u8; 8]),
            Err(FragmentDrop::TableFull)
        );
        // Memory: datagram 1 reaching byte 96 holds 96 bytes; 2 holds 8: 104 > 100.
        assert_eq!(
            r.insert(t(0), key(1), &frag(88, true), &[0u8; 8]),
            Err(FragmentDrop::MemoryFull)
        );
        assert_eq!(r.insert(t(0), key(1), &frag(72, true), &[0u8; 8]), Ok(None));
        assert_eq!(r.held_bytes(), 88);
        // Filling a gap takes no more memory.
        assert_eq!(r.insert(t(0), key(1), &frag(8, true), &[0u8; 8]), Ok(None));
        assert_eq!(r.held_bytes(), 88);
        // Fragments per datagram: the fourth drops the datagram and frees its bytes.
        assert_eq!(
            r.insert(t(0), key(1), &frag(16, true), &[0u8; 8]),
            Err(FragmentDrop::TooManyFragments)
        );
        assert_eq!(r.held_bytes(), 8);
        let s = r.stats();
        assert_eq!(
            (s.table_full, s.memory_full, s.too_many_fragments),
            (1, 1, 1)
        );
        assert!(r.in_progress() <= 2);
    }

    #[test]
    fn a_new_datagram_without_room_leaves_no_entry() {
        let config = ReassemblyConfig {
            max_total_bytes: 16,
            ..ReassemblyConfig::default()
        };
        let mut r = Reassembler::new(config);
        assert_eq!(
            r.insert(t(0), key(1), &frag(0, true), &[0u8; 24]),
            Err(FragmentDrop::MemoryFull)
        );
        assert_eq!((r.in_progress(), r.held_bytes()), (0, 0));
    }

    proptest! {
        /// Any order of a datagram's fragments, with some sent twice, gives the datagram
        /// back once.
        #[test]
        fn any_order_reassembles(len in 9usize..3000, size8 in 1usize..200,
                                 order in proptest::collection::vec(any::<u32>(), 1..400),
                                 dups in proptest::collection::vec(any::<usize>(), 0..4)) {
            let d = datagram(len as u32, len);
            // At least two fragments (one alone is atomic, not tracked), at most
            // `max_fragments`.
            let size = size8.max(len / (8 * 60) + 1).min(len.div_ceil(8) - 1).max(1) * 8;
            let pieces = cut(&d, size);
            let n = pieces.len();
            prop_assert!((2..=60).contains(&n), "{} fragments", n);
            // Shuffle by the random keys.
            let mut keyed: Vec<_> = pieces.into_iter().enumerate()
                .map(|(i, p)| (order[i % order.len()].wrapping_mul(i as u32 + 1), p)).collect();
            keyed.sort_by_key(|k| k.0);
            let mut pieces: Vec<_> = keyed.into_iter().map(|(_, p)| p).collect();
            // Copies sent right after their original, never of the last one sent (the
            // one that completes: a copy after it would start a new datagram).
            for &i in &dups {
                let at = i % (pieces.len() - 1);
                pieces.insert(at + 1, pieces[at]);
            }
            let mut r = Reassembler::new(ReassemblyConfig::default());
            let res = feed(&mut r, t(0), 1, &pieces);
            prop_assert!(res.iter().all(|x| x.is_ok()));
            let done = completed(&res);
            prop_assert_eq!(done.len(), 1);
            prop_assert_eq!(&done[0], &d);
            prop_assert_eq!((r.held_bytes(), r.in_progress()), (0, 0));
            prop_assert_eq!(r.stats().duplicates, dups.len() as u64);
        }
    }
}
