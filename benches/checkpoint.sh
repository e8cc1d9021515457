#!/usr/bin/env bash
# GET latency while checkpoints of a large map are written, against the same GETs without one
# (issue 9: "a checkpoint of 1M keys never raises GET p99 above 2x its read-only value").
#
#   bash benches/checkpoint.sh                       # 1 000 000 keys, 3 rounds of 8 s runs
#   N=10000 ROUNDS=1 DURATION=3s bash benches/checkpoint.sh      # a quick look
#   BIN=/path/to/twinkv bash benches/checkpoint.sh   # measure another build
#
# One server (`--workers 1`, pinned to core $SERVER_CPU, automatic checkpoints off through a
# huge `--checkpoint-log-bytes`) is preloaded with N keys of 100-byte values. Each round then
# runs, with wrk pinned to core $CLIENT_CPU (64 connections, random GETs, benches/pipeline.lua):
#
#   readonly     the GETs alone
#   checkpoint   the same GETs while a loop on the client's core writes one key and asks
#                `POST /snapshot` again and again, so an image of the whole map is being
#                written for the whole run
#
# and prints req/s, p50 and p99 of each, the ratio of the p99s, and how many checkpoints the
# loop completed (with the server's own duration for the last one). Only 127.0.0.1 is contacted.
set -euo pipefail

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SEED=${SEED:-20260101}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/support/server.sh
source "$root/benches/support/server.sh"

need_wrk_and_bin "$root"

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "${loop_pid:-}" ] && kill "$loop_pid" 2>/dev/null || true
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

metric() {
  curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

# p99 and p50 (µs) and req/s of one wrk output, from pipeline.lua's `done` line.
parse() {
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$1")
  p50=$(sed -n 's/^twinkv-latency .*p50_us=\([0-9]*\).*/\1/p' "$1")
  p99=$(sed -n 's/^twinkv-latency .*p99_us=\([0-9]*\).*/\1/p' "$1")
  echo "${rps:-0} ${p50:-nan} ${p99:-nan}"
}

gets() {
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --timeout 10s --latency \
    -s "$root/benches/pipeline.lua" "http://127.0.0.1:$port" -- get "$N" 1 "$SEED" >"$1" 2>&1
}

# Checkpoints back to back: each needs a write the newest image lacks, then waits for its image.
checkpoints() {
  local i=0
  while :; do
    curl -s -o /dev/null -X PUT --data "checkpoint $i" "http://127.0.0.1:$port/kv/bench-checkpoint"
    curl -s -o /dev/null --max-time 600 -X POST "http://127.0.0.1:$port/snapshot"
    i=$((i + 1))
  done
}

start_server "$SERVER_CPU" "$BIN" "$work" --workers 1 --checkpoint-log-bytes 1099511627776
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" >&2
echo "binary: $BIN; $N keys; $CONNS connections; $DURATION per run" >&2
t0=$(date +%s.%N)
preload "$port" "$N"
curl -s -o /dev/null -X POST "http://127.0.0.1:$port/snapshot"
echo "preloaded and checkpointed in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2

printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' round run req/s p50_us p99_us checkpoints last_s >"$work/rows"
for round in $(seq 1 "$ROUNDS"); do
  gets "$work/ro-$round"
  read -r rps p50 p99 <<<"$(parse "$work/ro-$round")"
  printf '%s\treadonly\t%s\t%s\t%s\t-\t-\n' "$round" "$rps" "$p50" "$p99" >>"$work/rows"

  c0=$(metric twinkv_snapshots_total)
  taskset -c "$CLIENT_CPU" bash -c "$(declare -f checkpoints); port=$port; checkpoints" &
  loop_pid=$!
  gets "$work/cp-$round"
  kill "$loop_pid" 2>/dev/null || true
  wait "$loop_pid" 2>/dev/null || true
  loop_pid=""
  c1=$(metric twinkv_snapshots_total)
  read -r rps p50 p99 <<<"$(parse "$work/cp-$round")"
  printf '%s\tcheckpoint\t%s\t%s\t%s\t%s\t%s\n' "$round" "$rps" "$p50" "$p99" "$((c1 - c0))" \
    "$(metric twinkv_snapshot_duration_seconds)" >>"$work/rows"
  # Let a checkpoint still under way finish before the next read-only run.
  curl -s -o /dev/null --max-time 600 -X POST "http://127.0.0.1:$port/snapshot"
done

column -t "$work/rows"
python3 - "$work/rows" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:]]
ro = [float(r[4]) for r in rows if r[1] == "readonly"]
cp = [float(r[4]) for r in rows if r[1] == "checkpoint"]
print("per round, checkpoint p99 / read-only p99: " + ", ".join("%.2f" % (c / r) for r, c in zip(ro, cp)))
print("medians: read-only p99 %.0f us, checkpoint p99 %.0f us, ratio %.2f (target <= 2)"
      % (statistics.median(ro), statistics.median(cp), statistics.median(cp) / statistics.median(ro)))
PY
