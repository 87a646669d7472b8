//! `fastnet stat`: live counters of running fastnet processes, read from their
//! shared-memory segments (see the `fastnet-stats` crate).

use anyhow::{bail, Context, Result};
use fastnet_stats::{live_segments, segment_path, Counter, StatsSegment};
use serde_json::{json, Map, Value};
use std::fmt::Write;
use std::time::Duration;

/// The process's command name (`/proc/<pid>/comm`), empty once it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

/// One process's counters as the JSON object `fastnet stat --json` prints (field
/// names documented in docs/METRICS.md): every counter and gauge, zero or not.
pub fn to_json(seg: &StatsSegment) -> Value {
    let (mut counters, mut gauges) = (Map::new(), Map::new());
    for (c, v) in seg.snapshot() {
        let into = if c.is_gauge() {
            &mut gauges
        } else {
            &mut counters
        };
        into.insert(c.name().to_string(), json!(v));
    }
    let options: Map<String, Value> = seg
        .option_counts()
        .iter()
        .map(|o| (o.label(), json!(o.count)))
        .collect();
    json!({
        "pid": seg.pid(),
        "comm": comm(seg.pid()),
        "iface": seg.iface(),
        "kernel_reason": seg.kernel_reason(),
        "counters": counters,
        "gauges": gauges,
        "unsupported_options": options,
    })
}

/// Renders one process's counters. With `previous`, counters also show their rate over
/// `interval`. Zero counters are left out except the headline ones, so the screen stays
/// short; `all` shows every counter.
pub fn render(
    seg: &StatsSegment,
    previous: Option<&[(Counter, u64)]>,
    interval: Duration,
    all: bool,
) -> String {
    let mut out = String::new();
    let iface = seg.iface();
    let _ = writeln!(
        out,
        "fastnet process {} on {}",
        seg.pid(),
        if iface.is_empty() {
            "(no interface)"
        } else {
            &iface
        }
    );
    let _ = writeln!(
        out,
        "  {}",
        match seg.kernel_reason() {
            Some(r) => format!("kernel: {r}"),
            None => "fast path".to_string(),
        }
    );
    let headline = [
        Counter::RxFrames,
        Counter::TxFrames,
        Counter::SocketsFast,
        Counter::TcpEstablished,
    ];
    for (i, (c, v)) in seg.snapshot().into_iter().enumerate() {
        if v == 0 && !all && !headline.contains(&c) {
            continue;
        }
        let _ = write!(out, "  {:<30} {:>16}", c.name(), v);
        if let Some(prev) = previous {
            if !c.is_gauge() && interval.as_secs_f64() > 0.0 {
                let d = v.saturating_sub(prev[i].1);
                let _ = write!(out, "  {:>12.0}/s", d as f64 / interval.as_secs_f64());
            }
        }
        out.push('\n');
    }
    // sockets.unsupported_options, by call and option.
    for o in seg.option_counts() {
        let name = format!("  {}", o.label());
        let _ = writeln!(out, "  {:<46} {:>16}", name, o.count);
    }
    out
}

fn open(pid: Option<u32>) -> Result<Vec<StatsSegment>> {
    let paths = match pid {
        Some(p) => {
            let path = segment_path(p);
            if !path.exists() {
                bail!(
                    "process {p} has no fastnet counters ({}): is it running under `fastnet run`?",
                    path.display()
                );
            }
            vec![(p, path)]
        }
        None => live_segments(),
    };
    if pid.is_some() {
        return paths
            .into_iter()
            .map(|(_, path)| {
                StatsSegment::open(&path).with_context(|| format!("cannot read {}", path.display()))
            })
            .collect();
    }
    // Every process: one that cannot be read (another fastnet version, gone meanwhile)
    // gets a line on stderr and the others are still shown.
    let mut segs = Vec::new();
    for (p, path) in paths {
        match StatsSegment::open(&path) {
            Ok(s) => segs.push(s),
            Err(e) => eprintln!("fastnet stat: process {p} skipped: {e}"),
        }
    }
    Ok(segs)
}

/// How `fastnet stat` prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub watch: bool,
    pub interval_ms: u64,
    /// Zero counters too (text output; JSON always has every counter).
    pub all: bool,
    /// One JSON object per process and line.
    pub json: bool,
}

pub fn main(pid: Option<u32>, o: Options) -> Result<()> {
    let segs = open(pid)?;
    match show(&segs, o) {
        // `fastnet stat --watch | head`: the reader left, which ends the watch.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn show(segs: &[StatsSegment], o: Options) -> std::io::Result<()> {
    let Options {
        watch,
        interval_ms,
        all,
        json,
    } = o;
    let interval = Duration::from_millis(interval_ms.max(100));
    if json {
        loop {
            for s in segs {
                emit(&format!("{}\n", to_json(s)))?;
            }
            if !watch {
                return Ok(());
            }
            std::thread::sleep(interval);
        }
    }
    if segs.is_empty() {
        return emit("no fastnet processes are running\n");
    }
    let mut prev: Vec<Vec<(Counter, u64)>> = segs.iter().map(|s| s.snapshot()).collect();
    for s in segs {
        emit(&render(s, None, interval, all))?;
    }
    if !watch {
        return Ok(());
    }
    loop {
        std::thread::sleep(interval);
        emit("\n")?;
        for (s, p) in segs.iter().zip(prev.iter_mut()) {
            emit(&render(s, Some(p), interval, all))?;
            *p = s.snapshot();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_values_and_rates() {
        let path = std::env::temp_dir().join(format!("fastnet-stat-{}.stats", std::process::id()));
        let seg = StatsSegment::create_at(path, 77, "fns1").unwrap();
        seg.add(Counter::RxFrames, 10);
        let before = seg.snapshot();
        seg.add(Counter::RxFrames, 500);
        seg.add(Counter::TcpRetransmits, 2);
        let text = render(&seg, Some(&before), Duration::from_secs(1), false);
        assert!(text.starts_with("fastnet process 77 on fns1\n"), "{text}");
        let rx = text.lines().find(|l| l.contains("rx.frames")).unwrap();
        assert!(rx.contains(" 510") && rx.contains("500/s"), "{rx}");
        assert!(text.contains("tcp.retransmits"));
        assert!(!text.contains("drop.checksum"), "zero counters hidden");
        assert!(render(&seg, None, Duration::from_secs(1), true).contains("drop.checksum"));
        seg.add(Counter::UnsupportedOptions, 1);
        seg.count_option(
            fastnet_stats::OptionCall::Set,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
        );
        let text = render(&seg, None, Duration::from_secs(1), false);
        let line = text
            .lines()
            .find(|l| l.contains("setsockopt.SOL_TCP.TCP_CONGESTION"))
            .unwrap();
        assert!(line.trim_end().ends_with(" 1"), "{text}");
        let j = to_json(&seg);
        assert_eq!(j["pid"], 77);
        assert_eq!(j["iface"], "fns1");
        assert!(j["kernel_reason"].is_null());
        assert_eq!(j["counters"]["rx.frames"], 510);
        assert_eq!(
            j["counters"]["drop.checksum"], 0,
            "zero counters are there too"
        );
        assert_eq!(j["gauges"]["tcp.state.established"], 0);
        assert!(j["counters"].get("tcp.state.established").is_none());
        assert_eq!(
            j["unsupported_options"]["setsockopt.SOL_TCP.TCP_CONGESTION"],
            1
        );
        let fields =
            j["counters"].as_object().unwrap().len() + j["gauges"].as_object().unwrap().len();
        assert_eq!(fields, Counter::ALL.len());
        assert!(text.contains("\n  fast path\n"), "{text}");
        seg.set_kernel_reason("interface fns1 is gone: restart");
        let text = render(&seg, None, Duration::from_secs(1), false);
        assert!(
            text.contains("\n  kernel: interface fns1 is gone: restart\n"),
            "{text}"
        );
    }
}
