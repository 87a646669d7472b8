//! The capture ring: how `fastnet pcap` sees the frames a fastnet process sends and
//! receives on the fast path (tcpdump on the interface cannot: XDP redirected them).
//!
//! The reader (`fastnet pcap`) creates `/dev/shm/fastnet-<pid>.capture`: a header
//! (magic, version, snap length, a "wanted" flag, the reader's pid, a dropped-records
//! counter) and a byte ring of records `{timestamp ns, original length, captured
//! length, direction, bytes}` with a producer `head` and a consumer `tail`.
//!
//! The writer ([`CaptureTap`], inside the app's shim) looks for that file at most every
//! [`CHECK_INTERVAL_US`]; until it appears the cost per frame is one branch. Attached,
//! it copies each frame (up to the snap length) into the ring, or counts a drop when the
//! reader is behind. It detaches when the reader removes the file, clears "wanted", or
//! dies. There is one producer: the process that drives the stack, behind its lock.
//!
//! [`TappedDevice`] wraps a stack [`Device`](stack::device::Device) so transmitted
//! frames are recorded without any change to the stack.

mod device;
mod layout;
mod reader;
mod tap;

pub use device::TappedDevice;
pub use layout::{capture_path, Direction, DEFAULT_RING_BYTES, MAX_SNAPLEN, MIN_RING_BYTES};
pub use reader::{CaptureReader, Record};
pub use tap::{CaptureTap, CHECK_INTERVAL_US};

#[cfg(test)]
mod tests;
