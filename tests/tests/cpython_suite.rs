//! CPython's own socket test suites under `fastnet run --iface`: the same counts of
//! run/skipped/failed as a plain run on the same machine. Loopback stays on the kernel
//! here (FASTNET_LOOPBACK=process is not built), but every socket the suites make goes
//! through the shim's decisions (bind, listen, connect, options, epoll/poll/select).

use fastnet_e2e::apps::{fastnet_cmd, scratch};
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
    let t = Topology::up(&TopologyOptions::default()).unwrap();
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
    let mut fast = fastnet_cmd(&t, Side::Server, &py);
    args(&mut fast);
    let fast = fast.output().unwrap();
    let fast_log =
        String::from_utf8_lossy(&fast.stdout).into_owned() + &String::from_utf8_lossy(&fast.stderr);
    let (p_tot, p_res) = summary(&plain_log);
    let (f_tot, f_res) = summary(&fast_log);
    assert_eq!(
        p_res, "== Tests result: SUCCESS ==",
        "plain run fails here:\n{plain_log}"
    );
    assert_eq!(
        (f_tot.as_str(), f_res.as_str()),
        (p_tot.as_str(), p_res.as_str()),
        "under fastnet:\n{fast_log}"
    );
    assert_eq!(fast.status.code(), plain.status.code());
    // The shim saw the suites' sockets (and left loopback ones to the kernel).
    assert!(fast_log.contains("sockets.kernel.loopback="), "{fast_log}");
    let _ = std::fs::remove_dir_all(&dir);
}
