#!/usr/bin/env bash
# XDP plug-in for `make bench` (see scripts/bench.sh): frames/s received and sent through
# an AF_XDP socket vs a kernel UDP socket, same sender / same receiver, in one run.
# Uses the topology from the environment (SERVER_NS, CLIENT_NS, SERVER_IF, SERVER_IP,
# CLIENT_IP) or makes its own; BENCH_SECONDS per phase.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${XDP_BENCH:-target/release/xdp_bench}
if [ ! -x "$BIN" ]; then
    cargo build --release -p fastnet-e2e --bin xdp_bench >&2
fi
exec "$BIN" --seconds "${BENCH_SECONDS:-5}"
