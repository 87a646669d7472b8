//! Host loopback (FASTNET_LOOPBACK=host): TCP and UDP over 127.0.0.0/8 between two
//! fastnet processes, stack to stack through shared memory, with no kernel in between.
//!
//! - The **registry** (`/dev/shm/fastnet-lo-ns<inode>.registry`, one per network
//!   namespace) maps each TCP and UDP port a host-mode
//!   process uses on loopback (listeners, and the local ports of its connections) to
//!   the id of its inbox. The kernel stays the arbiter of who owns a port: every entry
//!   is written after the socket's shadow bound the port in the kernel.
//! - Each process has an **inbox** (`/dev/shm/fastnet-lo-<id>.inbox`): a ring of whole
//!   Ethernet frames that other processes push into under a spin lock, and a FIFO
//!   (`.bell`) they write a byte to, which the owner polls beside its XSK fds.
//! - A frame the stack sends to a local address whose port the registry gives to
//!   another inbox is pushed there (`Device::take_local`) instead of being delivered
//!   locally; the owner takes it with `Interface::receive_local`.
//!
//! A peer that is not a live host-mode fastnet process has no (live) entry: its
//! loopback stays the kernel's, as without host mode.

use super::kernel;
use stack::wire::{EthernetFrame, Ipv4Packet};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use xdp_backend::portmap::Transport;

/// One registry per network namespace (loopback is per namespace): the name carries
/// the namespace's inode.
fn registry_path() -> String {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    format!("/dev/shm/fastnet-lo-ns{ns}.registry")
}
/// One inbox id per TCP port, then one per UDP port.
const REGISTRY_LEN: usize = 2 * 65536 * 4;

/// Frames an inbox holds, and the bytes of each slot (a 64 KiB loopback frame).
const SLOTS: u64 = 256;
const SLOT_BYTES: usize = 65536 + 64;
const MAGIC: u64 = 0x6661_7374_6c6f_0001;

#[repr(C)]
struct InboxHeader {
    magic: AtomicU64,
    /// Producers' spin lock (several processes may push).
    lock: AtomicU32,
    _pad: u32,
    /// Next slot the owner reads, and next slot a producer writes.
    head: AtomicU64,
    tail: AtomicU64,
}

const HEADER_BYTES: usize = 64;

fn inbox_len() -> usize {
    HEADER_BYTES + SLOTS as usize * (8 + SLOT_BYTES)
}

fn inbox_path(id: u32) -> String {
    format!("/dev/shm/fastnet-lo-{id}.inbox")
}

fn bell_path(id: u32) -> String {
    format!("/dev/shm/fastnet-lo-{id}.bell")
}

/// A shared mapping of a whole file.
struct Shared {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only touched through atomics and under the inbox protocol.
unsafe impl Send for Shared {}

impl Shared {
    fn map(file: &File, len: usize) -> std::io::Result<Shared> {
        if file.metadata()?.len() < len as u64 {
            file.set_len(len as u64)?;
        }
        // SAFETY: a fresh shared read-write mapping of a file we hold open, sized above.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Shared {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }
}

impl Shared {
    /// A new (emptied) file of `len` bytes, mapped.
    fn create(path: &std::path::Path, len: usize) -> std::io::Result<Shared> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Shared::map(&f, len)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The host-wide port → inbox map.
struct Registry(Shared);

impl Registry {
    fn open(path: &str) -> std::io::Result<Registry> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Registry(Shared::map(&f, REGISTRY_LEN)?))
    }
    fn slot(&self, t: Transport, port: u16) -> &AtomicU32 {
        let i = port as usize + if t == Transport::Udp { 65536 } else { 0 };
        // SAFETY: i < 2 × 65536 slots of 4 bytes inside the mapping, 4-byte aligned
        // (the mapping is page aligned); only accessed atomically.
        unsafe { &*(self.0.base.as_ptr().add(i * 4) as *const AtomicU32) }
    }
}

impl Registry {
    /// Clears the entries of processes that died without clearing them (killed): a
    /// port they held may belong to a stock program by now.
    fn forget_dead(&self) {
        let mut alive: HashMap<u32, bool> = HashMap::new();
        for t in [Transport::Tcp, Transport::Udp] {
            for port in 0..=u16::MAX {
                let slot = self.slot(t, port);
                let id = slot.load(Ordering::Acquire);
                // SAFETY: kill with signal 0 only checks that the process exists.
                if id != 0
                    && !*alive
                        .entry(id)
                        .or_insert_with(|| unsafe { libc::kill(id as i32, 0) } == 0)
                {
                    let _ = slot.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Removes the inbox and bell files of processes that died without removing them.
fn remove_dead_inboxes() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix("fastnet-lo-") else {
            continue;
        };
        let Some(pid) = rest
            .strip_suffix(".inbox")
            .or_else(|| rest.strip_suffix(".bell"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// One inbox, ours (to read) or a peer's (to push into).
struct Inbox {
    map: Shared,
    /// The bell FIFO: read end for ours, write end for a peer's.
    bell: i32,
}

impl Inbox {
    fn header(&self) -> &InboxHeader {
        // SAFETY: the header is at the start of the mapping, which is page aligned and
        // larger than the header; its fields are atomics.
        unsafe { &*(self.map.base.as_ptr() as *const InboxHeader) }
    }
    fn slot(&self, i: u64) -> *mut u8 {
        let at = HEADER_BYTES + (i % SLOTS) as usize * (8 + SLOT_BYTES);
        // SAFETY: `at` + a slot is inside the mapping (inbox_len).
        unsafe { self.map.base.as_ptr().add(at) }
    }

    /// Pushes one frame (a producer); false when the inbox is full or the frame too big.
    fn push(&self, frame: &[u8]) -> bool {
        if frame.len() > SLOT_BYTES {
            return false;
        }
        let h = self.header();
        // The lock word holds the holder's PID: a producer killed while holding it
        // must not stop every other producer for good.
        let me = kernel::getpid() as u32;
        let mut spins = 0u32;
        loop {
            match h
                .lock
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(holder) => {
                    spins += 1;
                    if spins > 1000 {
                        // SAFETY: sched_yield has no preconditions.
                        unsafe { libc::sched_yield() };
                    }
                    if spins.is_multiple_of(4096)
                        && holder != 0
                        // SAFETY: kill with signal 0 only checks that the process exists.
                        && unsafe { libc::kill(holder as i32, 0) } != 0
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
                    {
                        // The holder died inside: take the lock over.
                        if h.lock
                            .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            break;
                        }
                    }
                    std::hint::spin_loop();
                }
            }
        }
        let head = h.head.load(Ordering::Acquire);
        let tail = h.tail.load(Ordering::Relaxed);
        let ok = tail - head < SLOTS;
        if ok {
            let s = self.slot(tail);
            // SAFETY: slot `tail` is free (tail - head < SLOTS) and ours under the lock;
            // the length word and the data fit the slot.
            unsafe {
                (s as *mut u64).write_volatile(frame.len() as u64);
                std::ptr::copy_nonoverlapping(frame.as_ptr(), s.add(8), frame.len());
            }
            h.tail.store(tail + 1, Ordering::Release);
        }
        h.lock.store(0, Ordering::Release);
        if ok {
            let b = 1u8;
            let _ = kernel::write(self.bell, std::slice::from_ref(&b));
        }
        ok
    }

    /// Frames waiting (the owner).
    fn pending(&self) -> u64 {
        let h = self.header();
        h.tail.load(Ordering::Acquire) - h.head.load(Ordering::Relaxed)
    }

    /// Hands up to `budget` frames to `f` (the owner, under the engine lock).
    fn pop(&self, budget: u64, f: &mut dyn FnMut(&[u8])) -> u64 {
        let h = self.header();
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Acquire);
        let n = (tail - head).min(budget);
        for i in head..head + n {
            let s = self.slot(i);
            // SAFETY: slots head..tail were published by the Release store of `tail`;
            // producers do not touch them until `head` moves past them.
            let frame = unsafe {
                let len = ((s as *const u64).read_volatile() as usize).min(SLOT_BYTES);
                std::slice::from_raw_parts(s.add(8), len)
            };
            f(frame);
        }
        h.head.store(head + n, Ordering::Release);
        n
    }
}

/// This process's side of host loopback.
pub struct HostLoop {
    id: u32,
    registry: Registry,
    inbox: Inbox,
    peers: HashMap<u32, Inbox>,
    /// The bell may hold bytes: read it before the next pop.
    bell_dirty: bool,
    /// Frames a peer's full inbox refused (counted; TCP retransmits them).
    pub dropped: u64,
    pub frames_in: u64,
}

impl HostLoop {
    /// Creates our inbox and bell (id: our PID) and opens the registry.
    pub fn open(id: u32) -> Result<HostLoop, String> {
        let reg = registry_path();
        let registry = Registry::open(&reg).map_err(|e| format!("cannot open {reg}: {e}"))?;
        registry.forget_dead();
        remove_dead_inboxes();
        let path = inbox_path(id);
        let map = Shared::create(std::path::Path::new(&path), inbox_len())
            .map_err(|e| format!("cannot create {path}: {e}"))?;
        let bell = bell_path(id);
        let _ = std::fs::remove_file(&bell);
        let c = std::ffi::CString::new(bell.clone()).expect("no NUL");
        // SAFETY: mkfifo with a valid C string.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(format!(
                "cannot create {bell}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Read-write: the FIFO never reports EOF, and we can hold it open alone.
        let fd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_nonblock()
            .open(&bell)
            .map_err(|e| format!("cannot open {bell}: {e}"))?
            .into_raw_fd();
        let fd = kernel::move_high(fd, kernel::HIGH_FD_FLOOR)
            .map_err(|e| format!("{bell}: errno {e}"))?;
        let inbox = Inbox { map, bell: fd };
        inbox.header().magic.store(MAGIC, Ordering::Release);
        Ok(HostLoop {
            id,
            registry,
            inbox,
            peers: HashMap::new(),
            bell_dirty: true,
            dropped: 0,
            frames_in: 0,
        })
    }

    /// The fd to poll for frames from peers.
    pub fn poll_fd(&self) -> i32 {
        self.inbox.bell
    }

    /// Every fd this side holds (protected from the app's close/dup2).
    pub fn owned_fds(&self) -> Vec<i32> {
        let mut v = vec![self.inbox.bell];
        v.extend(self.peers.values().map(|p| p.bell));
        v
    }

    /// Records that `port` on loopback is served by this process.
    pub fn register(&self, t: Transport, port: u16) {
        self.registry
            .slot(t, port)
            .store(self.id, Ordering::Release);
    }

    /// Gives `port` up (only if it is still ours).
    pub fn unregister(&self, t: Transport, port: u16) {
        let _ = self.registry.slot(t, port).compare_exchange(
            self.id,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The live host-mode process other than us serving `port` on loopback, if any.
    pub fn peer_of(&self, t: Transport, port: u16) -> Option<u32> {
        let id = self.registry.slot(t, port).load(Ordering::Acquire);
        // SAFETY: kill with signal 0 only checks that the process exists.
        (id != 0 && id != self.id && unsafe { libc::kill(id as i32, 0) } == 0).then_some(id)
    }

    /// Frames waiting in our inbox.
    pub fn pending(&self) -> u64 {
        self.inbox.pending()
    }

    /// Hands frames from peers to `f` (under the engine lock).
    pub fn receive(&mut self, budget: u64, f: &mut dyn FnMut(&[u8])) -> u64 {
        if self.bell_dirty || self.inbox.pending() > 0 {
            // Empty the bell before reading the ring: a push after this rings again.
            let mut buf = [0u8; 256];
            while matches!(kernel::read(self.inbox.bell, &mut buf), Ok(n) if n == buf.len()) {}
        }
        let n = self.inbox.pop(budget, f);
        self.frames_in += n;
        self.bell_dirty = n > 0;
        n
    }

    /// A frame to a local address: pushed to the peer that serves its TCP or UDP port,
    /// if another process does (true), else left for local delivery (false).
    pub fn route(&mut self, frame: &[u8]) -> bool {
        let Some((t, port)) = dst_port(frame) else {
            return false;
        };
        let id = self.registry.slot(t, port).load(Ordering::Acquire);
        if id == 0 || id == self.id {
            return false;
        }
        if !self.peers.contains_key(&id) {
            self.forget_dead_peers();
        }
        let peer = match self.peers.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match open_peer(id) {
                Some(p) => v.insert(p),
                // Gone: local delivery answers (RST), as for a closed port.
                None => return false,
            },
        };
        if !peer.push(frame) {
            self.dropped += 1;
        }
        true
    }

    /// Unmaps the inboxes of peers that exited (their files are gone; the mapping
    /// would keep the memory).
    fn forget_dead_peers(&mut self) {
        self.peers.retain(|&id, p| {
            // SAFETY: kill with signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(id as i32, 0) } == 0;
            if !alive {
                rewriter::filter::mark_fd(p.bell, false);
                let _ = kernel::close(p.bell);
            }
            alive
        });
    }

    /// Removes our inbox and registry entries (at exit of the owner).
    pub fn close(&self) {
        for port in 0..=u16::MAX {
            self.unregister(Transport::Tcp, port);
            self.unregister(Transport::Udp, port);
        }
        let _ = std::fs::remove_file(inbox_path(self.id));
        let _ = std::fs::remove_file(bell_path(self.id));
    }
}

fn open_peer(id: u32) -> Option<Inbox> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(inbox_path(id))
        .ok()?;
    let map = Shared::map(&f, inbox_len()).ok()?;
    let bell = OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(bell_path(id))
        .ok()?
        .into_raw_fd();
    let bell = kernel::move_high(bell, kernel::HIGH_FD_FLOOR).ok()?;
    // The app's close/close_range/dup2 must come to us for it (and leave it alone).
    rewriter::filter::mark_fd(bell, true);
    let inbox = Inbox { map, bell };
    (inbox.header().magic.load(Ordering::Acquire) == MAGIC).then_some(inbox)
}

/// The transport and destination port of an IPv4 TCP or UDP frame (checked views).
fn dst_port(frame: &[u8]) -> Option<(Transport, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    match ip.protocol() {
        6 => {
            let tcp = stack::wire::tcp::TcpPacket::new_checked(ip.payload()).ok()?;
            Some((Transport::Tcp, tcp.dst_port()))
        }
        17 => {
            let udp = stack::wire::UdpPacket::new_checked(ip.payload()).ok()?;
            Some((Transport::Udp, udp.dst_port()))
        }
        _ => None,
    }
}

trait NonblockOpen {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonblockOpen for OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inbox in a private temp file, with a pipe as its bell.
    fn temp_inbox(tag: &str) -> (Inbox, std::path::PathBuf, i32) {
        let path =
            std::env::temp_dir().join(format!("fastnet-inbox-test-{tag}-{}", std::process::id()));
        let mut p = [0i32; 2];
        // SAFETY: pipe2 into a local array.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        let inbox = Inbox {
            map: Shared::create(&path, inbox_len()).unwrap(),
            bell: p[1],
        };
        (inbox, path, p[0])
    }

    #[test]
    fn frames_come_out_in_order_and_a_full_inbox_refuses() {
        let (inbox, path, bell_rx) = temp_inbox("order");
        for i in 0..SLOTS {
            assert!(inbox.push(&[i as u8; 100]), "frame {i}");
        }
        assert!(!inbox.push(&[0; 100]), "full");
        assert!(!inbox.push(&vec![0; SLOT_BYTES + 1]), "too big");
        let mut got = Vec::new();
        assert_eq!(inbox.pop(u64::MAX, &mut |f| got.push(f[0])), SLOTS);
        assert_eq!(got, (0..SLOTS).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(inbox.pending(), 0);
        // One bell byte per frame pushed.
        let mut buf = [0u8; 1024];
        assert_eq!(kernel::read(bell_rx, &mut buf), Ok(SLOTS as usize));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_lock_left_by_a_dead_producer_is_taken_over() {
        let (inbox, path, _bell_rx) = temp_inbox("deadlock");
        // A PID above pid_max: no such process.
        inbox.header().lock.store(4_194_304 + 7, Ordering::Release);
        assert!(inbox.push(b"after the dead producer"));
        let mut got = Vec::new();
        inbox.pop(1, &mut |f| got.extend_from_slice(f));
        assert_eq!(got, b"after the dead producer");
        assert_eq!(inbox.header().lock.load(Ordering::Acquire), 0);
        let _ = std::fs::remove_file(path);
    }
}
