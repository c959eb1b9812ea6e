#!/usr/bin/env bash
# A database source at scale: a throwaway MariaDB with an N-row products
# table (the columns of a flat catalog table), then, alternated round by
# round, the floor (stream the query's rows through the client and discard
# them: `benchtool mysql-floor`), and feedsync's first sync and no-change
# sync of the same query to a `file:` target.
#
#   bench/db.sh N ROUNDS        # e.g. bench/db.sh 1000000 3
#
# Needs Debian's mariadb-server (mariadbd, mariadb-install-db, mariadb).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
n=$1 rounds=$2
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
cargo build --release --quiet --bin feedsync --example benchtool
bin=$PWD/target/release/feedsync
tool=$PWD/target/release/examples/benchtool

work=$dir/db-$n
rm -rf "$work"; mkdir -p "$work"
user=(); [ "$(id -u)" = 0 ] && user=(--user=root)
mariadb-install-db --no-defaults --datadir="$work/data" "${user[@]}" --auth-root-authentication-method=normal \
  --skip-test-db >/dev/null
mariadbd --no-defaults --datadir="$work/data" --socket="$work/sock" --skip-networking "${user[@]}" \
  --pid-file="$work/pid" --log-error="$work/err.log" --innodb-buffer-pool-size=1G \
  --innodb-flush-log-at-trx-commit=0 --skip-log-bin & server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 100); do [ -S "$work/sock" ] && break; sleep 0.2; done
sql() { mariadb --no-defaults --socket="$work/sock" -uroot "$@"; }
sql -e "CREATE DATABASE shop"
sql shop <<SQL
CREATE TABLE products (
  sku VARCHAR(32) PRIMARY KEY, name VARCHAR(255), price DECIMAL(12,4), qty INT,
  status TINYINT(1), weight DOUBLE, updated_at DATETIME(3), description TEXT);
INSERT INTO products
  SELECT CONCAT('SKU-', LPAD(seq, 8, '0')), CONCAT('Product ', seq, ' in a longer name'),
         (seq % 10000) / 100 + 0.99, seq % 500, seq % 7 > 0, (seq % 1000) / 7,
         TIMESTAMP('2026-01-01') + INTERVAL seq SECOND,
         REPEAT(CONCAT('Text of product ', seq, '. '), 20)
  FROM seq_1_to_$n;
SQL
export BENCH_DATABASE_URL="mysql://root@localhost/shop?socket=$work/sock"
query="SELECT sku, name, price, qty, status, weight, updated_at, description FROM products"
cat >"$work/feedsync.toml" <<TOML
state = "state.sqlite"
[target]
url = "file:out/{feed}.ndjson"
[[feeds]]
name = "products"
database_url_env = "BENCH_DATABASE_URL"
query = "$query"
key = ["sku"]
TOML
secs() { python3 bench/measure.py 1 -- "$@"; }
"$tool" mysql-floor "$query" >/dev/null 2>&1   # warm the buffer pool
for r in $(seq "$rounds"); do
  floor=$("$tool" mysql-floor "$query" 2>/dev/null)
  rm -rf "$work/state.sqlite"* "$work/out"
  read -r first first_rss < <(secs "$bin" --config "$work/feedsync.toml" sync)
  rm -rf "$work/out"
  read -r same same_rss < <(secs "$bin" --config "$work/feedsync.toml" sync)
  echo "| $r | $floor s | $first s ($(python3 -c "print(f'{$first/$floor:.2f}')")×, $first_rss MB) | $same s ($(python3 -c "print(f'{$same/$floor:.2f}')")×, $same_rss MB) |"
done
