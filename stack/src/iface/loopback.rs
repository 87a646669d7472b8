//! Local delivery: packets to the interface's own addresses (and, with loopback on,
//! to all of 127.0.0.0/8) never reach the device. `IpOut` builds them into a queue of
//! recycled frame buffers and `Interface::dispatch` feeds that queue back into the
//! receive path, as Linux's `lo` does, so two sockets of one stack talk with no device
//! (no kernel, no XDP) in between.

use std::collections::VecDeque;

/// Looped frames in flight: at most this many queued at once (the transport retries
/// the rest at the next dispatch, as with a full device ring).
pub(crate) const LOOPED_SLOTS: usize = 256;

/// Rounds of dispatch → deliver per `Interface::dispatch`: a handshake (SYN, SYN-ACK,
/// ACK) or a request and its ACK complete within one call.
pub(crate) const DISPATCH_ROUNDS: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct LoopedFrames {
    pub ready: VecDeque<Vec<u8>>,
    /// Buffers to reuse: allocated on first use, then recycled.
    spare: Vec<Vec<u8>>,
}

impl LoopedFrames {
    /// A cleared buffer, or None when [`LOOPED_SLOTS`] frames are queued.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.ready.len() >= LOOPED_SLOTS {
            return None;
        }
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        Some(b)
    }
    pub fn recycle(&mut self, b: Vec<u8>) {
        self.spare.push(b);
    }
}
