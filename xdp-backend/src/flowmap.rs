//! The flow map: exact IPv4 flows (one connection or UDP peer) steered to one slot
//! (process) of the family, ahead of the port map's owner and listener group.
//!
//! A plain hash map, not an LRU one: only user space inserts (the program only looks
//! up), so a SYN flood cannot add entries, and an entry lives until its owner removes
//! it; an LRU map would evict a living connection's entry under pressure and send its
//! segments to the listener group (to the wrong process) without anyone noticing. A
//! full map makes the insert fail (E2BIG) where the caller sees it. Elements are
//! allocated on insert (no preallocation of all `MAX_FLOWS`).

use crate::bpf::{Map, MAP_F_NO_PREALLOC, MAP_TYPE_HASH};
use crate::portmap::Transport;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Most flows the map holds.
pub const MAX_FLOWS: u32 = 1 << 18;

/// Key layout shared with the XDP program (16 bytes, what it stores on its stack
/// from the received frame):
///
/// | bytes  | field                                                        |
/// |--------|--------------------------------------------------------------|
/// | 0      | IP protocol (6 TCP, 17 UDP)                                  |
/// | 1..4   | zero                                                         |
/// | 4..8   | local address = the frame's IPv4 destination, network order  |
/// | 8..12  | remote address = the frame's IPv4 source, network order      |
/// | 12..14 | local port = the frame's destination port, network order     |
/// | 14..16 | remote port = the frame's source port, network order         |
pub(crate) const KEY_SIZE: u32 = 16;
/// Value: the slot (native-endian u32).
pub(crate) const VALUE_SIZE: u32 = 4;
/// Stack offsets (from the frame pointer) of the key's fields in the program.
pub(crate) const FP_KEY: i16 = -32;
pub(crate) const FP_LOCAL_ADDR: i16 = FP_KEY + 4;
pub(crate) const FP_REMOTE_ADDR: i16 = FP_KEY + 8;
pub(crate) const FP_LOCAL_PORT: i16 = FP_KEY + 12;
pub(crate) const FP_REMOTE_PORT: i16 = FP_KEY + 14;

/// One flow as seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: Transport,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
}

impl FlowKey {
    pub fn new(proto: Transport, local: SocketAddrV4, remote: SocketAddrV4) -> FlowKey {
        FlowKey {
            proto,
            local,
            remote,
        }
    }

    /// The map key (layout above).
    pub fn bytes(&self) -> [u8; KEY_SIZE as usize] {
        let mut k = [0u8; KEY_SIZE as usize];
        k[0] = self.proto.ip_proto();
        k[4..8].copy_from_slice(&self.local.ip().octets());
        k[8..12].copy_from_slice(&self.remote.ip().octets());
        k[12..14].copy_from_slice(&self.local.port().to_be_bytes());
        k[14..16].copy_from_slice(&self.remote.port().to_be_bytes());
        k
    }

    fn from_bytes(k: &[u8]) -> Option<FlowKey> {
        let addr = |at: usize| std::net::Ipv4Addr::new(k[at], k[at + 1], k[at + 2], k[at + 3]);
        let port = |at: usize| u16::from_be_bytes([k[at], k[at + 1]]);
        Some(FlowKey {
            proto: Transport::from_ip_proto(k[0])?,
            local: SocketAddrV4::new(addr(4), port(12)),
            remote: SocketAddrV4::new(addr(8), port(14)),
        })
    }
}

/// Flows steered to a slot.
#[derive(Debug)]
pub struct FlowMap {
    map: Map,
}

impl FlowMap {
    pub(crate) fn create() -> io::Result<FlowMap> {
        Ok(FlowMap {
            map: Map::create_with_flags(
                MAP_TYPE_HASH,
                KEY_SIZE,
                VALUE_SIZE,
                MAX_FLOWS,
                MAP_F_NO_PREALLOC,
                "fastnet_flows",
            )?,
        })
    }

    /// Uses a flow map fd inherited from another process.
    pub fn from_fd(fd: OwnedFd) -> FlowMap {
        FlowMap {
            map: Map::from_fd(fd, KEY_SIZE, VALUE_SIZE),
        }
    }

    /// The same map through a new fd.
    pub fn try_clone(&self) -> io::Result<FlowMap> {
        Ok(FlowMap {
            map: self.map.try_clone()?,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.map.raw_fd()
    }

    /// Sends `flow`'s frames to `slot` from now on (replacing any earlier slot: the
    /// program sees the old or the new slot, never no entry).
    pub fn steer(&self, flow: &FlowKey, slot: u32) -> io::Result<()> {
        if slot >= crate::program::MAX_SLOTS && slot != crate::program::KERNEL_SLOT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {slot} is not below {}", crate::program::MAX_SLOTS),
            ));
        }
        self.map.update(&flow.bytes(), &slot.to_ne_bytes())
    }

    /// Sends `flow`'s frames to the kernel's stack from now on (the connection is a
    /// kernel socket's now), although its port stays ours.
    pub fn to_kernel(&self, flow: &FlowKey) -> io::Result<()> {
        self.steer(flow, crate::program::KERNEL_SLOT)
    }

    /// Removes `flow`'s entry (its frames follow the port map again). False when it
    /// had none.
    pub fn unsteer(&self, flow: &FlowKey) -> io::Result<bool> {
        self.map.delete(&flow.bytes())
    }

    /// The slot `flow` is steered to, if any.
    pub fn slot(&self, flow: &FlowKey) -> io::Result<Option<u32>> {
        let mut v = [0u8; 4];
        Ok(self
            .map
            .lookup(&flow.bytes(), &mut v)?
            .then(|| u32::from_ne_bytes(v)))
    }

    /// Removes every flow steered to `slot` (a process of the family is gone; its
    /// flows follow the port map again until someone steers them). Returns how many.
    pub fn remove_slot(&self, slot: u32) -> io::Result<usize> {
        let mut n = 0;
        for (flow, s) in self.flows()? {
            if s == slot && self.unsteer(&flow)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every steered flow with its slot, unordered.
    pub fn flows(&self) -> io::Result<Vec<(FlowKey, u32)>> {
        let mut out = Vec::new();
        for k in self.map.keys()? {
            let Some(flow) = FlowKey::from_bytes(&k) else {
                continue;
            };
            if let Some(slot) = self.slot(&flow)? {
                out.push((flow, slot));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn key_layout() {
        let f = FlowKey::new(
            Transport::Tcp,
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 0x1f90),
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 0xabcd),
        );
        assert_eq!(
            f.bytes(),
            [6, 0, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2, 0x1f, 0x90, 0xab, 0xcd]
        );
        assert_eq!(FlowKey::from_bytes(&f.bytes()), Some(f));
        assert_eq!(FP_KEY + KEY_SIZE as i16, -16);
    }
}
