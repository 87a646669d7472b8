//! The two-namespace topology itself: reachable, offloads off, unique, cleaned up.

use fastnet_e2e::{is_root, run_ok, QueueLayout, Side, Topology, TopologyOptions};
use std::process::Command;

fn ns_exists(name: &str) -> bool {
    let out = run_ok(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Sends `text` from a kernel socat client in the client namespace (`connect`) to a
/// kernel socat server in the server namespace (`listen`); returns what it received.
fn socat_through(topo: &Topology, listen: &str, connect: &str, text: &str) -> Vec<u8> {
    let server = topo
        .command(Side::Server, "socat")
        .args(["-u", listen, "STDOUT"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    run_ok(topo.command(Side::Client, "sh").args([
        "-c",
        &format!("printf '{text}' | socat -u STDIN '{connect}'"),
    ]));
    server.wait_with_output().unwrap().stdout
}

#[test]
fn topology_up_reachable_and_torn_down() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::for_tests()).expect("topology up");
    let (srv_ns, cli_ns) = (topo.server_ns.clone(), topo.client_ns.clone());
    assert!(ns_exists(&srv_ns) && ns_exists(&cli_ns));

    // TCP across the veth: a kernel listener in the server namespace, a client in the other.
    let got = socat_through(
        &topo,
        "TCP-LISTEN:7001,bind=10.77.0.1",
        "TCP:10.77.0.1:7001",
        "through the veth",
    );
    assert_eq!(got, b"through the veth");

    // IPv6 (fd77::/16) too, usable at once: added without DAD, never tentative.
    for side in [Side::Server, Side::Client] {
        let out =
            run_ok(
                topo.command(side, "ip")
                    .args(["-6", "addr", "show", "dev", topo.iface(side)]),
            );
        let text = String::from_utf8_lossy(&out.stdout);
        let want = format!("inet6 {}/64", topo.addr6(side));
        let line = text.lines().find(|l| l.contains(&want));
        assert!(
            line.is_some_and(|l| !l.contains("tentative")),
            "{want} in {text}"
        );
        assert!(topo.addr6(side).segments()[0] == 0xfd77);
    }
    let got = socat_through(
        &topo,
        &format!("TCP6-LISTEN:7002,bind=[{}]", topo.server_ip6),
        &format!("TCP6:[{}]:7002", topo.server_ip6),
        "over IPv6",
    );
    assert_eq!(got, b"over IPv6");

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
