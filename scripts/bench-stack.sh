#!/usr/bin/env bash
# Stack plug-in for `make bench` (see scripts/bench.sh): fastnet's stack beside smoltcp
# 0.14 doing the same work in the same run (two stacks in memory, one core): bulk MB/s,
# 1-byte ping-pong round trips/s, heap per idle established connection; then a longer
# fuzz run of every stack fuzz target. Prints "bench<TAB>..." result lines.
#   BENCH_SECONDS (default 5): seconds per stack test
#   FUZZ_SECONDS: seconds per fuzz target (default: what the plug-in time budget allows)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-5}
cargo build --release -p stack --example stack_bench >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/stack_bench
"$bin" "$secs" 500
# scripts/bench.sh allows each plug-in BENCH_SECONDS*20+120 s: the stack tests take
# ~4*secs plus the connection setup, the fuzz targets share the rest.
fuzz_secs=${FUZZ_SECONDS:-$(( (secs * 20 + 120 - secs * 5 - 90) / 7 ))}
[ "$fuzz_secs" -ge 20 ] || fuzz_secs=20
start=$(date +%s)
if scripts/fuzz-short.sh "$fuzz_secs" >&2; then
    printf 'bench\tstack fuzz (7 targets)\t%s\ts per target\tno crash; %s s in all\n' \
        "$fuzz_secs" "$(( $(date +%s) - start ))"
else
    printf 'bench\tstack fuzz (7 targets)\tFAILED\t\tcrash: see stack/fuzz/artifacts\n'
    exit 1
fi
