//! Machine-readable counters (issue 24): `fastnet stat --json` against the counters
//! segment itself, and `fastnet exporter` scraped while redis-benchmark runs, parsed
//! by the Prometheus client's own text parser.

use fastnet_e2e::apps::{fastnet_redis, scratch, spawn, wait_listening, Bg};
use fastnet_e2e::shim::{build_shim, fastnet_bin};
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use fastnet_stats::{segment_path, Counter, StatsSegment};
use std::process::Command;
use std::time::{Duration, Instant};

/// The system Python, which has Debian's python3-prometheus-client (a pyenv `python3`
/// earlier on PATH would not).
const PY: &str = "/usr/bin/python3";

fn topo() -> Topology {
    assert!(is_root(), "end-to-end tests need root");
    build_shim();
    Topology::up(&TopologyOptions::default()).expect("topology")
}

fn redis(t: &Topology, dir: &std::path::Path) -> Bg {
    let mut srv = spawn(fastnet_redis(t, Side::Server, 6395), &dir.join("redis.log"));
    wait_listening(t, Side::Server, 6395, &mut srv);
    srv
}

#[test]
fn stat_json_is_the_counters_segment() {
    let t = topo();
    let dir = scratch("stat-json");
    let mut srv = redis(&t, &dir);
    let ip = t.server_ip.to_string();
    run_ok(t.command(Side::Client, "redis-benchmark").args([
        "-h", &ip, "-p", "6395", "-n", "3000", "-c", "4", "-q", "-t", "set",
    ]));
    // The server is idle now: its counters hold still between the two reads (the
    // shim publishes every 50 ms; give it that).
    std::thread::sleep(Duration::from_millis(200));
    let pid = srv.pid();
    let seg = StatsSegment::open(&segment_path(pid)).expect("the server's counters");
    let out = run_ok(
        Command::new(fastnet_bin())
            .args(["stat", "--json"])
            .arg(pid.to_string()),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one object per process: {text}");
    let check = format!(
        r#"
import json, sys
o = json.loads(sys.argv[1])
want = json.loads(sys.argv[2])
assert o["pid"] == {pid}, o["pid"]
assert o["comm"] == "redis-server", o["comm"]
assert o["iface"] == "{iface}", o["iface"]
got = dict(o["counters"]); got.update(o["gauges"])
assert set(got) == set(want), set(got) ^ set(want)
bad = {{k: (got[k], want[k]) for k in want if got[k] != want[k]}}
assert not bad, bad
assert got["rx.frames"] > 3000 and got["tcp.segments_in"] > 3000, got
assert o["unsupported_options"] == {{}}, o["unsupported_options"]
print("json ok")
"#,
        iface = t.iface(Side::Server)
    );
    let want: String = format!(
        "{{{}}}",
        seg.snapshot()
            .iter()
            .map(|(c, v)| format!("\"{}\": {v}", c.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let r = run_ok(Command::new(PY).args(["-c", &check, text.trim(), &want]));
    assert!(String::from_utf8_lossy(&r.stdout).contains("json ok"));
    assert!(seg.get(Counter::RxFrames) > 3000);
    srv.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scrapes `url` with the Prometheus client's parser: prints one line per
/// `fastnet_rx_frames_total` sample, `labels-as-json value`, and the number of series
/// of `pid`.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
url, pid = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(url, timeout=10).read().decode()
series = 0
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        if s.labels.get("pid") == pid:
            series += 1
        if s.name == "fastnet_rx_frames_total" and s.labels.get("pid") == pid:
            print("rx", json.dumps(s.labels, sort_keys=True), int(s.value))
        if fam.name == "fastnet_tcp_state_established" and s.labels.get("pid") == pid:
            assert fam.type == "gauge", fam.type
        if fam.name == "fastnet_rx_frames":
            assert fam.type == "counter", fam.type
print("series", series)
"#;

fn scrape(url: &str, pid: u32) -> (Option<(String, u64)>, usize) {
    let out = run_ok(Command::new(PY).args(["-c", SCRAPE, url, &pid.to_string()]));
    let text = String::from_utf8(out.stdout).unwrap();
    let rx = text.lines().find_map(|l| {
        let rest = l.strip_prefix("rx ")?;
        let (labels, v) = rest.rsplit_once(' ')?;
        Some((labels.to_string(), v.parse().ok()?))
    });
    let series = text
        .lines()
        .find_map(|l| l.strip_prefix("series ")?.parse().ok())
        .unwrap();
    (rx, series)
}

#[test]
fn exporter_serves_redis_counters_and_forgets_an_exited_process() {
    let t = topo();
    let dir = scratch("exporter");
    // A free port of this host, for the exporter.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut exporter = spawn(
        {
            let mut c = Command::new(fastnet_bin());
            c.args(["exporter", "--listen", &listen]);
            c
        },
        &dir.join("exporter.log"),
    );
    let url = format!("http://{listen}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "exporter not up:\n{}",
            exporter.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut srv = redis(&t, &dir);
    let pid = srv.pid();
    let ip = t.server_ip.to_string();
    let mut bench = spawn(
        {
            let mut c = t.command(Side::Client, "redis-benchmark");
            c.args([
                "-h",
                &ip,
                "-p",
                "6395",
                "-n",
                "100000000",
                "-c",
                "8",
                "-q",
                "-t",
                "set,get",
            ]);
            c
        },
        &dir.join("bench.log"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (first, series) = scrape(&url, pid);
    let (labels, a) = first.expect("the server's fastnet_rx_frames_total");
    assert!(
        series >= Counter::ALL.len(),
        "{series} series for the server"
    );
    let want = format!(
        r#"{{"comm": "redis-server", "iface": "{}", "pid": "{pid}", "queue": "all"}}"#,
        t.iface(Side::Server)
    );
    assert_eq!(labels, want);
    std::thread::sleep(Duration::from_millis(500));
    let (second, _) = scrape(&url, pid);
    let b = second.expect("still there").1;
    assert!(
        b > a,
        "rx frames did not rise while the benchmark ran: {a} then {b}"
    );
    bench.stop();
    srv.stop();
    let (gone, series) = scrape(&url, pid);
    assert!(
        gone.is_none() && series == 0,
        "{series} series left of pid {pid}"
    );
    exporter.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
