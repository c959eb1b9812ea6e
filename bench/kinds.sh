#!/usr/bin/env bash
# A 1%-changed partial sync to each target kind, against the loopback sink
# (`benchtool sink` answers each kind's protocol with a success), alternated
# kind by kind within each round, with the parse floor in the same rounds.
#
#   bench/kinds.sh N ROUNDS        # e.g. bench/kinds.sh 1000000 3
#
# The state is synced once to a `file:` target; each measurement starts from
# a copy of it and reads the 1%-changed catalog (as bench/run.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
n=$1 rounds=$2
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)

cargo build --release --quiet --bin feedsync --example benchtool
bin=$PWD/target/release/feedsync
tool=$PWD/target/release/examples/benchtool
base=$dir/catalog-$n.ndjson
changed=$dir/catalog-$n-1pct.ndjson
[ -s "$base" ] || "$tool" gen "$n" 42 "$base" 2>/dev/null
[ -s "$changed" ] || "$tool" gen "$n" 42 "$changed" --changed 1 2>/dev/null

rm -f "$dir/kinds-port"
"$tool" sink "$dir/kinds-port" & sink=$!
trap 'kill $sink 2>/dev/null' EXIT
for _ in $(seq 50); do [ -s "$dir/kinds-port" ] && break; sleep 0.1; done
url=http://127.0.0.1:$(cat "$dir/kinds-port")
export BENCH_KEY=bench

work=$dir/kinds-$n
rm -rf "$work"; mkdir -p "$work"
feed() {
  cat <<TOML
[[feeds]]
name = "products"
source = "$1"
key = ["sku"]
hash_exclude = ["updated_at"]
TOML
}
{ echo 'state = "state.sqlite"'; echo '[target]'; echo 'url = "file:out/{feed}.ndjson"'; feed "$base"; } >"$work/file.toml"
kinds=(webhook elasticsearch meilisearch typesense algolia)
for k in "${kinds[@]}"; do
  {
    echo 'state = "state.sqlite"'
    echo '[target]'
    echo "kind = \"$k\""
    case $k in
      webhook) echo "url = \"$url/feeds/{feed}\"" ;;
      algolia) echo "url = \"$url\""; echo 'app_id = "BENCH"'; echo 'api_key_env = "BENCH_KEY"' ;;
      *) echo "url = \"$url\""; echo 'api_key_env = "BENCH_KEY"' ;;
    esac
    feed "$changed"
  } >"$work/$k.toml"
done

"$bin" --config "$work/file.toml" sync
rm -rf "$work/out"
cp "$work/state.sqlite" "$work/synced.sqlite"
"$tool" scan "$base" >/dev/null   # warm the page cache

secs() { python3 bench/measure.py 1 -- "$@" | cut -d' ' -f1; }
results=$work/results.tsv
: >"$results"
for r in $(seq "$rounds"); do
  echo "parse	$r	$("$tool" parse "$base")" >>"$results"
  for k in "${kinds[@]}"; do
    cp "$work/synced.sqlite" "$work/state.sqlite"
    rm -f "$work/state.sqlite-wal" "$work/state.sqlite-shm"
    t=$(secs "$bin" --config "$work/$k.toml" sync)
    echo "$k	$r	$t" >>"$results"
    echo "round $r $k: $t s" >&2
  done
done

python3 - "$results" "${kinds[@]}" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
parse = statistics.median(float(r[2]) for r in rows if r[0] == "parse")
print(f"parse floor (median): {parse:.3f} s\n")
print("| kind | 1% changed | × parse |")
print("|---|---|---|")
for k in sys.argv[2:]:
    m = statistics.median(float(r[2]) for r in rows if r[0] == k)
    print(f"| {k} | {m:.2f} s | {m / parse:.2f} |")
PY
