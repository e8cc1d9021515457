#!/usr/bin/env bash
# Cluster mode beside its peers, in one run on this machine (issue 11):
#
#   sync PUT/s, 64 connections to the leader: a 3-node twinkv cluster, twinkv standalone, and a
#     3-node etcd 3.4 cluster (--enable-v2, PUT /v2/keys/ form value=);
#   GET/s (16 connections): standalone, `stale` on a follower, `linearizable` on the leader;
#   failover: kill -9 the leader, time to the first answered write on a survivor (10 times).
#
#   bash benches/cluster.sh                       # about 6 minutes
#   REPEAT=1 DURATION=4s FAILOVERS=3 bash benches/cluster.sh
#   ONLY="cluster" bash benches/cluster.sh        # some of: standalone cluster failover etcd
#
# Every process (the three nodes, etcd's three members, wrk) shares the machine's cores
# unpinned: three nodes on two cores is what the comparison is about. The same wrk script
# (benches/kv.lua, from the peers harness) drives twinkv and etcd. Keys k000000000000..
# k000000009999, preloaded, 100-byte values. Only ever targets 127.0.0.1.
set -euo pipefail

DURATION=${DURATION:-8s}
REPEAT=${REPEAT:-3}
FAILOVERS=${FAILOVERS:-10}
N=${N:-10000}
ONLY=${ONLY:-"standalone cluster failover etcd"}
HOST=127.0.0.1
want() { [[ " $ONLY " == *" $1 "* ]]; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
command -v etcd >/dev/null || { apt-get update && apt-get install -y etcd-server; }
[ -n "${BIN:-}" ] || (cd "$root" && cargo build --release --quiet)
bin="${BIN:-$root/target/release/twinkv}"

. "$here/support/cluster.sh"

wrk_rps() { # CONNS URL ARGS...: req/s of one run
  local conns=$1 url=$2; shift 2
  wrk -t1 -c"$conns" -d"$DURATION" --timeout 10s -s "$here/kv.lua" "$url" -- n="$N" "$@" \
    >"$work/wrk" 2>&1
  awk '/^Requests\/sec:/ { print $2 }' "$work/wrk"
}

leader_of() { # A1 A2 A3: the API address of the leader
  local a
  for _ in $(seq 1 100); do
    for a in "$@"; do
      if curl -s "http://$a/cluster" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["state"]=="leader" else 1)' 2>/dev/null; then
        echo "$a"; return 0
      fi
    done
    sleep 0.1
  done
  echo "no leader" >&2; exit 1
}

printf 'row\trep\tvalue\n'

# --- twinkv standalone, sync
want standalone && for rep in $(seq 1 "$REPEAT"); do
  rm -rf "$work/n0"; a=$HOST:$(free_port)
  node 0 "$a" -
  preload "http://$a"
  printf 'standalone_sync_put\t%s\t%s\n' "$rep" "$(wrk_rps 64 "http://$a" mode=write prefix=/kv/)"
  printf 'standalone_get\t%s\t%s\n' "$rep" "$(wrk_rps 16 "http://$a" mode=get prefix=/kv/)"
  kill -TERM "$(cat "$work/pid0")"; wait "$(cat "$work/pid0")" 2>/dev/null || true
done

# --- twinkv, three nodes, sync
stop_cluster() {
  for i in 1 2 3; do kill -TERM "$(cat "$work/pid$i")" 2>/dev/null || true; done
  for i in 1 2 3; do wait "$(cat "$work/pid$i")" 2>/dev/null || true; done
}
want cluster && for rep in $(seq 1 "$REPEAT"); do
  start_cluster
  preload "http://${addr[1]}"
  leader=$(leader_of "${addr[1]}" "${addr[2]}" "${addr[3]}")
  follower=${addr[2]}; [ "$leader" = "$follower" ] && follower=${addr[3]}
  printf 'cluster_sync_put\t%s\t%s\n' "$rep" "$(wrk_rps 64 "http://$leader" mode=write prefix=/kv/)"
  printf 'cluster_stale_get_follower\t%s\t%s\n' "$rep" \
    "$(wrk_rps 16 "http://$follower" mode=get prefix=/kv/ suffix='?consistency=stale')"
  printf 'cluster_linearizable_get_leader\t%s\t%s\n' "$rep" \
    "$(wrk_rps 16 "http://$leader" mode=get prefix=/kv/)"
  printf 'cluster_linearizable_get_follower\t%s\t%s\n' "$rep" \
    "$(wrk_rps 16 "http://$follower" mode=get prefix=/kv/)"
  stop_cluster
done

# --- failover: kill -9 the leader, time to the first answered write on a survivor
want failover && start_cluster
want failover && for f in $(seq 1 "$FAILOVERS"); do
  leader=$(leader_of "${addr[1]}" "${addr[2]}" "${addr[3]}")
  for i in 1 2 3; do [ "${addr[$i]}" = "$leader" ] && dead=$i; done
  survivors=()
  for i in 1 2 3; do [ "$i" = "$dead" ] || survivors+=("${addr[$i]}"); done
  ms=$(python3 - "$(cat "$work/pid$dead")" "${survivors[@]}" <<'PY'
import http.client, os, signal, sys, time
pid, nodes = int(sys.argv[1]), sys.argv[2:]
os.kill(pid, signal.SIGKILL)
t0 = time.monotonic()
i = 0
while True:
    for a in nodes:
        h, p = a.split(":")
        try:
            c = http.client.HTTPConnection(h, int(p), timeout=2)
            c.request("PUT", "/kv/failover", b"%d" % i); i += 1
            if c.getresponse().status in (200, 201):
                print("%.0f" % ((time.monotonic() - t0) * 1000)); sys.exit(0)
        except OSError:
            pass
    time.sleep(0.01)
PY
)
  printf 'failover_ms\t%s\t%s\n' "$f" "$ms"
  wait "$(cat "$work/pid$dead")" 2>/dev/null || true
  node "$dead" "${addr[$dead]}" "${raft[$dead]}"
  sleep 2   # let it catch up before the next kill
done
want failover && stop_cluster

# --- etcd 3.4, three members, v2 API
want etcd && for rep in $(seq 1 "$REPEAT"); do
  cluster=""
  for i in 1 2 3; do
    ec[$i]=$(free_port); ep[$i]=$(free_port)
    cluster+="e$i=http://$HOST:${ep[$i]},"
  done
  cluster=${cluster%,}
  for i in 1 2 3; do
    rm -rf "$work/etcd$i"
    etcd --name "e$i" --data-dir "$work/etcd$i" \
      --listen-client-urls "http://$HOST:${ec[$i]}" --advertise-client-urls "http://$HOST:${ec[$i]}" \
      --listen-peer-urls "http://$HOST:${ep[$i]}" --initial-advertise-peer-urls "http://$HOST:${ep[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --enable-v2 --logger zap --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!); epid[$i]=$!
  done
  sleep 4   # election
  python3 - "http://$HOST:${ec[1]}" "$N" <<'PY'
import http.client, sys, threading, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); n = int(sys.argv[2])
def load(part):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    for i in range(part, n, 16):
        c.request("PUT", "/v2/keys/k%012d" % i, b"value=" + b"v" * 100,
                  {"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse(); r.read()
        assert r.status in (200, 201), r.status
ts = [threading.Thread(target=load, args=(p,)) for p in range(16)]
for t in ts: t.start()
for t in ts: t.join()
PY
  printf 'etcd3_sync_put\t%s\t%s\n' "$rep" \
    "$(wrk_rps 64 "http://$HOST:${ec[1]}" mode=write prefix=/v2/keys/ method=PUT body=form)"
  for i in 1 2 3; do kill -TERM "${epid[$i]}" 2>/dev/null || true; done
  for i in 1 2 3; do wait "${epid[$i]}" 2>/dev/null || true; done
done
