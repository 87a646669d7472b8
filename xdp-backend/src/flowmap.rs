//! The flow map: exact IPv4 or IPv6 flows (one connection or UDP peer) steered to one slot
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
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{BorrowedFd, OwnedFd};

/// Most flows the map holds.
pub const MAX_FLOWS: u32 = 1 << 18;

/// Key layout shared with the XDP program (40 bytes, what it stores on its stack
/// from the received frame). IPv4 addresses are stored v4-mapped (`::ffff:a.b.c.d`),
/// so one map holds both families:
///
/// | bytes  | field                                                          |
/// |--------|----------------------------------------------------------------|
/// | 0      | IP protocol (6 TCP, 17 UDP)                                    |
/// | 1..4   | zero                                                           |
/// | 4..20  | local address = the frame's destination (IPv6 or v4-mapped)    |
/// | 20..36 | remote address = the frame's source (IPv6 or v4-mapped)        |
/// | 36..38 | local port = the frame's destination port, network order       |
/// | 38..40 | remote port = the frame's source port, network order           |
pub(crate) const KEY_SIZE: u32 = 40;
/// Value: the slot (native-endian u32).
pub(crate) const VALUE_SIZE: u32 = 4;
/// Stack offsets (from the frame pointer) of the key's fields in the program.
pub(crate) const FP_KEY: i16 = -48;
pub(crate) const FP_LOCAL_ADDR: i16 = FP_KEY + 4;
pub(crate) const FP_REMOTE_ADDR: i16 = FP_KEY + 20;
pub(crate) const FP_LOCAL_PORT: i16 = FP_KEY + 36;
pub(crate) const FP_REMOTE_PORT: i16 = FP_KEY + 38;

/// The 16 address bytes of the key: IPv6 as it is, IPv4 v4-mapped.
pub(crate) fn key_address(a: &SocketAddr) -> [u8; 16] {
    match a {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(a) => a.ip().octets(),
    }
}

/// The address the key's 16 bytes name (v4-mapped back to IPv4).
fn key_socket_addr(octets: [u8; 16], port: u16) -> SocketAddr {
    let ip = Ipv6Addr::from(octets);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(v4.into(), port),
        None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    }
}

/// One flow as seen from this host (both ends of one family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl FlowKey {
    pub fn new(
        proto: Transport,
        local: impl Into<SocketAddr>,
        remote: impl Into<SocketAddr>,
    ) -> FlowKey {
        FlowKey {
            proto,
            local: local.into(),
            remote: remote.into(),
        }
    }

    /// The map key (layout above).
    pub fn bytes(&self) -> [u8; KEY_SIZE as usize] {
        let mut k = [0u8; KEY_SIZE as usize];
        k[0] = self.proto.ip_proto();
        k[4..20].copy_from_slice(&key_address(&self.local));
        k[20..36].copy_from_slice(&key_address(&self.remote));
        k[36..38].copy_from_slice(&self.local.port().to_be_bytes());
        k[38..40].copy_from_slice(&self.remote.port().to_be_bytes());
        k
    }

    fn from_bytes(k: &[u8]) -> Option<FlowKey> {
        let addr = |at: usize| -> [u8; 16] { k[at..at + 16].try_into().expect("16 bytes") };
        let port = |at: usize| u16::from_be_bytes([k[at], k[at + 1]]);
        Some(FlowKey {
            proto: Transport::from_ip_proto(k[0])?,
            local: key_socket_addr(addr(4), port(36)),
            remote: key_socket_addr(addr(20), port(38)),
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
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn key_layout() {
        let f = FlowKey::new(
            Transport::Tcp,
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 0x1f90),
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 0xabcd),
        );
        let mut want = [0u8; 40];
        want[0] = 6;
        want[14..20].copy_from_slice(&[0xff, 0xff, 10, 77, 0, 1]);
        want[30..36].copy_from_slice(&[0xff, 0xff, 10, 77, 0, 2]);
        want[36..40].copy_from_slice(&[0x1f, 0x90, 0xab, 0xcd]);
        assert_eq!(f.bytes(), want);
        assert_eq!(FlowKey::from_bytes(&f.bytes()), Some(f));
        assert_eq!(FP_KEY + KEY_SIZE as i16, -8);
    }

    #[test]
    fn ipv6_key_layout() {
        let local: Ipv6Addr = "fd77::1".parse().unwrap();
        let remote: Ipv6Addr = "fd77::2".parse().unwrap();
        let f = FlowKey::new(
            Transport::Udp,
            SocketAddrV6::new(local, 53, 0, 0),
            SocketAddrV6::new(remote, 40000, 0, 0),
        );
        let k = f.bytes();
        assert_eq!(k[0], 17);
        assert_eq!(k[4..20], local.octets());
        assert_eq!(k[20..36], remote.octets());
        assert_eq!(k[36..40], [0, 53, 0x9c, 0x40]);
        assert_eq!(FlowKey::from_bytes(&k), Some(f));
    }
}
