#!/usr/bin/env python3
"""Turns the raw results of scripts/bench.sh into BENCHMARKS.md and an SVG bar chart of
the fastnet/kernel ratios. Standard library only (no matplotlib)."""

import argparse
import html
import os

MODES = ["kernel", "fastnet-server", "fastnet-both"]

# Kernel numbers DESIGN.md reports for this machine class, for comparison.
DESIGN_KERNEL = {
    "redis SET -P 1": "~75 k",
    "redis GET -P 1": "~82 k",
    "redis SET -P 16": "~1.4 M",
    "redis GET -P 16": "~1.4 M",
    "nginx wrk -c32": "~63 k",
    "iperf3 single stream": "~7",
}

# Targets from issue 9 (fastnet-both / kernel unless noted).
TARGETS = {
    "redis SET -P 1": "≥ 2.0×",
    "redis GET -P 1": "≥ 2.0×",
    "nginx wrk -c32": "≥ 1.5×",
    "sockperf ping-pong p50": "≤ 0.6×",
    "sockperf busy-poll ping-pong p50": "≤ 0.6×",
    "iperf3 single stream": "≥ 1.0×",
}


def read_tsv(path, ncols):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            cols += [""] * (ncols - len(cols))
            rows.append(cols[:ncols])
    return rows


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def fmt_value(v, unit):
    x = num(v)
    if x is None:
        return v
    if unit in ("req/s", "conn/s"):
        return f"{x:,.0f}"
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


class Row:
    def __init__(self, workload):
        self.workload = workload
        self.unit = ""
        self.better = "higher"
        self.cpu_unit = ""
        self.value = {}  # mode -> median value (string)
        self.spread = {}  # mode -> (max - min) / 2 / median, when repeated
        self.note = {}
        self.scpu = {}  # mode -> server CPU per unit of the median run
        self.ccpu = {}
        self.sproc = {}  # mode -> CPU of the server's own processes per unit (cgroup)
        self.cproc = {}
        self.runs = {}  # mode -> [(value, scpu, ccpu, sproc, cproc)]

    def settle(self):
        """Picks the median run of each mode (its CPU figures go with it)."""
        for mode, runs in self.runs.items():
            runs.sort(key=lambda r: num(r[0]))
            value, scpu, ccpu, sproc, cproc = runs[(len(runs) - 1) // 2]
            self.value[mode] = value
            for table, v in (
                (self.scpu, scpu),
                (self.ccpu, ccpu),
                (self.sproc, sproc),
                (self.cproc, cproc),
            ):
                if v:
                    table[mode] = v
            lo, hi, mid = num(runs[0][0]), num(runs[-1][0]), num(value)
            if len(runs) > 1 and mid:
                self.spread[mode] = (hi - lo) / 2 / mid

    def ratio(self, mode):
        k, f = num(self.value.get("kernel", "")), num(self.value.get(mode, ""))
        if k is None or f is None or k == 0:
            return None
        return f / k

    def cell(self, mode):
        if mode in self.value and self.value[mode] != "":
            text = fmt_value(self.value[mode], self.unit)
            if mode in self.spread:
                text += f" ±{self.spread[mode] * 100:.0f}%"
            return text
        return self.note.get(mode, "not run")


def load_rows(path):
    rows = {}
    order = []
    for wl, mode, value, unit, better, scpu, ccpu, cpu_unit, note, sproc, cproc in read_tsv(
        path, 11
    ):
        if wl not in rows:
            rows[wl] = Row(wl)
            order.append(wl)
        r = rows[wl]
        r.unit, r.better = unit or r.unit, better or r.better
        r.cpu_unit = cpu_unit or r.cpu_unit
        if num(value) is not None:
            r.runs.setdefault(mode, []).append((value, scpu, ccpu, sproc, cproc))
        elif note:
            r.note[mode] = note
    for r in rows.values():
        r.settle()
    return [rows[w] for w in order]


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}×"


def svg_chart(rows, path):
    """Horizontal grouped bars: fastnet-server/kernel and fastnet-both/kernel per workload."""
    series = [("fastnet-server", "#6baed6"), ("fastnet-both", "#08519c")]
    ratios = [r.ratio(m) for r in rows for m, _ in series]
    top = max([2.0] + [x * 1.1 for x in ratios if x is not None])
    label_w, plot_w, bar_h, gap = 260, 460, 14, 12
    group_h = bar_h * len(series) + gap
    height = 60 + group_h * len(rows) + 40
    width = label_w + plot_w + 80

    def x_of(v):
        return label_w + plot_w * v / top

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">'
        "fastnet / kernel ratio per workload (same run; latency rows: lower is better)</text>",
    ]
    y0 = 40
    # Grid every 0.5×, with the 1.0× line emphasised.
    tick = 0.0
    while tick <= top + 1e-9:
        x = x_of(tick)
        stroke = "#000" if abs(tick - 1.0) < 1e-9 else "#ddd"
        out.append(
            f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{height - 35}" stroke="{stroke}"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{height - 22}" text-anchor="middle">{tick:.1f}×</text>'
        )
        tick += 0.5
    for i, r in enumerate(rows):
        gy = y0 + i * group_h + gap / 2
        out.append(
            f'<text x="{label_w - 8}" y="{gy + bar_h + 4:.1f}" text-anchor="end">'
            f"{html.escape(r.workload)}</text>"
        )
        for j, (mode, color) in enumerate(series):
            by = gy + j * bar_h
            v = r.ratio(mode)
            if v is None:
                out.append(
                    f'<text x="{label_w + 4}" y="{by + bar_h - 3:.1f}" fill="#888">'
                    f"{mode}: n/a</text>"
                )
                continue
            out.append(
                f'<rect x="{label_w}" y="{by:.1f}" width="{x_of(v) - label_w:.1f}" '
                f'height="{bar_h - 2}" fill="{color}"><title>{mode}: {v:.2f}×</title></rect>'
            )
            out.append(
                f'<text x="{x_of(v) + 4:.1f}" y="{by + bar_h - 3:.1f}">{v:.2f}×</text>'
            )
    lx = label_w
    for mode, color in series:
        out.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
        )
        out.append(f'<text x="{lx + 14}" y="{height - 5}">{mode} ÷ kernel</text>')
        lx += 170
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def cpu_table(w, rows, server_attr, client_attr):
    w(
        "| workload | unit | kernel server | kernel client | fastnet-server server "
        "| fastnet-server client | fastnet-both server | fastnet-both client "
        "| server CPU both ÷ kernel |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    seen = set()
    for r in rows:
        if not r.cpu_unit:
            continue  # a count about a run (retransmissions, errors), not work done
        # p50 and p99 come from the same sockperf run: one CPU row is enough.
        key = r.workload.rsplit(" ", 1)[0] if r.workload.startswith("sockperf") else r.workload
        if key in seen:
            continue
        seen.add(key)
        server, client = getattr(r, server_attr), getattr(r, client_attr)
        cells = []
        for m in MODES:
            cells += [server.get(m, "n/a"), client.get(m, "n/a")]
        k, f = num(server.get("kernel", "")), num(server.get("fastnet-both", ""))
        ratio = fmt_ratio(f / k if k and f is not None else None)
        w(f"| {key} | {r.cpu_unit} | " + " | ".join(cells) + f" | {ratio} |")
    w("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--micro", required=True)
    ap.add_argument("--commands", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--fastpath", default=None, help="fast-path check results (tsv)")
    ap.add_argument("--configs", nargs="*", default=[], help="config files to quote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--svg", required=True)
    a = ap.parse_args()

    meta = dict((k, v) for k, v in read_tsv(a.meta, 2))
    rows = load_rows(a.results)
    micro = read_tsv(a.micro, 5)
    commands = read_tsv(a.commands, 3)
    svg_chart(rows, a.svg)

    md = []
    w = md.append
    w("# fastnet benchmarks")
    w("")
    w("Regenerated by `make bench` (scripts/bench.sh); do not edit by hand.")
    w("")
    w(f"- date: {meta.get('date', '?')}; commit {meta.get('commit', '?')}")
    w(f"- machine: {meta.get('cpu', '?')}, kernel {meta.get('kernel', '?')}")
    w(
        f"- topology: {meta.get('topology', '?')}; kernel TCP congestion control "
        f"{meta.get('congestion', '?')}"
    )
    w(
        f"- each timed run: {meta.get('seconds', '?')} s, {meta.get('repeat', '?')} runs per "
        "cell (the median is shown, ± half the min-max range); load average before/after: "
        f"{meta.get('load_before', '?')} / {meta.get('load_after', '?')} (other work on "
        "the machine shows up in the CPU columns)"
    )
    if "interference" in meta:
        w(
            f"- other processes used {meta['interference']} of the two cores while the "
            "workloads ran (their busy time minus our server's and client's cgroups). "
            "Rates measured on a busy machine are low and noisy, and the contention favours "
            "a busy-polling process (the fast path) over one that sleeps and waits to be "
            "woken (the kernel path): above ~20% the ratios overstate fastnet; trust the "
            "cgroup CPU table and rerun on a quiet machine"
        )
    w(f"- shim: {meta.get('shim', '?')}")
    w("")
    w("## Results")
    w("")
    w(
        "Ratios are fastnet ÷ kernel from the same run: above 1 is better for rates, below "
        "1 is better for latency (µs) rows. `n/a` rows were not measured, with the reason; "
        "no number is ever filled in for them."
    )
    w("")
    w(
        "The fastnet columns run only when a probe passes: `fastnet run --help` works and "
        "a TCP echo crosses the veth with both ends under `fastnet run`. The fast-path "
        "check below the table tells a real fast path from a silent fallback to the kernel."
    )
    w("")
    w(
        "| workload | unit | kernel | fastnet-server | fastnet-both | server ÷ kernel "
        "| both ÷ kernel | target | kernel in DESIGN.md |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        w(
            f"| {r.workload} | {r.unit} | {r.cell('kernel')} | {r.cell('fastnet-server')} "
            f"| {r.cell('fastnet-both')} | {fmt_ratio(r.ratio('fastnet-server'))} "
            f"| {fmt_ratio(r.ratio('fastnet-both'))} | {TARGETS.get(r.workload, '')} "
            f"| {DESIGN_KERNEL.get(r.workload, '')} |"
        )
    w("")
    if any(r.workload.startswith("sockperf busy-poll") for r in rows):
        w(
            "sockperf rows: `ping-pong` runs the shim in its default block mode; "
            "`busy-poll ping-pong` runs it with `FASTNET_POLL=busy` (a waiting thread spins "
            "on the RX rings for `FASTNET_SPIN_US` before it sleeps). This kernel has no "
            "busy poll of its own, so the kernel column of the busy-poll rows is the "
            "kernel's block-mode runs (the same runs as the `ping-pong` rows); the CPU "
            "tables show what the spinning costs."
        )
        w("")
    w(
        "nginx rows: keep-alive and `Connection: close` each run on a fresh server (the "
        "repetitions of one kind share it), so the TIME-WAITs the close runs leave "
        "behind never weigh on the keep-alive runs."
    )
    w("")
    fastpath = read_tsv(a.fastpath, 4) if a.fastpath and os.path.exists(a.fastpath) else []
    if fastpath:
        w("")
        w(
            "Fast-path check: `fastnet stat` on the server process (and its children) after "
            "each workload, summed over its runs. No frames through AF_XDP means the numbers "
            "above are the kernel's, reached through the shim."
        )
        w("")
        w("| workload | mode | server rx.frames | server tx.frames | path |")
        w("|---|---|---:|---:|---|")
        for group, mode, rx, tx in fastpath:
            path = "fast path" if (num(rx) or 0) > 0 else "**kernel (no AF_XDP frames)**"
            w(f"| {group} | {mode} | {rx} | {tx} | {path} |")
    w("")
    svg_link = os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.out)))
    w(f"![fastnet / kernel ratios]({svg_link})")
    w("")
    w("## CPU time per unit of work")
    w("")
    w(
        "Busy time (user + system + irq + softirq) of the server core and the client core "
        "from /proc/stat, divided by the requests (messages, MiB) the client completed. "
        "With 2 cores the client is often the bottleneck, so requests/s alone undersells a "
        "cheaper server. Issue 9's target: server CPU per request ≤ 0.5× the kernel's."
    )
    w("")
    cpu_table(w, rows, "scpu", "ccpu")
    w(
        "The same, counting only the CPU time of the benchmark's own processes (server "
        "and client each in a cpuacct cgroup of their own; softirq work is charged to "
        "whichever of them was running, as the kernel has no IRQ time accounting; work done in ksoftirqd is missed). "
        "Unlike the table above this is not inflated by other work on the machine."
    )
    w("")
    cpu_table(w, rows, "sproc", "cproc")
    w("## Microbenchmarks from the other parts")
    w("")
    w(
        "Each `scripts/bench-<name>.sh` runs with the topology variables (`SERVER_NS`, "
        "`CLIENT_NS`, `SERVER_IF`, `CLIENT_IF`, `SERVER_IP`, `CLIENT_IP`, `FASTNET`, "
        "`BENCH_SECONDS`) in its environment and prints one line per result: "
        "`bench<TAB>name<TAB>value<TAB>unit<TAB>note`."
    )
    w("")
    w("| script | benchmark | value | unit | note |")
    w("|---|---|---:|---|---|")
    for script, name, value, unit, note in micro:
        w(f"| {script} | {name} | {value} | {unit} | {note} |")
    w("")
    w("## Exact commands")
    w("")
    w(
        "As run for the kernel rows. The fastnet rows run the same commands with "
        "`$FASTNET run --iface $SERVER_IF --` (server side) and "
        "`$FASTNET run --iface $CLIENT_IF --` (client side, fastnet-both) inserted after "
        "`taskset -c N` (`env FASTNET_POLL=busy` before it for the sockperf busy-poll rows). Topology: `eval \"$(fastnet netns up --owner $$)\"`. Server and "
        "client run at `nice -n -10`, each in a cpuacct cgroup of the harness. "
        "redis-benchmark counts requests, so `-n` is sized in each mode by a short unmeasured "
        "run to last about BENCH_SECONDS."
    )
    w("")
    w("```sh")
    for name, side, cmd in commands:
        w(f"# {name} ({side})")
        w(cmd)
    w("```")
    for path in a.configs:
        if not os.path.exists(path):
            continue
        w("")
        w(f"`{os.path.basename(path)}` (written by bench.sh; paths point into the run's "
          "scratch directory):")
        w("")
        w("```nginx")
        with open(path, encoding="utf-8") as f:
            w(f.read().rstrip("\n"))
        w("```")
    w("")
    w("## How to run")
    w("")
    w("```sh")
    w("make bench                          # everything, about 10 minutes on a quiet machine")
    w("BENCH_SECONDS=3 make bench          # shorter runs")
    w("BENCH_ONLY='redis nginx' make bench # a subset: redis nginx sockperf iperf3 hooks")
    w("FASTNET_BENCH_SHIM=0 make bench     # kernel rows only")
    w("```")
    w("")
    w("Raw output of the last run: `target/bench-last/`.")
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
