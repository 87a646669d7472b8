#!/bin/sh
# Cost of the syscall hook: getppid in a loop, natively and through the hook (rewritten
# to `call *%rax`, the jump sled at 0, the pre-filter), alternating rounds in one process
# under libfastnet.so (tests/c/getppid_loop.c; the native loop's `syscall` is hidden from
# the rewriter). Two hooked cases: pass-through (the number is not handled: the real
# syscall runs right in the assembly entry) and handled (FASTNET_TRACE counting: alternate
# stack, xsave, the Rust dispatch, then the real syscall). Those run with the Syscall
# User Dispatch backstop off (FASTNET_SUD=0: it would find the hidden native `syscall` at
# its first call and rewrite it). A third run has it on and compares, in one process,
# the rewritten site against a site SUD serves at every call (one the rewriter leaves
# alone: the hidden cost of a `syscall` the rewrite cannot patch, and of a SUD-only hook).
# Prints a readable summary and, for `make bench`, lines
# "bench<TAB>name<TAB>value<TAB>unit<TAB>note".
# Usage: scripts/bench-hook.sh [calls-per-round]   (FASTNET_SHIM=path overrides the .so)
set -eu
cd "$(dirname "$0")/.."
calls=${1:-20000}
shim=${FASTNET_SHIM:-}
if [ -z "$shim" ]; then
    for d in ${FASTNET:+"$(dirname "$FASTNET")"} "${CARGO_TARGET_DIR:-target}/release" target/release; do
        [ -f "$d/libfastnet.so" ] && { shim="$d/libfastnet.so"; break; }
    done
fi
[ -n "$shim" ] && [ -f "$shim" ] || { echo "bench-hook: libfastnet.so not found (cargo build --release -p shim)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
gcc -O2 -o "$tmp/loop" tests/c/getppid_loop.c
pin=""
command -v taskset >/dev/null 2>&1 && pin="taskset -c $(($(nproc) - 1))"
# Each run prints "<native ns> <hooked ns>", best of 300 alternating rounds.
# FASTNET_HOOK=always: with no interface named the shim would leave the program unhooked.
pass=$(env LD_PRELOAD="$shim" FASTNET_HOOK=always FASTNET_SUD=0 $pin "$tmp/loop" "$calls" 300)
handled=$(env LD_PRELOAD="$shim" FASTNET_TRACE=/dev/null FASTNET_SUD=0 $pin "$tmp/loop" "$calls" 150)
# "<SUD-served ns> <rewritten ns>"
sud=$(env LD_PRELOAD="$shim" FASTNET_HOOK=always FASTNET_SUD=1 $pin "$tmp/loop" "$calls" 50 sud)
# Without the shim both loops are native: their ratio is the measurement's own bias.
control=$($pin "$tmp/loop" "$calls" 150)
echo "$pass $handled $control $sud" | awk '{
    printf "hook pass-through (getppid): native %.1f ns/call, hooked %.1f ns/call, overhead %.1f ns (%.1f%%), ratio %.3f\n",
           $1, $2, $2 - $1, ($2 - $1) * 100 / $1, $2 / $1
    printf "hook handled (counted in Rust, then passed on): native %.1f ns/call, hooked %.1f ns/call, overhead %.1f ns\n",
           $3, $4, $4 - $3
    printf "control without the shim: %.1f vs %.1f ns/call (ratio %.3f)\n", $5, $6, $6 / $5
    printf "SUD backstop (a site it serves at every call): %.1f ns/call beside %.1f rewritten (%.1f with SUD off), overhead %.1f ns over native, ratio %.1f to rewritten\n",
           $7, $8, $2, $7 - $1, $7 / $8
    printf "bench\thook_native_getppid\t%.1f\tns/call\treal syscall, same process\n", $1
    printf "bench\thook_passthrough_getppid\t%.1f\tns/call\trewritten call, sled, pre-filter, syscall\n", $2
    printf "bench\thook_passthrough_overhead\t%.1f\tns/call\t%.1f%% of a native getppid (target <= 10%%)\n", $2 - $1, ($2 - $1) * 100 / $1
    printf "bench\thook_passthrough_ratio\t%.3f\tx\thooked / native\n", $2 / $1
    printf "bench\thook_handled_overhead\t%.1f\tns/call\talt stack, xsave/xrstor, Rust dispatch (trace counter)\n", $4 - $3
    printf "bench\thook_control_ratio\t%.3f\tx\tboth loops native (measurement bias)\n", $6 / $5
    printf "bench\thook_sud_getppid\t%.1f\tns/call\ta site SUD serves at every call: SIGSYS, handler, rt_sigreturn\n", $7
    printf "bench\thook_sud_overhead\t%.1f\tns/call\tover a native getppid (hook_native_getppid)\n", $7 - $1
    printf "bench\thook_sud_ratio\t%.1f\tx\tSUD-served / rewritten pass-through, same process\n", $7 / $8
    printf "bench\thook_sud_on_passthrough_getppid\t%.1f\tns/call\trewritten pass-through with SUD on (the kernel checks every call; off: hook_passthrough_getppid)\n", $8 }'
