//! The page at address 0 that every rewritten `call *%rax` lands in.
//!
//! `%rax` holds the syscall number, so the call lands at byte `nr` of the page. The page
//! is a sled of `0x3d` bytes: from any offset the CPU decodes `3d 3d 3d 3d 3d`
//! (`cmp eax, imm32`), five bytes at a time, which changes only the flags — a fifth of
//! the instructions a nop sled executes. Four `nop`s absorb the last, partial `cmp`, then
//! `movabs r11, entry; jmp r11` (r11 is clobbered by `syscall` anyway).

use crate::sys;

const PAGE: usize = 4096;
/// The tail after the sled: 4 nops, movabs r11 (10 bytes), jmp r11 (3 bytes).
const TAIL: usize = 4 + 10 + 3;
/// Numbers below this land in the sled.
pub(crate) const SLED_LEN: usize = PAGE - TAIL;

/// Builds the page contents for a hook entry at `entry`.
pub(crate) fn page_bytes(entry: u64) -> [u8; PAGE] {
    let mut page = [0x3du8; PAGE];
    let tail = &mut page[SLED_LEN..];
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

    /// From every landing offset the sled decodes to flag-only `cmp`s and `nop`s that
    /// end exactly at the `movabs r11, entry; jmp r11` tail.
    #[test]
    fn every_offset_reaches_the_jump() {
        let entry = 0x7fff_1234_5678u64;
        let page = page_bytes(entry);
        for start in 0..SLED_LEN {
            let mut d = Decoder::with_ip(64, &page[start..], start as u64, DecoderOptions::NONE);
            let mut steps = 0;
            loop {
                let i = d.decode();
                steps += 1;
                match i.code() {
                    Code::Cmp_EAX_imm32 | Code::Nopd => continue,
                    Code::Mov_r64_imm64 => {
                        assert_eq!(i.ip() as usize, SLED_LEN + 4, "from offset {start}");
                        assert_eq!(i.immediate64(), entry);
                        let j = d.decode();
                        assert_eq!(j.code(), Code::Jmp_rm64);
                        break;
                    }
                    other => panic!("offset {start}: unexpected {other:?} at {:#x}", i.ip()),
                }
            }
            assert!(steps <= (SLED_LEN - start) / 5 + 6);
        }
    }
}
