//! The port map: which (transport, local port) pairs the fast path owns. The XDP
//! program redirects a frame to the XSK only when its destination port is here.

use crate::bpf::{Map, MAP_TYPE_HASH};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// Transport protocols the port map steers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub const fn ip_proto(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }

    fn from_ip_proto(p: u8) -> Option<Transport> {
        match p {
            6 => Some(Transport::Tcp),
            17 => Some(Transport::Udp),
            _ => None,
        }
    }
}

/// Key layout shared with the XDP program: protocol byte, zero byte, port in network
/// order (exactly the bytes the program stores from the packet).
pub(crate) const KEY_SIZE: u32 = 4;
/// Value: the PID of the claiming process (for diagnostics only).
pub(crate) const VALUE_SIZE: u32 = 4;
pub(crate) const MAX_PORTS: u32 = 65536;

pub(crate) fn key(proto: Transport, port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [proto.ip_proto(), 0, p[0], p[1]]
}

/// Claims and releases ports in the XDP program's hash map.
///
/// Claim a port *before* its shadow socket listens or connects, so no frame of the
/// flow can reach the kernel socket first.
#[derive(Debug)]
pub struct PortMap {
    map: Map,
}

impl PortMap {
    pub(crate) fn create() -> io::Result<PortMap> {
        Ok(PortMap {
            map: Map::create(
                MAP_TYPE_HASH,
                KEY_SIZE,
                VALUE_SIZE,
                MAX_PORTS,
                "fastnet_ports",
            )?,
        })
    }

    /// Uses a port map fd inherited from another process (e.g. across fork or passed
    /// over a Unix socket).
    pub fn from_fd(fd: OwnedFd) -> PortMap {
        PortMap {
            map: Map::from_fd(fd, KEY_SIZE, VALUE_SIZE),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.map.raw_fd()
    }

    /// Steers `port` to the fast path. Claiming a port already claimed is fine (a
    /// listener and its accepted connections share it).
    pub fn claim(&self, proto: Transport, port: u16) -> io::Result<()> {
        self.map
            .update(&key(proto, port), &std::process::id().to_ne_bytes())
    }

    /// Like `claim`, but fails with `AlreadyExists` when the port is claimed already.
    pub fn claim_exclusive(&self, proto: Transport, port: u16) -> io::Result<()> {
        self.map
            .insert(&key(proto, port), &std::process::id().to_ne_bytes())
    }

    /// Gives `port` back to the kernel. Returns false when it was not claimed.
    pub fn release(&self, proto: Transport, port: u16) -> io::Result<bool> {
        self.map.delete(&key(proto, port))
    }

    pub fn is_claimed(&self, proto: Transport, port: u16) -> io::Result<bool> {
        let mut v = [0u8; 4];
        self.map.lookup(&key(proto, port), &mut v)
    }

    /// Every claimed (transport, port), unordered.
    pub fn claimed(&self) -> io::Result<Vec<(Transport, u16)>> {
        Ok(self
            .map
            .keys()?
            .into_iter()
            .filter_map(|k| {
                Some((
                    Transport::from_ip_proto(k[0])?,
                    u16::from_be_bytes([k[2], k[3]]),
                ))
            })
            .collect())
    }
}
