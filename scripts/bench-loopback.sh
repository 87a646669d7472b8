#!/usr/bin/env bash
# Loopback plug-in for `make bench` (see scripts/bench.sh): one process, two threads, one
# TCP connection over 127.0.0.1 (tests/src/bin/loopback_bench.rs): 1-byte ping-pong and
# one-way bulk, on kernel loopback and under `fastnet run --loopback process` (the
# process's own stack, no interface; ping-pong also in busy mode), alternating, 3 rounds
# each; medians and ratios.
# Prints "bench<TAB>name<TAB>value<TAB>unit<TAB>note" lines.
#   BENCH_SECONDS (default 5): seconds per run is a fifth of it (min 1)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CARGO_TARGET_DIR:-target}/release
[ -n "${FASTNET:-}" ] && dir=$(dirname "$FASTNET")
bin=$dir/loopback_bench
[ -x "$bin" ] || cargo build --release -p fastnet-e2e --bin loopback_bench >&2
fastnet=${FASTNET:-$dir/fastnet}
secs=$(( ${BENCH_SECONDS:-5} / 5 )); [ "$secs" -ge 1 ] || secs=1
pin=""
command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ] && pin="taskset -c 0,1"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in 1 2 3; do
    for mode in pingpong bulk; do
        echo "kernel $( $pin "$bin" $mode $secs )" | tee -a "$out" >&2
        echo "fastnet $( $pin "$fastnet" run --loopback process -- "$bin" $mode $secs )" | tee -a "$out" >&2
    done
    # Busy mode: each waiting thread spins (FASTNET_SPIN_US) before it sleeps.
    echo "busy $( FASTNET_POLL=busy $pin "$fastnet" run --loopback process -- "$bin" pingpong $secs )" | tee -a "$out" >&2
done
python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, rest = line.split(" ", 1)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", rest))
    mode = re.search(r"mode=(\w+)", rest).group(1)
    for k, v in kv.items():
        rows.setdefault((who, mode, k), []).append(float(v))
med = lambda who, mode, k: statistics.median(rows[(who, mode, k)])
def out(name, who, mode, k, unit, note):
    print(f"bench\t{name}\t{med(who, mode, k):.2f}\t{unit}\t{note}")
for who in ("kernel", "fastnet"):
    out(f"loopback pingpong p50 ({who})", who, "pingpong", "p50_us", "µs", "two threads, one process, 1 byte, median of 3")
    out(f"loopback pingpong p99 ({who})", who, "pingpong", "p99_us", "µs", "")
    out(f"loopback pingpong CPU ({who})", who, "pingpong", "cpu_us_per_rt", "µs/round trip", "both threads")
    out(f"loopback bulk ({who})", who, "bulk", "mb_per_sec", "MB/s", "64 KiB writes, one connection")
    out(f"loopback bulk CPU ({who})", who, "bulk", "cpu_s_per_gb", "CPU s/GB", "")
out("loopback pingpong p50 (fastnet busy)", "busy", "pingpong", "p50_us", "µs", "FASTNET_POLL=busy: both threads spin before sleeping")
out("loopback pingpong p99 (fastnet busy)", "busy", "pingpong", "p99_us", "µs", "")
out("loopback pingpong CPU (fastnet busy)", "busy", "pingpong", "cpu_us_per_rt", "µs/round trip", "")
r = lambda mode, k, who="fastnet": med(who, mode, k) / med("kernel", mode, k)
print(f"bench\tloopback pingpong p50 ratio (busy)\t{r('pingpong', 'p50_us', 'busy'):.3f}\tx\tfastnet busy / kernel (lower is better)")
print(f"bench\tloopback pingpong p50 ratio\t{r('pingpong', 'p50_us'):.3f}\tx\tfastnet / kernel (lower is better)")
print(f"bench\tloopback pingpong rate ratio\t{r('pingpong', 'per_sec'):.3f}\tx\tround trips/s, fastnet / kernel")
print(f"bench\tloopback bulk ratio\t{r('bulk', 'mb_per_sec'):.3f}\tx\tMB/s, fastnet / kernel")
print(f"bench\tloopback bulk CPU ratio\t{r('bulk', 'cpu_s_per_gb'):.3f}\tx\tCPU per byte, fastnet / kernel (lower is better)")
PY
