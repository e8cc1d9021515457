#!/usr/bin/env bash
# cpu.sh BIN MODE DEPTH: req/s and the server's CPU time per request, one 5 s wrk run at 10 000
# keys (server on core 0 with one worker, wrk on core 1). Alternate two builds to compare them:
#   for r in 1 2 3 4 5 6 7; do for b in OLD NEW; do bash benches/cpu.sh $b get 16; done; done
# (OLD: `git worktree add /tmp/old-twinkv 2b7f16c && cd /tmp/old-twinkv && CARGO_TARGET_DIR=/tmp/old-target cargo build --release`).
# Only ever targets 127.0.0.1.
set -euo pipefail
BIN=$1; MODE=$2; DEPTH=$3
. "$(dirname "$0")/support/server.sh"
work=$(mktemp -d)
start_server 0 "$BIN" "$work" --workers 1 --durability async
preload "$port" 10000
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
taskset -c 1 wrk -t1 -c16 -d5s -s "$(dirname "$0")/pipeline.lua" "http://127.0.0.1:$port" -- "$MODE" 10000 "$DEPTH" 20260101 > "$work/wrk" 2>&1
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
reqs=$(awk '/requests in/ {print $1}' "$work/wrk")
rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk")
kill -TERM $pid; wait $pid || true
rm -rf "$work"
python3 -c "print('$MODE d$DEPTH rps=%s cpu_us_per_req=%.2f util=%.2f' % ('$rps', ($t1-$t0)*10000/$reqs, ($t1-$t0)/100/5))"
