#!/usr/bin/env bash
# The performance benchmark (DESIGN.md, "Performance"). Generates synthetic
# catalogs from a fixed seed, measures the parse and scan floors, then
# feedsync's first full sync (file target), a no-change sync, a 1%-changed
# sync to a loopback HTTP receiver, peak RSS, and `run` with nothing due.
#
#   bench/run.sh                 # 100k and 1M products
#   bench/run.sh 100000          # just 100k
#   BENCH_REPS=9 bench/run.sh    # medians of 9 runs (default 5)
#
# Data and state go to $BENCH_DIR (default target/bench); the 1M catalog
# needs about 2.5 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
mkdir -p "$dir"

cargo build --release --quiet --bin feedsync --example benchtool
bin=$PWD/target/release/feedsync
tool=$PWD/target/release/examples/benchtool
measure() { python3 bench/measure.py "$@"; }
median() { python3 -c 'import sys, statistics; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
reps=${BENCH_REPS:-5}

rm -f "$dir/port"
"$tool" sink "$dir/port" & sink=$!
trap 'kill $sink 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$dir/port" ] && break; sleep 0.1; done
port=$(cat "$dir/port")

echo "| items | file | parse | scan | full sync (file) | no change | 1% changed (HTTP) | peak RSS | run, nothing due |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  base=$dir/catalog-$n.ndjson
  changed=$dir/catalog-$n-1pct.ndjson
  [ -s "$base" ] || "$tool" gen "$n" 42 "$base" 2>/dev/null
  [ -s "$changed" ] || "$tool" gen "$n" 42 "$changed" --changed 1 2>/dev/null
  size=$(du -m "$base" | cut -f1)

  "$tool" scan "$base" >/dev/null            # warm the page cache
  # Each figure is the median of $reps runs: this kind of machine is noisy.
  # The parse floor is measured right before each full sync, so that a
  # slow spell of the machine weighs on both sides of the ratio.
  scan=$(median $(for _ in $(seq "$reps"); do "$tool" scan "$base"; done))

  work=$dir/run-$n
  rm -rf "$work"; mkdir -p "$work"
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

  fulls=(); parses=(); full_rss=0
  for _ in $(seq "$reps"); do
    parses+=("$("$tool" parse "$base")")
    rm -rf "$work/state.sqlite" "$work/out"
    read -r t rss < <(measure 1 -- "$bin" --config "$work/file.toml" sync)
    fulls+=("$t"); full_rss=$(( rss > full_rss ? rss : full_rss ))
  done
  full=$(median "${fulls[@]}")
  parse=$(median "${parses[@]}")
  rm -rf "$work/out"
  cp "$work/state.sqlite" "$work/synced.sqlite"
  sames=(); same_rss=0
  for _ in $(seq "$reps"); do
    read -r t rss < <(measure 1 -- "$bin" --config "$work/file.toml" sync)
    sames+=("$t"); same_rss=$(( rss > same_rss ? rss : same_rss ))
  done
  same=$(median "${sames[@]}")
  pcts=(); pct_rss=0
  for _ in $(seq "$reps"); do
    cp "$work/synced.sqlite" "$work/state.sqlite"
    read -r t rss < <(measure 1 -- "$bin" --config "$work/http.toml" sync)
    pcts+=("$t"); pct_rss=$(( rss > pct_rss ? rss : pct_rss ))
  done
  pct=$(median "${pcts[@]}")
  read -r idle _ < <(measure 20 -- "$bin" --config "$work/file.toml" run)
  rss=$(printf '%s\n' "$full_rss" "$same_rss" "$pct_rss" | sort -n | tail -1)

  ratio() { python3 -c "print(f'{$1:.2f} s ({$1/$2:.2f}× parse)')"; }
  echo "| $n | ${size} MB | ${parse} s | ${scan} s | $(ratio "$full" "$parse") | $(ratio "$same" "$parse") | $(ratio "$pct" "$parse") | ${rss} MB (full ${full_rss}, no change ${same_rss}, 1% ${pct_rss}) | $(python3 -c "print(f'{$idle*1000:.1f} ms')") |"
done
