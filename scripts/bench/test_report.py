#!/usr/bin/env python3
"""Tests for report.py on hand-made bench results: medians, ratios, n/a rows, the SVG."""

import os
import subprocess
import sys
import tempfile
import unittest
import xml.dom.minidom

HERE = os.path.dirname(os.path.abspath(__file__))


def row(wl, mode, value, unit="req/s", better="higher", scpu="", ccpu="", note="", sg="", cg=""):
    return "\t".join([wl, mode, value, unit, better, scpu, ccpu, "µs/req", note, sg, cg])


class ReportTest(unittest.TestCase):
    def render(self, results, micro=(), meta=()):
        d = tempfile.mkdtemp()
        paths = {}
        for name, lines in [
            ("results.tsv", results),
            ("micro.tsv", micro),
            ("commands.txt", ["redis-SET-P1\tclient\tredis-benchmark -P 1"]),
            ("meta.tsv", list(meta) or ["date\t2026-01-01 00:00 UTC"]),
        ]:
            paths[name] = os.path.join(d, name)
            with open(paths[name], "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        out, svg = os.path.join(d, "B.md"), os.path.join(d, "B.svg")
        subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "report.py"),
                "--results", paths["results.tsv"],
                "--micro", paths["micro.tsv"],
                "--commands", paths["commands.txt"],
                "--meta", paths["meta.tsv"],
                "--out", out,
                "--svg", svg,
            ],
            check=True,
        )
        with open(out, encoding="utf-8") as f:
            md = f.read()
        with open(svg, encoding="utf-8") as f:
            svg_text = f.read()
        return md, svg_text

    def table_line(self, md, workload):
        return next(line for line in md.splitlines() if line.startswith(f"| {workload} |"))

    def test_median_and_ratio(self):
        results = [
            row("redis SET -P 1", "kernel", v, scpu=c)
            for v, c in [("100", "9"), ("80", "10"), ("90", "11")]
        ] + [row("redis SET -P 1", "fastnet-both", "180", scpu="5")]
        md, svg = self.render(results)
        line = self.table_line(md, "redis SET -P 1")
        # Median of 80/90/100 is 90, ±(100-80)/2/90 = 11%; 180/90 = 2.00×.
        self.assertIn("| 90 ±11% |", line)
        self.assertIn("| 2.00× |", line)
        # The CPU figure is the median run's (90 -> 11 µs), and 5/11 = 0.45×.
        cpu = [l for l in md.splitlines() if l.startswith("| redis SET -P 1 | µs/req")][0]
        self.assertIn("| 11 |", cpu)
        self.assertIn("0.45×", cpu)
        self.assertIn("2.00×", svg)
        xml.dom.minidom.parseString(svg)

    def test_na_rows_keep_their_reason_and_get_no_number(self):
        results = [
            row("nginx wrk -c32", "kernel", "63000"),
            row("nginx wrk -c32", "fastnet-server", "", note="n/a: shim missing"),
        ]
        md, svg = self.render(results)
        line = self.table_line(md, "nginx wrk -c32")
        self.assertIn("| n/a: shim missing |", line)
        self.assertIn("| n/a |", line)  # no ratio
        self.assertIn("fastnet-server: n/a", svg)
        xml.dom.minidom.parseString(svg)

    def test_micro_rows_and_meta(self):
        md, _ = self.render(
            [row("iperf3 single stream", "kernel", "7.1", unit="Gbit/s")],
            micro=["bench-hook.sh\tgetpid hooked\t31.5\tns\tvs 74 ns"],
            meta=["date\t2026-01-01 00:00 UTC", "interference\t12%"],
        )
        self.assertIn("| bench-hook.sh | getpid hooked | 31.5 | ns | vs 74 ns |", md)
        self.assertIn("other processes used 12%", md)
        self.assertIn("| 7.10 |", self.table_line(md, "iperf3 single stream"))


if __name__ == "__main__":
    unittest.main()
