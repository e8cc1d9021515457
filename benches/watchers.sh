#!/usr/bin/env bash
# What open watchers cost: GET and PUT throughput with no watcher, with 1000 watchers on a
# prefix the load never writes, and with 1000 watchers on the busy prefix (every PUT is an event
# for each of them), all in one run on one server.
#
#   bash benches/watchers.sh            # about 3 minutes
#   WATCHERS=200 DURATION=5s bash benches/watchers.sh
#
# The server runs pinned to SERVER_CPU with one worker (`--workers 1`), preloaded with KEYS
# keys; wrk (16 connections) and the watcher crowd (benches/watchers.rs, one thread) share
# CLIENT_CPU. Only ever targets 127.0.0.1.
set -euo pipefail

DURATION=${DURATION:-8s}
REPEAT=${REPEAT:-3}
KEYS=${KEYS:-10000}
WATCHERS=${WATCHERS:-1000}
CONNS=${CONNS:-16}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
HOST=127.0.0.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
. "$here/support/server.sh"
build_crowd "$root"
bin="${BIN:-$root/target/release/twinkv}"

work=$(mktemp -d "${TMPDIR:-/tmp}/twinkv-watchers.XXXXXX")
server_pid=""
crowd_pid=""
cleanup() {
  [ -n "$crowd_pid" ] && kill "$crowd_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ulimit -n 65536 2>/dev/null || true
start_server "$SERVER_CPU" "$bin" "$work" --workers 1
server_pid=$pid
preload "$port" "$KEYS"

run() { # LABEL MODE: one wrk run; prints req/s
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --timeout 10s \
    -s "$here/pipeline.lua" "http://$HOST:$port" -- "$2" "$KEYS" 1 20260101 >"$work/wrk" 2>&1
  awk '/^Requests\/sec:/ { print $2 }' "$work/wrk"
}
watchers_now() { curl -s "http://$HOST:$port/metrics" | awk '$1 == "twinkv_watchers" { print $2 }'; }

printf 'scenario\trep\tget_rps\tput_rps\twatchers_fed_after\n'
for rep in $(seq 1 "$REPEAT"); do
  for scenario in none idle busy; do
    case $scenario in
      none) prefix="" ;;
      idle) prefix="elsewhere/" ;;
      busy) prefix="key" ;;
    esac
    if [ "$scenario" != none ]; then
      secs=$(( 2 * ${DURATION%s} + 10 ))
      taskset -c "$CLIENT_CPU" "$crowd" "$HOST:$port" "$WATCHERS" "$prefix" "$secs" \
        >"$work/crowd" 2>&1 &
      crowd_pid=$!
      for _ in $(seq 1 100); do
        [ "$(watchers_now)" = "$WATCHERS" ] && break
        sleep 0.1
      done
    fi
    get=$(run "$scenario" get)
    put=$(run "$scenario" put)
    fed=$(watchers_now)
    printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$rep" "$get" "$put" "$fed"
    if [ -n "$crowd_pid" ]; then
      kill "$crowd_pid" 2>/dev/null || true
      wait "$crowd_pid" 2>/dev/null || true
      crowd_pid=""
      sleep 1
    fi
  done
done
