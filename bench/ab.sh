#!/usr/bin/env bash
# Alternated A/B comparison of feedsync builds on the benchmark's catalog,
# with the parse floor measured in the same rounds. This machine class
# drifts ±20 % within minutes, so builds are compared only as pairs run
# back to back (A B A B …), never as figures from different runs.
#
#   bench/ab.sh N ROUNDS BIN_A BIN_B [BIN_C …]
#   bench/ab.sh 1000000 5 /tmp/old/feedsync target/release/feedsync
#
# Per round and per binary: a first full sync to a `file:` target from an
# empty state, a no-change sync, and a 1%-changed sync to the loopback sink.
# Prints every round, then the median per case and binary, and each
# binary's median ratio to the first one and to the parse floor.
# Catalogs are shared with bench/run.sh ($BENCH_DIR, default target/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n 2,13p "$0"; exit 2; }
n=$1 rounds=$2; shift 2
bins=(); for b in "$@"; do bins+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")"); done
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

cargo build --release --quiet --example benchtool
tool=$PWD/target/release/examples/benchtool
base=$dir/catalog-$n.ndjson
changed=$dir/catalog-$n-1pct.ndjson
[ -s "$base" ] || "$tool" gen "$n" 42 "$base" 2>/dev/null
[ -s "$changed" ] || "$tool" gen "$n" 42 "$changed" --changed 1 2>/dev/null

rm -f "$dir/ab-port"
"$tool" sink "$dir/ab-port" & sink=$!
trap 'kill $sink 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$dir/ab-port" ] && break; sleep 0.1; done
port=$(cat "$dir/ab-port")

work=$dir/ab-$n
rm -rf "$work"; mkdir -p "$work"
cat >"$work/file.toml" <<TOML
state = "state.sqlite"
[target]
url = "file:out/{feed}.ndjson"
[[feeds]]
name = "products"
source = "$base"
key = ["sku"]
hash_exclude = ["updated_at"]
TOML
sed -e "s|file:out/{feed}.ndjson|http://127.0.0.1:$port/feeds/{feed}|" \
    -e "s|$base|$changed|" "$work/file.toml" >"$work/http.toml"

secs() { python3 bench/measure.py 1 -- "$@" | cut -d' ' -f1; }
"$tool" scan "$base" >/dev/null   # warm the page cache, for both catalogs:
"$tool" scan "$changed" >/dev/null   # a cold 1% catalog reads from disk
results=$work/results.tsv
: >"$results"
for r in $(seq "$rounds"); do
  echo "parse	$r	$("$tool" parse "$base")" >>"$results"
  for i in "${!bins[@]}"; do
    bin=${bins[$i]}
    # Each case starts with nothing left to write back: a copy or a
    # deletion still in the page cache would be written out during the
    # next case and charged to it (a full sync waits on the disk).
    rm -rf "$work/state.sqlite" "$work/out"; sync
    full=$(secs "$bin" --config "$work/file.toml" sync)
    rm -rf "$work/out"
    cp "$work/state.sqlite" "$work/synced.sqlite"; sync
    same=$(secs "$bin" --config "$work/file.toml" sync)
    cp "$work/synced.sqlite" "$work/state.sqlite"; sync
    pct=$(secs "$bin" --config "$work/http.toml" sync)
    printf 'bin%s\t%s\t%s\t%s\t%s\n' "$i" "$r" "$full" "$same" "$pct" >>"$results"
    echo "round $r ${bins[$i]}: full $full s, no change $same s, 1% $pct s" >&2
  done
done

python3 - "$results" "${bins[@]}" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
bins = sys.argv[2:]
parse = statistics.median(float(r[2]) for r in rows if r[0] == "parse")
print(f"parse floor (median): {parse:.3f} s\n")
print("| build | full sync (file) | no change | 1% changed (HTTP) |")
print("|---|---|---|---|")
first = None
for i, b in enumerate(bins):
    mine = [r for r in rows if r[0] == f"bin{i}"]
    med = [statistics.median(float(r[k]) for r in mine) for k in (2, 3, 4)]
    if first is None:
        first = med
    cells = [f"{m:.2f} s ({m / parse:.2f}× parse, {m / f:.2f}× A)" for m, f in zip(med, first)]
    print(f"| {b} | " + " | ".join(cells) + " |")
PY
