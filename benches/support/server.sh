# Shared by the bench scripts (sourced): start a twinkv server on one core and preload it.
# Only ever targets 127.0.0.1.

# start_server CPU BIN WORK [SERVE_ARGS...]: `BIN serve` on core CPU, on a free loopback port,
# with its data in WORK/data and its output in WORK/out and WORK/err. Sets `pid` and `port`;
# exits if the server does not say where it listens within 30 s.
start_server() {
  local cpu=$1 bin=$2 work=$3
  shift 3
  : >"$work/out"
  taskset -c "$cpu" "$bin" serve --addr 127.0.0.1:0 --data-dir "$work/data" "$@" \
    >"$work/out" 2>"$work/err" &
  pid=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(sed -n 's#^listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$work/out")
    [ -n "$port" ] && return 0
    sleep 0.05
  done
  cat "$work/err" >&2
  exit 1
}

# preload PORT N: keys key00000000 .. key{N-1}, each a 98-character string (100 bytes as JSON),
# in batches of 10 000 (the set benches/pipeline.lua reads and writes).
preload() {
  python3 - "$1" "$2" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
for start in range(0, n, 10000):
    items = ['"key%08d":"%s"' % (i, "v" * 98) for i in range(start, min(n, start + 10000))]
    c.request("POST", "/kv", ('{"put":{' + ",".join(items) + "}}").encode())
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}

# build_crowd ROOT: wrk (installed if missing), the release binary and the watch crowd
# (benches/watchers.rs, a client that holds many watch streams open); sets `crowd` to its path.
build_crowd() {
  command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
  (cd "$1" && cargo build --release --quiet && cargo bench --bench watchers --no-run --quiet 2>/dev/null)
  crowd=$(ls -t "$1"/target/release/deps/watchers-* | grep -v '\.d$' | head -n 1)
}

# need_wrk_and_bin ROOT: installs wrk when missing, and sets BIN to ROOT's release build unless
# BIN is already set (to measure another build).
need_wrk_and_bin() {
  command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
  if [ -z "${BIN:-}" ]; then
    (cd "$1" && cargo build --release --quiet)
    BIN=$1/target/release/twinkv
  fi
}
