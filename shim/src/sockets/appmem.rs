//! The app's memory, as system call arguments point into it.
//!
//! The kernel checks user pointers and answers EFAULT; in-process we cannot check
//! them all without a syscall each. We check what can be checked cheaply (null,
//! length overflow, the page at address 0 which is ours) and otherwise trust the app,
//! as libc's own wrappers around the same buffers do.

use super::kernel::Errno;

/// Lowest address an app buffer may start at: the trampoline page sits below it.
const MIN_ADDR: usize = 0x10000;

fn check(ptr: i64, len: usize) -> Result<usize, Errno> {
    let p = ptr as usize;
    if len == 0 {
        return Ok(p);
    }
    if p < MIN_ADDR || p.checked_add(len).is_none() || len > isize::MAX as usize {
        return Err(libc::EFAULT);
    }
    Ok(p)
}

/// The app's buffer `[ptr, ptr+len)` for reading.
///
/// # Safety
/// `ptr` is what the app passed to a system call that reads `len` bytes there.
pub unsafe fn slice<'a>(ptr: i64, len: usize) -> Result<&'a [u8], Errno> {
    let p = check(ptr, len)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the app handed us this buffer for this call (caller's contract); it is
    // non-null and does not wrap.
    Ok(unsafe { std::slice::from_raw_parts(p as *const u8, len) })
}

/// The app's buffer `[ptr, ptr+len)` for writing.
///
/// # Safety
/// `ptr` is what the app passed to a system call that writes `len` bytes there.
pub unsafe fn slice_mut<'a>(ptr: i64, len: usize) -> Result<&'a mut [u8], Errno> {
    let p = check(ptr, len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as for `slice`; the app does not touch the buffer during its own call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) })
}

/// Reads a plain value (socklen_t, int, struct) the app points at.
///
/// # Safety
/// `ptr` points at a `T` the app passed for this call.
pub unsafe fn read<T: Copy>(ptr: i64) -> Result<T, Errno> {
    let p = check(ptr, std::mem::size_of::<T>())?;
    // SAFETY: caller's contract; unaligned reads are allowed.
    Ok(unsafe { (p as *const T).read_unaligned() })
}

/// Writes a plain value where the app points.
///
/// # Safety
/// `ptr` points at a `T` the app passed for this call to be written.
pub unsafe fn write<T: Copy>(ptr: i64, v: T) -> Result<(), Errno> {
    let p = check(ptr, std::mem::size_of::<T>())?;
    // SAFETY: caller's contract; unaligned writes are allowed.
    unsafe { (p as *mut T).write_unaligned(v) };
    Ok(())
}

/// Writes a socket address into the app's (`addr`, `*addrlen`) pair, as accept,
/// recvfrom, getsockname do; null `addr` writes nothing.
///
/// # Safety
/// `addr`/`lenp` are what the app passed to such a call.
pub unsafe fn write_sockaddr(
    addr: i64,
    lenp: i64,
    a: std::net::SocketAddr,
    v6: bool,
) -> Result<(), Errno> {
    if addr == 0 || lenp == 0 {
        return Ok(());
    }
    // SAFETY: forwarded contract.
    let cap = unsafe { read::<u32>(lenp)? } as usize;
    // SAFETY: the app said `addr` holds `cap` bytes.
    let out = unsafe { slice_mut(addr, cap)? };
    let full = super::sockaddr::write(a, v6, out);
    // SAFETY: forwarded contract.
    unsafe { write::<u32>(lenp, full as u32) }
}

/// The app's iovec array.
///
/// # Safety
/// `iov`/`n` are what the app passed to readv/writev/sendmsg/recvmsg.
pub unsafe fn iovecs<'a>(iov: i64, n: usize) -> Result<&'a [libc::iovec], Errno> {
    if n > libc::UIO_MAXIOV as usize {
        return Err(libc::EINVAL);
    }
    let p = check(iov, n * std::mem::size_of::<libc::iovec>())?;
    if n == 0 {
        return Ok(&[]);
    }
    // SAFETY: caller's contract; iovec arrays are naturally aligned by C callers.
    Ok(unsafe { std::slice::from_raw_parts(p as *const libc::iovec, n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_low_pointers_are_efault() {
        // SAFETY: these calls must fail before touching memory.
        unsafe {
            assert_eq!(slice(0, 4).err(), Some(libc::EFAULT));
            assert_eq!(slice(8, 4).err(), Some(libc::EFAULT));
            assert_eq!(read::<u32>(0).err(), Some(libc::EFAULT));
            assert_eq!(slice(-1, 4).err(), Some(libc::EFAULT), "wraps");
            assert!(slice(0, 0).unwrap().is_empty());
        }
    }

    #[test]
    fn real_buffers_round_trip() {
        let mut buf = [0u8; 32];
        let mut len: u32 = 32;
        let a = std::net::SocketAddr::new(std::net::Ipv4Addr::new(10, 77, 0, 2).into(), 9);
        // SAFETY: live local buffers of the stated sizes.
        unsafe {
            write_sockaddr(
                buf.as_mut_ptr() as i64,
                &mut len as *mut u32 as i64,
                a,
                false,
            )
            .unwrap();
        }
        assert_eq!(len, 16);
        assert_eq!(&buf[4..8], &[10, 77, 0, 2]);
    }
}
