//! What a backend (AF_XDP, TAP, the in-memory simulator, the loopback device) offers
//! the stack. Receive is not part of the trait: the host hands received frames to
//! `Interface::receive` itself, so it can batch them however its rings want.

/// Which checksums the backend handles, so the stack can skip the work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumOffload {
    /// Received IPv4/TCP/UDP checksums were verified by the NIC: do not verify again.
    pub rx_verified: bool,
    /// The NIC fills IPv4/TCP/UDP checksums on transmit: leave them zero.
    pub tx_fill: bool,
}

/// Static properties of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// IP MTU (the largest IPv4 packet, without the Ethernet header).
    pub mtu: usize,
    pub checksum: ChecksumOffload,
}

/// Transmit side of a backend. The stack asks for a buffer of `len` bytes, writes one
/// whole Ethernet frame into it, and the backend queues it: the only copy on transmit
/// is the stack's write into the backend's (e.g. UMEM) buffer.
pub trait Device {
    fn caps(&self) -> DeviceCaps;

    /// Queues a frame of exactly `len` bytes written by `fill`. Returns false, without
    /// calling `fill`, when the backend has no room now; the stack keeps what it wanted
    /// to send and tries again on the next dispatch.
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool;

    /// A frame to one of the stack's local addresses (loopback on) that another stack
    /// on this host serves instead (fastnet's host loopback): true when the device
    /// took it, false to deliver it locally. Transport checksums of such frames are not
    /// filled: the receiver takes them with `Interface::receive_local`.
    fn take_local(&mut self, frame: &[u8]) -> bool {
        let _ = frame;
        false
    }
}

/// A device that stores frames in memory: used by tests, the simulator and benchmarks.
#[derive(Debug, Default)]
pub struct QueueDevice {
    pub mtu: usize,
    pub checksum: ChecksumOffload,
    /// Frames transmitted, oldest first.
    pub frames: std::collections::VecDeque<Vec<u8>>,
    /// When set, `transmit` refuses once this many frames are queued.
    pub limit: Option<usize>,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            mtu,
            ..Default::default()
        }
    }
}

impl Device for QueueDevice {
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.mtu,
            checksum: self.checksum,
        }
    }

    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if self.limit.is_some_and(|l| self.frames.len() >= l) {
            return false;
        }
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        self.frames.push_back(buf);
        true
    }
}
