//! libfastnet.so: the preloaded shim that hooks syscalls and routes sockets to the
//! user-space stack.
//!
//! Its constructor installs the syscall hook (crate `rewriter`) before the program's
//! `main`. Every handled system call arrives in [`dispatch::dispatch`]; today that is the
//! `fastnet trace -c` counter only, and everything else passes through to the kernel.
//!
//! Environment: `FASTNET_LOG=1` prints what the hook did; `FASTNET_TRACE=<file>` counts
//! every system call and appends one line per process to `<file>`;
//! `FASTNET_DISABLE=1` leaves the program unhooked; `FASTNET_SUD=0` turns off the
//! Syscall User Dispatch backstop (on by default where the kernel has it).
//!
//! The hook is installed only when something will be routed to the shim: an interface or
//! a loopback mode named (the socket layer), or a trace. With none (`fastnet run` with no
//! `--iface`), every call would go to the kernel anyway, so the program runs unhooked, at
//! the kernel's speed and with no start-up scan. `FASTNET_HOOK=always` installs it even
//! then (the compatibility battery tests the hook that way).

pub mod dispatch;
pub mod sockets;
pub mod trace;

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs before the program's `main` (and before constructors of objects loaded earlier
/// in the link order that depend on nothing of ours).
#[ctor::ctor(unsafe)]
fn init() {
    let _inside = rewriter::in_shim();
    if env_flag("FASTNET_DISABLE") {
        return;
    }
    let log = env_flag("FASTNET_LOG");
    let trace_file = std::env::var_os("FASTNET_TRACE").filter(|p| !p.is_empty());
    let hook_always = std::env::var_os("FASTNET_HOOK").is_some_and(|v| v == "always");
    if trace_file.is_none()
        && !hook_always
        && !sockets::config::Config::from_env().0.routes_sockets()
    {
        if log {
            eprintln!(
                "fastnet: hook not installed: no interface (FASTNET_IFACE), loopback mode or \
                 trace named, so every call goes to the kernel"
            );
        }
        return;
    }
    if let Some(path) = trace_file {
        trace::enable(&path);
    }
    // Syscall User Dispatch: on unless FASTNET_SUD=0; asked for explicitly (=1), its
    // absence is said even without FASTNET_LOG.
    let sud_env = std::env::var_os("FASTNET_SUD");
    let sud = sud_env.as_ref().is_none_or(|v| v != "0");
    let sud_asked = sud_env.is_some_and(|v| !v.is_empty() && v != "0");
    match rewriter::install(&rewriter::Config {
        handler: Some(dispatch::dispatch),
        log,
        force_xsave: false,
        sud,
    }) {
        Ok(report) => {
            if let Some(why) = report.sud_unavailable.filter(|_| log || sud_asked) {
                eprintln!(
                    "fastnet: {why}: syscalls in code written after start into memory that \
                     was already executable (JIT) run unhooked"
                );
            }
            sockets::init();
            // SAFETY: registering a plain function with no captured state.
            unsafe { libc::atexit(fini) };
        }
        Err(e) => {
            // The one line that says why the program runs unhooked (stderr, never stdout).
            eprintln!("fastnet: syscall hook inactive, running unaccelerated: {e}");
            trace::disable();
        }
    }
}

/// Runs at normal exit (after `main` returns or `exit()`; registered with atexit by
/// the constructor): closes the sockets the app left open, as the kernel would,
/// delivers what the app wrote and reports the counters.
extern "C" fn fini() {
    let _inside = rewriter::in_shim();
    sockets::exit_work();
}
