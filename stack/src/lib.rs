//! fastnet's TCP/IP stack: sans-IO.
//!
//! Frames and time go in ([`iface::Interface::receive`]), frames and socket events come
//! out ([`iface::Interface::dispatch`] into a [`device::Device`]). The stack has no
//! threads, makes no syscalls and reads no clock: the host passes [`time::Instant`]s.
//! The same inputs therefore always give the same outputs, which is what lets the
//! simulated-network tests be exhaustive and reproducible.
//!
//! Layers, as in smoltcp:
//! - [`wire`]: packet views with bounds-checked accessors, and `Repr`s to parse/emit.
//! - [`iface`]: Ethernet, ARP and neighbours, IPv4, ICMP echo, UDP sockets; hands TCP
//!   segments to [`tcp`] and emits what it produces.
//! - [`tcp`]: the TCP state machine, congestion control, timers and the socket API.

pub mod device;
pub mod error;
pub mod iface;
pub mod ip_tx;
pub mod mptcp;
pub mod sim;
pub mod socket;
pub mod tcp;
pub mod time;
pub mod wire;
