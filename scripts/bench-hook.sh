#!/bin/sh
# Cost of the syscall hook on a pass-through call: getppid in a loop, natively and through
# the hook (rewritten to `call *%rax`, the sled at 0, the pre-filter, the real syscall),
# alternating rounds in one process under libfastnet.so (tests/c/getppid_loop.c).
# Usage: scripts/bench-hook.sh [calls-per-round]   (env FASTNET_SHIM=path overrides the .so)
set -eu
cd "$(dirname "$0")/.."
calls=${1:-100000}
shim=${FASTNET_SHIM:-}
if [ -z "$shim" ]; then
    for d in "${CARGO_TARGET_DIR:-target}/release" target/release; do
        [ -f "$d/libfastnet.so" ] && { shim="$d/libfastnet.so"; break; }
    done
fi
[ -n "$shim" ] && [ -f "$shim" ] || { echo "bench-hook: libfastnet.so not found (cargo build --release -p shim)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
gcc -O2 -o "$tmp/loop" tests/c/getppid_loop.c
pin=""
command -v taskset >/dev/null 2>&1 && pin="taskset -c $(($(nproc) - 1))"
# Under the shim: native (hidden syscall) and hooked rounds alternate in one process.
set -- $(env LD_PRELOAD="$shim" $pin "$tmp/loop" "$calls" 60)
# Without the shim both loops are native: the ratio shows the measurement's own bias.
set -- "$@" $($pin "$tmp/loop" "$calls" 60)
echo "$@" | awk '{
    printf "hook pass-through (getppid): native %.1f ns/call, hooked %.1f ns/call, overhead %.1f ns (%.1f%%), ratio %.3f\n",
           $1, $2, $2 - $1, ($2 - $1) * 100 / $1, $2 / $1
    printf "  control run without the shim: %.1f vs %.1f ns/call (ratio %.3f)\n", $3, $4, $4 / $3 }'
