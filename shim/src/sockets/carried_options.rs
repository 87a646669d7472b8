//! The socket options a connection keeps when it moves between the stack and the
//! kernel (issue 18) that its TCP state does not hold: the app set them on one socket
//! and relies on them, or reads them back, on the other.

use super::engine::FastSocket;
use super::kernel;
use stack::tcp::{Keepalive, SocketOptions};
use stack::time::Duration;

pub struct CarriedOptions {
    /// TCP_NODELAY, SO_KEEPALIVE, TCP_USER_TIMEOUT, SO_LINGER (the rest as given).
    pub opts: SocketOptions,
    pub rcvtimeo: Option<std::time::Duration>,
    pub sndtimeo: Option<std::time::Duration>,
    /// TCP_KEEPIDLE/INTVL/CNT, kept while SO_KEEPALIVE is off too.
    pub keepalive_params: Keepalive,
}

impl CarriedOptions {
    pub fn of_fast_socket(s: &FastSocket) -> CarriedOptions {
        CarriedOptions {
            opts: s.opts,
            rcvtimeo: s.rcvtimeo,
            sndtimeo: s.sndtimeo,
            keepalive_params: s.keepalive_params,
        }
    }

    /// What kernel socket `fd` has; `defaults` for everything else.
    pub fn of_kernel_socket(fd: i32, defaults: SocketOptions) -> CarriedOptions {
        let int = |level, name| kernel::getsockopt::<i32>(fd, level, name).ok();
        let secs =
            |name| int(libc::IPPROTO_TCP, name).map(|v| Duration::from_secs(v.max(1) as u64));
        let base = Keepalive::default();
        let keepalive_params = Keepalive {
            idle: secs(libc::TCP_KEEPIDLE).unwrap_or(base.idle),
            interval: secs(libc::TCP_KEEPINTVL).unwrap_or(base.interval),
            count: int(libc::IPPROTO_TCP, libc::TCP_KEEPCNT)
                .map_or(base.count, |v| v.max(1) as u32),
        };
        let timeout = |name| {
            // SAFETY: timeval is plain integers; zero is a valid value.
            let zero: libc::timeval = unsafe { std::mem::zeroed() };
            kernel::getsockopt_into(fd, libc::SOL_SOCKET, name, zero)
                .ok()
                .map(|t| {
                    std::time::Duration::new(t.tv_sec.max(0) as u64, t.tv_usec.max(0) as u32 * 1000)
                })
                .filter(|d| !d.is_zero())
        };
        // SAFETY: linger is plain integers; zero is a valid value.
        let zero: libc::linger = unsafe { std::mem::zeroed() };
        let linger = kernel::getsockopt_into(fd, libc::SOL_SOCKET, libc::SO_LINGER, zero)
            .ok()
            .filter(|l| l.l_onoff != 0)
            .map(|l| Duration::from_secs(l.l_linger.max(0) as u64));
        CarriedOptions {
            opts: SocketOptions {
                nodelay: int(libc::IPPROTO_TCP, libc::TCP_NODELAY) == Some(1),
                keepalive: (int(libc::SOL_SOCKET, libc::SO_KEEPALIVE) == Some(1))
                    .then_some(keepalive_params),
                user_timeout: int(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT)
                    .filter(|&ms| ms > 0)
                    .map(|ms| Duration::from_millis(ms as u64)),
                linger,
                // IPV6_TCLASS (an IPv6 socket) or IP_TOS; TCP leaves the ECN bits.
                tos: int(libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
                    .filter(|&c| c > 0)
                    .or(int(libc::SOL_IP, libc::IP_TOS))
                    .map_or(0, |t| t.clamp(0, 255) as u8 & !3),
                ..defaults
            },
            rcvtimeo: timeout(libc::SO_RCVTIMEO),
            sndtimeo: timeout(libc::SO_SNDTIMEO),
            keepalive_params,
        }
    }

    /// Sets them on kernel socket `fd` (best effort: a refused option leaves the
    /// kernel's default, as a refused setsockopt would for the app).
    pub fn apply_to_kernel(&self, fd: i32) {
        let int = |level, name, v: i32| {
            let _ = kernel::setsockopt_int(fd, level, name, v);
        };
        let o = &self.opts;
        int(libc::IPPROTO_TCP, libc::TCP_NODELAY, o.nodelay as i32);
        if o.tos != 0 {
            // One of the two fails on the other family's socket: as the app's would.
            int(libc::SOL_IP, libc::IP_TOS, o.tos as i32);
            int(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, o.tos as i32);
        }
        let k = &self.keepalive_params;
        int(
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            (k.idle.micros() / 1_000_000) as i32,
        );
        int(
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            (k.interval.micros() / 1_000_000) as i32,
        );
        int(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, k.count as i32);
        int(
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            o.keepalive.is_some() as i32,
        );
        if let Some(ut) = o.user_timeout {
            int(
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                ut.millis() as i32,
            );
        }
        if let Some(l) = o.linger {
            let v = libc::linger {
                l_onoff: 1,
                l_linger: (l.micros() / 1_000_000) as i32,
            };
            let _ = kernel::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &v);
        }
        for (name, d) in [
            (libc::SO_RCVTIMEO, self.rcvtimeo),
            (libc::SO_SNDTIMEO, self.sndtimeo),
        ] {
            if d.is_some() {
                let _ = kernel::setsockopt(fd, libc::SOL_SOCKET, name, &kernel::timeval_of(d));
            }
        }
    }
}
