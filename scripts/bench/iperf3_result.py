#!/usr/bin/env python3
"""Prints "<Gbit/s> <MiB>" received, from `iperf3 -J` output (argv[1])."""
import json
import sys

received = json.load(open(sys.argv[1], encoding="utf-8"))["end"]["sum_received"]
print("%.2f %d" % (received["bits_per_second"] / 1e9, received["bytes"] / 2**20))
