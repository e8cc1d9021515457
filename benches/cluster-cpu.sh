#!/usr/bin/env bash
# cluster-cpu.sh: where a cluster write's CPU goes. Three nodes (sync, one worker each) and wrk
# on the machine's cores unpinned, as in benches/cluster.sh; 10 000 keys preloaded, then one
# `sync` PUT run with 64 connections to the leader. Prints wrk's figures, each node thread's CPU
# ticks (1/100 s, user + sys) during the run, and the leader's commit index and seq (writes per
# Raft entry). With PERF=1, also records the leader with `perf record --call-graph dwarf` for
# 3 s into perf.data. CONNS=1 gives one write per entry: the CPU an entry costs.
#   BIN=target/release/twinkv DURATION=8s bash benches/cluster-cpu.sh
# Only ever targets 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${BIN:-$(dirname "$here")/target/release/twinkv}
DURATION=${DURATION:-8s}
N=10000
HOST=127.0.0.1
. "$here/support/cluster.sh"
start_cluster
preload "http://${addr[1]}"
ticks() { # one line per thread: node, thread name, tid, user + sys ticks
  for i in 1 2 3; do
    for t in /proc/"$(cat "$work/pid$i")"/task/*; do
      echo "n$i $(tr ' ' _ <"$t/comm") $(basename "$t") $(awk '{print $14+$15}' "$t/stat")"
    done
  done | sort -k3,3
}
ticks >"$work/before"
if [ -n "${PERF:-}" ]; then
  perf record -F 499 --call-graph dwarf,16384 -o perf.data -p "$(cat "$work/pid1")" -- sleep 3 \
    >/dev/null 2>&1 &
  perf_pid=$!
fi
wrk -t1 -c"${CONNS:-64}" -d"$DURATION" --timeout 10s -s "$here/kv.lua" "http://${addr[1]}" -- n="$N" \
  mode=write prefix=/kv/ | grep -E "Latency|Requests/sec"
[ -z "${PERF:-}" ] || wait "$perf_pid"
ticks >"$work/after"
join -j3 "$work/before" "$work/after" |
  awk '{ d = $7 - $4; if (d > 2) print $2, $3, d }' | sort -k1,1 -k3,3nr
curl -s "http://${addr[1]}/cluster" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print("commit_index", d["commit_index"], "seq", d["seq"])'
