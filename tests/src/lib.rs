//! Helpers for the end-to-end tests in `tests/tests/`.

pub use fastnet_tools::netns::{QueueLayout, Side, Topology, TopologyOptions};

pub mod apps;
pub mod shim;
pub mod tap_driver;
use std::process::{Command, Output};

/// Runs a command to completion, panicking with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// True when the tests run as root (namespaces and XDP need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
