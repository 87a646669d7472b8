//! `fastnet run [--iface IF] [--loopback off|process] -- <cmd>`: runs a command with libfastnet.so preloaded.

use anyhow::{bail, Result};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim, `libfastnet.so`: next to the running `fastnet` binary (a build tree's
/// target/<profile>/), else in `../lib/fastnet/` from it (a package's /usr/bin and
/// /usr/lib/fastnet, or `cargo install`'s ~/.cargo/bin and ~/.cargo/lib/fastnet),
/// else in /usr/lib/fastnet/.
pub fn shim_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("libfastnet.so"),
        dir.join("../lib/fastnet/libfastnet.so"),
        PathBuf::from("/usr/lib/fastnet/libfastnet.so"),
    ];
    if let Some(so) = candidates.iter().find(|p| p.is_file()) {
        return Ok(so.clone());
    }
    bail!(
        "libfastnet.so not found in {}, {} or {} (build it: cargo build -p shim{})",
        candidates[0].display(),
        candidates[1].display(),
        candidates[2].display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
}

/// LD_PRELOAD with the shim first, keeping what the environment already preloads.
pub fn preload_value(shim: &Path) -> OsString {
    let mut v = OsString::from(shim);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

pub use fastnet_tools::cli::Fallback;

/// Starts the fast path on `iface` exactly as the shim will (program attached, a
/// socket on every queue in use), then lets it go: the error the shim would meet.
pub fn check_fast_path(iface: &str) -> Result<(), xdp_backend::StartError> {
    xdp_backend::AttachedIface::open(iface, &xdp_backend::XskConfig::default()).map(drop)
}

/// The one line `fastnet run` prints for a static executable (no PT_INTERP: the
/// kernel starts it without ld.so, so `LD_PRELOAD` and the shim are never read), found
/// after the `PATH` lookup and through `#!` interpreters; `None` for everything else.
pub fn static_notice(prog: &str) -> Option<String> {
    use fastnet_tools::exe_kind::{classify, lookup, ExeKind};
    let path = lookup(prog, std::env::var_os("PATH").as_deref())?;
    let (file, kind) = classify(&path);
    let what = match kind {
        ExeKind::Static => "a static executable",
        ExeKind::StaticPie => "a static-PIE executable",
        _ => return None,
    };
    let via = if file == path {
        String::new()
    } else {
        format!(" (the interpreter of {})", path.display())
    };
    Some(format!(
        "fastnet run: {}{via} is {what} (no ELF interpreter, LD_PRELOAD is not read): it runs unaccelerated, every socket on the kernel",
        file.display()
    ))
}

/// Replaces this process with `cmd` under the shim; returns only on failure.
pub fn run(
    shim: &Path,
    iface: Option<&str>,
    loopback: Option<&str>,
    fallback: Fallback,
    cmd: &[String],
) -> Result<()> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("run: no command given");
    };
    if let Some(line) = static_notice(prog) {
        eprintln!("{line}");
    }
    let mut c = Command::new(prog);
    c.args(args).env("LD_PRELOAD", preload_value(shim));
    if let Some(mode) = loopback {
        c.env("FASTNET_LOOPBACK", mode);
    }
    let loopback_on = matches!(
        loopback
            .map(str::to_string)
            .or_else(|| std::env::var("FASTNET_LOOPBACK").ok())
            .as_deref(),
        Some("process" | "host")
    );
    let iface = iface.map(str::to_string).or_else(|| {
        std::env::var("FASTNET_IFACE")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if let Some(iface) = &iface {
        c.env("FASTNET_IFACE", iface);
        if let Err(e) = check_fast_path(iface) {
            match fallback {
                Fallback::None => {
                    eprintln!("fastnet run: the fast path cannot start on {iface}: {e} (or run on the kernel anyway: --fallback=kernel)");
                    std::process::exit(2);
                }
                Fallback::Kernel => eprintln!(
                    "fastnet run: the fast path cannot start on {iface}: {e}; running on the kernel (--fallback=kernel)"
                ),
            }
        }
    } else if loopback_on {
        // No interface: the stack runs for loopback alone.
    } else {
        eprintln!(
            "fastnet run: no fast-path interface (--iface IF or FASTNET_IFACE): every socket stays on the kernel"
        );
    }
    let err = c.exec();
    bail!("cannot run {prog}: {err}")
}
