//! A [`Device`] wrapper that records what the stack transmits.

use crate::layout::Direction;
use crate::tap::CaptureTap;
use stack::device::{Device, DeviceCaps};

/// Forwards to `inner` and, while a capture is active, records each frame the stack
/// filled. Idle, `transmit` costs one branch more than the inner device's.
pub struct TappedDevice<'a, D: Device + ?Sized> {
    inner: &'a mut D,
    tap: &'a mut CaptureTap,
}

impl<'a, D: Device + ?Sized> TappedDevice<'a, D> {
    pub fn new(inner: &'a mut D, tap: &'a mut CaptureTap) -> Self {
        TappedDevice { inner, tap }
    }
}

impl<D: Device + ?Sized> Device for TappedDevice<'_, D> {
    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if !self.tap.is_active() {
            return self.inner.transmit(len, fill);
        }
        let tap = &mut *self.tap;
        self.inner.transmit(len, &mut |buf: &mut [u8]| {
            fill(buf);
            tap.frame(Direction::Tx, buf);
        })
    }

    fn take_local(&mut self, frame: &[u8]) -> bool {
        self.inner.take_local(frame)
    }
}
