#!/usr/bin/env bash
# Where a workload's server CPU goes: a `perf` profile of one pinned twinkv under one wrk run.
#
#   bash benches/profile.sh                         # async PUT at 1 000 000 keys
#   WORKLOAD=mix N=10000 bash benches/profile.sh    # the 90/10 mix at 10 000 keys
#   BIN=/path/to/twinkv OUT=/tmp/prof bash benches/profile.sh
#
# One server (`--workers 1`, core $SERVER_CPU, `--durability $MODE`) is preloaded with N keys of
# 100-byte values; wrk (core $CLIENT_CPU, 64 connections, benches/pipeline.lua) runs WORKLOAD
# (get, put or mix) while `perf record -g` samples the server for $SECONDS_SAMPLED s. Prints
# req/s, then the hottest symbols by thread and by symbol (self time), and keeps perf.data in
# $OUT. Needs `perf` (linux-perf) and a release build with line tables (the release profile
# has them). Only 127.0.0.1 is contacted.
set -euo pipefail

N=${N:-1000000}
WORKLOAD=${WORKLOAD:-put}
MODE=${MODE:-async}
DURATION=${DURATION:-10s}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-6}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SEED=${SEED:-20260101}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/support/server.sh
source "$root/benches/support/server.sh"

command -v perf >/dev/null || { apt-get update && apt-get install -y linux-perf; }
need_wrk_and_bin "$root"

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT


start_server "$SERVER_CPU" "$BIN" "$work" --workers 1 --durability "$MODE"
preload "$port" "$N"
curl -s -o /dev/null -X POST "http://127.0.0.1:$port/snapshot"
echo "binary $BIN; $N keys; $MODE; $WORKLOAD; 64 connections; perf for ${SECONDS_SAMPLED}s of $DURATION" >&2

taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"$DURATION" --timeout 10s --latency \
  -s "$root/benches/pipeline.lua" "http://127.0.0.1:$port" -- "$WORKLOAD" "$N" 1 "$SEED" >"$OUT/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 2
perf record -q -F 1999 -g -p "$pid" -o "$OUT/perf.data" -- sleep "$SECONDS_SAMPLED" 2>/dev/null
wait "$wrk_pid"
grep -E '^Requests/sec|^twinkv-latency' "$OUT/wrk.txt"

echo "== CPU by thread (self samples) =="
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -12
echo "== hottest symbols (self) =="
perf report -i "$OUT/perf.data" --no-children --sort comm,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
echo "perf data kept in $OUT/perf.data"
