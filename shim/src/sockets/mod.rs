//! The socket layer: socket calls on the fast-path interface go to the in-process
//! stack; everything else stays the kernel's.
//!
//! - `calls`: which calls come here, and the life of a socket
//! - `data`, `options`, `readiness`: data transfer, options/fcntl/dup, epoll/poll/select
//! - `engine`: the stack, the interface and the fd table behind one lock
//! - `global`: start-up, logging, blocking
//! - `hostlo`: loopback between two fastnet processes through shared memory
//! - `cmsg`: ancillary data of UDP sockets (IP_PKTINFO, SO_TIMESTAMP, ...)
//! - `fdtable`, `epoll`, `sockaddr`, `appmem`, `kernel`, `netdev`, `config`: the parts

pub mod appmem;
pub mod calls;
pub mod cmsg;
pub mod config;
pub mod data;
pub mod engine;
pub mod epoll;
pub mod family;
pub mod fdtable;
pub mod global;
pub mod handoff;
pub mod hostlo;
pub mod kernel;
pub mod lock;
pub mod mailbox;
pub mod netdev;
pub mod options;
pub mod readiness;
pub mod relay;
pub mod signals;
pub mod sockaddr;

pub use calls::handle;
pub use global::{exit_work, init};
