#!/usr/bin/env bash
# No test asserts a duration or a rate: speed belongs to `make bench` (a ratio to the
# kernel measured in the same run), where a slow or busy machine gives a number, not a
# failure. `make lint` runs this.
#
# The pattern: in every tracked Rust file (benchmark programs excepted: stack/examples,
# capture/examples, tests/src/bin), the arguments of every assertion macro
# (assert!, assert_eq!, assert_ne!, debug_assert*!, prop_assert*!), read across lines up
# to its closing parenthesis, must not match
#   \.elapsed\(|duration_since\(|Instant::now\(\)\s*-|\bas_(secs|millis|micros|nanos)
#   |per.second|\b(req|conn|ops|msg|frames)/s\b|[KMG](bit|B|iB)/s\b|\bthroughput\b|\brate\b
# i.e. a wall-clock duration measured in the test, or a rate; nor may a loop run for a
# measured time (`while t.elapsed() < ...`: counting what happens in a time window is
# a rate). A test may still give up
# waiting for something that never happens: compare the clock with a deadline
# (`assert!(Instant::now() < deadline, "server did not start")`), never judge how long
# something took. Simulated time (the stack's `time::Instant`) is deterministic and
# not matched. A count over a timed run (wrk -d, iperf3 -t) is a rate too; this grep
# cannot see it, review does.
set -euo pipefail
cd "$(dirname "$0")/.."

git ls-files -z '*.rs' | python3 -c '
import re, sys
skip = ("stack/examples/", "capture/examples/", "tests/src/bin/")
start = re.compile(r"\b(?:debug_)?(?:prop_)?assert(?:_eq|_ne)?!\s*\(")
timing = re.compile(
    r"\.elapsed\(|duration_since\(|Instant::now\(\)\s*-|\bas_(?:secs|millis|micros|nanos)"
    r"|per.second|\b(?:req|conn|ops|msg|frames)/s\b|[KMG](?:bit|B|iB)/s\b"
    r"|\bthroughput\b|\brate\b",
    re.IGNORECASE,
)
window = re.compile(r"\bwhile\b[^{;]*\.elapsed\(\)")
bad = 0
for path in sys.stdin.read().split("\0"):
    if not path or path.startswith(skip):
        continue
    text = open(path, encoding="utf-8", errors="replace").read()
    for m in window.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        print(f"{path}:{line}: loops for a measured time (a rate in disguise): "
              "run a fixed amount of work and assert what it did")
        bad += 1
    for m in start.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        args = text[m.end():i - 1]
        hit = timing.search(args)
        if hit:
            line = text.count("\n", 0, m.start()) + 1
            print(f"{path}:{line}: asserts a duration or a rate ({hit.group(0)!r}): "
                  "assert data, counts or errors; measure speed in `make bench`")
            bad += 1
if bad:
    print(f"check-no-timing-asserts: {bad} timing assertion(s); see scripts/check-no-timing-asserts.sh")
    sys.exit(1)
'
