//! Raw system calls the `fastnet` command makes itself (for `doctor`): bpf(2), AF_XDP
//! sockets, rtnetlink, ethtool ioctls, mmap at address 0. Everything unsafe in the
//! tools crate lives here; callers get `io::Result`s and plain values.
//!
//! Each probe cleans up after itself: file descriptors are `OwnedFd`s, mappings are
//! unmapped before returning, and an XDP program attached through a BPF link is
//! detached as soon as the link fd is dropped.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, run by the kernel after the skb is built.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Value an XDP program returns to hand the frame to the kernel stack.
const XDP_PASS: i32 = 2;

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The prefix of `union bpf_attr` that BPF_PROG_LOAD reads; the kernel zero-fills
/// the rest because we pass this size.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `link_create` member of `union bpf_attr`.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr`
    // and we pass its exact size; the kernel reads (and may write) only that many bytes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(last_err());
    }
    // SAFETY: on success these bpf commands return a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// Loads the smallest XDP program there is (`r0 = XDP_PASS; exit`) and returns its fd.
/// Proves the bpf(2) syscall works for XDP programs with the capabilities held.
pub fn load_xdp_pass_program() -> io::Result<OwnedFd> {
    load_xdp_pass_program_named("fastnet_doctor")
}

/// The same program under another name (at most 15 bytes of `[A-Za-z0-9_.]`).
pub fn load_xdp_pass_program_named(prog_name: &str) -> io::Result<OwnedFd> {
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r0 = XDP_PASS
        BpfInsn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: XDP_PASS,
        },
        // BPF_JMP | BPF_EXIT
        BpfInsn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    let len = prog_name.len().min(15);
    name[..len].copy_from_slice(&prog_name.as_bytes()[..len]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    bpf(BPF_PROG_LOAD, &mut attr)
}

/// Attaches an XDP program to an interface through a BPF link (`flags` picks native or
/// generic mode). The program stays attached exactly as long as the returned fd lives.
pub fn attach_xdp_link(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}

/// Name of a loaded BPF program, by id (needs CAP_SYS_ADMIN).
pub fn bpf_prog_name(prog_id: u32) -> io::Result<String> {
    #[repr(C)]
    struct GetFdById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let prog = bpf(
        BPF_PROG_GET_FD_BY_ID,
        &mut GetFdById {
            prog_id,
            next_id: 0,
            open_flags: 0,
        },
    )?;
    // struct bpf_prog_info: the name is bytes 64..80; the rest stays zero, which the
    // kernel accepts for the tail it does not know.
    let mut info = [0u8; 256];
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = GetInfo {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is the obj_info member of `union bpf_attr`; the kernel writes at
    // most `info_len` bytes to `info`, which outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut GetInfo as *mut libc::c_void,
            size_of::<GetInfo>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(last_err());
    }
    let name: Vec<u8> = info[64..80]
        .iter()
        .copied()
        .take_while(|&c| c != 0)
        .collect();
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// Index of a network interface in the caller's network namespace.
pub fn if_index(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Creates (and closes) an AF_XDP socket: fails with EAFNOSUPPORT when the kernel
/// lacks `CONFIG_XDP_SOCKETS`, EPERM without CAP_NET_RAW.
pub fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: socket(2) returned a new fd that only we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing
        // cannot alias anything.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(last_err());
        }
        Ok(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nothing borrows it any more.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live value of the size we pass.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Binds a throw-away AF_XDP socket (small UMEM, fill/completion/RX rings) to one queue
/// of an interface with `bind_flags` (`libc::XDP_COPY` or `libc::XDP_ZEROCOPY`), then
/// closes it. Zero-copy on a driver without it gives EOPNOTSUPP; a queue another
/// socket holds gives EBUSY.
pub fn probe_xsk_bind(ifindex: u32, queue: u32, bind_flags: u16) -> io::Result<()> {
    const FRAMES: u32 = 16;
    const FRAME_SIZE: u32 = 4096;
    let sock = xsk_socket()?;
    let umem = Mapping::anonymous((FRAMES * FRAME_SIZE) as usize)?;
    let reg = libc::xdp_umem_reg {
        addr: umem.addr as u64,
        len: umem.len as u64,
        chunk_size: FRAME_SIZE,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(&sock, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)?;
    setsockopt(&sock, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &FRAMES)?;
    setsockopt(
        &sock,
        libc::SOL_XDP,
        libc::XDP_UMEM_COMPLETION_RING,
        &FRAMES,
    )?;
    setsockopt(&sock, libc::SOL_XDP, libc::XDP_RX_RING, &FRAMES)?;
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: bind_flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `addr` is a valid sockaddr_xdp of the size we pass.
    let ret = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_xdp as *const libc::sockaddr,
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(last_err());
    }
    // The socket closes (and unbinds) before the UMEM mapping is unmapped.
    drop(sock);
    drop(umem);
    Ok(())
}

/// Maps one page at address 0 and unmaps it again: what the syscall hook's trampoline
/// needs. Fails with EPERM/EACCES when `vm.mmap_min_addr` > 0 and CAP_SYS_RAWIO is
/// missing; EEXIST if something already sits there.
pub fn probe_map_page_zero() -> io::Result<()> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so this cannot
    // clobber anything; the page is only unmapped when this call created it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(last_err());
    }
    // SAFETY: the page at `addr` was mapped just above, by us.
    unsafe { libc::munmap(addr, 4096) };
    if !addr.is_null() {
        // A kernel that ignores the fixed-address flags placed it elsewhere.
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// Kernel release string, as `uname -r` prints it.
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname(2) fills the struct we own.
    if unsafe { libc::uname(&mut uts) } < 0 {
        return Err(last_err());
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// XDP attachment mode as rtnetlink reports it (`IFLA_XDP_ATTACHED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    Native,
    Generic,
    Offloaded,
    Multiple,
}

impl XdpAttachMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
            XdpAttachMode::Offloaded => "offloaded",
            XdpAttachMode::Multiple => "several modes",
        }
    }
}

/// An XDP program found attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpAttached {
    pub mode: XdpAttachMode,
    /// Program id (`bpftool prog show id N`); 0 when the kernel did not say.
    pub prog_id: u32,
}

const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Asks rtnetlink (RTM_GETLINK) whether an XDP program is attached to `ifindex`.
pub fn xdp_attached(ifindex: u32) -> io::Result<Option<XdpAttached>> {
    // SAFETY: plain socket(2) call; checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: socket(2) returned a new fd that only we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    #[repr(C)]
    struct Request {
        hdr: libc::nlmsghdr,
        ifi: libc::ifinfomsg,
    }
    let req = Request {
        hdr: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: libc::RTM_GETLINK,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        ifi: {
            // SAFETY: ifinfomsg is plain old data; all-zero is valid.
            let mut ifi: libc::ifinfomsg = unsafe { std::mem::zeroed() };
            ifi.ifi_family = libc::AF_UNSPEC as u8;
            ifi.ifi_index = ifindex as i32;
            ifi
        },
    };
    // SAFETY: `req` is a live #[repr(C)] value of the length we pass; the kernel is
    // the destination (unconnected netlink socket defaults to pid 0).
    let sent = unsafe {
        libc::send(
            sock.as_raw_fd(),
            &req as *const Request as *const libc::c_void,
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(last_err());
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(last_err());
    }
    parse_getlink_reply(&buf[..n as usize])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Netlink attributes (type, payload) in `b`, 4-byte aligned.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

/// Parses one RTM_NEWLINK reply (or an NLMSG_ERROR) for its IFLA_XDP attribute.
fn parse_getlink_reply(msg: &[u8]) -> io::Result<Option<XdpAttached>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink reply");
    let len = u32_at(msg, 0).ok_or_else(bad)? as usize;
    let ty = u16_at(msg, 4).ok_or_else(bad)?;
    let msg = msg.get(..len).ok_or_else(bad)?;
    let hdr = size_of::<libc::nlmsghdr>();
    if ty == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(msg, hdr).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if ty != libc::RTM_NEWLINK {
        return Err(bad());
    }
    let body = msg
        .get(hdr + size_of::<libc::ifinfomsg>()..)
        .ok_or_else(bad)?;
    let Some((_, xdp)) = attrs(body).find(|&(t, _)| t == IFLA_XDP) else {
        return Ok(None);
    };
    let mut mode = 0u8;
    let mut prog_id = 0u32;
    for (t, p) in attrs(xdp) {
        match t {
            IFLA_XDP_ATTACHED => mode = p.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => prog_id = u32_at(p, 0).unwrap_or(0),
            _ => {}
        }
    }
    let mode = match mode {
        0 => return Ok(None),
        1 => XdpAttachMode::Native,
        2 => XdpAttachMode::Generic,
        3 => XdpAttachMode::Offloaded,
        _ => XdpAttachMode::Multiple,
    };
    Ok(Some(XdpAttached { mode, prog_id }))
}

const ETHTOOL_GDRVINFO: u32 = 0x03;
/// Size of `struct ethtool_drvinfo`; the driver name is bytes 4..36.
const DRVINFO_LEN: usize = 196;

const ETHTOOL_GTXCSUM: u32 = 0x16;

/// Driver name of an interface (`ethtool -i`), e.g. "veth".
pub fn driver_name(ifname: &str) -> io::Result<String> {
    let mut info = [0u8; DRVINFO_LEN];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    ethtool(ifname, &mut info)?;
    let driver: Vec<u8> = info[4..36]
        .iter()
        .copied()
        .take_while(|&c| c != 0)
        .collect();
    Ok(String::from_utf8_lossy(&driver).into_owned())
}

/// Whether TX checksum offload is on (`ethtool -k`: tx-checksumming).
pub fn tx_checksum_offload(ifname: &str) -> io::Result<bool> {
    // struct ethtool_value { u32 cmd; u32 data; }
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&ETHTOOL_GTXCSUM.to_ne_bytes());
    ethtool(ifname, &mut value)?;
    Ok(u32_at(&value, 4).unwrap_or(0) != 0)
}

use xdp_backend::ethtool;

/// Runs `f` on a fresh thread that has joined the named network namespace
/// (`/var/run/netns/NAME`, as `ip netns add` creates). Only that thread moves: the
/// caller's namespace is untouched. File descriptors `f` returns stay valid anywhere.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    in_netns_at(&format!("/var/run/netns/{ns}"), f)
}

/// As [`in_netns`], in the network namespace of process `pid`.
pub fn in_netns_of<T: Send + 'static>(
    pid: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    in_netns_at(&format!("/proc/{pid}/ns/net"), f)
}

fn in_netns_at<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let file = std::fs::File::open(path)?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) with a namespace fd we hold open; CLONE_NEWNET moves only
        // the calling thread, which is ours and ends after `f`.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(last_err());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let len = (16 + body.len()) as u32;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn getlink_reply_with_native_program() {
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[1]);
        xdp.extend(attr(IFLA_XDP_PROG_ID, &77u32.to_ne_bytes()));
        let mut body = vec![0u8; 16]; // ifinfomsg
        body.extend(attr(3, b"eth9\0")); // IFLA_IFNAME first, like the kernel
        body.extend(attr(IFLA_XDP | 0x8000, &xdp)); // NLA_F_NESTED set
        let got = parse_getlink_reply(&nlmsg(libc::RTM_NEWLINK, &body)).unwrap();
        assert_eq!(
            got,
            Some(XdpAttached {
                mode: XdpAttachMode::Native,
                prog_id: 77
            })
        );
    }

    #[test]
    fn getlink_reply_without_program() {
        let mut body = vec![0u8; 16];
        body.extend(attr(IFLA_XDP, &attr(IFLA_XDP_ATTACHED, &[0])));
        assert_eq!(
            parse_getlink_reply(&nlmsg(libc::RTM_NEWLINK, &body)).unwrap(),
            None
        );
        let body = vec![0u8; 16];
        assert_eq!(
            parse_getlink_reply(&nlmsg(libc::RTM_NEWLINK, &body)).unwrap(),
            None
        );
    }

    #[test]
    fn getlink_error_reply_carries_errno() {
        let body = (-libc::ENODEV).to_ne_bytes();
        let err = parse_getlink_reply(&nlmsg(libc::NLMSG_ERROR as u16, &body)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn truncated_reply_is_an_error() {
        let msg = nlmsg(libc::RTM_NEWLINK, &[0u8; 16]);
        assert!(parse_getlink_reply(&msg[..10]).is_err());
    }
}
