#!/usr/bin/env bash
# Recovery time of a million keys plus a log tail: preload KEYS keys (100-byte values), take a
# snapshot, write LOG_MB MiB of log after it (batches of 100 overwrites), kill -9, then start
# again REPEAT times and print the server's own `recovered … in N ms` line each time.
#
#   bash benches/recovery.sh                      # 1 000 000 keys, a 64 MiB tail: ~2 minutes
#   KEYS=100000 LOG_MB=8 bash benches/recovery.sh
#   BIN=/path/to/a ALSO=/path/to/b bash benches/recovery.sh   # a and b in turn, same data dir
#
# Pinned to SERVER_CPU; the page cache is warm (the files were just written). Only 127.0.0.1.
set -euo pipefail
KEYS=${KEYS:-1000000}
LOG_MB=${LOG_MB:-64}
REPEAT=${REPEAT:-3}
SERVER_CPU=${SERVER_CPU:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
[ -n "${BIN:-}" ] || (cd "$root" && cargo build --release --quiet)
bin="${BIN:-$root/target/release/twinkv}"
work=$(mktemp -d "${TMPDIR:-/tmp}/twinkv-recovery.XXXXXX")
pid=""
trap '[ -n "$pid" ] && kill -KILL $pid 2>/dev/null; rm -rf "$work"' EXIT

start() {
  : >"$work/out"
  taskset -c "$SERVER_CPU" "$bin" serve --addr 127.0.0.1:0 --data-dir "$work/data" \
    --workers 1 >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 600); do
    port=$(sed -n 's#^listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$work/out")
    [ -n "$port" ] && return
    sleep 0.05
  done
  cat "$work/err" >&2; exit 1
}

start
python3 - "$port" "$KEYS" "$LOG_MB" <<'PY'
import http.client, random, sys
port, n, log_mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
def post(path, body=b""):
    c.request("POST", path, body)
    r = c.getresponse(); t = r.read()
    assert r.status == 200, (r.status, t[:200])
for start in range(0, n, 10000):
    items = ['"key%08d":"%s"' % (i, "v" * 98) for i in range(start, min(n, start + 10000))]
    post("/kv", ('{"put":{' + ",".join(items) + "}}").encode())
post("/snapshot")
rng = random.Random(1)
written = 0
while written < log_mb * 1024 * 1024:
    items = ['"key%08d":"%s"' % (rng.randrange(n), "w" * 98) for _ in range(100)]
    body = ('{"put":{' + ",".join(items) + "}}").encode()
    post("/kv", body)
    written += len(body)
c.request("GET", "/snapshot"); r = c.getresponse(); s = r.read()
print("before the kill:", s.decode()[:300])
PY
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true; pid=""
du -sh "$work/data/log" "$work/data"/snapshot-*.json
first=$bin
for rep in $(seq 1 "$REPEAT"); do
  for bin in "$first" ${ALSO:-}; do
    start
    echo "$bin: $(grep '^recovered' "$work/out")"
    kill -KILL "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  done
done
