//! Which of the app's fds are fast-path sockets, and which socket each one names.
//!
//! The app's fd number is the fd of the socket's kernel shadow, so fd numbers never
//! collide with the kernel's. Several fds may name one socket (`dup`, `dup2`, `fcntl
//! F_DUPFD`), so fds point at reference-counted slots. Everything is sized at start:
//! inserting, duplicating and removing never allocate.

/// Largest fd number the table tracks (fds above it stay the kernel's).
pub const MAX_FDS: usize = 65536;

/// Why an insert failed; the caller leaves the socket on the kernel and counts why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdTableError {
    /// The fd number is beyond [`MAX_FDS`].
    FdTooLarge,
    /// Every socket slot is in use.
    NoSlot,
}

#[derive(Debug)]
struct Slot<T> {
    refs: u32,
    value: Option<T>,
}

/// fd → socket, with reference counting across duplicated fds.
#[derive(Debug)]
pub struct FdTable<T> {
    /// `fds[fd]` is the slot index + 1, or 0 when the fd is not ours.
    fds: Box<[u32]>,
    slots: Box<[Slot<T>]>,
    free: Vec<u32>,
}

impl<T> FdTable<T> {
    /// A table for fds below `max_fds` holding at most `max_sockets` sockets.
    pub fn new(max_fds: usize, max_sockets: usize) -> Self {
        let fds = vec![0u32; max_fds.min(MAX_FDS)].into_boxed_slice();
        let slots = (0..max_sockets)
            .map(|_| Slot {
                refs: 0,
                value: None,
            })
            .collect();
        // Lowest slots are handed out first.
        let free = (0..max_sockets as u32).rev().collect();
        FdTable { fds, slots, free }
    }

    fn slot_of(&self, fd: i32) -> Option<usize> {
        let idx = usize::try_from(fd).ok()?;
        match *self.fds.get(idx)? {
            0 => None,
            s => Some(s as usize - 1),
        }
    }

    /// True when `fd` names a fast-path socket.
    pub fn contains(&self, fd: i32) -> bool {
        self.slot_of(fd).is_some()
    }

    /// Registers a new socket under `fd`. The fd must not be ours already: the caller
    /// removes a stale entry first (the kernel reused the number).
    pub fn insert(&mut self, fd: i32, value: T) -> Result<(), FdTableError> {
        let idx = usize::try_from(fd)
            .ok()
            .filter(|&i| i < self.fds.len())
            .ok_or(FdTableError::FdTooLarge)?;
        debug_assert_eq!(self.fds[idx], 0, "fd {fd} inserted twice");
        let slot = self.free.pop().ok_or(FdTableError::NoSlot)?;
        self.slots[slot as usize] = Slot {
            refs: 1,
            value: Some(value),
        };
        self.fds[idx] = slot + 1;
        Ok(())
    }

    /// Makes `new_fd` name the same socket as `old_fd` (dup semantics). Whatever
    /// `new_fd` named before is released and returned if that was its last reference.
    pub fn dup(&mut self, old_fd: i32, new_fd: i32) -> Result<Option<T>, FdTableError> {
        let slot = self.slot_of(old_fd).ok_or(FdTableError::NoSlot)?;
        let idx = usize::try_from(new_fd)
            .ok()
            .filter(|&i| i < self.fds.len())
            .ok_or(FdTableError::FdTooLarge)?;
        if self.fds[idx] as usize == slot + 1 {
            return Ok(None);
        }
        let released = self.remove(new_fd);
        self.slots[slot].refs += 1;
        self.fds[idx] = slot as u32 + 1;
        Ok(released)
    }

    /// Forgets `fd`. Returns the socket when this was its last fd, so the caller can
    /// close it in the stack.
    pub fn remove(&mut self, fd: i32) -> Option<T> {
        let slot = self.slot_of(fd)?;
        self.fds[fd as usize] = 0;
        let s = &mut self.slots[slot];
        s.refs -= 1;
        if s.refs > 0 {
            return None;
        }
        self.free.push(slot as u32);
        s.value.take()
    }

    pub fn get(&self, fd: i32) -> Option<&T> {
        self.slots[self.slot_of(fd)?].value.as_ref()
    }

    pub fn get_mut(&mut self, fd: i32) -> Option<&mut T> {
        let slot = self.slot_of(fd)?;
        self.slots[slot].value.as_mut()
    }

    /// Number of fds that name `fd`'s socket (1 unless duplicated).
    pub fn refs(&self, fd: i32) -> u32 {
        self.slot_of(fd).map_or(0, |s| self.slots[s].refs)
    }

    /// Sockets in use.
    pub fn sockets_in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Every fd that is ours, lowest first (for close_range and exit).
    pub fn fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.fds
            .iter()
            .enumerate()
            .filter(|(_, &s)| s != 0)
            .map(|(fd, _)| fd as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let mut t = FdTable::new(64, 4);
        assert!(!t.contains(3));
        t.insert(3, "a").unwrap();
        assert!(t.contains(3));
        assert_eq!(t.get(3), Some(&"a"));
        assert_eq!(t.remove(3), Some("a"));
        assert!(!t.contains(3));
        assert_eq!(t.remove(3), None);
        assert_eq!(t.sockets_in_use(), 0);
    }

    #[test]
    fn dup_shares_until_last_close() {
        let mut t = FdTable::new(64, 4);
        t.insert(5, 10u32).unwrap();
        assert_eq!(t.dup(5, 9).unwrap(), None);
        assert_eq!(t.refs(5), 2);
        *t.get_mut(9).unwrap() = 11;
        assert_eq!(t.get(5), Some(&11), "both fds name one socket");
        assert_eq!(t.remove(5), None, "9 still holds it");
        assert_eq!(t.get(9), Some(&11));
        assert_eq!(t.remove(9), Some(11));
        assert_eq!(t.sockets_in_use(), 0);
    }

    #[test]
    fn dup_over_another_socket_releases_it() {
        let mut t = FdTable::new(64, 4);
        t.insert(3, 'x').unwrap();
        t.insert(4, 'y').unwrap();
        // dup2(3, 4): 4's socket loses its only fd and comes back to be closed.
        assert_eq!(t.dup(3, 4).unwrap(), Some('y'));
        assert_eq!(t.get(4), Some(&'x'));
        assert_eq!(t.sockets_in_use(), 1);
        // dup2 onto itself changes nothing.
        assert_eq!(t.dup(3, 3).unwrap(), None);
        assert_eq!(t.refs(3), 2);
    }

    #[test]
    fn limits_are_errors_not_panics() {
        let mut t = FdTable::new(8, 1);
        assert_eq!(t.insert(8, ()), Err(FdTableError::FdTooLarge));
        assert_eq!(t.insert(-1, ()), Err(FdTableError::FdTooLarge));
        t.insert(1, ()).unwrap();
        assert_eq!(t.insert(2, ()), Err(FdTableError::NoSlot));
        assert_eq!(t.dup(7, 2), Err(FdTableError::NoSlot), "7 is not ours");
        assert_eq!(t.dup(1, 100), Err(FdTableError::FdTooLarge));
        assert!(!t.contains(100_000));
        assert_eq!(t.fds().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn slots_are_reused() {
        let mut t = FdTable::new(16, 2);
        for round in 0..100 {
            t.insert(3, round).unwrap();
            t.insert(4, round).unwrap();
            assert_eq!(t.remove(3), Some(round));
            assert_eq!(t.remove(4), Some(round));
        }
        assert_eq!(t.sockets_in_use(), 0);
    }
}
