#!/usr/bin/env python3
"""Runs a command N times, one after the other; prints the median wall
seconds and the peak RSS (MB) over all runs (each child's own maximum, from
wait4: nothing is sampled, so a short peak is not missed).

    measure.py N -- CMD ARGS...

stdout of CMD is discarded; a non-zero exit stops with an error naming the
command, so a failing step cannot pass for a fast one."""
import os, statistics, subprocess, sys, time

n = int(sys.argv[1])
assert sys.argv[2] == "--", "usage: measure.py N -- CMD ARGS..."
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
print(f"{statistics.median(times):.4f} {peak / 1024:.0f}")
