//! BPF objects through bpf(2): maps, program load (with the verifier log), XDP links.

pub mod asm;

use crate::sys::{self, put_u32, put_u64};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

pub const MAP_TYPE_HASH: u32 = 1;
pub const MAP_TYPE_ARRAY: u32 = 2;
pub const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_F_NO_PREALLOC`: a hash map allocates elements on insert, not all at creation.
pub const MAP_F_NO_PREALLOC: u32 = 1;

const PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` value for XDP links.
pub const ATTACH_TYPE_XDP: u32 = 37;

/// `XDP_FLAGS_*` for attaching.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Copies a name into a bpf attribute's 16-byte name field (NUL-terminated).
fn put_name(attr: &mut [u8], off: usize, name: &str) {
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    attr[off..off + n].copy_from_slice(&bytes[..n]);
}

/// A BPF map, by fd (owned, or borrowed from an inherited fd).
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    pub key_size: u32,
    pub value_size: u32,
}

impl Map {
    pub fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> io::Result<Map> {
        Map::create_with_flags(map_type, key_size, value_size, max_entries, 0, name)
    }

    /// Like [`Map::create`], with `map_flags` (e.g. [`MAP_F_NO_PREALLOC`]).
    pub fn create_with_flags(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        name: &str,
    ) -> io::Result<Map> {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, map_type);
        put_u32(&mut attr, 4, key_size);
        put_u32(&mut attr, 8, value_size);
        put_u32(&mut attr, 12, max_entries);
        put_u32(&mut attr, 16, map_flags);
        put_name(&mut attr, 28, name);
        let fd = sys::bpf_fd(sys::BPF_MAP_CREATE, &mut attr)
            .map_err(|e| io::Error::new(e.kind(), format!("BPF_MAP_CREATE {name}: {e}")))?;
        Ok(Map {
            fd,
            key_size,
            value_size,
        })
    }

    /// Wraps an fd that already refers to a map with these sizes (e.g. inherited).
    pub fn from_fd(fd: OwnedFd, key_size: u32, value_size: u32) -> Map {
        Map {
            fd,
            key_size,
            value_size,
        }
    }

    /// The same map through a new (close-on-exec) fd.
    pub fn try_clone(&self) -> io::Result<Map> {
        Ok(Map {
            fd: sys::dup_cloexec(self.fd.as_raw_fd())?,
            key_size: self.key_size,
            value_size: self.value_size,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn elem_attr(&self, key: &[u8], value: *const u8, flags: u64) -> [u8; 128] {
        assert_eq!(key.len(), self.key_size as usize, "bad key size");
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, key.as_ptr() as u64);
        put_u64(&mut attr, 16, value as u64);
        put_u64(&mut attr, 24, flags);
        attr
    }

    /// Inserts or replaces.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(value.len(), self.value_size as usize, "bad value size");
        let mut attr = self.elem_attr(key, value.as_ptr(), BPF_ANY);
        sys::bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Inserts; `AlreadyExists` when the key is present.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(value.len(), self.value_size as usize, "bad value size");
        let mut attr = self.elem_attr(key, value.as_ptr(), BPF_NOEXIST);
        sys::bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Replaces the value of a present key; NotFound when it is absent.
    pub fn replace(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(value.len(), self.value_size as usize, "bad value size");
        let mut attr = self.elem_attr(key, value.as_ptr(), BPF_EXIST);
        sys::bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Reads a value into `out` (for per-CPU maps `out` holds one slot per CPU).
    /// Returns false when the key is absent.
    pub fn lookup(&self, key: &[u8], out: &mut [u8]) -> io::Result<bool> {
        let mut attr = self.elem_attr(key, out.as_mut_ptr(), 0);
        match sys::bpf(sys::BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes; returns false when the key was absent.
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        let mut attr = self.elem_attr(key, std::ptr::null(), 0);
        match sys::bpf(sys::BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All keys, in the map's iteration order.
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let mut prev: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; self.key_size as usize];
            let mut attr = [0u8; 128];
            put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
            // A null key asks for the first one.
            put_u64(&mut attr, 8, prev.as_ref().map_or(0, |k| k.as_ptr() as u64));
            put_u64(&mut attr, 16, next.as_mut_ptr() as u64);
            match sys::bpf(sys::BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => {
                    keys.push(next.clone());
                    prev = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Loads an XDP program. On failure the error carries the verifier's log.
pub fn load_xdp_program(insns: &[asm::Insn], name: &str) -> io::Result<OwnedFd> {
    let code = asm::encode_all(insns);
    let license = b"Dual MIT/GPL\0";
    let attempt = |log: &mut Vec<u8>| {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, PROG_TYPE_XDP);
        put_u32(&mut attr, 4, insns.len() as u32);
        put_u64(&mut attr, 8, code.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if !log.is_empty() {
            put_u32(&mut attr, 24, 1); // log_level
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        put_name(&mut attr, 48, name);
        put_u32(&mut attr, 68, ATTACH_TYPE_XDP); // expected_attach_type
        sys::bpf_fd(sys::BPF_PROG_LOAD, &mut attr)
    };
    // First without a log (cheap); on failure again with one, to say why.
    match attempt(&mut Vec::new()) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 1 << 20];
            let second = attempt(&mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            match second {
                Ok(fd) => Ok(fd),
                Err(_) => Err(io::Error::new(
                    first.kind(),
                    format!("BPF_PROG_LOAD {name}: {first}; verifier log:\n{text}"),
                )),
            }
        }
    }
}

/// Attaches an XDP program to an interface through a BPF link: the program stays
/// attached exactly as long as the link fd is open in some process.
pub fn create_xdp_link(prog: BorrowedFd<'_>, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, ifindex);
    put_u32(&mut attr, 8, ATTACH_TYPE_XDP);
    put_u32(&mut attr, 12, xdp_flags);
    sys::bpf_fd(sys::BPF_LINK_CREATE, &mut attr)
}

/// Runs an XDP program once on `frame` in the kernel (BPF_PROG_TEST_RUN) and returns
/// its verdict (XDP_DROP = 1, XDP_PASS = 2, XDP_REDIRECT = 4). The frame must hold at
/// least an Ethernet header. Runs as if received on RX queue 0.
pub fn test_run_xdp(prog: BorrowedFd<'_>, frame: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u32(&mut attr, 12, out.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u64(&mut attr, 24, out.as_mut_ptr() as u64);
    put_u32(&mut attr, 32, 1); // repeat
    sys::bpf(sys::BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes")))
}

/// The kernel's id of a loaded program (BPF_OBJ_GET_INFO_BY_FD, `struct bpf_prog_info`
/// starts with `u32 type; u32 id;`), as netlink reports the attached program's.
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = [0u8; 8];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, info.len() as u32);
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    sys::bpf(sys::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(u32::from_ne_bytes(info[4..8].try_into().expect("4 bytes")))
}
