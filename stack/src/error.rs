//! Errors the socket API returns, each naming the Linux errno the shim hands the app.
//!
//! Values are Linux x86-64 errno numbers (asm-generic/errno*.h), spelled out here so the
//! stack needs no libc.

use core::fmt;

/// A socket-call failure, as the kernel would report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// EAGAIN / EWOULDBLOCK: nothing to read, no room to write, or no connection yet.
    WouldBlock,
    /// ECONNREFUSED: the peer answered the SYN (or a UDP datagram) with RST / ICMP
    /// port unreachable.
    ConnectionRefused,
    /// ECONNRESET: the peer reset an established connection.
    ConnectionReset,
    /// ECONNABORTED: the connection was aborted locally (e.g. the SYN queue dropped it).
    ConnectionAborted,
    /// ETIMEDOUT: retransmissions or keepalive probes ran out.
    TimedOut,
    /// EPIPE: write after our side shut down writing, or after the connection closed.
    BrokenPipe,
    /// ENOTCONN: the socket is not connected.
    NotConnected,
    /// EISCONN: connect on an already connected socket.
    AlreadyConnected,
    /// EALREADY: a non-blocking connect is already in progress.
    Already,
    /// EINPROGRESS: a non-blocking connect started.
    InProgress,
    /// EADDRINUSE: the local address/port is taken.
    AddrInUse,
    /// EADDRNOTAVAIL: the local address is not one of the interface's, or no ephemeral
    /// port is free.
    AddrNotAvailable,
    /// EINVAL: an argument or the socket state makes no sense for this call.
    InvalidInput,
    /// EMSGSIZE: a datagram larger than the socket or the path can carry.
    MessageTooLong,
    /// ENOBUFS: no buffer space (pools exhausted).
    NoBufferSpace,
    /// ENOMEM: a pool the stack sized at start is exhausted.
    OutOfMemory,
    /// EHOSTUNREACH: no route / the neighbour never answered.
    HostUnreachable,
    /// ENETUNREACH: the destination is on no attached network and there is no gateway.
    NetworkUnreachable,
    /// EBADF: the handle names no socket.
    BadHandle,
    /// EOPNOTSUPP: the operation is not supported on this socket type.
    NotSupported,
    /// EDESTADDRREQ: send on an unconnected datagram socket without an address.
    DestinationRequired,
    /// EACCES: e.g. a datagram to a broadcast address without `SO_BROADCAST`.
    PermissionDenied,
}

impl Error {
    /// The Linux errno value for this error (positive, as in `errno`).
    pub const fn errno(&self) -> i32 {
        match self {
            Error::WouldBlock => 11,          // EAGAIN
            Error::ConnectionRefused => 111,  // ECONNREFUSED
            Error::ConnectionReset => 104,    // ECONNRESET
            Error::ConnectionAborted => 103,  // ECONNABORTED
            Error::TimedOut => 110,           // ETIMEDOUT
            Error::BrokenPipe => 32,          // EPIPE
            Error::NotConnected => 107,       // ENOTCONN
            Error::AlreadyConnected => 106,   // EISCONN
            Error::Already => 114,            // EALREADY
            Error::InProgress => 115,         // EINPROGRESS
            Error::AddrInUse => 98,           // EADDRINUSE
            Error::AddrNotAvailable => 99,    // EADDRNOTAVAIL
            Error::InvalidInput => 22,        // EINVAL
            Error::MessageTooLong => 90,      // EMSGSIZE
            Error::NoBufferSpace => 105,      // ENOBUFS
            Error::OutOfMemory => 12,         // ENOMEM
            Error::HostUnreachable => 113,    // EHOSTUNREACH
            Error::NetworkUnreachable => 101, // ENETUNREACH
            Error::BadHandle => 9,            // EBADF
            Error::NotSupported => 95,        // EOPNOTSUPP
            Error::DestinationRequired => 89, // EDESTADDRREQ
            Error::PermissionDenied => 13,    // EACCES
        }
    }

    /// The error for a Linux errno value, if the stack uses it.
    pub const fn from_errno(errno: i32) -> Option<Error> {
        Some(match errno {
            11 => Error::WouldBlock,
            111 => Error::ConnectionRefused,
            104 => Error::ConnectionReset,
            103 => Error::ConnectionAborted,
            110 => Error::TimedOut,
            32 => Error::BrokenPipe,
            107 => Error::NotConnected,
            106 => Error::AlreadyConnected,
            114 => Error::Already,
            115 => Error::InProgress,
            98 => Error::AddrInUse,
            99 => Error::AddrNotAvailable,
            22 => Error::InvalidInput,
            90 => Error::MessageTooLong,
            105 => Error::NoBufferSpace,
            12 => Error::OutOfMemory,
            113 => Error::HostUnreachable,
            101 => Error::NetworkUnreachable,
            9 => Error::BadHandle,
            95 => Error::NotSupported,
            89 => Error::DestinationRequired,
            13 => Error::PermissionDenied,
            _ => return None,
        })
    }

    /// The errno's symbolic name, for logs and `fastnet stat`.
    pub const fn name(&self) -> &'static str {
        match self {
            Error::WouldBlock => "EAGAIN",
            Error::ConnectionRefused => "ECONNREFUSED",
            Error::ConnectionReset => "ECONNRESET",
            Error::ConnectionAborted => "ECONNABORTED",
            Error::TimedOut => "ETIMEDOUT",
            Error::BrokenPipe => "EPIPE",
            Error::NotConnected => "ENOTCONN",
            Error::AlreadyConnected => "EISCONN",
            Error::Already => "EALREADY",
            Error::InProgress => "EINPROGRESS",
            Error::AddrInUse => "EADDRINUSE",
            Error::AddrNotAvailable => "EADDRNOTAVAIL",
            Error::InvalidInput => "EINVAL",
            Error::MessageTooLong => "EMSGSIZE",
            Error::NoBufferSpace => "ENOBUFS",
            Error::OutOfMemory => "ENOMEM",
            Error::HostUnreachable => "EHOSTUNREACH",
            Error::NetworkUnreachable => "ENETUNREACH",
            Error::BadHandle => "EBADF",
            Error::NotSupported => "EOPNOTSUPP",
            Error::DestinationRequired => "EDESTADDRREQ",
            Error::PermissionDenied => "EACCES",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.errno())
    }
}

impl std::error::Error for Error {}

/// Shorthand for socket-call results.
pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Error; 22] = [
        Error::WouldBlock,
        Error::ConnectionRefused,
        Error::ConnectionReset,
        Error::ConnectionAborted,
        Error::TimedOut,
        Error::BrokenPipe,
        Error::NotConnected,
        Error::AlreadyConnected,
        Error::Already,
        Error::InProgress,
        Error::AddrInUse,
        Error::AddrNotAvailable,
        Error::InvalidInput,
        Error::MessageTooLong,
        Error::NoBufferSpace,
        Error::OutOfMemory,
        Error::HostUnreachable,
        Error::NetworkUnreachable,
        Error::BadHandle,
        Error::NotSupported,
        Error::DestinationRequired,
        Error::PermissionDenied,
    ];

    #[test]
    fn errno_values_match_linux() {
        assert_eq!(Error::WouldBlock.errno(), 11);
        assert_eq!(Error::ConnectionRefused.errno(), 111);
        assert_eq!(Error::ConnectionReset.errno(), 104);
        assert_eq!(Error::TimedOut.errno(), 110);
        assert_eq!(Error::BrokenPipe.errno(), 32);
        assert_eq!(Error::NotConnected.errno(), 107);
        assert_eq!(Error::AddrInUse.errno(), 98);
        assert_eq!(Error::InvalidInput.errno(), 22);
        assert_eq!(Error::MessageTooLong.errno(), 90);
        assert_eq!(Error::InProgress.errno(), 115);
    }

    #[test]
    fn errno_round_trips_and_is_unique() {
        for (i, e) in ALL.iter().enumerate() {
            assert_eq!(Error::from_errno(e.errno()), Some(*e), "{e}");
            for other in &ALL[i + 1..] {
                assert_ne!(e.errno(), other.errno(), "{e} and {other}");
            }
        }
        assert_eq!(Error::from_errno(0), None);
        assert_eq!(Error::ConnectionReset.to_string(), "ECONNRESET (104)");
    }
}
