//! A process whose sockets all stay on the kernel pays (almost) nothing for the shim:
//! - pass-through (no interface or loopback mode named): the hook is not installed at all;
//! - fallen back (an interface named, the fast path could not start): after the failed
//!   start nothing of the socket layer is routed past the hook's assembly pre-filter, and
//!   the app's signal handlers are the kernel's again, unwrapped.
//!
//! Speed is measured by `scripts/bench-passthrough.sh` (`make bench`), not here.

use fastnet_e2e::shim::{compile_c, shim_path, TempDir};
use std::process::Command;

#[test]
fn pass_through_leaves_the_program_unhooked() {
    let run = |extra: &[(&str, &str)]| {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello"])
            .env("LD_PRELOAD", shim_path())
            .env("FASTNET_LOG", "1")
            .env_remove("FASTNET_IFACE")
            .env_remove("FASTNET_LOOPBACK")
            .env_remove("FASTNET_TRACE");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.stdout, b"hello\n");
    assert!(err.contains("fastnet: hook not installed"), "{err}");
    assert!(!err.contains("fastnet: hook installed"), "{err}");
    // Asked for explicitly (the compatibility battery), or with a loopback mode, it is.
    for extra in [("FASTNET_HOOK", "always"), ("FASTNET_LOOPBACK", "process")] {
        let out = run(&[extra]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.stdout, b"hello\n");
        assert!(err.contains("fastnet: hook installed"), "{extra:?}: {err}");
    }
}

#[test]
fn fallen_back_routes_only_the_rewriters_own_calls_and_unwraps_handlers() {
    let dir = TempDir::new("fallback");
    let bin = compile_c("fallback_signals", "fallback_signals", dir.path(), &[]);
    let plain = Command::new(&bin).output().unwrap();
    let out = Command::new(&bin)
        .env("LD_PRELOAD", shim_path())
        .env("FASTNET_IFACE", "fastnet-none0")
        .env("FASTNET_FALLBACK", "kernel")
        .env("FASTNET_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "before socket: handler ours\nafter socket: handler ours\nhandler ran 1 time(s)\n",
        "{err}"
    );
    assert_eq!(out.stdout, plain.stdout);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The numbers still routed past the pre-filter after the failed start: only the
    // rewriter's own (mappings that may become executable; with Syscall User Dispatch
    // on, the signal calls that keep SIGSYS out of masks and the app's SIGSYS handler
    // virtual), none of the socket layer's.
    let mut own = vec![libc::SYS_mmap, libc::SYS_mprotect];
    if err.contains("syscall user dispatch on") {
        own.extend([libc::SYS_rt_sigaction, libc::SYS_rt_sigprocmask]);
    }
    own.push(libc::SYS_pkey_mprotect);
    let expected = format!("numbers still routed past the hook's pre-filter: {own:?}");
    assert!(err.contains(&expected), "want {expected:?} in: {err}");
}

/// Without Syscall User Dispatch the fallen-back process routes only the mapping
/// calls past the pre-filter.
#[test]
fn fallen_back_without_sud_routes_only_the_mapping_calls() {
    let dir = TempDir::new("fallback-nosud");
    let bin = compile_c("fallback_signals", "fallback_signals", dir.path(), &[]);
    let out = Command::new(&bin)
        .env("LD_PRELOAD", shim_path())
        .env("FASTNET_IFACE", "fastnet-none0")
        .env("FASTNET_FALLBACK", "kernel")
        .env("FASTNET_LOG", "debug")
        .env("FASTNET_SUD", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("syscall user dispatch on"), "{err}");
    let expected = format!(
        "numbers still routed past the hook's pre-filter: {:?}",
        [libc::SYS_mmap, libc::SYS_mprotect, libc::SYS_pkey_mprotect]
    );
    assert!(err.contains(&expected), "want {expected:?} in: {err}");
}
