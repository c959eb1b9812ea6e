#!/usr/bin/env bash
# How tests/data/state-v4.sqlite was made: by the feedsync release of
# 2026-12-01 (schema 4, commit 7a1a235), against a loopback receiver that
# fails some items, so the file holds every status a real one does:
#   feed `p` (immediate): sent, retry (FLAKY), failed (BAD), a delivered
#     tombstone (GONE) and a pending one (GONE2: the receiver was down);
#   feed `legacy` (mode legacy, keep_data): collected, never sent (pending,
#     with data);
#   feed `pair` (composite key): sent.
#   bash tests/data/make-state-v4.sh /path/to/feedsync-7a1a235 OUT.sqlite
set -euo pipefail
bin=$(realpath "$1") out=$(realpath "$2") here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'kill $rx 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
cat >rx.py <<'PY'
import http.server, json, sys, os, gzip
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers['Content-Length']))
        if self.headers.get('Content-Encoding') == 'gzip':
            raw = gzip.decompress(raw)
        body = json.loads(raw)
        if os.path.exists('down'):
            self.send_response(503); self.end_headers(); return
        res = [{"id": i["id"], "ok": False, "retryable": i["id"] == "FLAKY",
                "error": "rejected " + i["id"]}
               for i in body["items"] if i["id"] in ("FLAKY", "BAD")]
        out = json.dumps({"results": res}).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(out)))
        self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
open('port', 'w').write(str(s.server_port)); s.serve_forever()
PY
python3 rx.py & rx=$!
for _ in $(seq 50); do [ -s port ] && break; sleep 0.1; done
port=$(cat port)
{ echo 'state = "state.sqlite"'; sed "s|@URL@|http://127.0.0.1:$port/{feed}|" "$here/state-v4.toml"; } >feedsync.toml
{ for s in A1 A2 A3 FLAKY BAD GONE GONE2 'W/1%'; do echo "{\"sku\":\"$s\",\"price\":1}"; done; } >p.ndjson
{ for s in L1 L2; do echo "{\"sku\":\"$s\",\"price\":2}"; done; } >l.ndjson
printf '%s\n' '{"sku":"X","store":"de","price":3}' '{"sku":7,"store":"fr","price":4}' >pair.ndjson
"$bin" --config feedsync.toml sync || true
grep -v GONE\" p.ndjson >p2 && mv p2 p.ndjson
"$bin" --config feedsync.toml sync || true
touch down
grep -v GONE2 p.ndjson >p2 && mv p2 p.ndjson
"$bin" --config feedsync.toml sync || true
"$bin" --config feedsync.toml status
cp state.sqlite "$out"
