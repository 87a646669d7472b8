//! A ring of variable-length packets in one fixed byte buffer (each packet contiguous),
//! with per-packet metadata: socket receive and send queues.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Slot<M> {
    meta: M,
    /// Unused bytes skipped before the packet (it did not fit at the buffer's end).
    pad: usize,
    len: usize,
}

#[derive(Debug)]
pub(crate) struct PacketRing<M: Copy> {
    data: Box<[u8]>,
    slots: VecDeque<Slot<M>>,
    max_packets: usize,
    /// Start of the first packet's padding.
    read: usize,
    /// Bytes in use, padding included.
    used: usize,
    /// Payload bytes queued (no padding).
    payload: usize,
}

impl<M: Copy> PacketRing<M> {
    /// A ring of `bytes` payload bytes and at most `max_packets` packets.
    pub fn new(bytes: usize, max_packets: usize) -> Self {
        let max_packets = max_packets.max(1);
        PacketRing {
            data: vec![0u8; bytes.max(1)].into_boxed_slice(),
            slots: VecDeque::with_capacity(max_packets),
            max_packets,
            read: 0,
            used: 0,
            payload: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    /// Payload bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.payload
    }

    /// Where a packet of `len` bytes would go: (padding, offset).
    fn place(&self, len: usize) -> Option<(usize, usize)> {
        let cap = self.data.len();
        if self.slots.len() >= self.max_packets || len > cap {
            return None;
        }
        if self.used == 0 {
            return Some((0, 0));
        }
        if self.used == cap {
            return (len == 0).then_some((0, self.read));
        }
        let write = (self.read + self.used) % cap;
        if write >= self.read {
            let room_end = cap - write;
            if len <= room_end {
                Some((0, write))
            } else if len <= self.read {
                Some((room_end, 0))
            } else {
                None
            }
        } else if len <= self.read - write {
            Some((0, write))
        } else {
            None
        }
    }

    /// Whether a packet of `len` bytes fits now.
    pub fn can_push(&self, len: usize) -> bool {
        self.place(len).is_some()
    }

    /// Appends a packet of `len` bytes; returns its buffer to fill, or None when full.
    pub fn push(&mut self, meta: M, len: usize) -> Option<&mut [u8]> {
        let (pad, at) = self.place(len)?;
        if self.used == 0 {
            self.read = 0;
        }
        self.used += pad + len;
        self.payload += len;
        self.slots.push_back(Slot { meta, pad, len });
        Some(&mut self.data[at..at + len])
    }

    /// The oldest packet.
    pub fn front(&self) -> Option<(M, &[u8])> {
        let s = self.slots.front()?;
        let start = (self.read + s.pad) % self.data.len();
        Some((s.meta, &self.data[start..start + s.len]))
    }

    /// Removes the oldest packet.
    pub fn pop(&mut self) {
        if let Some(s) = self.slots.pop_front() {
            let cap = self.data.len();
            let start = (self.read + s.pad) % cap;
            self.read = (start + s.len) % cap;
            self.used -= s.pad + s.len;
            self.payload -= s.len;
            if self.used == 0 {
                self.read = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn wraps_with_padding() {
        let mut r = PacketRing::<u32>::new(10, 8);
        r.push(1, 4).unwrap().copy_from_slice(b"aaaa");
        r.push(2, 4).unwrap().copy_from_slice(b"bbbb");
        assert!(r.push(3, 4).is_none()); // 2 at the end, 0 at the start
        r.pop();
        // 2 bytes left at the end: the packet goes to the start, padding the end.
        r.push(3, 3).unwrap().copy_from_slice(b"ccc");
        assert_eq!(r.front().unwrap(), (2, &b"bbbb"[..]));
        r.pop();
        assert_eq!(r.front().unwrap(), (3, &b"ccc"[..]));
        assert_eq!(r.queued_bytes(), 3);
        r.pop();
        assert!(r.is_empty());
        assert!(r.push(4, 10).is_some());
        assert!(r.push(5, 0).is_some()); // empty datagrams fit a full buffer
        assert!(r.push(6, 1).is_none());
    }

    proptest! {
        /// Against a model queue: what goes in comes out, in order, byte-exact, and a
        /// push is refused only when the bytes really do not fit contiguously.
        #[test]
        fn behaves_like_a_queue(ops in proptest::collection::vec((any::<bool>(), 0usize..40), 0..200)) {
            let mut r = PacketRing::<usize>::new(64, 6);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut n = 0usize;
            for (push, len) in ops {
                if push {
                    let data: Vec<u8> = (0..len).map(|i| (n + i) as u8).collect();
                    match r.push(n, len) {
                        Some(b) => { b.copy_from_slice(&data); model.push_back(data); }
                        None => {
                            // Only a non-empty ring can lack contiguous room.
                            let queued: usize = model.iter().map(|p| p.len()).sum();
                            prop_assert!(!model.is_empty(), "refused {len} with nothing queued");
                            prop_assert!(model.len() == 6 || queued + len > 64 / 4 || len > 16,
                                "refused {len} with {queued} queued");
                        }
                    }
                    n += 1;
                } else {
                    match (r.front(), model.front()) {
                        (Some((_, got)), Some(want)) => prop_assert_eq!(got, &want[..]),
                        (None, None) => {}
                        (a, b) => prop_assert!(false, "ring {:?} model {:?}", a.map(|x| x.1.len()), b.map(|x| x.len())),
                    }
                    r.pop();
                    model.pop_front();
                }
                prop_assert_eq!(r.len(), model.len());
                prop_assert_eq!(r.queued_bytes(), model.iter().map(|p| p.len()).sum::<usize>());
            }
        }
    }
}
