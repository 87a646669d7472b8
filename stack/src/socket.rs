//! What UDP and TCP sockets share: handles, readiness, and the queue of readiness
//! changes that lets the shim's epoll learn which sockets changed without scanning.
//!
//! Each socket layer (UDP in `iface`, TCP in `tcp`) owns one [`ReadinessQueue`]. A socket
//! keeps a [`ReadinessTracker`]; whenever the layer touches a socket (segment in, data
//! acked, app call) it calls [`ReadinessTracker::update`] with the socket's current
//! readiness, which pushes `(handle, readiness)` only when it differs from the last
//! value pushed. The host drains the queue after `receive`/`dispatch`/socket calls and
//! wakes the epoll sets that hold those handles.

use std::collections::VecDeque;

/// Which socket table a handle indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketKind {
    Udp,
    Tcp,
}

/// Names one socket of an interface. Handles are reused after close: the shim maps its
/// fd to the handle and forgets the handle when it closes the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketHandle {
    pub kind: SocketKind,
    pub index: u32,
}

impl SocketHandle {
    pub const fn udp(index: u32) -> Self {
        SocketHandle {
            kind: SocketKind::Udp,
            index,
        }
    }
    pub const fn tcp(index: u32) -> Self {
        SocketHandle {
            kind: SocketKind::Tcp,
            index,
        }
    }
}

/// A socket's readiness, as `poll`/`epoll` report it. A small bit set (no dependency on
/// the `bitflags` crate); the bit values are the Linux `EPOLL*` values so the shim can
/// pass [`Readiness::epoll_bits`] straight through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Readiness(u32);

impl Readiness {
    /// Data (or a pending connection, or EOF) can be read without blocking: EPOLLIN.
    pub const READABLE: Readiness = Readiness(0x001);
    /// Data can be written without blocking: EPOLLOUT.
    pub const WRITABLE: Readiness = Readiness(0x004);
    /// A pending error (`SO_ERROR` would return it): EPOLLERR.
    pub const ERROR: Readiness = Readiness(0x008);
    /// Both directions are closed (or reset): EPOLLHUP.
    pub const HANGUP: Readiness = Readiness(0x010);
    /// The peer shut down writing (FIN received): EPOLLRDHUP.
    pub const READ_HANGUP: Readiness = Readiness(0x2000);

    pub const EMPTY: Readiness = Readiness(0);

    pub const fn empty() -> Self {
        Readiness(0)
    }
    /// The bits as Linux `EPOLL*` flags.
    pub const fn epoll_bits(self) -> u32 {
        self.0
    }
    /// Keeps only the bits this type defines.
    pub const fn from_epoll_bits(bits: u32) -> Self {
        Readiness(bits & (0x001 | 0x004 | 0x008 | 0x010 | 0x2000))
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn intersects(self, other: Readiness) -> bool {
        self.0 & other.0 != 0
    }
    pub fn set(&mut self, other: Readiness, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }
    pub const fn readable(self) -> bool {
        self.contains(Self::READABLE)
    }
    pub const fn writable(self) -> bool {
        self.contains(Self::WRITABLE)
    }
    pub const fn error(self) -> bool {
        self.contains(Self::ERROR)
    }
    pub const fn hangup(self) -> bool {
        self.contains(Self::HANGUP)
    }
    pub const fn read_hangup(self) -> bool {
        self.contains(Self::READ_HANGUP)
    }
}

impl core::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, o: Readiness) -> Readiness {
        Readiness(self.0 | o.0)
    }
}

impl core::ops::BitOrAssign for Readiness {
    fn bitor_assign(&mut self, o: Readiness) {
        self.0 |= o.0;
    }
}

impl core::ops::BitAnd for Readiness {
    type Output = Readiness;
    fn bitand(self, o: Readiness) -> Readiness {
        Readiness(self.0 & o.0)
    }
}

/// One readiness change: the socket and its readiness when the change was recorded.
/// The host may see a stale value if the socket changed again since; it should ask the
/// socket for its current readiness when it acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessChange {
    pub handle: SocketHandle,
    pub readiness: Readiness,
}

/// Readiness changes not yet taken by the host, oldest first.
#[derive(Debug, Default)]
pub struct ReadinessQueue {
    changes: VecDeque<ReadinessChange>,
}

impl ReadinessQueue {
    /// A queue with room for `capacity` changes before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        ReadinessQueue {
            changes: VecDeque::with_capacity(capacity),
        }
    }
    pub fn push(&mut self, handle: SocketHandle, readiness: Readiness) {
        self.changes
            .push_back(ReadinessChange { handle, readiness });
    }
    /// The oldest change not yet taken.
    pub fn pop(&mut self) -> Option<ReadinessChange> {
        self.changes.pop_front()
    }
    pub fn len(&self) -> usize {
        self.changes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
    /// Forgets queued changes of a socket that is being closed.
    pub fn forget(&mut self, handle: SocketHandle) {
        self.changes.retain(|c| c.handle != handle);
    }
}

/// Per-socket memory of the readiness last reported, so only changes are queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadinessTracker {
    last: Readiness,
}

impl ReadinessTracker {
    /// Records `now` as the socket's readiness; queues it if it differs from the last.
    /// Returns whether a change was queued.
    pub fn update(
        &mut self,
        handle: SocketHandle,
        now: Readiness,
        queue: &mut ReadinessQueue,
    ) -> bool {
        if now == self.last {
            return false;
        }
        self.last = now;
        queue.push(handle, now);
        true
    }
    /// The readiness last recorded.
    pub fn last(&self) -> Readiness {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_epoll_values() {
        assert_eq!(Readiness::READABLE.epoll_bits(), 0x1);
        assert_eq!(Readiness::WRITABLE.epoll_bits(), 0x4);
        assert_eq!(Readiness::ERROR.epoll_bits(), 0x8);
        assert_eq!(Readiness::HANGUP.epoll_bits(), 0x10);
        assert_eq!(Readiness::READ_HANGUP.epoll_bits(), 0x2000);
        let r = Readiness::READABLE | Readiness::READ_HANGUP;
        assert!(r.readable() && r.read_hangup() && !r.writable());
        assert_eq!(Readiness::from_epoll_bits(r.epoll_bits() | 0x40), r);
        let mut w = r;
        w.set(Readiness::READABLE, false);
        assert_eq!(w, Readiness::READ_HANGUP);
    }

    #[test]
    fn tracker_queues_only_changes() {
        let mut q = ReadinessQueue::with_capacity(4);
        let mut t = ReadinessTracker::default();
        let h = SocketHandle::udp(3);
        assert!(!t.update(h, Readiness::EMPTY, &mut q));
        assert!(t.update(h, Readiness::WRITABLE, &mut q));
        assert!(!t.update(h, Readiness::WRITABLE, &mut q));
        assert!(t.update(h, Readiness::WRITABLE | Readiness::READABLE, &mut q));
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.pop(),
            Some(ReadinessChange {
                handle: h,
                readiness: Readiness::WRITABLE
            })
        );
        q.forget(h);
        assert!(q.is_empty());
    }
}
