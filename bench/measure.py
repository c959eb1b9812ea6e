#!/usr/bin/env python3
"""Runs a command N times; prints the mean wall seconds and the peak RSS (MB)
of the slowest child. Usage: measure.py N -- CMD ARGS..."""
import os, resource, subprocess, sys, time

n = int(sys.argv[1])
cmd = sys.argv[3:]
times, peak = [], 0
for _ in range(n):
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    times.append(time.perf_counter() - t)
    peak = max(peak, usage.ru_maxrss)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} exited {code}")
print(f"{sum(times) / len(times):.3f} {peak / 1024:.0f}")
