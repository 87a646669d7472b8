//! Backends that move Ethernet frames between the stack and the outside: AF_XDP
//! sockets steered by a port-map XDP program, and a TAP device for tests.

pub mod attach;
pub mod bpf;
pub mod monitor;
pub mod netlink;
pub mod portmap;
pub mod program;
pub mod queues;
mod sys;
pub mod tap;
pub mod xsk;

pub use attach::{AttachedIface, LinkChange, StartError};
pub use monitor::LinkMonitor;
pub use portmap::{PortMap, Transport};
pub use program::{AttachMode, XdpCounters, XdpProgram};
pub use queues::QueueCounts;
pub use sys::{ethtool, is_cloexec};
pub use xsk::{RxMode, XskConfig, XskSocket, XskStats};
