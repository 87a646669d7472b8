//! The socket layer: which fds are fast-path sockets, and the configuration that
//! decides what takes the fast path.

pub mod config;
pub mod epoll;
pub mod fdtable;
pub mod netdev;
pub mod sockaddr;
