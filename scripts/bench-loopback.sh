#!/usr/bin/env bash
# Loopback plug-in for `make bench` (see scripts/bench.sh): one process, two threads, one
# TCP connection over 127.0.0.1 (tests/src/bin/loopback_bench.rs): 1-byte ping-pong and
# one-way bulk, on kernel loopback and under `fastnet run --loopback process` (the
# process's own stack, no interface; ping-pong also in busy mode), alternating, 3 rounds
# each; medians and ratios. Then redis-server + redis-benchmark on kernel loopback vs
# both under `--loopback host` (two fastnet processes, stack to stack).
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
for round in 1 2 3; do
    for mode in pingpong bulk; do
        echo "kernel $( $pin "$bin" $mode $secs )" | tee -a "$out" >&2
        echo "fastnet $( $pin "$fastnet" run --loopback process -- "$bin" $mode $secs )" | tee -a "$out" >&2
    done
    # Busy mode: each waiting thread spins (FASTNET_SPIN_US) before it sleeps.
    echo "busy $( FASTNET_POLL=busy $pin "$fastnet" run --loopback process -- "$bin" pingpong $secs )" | tee -a "$out" >&2
done
# Host mode: redis-server and redis-benchmark, two processes, on 127.0.0.1 of a
# namespace of our own: both stock on the kernel, then both under `--loopback host`.
ns=fastnet-lobench-$$
ip netns add "$ns" && ip -n "$ns" link set lo up
cleanup_ns() {
    local i
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p"; done
    # The namespace's host-loopback registry goes with it.
    i=$(stat -L -c %i "/run/netns/$ns" 2>/dev/null) && rm -f "/dev/shm/fastnet-lo-ns$i.registry"
    ip netns del "$ns" 2>/dev/null || true
}
trap 'rm -f "$out"; cleanup_ns' EXIT
redis_round() { # $1: kernel|host
    local pre=() i
    [ "$1" = host ] && pre=("$fastnet" run --loopback host --)
    ip netns exec "$ns" "${pre[@]}" redis-server --port 16390 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
    for i in $(seq 100); do ip netns exec "$ns" redis-cli -p 16390 ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    ip netns exec "$ns" $pin "${pre[@]}" redis-benchmark -h 127.0.0.1 -p 16390 -c 32 -n 200000 -t set,get -q 2>/dev/null |
        tr '\r' '\n' | awk -v who="$1" '/requests per second/ {sub(":", "", $1); printf "%s mode=redis_%s rps=%s\n", who, $1, $2}' | tee -a "$out" >&2
    for p in $(ip netns pids "$ns"); do kill "$p"; done
    sleep 0.3
}
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
    for round in 1 2 3; do redis_round kernel; redis_round host; done
fi
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
for t in ("SET", "GET"):
    if ("host", f"redis_{t}", "rps") in rows and ("kernel", f"redis_{t}", "rps") in rows:
        k, h = med("kernel", f"redis_{t}", "rps"), med("host", f"redis_{t}", "rps")
        print(f"bench\tloopback redis {t} (kernel)\t{k:.0f}\treq/s\tredis-server + redis-benchmark -c 32 on 127.0.0.1, both stock")
        print(f"bench\tloopback redis {t} (fastnet host)\t{h:.0f}\treq/s\tboth under --loopback host (stack to stack)")
        print(f"bench\tloopback redis {t} ratio\t{h / k:.3f}\tx\thost mode / kernel loopback")
PY
