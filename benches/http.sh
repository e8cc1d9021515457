#!/usr/bin/env bash
# HTTP load test of twinkv with wrk, server and client each pinned to its own core.
#
#   bash benches/http.sh                 # everything: about 12 minutes on 2 cores
#   DURATION=2s REPEAT=1 SIZES=10000 MODES=async bash benches/http.sh    # a quick look
#   KEEP=/tmp/http-results bash benches/http.sh   # keep raw wrk outputs; then, any time:
#   bash benches/http.sh --summary /tmp/http-results
#
# For each key count in SIZES and durability in MODES it starts a fresh server
# (`--addr 127.0.0.1:0 --workers 1`, a temporary data dir, pinned with `taskset -c $SERVER_CPU`),
# preloads the keys through the batch route, prints the server's peak and anonymous RSS, then
# runs wrk (pinned with `taskset -c $CLIENT_CPU`) on each workload, plain and pipelined:
#
#   health  GET /health: the framework's ceiling, no store work
#   get     GET random keys      put  PUT random keys (100-byte values)      mix  90 % get, 10 % put
#
# In async mode it also measures GET latency under writes: a read-only GET run, then the same
# GET run beside a PUT-only wrk (the writes keep background snapshots running continuously).
# Each measurement is repeated $REPEAT times; the table at the end shows medians.
# Only ever targets 127.0.0.1. Knobs (environment variables) are listed below.
set -euo pipefail

DURATION=${DURATION:-5s}            # wrk -d of every run
REPEAT=${REPEAT:-3}                 # runs per measurement; the table shows the median
SIZES=${SIZES:-"10000 1000000"}     # key counts to preload
MODES=${MODES:-"async sync"}        # --durability values
CONNS=${CONNS:-16}                  # wrk connections
SYNC_PUT_CONNS=${SYNC_PUT_CONNS:-64} # connections of PUT runs in sync mode
DEPTH=${DEPTH:-16}                  # requests per round trip when pipelining
SPLIT_GET_CONNS=${SPLIT_GET_CONNS:-14} # GET connections of the GET-under-writes runs
SPLIT_PUT_CONNS=${SPLIT_PUT_CONNS:-2}  # PUT connections beside them (about 10 % of requests)
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BATCH=${BATCH:-10000}               # keys per preload request
SEED=${SEED:-20260101}              # math.randomseed of the wrk script
KEEP=${KEEP:-}                      # a directory to copy every raw wrk output and log into
# BIN: a twinkv binary to measure instead of building this tree's (see below)
HOST=127.0.0.1

# summarize RESULTS RSS SNAPSHOTS: the table of medians and the targets, from the raw rows.
summarize() {
  python3 - "$@" <<'PY'
import statistics, sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    n, mode, wl, depth, conns, rep, cpu, rps, p50, p99, non2xx, errs = line.rstrip("\n").split("\t")
    rows[(int(n), mode, wl, int(depth), int(conns))].append(
        (float(rps), float(p50), float(p99), int(non2xx), int(errs), float(cpu)))

def med(key, i):
    if i in (1, 2):
        # Latencies: a run in which no round trip completed (pipelined sync PUTs at a million
        # keys take longer than a run) has none; 0 is how older outputs recorded that.
        got = [r[i] for r in rows[key] if r[i] == r[i] and r[i] > 0]
        return statistics.median(got) if got else float("nan")
    return statistics.median(r[i] for r in rows[key])

def cpu_us(key):
    # Server CPU time per request: what a request costs the server, whoever limited the rate.
    return statistics.median(r[5] / 100 / r[0] * 1e6 for r in rows[key] if r[0] > 0)

def find(n, mode, wl, depth):
    for k in rows:
        if k[:4] == (n, mode, wl, depth):
            return k
    return None

def us(v):
    if v != v:
        return "n/a"
    return "%.0f us" % v if v < 10000 else "%.1f ms" % (v / 1000)

print()
print("== HTTP summary: medians of %d run(s) each ==" % max(len(v) for v in rows.values()))
print("srv cpu: the server's CPU use in % of its one core; cpu/req: server CPU time per request.")
print("vs health: req/s over GET /health req/s of the same keys, mode and depth.")
hdr = "%9s  %-5s  %-16s  %5s  %5s  %9s  %8s  %8s  %7s  %6s  %7s  %9s  %s"
print(hdr % ("keys", "mode", "workload", "depth", "conns", "req/s", "p50", "p99", "non-2xx",
             "errors", "srv cpu", "cpu/req", "vs health"))
order = ["health", "get", "put", "mix", "get-readonly", "get-under-writes", "put-beside-gets"]
for key in sorted(rows, key=lambda k: (k[0], k[1], k[3], order.index(k[2]))):
    n, mode, wl, depth, conns = key
    h = find(n, mode, "health", depth)
    ratio = "%.2f" % (med(key, 0) / med(h, 0)) if h and wl != "health" else ""
    print(hdr % (n, mode, wl, depth, conns, "%.0f" % med(key, 0), us(med(key, 1)),
                 us(med(key, 2)), sum(r[3] for r in rows[key]), sum(r[4] for r in rows[key]),
                 "%.0f%%" % med(key, 5), "%.2f us" % cpu_us(key), ratio))

print()
print("Memory after preload (and one flushed snapshot):")
for line in open(sys.argv[2]):
    n, mode, hwm, anon, secs = line.split()
    print("%9s keys %-5s  VmHWM %4d MiB (%4d MB)  RssAnon %4d MiB (%4d MB)  preload %s s"
          % (n, mode, int(hwm) // 1024, int(hwm) * 1024 // 10**6, int(anon) // 1024,
             int(anon) * 1024 // 10**6, secs))
snaps = defaultdict(list)
for line in open(sys.argv[3]):
    n, mode, rep, rest = line.rstrip("\n").split("\t")
    count, last = rest.split()
    snaps[(int(n), mode)].append((int(count), float(last)))
for (n, mode), v in sorted(snaps.items()):
    print("Snapshots during each GET-under-writes run, %d keys %s: %s"
          % (n, mode, ", ".join("%d (last %.0f ms)" % (c, d * 1000) for c, d in v)))

print()
print("Targets (ratios within this run; req/s ratio, then the same from server CPU per request):")
def verdict(ok):
    return "met" if ok else "MISSED"
def ratios(a, b):
    if a is None or b is None:
        return None
    return med(a, 0) / med(b, 0), cpu_us(b) / cpu_us(a)
for n in sorted({k[0] for k in rows}):
    for mode in ("async", "sync"):
        r = ratios(find(n, mode, "get", 16), find(n, mode, "health", 16))
        if r is not None and n == 1000000:
            print("pipelined GET / pipelined health at %d keys (%s): %.2f req/s, %.2f cpu (>= 0.9) %s"
                  % (n, mode, r[0], r[1], verdict(r[0] >= 0.9)))
    ro, uw = find(n, "async", "get-readonly", 1), find(n, "async", "get-under-writes", 1)
    if ro and uw and n == 1000000:
        r = med(uw, 2) / med(ro, 2)
        print("GET p99 under writes and snapshots / read-only GET p99 at %d keys: %s / %s = %.2f (<= 2) %s"
              % (n, us(med(uw, 2)), us(med(ro, 2)), r, verdict(r <= 2)))
    mx = find(n, "async", "mix", 1)
    if ro and mx and n == 1000000:
        print("  (for reference, p99 of the single-wrk 90/10 mix, GETs and PUTs: %s)" % us(med(mx, 2)))
    r = ratios(find(n, "async", "put", 16), find(n, "async", "get", 16))
    if r is not None and n in (10000, 1000000):
        want = 0.7 if n == 10000 else 0.4
        print("async pipelined PUT / pipelined GET at %d keys: %.2f req/s, %.2f cpu (>= %.1f) %s"
              % (n, r[0], r[1], want, verdict(r[0] >= want)))
    for depth in (1, 16):
        k = find(n, "sync", "put", depth)
        if k and n == 10000:
            v = med(k, 0)
            print("sync PUT at %d keys, %d connections, depth %d: %.0f req/s (>= 15000) %s"
                  % (n, k[4], depth, v, verdict(v >= 15000)))
for line in open(sys.argv[2]):
    n, mode, hwm, anon, secs = line.split()
    if n == "1000000":
        mb = int(anon) * 1024 / 1e6
        print("RssAnon at %s keys (%s): %.0f MB (<= 280 MB) %s" % (n, mode, mb, verdict(mb <= 280)))
PY
}

# `bash benches/http.sh --summary DIR` prints the table again from a KEEP directory.
if [ "${1:-}" = "--summary" ]; then
  summarize "$2/results.tsv" "$2/rss.tsv" "$2/snapshots.tsv"
  exit 0
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
script="$here/pipeline.lua"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get update && apt-get install -y wrk
fi

# BIN=/path/to/twinkv measures another build (an older commit's, for a before/after).
if [ -z "${BIN:-}" ]; then
  echo "building the release binary" >&2
  (cd "$root" && cargo build --release --quiet)
fi
bin="${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/twinkv}"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/twinkv-http.XXXXXX")
results="$work/results.tsv"
: >"$results"
server_pid=""

stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    # SIGTERM writes a final snapshot; a million keys take a moment.
    for _ in $(seq 1 300); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
cleanup() {
  stop_server
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP" && cp -r "$work"/*.txt "$work"/*.tsv "$work"/server-* "$KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server MODE N: starts a fresh server, sets server_pid and port.
start_server() {
  local mode=$1 data="$work/data-$1-$2" log="$work/server-$1-$2"
  mkdir -p "$data"
  # Created here, not by the background job's redirection: the loop below may read the log
  # before the job has opened it (seen on a loaded machine), and with pipefail a missing file
  # would end the whole script.
  : >"$log.out"
  : >"$log.err"
  taskset -c "$SERVER_CPU" "$bin" serve --addr "$HOST:0" --data-dir "$data" \
    --durability "$mode" --workers 1 >"$log.out" 2>"$log.err" &
  server_pid=$!
  port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's#^listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$log.out" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "the server did not start:" >&2
    cat "$log.out" "$log.err" >&2
    exit 1
  fi
}

# preload N: puts key00000000.. through POST /kv in batches of $BATCH, 100-byte JSON values.
preload() {
  python3 - "$HOST" "$port" "$1" "$BATCH" <<'PY'
import http.client, json, sys
host, port, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conn = http.client.HTTPConnection(host, port, timeout=600)
for start in range(0, n, batch):
    items = []
    for i in range(start, min(n, start + batch)):
        head = "%08d-" % i
        # 98 characters: 100 bytes once stored as a JSON string, as in the Rust benches.
        items.append('"key%08d":"%s%s"' % (i, head, "v" * (98 - len(head))))
    body = ('{"put":{' + ",".join(items) + "}}").encode()
    conn.request("POST", "/kv", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    if resp.status != 200:
        sys.exit("preload failed at key %d: %d %s" % (start, resp.status, text[:200]))
conn.request("GET", "/kv/key%08d" % (n - 1))
resp = conn.getresponse()
resp.read()
if resp.status != 200:
    sys.exit("the last preloaded key is missing: %d" % resp.status)
PY
}

# cpu_pct T0 T1: the server's CPU use between two cpu_ticks readings, in % of one core.
cpu_pct() {
  awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { split(a, x, " "); split(b, y, " ");
             printf "%.0f", (y[1] - x[1]) / hz / ((y[2] - x[2]) / 1e9) * 100 }'
}

status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$server_pid/status"; }
# cpu_ticks: the server's user + system ticks, and the wall clock in nanoseconds.
cpu_ticks() { echo "$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat") $(date +%s%N)"; }
metric() {
  curl -s "http://$HOST:$port/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
# settle: waits until every earlier write is in a flushed snapshot (POST /snapshot returns at
# once when it already is), so a run never starts while the snapshot thread is still writing
# the previous run's writes: at 1 000 000 keys one snapshot takes over half a second, and the
# run after a write run (the read-only GET baseline among them) used to pay for it in its p99.
settle() {
  curl -s --max-time 120 -X POST "http://$HOST:$port/snapshot" >/dev/null
}

# parse_wrk FILE: "req/s p50_us p99_us non2xx errors" from wrk's output. The percentiles come
# from the script's `done` line (see pipeline.lua: wrk's own 99th is unreliable when pipelining).
parse_wrk() {
  local f=$1 rps p50 p99 non2xx errs
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  p50=$(sed -n 's/^twinkv-latency .*p50_us=\([0-9]*\).*/\1/p' "$f")
  p99=$(sed -n 's/^twinkv-latency .*p99_us=\([0-9]*\).*/\1/p' "$f")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
  errs=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$f")
  echo "${rps:-0} ${p50:-nan} ${p99:-nan} ${non2xx:-0} ${errs:-0}"
}

# wrk_run OUT MODE DEPTH CONNS: one pinned wrk run of the script.
wrk_run() {
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$4" -d"$DURATION" --timeout 10s --latency \
    -s "$script" "http://$HOST:$port" -- "$2" "$n" "$3" "$SEED" >"$1" 2>&1
}

# record N MODE WORKLOAD DEPTH CONNS REP FILE CPU%: one row of results.
record() {
  local parsed
  parsed=$(parse_wrk "$7")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$8" \
    "$(echo "$parsed" | tr ' ' '\t')" >>"$results"
  printf '  %-10s depth %-2s conns %-3s run %s: %s req/s, p50 %s us, p99 %s us, non-2xx %s, errors %s, server cpu %s%%\n' \
    "$3" "$4" "$5" "$6" $parsed "$8" >&2
}

# measure WORKLOAD WRKMODE DEPTH CONNS: one run (number $rep), recorded.
measure() {
  local workload=$1 wmode=$2 depth=$3 conns=$4 out t0 t1
  out="$work/wrk-$n-$mode-$workload-$depth-$rep.txt"
  settle
  t0=$(cpu_ticks)
  wrk_run "$out" "$wmode" "$depth" "$conns"
  t1=$(cpu_ticks)
  record "$n" "$mode" "$workload" "$depth" "$conns" "$rep" "$out" "$(cpu_pct "$t0" "$t1")"
}

# measure_split: one GET-only run alone, then the same beside a PUT-only wrk, whose writes keep
# async background snapshots running.
measure_split() {
  local out put_out put_pid s0 s1 t0 t1 cpu
  out="$work/wrk-$n-$mode-ro-$rep.txt"
  settle
  t0=$(cpu_ticks)
  wrk_run "$out" get 1 "$SPLIT_GET_CONNS"
  t1=$(cpu_ticks)
  record "$n" "$mode" get-readonly 1 "$SPLIT_GET_CONNS" "$rep" "$out" "$(cpu_pct "$t0" "$t1")"
  out="$work/wrk-$n-$mode-gw-$rep.txt"
  put_out="$work/wrk-$n-$mode-pw-$rep.txt"
  s0=$(metric twinkv_snapshots_total)
  t0=$(cpu_ticks)
  wrk_run "$put_out" put 1 "$SPLIT_PUT_CONNS" &
  put_pid=$!
  wrk_run "$out" get 1 "$SPLIT_GET_CONNS"
  wait "$put_pid"
  t1=$(cpu_ticks)
  s1=$(metric twinkv_snapshots_total)
  cpu=$(cpu_pct "$t0" "$t1")
  record "$n" "$mode" get-under-writes 1 "$SPLIT_GET_CONNS" "$rep" "$out" "$cpu"
  record "$n" "$mode" put-beside-gets 1 "$SPLIT_PUT_CONNS" "$rep" "$put_out" "$cpu"
  printf '  snapshots during that run: %s (the last took %s s)\n' "$((s1 - s0))" \
    "$(metric twinkv_snapshot_duration_seconds)" >&2
  printf '%s\t%s\t%s\t%s\n' "$n" "$mode" "$rep" \
    "$((s1 - s0)) $(metric twinkv_snapshot_duration_seconds)" >>"$work/snapshots.tsv"
}

: >"$work/rss.tsv"
: >"$work/snapshots.tsv"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" >&2
for n in $SIZES; do
  for mode in $MODES; do
    echo "== $n keys, durability $mode ==" >&2
    start_server "$mode" "$n"
    started=$(date +%s.%N)
    preload "$n"
    secs=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    curl -s -X POST "http://$HOST:$port/snapshot" >/dev/null
    hwm=$(status_kb VmHWM)
    anon=$(status_kb RssAnon)
    printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$mode" "$hwm" "$anon" "$secs" >>"$work/rss.tsv"
    echo "  preloaded in $secs s; VmHWM $((hwm / 1024)) MiB, RssAnon $((anon / 1024)) MiB" >&2
    # One untimed run first, so no measurement pays for a cold server.
    rep=0
    wrk_run "$work/warmup.txt" get "$DEPTH" "$CONNS"
    put_conns=$CONNS
    [ "$mode" = sync ] && put_conns=$SYNC_PUT_CONNS
    # Repeats go round every workload in turn, so a burst of noise from other work on the
    # machine spreads over the workloads instead of spoiling all runs of one.
    for rep in $(seq 1 "$REPEAT"); do
      for depth in 1 "$DEPTH"; do
        measure health health "$depth" "$CONNS"
        measure get get "$depth" "$CONNS"
        measure put put "$depth" "$put_conns"
        measure mix mix "$depth" "$CONNS"
      done
      if [ "$mode" = async ]; then
        measure_split
      fi
    done
    stop_server
  done
done

summarize "$results" "$work/rss.tsv" "$work/snapshots.tsv"
