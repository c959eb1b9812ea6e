#!/usr/bin/env bash
# The performance benchmark (DESIGN.md, "Performance"; issue 15).
#
#   bench/run.sh                      # 100k and 1M products
#   bench/run.sh 10000000             # 10M (about 12 GB of NDJSON per catalog)
#   BENCH_REPS=9 bench/run.sh 1000000 # 9 rounds instead of 5
#   BENCH_DIR=/work/bench bench/run.sh 1000000   # reuse catalogs made there
#
# For each size it generates (once, kept in $BENCH_DIR, default
# target/bench) a synthetic catalog and the same catalog with 1% of the
# prices changed, then measures, each case against its floor:
#   first full sync to a `file:` target        vs the parse floor
#   partial sync, nothing changed              vs the parse and the scan floor
#   partial sync, 1% changed, loopback HTTP    vs the parse floor
#   peak RSS of each case
#   `status`, `report --out FILE`, `doctor` on the synced state file
#   `run` with nothing due: on a used state file, right after the file was
#   copied into place with `cp` (as a restore does), and after such a copy
#   once the copy is on disk (`sync FILE`).
#
# Why pairs: this class of machine drifts by ±20% within minutes, so a
# figure is only compared with its floor measured right next to it. Each
# round runs floor, case, floor, case … (A B A B …), every pair's ratio is
# printed as it comes, and the table gives the median of the pair ratios.
# BENCH_REPS rounds (default 5). At 10M and more the default is 1 round:
# one round there is about ten minutes on 2 cores (three parse floors of
# about a minute each, a full sync of about two), which is what fits in a
# quarter of an hour on a shared machine, and the 10M bars are mostly
# absolute (seconds, MB, ms) or against the scan floor; set BENCH_REPS for
# more.
#
# Streaming: benchtool gen writes one product at a time (to OUT.part,
# renamed when whole), the floors read line by line, and feedsync streams
# its source; nothing holds a catalog in memory. Disk: two catalogs of
# ~1.2 KB per item, plus the `file:` target's output of a full sync (about
# as big as the catalog: deleted after every full sync, and the script
# stops first if the disk cannot hold it), plus two copies of the state file.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

cargo build --release --quiet --bin feedsync --example benchtool
bin=$PWD/target/release/feedsync
tool=$PWD/target/release/examples/benchtool
# One timed run: "SECONDS PEAK_RSS_MB" (N runs: the median and the peak).
measure() { python3 bench/measure.py "$@"; }

rm -f "$dir/port"
"$tool" sink "$dir/port" & sink=$!
trap 'kill $sink 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$dir/port" ] && break; sleep 0.1; done
port=$(cat "$dir/port")

for n in "${sizes[@]}"; do
  reps=${BENCH_REPS:-$([ "$n" -ge 10000000 ] && echo 1 || echo 5)}
  # The read-only commands and `run` are short at 1M; at 10M a slow
  # `status` (a scan of every row) would otherwise cost minutes.
  looks=$([ "$n" -ge 10000000 ] && echo 3 || echo 7)
  base=$dir/catalog-$n.ndjson
  changed=$dir/catalog-$n-1pct.ndjson
  [ -s "$base" ] || "$tool" gen "$n" 42 "$base"
  [ -s "$changed" ] || "$tool" gen "$n" 42 "$changed" --changed 1

  work=$dir/run-$n
  rm -rf "$work"; mkdir -p "$work"
  # The schedule never fires (29 February at midnight), so `run` below
  # finds nothing due.
  cat >"$work/file.toml" <<TOML
state = "state.sqlite"
[target]
url = "file:out/{feed}.ndjson"
[schedule]
sync = "0 0 29 2 *"
send = "0 0 29 2 *"
retry = "0 0 29 2 *"
cleanup = "0 0 29 2 *"
[[feeds]]
name = "products"
source = "$base"
key = ["sku"]
hash_exclude = ["updated_at"]
TOML
  sed -e "s|file:out/{feed}.ndjson|http://127.0.0.1:$port/feeds/{feed}|" \
      -e "s|$base|$changed|" "$work/file.toml" >"$work/http.toml"
  # results.tsv: case, round, seconds, peak RSS MB (one line per timed run).
  results=$work/results.tsv
  : >"$results"
  put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-0}" >>"$results"; }
  # A pair line: the two figures and their ratio.
  pair() { python3 -c "import sys; a, b = map(float, sys.argv[3:5]); print(f'  round {sys.argv[1]}, {sys.argv[2]}: {b:.3f} s / {a:.3f} s = {b / a:.3f}')" "$@"; }
  # The state file's copy, on disk before anything is timed: a fresh copy
  # left in the page cache would make the next commit's fsync write it out
  # (see the `run` cases below), which is the copy's cost, not the case's.
  restore() { rm -f "$work/state.sqlite"; cp "$work/synced.sqlite" "$work/state.sqlite"; sync "$work/state.sqlite"; }

  # A full sync's output is 1.1× the catalog; the state file, its WAL
  # during that first sync and its copy about 0.3× more; 1 GB to spare.
  need=$(( $(stat -L -c %s "$base") * 14 / 10 + (1 << 30) ))
  free=$(( $(df -B1 --output=avail "$work" | tail -1) ))
  if [ "$free" -lt "$need" ]; then
    echo "bench/run.sh: $work has $((free >> 20)) MB free; a full sync needs about $((need >> 20)) MB" >&2
    exit 1
  fi

  echo "## $n items"
  "$tool" scan "$base" >/dev/null    # warm the page cache (as far as it holds)

  echo "first full sync to file: vs parse"
  for r in $(seq "$reps"); do
    p=$("$tool" parse "$base"); put parse-full "$r" "$p"
    rm -rf "$work/state.sqlite" "$work/out"; sync   # the deletion on disk first
    read -r t rss < <(measure 1 -- "$bin" --config "$work/file.toml" sync)
    put full "$r" "$t" "$rss"; pair "$r" full "$p" "$t"
    rm -rf "$work/out"               # 1.1× the catalog: 13 GB at 10M
  done
  cp "$work/state.sqlite" "$work/synced.sqlite"; sync "$work/synced.sqlite"

  echo "no change vs parse, and vs scan"
  for r in $(seq "$reps"); do
    p=$("$tool" parse "$base"); put parse-same "$r" "$p"
    s=$("$tool" scan "$base"); put scan "$r" "$s"
    read -r t rss < <(measure 1 -- "$bin" --config "$work/file.toml" sync)
    put same "$r" "$t" "$rss"; pair "$r" "no change/parse" "$p" "$t"; pair "$r" "no change/scan" "$s" "$t"
  done

  # This case reads the changed catalog, so its floor parses that one (the
  # same size and shape): at 10M the two catalogs (24 GB) do not both fit
  # in the page cache, and a floor read from memory against a sync read
  # from disk would not be a pair.
  echo "1% changed, loopback HTTP, vs parse"
  "$tool" scan "$changed" >/dev/null
  for r in $(seq "$reps"); do
    p=$("$tool" parse "$changed"); put parse-pct "$r" "$p"
    restore
    read -r t rss < <(measure 1 -- "$bin" --config "$work/http.toml" sync)
    put pct "$r" "$t" "$rss"; pair "$r" "1%/parse" "$p" "$t"
  done

  # The commands that only look, on the synced state (median of $looks).
  # doctor checks a `file:` target for writability: no network (strace
  # shows no socket at all).
  restore
  for c in status doctor; do
    read -r t _ < <(measure "$looks" -- "$bin" --config "$work/file.toml" "$c")
    put "$c" 1 "$t"
  done
  read -r t _ < <(measure "$looks" -- "$bin" --config "$work/file.toml" report --out "$work/report.html")
  put report 1 "$t"

  # `run` with nothing due still records the schedule check: one small
  # commit, and at close the WAL checkpoint fsyncs the database file. Right
  # after `cp` that fsync has to write the whole copy out of the page cache
  # first (cp does not sync); with the copy already on disk it is cheap.
  # The three alternate round by round; each copy is a new file, as a
  # restore's is (ext4 starts writing back a file that was truncated and
  # rewritten in place when it is closed: an overwriting cp can hide part
  # of the effect).
  measure 1 -- "$bin" --config "$work/file.toml" run >/dev/null   # warm-up, not counted
  for r in $(seq "$looks"); do
    read -r t _ < <(measure 1 -- "$bin" --config "$work/file.toml" run); put run-used "$r" "$t"
    rm -f "$work/state.sqlite"; cp "$work/synced.sqlite" "$work/state.sqlite"
    read -r t _ < <(measure 1 -- "$bin" --config "$work/file.toml" run); put run-cp "$r" "$t"
    restore
    read -r t _ < <(measure 1 -- "$bin" --config "$work/file.toml" run); put run-cp-sync "$r" "$t"
  done

  mb() { echo $(( $(stat -L -c %s "$1") >> 20 )); }
  python3 - "$results" "$n" "$(mb "$base")" "$(mb "$work/synced.sqlite")" "$reps" <<'PY'
import statistics, sys
path, n, size_mb, state_mb, reps = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
rows = [l.rstrip("\n").split("\t") for l in open(path)]
def col(case, k=2):
    return [float(r[k]) for r in rows if r[0] == case]
def by_round(case):
    return {r[1]: float(r[2]) for r in rows if r[0] == case}
def ratios(case, floor):
    a, b = by_round(floor), by_round(case)
    return [b[k] / a[k] for k in sorted(b, key=int)]
med = statistics.median
big = n >= 10_000_000
# The bars of DESIGN.md "Performance": the 1M ones below 10M.
bars = {
    "full": "—" if big else "≤ 0.8× parse",
    "same": "—" if big else "≤ 0.15× parse",
    "same-scan": "≤ 1.5× scan" if big else "near the scan floor",
    "pct": "< 15 s" if big else "≤ 0.25× parse",
    "rss": "< 600 MB" if big else "< 150 MB",
}
print(f"\n### {n:,} items ({size_mb} MB NDJSON, state file {state_mb} MB), {reps} alternated round(s)\n")
print("| case | feedsync (median) | floor (median) | median of pair ratios | pair ratios | peak RSS | bar |")
print("|---|---|---|---|---|---|---|")
for case, floor, name, label in [
    ("full", "parse-full", "first full sync to `file:`", "parse"),
    ("same", "parse-same", "partial sync, nothing changed", "parse"),
    ("same", "scan", "… the same against the scan floor", "scan"),
    ("pct", "parse-pct", "partial sync, 1% changed, loopback HTTP", "parse"),
]:
    rs = ratios(case, floor)
    rss = f"{max(col(case, 3)):.0f} MB" if floor != "scan" else ""
    bar = bars["same-scan" if floor == "scan" else case]
    print(f"| {name} | {med(col(case)):.2f} s | {label} {med(col(floor)):.2f} s | **{med(rs):.2f}×** "
          f"| {' '.join(f'{x:.2f}' for x in rs)} | {rss} | {bar} |")
for case, name, bar in [
    ("status", "`status`", "< 50 ms"),
    ("report", "`report --out FILE`", "< 50 ms"),
    ("doctor", "`doctor` (`file:` target)", "< 50 ms"),
    ("run-used", "`run`, nothing due", "< 20 ms"),
    ("run-cp", "`run`, nothing due, right after `cp` of the state file", "—"),
    ("run-cp-sync", "`run`, nothing due, after `cp` and `sync FILE`", "—"),
]:
    print(f"| {name} | {med(col(case)) * 1000:.1f} ms | | | | | {bar} |")
# The medians, for the growth lines at the end (and for a later run's).
with open(f"{path.rsplit('/', 2)[0]}/medians-{n}.tsv", "w") as f:
    for case in sorted({r[0] for r in rows}):
        f.write(f"{case}\t{med(col(case))}\t{max(col(case, 3))}\n")
PY
  rm -f "$work/report.html"
done

# Cost growth from 1M to each larger size measured here, per item: 1.00
# is linear. The 1M figures come from this run if it measured 1M, else
# from the last run that did (then the two are not a pair: indicative).
python3 - "$dir" "${sizes[@]}" <<'PY'
import os, sys, time
d, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
ref = f"{d}/medians-1000000.tsv"
others = [n for n in sizes if n > 1_000_000]
if not others or not os.path.exists(ref):
    sys.exit(0)
def load(n):
    return {c: (float(t), float(m)) for c, t, m in (l.split("\t") for l in open(f"{d}/medians-{n}.tsv"))}
one = load(1_000_000)
when = "this run" if 1_000_000 in sizes else time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(ref)))
for n in others:
    mine, k = load(n), n / 1_000_000
    print(f"\ngrowth 1M → {n:,} (1M figures from {when}; 1.00 = linear per item):")
    for case, name in [("full", "full sync"), ("same", "no change"), ("pct", "1% changed"),
                       ("scan", "scan floor"), ("parse-same", "parse floor"), ("status", "status")]:
        if case in mine and case in one:
            print(f"  {name}: {mine[case][0]:.3f} s vs {one[case][0]:.3f} s = {mine[case][0] / one[case][0] / k:.2f}× linear")
    for case, name in [("full", "full sync"), ("same", "no change"), ("pct", "1% changed")]:
        if case in mine and case in one:
            print(f"  peak RSS, {name}: {mine[case][1]:.0f} MB vs {one[case][1]:.0f} MB")
PY
