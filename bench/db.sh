#!/usr/bin/env bash
# A database source at scale: a throwaway MariaDB (or PostgreSQL) with an
# N-row products table (the columns of a flat catalog table), then,
# alternated round by round, the floor (stream the query's rows through the
# client and discard them: `benchtool mysql-floor` or `benchtool pg-floor`),
# and feedsync's first sync and no-change sync of the same query to a
# `file:` target.
#
#   bench/db.sh N ROUNDS [mariadb|postgres]    # e.g. bench/db.sh 1000000 3 postgres
#
# MariaDB needs Debian's mariadb-server (mariadbd, mariadb-install-db,
# mariadb); PostgreSQL Debian's postgresql (/usr/lib/postgresql/*/bin), run
# as `nobody` when this runs as root. To compare builds, name them in
# $FEEDSYNC_BINS (space-separated): each round then runs the floor and each
# build in turn (A B A B …), on the same server.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,15p "$0"; exit 2; }
n=$1 rounds=$2 kind=${3:-mariadb}
dir=${BENCH_DIR:-target/bench}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
cargo build --release --quiet --bin feedsync --example benchtool
bins=(${FEEDSYNC_BINS:-$PWD/target/release/feedsync})
tool=$PWD/target/release/examples/benchtool

work=$dir/db-$kind-$n
rm -rf "$work"; mkdir -p "$work"
columns="sku, name, price, qty, status, weight, updated_at, description"
case $kind in
mariadb)
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
  floor=mysql-floor
  ;;
postgres)
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  # PostgreSQL refuses to run as root, and `nobody` may not reach $dir:
  # its cluster lives in a folder of its own under /tmp.
  pgdir=$(mktemp -d /tmp/feedsync-bench-pg-XXXXXX); chmod 755 "$pgdir"
  as=(); [ "$(id -u)" = 0 ] && { chown nobody "$pgdir"; as=(runuser -u nobody --); }
  "${as[@]}" "$pgbin/initdb" -D "$pgdir/data" -U shop --auth-local=trust -E UTF8 --locale=C --no-sync >/dev/null 2>&1
  "${as[@]}" "$pgbin/postgres" -D "$pgdir/data" -k "$pgdir" -c listen_addresses= -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=1GB -c max_wal_size=4GB >"$work/err.log" 2>&1 & server=$!
  # Stopped by its postmaster's PID (runuser does not pass a signal on).
  trap 'kill -INT "$(head -1 "$pgdir/data/postmaster.pid" 2>/dev/null)" 2>/dev/null; wait $server 2>/dev/null; rm -rf "$pgdir"' EXIT
  for _ in $(seq 100); do [ -S "$pgdir/.s.PGSQL.5432" ] && break; sleep 0.2; done
  sql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -U shop "$@"; }
  sleep 0.5
  sql -d postgres -c "CREATE DATABASE shop"
  sql -d shop <<SQL
CREATE TABLE products (
  sku varchar(32) PRIMARY KEY, name varchar(255), price numeric(12,4), qty int,
  status boolean, weight double precision, updated_at timestamp(3), description text);
INSERT INTO products
  SELECT 'SKU-' || lpad(seq::text, 8, '0'), 'Product ' || seq || ' in a longer name',
         (seq % 10000) / 100.0 + 0.99, seq % 500, seq % 7 > 0, (seq % 1000) / 7.0,
         timestamp '2026-01-01' + seq * interval '1 second',
         repeat('Text of product ' || seq || '. ', 20)
  FROM generate_series(1, $n) seq;
VACUUM (FREEZE, ANALYZE) products;
SQL
  export BENCH_DATABASE_URL="postgres://shop@${pgdir//\//%2F}/shop"
  floor=pg-floor
  ;;
*) echo "unknown kind $kind: mariadb or postgres" >&2; exit 2 ;;
esac
query="SELECT $columns FROM products"
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
"$tool" $floor "$query" >/dev/null 2>&1   # warm the buffer pool
for r in $(seq "$rounds"); do
  floor_s=$("$tool" $floor "$query" 2>/dev/null)
  for bin in "${bins[@]}"; do
    rm -rf "$work/state.sqlite"* "$work/out"
    read -r first first_rss < <(secs "$bin" --config "$work/feedsync.toml" sync)
    rm -rf "$work/out"
    read -r same same_rss < <(secs "$bin" --config "$work/feedsync.toml" sync)
    label=$kind; [ ${#bins[@]} -gt 1 ] && label="$kind $bin"
    echo "| $label | $r | $floor_s s | $first s ($(python3 -c "print(f'{$first/$floor_s:.2f}')")×, $first_rss MB) | $same s ($(python3 -c "print(f'{$same/$floor_s:.2f}')")×, $same_rss MB) |"
  done
done
