//! Multipath TCP (RFC 8684), sans-IO like the rest of the stack.
//!
//! - [`crypto`]: keys, tokens, initial data sequence numbers and the HMACs of MP_JOIN and
//!   ADD_ADDR (§3.1, §3.2, §3.4.1).
//! - [`conn`]: the connection over a single subflow: the MP_CAPABLE handshake, fallback
//!   to TCP, DSS mappings and data ACKs, DATA_FIN.
//! - [`segment`]: a TCP segment with the connection's option added.
//!
//! The option's wire format is [`crate::wire::mptcp`].

pub mod conn;
pub mod crypto;
pub mod segment;
