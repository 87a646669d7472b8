//! The two-namespace topology itself: reachable, offloads off, unique, cleaned up.

use fastnet_e2e::{is_root, run_ok, QueueLayout, Side, Topology, TopologyOptions};
use std::process::Command;

fn ns_exists(name: &str) -> bool {
    let out = run_ok(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn topology_up_reachable_and_torn_down() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let (srv_ns, cli_ns) = (topo.server_ns.clone(), topo.client_ns.clone());
    assert!(ns_exists(&srv_ns) && ns_exists(&cli_ns));

    // TCP across the veth: a kernel listener in the server namespace, a client in the other.
    let server = topo
        .command(Side::Server, "socat")
        .args(["-u", "TCP-LISTEN:7001,bind=10.77.0.1", "STDOUT"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    run_ok(topo.command(Side::Client, "sh").args([
        "-c",
        "printf 'through the veth' | socat -u STDIN TCP:10.77.0.1:7001",
    ]));
    let out = server.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"through the veth");

    // Checksum offload off on both ends (DESIGN.md: partial checksums otherwise).
    for side in [Side::Server, Side::Client] {
        let out = run_ok(topo.command(side, "ethtool").args(["-k", topo.iface(side)]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l.trim() == "tx-checksumming: off"),
            "{text}"
        );
    }
    drop(topo);
    assert!(
        !ns_exists(&srv_ns) && !ns_exists(&cli_ns),
        "namespaces left behind"
    );
}

#[test]
fn two_topologies_do_not_collide() {
    assert!(is_root(), "end-to-end tests need root");
    let a = Topology::up(&TopologyOptions::for_tests()).unwrap();
    let b = Topology::up(&TopologyOptions {
        queues: QueueLayout::Fixed(4),
        ..Default::default()
    })
    .unwrap();
    assert_ne!(a.server_ns, b.server_ns);
    assert_ne!(a.server_if, b.server_if);
    let out = run_ok(
        b.command(Side::Server, "ls")
            .arg(format!("/sys/class/net/{}/queues", b.server_if)),
    );
    let rx = String::from_utf8_lossy(&out.stdout).matches("rx-").count();
    assert_eq!(rx, 4, "multi-queue veth");
    run_ok(
        a.command(Side::Client, "ping")
            .args(["-c1", "-W2", "10.77.0.1"]),
    );
    run_ok(
        b.command(Side::Client, "ping")
            .args(["-c1", "-W2", "10.77.0.1"]),
    );
}

#[test]
fn owner_death_reaps_topology() {
    assert!(is_root(), "end-to-end tests need root");
    // A short-lived owner: the reaper must remove the namespaces once it exits.
    let owner = Command::new("sleep").arg("0.3").spawn().unwrap();
    let opts = TopologyOptions {
        owner_pid: owner.id(),
        ..Default::default()
    };
    let topo = Topology::up(&opts).unwrap();
    let name = topo.server_ns.clone();
    topo.detach();
    let mut owner = owner;
    owner.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ns_exists(&name) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!ns_exists(&name), "reaper did not remove {name}");
}
