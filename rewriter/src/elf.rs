//! Where the code is: the executable sections of an ELF file, so that the decoder starts
//! at real instruction boundaries and never sweeps over data that shares an executable
//! segment (`.rodata`, `.eh_frame` in objects linked without `-z separate-code`).
//!
//! Reads the headers with `pread` into fixed buffers: usable on the hook path (a library
//! being mapped by `dlopen`), no allocation.

use crate::sys;

/// Most executable sections one mapping may hold before we fall back to sweeping it all.
pub(crate) const MAX_RANGES: usize = 16;

const SHF_EXECINSTR: u64 = 0x4;
const SHT_NOBITS: u32 = 8;
const SHDR_SIZE: usize = 64;

fn pread(fd: i32, buf: &mut [u8], off: u64) -> bool {
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe {
        sys::syscall6(
            libc::SYS_pread64,
            fd as i64,
            buf.as_mut_ptr() as i64,
            buf.len() as i64,
            off as i64,
            0,
            0,
        )
    };
    n == buf.len() as i64
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The executable sections of the ELF file open as `fd`, as absolute address ranges
/// inside the mapping `[map_start, map_start + map_len)` that maps the file from offset
/// `map_off`. `None` when the file is not a 64-bit little-endian ELF with section
/// headers, or has too many: then the whole mapping is code as far as we know.
pub(crate) fn exec_ranges(
    fd: i32,
    map_off: u64,
    map_start: usize,
    map_len: usize,
    out: &mut [(usize, usize); MAX_RANGES],
) -> Option<usize> {
    let mut ehdr = [0u8; 64];
    if !pread(fd, &mut ehdr, 0) || ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None;
    }
    let shoff = u64_at(&ehdr, 0x28);
    let shentsize = u16_at(&ehdr, 0x3a) as usize;
    let shnum = u16_at(&ehdr, 0x3c) as usize;
    if shoff == 0 || shnum == 0 || shentsize != SHDR_SIZE {
        return None;
    }
    let map_end = map_off + map_len as u64;
    let mut n = 0;
    let mut buf = [0u8; SHDR_SIZE * 32];
    let mut i = 0;
    while i < shnum {
        let count = (shnum - i).min(32);
        let chunk = &mut buf[..count * SHDR_SIZE];
        if !pread(fd, chunk, shoff + (i * SHDR_SIZE) as u64) {
            return None;
        }
        for sh in chunk.chunks_exact(SHDR_SIZE) {
            let (ty, flags) = (u32_at(sh, 4), u64_at(sh, 8));
            let (off, size) = (u64_at(sh, 24), u64_at(sh, 32));
            if flags & SHF_EXECINSTR == 0 || ty == SHT_NOBITS || size == 0 {
                continue;
            }
            let (s, e) = (off.max(map_off), (off + size).min(map_end));
            if s >= e {
                continue;
            }
            if n == MAX_RANGES {
                return None;
            }
            out[n] = (
                map_start + (s - map_off) as usize,
                map_start + (e - map_off) as usize,
            );
            n += 1;
        }
        i += count;
    }
    Some(n)
}

/// Function entry points (from `.symtab` and `.dynsym`) inside `code` ranges of the
/// mapping, sorted: known instruction boundaries from which decoding may start. Install
/// time only (allocates).
pub(crate) fn function_starts(
    fd: i32,
    map_off: u64,
    map_start: usize,
    code: &[(usize, usize)],
) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut ehdr = [0u8; 64];
    if !pread(fd, &mut ehdr, 0) || ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return starts;
    }
    let shoff = u64_at(&ehdr, 0x28);
    let shnum = u16_at(&ehdr, 0x3c) as usize;
    if u16_at(&ehdr, 0x3a) as usize != SHDR_SIZE || shnum == 0 || shnum > 4096 {
        return starts;
    }
    let mut shdrs = vec![0u8; shnum * SHDR_SIZE];
    if !pread(fd, &mut shdrs, shoff) {
        return starts;
    }
    let sh = |i: usize| &shdrs[i * SHDR_SIZE..(i + 1) * SHDR_SIZE];
    const SHT_SYMTAB: u32 = 2;
    const SHT_DYNSYM: u32 = 11;
    for i in 0..shnum {
        let ty = u32_at(sh(i), 4);
        if ty != SHT_SYMTAB && ty != SHT_DYNSYM {
            continue;
        }
        let (off, size) = (u64_at(sh(i), 24), u64_at(sh(i), 32));
        if size > 64 << 20 {
            continue;
        }
        let mut syms = vec![0u8; size as usize];
        if !pread(fd, &mut syms, off) {
            continue;
        }
        for sym in syms.chunks_exact(24) {
            let kind = sym[4] & 0xf; // STT_FUNC or STT_GNU_IFUNC
            let shndx = u16_at(sym, 6) as usize;
            let value = u64_at(sym, 8);
            if !(kind == 2 || kind == 10) || shndx == 0 || shndx >= shnum {
                continue;
            }
            // Virtual address -> file offset through the symbol's section -> memory.
            let (sec_addr, sec_off) = (u64_at(sh(shndx), 16), u64_at(sh(shndx), 24));
            let Some(file_off) = value.checked_sub(sec_addr).map(|d| d + sec_off) else {
                continue;
            };
            let Some(rel) = file_off.checked_sub(map_off) else {
                continue;
            };
            let addr = map_start + rel as usize;
            if code.iter().any(|&(s, e)| (s..e).contains(&addr)) {
                starts.push(addr);
            }
        }
    }
    // Every function with unwind information, also the static ones a stripped library
    // has no symbol for: the sorted table of `.eh_frame_hdr`.
    let exec: Vec<(u64, u64, u64)> = (0..shnum)
        .map(sh)
        .filter(|h| u64_at(h, 8) & SHF_EXECINSTR != 0 && u32_at(h, 4) != SHT_NOBITS)
        .map(|h| (u64_at(h, 16), u64_at(h, 32), u64_at(h, 24)))
        .collect();
    for vaddr in unwind_starts(fd, &ehdr) {
        let Some(&(addr, _, off)) = exec
            .iter()
            .find(|&&(a, size, _)| (a..a + size).contains(&vaddr))
        else {
            continue;
        };
        let Some(rel) = (vaddr - addr + off).checked_sub(map_off) else {
            continue;
        };
        let addr = map_start + rel as usize;
        if code.iter().any(|&(s, e)| (s..e).contains(&addr)) {
            starts.push(addr);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// The start addresses (virtual, as linked) of the functions listed in the binary search
/// table of the `PT_GNU_EH_FRAME` segment (`.eh_frame_hdr`). Empty when there is none or
/// its encoding is not the one every GNU toolchain writes (count as udata4, table as
/// datarel sdata4).
fn unwind_starts(fd: i32, ehdr: &[u8; 64]) -> Vec<u64> {
    const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
    const PHDR_SIZE: usize = 56;
    const DW_EH_PE_UDATA4: u8 = 0x03;
    const DW_EH_PE_DATAREL_SDATA4: u8 = 0x3b;
    let (phoff, phnum) = (u64_at(ehdr, 0x20), u16_at(ehdr, 0x38) as usize);
    if u16_at(ehdr, 0x36) as usize != PHDR_SIZE || phnum == 0 || phnum > 256 {
        return Vec::new();
    }
    let mut phdrs = vec![0u8; phnum * PHDR_SIZE];
    if !pread(fd, &mut phdrs, phoff) {
        return Vec::new();
    }
    let Some(ph) = phdrs
        .chunks_exact(PHDR_SIZE)
        .find(|p| u32_at(p, 0) == PT_GNU_EH_FRAME)
    else {
        return Vec::new();
    };
    let (off, vaddr) = (u64_at(ph, 8), u64_at(ph, 16));
    // version, eh_frame_ptr encoding, fde_count encoding, table encoding
    let mut head = [0u8; 16];
    if !pread(fd, &mut head, off) || head[0] != 1 {
        return Vec::new();
    }
    let ptr_len = match head[1] & 0x0f {
        0x02 | 0x0a => 2,
        0x03 | 0x0b => 4,
        0x00 | 0x04 | 0x0c => 8,
        _ => return Vec::new(),
    };
    if head[2] != DW_EH_PE_UDATA4 || head[3] != DW_EH_PE_DATAREL_SDATA4 {
        return Vec::new();
    }
    let count = u32_at(&head, 4 + ptr_len) as usize;
    if count > 1 << 22 {
        return Vec::new();
    }
    let mut table = vec![0u8; count * 8];
    if !pread(fd, &mut table, off + 4 + ptr_len as u64 + 4) {
        return Vec::new();
    }
    table
        .chunks_exact(8)
        .map(|e| vaddr.wrapping_add(u32_at(e, 0) as i32 as i64 as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_again(path: &std::ffi::CStr) -> i32 {
        sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC, 0) as i32
    }

    /// libc's own sections: .text etc. lie inside its r-x mapping, and the headers at
    /// the start of the file are not code.
    #[test]
    fn finds_code_sections_of_libc() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let m = crate::scan::parse_maps(&maps)
            .into_iter()
            .find(|m| m.prot & libc::PROT_EXEC != 0 && m.path.contains("libc.so"))
            .expect("libc mapped executable");
        let path = std::ffi::CString::new(m.path.clone()).unwrap();
        let fd = sys::open(&path, libc::O_RDONLY | libc::O_CLOEXEC, 0) as i32;
        assert!(fd >= 0);
        let mut out = [(0, 0); MAX_RANGES];
        let n = exec_ranges(fd, m.offset, m.start, m.end - m.start, &mut out).unwrap();
        sys::close(fd);
        assert!(n >= 1, "no code sections");
        let code: usize = out[..n].iter().map(|(s, e)| e - s).sum();
        assert!(code > 1 << 20, "libc has over 1 MiB of code: {code}");
        for &(s, e) in &out[..n] {
            assert!(m.start <= s && s < e && e <= m.end);
        }
        // Function starts: inside the code, sorted, and `syscall` wrappers among them.
        let starts = function_starts(fd_again(&path), m.offset, m.start, &out[..n]);
        assert!(starts.len() > 1000, "libc exports thousands of functions");
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        assert!(starts
            .iter()
            .all(|&a| out[..n].iter().any(|&(s, e)| (s..e).contains(&a))));
        let getppid = libc::getppid as *const () as usize;
        assert!(
            starts.binary_search(&getppid).is_ok(),
            "getppid is a function start"
        );
        // The unwind table names the static functions too, which a stripped libc has no
        // symbol for: more starts than exported functions, sorted as linked.
        let mut ehdr = [0u8; 64];
        let fd = fd_again(&path);
        assert!(pread(fd, &mut ehdr, 0));
        let unwind = unwind_starts(fd, &ehdr);
        sys::close(fd);
        assert!(unwind.len() > 1000, "{} unwind entries", unwind.len());
        assert!(unwind.windows(2).all(|w| w[0] <= w[1]));
        // A file that is not ELF: no answer, the caller sweeps the whole mapping.
        let fd = sys::open(c"/proc/self/maps", libc::O_RDONLY, 0) as i32;
        assert!(exec_ranges(fd, 0, 0x1000, 0x1000, &mut out).is_none());
        sys::close(fd);
    }
}
