//! The `fastnet` command.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fastnet_tools::netns;

mod run;
mod trace;

#[derive(Parser)]
#[command(
    name = "fastnet",
    version,
    about = "Run unmodified Linux programs over a user-space TCP/IP stack on AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
        fallback: Option<run::Fallback>,
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
enum NetnsCmd {
    /// Create a topology; prints shell variables (SERVER_NS, CLIENT_IF, ...).
    Up {
        /// Tear the topology down when this process exits (default: fastnet's parent).
        #[arg(long)]
        owner: Option<u32>,
        /// Queues per veth end: `default` (a plain `ip link add`: the kernel's default
        /// counts, one in use), `N` (N allocated, N in use) or `MofN` (N allocated,
        /// M in use after `ethtool -L`).
        #[arg(long, default_value = "default")]
        queues: netns::QueueLayout,
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

fn main() {
    if let Err(e) = real_main() {
        eprintln!("fastnet: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run {
            iface,
            loopback,
            fallback,
            cmd,
        } => run::run(
            &run::shim_path()?,
            iface.as_deref(),
            loopback.as_deref(),
            run::Fallback::resolve(fallback)?,
            &cmd,
        )?,
        Cmd::Trace { count: _, cmd } => {
            std::process::exit(trace::trace(&run::shim_path()?, &cmd)?);
        }
        Cmd::Doctor { iface } => {
            let report = fastnet_tools::doctor::diagnose(iface.as_deref());
            print!("{}", report.render());
            std::process::exit(report.exit_code());
        }
        Cmd::Stat {
            pid,
            watch,
            interval_ms,
            all,
        } => fastnet_tools::stat::main(pid, watch, interval_ms, all)?,
        Cmd::Pcap {
            pid,
            write,
            count,
            duration,
            snaplen,
            buffer_mb,
        } => fastnet_tools::pcap::main(&fastnet_tools::pcap::Options {
            pid,
            file: write,
            count,
            duration: duration
                .map(std::time::Duration::try_from_secs_f64)
                .transpose()
                .map_err(|_| anyhow::anyhow!("--duration takes a number of seconds >= 0"))?,
            snaplen,
            ring_bytes: buffer_mb << 20,
        })?,
        Cmd::Netns { action } => match action {
            NetnsCmd::Up { owner, queues, mtu } => {
                // SAFETY: getppid has no preconditions.
                let owner = owner.unwrap_or_else(|| unsafe { libc::getppid() } as u32);
                let opts = netns::TopologyOptions {
                    owner_pid: owner,
                    queues,
                    mtu,
                    ..Default::default()
                };
                let topo = netns::Topology::up(&opts)?;
                print!("{}", topo.env_lines());
                topo.detach();
            }
            NetnsCmd::Down { tag } => netns::down_by_tag(&tag)?,
            NetnsCmd::List => {
                for (tag, pid, alive) in netns::list()? {
                    println!(
                        "{tag}\towner={pid}\t{}",
                        if alive { "alive" } else { "gone" }
                    );
                }
            }
            NetnsCmd::Gc => {
                for tag in netns::gc()? {
                    println!("removed {tag}");
                }
            }
        },
    }
    Ok(())
}
