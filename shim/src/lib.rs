//! libfastnet.so: the preloaded shim that hooks syscalls and routes sockets to the user-space stack
pub mod sockets;
