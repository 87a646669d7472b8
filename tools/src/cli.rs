//! The `fastnet` command line (clap definitions), shared by the binary and by the
//! generator of man pages and shell completions.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fastnet",
    version,
    about = "Run unmodified Linux programs over a user-space TCP/IP stack on AF_XDP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a command with libfastnet.so (next to this binary) preloaded.
    Run {
        /// Interface for the fast path (FASTNET_IFACE).
        #[arg(long)]
        iface: Option<String>,
        /// Loopback (FASTNET_LOOPBACK): `off` leaves it to the kernel, `process` carries
        /// it between this process's own sockets on its stack, `host` also with other
        /// fastnet processes in host mode (TCP, through shared memory).
        #[arg(long, value_parser = ["off", "process", "host"])]
        loopback: Option<String>,
        /// When the fast path cannot start on --iface: `none` exits non-zero before the
        /// program starts (default), `kernel` runs it with every socket on the kernel
        /// (FASTNET_FALLBACK).
        #[arg(long, value_enum)]
        fallback: Option<Fallback>,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Count the system calls of a command and its children in-process (like strace -c -f).
    Trace {
        /// Print the table of counts at exit (the only mode).
        #[arg(short = 'c')]
        count: bool,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Check whether fastnet can accelerate here; exit 0 only if it can.
    Doctor {
        /// Also check this interface (XDP modes, zero-copy, queues, MTU).
        #[arg(long)]
        iface: Option<String>,
    },
    /// Show live counters of running fastnet processes.
    Stat {
        /// Only this process (default: every fastnet process).
        pid: Option<u32>,
        /// Print again every interval, with rates.
        #[arg(long)]
        watch: bool,
        /// Interval for --watch, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Show zero counters too.
        #[arg(long)]
        all: bool,
        /// Print one JSON object per process and line (fields: docs/METRICS.md).
        #[arg(long)]
        json: bool,
    },
    /// Move a running fastnet process's TCP connections between its stack and the
    /// kernel (TCP repair), through its control socket; prints what moved and why the
    /// others stayed.
    Handoff {
        /// The process (as `fastnet stat` lists it).
        #[arg(long)]
        pid: u32,
        /// Only connections with this local or remote port.
        #[arg(long)]
        port: Option<u16>,
        /// Where the connections go: `kernel` (its fast-path connections become kernel
        /// sockets) or `stack` (its kernel connections on the interface come in).
        #[arg(long, value_parser = ["kernel", "stack"])]
        to: String,
    },
    /// Write man pages and shell completions into a directory (for packaging).
    #[command(hide = true)]
    GenDocs {
        /// Output directory (man/ and completions/ are made in it).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Serve the counters of every fastnet process to Prometheus on /metrics.
    Exporter {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:9477")]
        listen: String,
    },
    /// Capture the fast-path frames of a running fastnet process to a pcap file.
    Pcap {
        /// The process (default: the only fastnet process running).
        pid: Option<u32>,
        /// The pcap file to write.
        #[arg(short = 'w', value_name = "FILE")]
        write: std::path::PathBuf,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Bytes kept of each frame.
        #[arg(short = 's', long, default_value_t = fastnet_capture::MAX_SNAPLEN)]
        snaplen: u32,
        /// Size of the shared ring in MiB (frames beyond it are counted as dropped).
        #[arg(long, default_value_t = 16)]
        buffer_mb: u64,
    },
    /// Create or remove the two-namespace test topology.
    Netns {
        #[command(subcommand)]
        action: NetnsCmd,
    },
}

#[derive(Subcommand)]
pub enum NetnsCmd {
    /// Create a topology; prints shell variables (SERVER_NS, CLIENT_IF, ...).
    Up {
        /// Tear the topology down when this process exits (default: fastnet's parent).
        #[arg(long)]
        owner: Option<u32>,
        /// Queues per veth end: `default` (a plain `ip link add`: the kernel's default
        /// counts, one in use), `N` (N allocated, N in use) or `MofN` (N allocated,
        /// M in use after `ethtool -L`).
        #[arg(long, default_value = "default")]
        queues: crate::netns::QueueLayout,
        /// MTU of both ends.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
    },
    /// Remove the topology with this tag.
    Down { tag: String },
    /// List topologies and whether their owner is alive.
    List,
    /// Remove topologies whose owner has exited.
    Gc,
}

/// What `fastnet run` does when the fast path cannot start on the named interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// Exit non-zero before the program starts, with the reason and the fix.
    None,
    /// Run the program anyway, every socket on the kernel (`fastnet stat` says why).
    Kernel,
}

impl Fallback {
    /// `--fallback`, else FASTNET_FALLBACK, else `none`.
    pub fn resolve(flag: Option<Fallback>) -> anyhow::Result<Fallback> {
        if let Some(f) = flag {
            return Ok(f);
        }
        match std::env::var("FASTNET_FALLBACK").ok().as_deref() {
            None | Some("") | Some("none") => Ok(Fallback::None),
            Some("kernel") => Ok(Fallback::Kernel),
            Some(other) => anyhow::bail!("FASTNET_FALLBACK={other:?}: use `none` or `kernel`"),
        }
    }
}
