//! A forked child's first calls on a connection it inherited may be fcntl or
//! setsockopt (before any read or write): they must act on the connection, not on the
//! placeholder its fd holds until the connection comes to the child's stack.

use fastnet_e2e::apps::{fastnet_cmd, scratch, spawn, wait_listening};
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};

const CHILD_OPTIONS: &str = include_str!("../py/child_options.py");

#[test]
fn a_forked_childs_fcntl_and_setsockopt_before_first_use_take_effect() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("child-options");
    let script = dir.join("child_options.py");
    std::fs::write(&script, CHILD_OPTIONS).unwrap();
    let port = 7320;
    let mut s = fastnet_cmd(&t, Side::Server, "python3");
    s.arg(&script).arg(port.to_string());
    let mut server = spawn(s, &dir.join("server.log"));
    wait_listening(&t, Side::Server, port, &mut server);
    for _ in 0..3 {
        // The client sends nothing: a nonblocking recv must say EAGAIN at once (a
        // blocking one would wait for the client's timeout).
        let out = t
            .command(Side::Client, "python3")
            .args([
                "-c",
                &format!(
                    "import socket; c = socket.create_connection(('{}', {port})); \
                     c.settimeout(20); print(c.makefile().readline().strip())",
                    t.addr(Side::Server)
                ),
            ])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Linux doubles SO_SNDBUF's value.
        assert_eq!(
            line,
            format!("EAGAIN {} True", 2 << 20),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.output()
        );
    }
    // Each child took its connection into its own stack (the fast path).
    let log = server.output();
    assert_eq!(log.matches("family.moved_in=1").count(), 3, "{log}");
}
