//! Backends that move Ethernet frames between the stack and the outside: AF_XDP
//! sockets steered by a port-map XDP program, and a TAP device for tests.

pub mod bpf;
pub mod netlink;
pub mod portmap;
pub mod program;
mod sys;
pub mod tap;
pub mod xsk;

pub use portmap::{PortMap, Transport};
pub use program::{AttachMode, XdpCounters, XdpProgram};
pub use sys::is_cloexec;
pub use xsk::{RxMode, XskConfig, XskSocket, XskStats};
