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
    /// Bytes decoded (code without the bytes `0f 05` anywhere is not decoded).
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
pub(crate) fn red_zone_live_after(bytes: &[u8], base: usize, next_ip: usize) -> bool {
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

/// Like [`collect`], but decodes only from the nearest known instruction boundary (a
/// function start in `starts`, sorted, or where the previous decoding stopped) up to each
/// place where the bytes `0f 05` occur, instead of the whole range. Same assumption as
/// a sweep from the section start: no data between a function's start and its code.
/// `None` when there are more sites than one batch holds (the caller sweeps instead).
fn collect_near(
    bytes: &[u8],
    base: usize,
    starts: &[usize],
    sites: &mut [usize; BATCH],
    stats: &mut ScanStats,
) -> Option<usize> {
    let (mut n, mut decoded) = (0, 0);
    // Offset up to which the code is decoded; always an instruction boundary.
    let mut chain_end = 0;
    let mut k = 0;
    let mut i = Instruction::default();
    let finder = memchr::memmem::Finder::new(&SYSCALL);
    while let Some(at) = finder.find(&bytes[k..]) {
        k += at;
        let idx = starts.partition_point(|&a| a <= base + k);
        let from = if idx > 0 { starts[idx - 1] - base } else { 0 }.max(chain_end);
        let mut d = Decoder::with_ip(
            64,
            &bytes[from..],
            (base + from) as u64,
            DecoderOptions::NONE,
        );
        loop {
            if !d.can_decode() {
                chain_end = bytes.len();
                break;
            }
            d.decode_out(&mut i);
            let (ip, next) = (i.ip() as usize - base, i.next_ip() as usize - base);
            decoded += next - ip;
            if ip == k && i.code() == Code::Syscall {
                if red_zone_live_after(bytes, base, base + next) {
                    stats.red_zone_skipped += 1;
                } else if n == BATCH {
                    return None;
                } else {
                    sites[n] = base + ip;
                    n += 1;
                }
            }
            if next > k {
                chain_end = next;
                break;
            }
        }
        k = chain_end;
    }
    stats.bytes += decoded;
    Some(n)
}

/// Rewrites every `syscall` in `[start, end)` (page-aligned), whose protection is `prot`
/// and stays so afterwards. `code`: the ranges inside it that hold instructions (ELF
/// sections), decoded from their start; `None`: the whole range. `starts`: known
/// function starts inside `code` (sorted; may be empty), which let the decoder skip code
/// far from any `0f 05`. Returns the raw errno of a failed `mprotect`.
///
/// # Safety
/// `[start, end)` must be mapped code that no thread executes while it is patched (at
/// load time, or a mapping that the call creating it has not yet returned).
pub(crate) unsafe fn rewrite_range(
    start: usize,
    end: usize,
    prot: i32,
    code: Option<&[(usize, usize)]>,
    starts: &[usize],
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
        let near =
            &starts[starts.partition_point(|&a| a < cs)..starts.partition_point(|&a| a < ce)];
        if let Err(e) = rewrite_code(cs, ce, start, len, near, &mut writable, &mut sites, stats) {
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

/// True when the bytes `0f 05` occur anywhere (a cheap test before decoding; vectorised,
/// as every library is searched at each process start).
fn has_syscall_bytes(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, &SYSCALL).is_some()
}

/// Decodes `[cs, ce)` and patches its sites, making `[start, start+len)` writable first.
#[allow(clippy::too_many_arguments)]
fn rewrite_code(
    cs: usize,
    ce: usize,
    start: usize,
    len: usize,
    starts: &[usize],
    writable: &mut bool,
    sites: &mut [usize; BATCH],
    stats: &mut ScanStats,
) -> Result<(), i64> {
    {
        // SAFETY: as below; the slice is dropped before anything is written.
        let bytes = unsafe { core::slice::from_raw_parts(cs as *const u8, ce - cs) };
        if !has_syscall_bytes(bytes) {
            return Ok(()); // no `0f 05` anywhere: nothing to find, skip decoding
        }
    }
    let mut from = 0;
    let mut near_done = starts.is_empty();
    loop {
        let (n, resume) = {
            // SAFETY: the range is mapped and readable; the slice lives only while
            // decoding, before any byte of it is written below.
            let bytes = unsafe { core::slice::from_raw_parts(cs as *const u8, ce - cs) };
            let mut near = None;
            if !near_done {
                near_done = true;
                let mut probe = *stats;
                near = collect_near(bytes, cs, starts, sites, &mut probe);
                if near.is_some() {
                    *stats = probe;
                }
            }
            match near {
                Some(n) => (n, None),
                None => {
                    stats.bytes += ce - cs - from;
                    collect(bytes, cs, from, sites, stats)
                }
            }
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

/// The mapping holding one address, as [`find_mapping`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub start: usize,
    pub end: usize,
    pub prot: i32,
    pub shared: bool,
    /// `[vdso]`, `[vsyscall]`, `[vvar]`, `[uprobes]`: never patched.
    pub special: bool,
}

/// Parses the head of one maps line (up to its first 160 bytes).
fn parse_mapping(line: &[u8]) -> Option<Mapping> {
    // A cut path may end inside a UTF-8 sequence: the valid head is enough.
    let text = match core::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => core::str::from_utf8(&line[..e.valid_up_to()]).ok()?,
    };
    let mut f = text.split_ascii_whitespace();
    let (range, perms) = (f.next()?, f.next()?);
    let (s, e) = range.split_once('-')?;
    let p = perms.as_bytes();
    let mut prot = 0;
    for (i, bit) in [libc::PROT_READ, libc::PROT_WRITE, libc::PROT_EXEC]
        .into_iter()
        .enumerate()
    {
        if p.get(i).is_some_and(|&c| c != b'-') {
            prot |= bit;
        }
    }
    let path = f.nth(3).unwrap_or("");
    Some(Mapping {
        start: usize::from_str_radix(s, 16).ok()?,
        end: usize::from_str_radix(e, 16).ok()?,
        prot,
        shared: p.get(3) == Some(&b's'),
        special: matches!(path, "[vdso]" | "[vsyscall]" | "[vvar]" | "[uprobes]"),
    })
}

/// The mapping that holds `addr`, read from `/proc/self/maps` with raw syscalls and
/// fixed buffers (no allocation: the SUD handler runs wherever the app trapped).
pub(crate) fn find_mapping(addr: usize) -> Option<Mapping> {
    let fd = sys::open(c"/proc/self/maps", libc::O_RDONLY | libc::O_CLOEXEC, 0);
    if sys::is_err(fd) {
        return None;
    }
    let mut buf = [0u8; 2048];
    let mut line = [0u8; 160];
    let (mut len, mut skipping) = (0usize, false);
    let mut found = None;
    'read: loop {
        let n = sys::read(fd as i32, &mut buf);
        if n == -(libc::EINTR as i64) {
            continue;
        }
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b == b'\n' {
                if let Some(m) = parse_mapping(&line[..len]) {
                    if (m.start..m.end).contains(&addr) {
                        found = Some(m);
                        break 'read;
                    }
                }
                (len, skipping) = (0, false);
            } else if !skipping {
                if len == line.len() {
                    skipping = true; // a long path: its head says all we need
                } else {
                    line[len] = b;
                    len += 1;
                }
            }
        }
    }
    sys::close(fd as i32);
    found
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

    /// Decoding near the candidates finds exactly what the full sweep finds, including
    /// when a candidate is inside another instruction, and with or without starts.
    #[test]
    fn near_decoding_matches_the_sweep() {
        // f0: mov eax, 0x050f (candidate inside an immediate); syscall; ret
        // f1 (at 8): nop; syscall; mov rbx, [rsp-8] (red zone); ret
        // f2 (at 20): xor eax, eax; syscall; ret
        let code = [
            0xb8, 0x0f, 0x05, 0, 0, 0x0f, 0x05, 0xc3, // f0
            0x90, 0x0f, 0x05, 0x48, 0x8b, 0x5c, 0x24, 0xf8, 0xc3, 0x90, 0x90, 0x90, // f1
            0x31, 0xc0, 0x0f, 0x05, 0xc3, // f2
        ];
        let base = 0x1000;
        let mut full = ScanStats::default();
        let mut sweep = [0usize; BATCH];
        let (n, _) = collect(&code, base, 0, &mut sweep, &mut full);
        for starts in [
            vec![],
            vec![base],
            vec![base, base + 8, base + 20],
            vec![base + 20],
        ] {
            let mut st = ScanStats::default();
            let mut near = [0usize; BATCH];
            let m = collect_near(&code, base, &starts, &mut near, &mut st).unwrap();
            assert_eq!(&near[..m], &sweep[..n], "starts {starts:x?}");
            assert_eq!(st.red_zone_skipped, full.red_zone_skipped);
        }
        assert_eq!(&sweep[..n], &[base + 5, base + 22]);
        assert_eq!(full.red_zone_skipped, 1);
    }

    #[test]
    fn byte_prefilter() {
        assert!(has_syscall_bytes(&[0x90, 0x0f, 0x05]));
        assert!(!has_syscall_bytes(&[0x0f, 0x90, 0x05, 0x0f]));
        assert!(!has_syscall_bytes(&[]));
    }

    #[test]
    fn finds_the_mapping_of_an_address() {
        let here = finds_the_mapping_of_an_address as *const () as usize;
        let m = find_mapping(here).expect("own code is mapped");
        assert!(m.start <= here && here < m.end && m.prot & libc::PROT_EXEC != 0);
        assert!(!m.shared && !m.special);
        assert_eq!(find_mapping(8), None);
        let p = parse_mapping(b"7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]").unwrap();
        assert!(p.special && p.prot == libc::PROT_READ | libc::PROT_EXEC);
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
