//! What the layer and its sockets are configured with: the layer-wide [`TcpConfig`],
//! per-socket [`SocketOptions`] (setsockopt), keepalive parameters, shutdown modes.

use crate::time::Duration;

use super::cc::CongestionAlgorithm;

/// Keepalive parameters (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Default for Keepalive {
    /// Linux defaults: 2 h idle, 75 s interval, 9 probes.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            count: 9,
        }
    }
}

/// Per-socket options (setsockopt). Listeners pass theirs to accepted connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    pub rcvbuf: usize,
    pub sndbuf: usize,
    /// TCP_NODELAY: disable Nagle.
    pub nodelay: bool,
    /// SO_KEEPALIVE with its parameters.
    pub keepalive: Option<Keepalive>,
    /// SO_LINGER: `Some(0)` makes close send RST; other values are kept for the shim.
    pub linger: Option<Duration>,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the
    /// connection fails with ETIMEDOUT (instead of counting retransmissions).
    pub user_timeout: Option<Duration>,
    /// TCP_DEFER_ACCEPT (listeners): a connection is handed to `accept` only once data
    /// (or a FIN) arrived, or this long after the handshake.
    pub defer_accept: Option<Duration>,
    /// TCP_QUICKACK as last set (see [`TcpLayer::quick_ack`]; Linux's quick-ACK mode
    /// falls back to delayed ACKs, as this stack always does).
    pub quickack: bool,
    /// IP_TOS / IPV6_TCLASS: the TOS byte (IPv4) or traffic class (IPv6) of the
    /// connection's segments.
    pub tos: u8,
}

/// Layer-wide configuration, fixed at start.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Socket slots (listeners + connections, incl. TIME-WAIT): the pool size.
    pub max_sockets: usize,
    /// Default buffer sizes (bytes) for new sockets.
    pub rcvbuf: usize,
    pub sndbuf: usize,
    /// Upper bound of the MSS we advertise (the path gives the real one).
    pub mss: u16,
    pub window_scaling: bool,
    pub timestamps: bool,
    pub sack: bool,
    pub congestion: CongestionAlgorithm,
    pub initial_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    pub delayed_ack: Duration,
    /// Maximum segment lifetime: TIME-WAIT lasts 2 × MSL.
    pub msl: Duration,
    /// How long an orphaned connection may sit in FIN-WAIT-2.
    pub fin_wait2_timeout: Duration,
    pub syn_retries: u32,
    pub synack_retries: u32,
    /// Retransmissions of data before the connection fails with ETIMEDOUT.
    pub max_retries: u32,
    /// Inclusive range for ephemeral local ports.
    pub ephemeral_ports: (u16, u16),
    /// Answer SYNs with cookies when a listener's SYN queue (or the pool) is full.
    pub syn_cookies: bool,
    /// When the pool is full, a new connection's SYN is neither answered nor dropped
    /// silently: it is reported ([`super::TcpLayer::take_overflow`]) for the host to
    /// send the connection elsewhere (fastnet: to the kernel, which takes the SYN's
    /// retransmission). Cookies then only answer a full SYN queue.
    pub overflow_to_host: bool,
    /// RFC 6528 secret for ISNs and cookies; `None` derives one from the seed.
    pub isn_secret: Option<[u64; 2]>,
    /// Challenge ACKs per connection per second (RFC 5961 7).
    pub challenge_ack_limit: u32,
    /// Room for RSTs and cookie SYN-ACKs waiting for `dispatch`.
    pub control_queue: usize,
    /// Payload bytes one connection sends per `dispatch` at most (whole segments): the
    /// rest goes at the next one, after the other connections (`poll_at` says now).
    /// A bulk sender's data then moves through the buffers, frames and the receiver in
    /// pieces that stay in the CPU's cache, and one connection cannot fill a dispatch
    /// (and the device's ring) while others wait.
    pub tx_burst: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_sockets: 1024,
            rcvbuf: 256 * 1024,
            sndbuf: 256 * 1024,
            mss: 65495,
            window_scaling: true,
            timestamps: true,
            sack: true,
            congestion: CongestionAlgorithm::Cubic,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            delayed_ack: Duration::from_millis(40),
            msl: Duration::from_secs(30),
            fin_wait2_timeout: Duration::from_secs(60),
            syn_retries: 6,
            synack_retries: 5,
            max_retries: 15,
            ephemeral_ports: (32768, 60999),
            syn_cookies: true,
            overflow_to_host: false,
            isn_secret: None,
            challenge_ack_limit: 10,
            control_queue: 256,
            tx_burst: 64 * 1024,
        }
    }
}

impl TcpConfig {
    /// Options a new socket starts with (buffer sizes from this config).
    pub fn default_socket_options(&self) -> SocketOptions {
        self.default_options()
    }

    pub(super) fn default_options(&self) -> SocketOptions {
        SocketOptions {
            rcvbuf: self.rcvbuf,
            sndbuf: self.sndbuf,
            nodelay: false,
            keepalive: None,
            linger: None,
            user_timeout: None,
            defer_accept: None,
            quickack: true,
            tos: 0,
        }
    }
}

/// How to shut a connection down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}
