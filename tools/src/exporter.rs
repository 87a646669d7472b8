//! `fastnet exporter`: every counter of every fastnet process on `/metrics`, in the
//! Prometheus (OpenMetrics) text format.
//!
//! Each scrape reads the processes' shared-memory counter segments (see the
//! `fastnet-stats` crate) with plain atomic loads: a fastnet process never waits for
//! the exporter, and the exporter holds nothing between scrapes, so a process that
//! exited is simply absent from the next one. Names are `fastnet_` + the counter's
//! name with `_` for `.` (`rx.frames` → `fastnet_rx_frames_total`); docs/METRICS.md
//! lists them.

use anyhow::{anyhow, Result};
use fastnet_stats::{live_segments, Counter, StatsSegment};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of every series: which process, on which interface and queue.
type Labels = Vec<(String, String)>;

/// The counters cover the process's whole interface (every queue it drives).
pub const ALL_QUEUES: &str = "all";

/// The metric name of a counter, without the `fastnet_` prefix (and without the
/// `_total` the encoder adds to counters).
pub fn metric_name(c: Counter) -> String {
    c.name().replace('.', "_")
}

fn labels(seg: &StatsSegment) -> Labels {
    vec![
        ("pid".into(), seg.pid().to_string()),
        ("comm".into(), crate::stat::comm(seg.pid())),
        ("iface".into(), seg.iface()),
        ("queue".into(), ALL_QUEUES.into()),
    ]
}

/// The exposition of these segments' counters.
pub fn render(segs: &[StatsSegment]) -> Result<String> {
    let mut registry = Registry::with_prefix("fastnet");
    let per_process: Vec<(Labels, Vec<(Counter, u64)>)> =
        segs.iter().map(|s| (labels(s), s.snapshot())).collect();
    for &c in Counter::ALL {
        let help = match c.help() {
            "" => c.name(),
            h => h,
        };
        if c.is_gauge() {
            let family = Family::<Labels, Gauge>::default();
            registry.register(metric_name(c), help, family.clone());
            for (l, values) in &per_process {
                family.get_or_create(l).set(values[c as usize].1 as i64);
            }
        } else {
            let family = Family::<Labels, PromCounter>::default();
            registry.register(metric_name(c), help, family.clone());
            for (l, values) in &per_process {
                family.get_or_create(l).inc_by(values[c as usize].1);
            }
        }
    }
    let options = Family::<Labels, PromCounter>::default();
    registry.register(
        "unsupported_option",
        "Socket options the fast path does not implement, by call and option",
        options.clone(),
    );
    for (seg, (l, _)) in segs.iter().zip(&per_process) {
        for o in seg.option_counts() {
            let mut l = l.clone();
            l.push(("call".into(), o.call.name().into()));
            l.push(("option".into(), fastnet_stats::option_name(o.level, o.name)));
            options.get_or_create(&l).inc_by(o.count);
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The segments of the fastnet processes alive now (unreadable ones skipped: another
/// fastnet version, or gone meanwhile).
fn live() -> Vec<StatsSegment> {
    live_segments()
        .into_iter()
        .filter_map(|(_, path)| StatsSegment::open(&path).ok())
        .collect()
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` on `listen` (host:port) until killed.
pub fn main(listen: &str) -> Result<()> {
    let server =
        tiny_http::Server::http(listen).map_err(|e| anyhow!("cannot listen on {listen}: {e}"))?;
    eprintln!("fastnet exporter: serving http://{listen}/metrics");
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = match (req.method(), path) {
            (tiny_http::Method::Get, "/metrics") => match render(&live()) {
                Ok(text) => tiny_http::Response::from_string(text).with_header(
                    tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).expect("header"),
                ),
                Err(e) => tiny_http::Response::from_string(format!("{e}\n")).with_status_code(500),
            },
            (tiny_http::Method::Get, "/") => tiny_http::Response::from_string(
                "fastnet exporter: the counters of every fastnet process are on /metrics\n",
            ),
            _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
        };
        let _ = req.respond(resp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_a_series_with_the_process_labels() {
        let path = std::env::temp_dir().join(format!("fastnet-exp-{}.stats", std::process::id()));
        let me = std::process::id();
        let seg = StatsSegment::create_at(path, me, "fns9").unwrap();
        seg.add(Counter::RxFrames, 42);
        seg.set(Counter::TcpEstablished, 3);
        seg.count_option(
            fastnet_stats::OptionCall::Set,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
        );
        let text = render(std::slice::from_ref(&seg)).unwrap();
        let labels = format!(
            "{{pid=\"{me}\",comm=\"{}\",iface=\"fns9\",queue=\"all\"}}",
            crate::stat::comm(me)
        );
        assert!(
            text.contains(&format!("fastnet_rx_frames_total{labels} 42\n")),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fastnet_rx_frames counter\n"),
            "{text}"
        );
        assert!(text.contains(&format!("fastnet_tcp_state_established{labels} 3\n")));
        assert!(text.contains("# TYPE fastnet_tcp_state_established gauge\n"));
        assert!(text.contains("call=\"setsockopt\",option=\"SOL_TCP.TCP_CONGESTION\"} 1\n"));
        for &c in Counter::ALL {
            assert!(
                text.contains(&format!("fastnet_{}", metric_name(c))),
                "{c:?} missing"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_grafana_dashboard_asks_only_for_series_the_exporter_serves() {
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).unwrap();
        let mut known: Vec<String> = Counter::ALL
            .iter()
            .map(|&c| {
                let suffix = if c.is_gauge() { "" } else { "_total" };
                format!("fastnet_{}{suffix}", metric_name(c))
            })
            .collect();
        known.push("fastnet_unsupported_option_total".into());
        let panels = dash["panels"].as_array().unwrap();
        assert!(panels.len() >= 8);
        let mut asked = 0;
        for p in panels {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("fastnet_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        known.contains(&name),
                        "{}: unknown series {name}",
                        p["title"]
                    );
                    asked += 1;
                }
            }
        }
        assert!(asked > 20);
        let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
        for want in [
            "fast path vs kernel",
            "Drops by reason",
            "retransmissions",
            "handoffs",
        ] {
            assert!(
                titles.iter().any(|t| t.contains(want)),
                "no panel on {want}: {titles:?}"
            );
        }
    }

    #[test]
    fn docs_metrics_lists_every_counter_by_its_names() {
        let doc = include_str!("../../docs/METRICS.md");
        for &c in Counter::ALL {
            let (kind, suffix) = if c.is_gauge() {
                ("gauge", "")
            } else {
                ("counter", "_total")
            };
            let row = format!(
                "| `{}` | {kind} | `fastnet_{}{suffix}` |",
                c.name(),
                metric_name(c)
            );
            assert!(doc.contains(&row), "docs/METRICS.md lacks {row}");
        }
    }
}
