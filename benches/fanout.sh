#!/usr/bin/env bash
# fanout.sh [BIN]: where a busy prefix's watchers spend the server's core. 1 000 watchers
# (WATCHERS) on the prefix every PUT writes, one 6 s wrk PUT run (16 connections, 10 000 keys),
# then: PUT/s, the events the crowd received (bytes read / bytes per event), and the CPU ticks
# (1/100 s) each server thread used during the run, user and system.
#
#   bash benches/fanout.sh                      # this tree's release binary
#   BIN=/path/to/twinkv bash benches/fanout.sh  # another build
#
# Server on core 1 (one worker), wrk and the crowd (benches/watchers.rs) on core 0, as in
# benches/watchers.sh. Only ever targets 127.0.0.1.
set -euo pipefail
WATCHERS=${WATCHERS:-1000}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
. "$here/support/server.sh"
build_crowd "$root"
bin="${BIN:-$root/target/release/twinkv}"
work=$(mktemp -d "${TMPDIR:-/tmp}/twinkv-fanout.XXXXXX")
pid=""; cp=""
cleanup() {
  [ -n "$cp" ] && kill "$cp" 2>/dev/null || true
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
start_server 1 "$bin" "$work" --workers 1
preload "$port" 10000
seq_now() { curl -s "http://127.0.0.1:$port/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])'; }
ticks() { for t in /proc/$pid/task/*; do echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done | sort; }
taskset -c 0 "$crowd" "127.0.0.1:$port" "$WATCHERS" key 9 >"$work/crowd" 2>&1 &
cp=$!
sleep 2
seq0=$(seq_now); ticks >"$work/a"
taskset -c 0 wrk -t1 -c16 -d6s -s "$here/pipeline.lua" "http://127.0.0.1:$port" -- put 10000 1 20260101 | grep Requests/sec
ticks >"$work/b"; seq1=$(seq_now)
wait "$cp"; cp=""
cat "$work/crowd"
echo "puts in the run: $((seq1 - seq0)); watchers fed at the end: $(curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "twinkv_watchers" { print $2 }')"
join "$work/a" "$work/b" | awk '{u = $4 - $2; s = $5 - $3; if (u + s > 0) printf "  %-18s user %4d  sys %4d ticks\n", $1, u, s}'
