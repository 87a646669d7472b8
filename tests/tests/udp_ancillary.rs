//! UDP ancillary data on the fast path (issue 25): the cmsgs recvmsg gives
//! (IP_PKTINFO, IP_RECVTOS, IP_RECVTTL, IP_RECVORIGDSTADDR, SO_TIMESTAMP*), the options'
//! getsockopt answers and a sendmsg whose IP_PKTINFO picks the source, each compared
//! byte for byte with the kernel's answer to the same program; then dnsmasq, which
//! needs IP_PKTINFO, answering dig on the fast path.

use fastnet_e2e::apps::{exit_counters, fastnet_cmd, kernel_udp_datagrams, scratch, spawn, Bg};
use fastnet_e2e::shim::compile_c;
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    Topology::up(&TopologyOptions::default()).expect("topology")
}

fn wait_for(bg: &mut Bg, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bg.output().contains(what) {
        if let Ok(Some(st)) = bg.child.try_wait() {
            panic!("exited ({st}) before {what:?}:\n{}", bg.output());
        }
        assert!(Instant::now() < deadline, "no {what:?}:\n{}", bg.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the `udp_cmsg` server (under fastnet when `fast`) and the kernel client
/// against it; returns (server stdout, client stdout, server stderr).
fn cmsg_round(t: &Topology, prog: &Path, fast: bool, n: usize) -> (String, String, String) {
    let dir = scratch("cmsg");
    let args = ["server", "5353", &n.to_string()];
    let mut c = if fast {
        let mut c = fastnet_cmd(t, Side::Server, prog.to_str().unwrap());
        c.args(args);
        c
    } else {
        let mut c = t.command(Side::Server, prog.to_str().unwrap());
        c.args(args);
        c
    };
    // stdout alone is compared; the counters go to stderr.
    let child = c
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut srv = Bg {
        child,
        log: dir.join("stdout"),
    };
    wait_for(&mut srv, "ready");
    let client = t
        .command(Side::Client, prog.to_str().unwrap())
        .args(["client", &t.server_ip.to_string(), "5353", &n.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let st = srv.child.wait().unwrap();
    assert!(st.success(), "server: {st}\n{}", srv.output());
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let out = (
        srv.output(),
        String::from_utf8_lossy(&client.stdout).into_owned(),
        stderr,
    );
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn udp_cmsgs_and_pktinfo_source_match_the_kernel_byte_for_byte() {
    let t = topo();
    let dir = scratch("cmsg-bin");
    let prog = compile_c("udp_cmsg", "udp_cmsg", &dir, &[]);
    let n = 8;
    let (k_srv, k_cli, _) = cmsg_round(&t, &prog, false, n);
    let before = kernel_udp_datagrams(&t, Side::Server);
    let (f_srv, f_cli, f_err) = cmsg_round(&t, &prog, true, n);
    assert_eq!(
        kernel_udp_datagrams(&t, Side::Server),
        before,
        "the kernel received datagrams of the fast-path run"
    );
    // The kernel's run is the reference: every cmsg present (not a vacuous match).
    assert!(k_srv.contains("controllen=144"), "{k_srv}");
    assert!(k_srv.contains("timestamp type=35 plausible"), "{k_srv}");
    assert!(k_srv.contains("timestamp type=29 plausible"), "{k_srv}");
    assert!(
        !k_srv.contains("WRONG") && !k_srv.contains("FAIL"),
        "{k_srv}"
    );
    assert_eq!(
        k_srv, f_srv,
        "server side differs (fastnet stderr: {f_err})"
    );
    assert_eq!(k_cli, f_cli, "client side differs");
    assert_eq!(k_cli.lines().count(), n, "{k_cli}");
    let c = exit_counters(&f_err);
    assert_eq!(c.get("rx.frames").copied(), Some(n as u64), "{f_err}");
    // Each datagram's answer and the refused foreign-source send (no frame).
    assert_eq!(c.get("tx.frames").copied(), Some(n as u64), "{f_err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// dnsmasq with its own config and hosts file, no upstream, in its default mode (a
/// wildcard socket that learns each query's destination through IP_PKTINFO).
#[test]
fn dnsmasq_answers_a_thousand_dig_queries_on_the_fast_path() {
    let t = topo();
    let dir = scratch("dnsmasq");
    let hosts: String = (1..=100)
        .map(|i| format!("10.77.{}.{} host{i}.fastnet.test\n", 100 + i / 50, i))
        .collect();
    std::fs::write(dir.join("hosts"), &hosts).unwrap();
    std::fs::write(
        dir.join("dnsmasq.conf"),
        format!(
            "no-resolv\nno-hosts\naddn-hosts={}\nport=5353\nuser=root\npid-file=\nlog-facility=-\n",
            dir.join("hosts").display()
        ),
    )
    .unwrap();
    let mut c = fastnet_cmd(&t, Side::Server, "dnsmasq");
    c.args([
        "--no-daemon",
        "-C",
        dir.join("dnsmasq.conf").to_str().unwrap(),
    ]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_for(&mut srv, "read ");
    let before = kernel_udp_datagrams(&t, Side::Server);
    // 10 dig processes at once, 100 queries each (a batch file per client).
    let clients: Vec<_> = (0..10)
        .map(|k| {
            let batch: String = (0..100)
                .map(|q| format!("host{}.fastnet.test\n", (k * 100 + q) % 100 + 1))
                .collect();
            let f = dir.join(format!("batch{k}"));
            std::fs::write(&f, batch).unwrap();
            t.command(Side::Client, "dig")
                .args([
                    "-p",
                    "5353",
                    &format!("@{}", t.server_ip),
                    // A source port of its own per dig (see compat_matrix's dnsmasq row:
                    // dig's SO_REUSEPORT ports collide across processes, and the kernel
                    // then delivers one's answer to the other).
                    "-b",
                    &format!("{}#{}", t.client_ip, 20000 + k),
                    "+short",
                    "+tries=1",
                ])
                .args(["+time=5", "-f", f.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let want: Vec<String> = (1..=100)
        .map(|i| format!("10.77.{}.{}", 100 + i / 50, i))
        .collect();
    for (k, ch) in clients.into_iter().enumerate() {
        let out = ch.wait_with_output().unwrap();
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let expect: Vec<String> = (0..100)
            .map(|q| want[(k * 100 + q) % 100].clone())
            .collect();
        assert_eq!(
            got,
            expect,
            "dig {k}: {}\nserver: {}",
            String::from_utf8_lossy(&out.stderr),
            srv.output()
        );
    }
    assert_eq!(
        kernel_udp_datagrams(&t, Side::Server),
        before,
        "the kernel received DNS queries"
    );
    let log = srv.stop();
    assert!(!log.contains("failed to create listening socket"), "{log}");
    let c = exit_counters(&log);
    assert!(c.get("rx.frames").copied().unwrap_or(0) >= 1000, "{log}");
    assert!(c.get("tx.frames").copied().unwrap_or(0) >= 1000, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A UDP server that answers and then sleeps (no system call into the shim): the
/// answer must still leave, although the stack learns the client's MAC only after the
/// send (the background driver resolves it).
#[test]
fn udp_answer_leaves_while_the_server_sleeps() {
    let t = topo();
    let dir = scratch("udp-sleep");
    let script = r#"
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 5400))
print("ready", flush=True)
d, a = s.recvfrom(100)
s.sendto(d[::-1], a)
time.sleep(3)
"#;
    let mut c = fastnet_cmd(&t, Side::Server, "/usr/bin/python3");
    c.args(["-c", script]);
    let mut srv = spawn(c, &dir.join("server.log"));
    wait_for(&mut srv, "ready");
    let out = t
        .command(Side::Client, "/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); \
             s.sendto(b'ping-123', (sys.argv[1], 5400)); print(s.recvfrom(64)[0].decode())",
            &t.server_ip.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "321-gnip",
        "{}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        srv.output()
    );
    let _ = srv.child.wait();
    let log = srv.output();
    let c = exit_counters(&log);
    assert_eq!(c.get("tx.frames").copied(), Some(1), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A datagram to an on-link address nobody answers ARP for: once the kernel's
/// neighbour entry goes FAILED the stack drops it (as Linux drops its unresolved
/// queue) instead of holding it, and stops asking.
#[test]
fn udp_datagram_to_an_unresolvable_neighbour_is_dropped() {
    let t = topo();
    let nobody = std::net::Ipv4Addr::from(u32::from(t.server_ip) + 97);
    let script = "import socket, sys, time\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.sendto(b'anyone?', (sys.argv[1], 53))\n\
                  time.sleep(6)\n";
    let out = fastnet_cmd(&t, Side::Server, "/usr/bin/python3")
        .args(["-c", script, &nobody.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let neigh = t
        .command(Side::Server, "ip")
        .args(["neigh", "show", &nobody.to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains("FAILED"),
        "the kernel resolved {nobody}?"
    );
    let c = exit_counters(&stderr);
    assert_eq!(c.get("tx.frames"), None, "{stderr}");
    // Every drop reason of the stack is published under drop.malformed.
    assert_eq!(c.get("drop.malformed").copied(), Some(1), "{stderr}");
}
