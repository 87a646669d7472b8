#!/usr/bin/env bash
# Kernel-path plug-in for `make bench` (see scripts/bench.sh): what running under fastnet
# costs a program whose sockets all stay on the kernel. redis-server + redis-benchmark
# -P1 -c32 (SET and GET) across the two namespaces, both ends in the same mode:
#   plain         both stock
#   pass-through  both under `fastnet run` with no interface named
#   fallen-back   both with FASTNET_IFACE naming an interface that does not exist
#                 (FASTNET_FALLBACK=kernel): the fast path tries to start on the first
#                 socket, fails, and the process runs on the kernel
# Each round runs the three modes back to back (order rotated per round; a fresh server
# per mode), server pinned to one core and client to the other; the ratio to plain is
# taken per round, and the report shows the median over the rounds. Then the start-up
# cost of a short process (`true`) in each mode. Prints
# "bench<TAB>name<TAB>value<TAB>unit<TAB>note" lines; asserts nothing.
# Knobs: BENCH_PT_ROUNDS (9), BENCH_PT_REQUESTS (50000 per test and run),
#   BENCH_PT_MODES ("plain pass-through fallen-back"; plain is needed for the ratios),
#   BENCH_PT_SCHED (fifo: SCHED_FIFO for server and client, so that other work on a busy
#   machine does not decide the ratio; nice: nice -n -10 like bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CARGO_TARGET_DIR:-target}/release
fastnet=${FASTNET:-$dir/fastnet}
fastnet=$(realpath "$fastnet")
rounds=${BENCH_PT_ROUNDS:-9}
requests=${BENCH_PT_REQUESTS:-50000}
port=16391
for tool in redis-server redis-benchmark redis-cli taskset python3; do
    command -v "$tool" >/dev/null || { echo "bench-passthrough: $tool missing: run \`make deps\`" >&2; exit 1; }
done
own_topology=""
if [ -z "${SERVER_NS:-}" ]; then
    eval "$("$fastnet" netns up --owner $$)"
    own_topology=$FASTNET_TAG
fi
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}
case ${BENCH_PT_SCHED:-fifo} in
    fifo) sched=(chrt -f 10) ;;
    *) sched=(nice -n -10) ;;
esac
out=$(mktemp)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -f "$out"
    if [ -n "$own_topology" ]; then "$fastnet" netns down "$own_topology" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The command prefix of each mode (empty: stock).
prefix() {
    case $1 in
        plain) ;;
        pass-through) echo "$fastnet run --" ;;
        fallen-back) echo "env FASTNET_IFACE=fastnet-none0 FASTNET_FALLBACK=kernel $fastnet run --" ;;
    esac
}

# Nanoseconds the server process has run (all its threads), from the scheduler.
server_cpu_ns() {
    cat /proc/"$server_pid"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
}

one_run() { # mode round
    local mode=$1 round=$2 i line
    # shellcheck disable=SC2046
    ip netns exec "$SERVER_NS" taskset -c "$server_cpu" "${sched[@]}" $(prefix "$mode") \
        redis-server --port $port --bind "$SERVER_IP" --save "" --appendonly no \
        --protected-mode no >/dev/null 2>&1 &
    server_pid=$!
    for i in $(seq 100); do
        ip netns exec "$CLIENT_NS" redis-cli -h "$SERVER_IP" -p $port ping 2>/dev/null | grep -q PONG && break
        sleep 0.05
    done
    cpu0=$(server_cpu_ns)
    # shellcheck disable=SC2046
    line=$(ip netns exec "$CLIENT_NS" taskset -c "$client_cpu" "${sched[@]}" $(prefix "$mode") \
        redis-benchmark -h "$SERVER_IP" -p $port -c 32 -P 1 -t set,get -n "$requests" --csv 2>/dev/null |
        tr -d '"' | awk -F, '$1=="SET"||$1=="GET"{printf " %s=%s", $1, $2}') || true
    line="$line CPU=$(( ($(server_cpu_ns) - cpu0) / (2 * requests) ))"
    echo "$round $mode$line" | tee -a "$out" >&2
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

read -r -a modes <<<"${BENCH_PT_MODES:-plain pass-through fallen-back}"
for round in $(seq "$rounds"); do
    for k in "${!modes[@]}"; do
        one_run "${modes[$(((round + k) % ${#modes[@]}))]}" "$round"
    done
done

# Start-up: wall time of `true` in each mode, alternating, 30 times each.
python3 - "$fastnet" >>"$out" <<'PY'
import os, subprocess, sys, time
fastnet = sys.argv[1]
cmds = {
    "plain": ["true"],
    "pass-through": [fastnet, "run", "--", "true"],
    "fallen-back": [fastnet, "run", "--", "true"],
}
env = dict(os.environ)
envs = {
    "plain": env,
    "pass-through": env,
    "fallen-back": {**env, "FASTNET_IFACE": "fastnet-none0", "FASTNET_FALLBACK": "kernel"},
}
for i in range(30):
    for mode, cmd in cmds.items():
        t = time.perf_counter()
        subprocess.run(cmd, env=envs[mode], stderr=subprocess.DEVNULL)
        print(f"start {mode} ms={(time.perf_counter() - t) * 1e3:.3f}")
PY

python3 - "$out" "$requests" "${BENCH_PT_SCHED:-fifo}" <<'PY'
import re, statistics, sys
rounds, starts = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "start":
        starts.setdefault(f[1], []).append(float(f[2].split("=")[1]))
        continue
    for kv in f[2:]:
        t, v = kv.split("=")
        rounds.setdefault(f[0], {}).setdefault(f[1], {})[t] = float(v)
sched = "SCHED_FIFO" if sys.argv[3] == "fifo" else "nice -10"
note = f"redis-benchmark -c32 -P1 -n {sys.argv[2]}, both ends in the mode, median of {len(rounds)} rounds, {sched}"
for t in ("SET", "GET"):
    for mode in ("plain", "pass-through", "fallen-back"):
        v = [r[mode][t] for r in rounds.values() if t in r.get(mode, {})]
        if v:
            print(f"bench\tkernel path redis {t} ({mode})\t{statistics.median(v):.0f}\treq/s\t{note}")
    for mode in ("pass-through", "fallen-back"):
        ratios = [r[mode][t] / r["plain"][t] for r in rounds.values()
                  if t in r.get(mode, {}) and t in r.get("plain", {})]
        if ratios:
            spread = f"rounds {min(ratios):.2f}..{max(ratios):.2f}"
            print(f"bench\tkernel path redis {t} ratio ({mode})\t{statistics.median(ratios):.3f}\tx\t{mode} / plain, per-round ratios, median ({spread}; target >= 0.97)")
cpu = {m: [r[m]["CPU"] for r in rounds.values() if "CPU" in r.get(m, {})] for m in ("plain", "pass-through", "fallen-back")}
for mode in ("plain", "pass-through", "fallen-back"):
    if cpu[mode]:
        print(f"bench\tkernel path redis-server CPU ({mode})\t{statistics.median(cpu[mode]) / 1e3:.2f}\tµs/req\tserver process, SET and GET together, median of {len(cpu[mode])} rounds")
for mode in ("pass-through", "fallen-back"):
    ratios = [r[mode]["CPU"] / r["plain"]["CPU"] for r in rounds.values()
              if "CPU" in r.get(mode, {}) and "CPU" in r.get("plain", {}) and r["plain"]["CPU"] > 0]
    if ratios:
        print(f"bench\tkernel path redis-server CPU ratio ({mode})\t{statistics.median(ratios):.3f}\tx\t{mode} / plain per request, per-round ratios, median (rounds {min(ratios):.2f}..{max(ratios):.2f}; lower is better)")
for mode in ("plain", "pass-through", "fallen-back"):
    if mode in starts:
        print(f"bench\tkernel path start-up of true ({mode})\t{statistics.median(starts[mode]):.2f}\tms\twall time of one process, median of {len(starts[mode])}")
PY
