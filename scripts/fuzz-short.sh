#!/usr/bin/env bash
# Runs every cargo-fuzz target of the stack for a while each (default 20 s; `make bench`
# passes a longer time). Only stable Rust is installed: RUSTC_BOOTSTRAP=1 unlocks the
# nightly flags cargo-fuzz needs. Fails on the first crash (cargo fuzz exits non-zero).
#   scripts/fuzz-short.sh [seconds-per-target] [target...]
set -euo pipefail
cd "$(dirname "$0")/../stack/fuzz"
secs="${1:-20}"
shift || true
if ! command -v cargo-fuzz >/dev/null 2>&1 && ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz-short: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
# Build once (all targets), then run each.
cargo fuzz build -O >&2
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "fuzz-short: $t for ${secs}s" >&2
    log="$(mktemp)"
    if ! cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        rm -f "$log"
        echo "fuzz-short: $t FAILED (crash input in stack/fuzz/artifacts/$t)" >&2
        exit 1
    fi
    grep -E "^(Done|stat::number_of_executed_units)" "$log" >&2 || true
    rm -f "$log"
done
echo "fuzz-short: all ${#targets[@]} targets ran ${secs}s without a crash"
