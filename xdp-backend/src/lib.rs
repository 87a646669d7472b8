//! Backends that move Ethernet frames between the stack and the outside: AF_XDP
//! sockets steered by a port-map XDP program, and a TAP device for tests.

pub mod attach;
pub mod bpf;
pub mod family;
pub mod flowmap;
pub mod monitor;
pub mod netlink;
pub mod portmap;
pub mod program;
pub mod queues;
mod ring;
mod sys;
pub mod tap;
pub mod xsk;

pub use attach::{AttachedIface, LinkChange, StartError};
pub use family::FrameCensus;
pub use flowmap::{FlowKey, FlowMap};
pub use monitor::LinkMonitor;
pub use portmap::{group_hash, PortEntry, PortMap, Transport, GROUP_MAX};
pub use program::{AttachMode, XdpCounters, XdpProgram, KERNEL_SLOT, MAX_QUEUES, MAX_SLOTS};
pub use queues::QueueCounts;
pub use sys::{ethtool, is_cloexec, set_fd_floor};
pub use xsk::{RxMode, XskConfig, XskSocket, XskStats};
