//! The `fastnet` command.

use anyhow::Result;
use clap::Parser;
use fastnet_tools::cli::{Cli, Cmd, NetnsCmd};
use fastnet_tools::netns;

mod run;
mod trace;

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
            json,
        } => fastnet_tools::stat::main(
            pid,
            fastnet_tools::stat::Options {
                watch,
                interval_ms,
                all,
                json,
            },
        )?,
        Cmd::Handoff { pid, port, to } => {
            std::process::exit(fastnet_tools::handoff::main(pid, port, &to)?);
        }
        Cmd::Exporter { listen } => fastnet_tools::exporter::main(&listen)?,
        Cmd::GenDocs { out } => fastnet_tools::gendocs::generate(&out)?,
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
