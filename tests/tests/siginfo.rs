//! A signal that lands while its thread is inside the stack is delivered when the
//! thread leaves, with the siginfo it came with (issue 25: HAProxy's watchdog timer
//! arrived re-raised as SI_TKILL, which HAProxy takes for a kill request from another
//! thread, and aborted under load).

use fastnet_e2e::apps::{exit_counters, fastnet_cmd, scratch, spawn};
use fastnet_e2e::shim::compile_c;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::time::{Duration, Instant};

#[test]
fn cpu_timer_signals_keep_si_code_and_value_across_socket_calls() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::default()).expect("topology");
    let dir = scratch("siginfo");
    let prog = compile_c("sigcode", "sigcode", &dir, &[]);
    // A kernel UDP echo server on the client side.
    let echo = "import socket\n\
                s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 7070))\n\
                print('ready', flush=True)\n\
                while True:\n    d,a=s.recvfrom(2048); s.sendto(d,a)\n";
    let mut c = t.command(Side::Client, "/usr/bin/python3");
    c.args(["-c", echo]);
    let echo = spawn(c, &dir.join("echo.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !echo.output().contains("ready") {
        assert!(Instant::now() < deadline, "echo server: {}", echo.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = fastnet_cmd(&t, Side::Server, prog.to_str().unwrap())
        .args([&t.client_ip.to_string(), "7070", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let field = |name: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stdout:?}"))
    };
    // Enough signals that many landed inside the stack (the thread's CPU time is
    // mostly spent there), every one with SI_TIMER and its value.
    assert!(field("signals") >= 20, "{stdout}");
    assert_eq!(field("bad"), 0, "{stdout}");
    // The exchanges went over the fast path.
    let c = exit_counters(&stderr);
    assert!(
        c.get("rx.frames").copied().unwrap_or(0) >= field("exchanged"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
