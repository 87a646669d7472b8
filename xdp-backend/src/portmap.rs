//! The port map: which (transport, local port) pairs the fast path owns, and which
//! process of the family (slot) gets a frame for them that no flow-map entry claims.
//! The XDP program redirects a frame to an XSK only when its destination port is here.

use crate::bpf::{Map, MAP_TYPE_HASH};
use crate::program::MAX_SLOTS;
use std::io;
use std::net::SocketAddr;
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

    pub(crate) fn from_ip_proto(p: u8) -> Option<Transport> {
        match p {
            6 => Some(Transport::Tcp),
            17 => Some(Transport::Udp),
            _ => None,
        }
    }
}

/// Most slots a port's listener group holds (a power of two: the program masks the
/// member index with `GROUP_MAX - 1` so the verifier sees it bounded).
pub const GROUP_MAX: usize = 16;

/// Key layout shared with the XDP program: protocol byte, zero byte, port in network
/// order (exactly the bytes the program stores from the packet).
pub(crate) const KEY_SIZE: u32 = 4;
/// Value layout shared with the XDP program, native-endian u32 words:
/// `[0]` owner slot, `[1]` member count n (0..=GROUP_MAX), `[2..2+GROUP_MAX]` member
/// slots (the first n used), then the PID of the process that claimed the port (for
/// diagnostics only; the program never reads it).
pub(crate) const VALUE_SIZE: u32 = 4 * (2 + GROUP_MAX as u32 + 1);
/// Byte offsets of the value's fields, for the program.
pub(crate) const VALUE_OWNER: i16 = 0;
pub(crate) const VALUE_COUNT: i16 = 4;
pub(crate) const VALUE_MEMBERS: i16 = 8;
const VALUE_PID: usize = 4 * (2 + GROUP_MAX);
pub(crate) const MAX_PORTS: u32 = 65536;

pub(crate) fn key(proto: Transport, port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [proto.ip_proto(), 0, p[0], p[1]]
}

/// One claimed port as the program sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortEntry {
    /// The slot that gets the port's frames when the group is empty.
    pub owner: u32,
    /// The listener group: a frame with no flow-map entry goes to one of them (see
    /// [`PortEntry::slot_for`]).
    pub members: Vec<u32>,
    /// PID of the process that wrote the entry last.
    pub pid: u32,
}

impl PortEntry {
    fn encode(&self) -> [u8; VALUE_SIZE as usize] {
        let mut v = [0u8; VALUE_SIZE as usize];
        let mut put = |at: usize, x: u32| v[at..at + 4].copy_from_slice(&x.to_ne_bytes());
        put(VALUE_OWNER as usize, self.owner);
        put(VALUE_COUNT as usize, self.members.len() as u32);
        for (i, &m) in self.members.iter().enumerate() {
            put(VALUE_MEMBERS as usize + 4 * i, m);
        }
        put(VALUE_PID, self.pid);
        v
    }

    fn decode(v: &[u8; VALUE_SIZE as usize]) -> PortEntry {
        let get = |at: usize| u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes"));
        let n = (get(VALUE_COUNT as usize) as usize).min(GROUP_MAX);
        PortEntry {
            owner: get(VALUE_OWNER as usize),
            members: (0..n)
                .map(|i| get(VALUE_MEMBERS as usize + 4 * i))
                .collect(),
            pid: get(VALUE_PID),
        }
    }

    /// The slot a frame of a flow from `remote` with no flow-map entry goes to when
    /// it arrives on RX queue `queue` of an interface with `queues` in use (as the
    /// program's `settings` say): by queue while the group has no more members than
    /// queues, else by the hash of the remote end; the owner when the group is empty.
    pub fn slot_for(&self, remote: impl Into<SocketAddr>, queue: u32, queues: u32) -> u32 {
        let n = self.members.len();
        if n > 0 && n as u32 <= queues {
            self.members[queue as usize % n]
        } else {
            self.slot_by_hash(remote)
        }
    }

    /// The slot the hash of the remote end picks (the owner when the group is empty):
    /// where the program sends `remote`'s frames with more members than queues, and a
    /// fair choice where the queue is not known.
    pub fn slot_by_hash(&self, remote: impl Into<SocketAddr>) -> u32 {
        match self.members.len() {
            0 => self.owner,
            n => self.members[group_hash(remote) as usize % n],
        }
    }

    /// True when a frame from `remote` with no flow-map entry can go to a slot other
    /// than `me`, on whichever queue it arrives.
    pub fn may_go_elsewhere(&self, remote: impl Into<SocketAddr>, me: u32, queues: u32) -> bool {
        let remote = remote.into();
        (0..queues.max(1)).any(|q| self.slot_for(remote, q, queues) != me)
    }
}

/// The hash the program spreads a group's flows with: stable per (remote address,
/// remote port), computed exactly as the program does (see `program::assemble`):
/// the remote address's 16 bytes as the flow key holds them (IPv4 v4-mapped), folded
/// by XOR of its four words as the program loads them (little-endian loads of the
/// network-order bytes), x = fold ^ port ^ (port << 16), then the high 16 bits of the
/// 32-bit product x * 0x9E3779B1 (Fibonacci hashing: the high bits mix every input bit).
pub fn group_hash(remote: impl Into<SocketAddr>) -> u32 {
    let remote = remote.into();
    let octets = crate::flowmap::key_address(&remote);
    let fold = octets
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
        .fold(0, |a, w| a ^ w);
    let port = u16::from_le_bytes(remote.port().to_be_bytes()) as u32;
    let x = fold ^ port ^ (port << 16);
    x.wrapping_mul(GROUP_HASH_MULTIPLIER) >> 16
}

pub(crate) const GROUP_HASH_MULTIPLIER: u32 = 0x9E37_79B1;

fn not_claimed(proto: Transport, port: u16) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{proto:?} port {port} is not claimed"),
    )
}

fn check_slot(slot: u32) -> io::Result<()> {
    if slot >= MAX_SLOTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("slot {slot} is not below {MAX_SLOTS}"),
        ));
    }
    Ok(())
}

/// Claims and releases ports in the XDP program's hash map.
///
/// Claim a port *before* its shadow socket listens or connects, so no frame of the
/// flow can reach the kernel socket first.
///
/// Changing an entry (owner, group) reads and rewrites it: the program always sees
/// the old or the new entry whole, but two processes changing the *same* port at once
/// must be serialised by the caller (one of them would lose its change).
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

    /// The same map through a new fd.
    pub fn try_clone(&self) -> io::Result<PortMap> {
        Ok(PortMap {
            map: self.map.try_clone()?,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.map.raw_fd()
    }

    fn fresh(owner: u32) -> PortEntry {
        PortEntry {
            owner,
            members: Vec::new(),
            pid: std::process::id(),
        }
    }

    /// Steers `port` to the fast path, owned by slot 0 (the process that attached the
    /// program). Claiming a port already claimed is fine and changes nothing (a
    /// listener and its accepted connections share it).
    pub fn claim(&self, proto: Transport, port: u16) -> io::Result<()> {
        self.claim_for(proto, port, 0).map(|_| ())
    }

    /// Steers `port` to the fast path owned by `slot`. Returns false (changing nothing)
    /// when the port was claimed already; [`PortMap::set_owner`] changes the owner.
    pub fn claim_for(&self, proto: Transport, port: u16, slot: u32) -> io::Result<bool> {
        check_slot(slot)?;
        match self
            .map
            .insert(&key(proto, port), &Self::fresh(slot).encode())
        {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Like `claim`, but fails with `AlreadyExists` when the port is claimed already.
    pub fn claim_exclusive(&self, proto: Transport, port: u16) -> io::Result<()> {
        self.map.insert(&key(proto, port), &Self::fresh(0).encode())
    }

    /// Gives `port` back to the kernel. Returns false when it was not claimed.
    pub fn release(&self, proto: Transport, port: u16) -> io::Result<bool> {
        self.map.delete(&key(proto, port))
    }

    pub fn is_claimed(&self, proto: Transport, port: u16) -> io::Result<bool> {
        Ok(self.entry(proto, port)?.is_some())
    }

    /// The entry of a claimed port; None when it is not claimed.
    pub fn entry(&self, proto: Transport, port: u16) -> io::Result<Option<PortEntry>> {
        let mut v = [0u8; VALUE_SIZE as usize];
        Ok(self
            .map
            .lookup(&key(proto, port), &mut v)?
            .then(|| PortEntry::decode(&v)))
    }

    /// Rewrites a claimed port's entry with `edit`; NotFound when it is not claimed.
    fn modify<T>(
        &self,
        proto: Transport,
        port: u16,
        edit: impl FnOnce(&mut PortEntry) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut entry = self
            .entry(proto, port)?
            .ok_or_else(|| not_claimed(proto, port))?;
        let out = edit(&mut entry)?;
        entry.pid = std::process::id();
        // BPF_EXIST: a release racing with us wins; we do not resurrect the port.
        self.map.replace(&key(proto, port), &entry.encode())?;
        Ok(out)
    }

    /// Makes `slot` the owner of a claimed port.
    pub fn set_owner(&self, proto: Transport, port: u16, slot: u32) -> io::Result<()> {
        check_slot(slot)?;
        self.modify(proto, port, |e| {
            e.owner = slot;
            Ok(())
        })
    }

    /// Adds `slot` to the listener group of a claimed port (at the end; already a
    /// member: nothing changes). A full group (GROUP_MAX) is an error.
    pub fn join_group(&self, proto: Transport, port: u16, slot: u32) -> io::Result<()> {
        check_slot(slot)?;
        self.modify(proto, port, |e| {
            if e.members.contains(&slot) {
                return Ok(());
            }
            if e.members.len() >= GROUP_MAX {
                return Err(io::Error::other(format!(
                    "the group of {proto:?} port {port} is full ({GROUP_MAX} slots)"
                )));
            }
            e.members.push(slot);
            Ok(())
        })
    }

    /// Removes `slot` from the group of a claimed port (order of the others kept).
    /// Returns false when it was not a member.
    pub fn leave_group(&self, proto: Transport, port: u16, slot: u32) -> io::Result<bool> {
        self.modify(proto, port, |e| {
            let before = e.members.len();
            e.members.retain(|&m| m != slot);
            Ok(e.members.len() != before)
        })
    }

    /// Removes `slot` from every group (a process of the family is gone) and returns
    /// the ports it owns, for the caller to release or give to another slot.
    pub fn remove_slot(&self, slot: u32) -> io::Result<Vec<(Transport, u16)>> {
        let mut owned = Vec::new();
        for (proto, port) in self.claimed()? {
            let Some(e) = self.entry(proto, port)? else {
                continue;
            };
            if e.members.contains(&slot) {
                match self.leave_group(proto, port, slot) {
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
            }
            if e.owner == slot {
                owned.push((proto, port));
            }
        }
        Ok(owned)
    }

    /// A port whose owner is gone goes to the first slot of its listener group, or,
    /// with an empty group, back to the kernel (the owner's sockets went with it).
    /// A port released meanwhile stays released.
    pub fn hand_on(&self, proto: Transport, port: u16) -> io::Result<()> {
        let Some(entry) = self.entry(proto, port)? else {
            return Ok(());
        };
        let done = match entry.members.first() {
            Some(&heir) => self.set_owner(proto, port, heir),
            None => self.release(proto, port).map(|_| ()),
        };
        match done {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn value_layout_round_trips_and_matches_the_program_offsets() {
        let e = PortEntry {
            owner: 3,
            members: vec![1, 2, 7],
            pid: 4242,
        };
        let v = e.encode();
        assert_eq!(v.len(), 76);
        assert_eq!(&v[0..4], &3u32.to_ne_bytes());
        assert_eq!(&v[4..8], &3u32.to_ne_bytes());
        assert_eq!(&v[8..12], &1u32.to_ne_bytes());
        assert_eq!(&v[16..20], &7u32.to_ne_bytes());
        assert_eq!(&v[72..76], &4242u32.to_ne_bytes());
        assert_eq!(PortEntry::decode(&v), e);
        assert_eq!(key(Transport::Tcp, 0x1f90), [6, 0, 0x1f, 0x90]);
    }

    #[test]
    fn group_hash_is_stable_and_spreads_sequential_ports() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40000);
        assert_eq!(group_hash(a), group_hash(a));
        // The value is fixed by the formula (the program computes the same): the
        // v4-mapped address's words folded, `::ffff` giving the third one.
        let addr = u32::from_le_bytes([10, 77, 0, 2]) ^ u32::from_le_bytes([0, 0, 0xff, 0xff]);
        let port = u16::from_le_bytes(40000u16.to_be_bytes()) as u32;
        assert_eq!(
            group_hash(a),
            (addr ^ port ^ (port << 16)).wrapping_mul(0x9E37_79B1) >> 16
        );
        // IPv6: the four words folded.
        let v6 = std::net::SocketAddrV6::new("fd77::2".parse().unwrap(), 40000, 0, 0);
        let fold = u32::from_le_bytes([0xfd, 0x77, 0, 0]) ^ u32::from_le_bytes([0, 0, 0, 2]);
        assert_eq!(
            group_hash(v6),
            (fold ^ port ^ (port << 16)).wrapping_mul(0x9E37_79B1) >> 16
        );
        for n in [2usize, 3, 4, 8] {
            let mut hits = vec![0; n];
            for p in 40000..41000 {
                hits[group_hash(SocketAddrV4::new(*a.ip(), p)) as usize % n] += 1;
            }
            let fair = 1000 / n;
            assert!(
                hits.iter().all(|&h| h > fair / 2 && h < fair * 3 / 2),
                "{n}: {hits:?}"
            );
        }
        let e = PortEntry {
            owner: 0,
            members: vec![4, 9],
            pid: 0,
        };
        // One queue in use: more members than queues, by hash.
        assert_eq!(e.slot_for(a, 0, 1), e.members[group_hash(a) as usize % 2]);
        assert!(e.may_go_elsewhere(a, 4, 1) != e.may_go_elsewhere(a, 9, 1));
        // Two or more queues: by queue, whatever the remote end.
        for queues in [2, 3, 4] {
            for q in 0..queues {
                assert_eq!(e.slot_for(a, q, queues), e.members[q as usize % 2]);
            }
            assert!(e.may_go_elsewhere(a, 4, queues) && e.may_go_elsewhere(a, 9, queues));
        }
        let owner_only = PortEntry {
            owner: 5,
            members: vec![],
            pid: 0,
        };
        assert_eq!(owner_only.slot_for(a, 1, 2), 5);
        assert!(!owner_only.may_go_elsewhere(a, 5, 2));
        let alone = PortEntry {
            owner: 0,
            members: vec![7],
            pid: 0,
        };
        assert!(!alone.may_go_elsewhere(a, 7, 4));
    }
}
