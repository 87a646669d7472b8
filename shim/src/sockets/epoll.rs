//! The fast-path half of an app's epoll instance.
//!
//! The app's epoll fd is a real kernel epoll. It holds the app's kernel fds, plus one
//! eventfd of ours (the set's *waker*) that whoever drives the stack signals when a
//! fast-path socket in the set may have become ready, plus the XSK fds so a waiting
//! thread wakes as soon as frames arrive. Fast-path sockets themselves are not in the
//! kernel epoll (their shadows would report nonsense); they are listed here, with the
//! interest and data the app registered, and their readiness is read from the stack.

use std::collections::HashMap;

/// `epoll_event.data` of the fds we add to the app's kernel epoll: never reported to
/// the app. The low bits tell which of ours fired.
pub const MARKER: u64 = 0xfa57_e7ff_0000_0000;
pub const MARKER_MASK: u64 = 0xffff_ffff_0000_0000;
pub const MARKER_WAKER: u64 = MARKER;
pub const MARKER_XSK: u64 = MARKER | 1;

pub fn is_marker(data: u64) -> bool {
    data & MARKER_MASK == MARKER
}

const ALWAYS: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
const EPOLLET: u32 = libc::EPOLLET as u32;
const EPOLLONESHOT: u32 = libc::EPOLLONESHOT as u32;
/// Flags that change how events are reported, not which.
const MODE_BITS: u32 =
    EPOLLET | EPOLLONESHOT | libc::EPOLLEXCLUSIVE as u32 | libc::EPOLLWAKEUP as u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interest {
    events: u32,
    data: u64,
    /// Edge-triggered: the socket's readiness changed since it was last reported (set
    /// by whoever drives the stack, from the stack's readiness-change queue).
    edge: bool,
    /// One-shot that fired: silent until EPOLL_CTL_MOD re-arms it.
    disarmed: bool,
    /// Reported from the stack's readiness (false: only the kernel epoll reports it).
    fast: bool,
}

/// One app epoll instance's fast-path sockets.
#[derive(Debug)]
pub struct EpollSet {
    /// Our eventfd inside the app's kernel epoll.
    pub waker: i32,
    /// The waker holds a count the kernel epoll sees: signalling it again would only
    /// cost a write(2) per readiness change, so it is signalled once until cleared.
    signaled: bool,
    /// When (µs, engine clock) a wait that returned fast-path events last also asked
    /// the kernel epoll for the app's kernel fds.
    kernel_merged_us: u64,
    interests: HashMap<i32, Interest>,
}

/// While fast-path events keep coming, the app's kernel fds are looked at no more
/// often than this: the look is a syscall per app loop otherwise, and a kernel fd
/// waits at most this long behind busy fast-path sockets.
pub const KERNEL_MERGE_US: u64 = 100;

/// One event for the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub events: u32,
    pub data: u64,
}

impl EpollSet {
    pub fn new(waker: i32) -> Self {
        EpollSet {
            waker,
            signaled: false,
            kernel_merged_us: 0,
            interests: HashMap::with_capacity(64),
        }
    }

    /// Makes the app's kernel epoll report our waker (a sleeping thread wakes and
    /// collects); a no-op while it is still signalled.
    pub fn wake(&mut self) {
        if !self.signaled {
            super::kernel::eventfd_signal(self.waker);
            self.signaled = true;
        }
    }

    /// Clears the waker before a thread sleeps on the set. `force` clears it even
    /// when this copy of the set thinks it is clear (the kernel just reported it:
    /// another process's copy, before a fork handed the fast path over, signalled it).
    pub fn clear_wake(&mut self, force: bool) {
        if self.signaled || force {
            super::kernel::eventfd_reset(self.waker);
            self.signaled = false;
        }
    }

    /// True when a wait that found fast-path events at `now_us` should also ask the
    /// kernel epoll (at most every [`KERNEL_MERGE_US`]); records the look.
    pub fn kernel_merge_due(&mut self, now_us: u64) -> bool {
        if now_us.saturating_sub(self.kernel_merged_us) < KERNEL_MERGE_US {
            return false;
        }
        self.kernel_merged_us = now_us;
        true
    }

    /// EPOLL_CTL_ADD. Errors are the errno Linux gives.
    pub fn add(&mut self, fd: i32, events: u32, data: u64) -> Result<(), i32> {
        if self.interests.contains_key(&fd) {
            return Err(libc::EEXIST);
        }
        self.interests.insert(
            fd,
            Interest {
                events,
                data,
                edge: true,
                disarmed: false,
                fast: true,
            },
        );
        Ok(())
    }

    /// EPOLL_CTL_MOD: new interest, re-arms a fired one-shot.
    pub fn modify(&mut self, fd: i32, events: u32, data: u64) -> Result<(), i32> {
        let i = self.interests.get_mut(&fd).ok_or(libc::ENOENT)?;
        if i.events & libc::EPOLLEXCLUSIVE as u32 != 0 {
            return Err(libc::EINVAL);
        }
        *i = Interest {
            events,
            data,
            edge: true,
            disarmed: false,
            fast: i.fast,
        };
        Ok(())
    }

    /// EPOLL_CTL_DEL.
    pub fn delete(&mut self, fd: i32) -> Result<(), i32> {
        self.interests.remove(&fd).map(|_| ()).ok_or(libc::ENOENT)
    }

    /// Forgets `fd` silently (the fd was closed: the kernel drops closed fds too).
    pub fn forget(&mut self, fd: i32) {
        self.interests.remove(&fd);
    }

    /// The (events, data) the app registered for `fd`.
    pub fn interest(&self, fd: i32) -> Option<(u32, u64)> {
        self.interests.get(&fd).map(|i| (i.events, i.data))
    }

    /// Whether `fd`'s events come from the stack (else only from the kernel epoll).
    pub fn set_fast(&mut self, fd: i32, fast: bool) {
        if let Some(i) = self.interests.get_mut(&fd) {
            i.fast = fast;
        }
    }

    pub fn contains(&self, fd: i32) -> bool {
        self.interests.contains_key(&fd)
    }

    pub fn is_empty(&self) -> bool {
        self.interests.is_empty()
    }

    /// Records that `fd`'s readiness changed (a new edge for edge-triggered interest).
    pub fn mark_edge(&mut self, fd: i32) {
        if let Some(i) = self.interests.get_mut(&fd) {
            i.edge = true;
        }
    }

    /// Fills `out` with the events due now; `readiness(fd)` gives a socket's current
    /// EPOLL* bits. Returns how many were written.
    pub fn collect(&mut self, mut readiness: impl FnMut(i32) -> u32, out: &mut [Event]) -> usize {
        let mut n = 0;
        for (&fd, i) in self.interests.iter_mut() {
            if n == out.len() {
                break;
            }
            if i.disarmed || !i.fast {
                continue;
            }
            let wanted = (i.events & !MODE_BITS) | ALWAYS;
            let ready = readiness(fd) & wanted;
            let due = if i.events & EPOLLET == 0 {
                ready
            } else if i.edge && ready != 0 {
                i.edge = false;
                ready
            } else {
                0
            };
            if due == 0 {
                continue;
            }
            if i.events & EPOLLONESHOT != 0 {
                i.disarmed = true;
            }
            out[n] = Event {
                events: due,
                data: i.data,
            };
            n += 1;
        }
        n
    }

    /// True when `fd`'s readiness `bits` would be reported: the driver signals the
    /// waker only then, so a busy socket nobody waits for costs no wake-ups.
    pub fn would_report(&self, fd: i32, bits: u32) -> bool {
        let Some(i) = self.interests.get(&fd) else {
            return false;
        };
        let due = bits & ((i.events & !MODE_BITS) | ALWAYS);
        let edge_ok = i.events & EPOLLET == 0 || i.edge;
        i.fast && !i.disarmed && edge_ok && due != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const IN: u32 = libc::EPOLLIN as u32;
    const OUT: u32 = libc::EPOLLOUT as u32;
    const HUP: u32 = libc::EPOLLHUP as u32;

    fn collect(s: &mut EpollSet, r: impl Fn(i32) -> u32) -> Vec<Event> {
        let mut out = [Event { events: 0, data: 0 }; 16];
        let n = s.collect(r, &mut out);
        let mut v = out[..n].to_vec();
        v.sort_by_key(|e| e.data);
        v
    }

    /// The eventfd's counter, read (and so cleared); None when it is zero.
    fn drain(fd: i32) -> Option<u64> {
        let mut buf = [0u8; 8];
        crate::sockets::kernel::read(fd, &mut buf)
            .ok()
            .map(|_| u64::from_ne_bytes(buf))
    }

    #[test]
    fn the_waker_is_written_once_until_cleared() {
        let fd = crate::sockets::kernel::eventfd(libc::EFD_NONBLOCK).unwrap();
        let mut s = EpollSet::new(fd);
        s.wake();
        s.wake();
        s.wake();
        assert_eq!(drain(fd), Some(1), "one write for three wakes");
        s.wake();
        assert_eq!(drain(fd), None, "still marked signalled: no second write");
        s.clear_wake(false);
        s.wake();
        s.clear_wake(false);
        assert_eq!(drain(fd), None, "cleared");
        // Signalled behind this copy's back (another process's copy): a forced clear
        // empties it although the flag says clear.
        crate::sockets::kernel::eventfd_signal(fd);
        s.clear_wake(false);
        assert_eq!(drain(fd), Some(1), "unforced clear trusts the flag");
        crate::sockets::kernel::eventfd_signal(fd);
        s.clear_wake(true);
        assert_eq!(drain(fd), None, "forced clear");
        crate::sockets::kernel::close(fd).unwrap();
    }

    #[test]
    fn kernel_merge_at_most_every_interval() {
        let mut s = EpollSet::new(-1);
        let t0 = 1_000_000;
        assert!(s.kernel_merge_due(t0));
        assert!(!s.kernel_merge_due(t0 + 1));
        assert!(!s.kernel_merge_due(t0 + KERNEL_MERGE_US - 1));
        assert!(s.kernel_merge_due(t0 + KERNEL_MERGE_US));
        assert!(!s.kernel_merge_due(t0 + KERNEL_MERGE_US + 1));
    }

    #[test]
    fn level_triggered_reports_while_ready() {
        let mut s = EpollSet::new(100);
        s.add(5, IN, 55).unwrap();
        s.add(6, IN | OUT, 66).unwrap();
        let r = |fd| if fd == 5 { IN | OUT } else { OUT };
        let ev = collect(&mut s, r);
        assert_eq!(
            ev,
            vec![
                Event {
                    events: IN,
                    data: 55
                },
                Event {
                    events: OUT,
                    data: 66
                }
            ],
            "only the bits asked for"
        );
        assert_eq!(collect(&mut s, r).len(), 2, "level: again");
        assert!(collect(&mut s, |_| 0).is_empty());
    }

    #[test]
    fn hangup_and_error_are_always_reported() {
        let mut s = EpollSet::new(100);
        s.add(5, OUT, 1).unwrap();
        assert_eq!(
            collect(&mut s, |_| IN | HUP),
            vec![Event {
                events: HUP,
                data: 1
            }]
        );
    }

    #[test]
    fn edge_triggered_reports_once_per_edge() {
        let mut s = EpollSet::new(100);
        s.add(5, IN | EPOLLET, 9).unwrap();
        assert_eq!(collect(&mut s, |_| IN).len(), 1);
        assert!(collect(&mut s, |_| IN).is_empty(), "no new edge");
        assert!(!s.would_report(5, IN));
        // The app drains to EAGAIN and new data arrives before its next epoll_wait:
        // the stack reports both changes; the edge must not be lost.
        s.mark_edge(5);
        s.mark_edge(5);
        assert!(s.would_report(5, IN));
        assert_eq!(collect(&mut s, |_| IN).len(), 1, "new data: new edge");
        assert!(collect(&mut s, |_| IN).is_empty());
        // A change that leaves nothing ready reports nothing, and keeps the edge for later.
        s.mark_edge(5);
        assert!(collect(&mut s, |_| 0).is_empty());
        assert_eq!(collect(&mut s, |_| IN).len(), 1);
    }

    #[test]
    fn oneshot_fires_once_until_modified() {
        let mut s = EpollSet::new(100);
        s.add(5, IN | EPOLLONESHOT, 1).unwrap();
        assert_eq!(collect(&mut s, |_| IN).len(), 1);
        assert!(collect(&mut s, |_| IN).is_empty());
        assert!(!s.would_report(5, IN));
        s.modify(5, IN | EPOLLONESHOT, 2).unwrap();
        assert_eq!(
            collect(&mut s, |_| IN),
            vec![Event {
                events: IN,
                data: 2
            }]
        );
    }

    #[test]
    fn ctl_errors_match_linux() {
        let mut s = EpollSet::new(100);
        assert_eq!(s.modify(5, IN, 0), Err(libc::ENOENT));
        assert_eq!(s.delete(5), Err(libc::ENOENT));
        s.add(5, IN, 0).unwrap();
        assert_eq!(s.add(5, IN, 0), Err(libc::EEXIST));
        s.delete(5).unwrap();
        assert!(s.is_empty());
        s.add(7, IN | libc::EPOLLEXCLUSIVE as u32, 0).unwrap();
        assert_eq!(s.modify(7, IN, 0), Err(libc::EINVAL));
    }

    #[test]
    fn output_limit_respected() {
        let mut s = EpollSet::new(100);
        for fd in 0..10 {
            s.add(fd, IN, fd as u64).unwrap();
        }
        let mut out = [Event { events: 0, data: 0 }; 3];
        assert_eq!(s.collect(|_| IN, &mut out), 3);
    }

    #[test]
    fn markers_are_recognised() {
        assert!(is_marker(MARKER_WAKER) && is_marker(MARKER_XSK));
        assert!(!is_marker(0) && !is_marker(55));
    }
}
