//! Finding `syscall` instructions and rewriting them to `call *%rax`.
//!
//! A linear sweep with iced-x86 over each executable range (as zpoline does). A sweep can
//! mistake data for code; the ELF objects this runs on keep data out of their executable
//! segments, so the risk is confined to hand-written code that embeds data in `.text`.

use crate::sys;
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind, Register};

/// `syscall`.
const SYSCALL: [u8; 2] = [0x0f, 0x05];
/// `call *%rax`.
const CALL_RAX: [u8; 2] = [0xff, 0xd0];
/// Instructions after a site examined for red-zone use.
const LOOKAHEAD: usize = 16;
/// Sites collected per decoding pass (on the stack: no allocation on the hook path).
const BATCH: usize = 1024;

/// What one rewrite pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    /// Executable ranges examined.
    pub ranges: usize,
    /// Bytes decoded.
    pub bytes: usize,
    /// `syscall` instructions turned into `call *%rax`.
    pub rewritten: usize,
    /// `syscall` instructions left alone because the code after them reads the 8 bytes
    /// below `%rsp`, which the `call` would overwrite (they still reach the kernel,
    /// unhooked).
    pub red_zone_skipped: usize,
}

/// True when `i` accesses memory overlapping `[rsp-8, rsp)`, the slot `call` overwrites.
fn touches_call_slot(i: &Instruction) -> bool {
    (0..i.op_count()).any(|op| {
        i.op_kind(op) == OpKind::Memory
            && i.memory_base() == Register::RSP
            && i.memory_index() == Register::None
            && {
                let disp = i.memory_displacement64() as i64;
                let size = i.memory_size().size().max(1) as i64;
                disp < 0 && disp + size > -8
            }
    })
}

/// True when `i` moves `%rsp` (after it, offsets no longer refer to the same slot).
fn moves_rsp(i: &Instruction) -> bool {
    i.stack_pointer_increment() != 0
        || (i.op_count() > 0
            && i.op_kind(0) == OpKind::Register
            && matches!(
                i.op0_register(),
                Register::RSP | Register::ESP | Register::SP
            ))
}

/// True when the code following a site at `next_ip` reads or writes `[rsp-8, rsp)` before
/// it leaves the straight line (following conditional fall-through) or moves `%rsp`.
fn red_zone_live_after(bytes: &[u8], base: usize, next_ip: usize) -> bool {
    let off = next_ip - base;
    let mut d = Decoder::with_ip(64, &bytes[off..], next_ip as u64, DecoderOptions::NONE);
    for _ in 0..LOOKAHEAD {
        if !d.can_decode() {
            return false;
        }
        let i = d.decode();
        if i.is_invalid() {
            return false;
        }
        if touches_call_slot(&i) {
            return true;
        }
        if moves_rsp(&i)
            || !matches!(
                i.flow_control(),
                FlowControl::Next | FlowControl::ConditionalBranch
            )
        {
            return false;
        }
    }
    false
}

/// Decodes `bytes` (mapped at `base`) from offset `from`, collecting rewritable sites into
/// `sites`. Returns (sites found, offset to resume from when the batch filled up).
fn collect(
    bytes: &[u8],
    base: usize,
    from: usize,
    sites: &mut [usize; BATCH],
    stats: &mut ScanStats,
) -> (usize, Option<usize>) {
    let mut n = 0;
    let mut d = Decoder::with_ip(
        64,
        &bytes[from..],
        (base + from) as u64,
        DecoderOptions::NONE,
    );
    let mut i = Instruction::default();
    while d.can_decode() {
        d.decode_out(&mut i);
        if i.code() != Code::Syscall {
            continue;
        }
        let ip = i.ip() as usize;
        if bytes[ip - base..ip - base + 2] != SYSCALL {
            continue; // a prefixed form: not two bytes, cannot become `call *%rax`
        }
        if red_zone_live_after(bytes, base, i.next_ip() as usize) {
            stats.red_zone_skipped += 1;
            continue;
        }
        sites[n] = ip;
        n += 1;
        if n == BATCH {
            return (n, Some(i.next_ip() as usize - base));
        }
    }
    (n, None)
}

/// Rewrites every `syscall` in `[start, end)` (page-aligned), whose protection is `prot`
/// and stays so afterwards. `code`: the ranges inside it that hold instructions (ELF
/// sections), decoded from their start; `None`: the whole range. Returns the raw errno
/// of a failed `mprotect`.
///
/// # Safety
/// `[start, end)` must be mapped code that no thread executes while it is patched (at
/// load time, or a mapping that the call creating it has not yet returned).
pub(crate) unsafe fn rewrite_range(
    start: usize,
    end: usize,
    prot: i32,
    code: Option<&[(usize, usize)]>,
    stats: &mut ScanStats,
) -> Result<(), i64> {
    let whole = [(start, end)];
    let code = code.unwrap_or(&whole);
    if code.is_empty() {
        return Ok(());
    }
    let len = end - start;
    let mut writable = false;
    if prot & libc::PROT_READ == 0 {
        // SAFETY: adding read access to code changes nothing for its users.
        let r = unsafe { sys::mprotect(start, len, prot | libc::PROT_READ) };
        if sys::is_err(r) {
            return Err(r);
        }
    }
    stats.ranges += 1;
    let mut sites = [0usize; BATCH];
    let mut result = Ok(());
    for &(cs, ce) in code {
        stats.bytes += ce - cs;
        if let Err(e) = rewrite_code(cs, ce, start, len, &mut writable, &mut sites, stats) {
            result = Err(e);
            break;
        }
    }
    if writable || prot & libc::PROT_READ == 0 {
        // SAFETY: restores the protection the range had.
        unsafe { sys::mprotect(start, len, prot) };
    }
    result
}

/// Decodes `[cs, ce)` and patches its sites, making `[start, start+len)` writable first.
fn rewrite_code(
    cs: usize,
    ce: usize,
    start: usize,
    len: usize,
    writable: &mut bool,
    sites: &mut [usize; BATCH],
    stats: &mut ScanStats,
) -> Result<(), i64> {
    let mut from = 0;
    loop {
        let (n, resume) = {
            // SAFETY: the range is mapped and readable; the slice lives only while
            // decoding, before any byte of it is written below.
            let bytes = unsafe { core::slice::from_raw_parts(cs as *const u8, ce - cs) };
            collect(bytes, cs, from, sites, stats)
        };
        if n > 0 && !*writable {
            // SAFETY: code stays executable (other threads may run it); write is added.
            let r = unsafe {
                sys::mprotect(
                    start,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                )
            };
            if sys::is_err(r) {
                return Err(r);
            }
            *writable = true;
        }
        for &site in &sites[..n] {
            // SAFETY: `site` is a decoded two-byte `syscall` inside the now writable range;
            // both bytes are replaced by an instruction of the same length.
            unsafe { core::ptr::write_volatile(site as *mut [u8; 2], CALL_RAX) };
        }
        stats.rewritten += n;
        match resume {
            Some(r) => from = r,
            None => return Ok(()),
        }
    }
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone)]
pub(crate) struct MapsEntry {
    pub start: usize,
    pub end: usize,
    pub prot: i32,
    pub shared: bool,
    /// File offset the mapping starts at.
    pub offset: u64,
    pub inode: u64,
    pub path: String,
}

pub(crate) fn parse_maps(text: &str) -> Vec<MapsEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (off, _dev, inode) = (f.next()?, f.next()?, f.next()?);
            let path = f.collect::<Vec<_>>().join(" ");
            let (s, e) = range.split_once('-')?;
            let p = perms.as_bytes();
            let mut prot = 0;
            if p.first() == Some(&b'r') {
                prot |= libc::PROT_READ;
            }
            if p.get(1) == Some(&b'w') {
                prot |= libc::PROT_WRITE;
            }
            if p.get(2) == Some(&b'x') {
                prot |= libc::PROT_EXEC;
            }
            Some(MapsEntry {
                start: usize::from_str_radix(s, 16).ok()?,
                end: usize::from_str_radix(e, 16).ok()?,
                prot,
                shared: p.get(3) == Some(&b's'),
                offset: u64::from_str_radix(off, 16).ok()?,
                inode: inode.parse().ok()?,
                path,
            })
        })
        .collect()
}

/// Reads `/proc/self/maps` with raw syscalls.
pub(crate) fn read_maps() -> Result<String, i64> {
    let fd = sys::open(c"/proc/self/maps", libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if sys::is_err(fd) {
        return Err(fd);
    }
    let mut out = Vec::with_capacity(64 * 1024);
    let mut buf = [0u8; 16 * 1024];
    let res = loop {
        let n = sys::read(fd as i32, &mut buf);
        if n == -(libc::EINTR as i64) {
            continue;
        }
        if n < 0 {
            break Err(n);
        }
        if n == 0 {
            break Ok(());
        }
        out.extend_from_slice(&buf[..n as usize]);
    };
    sys::close(fd as i32);
    res.map(|()| String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites_in(code: &[u8]) -> (usize, ScanStats) {
        let mut stats = ScanStats::default();
        let mut sites = [0usize; BATCH];
        let (n, resume) = collect(code, 0x1000, 0, &mut sites, &mut stats);
        assert!(resume.is_none());
        (n, stats)
    }

    #[test]
    fn finds_syscalls_not_lookalike_bytes() {
        // mov eax, 0x050f (bytes 0f 05 inside an immediate); syscall; ret
        let code = [0xb8, 0x0f, 0x05, 0, 0, 0x0f, 0x05, 0xc3];
        let mut stats = ScanStats::default();
        let mut sites = [0usize; BATCH];
        let (n, _) = collect(&code, 0x1000, 0, &mut sites, &mut stats);
        assert_eq!((n, sites[0]), (1, 0x1005));
    }

    #[test]
    fn red_zone_reader_after_site_is_skipped() {
        // syscall; mov rbx, [rsp-8]; ret
        let code = [0x0f, 0x05, 0x48, 0x8b, 0x5c, 0x24, 0xf8, 0xc3];
        let (n, stats) = sites_in(&code);
        assert_eq!((n, stats.red_zone_skipped), (0, 1));
        // syscall; cmp rax,-4095; jae +0; mov rbx, [rsp-4] (4 bytes inside the slot)
        let code = [
            0x0f, 0x05, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x00, 0x8b, 0x5c, 0x24, 0xfc,
            0xc3,
        ];
        assert_eq!(sites_in(&code).1.red_zone_skipped, 1);
    }

    #[test]
    fn slots_outside_the_call_slot_are_fine() {
        // syscall; mov rbx, [rsp-16]; mov rcx, [rsp+8]; ret
        let code = [
            0x0f, 0x05, 0x48, 0x8b, 0x5c, 0x24, 0xf0, 0x48, 0x8b, 0x4c, 0x24, 0x08, 0xc3,
        ];
        assert_eq!(sites_in(&code), (1, ScanStats::default()));
        // syscall; ret; mov rbx, [rsp-8]  (after an unconditional exit: another path)
        let code = [0x0f, 0x05, 0xc3, 0x48, 0x8b, 0x5c, 0x24, 0xf8];
        assert_eq!(sites_in(&code).0, 1);
        // syscall; push rax; mov rbx, [rsp-8]  (rsp moved: a different slot)
        let code = [0x0f, 0x05, 0x50, 0x48, 0x8b, 0x5c, 0x24, 0xf8, 0xc3];
        assert_eq!(sites_in(&code).0, 1);
    }

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps(
            "7f00-7f10 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
             ffff-10000 --xs 0 00:00 0 [vsyscall]\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].start, m[0].end), (0x7f00, 0x7f10));
        assert_eq!(m[0].prot, libc::PROT_READ | libc::PROT_EXEC);
        assert!(m[0].path.ends_with("libc.so.6") && !m[0].shared);
        assert!(m[1].shared && m[1].path == "[vsyscall]");
    }
}
