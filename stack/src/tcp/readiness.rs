//! Readiness: what the app can do with a socket (read, write, accept, errors,
//! hang-ups), recorded after the layer touched it and queued for the host when gained.

use crate::socket::{Readiness, ReadinessQueue, SocketHandle};

use super::{SlotKind, TcpLayer};

impl TcpLayer {
    /// Records a connection's next timer after it sent: sending moves timers but never
    /// readiness (what the app can read or write, errors, shutdowns), so this is all
    /// `update_readiness` would find changed.
    pub(super) fn update_deadline(&mut self, idx: u32) {
        let s = &self.slots[idx as usize];
        if s.kind == SlotKind::Conn {
            let d = s.tcb.deadline_micros();
            self.deadlines[s.active_pos] = d;
            self.next_timer = self.next_timer.min(d);
        }
    }

    /// Records what changed after the layer touched a socket: its next timer, and its
    /// readiness (queued for the host when it gained something).
    pub(super) fn update_readiness(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if s.kind == SlotKind::Conn {
            let d = s.tcb.deadline_micros();
            self.deadlines[s.active_pos] = d;
            self.next_timer = self.next_timer.min(d);
        }
        if !s.user_open && s.kind != SlotKind::Listener {
            return;
        }
        let r = match s.kind {
            SlotKind::Conn => s.tcb.readiness(),
            SlotKind::Listener => {
                let l = s.listener.as_ref().expect("listener slot");
                if l.accept_queue.is_empty() {
                    Readiness::EMPTY
                } else {
                    Readiness::READABLE
                }
            }
            SlotKind::Free => return,
        };
        // Queue only readiness gained: epoll wakes on a socket becoming ready, and the
        // host re-reads the current readiness anyway. Losses just update the record.
        let gained = r.epoll_bits() & !s.last_ready.epoll_bits();
        s.last_ready = r;
        if gained != 0 {
            self.readiness.push(Self::handle(idx), r);
        }
    }

    /// Current readiness (empty for an unknown handle).
    pub fn readiness(&self, h: SocketHandle) -> Readiness {
        let Ok(idx) = self.slot_of(h) else {
            return Readiness::EMPTY;
        };
        let s = &self.slots[idx as usize];
        match s.kind {
            SlotKind::Conn => s.tcb.readiness(),
            SlotKind::Listener => {
                if s.listener
                    .as_ref()
                    .is_some_and(|l| !l.accept_queue.is_empty())
                {
                    Readiness::READABLE
                } else {
                    Readiness::EMPTY
                }
            }
            SlotKind::Free => Readiness::EMPTY,
        }
    }

    /// Calls `f` for every handle that gained readiness (became readable, writable,
    /// errored or hung up) since the last drain. Losing readiness is not reported: a
    /// host re-reads [`TcpLayer::readiness`] when it acts, as epoll does.
    pub fn drain_changed(&mut self, mut f: impl FnMut(SocketHandle)) {
        while let Some(c) = self.readiness.pop() {
            f(c.handle);
        }
    }

    /// The queue behind [`TcpLayer::drain_changed`], with the readiness recorded.
    pub fn readiness_queue(&mut self) -> &mut ReadinessQueue {
        &mut self.readiness
    }
}
