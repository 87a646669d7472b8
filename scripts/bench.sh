#!/usr/bin/env bash
# `make bench`: every workload three ways on the two-namespace topology, in one run:
#   kernel          stock server, stock client
#   fastnet-server  server under `fastnet run`, stock client
#   fastnet-both    server and client under `fastnet run`
# Server pinned to one core, client to the other (taskset). CPU time per request/byte on
# both cores from /proc/stat deltas, and of the server's and client's own processes from
# cpuacct cgroups. Writes BENCHMARKS.md and BENCHMARKS.svg; raw output in target/bench-last.
#
# Knobs (environment):
#   BENCH_SECONDS=4        length of each timed client run (redis: request count scaled)
#   BENCH_REPEAT=3         client runs per workload and mode; the report shows the median
#   BENCH_ONLY="redis nginx shapes sockperf iperf3 hooks"   subset of workload groups
#   BENCH_OUT=BENCHMARKS.md   BENCH_SVG=BENCHMARKS.svg   where the report goes
#   FASTNET_BENCH_SHIM=0   treat the shim as unusable (fastnet rows print n/a)
#   FASTNET=target/release/fastnet
#   BENCH_SERVER_CPU=0 BENCH_CLIENT_CPU=1
#   BENCH_NICE=-10         priority of server and client over other work on the machine
#   BENCH_WAIT_QUIET=0     before each client run, wait up to this many seconds for a
#                          second in which other processes use < 20% of the two cores
#   BENCH_MTU=1500         MTU of both veth ends, for every mode (up to 3506: native XDP
#                          with one 4 KiB AF_XDP frame); the kernel rows run on it too
# Plug-in benchmarks: every scripts/bench-*.sh (hook overhead, XDP, stack
# microbenchmarks, ...) runs under bash with the topology in its environment and prints
# result lines "bench<TAB>name<TAB>value<TAB>unit<TAB>note"; see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

FASTNET=${FASTNET:-target/release/fastnet}
BENCH_SECONDS=${BENCH_SECONDS:-4}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_ONLY=${BENCH_ONLY:-redis nginx shapes sockperf iperf3 hooks}
BENCH_OUT=${BENCH_OUT:-BENCHMARKS.md}
BENCH_SVG=${BENCH_SVG:-BENCHMARKS.svg}
NICE=${BENCH_NICE:--10}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
MTU=${BENCH_MTU:-1500}
MODES="kernel fastnet-server fastnet-both"

[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces): run with sudo" >&2; exit 1; }
[ -x "$FASTNET" ] || { echo "bench: $FASTNET missing: run \`make build\` first" >&2; exit 1; }
FASTNET=$(realpath "$FASTNET")
for tool in redis-server redis-benchmark nginx wrk sockperf iperf3 taskset socat python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool missing: run \`make deps\`" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/fastnet-bench.XXXXXX)
LOGS=target/bench-last
rm -rf "$LOGS" && mkdir -p "$LOGS"
RESULTS=$LOGS/results.tsv
MICRO=$LOGS/micro.tsv
COMMANDS=$LOGS/commands.txt
META=$LOGS/meta.tsv
FASTPATH=$LOGS/fastpath.tsv
: >"$RESULTS"
: >"$MICRO"
: >"$COMMANDS"
: >"$META"
: >"$FASTPATH"
SERVER_PID=""
CG=""

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    if [ -n "${FASTNET_TAG:-}" ]; then "$FASTNET" netns down "$FASTNET_TAG" || true; fi
    rm -rf "$WORK"
    if [ -n "$CG" ]; then
        # Emptied by the teardown above (it ends what ran in our namespaces).
        for _ in 1 2 3 4 5; do
            rmdir "$CG/server" "$CG/client" "$CG" 2>/dev/null && break
            sleep 0.2
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eval "$("$FASTNET" netns up --owner $$ --mtu "$MTU")"
export FASTNET FASTNET_TAG SERVER_NS CLIENT_NS SERVER_IF CLIENT_IF SERVER_IP CLIENT_IP SERVER_IP6 CLIENT_IP6 BENCH_SECONDS

# A client's TIME_WAIT sockets must not run it out of ports in the connection-rate test
# (these sysctls are per network namespace: ours only).
ip netns exec "$CLIENT_NS" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
ip netns exec "$SERVER_NS" sysctl -qw net.core.somaxconn=4096

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta kernel "$(uname -r)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"
meta commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta seconds "$BENCH_SECONDS"
meta repeat "$BENCH_REPEAT"
meta congestion "$(ip netns exec "$SERVER_NS" sysctl -n net.ipv4.tcp_congestion_control)"
meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta topology "$SERVER_NS ($SERVER_IF $SERVER_IP, core $SERVER_CPU) <-> $CLIENT_NS ($CLIENT_IF $CLIENT_IP, core $CLIENT_CPU), veth (MTU $MTU), tx checksum offload off on both ends"

# Our own cpuacct cgroups (v1) for the server's and the client's processes: CPU time
# attributed to the benchmark itself, unaffected by whatever else runs on the cores.
CG_ROOT=/sys/fs/cgroup/cpuacct
if [ -w "$CG_ROOT" ] && mkdir "$CG_ROOT/fastnet-bench-$$" 2>/dev/null; then
    CG="$CG_ROOT/fastnet-bench-$$"
    mkdir "$CG/server" "$CG/client"
fi
# Prefix that runs a command inside cgroup $1 (when we have one); exec keeps the PID.
# It goes before `ip netns exec`, which mounts a sysfs of the namespace's own.
printf '#!/bin/sh\necho $$ >"$1/cgroup.procs" && shift && exec "$@"\n' >"$WORK/cgexec"
chmod +x "$WORK/cgexec"
cg_wrap() { if [ -n "$CG" ]; then echo "$WORK/cgexec $CG/$1"; fi; }
cg_usage() { if [ -n "$CG" ]; then cat "$CG/$1/cpuacct.usage"; else echo 0; fi; }

# Busy jiffies (everything but idle and iowait) of the server's cores and the client's
# (each a taskset list such as "0" or "0,1"), then nanoseconds used by our server and
# client cgroups.
cpu_busy() {
    echo "$(awk -v s="$SERVER_CPU" -v c="$CLIENT_CPU" '
        BEGIN { n = split(s, a, ","); for (i = 1; i <= n; i++) S["cpu" a[i]] = 1
                n = split(c, a, ","); for (i = 1; i <= n; i++) C["cpu" a[i]] = 1 }
        ($1 in S) { sb += $2+$3+$4+$7+$8+$9 }
        ($1 in C) { cb += $2+$3+$4+$7+$8+$9 }
        END { print sb+0, cb+0 }' /proc/stat)" \
        "$(cg_usage server) $(cg_usage client)"
}
HZ=$(getconf CLK_TCK)

# Prefix that puts a command under the shim for one side in one mode (empty: kernel).
# SHIM_ENV (e.g. FASTNET_POLL=busy) goes into the environment of whatever runs under it.
SHIM_ENV=""
shim_prefix() { # mode side
    local env=""
    [ -z "$SHIM_ENV" ] || env="env $SHIM_ENV "
    case "$1:$2" in
        fastnet-server:server | fastnet-both:server) echo "$env$FASTNET run --iface $SERVER_IF --" ;;
        fastnet-both:client) echo "$env$FASTNET run --iface $CLIENT_IF --" ;;
        *) echo "" ;;
    esac
}

# record workload mode value unit better cpu_unit units_done busy_before busy_after note
record() {
    local wl=$1 mode=$2 value=$3 unit=$4 better=$5 cpu_unit=$6 done=$7
    local sb0 cb0 sg0 cg0 sb1 cb1 sg1 cg1 scpu="" ccpu="" sproc="" cproc=""
    read -r sb0 cb0 sg0 cg0 <<<"$8"
    read -r sb1 cb1 sg1 cg1 <<<"$9"
    if [ -n "$done" ] && [ "$done" != 0 ]; then
        # jiffies -> microseconds per unit of work
        scpu=$(awk -v d=$((sb1 - sb0)) -v n="$done" -v hz="$HZ" 'BEGIN{printf "%.3f", d*1e6/hz/n}')
        ccpu=$(awk -v d=$((cb1 - cb0)) -v n="$done" -v hz="$HZ" 'BEGIN{printf "%.3f", d*1e6/hz/n}')
        if [ -n "$CG" ]; then
            # nanoseconds -> microseconds per unit of work
            sproc=$(awk -v d=$((sg1 - sg0)) -v n="$done" 'BEGIN{printf "%.3f", d/1e3/n}')
            cproc=$(awk -v d=$((cg1 - cg0)) -v n="$done" 'BEGIN{printf "%.3f", d/1e3/n}')
        fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$mode" "$value" "$unit" "$better" \
        "$scpu" "$ccpu" "$cpu_unit" "${10:-}" "$sproc" "$cproc" >>"$RESULTS"
}
record_na() { # workload mode unit better reason
    printf '%s\t%s\t\t%s\t%s\t\t\t\tn/a: %s\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"
}

# Remember the exact command of each workload once (as run in kernel mode).
note_command() { # workload side command...
    local wl=$1 side=$2
    shift 2
    grep -q "^$wl"$'\t'"$side"$'\t' "$COMMANDS" 2>/dev/null || printf '%s\t%s\t%s\n' "$wl" "$side" "$*" >>"$COMMANDS"
}

start_server() { # mode name command...
    local mode=$1 name=$2
    shift 2
    note_command "$name" server "ip netns exec \$SERVER_NS taskset -c $SERVER_CPU $(printf '%q ' "$@")"
    # shellcheck disable=SC2046
    $(cg_wrap server) ip netns exec "$SERVER_NS" nice -n "$NICE" taskset -c "$SERVER_CPU" \
        $(shim_prefix "$mode" server) "$@" \
        >"$LOGS/$name.$mode.server.log" 2>&1 &
    SERVER_PID=$!
}

wait_port() { # port
    for _ in $(seq 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then return 1; fi
        if ip netns exec "$CLIENT_NS" socat -T1 /dev/null "TCP:$SERVER_IP:$1,connect-timeout=1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Waits (at most BENCH_WAIT_QUIET seconds) for a second in which processes outside our
# cgroups use less than a fifth of the two cores: other work skews rates and latencies.
wait_quiet() {
    local deadline=$((SECONDS + ${BENCH_WAIT_QUIET:-0})) a b other
    [ -n "$CG" ] || return 0
    while [ $SECONDS -lt $deadline ]; do
        a=$(cpu_busy)
        sleep 1
        b=$(cpu_busy)
        other=$(echo "$a $b" | awk -v hz="$HZ" \
            '{o=(($5-$1)+($6-$2))*1e9/hz-(($7-$3)+($8-$4)); print (o < 0.2*2*1e9) ? 0 : 1}')
        [ "$other" = 0 ] && return 0
    done
    return 0
}

# run_client mode name command... ; output in $LOGS/name.mode.out, CPU snapshots in
# BUSY0/BUSY1. Returns the client's exit status.
run_client() {
    local mode=$1 name=$2
    shift 2
    wait_quiet
    note_command "${name%.r[0-9]*}" client "ip netns exec \$CLIENT_NS taskset -c $CLIENT_CPU $(printf '%q ' "$@")"
    BUSY0=$(cpu_busy)
    local rc=0
    # shellcheck disable=SC2046
    timeout $((BENCH_SECONDS * 4 + 30)) $(cg_wrap client) ip netns exec "$CLIENT_NS" \
        nice -n "$NICE" taskset -c "$CLIENT_CPU" $(shim_prefix "$mode" client) "$@" \
        >"$LOGS/$name.$mode.out" 2>&1 || rc=$?
    BUSY1=$(cpu_busy)
    return $rc
}

# --- is the shim usable? ------------------------------------------------------------
# A quick probe: `fastnet run` exists and carries one TCP echo across the veth with the
# server (and, for fastnet-both, the client) under the shim. Anything else: n/a.
SHIM_REASON=""
probe_shim() {
    if [ "${FASTNET_BENCH_SHIM:-1}" = 0 ]; then
        SHIM_REASON="FASTNET_BENCH_SHIM=0"
        return 1
    fi
    if ! "$FASTNET" run --help >/dev/null 2>&1; then
        SHIM_REASON="\`fastnet run\` does not exist yet"
        return 1
    fi
    local pid got
    ip netns exec "$SERVER_NS" timeout 20 "$FASTNET" run --iface "$SERVER_IF" -- \
        socat -T5 "TCP-LISTEN:7999,bind=$SERVER_IP,reuseaddr" EXEC:cat >"$LOGS/shim-probe.log" 2>&1 &
    pid=$!
    got=""
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        got=$(printf 'fastnet-probe' | ip netns exec "$CLIENT_NS" timeout 5 \
            "$FASTNET" run --iface "$CLIENT_IF" -- socat -T2 - "TCP:$SERVER_IP:7999" 2>>"$LOGS/shim-probe.log") && break
        sleep 0.2
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$got" != "fastnet-probe" ]; then
        SHIM_REASON="\`fastnet run\` failed a TCP echo probe: $(grep -m1 . "$LOGS/shim-probe.log" | tr -d '|' | cut -c1-120)"
        return 1
    fi
    return 0
}
if probe_shim; then SHIM_OK=1; else SHIM_OK=0; fi
meta shim "$([ $SHIM_OK = 1 ] && echo "usable" || echo "not usable: $SHIM_REASON")"
echo "bench: topology $FASTNET_TAG; shim: $([ $SHIM_OK = 1 ] && echo usable || echo "$SHIM_REASON"); ${BENCH_SECONDS}s per run"

# Did the server really use the fast path? `fastnet stat` on the server process and its
# children (nginx's worker) after a workload: frames that went through AF_XDP.
fast_path_check() { # workload-group mode
    [ "$2" = kernel ] && return 0
    local out="$LOGS/$1.$2.stat" pid
    : >"$out"
    for pid in "$SERVER_PID" $(ps -o pid= --ppid "$SERVER_PID" 2>/dev/null); do
        "$FASTNET" stat "$pid" >>"$out" 2>&1 || true
    done
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" \
        "$(awk '$1=="rx.frames"{s+=$2} END{print s+0}' "$out")" \
        "$(awk '$1=="tx.frames"{s+=$2} END{print s+0}' "$out")" >>"$FASTPATH"
}

wants() { case " $BENCH_ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- workloads ------------------------------------------------------------------------

REDIS_PORT=6379
# redis-benchmark counts requests, not seconds: a short unmeasured run in the same mode
# sizes the measured ones to about BENCH_SECONDS (a busy machine or a slow fast path
# can be 5x slower; a fixed count would then run far past the timeout).
redis_calibrate() { # mode pipeline test
    local n=20000 rps
    [ "$2" = 1 ] || n=200000
    # shellcheck disable=SC2046
    rps=$(timeout 30 ip netns exec "$CLIENT_NS" taskset -c "$CLIENT_CPU" \
        $(shim_prefix "$1" client) redis-benchmark -h "$SERVER_IP" -p $REDIS_PORT -c 32 \
        -P "$2" -t "${3,,}" -n $n --csv 2>/dev/null |
        awk -F'","' -v t="\"$3" '$1==t{print $2}' | tr -d '"' || true)
    echo "${rps:-$n}"
}

bench_redis() { # mode
    local mode=$1 p t n name rate rep
    start_server "$mode" redis redis-server --port $REDIS_PORT --bind "$SERVER_IP" \
        --save "" --appendonly no --protected-mode no
    if ! wait_port $REDIS_PORT; then
        stop_server
        for p in 1 16; do for t in SET GET; do
            record_na "redis $t -P $p" "$mode" "req/s" higher "redis-server did not start (see $LOGS/redis.$mode.server.log)"
        done; done
        return
    fi
    for p in 1 16; do
        for t in SET GET; do for rep in $(seq "$BENCH_REPEAT"); do
            [ "$rep" = 1 ] && rate=$(redis_calibrate "$mode" "$p" "$t")
            n=$(awk -v r="$rate" -v s="$BENCH_SECONDS" 'BEGIN{printf "%d", r*s}')
            name="redis-$t-P$p.r$rep"
            if run_client "$mode" "$name" redis-benchmark -h "$SERVER_IP" -p $REDIS_PORT \
                -c 32 -P "$p" -t "${t,,}" -n "$n" --csv; then
                local rps
                rps=$(awk -F'","' -v t="\"$t" '$1==t{print $2}' "$LOGS/$name.$mode.out" | tr -d '"')
                if [ -n "$rps" ]; then
                    record "redis $t -P $p" "$mode" "$rps" "req/s" higher "µs/req" "$n" "$BUSY0" "$BUSY1"
                    continue
                fi
            fi
            record_na "redis $t -P $p" "$mode" "req/s" higher "redis-benchmark failed (see $LOGS/$name.$mode.out)"
            break # a failure repeats; do not spend the timeout again
        done; done
    done
    fast_path_check redis "$mode"
    bench_idle "$mode"
    stop_server
}

# Idle cost (issue 23): the redis server holds 100 open connections on which nothing is
# sent for IDLE_SECONDS; the CPU its cgroup used meanwhile (the kernel's redis pays for
# its own 10 Hz timer only; fastnet's driver used to tick every millisecond).
IDLE_SECONDS=10
IDLE_ROW="idle server, 100 open connections"
bench_idle() { # mode (redis-server running)
    local mode=$1 hold u0 u1 ms
    if [ -z "$CG" ]; then
        record_na "$IDLE_ROW" "$mode" "ms CPU / ${IDLE_SECONDS} s" lower "no cpuacct cgroup to measure the server's CPU"
        return
    fi
    note_command idle client "python3: 100 connections to redis, one PING each, then ${IDLE_SECONDS} s of nothing"
    # shellcheck disable=SC2016
    ip netns exec "$CLIENT_NS" python3 -c '
import socket, sys, time
ss = [socket.create_connection((sys.argv[1], int(sys.argv[2]))) for i in range(100)]
for s in ss:
    s.sendall(b"PING\r\n")
    s.recv(100)
print("open", flush=True)
time.sleep(int(sys.argv[3]) + 5)' "$SERVER_IP" "$REDIS_PORT" "$IDLE_SECONDS" >"$LOGS/idle.$mode.out" 2>&1 &
    hold=$!
    for _ in $(seq 100); do grep -q open "$LOGS/idle.$mode.out" && break; sleep 0.1; done
    if ! grep -q open "$LOGS/idle.$mode.out"; then
        kill "$hold" 2>/dev/null || true; wait "$hold" 2>/dev/null || true
        record_na "$IDLE_ROW" "$mode" "ms CPU / ${IDLE_SECONDS} s" lower "the connections did not open (see $LOGS/idle.$mode.out)"
        return
    fi
    sleep 1
    u0=$(cg_usage server)
    sleep "$IDLE_SECONDS"
    u1=$(cg_usage server)
    kill "$hold" 2>/dev/null || true; wait "$hold" 2>/dev/null || true
    ms=$(awk -v d=$((u1 - u0)) 'BEGIN{printf "%.1f", d/1e6}')
    record "$IDLE_ROW" "$mode" "$ms" "ms CPU / ${IDLE_SECONDS} s" lower "" "" "" ""
}

NGINX_PORT=8080
write_nginx_conf() {
    mkdir -p "$WORK/www"
    # A small static file (128 bytes).
    head -c 128 /dev/zero | tr '\0' 'x' >"$WORK/www/small.html"
    cat >"$LOGS/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen $SERVER_IP:$NGINX_PORT backlog=4096;
        root $WORK/www;
    }
}
CONF
}

# Requests/s, or nothing when wrk completed no request at all (a failure, not a rate).
wrk_rps() { awk '/^Requests\/sec:/ && $2 > 0 {print $2}' "$1"; }
wrk_total() { awk '/requests in/{print $1}' "$1"; }
# Why a wrk run gave no rate.
wrk_failure() {
    if grep -q '^ *0 requests in' "$1"; then echo "0 requests completed (see $1)"; else echo "wrk failed (see $1)"; fi
}

# Retransmissions of the client side of the latest run: its kernel's (TcpRetransSegs of
# the client namespace, `nstat` before and after) or, under fastnet, its stack's (the
# exit counters FASTNET_STATS=1 prints).
client_retrans() { ip netns exec "$CLIENT_NS" nstat -asz TcpRetransSegs | awk '$1=="TcpRetransSegs"{print $2}'; }
CLOSE_RETRANS="nginx Connection: close, client retransmissions"
CLOSE_ERRORS="nginx Connection: close, wrk socket errors"
# The health of a Connection: close run, per 1000 connections (0 on this lossless veth:
# each retransmission of a short connection is an RTO of 0.2-1 s; issue 16).
record_close_health() { # mode out retrans_before
    local mode=$1 out=$2 conns retrans errors
    conns=$(wrk_total "$out")
    [ -n "$conns" ] && [ "$conns" != 0 ] || return 0
    if [ "$mode" = fastnet-both ]; then
        retrans=$(grep -o 'tcp\.retransmits=[0-9]*' "$out" | tail -1 | cut -d= -f2)
    else
        retrans=$(($(client_retrans) - $3))
    fi
    errors=$(awk '/Socket errors:/{gsub(/[^0-9]+/, " "); for (i = 1; i <= NF; i++) s += $i} END{print s + 0}' "$out")
    record "$CLOSE_RETRANS" "$mode" "$(awk -v r="${retrans:-0}" -v n="$conns" 'BEGIN{printf "%.3f", r*1000/n}')" \
        "per 1k conn" lower "" "" "0 0 0 0" "0 0 0 0"
    record "$CLOSE_ERRORS" "$mode" "$(awk -v e="$errors" -v n="$conns" 'BEGIN{printf "%.3f", e*1000/n}')" \
        "per 1k conn" lower "" "" "0 0 0 0" "0 0 0 0"
}

# One workload kind of bench_nginx on a server of its own: a kind must not inherit
# what another left behind (the Connection: close runs leave thousands of server-side
# TIME-WAITs, which would weigh on keep-alive runs after them). Repetitions of a kind
# share the server, as a long-running server would.
nginx_kind() { # mode kind row unit cpu_unit wrk-extra-args...
    local mode=$1 kind=$2 row=$3 unit=$4 cpu_unit=$5 name rep
    shift 5
    start_server "$mode" nginx nginx -c "$PWD/$LOGS/nginx.conf"
    if ! wait_port $NGINX_PORT; then
        stop_server
        record_na "$row" "$mode" "$unit" higher "nginx did not start (see $LOGS/nginx.$mode.server.log)"
        return 1
    fi
    for rep in $(seq "$BENCH_REPEAT"); do
        name=nginx-$kind.r$rep
        local retrans0
        retrans0=$(client_retrans)
        if run_client "$mode" "$name" wrk -t1 -c32 -d"${BENCH_SECONDS}s" "$@" \
            "http://$SERVER_IP:$NGINX_PORT/small.html" && [ -n "$(wrk_rps "$LOGS/$name.$mode.out")" ]; then
            record "$row" "$mode" "$(wrk_rps "$LOGS/$name.$mode.out")" "$unit" higher "$cpu_unit" \
                "$(wrk_total "$LOGS/$name.$mode.out")" "$BUSY0" "$BUSY1"
            [ "$kind" != close ] || record_close_health "$mode" "$LOGS/$name.$mode.out" "$retrans0"
        else
            record_na "$row" "$mode" "$unit" higher "$(wrk_failure "$LOGS/$name.$mode.out")"
            break # a failure repeats; do not spend the timeout again
        fi
    done
    fast_path_check "nginx-$kind" "$mode"
    stop_server
}

bench_nginx() { # mode
    local mode=$1
    write_nginx_conf
    nginx_kind "$mode" keepalive "nginx wrk -c32" req/s µs/req ||
        record_na "nginx conn/s (Connection: close)" "$mode" "conn/s" higher "nginx did not start"
    # FASTNET_STATS=1: the client's exit counters (its retransmissions) in its output.
    SHIM_ENV="FASTNET_STATS=1"
    nginx_kind "$mode" close "nginx conn/s (Connection: close)" conn/s µs/conn -H "Connection: close" || true
    SHIM_ENV=""
}

# Server shapes (issue 17): nginx with 1 and with 2 workers, the server free to use
# both cores (nginx pins one worker per core: worker_cpu_affinity auto), and a forking
# server's rate of short connections (Python's ForkingMixIn: a fork per connection).
FORK_PORT=8085
FORKING_HTTP='
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "128"); self.end_headers()
        self.wfile.write(b"x" * 128)
    def log_message(self, *a): pass
class S(socketserver.ForkingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    request_queue_size = 1024
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
'
# A threaded server (issue 17 part 4): memcached with 1 and with 2 worker threads, free
# to use both cores, under memcaslap (libmemcached-tools: 90% get, 10% set, 100 B values,
# 32 connections from 2 client threads).
MEMC_PORT=11213
memcached_threads() { # mode threads
    local mode=$1 t=$2 rep name out ops tps row="memcached ops/s, $2 threads on both cores"
    start_server "$mode" "memcached-t$t" memcached -u nobody -U 0 -l "$SERVER_IP" -p $MEMC_PORT -t "$t"
    if ! wait_port $MEMC_PORT; then
        stop_server
        record_na "$row" "$mode" ops/s higher "memcached did not start"
        return 1
    fi
    for rep in $(seq "$BENCH_REPEAT"); do
        name=memcached-t$t.r$rep
        out="$LOGS/$name.$mode.out"
        ops=""
        if run_client "$mode" "$name" memcaslap -s "$SERVER_IP:$MEMC_PORT" -T 2 -c 32 -X 100 \
            -t "${BENCH_SECONDS}s"; then
            # "Run time: 4.0s Ops: 133812 TPS: 66889 Net_rate: 15.8M/s"
            read -r ops tps < <(awk '/^Run time:/{print $5, $7}' "$out") || true
        fi
        if [ -n "${ops:-}" ] && [ "${tps:-0}" -gt 0 ]; then
            record "$row" "$mode" "$tps" ops/s higher µs/op "$ops" "$BUSY0" "$BUSY1"
        else
            record_na "$row" "$mode" ops/s higher "memcaslap failed (see $out)"
            break
        fi
    done
    fast_path_check "memcached-t$t" "$mode"
    stop_server
}

bench_shapes() { # mode
    local mode=$1 w out name saved=$SERVER_CPU
    SERVER_CPU="$SERVER_CPU,$CLIENT_CPU"
    for w in 1 2; do
        write_nginx_conf
        sed -i "s/^worker_processes 1;/worker_processes $w;\nworker_cpu_affinity auto;/" "$LOGS/nginx.conf"
        nginx_kind "$mode" "workers$w" "nginx wrk -c32, $w workers on both cores" req/s µs/req || true
    done
    for w in 1 2; do
        memcached_threads "$mode" "$w" || true
    done
    write_nginx_conf
    start_server "$mode" forking python3 -c "$FORKING_HTTP" "$SERVER_IP" "$FORK_PORT"
    SERVER_CPU=$saved
    if ! wait_port $FORK_PORT; then
        stop_server
        record_na "forking server conn/s (Connection: close)" "$mode" conn/s higher "the server did not start"
        return
    fi
    for rep in $(seq "$BENCH_REPEAT"); do
        name=forking.r$rep
        out="$LOGS/$name.$mode.out"
        if run_client "$mode" "$name" wrk -t1 -c8 -d"${BENCH_SECONDS}s" -H "Connection: close" \
            "http://$SERVER_IP:$FORK_PORT/" && [ -n "$(wrk_rps "$out")" ]; then
            record "forking server conn/s (Connection: close)" "$mode" "$(wrk_rps "$out")" conn/s higher \
                µs/conn "$(wrk_total "$out")" "$BUSY0" "$BUSY1"
        else
            record_na "forking server conn/s (Connection: close)" "$mode" conn/s higher "$(wrk_failure "$out")"
            break
        fi
    done
    fast_path_check forking "$mode"
    stop_server
}

SOCKPERF_PORT=11111
# Block mode (FASTNET_POLL unset: the default) and busy poll (FASTNET_POLL=busy for
# whatever runs under the shim) are rows of their own. This kernel has no busy poll of
# its own (no net.core.busy_read), so the busy rows' kernel column is the kernel's
# block-mode runs, recorded under both names; the spinning shows in the CPU tables.
sockperf_kind() { # mode kind row-prefix
    local mode=$1 kind=$2 row=$3 name out p50 p99 msgs rep extra=""
    [ "$mode" = kernel ] && [ "$kind" = block ] && extra="sockperf busy-poll ping-pong"
    start_server "$mode" sockperf sockperf server --tcp -i "$SERVER_IP" -p $SOCKPERF_PORT
    if ! wait_port $SOCKPERF_PORT; then
        stop_server
        for r in "$row" ${extra:+"$extra"}; do
            record_na "$r p50" "$mode" "µs RTT" lower "sockperf server did not start"
            record_na "$r p99" "$mode" "µs RTT" lower "sockperf server did not start"
        done
        return
    fi
    for rep in $(seq "$BENCH_REPEAT"); do
        name=sockperf-$kind.r$rep
        out="$LOGS/$name.$mode.out"
        p50="" p99="" msgs=""
        if run_client "$mode" "$name" sockperf ping-pong --tcp -i "$SERVER_IP" -p $SOCKPERF_PORT \
            -t "$BENCH_SECONDS" --full-rtt; then
            p50=$(awk '/percentile 50.000 =/{print $NF}' "$out")
            p99=$(awk '/percentile 99.000 =/{print $NF}' "$out")
            msgs=$(sed -n 's/.*ReceivedMessages=\([0-9]*\).*/\1/p' "$out" | head -1)
        fi
        if [ -n "${p50:-}" ] && [ -n "${p99:-}" ]; then
            for r in "$row" ${extra:+"$extra"}; do
                record "$r p50" "$mode" "$p50" "µs RTT" lower "µs/msg" "$msgs" "$BUSY0" "$BUSY1"
                record "$r p99" "$mode" "$p99" "µs RTT" lower "µs/msg" "$msgs" "$BUSY0" "$BUSY1"
            done
        else
            for r in "$row" ${extra:+"$extra"}; do
                record_na "$r p50" "$mode" "µs RTT" lower "sockperf failed (see $out)"
                record_na "$r p99" "$mode" "µs RTT" lower "sockperf failed (see $out)"
            done
            break
        fi
    done
    fast_path_check "sockperf-$kind" "$mode"
    stop_server
}

bench_sockperf() { # mode
    sockperf_kind "$1" block "sockperf ping-pong"
    if [ "$1" != kernel ]; then
        SHIM_ENV="FASTNET_POLL=busy"
        sockperf_kind "$1" busy "sockperf busy-poll ping-pong"
        SHIM_ENV=""
    fi
}

IPERF_PORT=5201
bench_iperf3() { # mode
    local mode=$1 name out gbit mib rep
    start_server "$mode" iperf3 iperf3 -s -B "$SERVER_IP" -p $IPERF_PORT
    if ! wait_port $IPERF_PORT; then
        stop_server
        record_na "iperf3 single stream" "$mode" "Gbit/s" higher "iperf3 server did not start"
        return
    fi
    sleep 0.3 # let the server recover from the readiness probe's bare connection
    for rep in $(seq "$BENCH_REPEAT"); do
        name=iperf3.r$rep
        out="$LOGS/$name.$mode.out"
        gbit="" mib=""
        if run_client "$mode" $name iperf3 -c "$SERVER_IP" -p $IPERF_PORT -t "$BENCH_SECONDS" -J; then
            local res
            res=$(python3 scripts/bench/iperf3_result.py "$out" 2>/dev/null || true)
            read -r gbit mib <<<"$res" || true
        fi
        if [ -n "${gbit:-}" ]; then
            record "iperf3 single stream" "$mode" "$gbit" "Gbit/s" higher "µs/MiB" "$mib" "$BUSY0" "$BUSY1"
        else
            record_na "iperf3 single stream" "$mode" "Gbit/s" higher "iperf3 failed (see $out)"
            break
        fi
    done
    fast_path_check iperf3 "$mode"
    stop_server
}

RUN_BUSY0=$(cpu_busy)
RUN_T0=$(date +%s%N)
for mode in $MODES; do
    for wl in redis nginx shapes sockperf iperf3; do
        wants $wl || continue
        if [ "$mode" != kernel ] && [ $SHIM_OK = 0 ]; then
            case $wl in
                redis) for p in 1 16; do for t in SET GET; do
                    record_na "redis $t -P $p" "$mode" "req/s" higher "$SHIM_REASON"
                done; done
                    record_na "$IDLE_ROW" "$mode" "ms CPU / ${IDLE_SECONDS} s" lower "$SHIM_REASON" ;;
                nginx)
                    record_na "nginx wrk -c32" "$mode" "req/s" higher "$SHIM_REASON"
                    record_na "nginx conn/s (Connection: close)" "$mode" "conn/s" higher "$SHIM_REASON"
                    record_na "$CLOSE_RETRANS" "$mode" "per 1k conn" lower "$SHIM_REASON"
                    record_na "$CLOSE_ERRORS" "$mode" "per 1k conn" lower "$SHIM_REASON" ;;
                shapes)
                    for w in 1 2; do
                        record_na "nginx wrk -c32, $w workers on both cores" "$mode" "req/s" higher "$SHIM_REASON"
                    done
                    record_na "forking server conn/s (Connection: close)" "$mode" "conn/s" higher "$SHIM_REASON" ;;
                sockperf) for r in "sockperf ping-pong" "sockperf busy-poll ping-pong"; do
                    record_na "$r p50" "$mode" "µs RTT" lower "$SHIM_REASON"
                    record_na "$r p99" "$mode" "µs RTT" lower "$SHIM_REASON"
                done ;;
                iperf3) record_na "iperf3 single stream" "$mode" "Gbit/s" higher "$SHIM_REASON" ;;
            esac
            continue
        fi
        echo "bench: $wl ($mode)"
        "bench_$wl" "$mode"
    done
done

# How much of the two cores went to other processes while the workloads ran: the
# quality of this run's numbers (only measurable with our cgroups).
if [ -n "$CG" ]; then
    read -r sb0 cb0 sg0 cg0 <<<"$RUN_BUSY0"
    read -r sb1 cb1 sg1 cg1 <<<"$(cpu_busy)"
    meta interference "$(awk -v cores=$((sb1 - sb0 + cb1 - cb0)) -v ours=$((sg1 - sg0 + cg1 - cg0)) \
        -v wall=$(($(date +%s%N) - RUN_T0)) -v hz="$HZ" \
        'BEGIN{o=(cores*1e9/hz-ours)/(2*wall)*100; if(o<0)o=0; printf "%.0f%%", o}')"
fi

# --- plug-in benchmarks from other parts ---------------------------------------------
# Contract: scripts/bench-<name>.sh, run with bash, topology variables and BENCH_SECONDS
# in the environment, stdout lines "bench<TAB>name<TAB>value<TAB>unit<TAB>note" become
# rows of the microbenchmark table; everything else goes to its log. Exit != 0: noted.
if wants hooks; then
    # Each plug-in's time budget; they size themselves by it (or by BENCH_SECONDS).
    BENCH_PLUGIN_SECONDS=$((BENCH_SECONDS * 20 + 120))
    export BENCH_PLUGIN_SECONDS
    # The hook benchmark measures the same libfastnet.so the workloads used.
    if [ -z "${FASTNET_SHIM:-}" ] && [ -f "$(dirname "$FASTNET")/libfastnet.so" ]; then
        export FASTNET_SHIM="$(dirname "$FASTNET")/libfastnet.so"
    fi
    for expected in hook xdp stack; do
        [ -e "scripts/bench-$expected.sh" ] ||
            printf 'bench-%s.sh\t\t\t\tskipped: scripts/bench-%s.sh not present yet\n' "$expected" "$expected" >>"$MICRO"
    done
    for script in scripts/bench-*.sh; do
        [ -e "$script" ] || continue
        base=$(basename "$script")
        echo "bench: $base"
        rc=0
        timeout "$BENCH_PLUGIN_SECONDS" bash "$script" >"$LOGS/$base.out" 2>&1 || rc=$?
        n=$(awk -F'\t' '$1=="bench" && NF>=4' "$LOGS/$base.out" | wc -l)
        awk -F'\t' -v s="$base" 'BEGIN{OFS="\t"} $1=="bench" && NF>=4 {print s, $2, $3, $4, $5}' \
            "$LOGS/$base.out" >>"$MICRO"
        # Scripts without result lines still get their last line of output shown.
        last=$(grep -v '^bench'$'\t' "$LOGS/$base.out" | grep . | tail -1 | tr -d '|\t' | cut -c1-200 || true)
        if [ $rc != 0 ]; then
            printf '%s\t\t\t\tfailed (exit %s): %s\n' "$base" "$rc" "$last" >>"$MICRO"
        elif [ "$n" = 0 ]; then
            printf '%s\t\t\t\t%s\n' "$base" "${last:-no output}" >>"$MICRO"
        fi
    done
fi

meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 scripts/bench/report.py --results "$RESULTS" --micro "$MICRO" --commands "$COMMANDS" \
    --meta "$META" --fastpath "$FASTPATH" --configs "$LOGS/nginx.conf" --out "$BENCH_OUT" --svg "$BENCH_SVG"
echo "bench: wrote $BENCH_OUT and $BENCH_SVG (raw output in $LOGS/)"
