//! CPython's own socket test suites, twice under fastnet, each giving the same counts of
//! run/skipped/failed as a plain run on the same machine:
//! - `fastnet run --iface`: loopback stays on the kernel, but every socket the suites
//!   make goes through the shim's decisions (bind, listen, connect, options, polling);
//! - `fastnet run --loopback process`: the suites' loopback TCP and UDP between their
//!   own sockets is carried by the process's own stack (the counters prove it).

use fastnet_e2e::apps::{exit_counters, fastnet_cmd, scratch};
use fastnet_e2e::shim::fastnet_bin;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::process::Command;

/// The python3 on PATH (3.11 with its `test` package), resolved to the real binary.
fn python() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys, test.test_socket; print(sys.executable)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// "run=856 (filtered) skipped=150" and the verdict line of a regrtest log.
fn summary(log: &str) -> (String, String) {
    let totals = log
        .lines()
        .find(|l| l.starts_with("Total tests:"))
        .unwrap_or("no totals")
        .to_string();
    let result = log
        .lines()
        .find(|l| l.starts_with("== Tests result:"))
        .unwrap_or("no result")
        .to_string();
    (totals, result)
}

#[test]
fn cpython_socket_suites_match_a_plain_run() {
    assert!(is_root(), "end-to-end tests need root");
    let Some(py) = python() else {
        panic!("python3 with its test package is required (CPython 3.11 on PATH)");
    };
    let t = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let dir = scratch("cpython");
    let tests = [
        "test_socket",
        "test_selectors",
        "test_epoll",
        "test_poll",
        "test_select",
        "test_asyncio",
    ];
    let args = |c: &mut Command| {
        c.args(["-m", "test"])
            .args(tests)
            .args(["-i", "*VSOCK*", "-i", "*Vsock*", "--timeout", "300"])
            .current_dir(&dir);
    };
    let mut plain = t.command(Side::Server, &py);
    args(&mut plain);
    let plain = plain.output().unwrap();
    let plain_log = String::from_utf8_lossy(&plain.stdout).into_owned();
    let (p_tot, p_res) = summary(&plain_log);
    assert_eq!(
        p_res, "== Tests result: SUCCESS ==",
        "plain run fails here:\n{plain_log}"
    );
    let same_as_plain = |fast: std::process::Output, what: &str| {
        let log = String::from_utf8_lossy(&fast.stdout).into_owned()
            + &String::from_utf8_lossy(&fast.stderr);
        let (f_tot, f_res) = summary(&log);
        assert_eq!(
            (f_tot.as_str(), f_res.as_str()),
            (p_tot.as_str(), p_res.as_str()),
            "{what}:\n{log}"
        );
        assert_eq!(fast.status.code(), plain.status.code(), "{what}");
        log
    };

    let mut fast = fastnet_cmd(&t, Side::Server, &py);
    args(&mut fast);
    let log = same_as_plain(fast.output().unwrap(), "under fastnet --iface");
    // The shim saw the suites' sockets (and left loopback ones to the kernel).
    assert!(log.contains("sockets.kernel.loopback="), "{log}");

    let mut lo = Command::new(fastnet_bin());
    lo.args(["run", "--loopback", "process", "--", &py])
        .env("FASTNET_STATS", "1");
    args(&mut lo);
    let log = same_as_plain(lo.output().unwrap(), "under fastnet --loopback process");
    // The suites' loopback connections were carried by the stack, not the kernel.
    // (The last counters line is the suite's own process: it exits after its children.)
    let c = exit_counters(&log);
    let connections = c.get("loopback.connections").copied().unwrap_or(0);
    let frames = c.get("loopback.frames").copied().unwrap_or(0);
    assert!(
        connections >= 300 && frames >= 10 * connections,
        "loopback.connections={connections} loopback.frames={frames}:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
