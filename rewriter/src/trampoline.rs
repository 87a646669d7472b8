//! The page at address 0 that every rewritten `call *%rax` lands in.
//!
//! `%rax` holds the syscall number, so the call lands at byte `nr` of the page, and the
//! code from every such offset must reach the hook entry touching nothing but flags.
//! zpoline uses a nop sled: a call walks up to ~500 nops. Ours executes a handful of
//! jumps instead. Bytes `0..SLED_LEN` alternate `eb 4f`:
//! - landing on an even offset decodes `eb 4f`, `jmp +0x4f`, which lands on an odd one;
//! - landing on an odd offset decodes `4f eb 4f`, a REX prefix on the same `jmp`,
//!   which jumps 82 bytes on, to another odd offset.
//!
//! So every call hops forward ~81 bytes at a time (getppid, 110: five jumps) into a pad of
//! `0x3d` bytes, which decode from any offset as `cmp eax, 0x3d3d3d3d` (five bytes, flags
//! only; a preceding `4f` makes it `cmp rax, imm32`). Four `nop`s absorb the last,
//! partial `cmp`, then `movabs r11, entry; jmp r11` (r11 is clobbered by `syscall` anyway).

use crate::sys;

const PAGE: usize = 4096;
/// Numbers below this land in the jump sled (every number the hook classifies).
pub(crate) const SLED_LEN: usize = crate::filter::MAX_SYSCALL;
/// The jump's displacement byte, also a REX prefix: the longest hop of the 0x4X range.
const HOP: u8 = 0x4f;
/// The `cmp` pad after the sled: longer than the longest hop (3 + 0x4f) plus a `cmp`.
const PAD_LEN: usize = 3 + HOP as usize + 5 + 1;
/// Offset of the 4 nops before the tail (movabs r11, imm64; jmp r11).
const TAIL_AT: usize = SLED_LEN + PAD_LEN;

/// Builds the page contents for a hook entry at `entry`.
pub(crate) fn page_bytes(entry: u64) -> [u8; PAGE] {
    let mut page = [0xccu8; PAGE]; // int3 beyond the tail
    for (i, b) in page[..SLED_LEN].iter_mut().enumerate() {
        *b = if i % 2 == 0 { 0xeb } else { HOP };
    }
    page[SLED_LEN..TAIL_AT].fill(0x3d);
    let tail = &mut page[TAIL_AT..TAIL_AT + 17];
    tail[..4].copy_from_slice(&[0x90; 4]);
    tail[4..6].copy_from_slice(&[0x49, 0xbb]);
    tail[6..14].copy_from_slice(&entry.to_le_bytes());
    tail[14..17].copy_from_slice(&[0x41, 0xff, 0xe3]);
    page
}

/// Why the page could not be mapped.
#[derive(Debug)]
pub(crate) enum MapError {
    /// mmap_min_addr forbids address 0 for this process.
    Denied,
    /// Something already lives at address 0.
    Occupied,
    Other(&'static str, i64),
}

/// Maps the trampoline page at address 0, executable only, jumping to `entry`.
///
/// The page is filled in a mapping elsewhere and moved to 0 with `mremap`, so nothing
/// ever writes through a null pointer.
pub(crate) fn map_at_zero(entry: u64) -> Result<(), MapError> {
    let staging = sys::mmap(
        0,
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if sys::is_err(staging) {
        return Err(MapError::Other("mmap", staging));
    }
    let bytes = page_bytes(entry);
    // SAFETY: `staging` is a fresh private page of PAGE writable bytes that we own.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), staging as *mut u8, PAGE) };
    // MREMAP_FIXED would silently replace a mapping at 0; refuse if one exists.
    if occupied_at_zero() {
        // SAFETY: the staging page is ours and unused.
        unsafe { sys::munmap(staging as usize, PAGE) };
        return Err(MapError::Occupied);
    }
    // SAFETY: moves our own staging page to address 0, which nothing uses (checked above).
    let moved = unsafe {
        sys::syscall6(
            libc::SYS_mremap,
            staging,
            PAGE as i64,
            PAGE as i64,
            (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as i64,
            0,
            0,
        )
    };
    if moved != 0 {
        // SAFETY: the staging page is still ours when the move failed.
        unsafe { sys::munmap(staging as usize, PAGE) };
        return Err(
            if moved == -(libc::EPERM as i64) || moved == -(libc::EACCES as i64) {
                MapError::Denied
            } else {
                MapError::Other("mremap", moved)
            },
        );
    }
    // SAFETY: the page at 0 is ours; execute-only where the CPU allows it.
    let r = unsafe { sys::mprotect(0, PAGE, libc::PROT_EXEC) };
    if sys::is_err(r) {
        return Err(MapError::Other("mprotect", r));
    }
    Ok(())
}

/// True when some mapping already covers address 0 (probing with `mincore`, which
/// fails with ENOMEM for unmapped memory and reads nothing).
fn occupied_at_zero() -> bool {
    let mut vec = 0u8;
    // SAFETY: mincore writes one byte into `vec` for the one page asked about.
    let r = unsafe {
        sys::syscall3(
            libc::SYS_mincore,
            0,
            PAGE as i64,
            &mut vec as *mut u8 as i64,
        )
    };
    r != -(libc::ENOMEM as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions};

    /// From every landing offset the page executes only forward jumps, flag-only `cmp`s
    /// and `nop`s, and ends exactly at the `movabs r11, entry; jmp r11` tail, in few steps.
    #[test]
    fn every_offset_reaches_the_jump() {
        let entry = 0x7fff_1234_5678u64;
        let page = page_bytes(entry);
        let mut worst = 0;
        for start in 0..TAIL_AT {
            let mut ip = start;
            let mut steps = 0;
            loop {
                let mut d = Decoder::with_ip(64, &page[ip..], ip as u64, DecoderOptions::NONE);
                let i = d.decode();
                steps += 1;
                match i.code() {
                    Code::Jmp_rel8_64 => {
                        assert!(i.near_branch64() as usize > ip, "forward only");
                        ip = i.near_branch64() as usize;
                    }
                    Code::Cmp_EAX_imm32 | Code::Cmp_RAX_imm32 | Code::Nopd => {
                        ip = i.next_ip() as usize
                    }
                    Code::Mov_r64_imm64 => {
                        assert_eq!(ip, TAIL_AT + 4, "from offset {start}");
                        assert_eq!(i.immediate64(), entry);
                        assert_eq!(d.decode().code(), Code::Jmp_rm64);
                        break;
                    }
                    other => panic!("offset {start}: unexpected {other:?} at {ip:#x}"),
                }
            }
            worst = worst.max(steps);
        }
        // At most 7 hops over the sled, 18 cmps in the pad, 4 nops, the movabs.
        assert!(worst <= 30, "worst path {worst} instructions");
    }
}
