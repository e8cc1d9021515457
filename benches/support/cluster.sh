# Shared by benches/cluster.sh and benches/cluster-cpu.sh: starting nodes and preloading keys.
# Expects `bin` (the twinkv binary), `N` (keys) and `HOST`; makes the scratch dir `work`, and kills every
# process in `pids` and removes `work` on exit. Only ever targets 127.0.0.1.

work=$(mktemp -d "${TMPDIR:-/tmp}/twinkv-cluster.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# node I ADDR RAFT [extra]: starts cluster node I (or standalone when RAFT is "-").
node() {
  local i=$1 addr=$2 raft=$3; shift 3
  local args=(serve --addr "$addr" --data-dir "$work/n$i" --durability sync --workers 1)
  [ "$raft" = - ] || args+=(--node-id "$i" --raft-addr "$raft")
  "$bin" "${args[@]}" "$@" >"$work/out$i" 2>"$work/err$i" &
  pids+=($!)
  echo $! >"$work/pid$i"
  for _ in $(seq 1 100); do grep -q '^listening on' "$work/out$i" && return 0; sleep 0.05; done
  echo "node $i did not start: $(cat "$work/err$i")" >&2; exit 1
}

preload() { # BASE_URL: N keys through the batch route, then checks one
  python3 - "$1" "$N" <<'PY'
import http.client, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); n = int(sys.argv[2])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
for start in range(0, n, 1000):
    items = ['"k%012d":"%s"' % (i, "v" * 98) for i in range(start, min(n, start + 1000))]
    c.request("POST", "/kv", ('{"put":{' + ",".join(items) + "}}").encode())
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}


# start_cluster: three nodes (API at ${addr[1..3]}, Raft at ${raft[1..3]}), node 1 initialized
# with the other two added.
declare -A addr raft
start_cluster() {
  rm -rf "$work"/n1 "$work"/n2 "$work"/n3
  for i in 1 2 3; do
    addr[$i]=$HOST:$(free_port); raft[$i]=$HOST:$(free_port)
    node "$i" "${addr[$i]}" "${raft[$i]}"
  done
  curl -sf -X POST "http://${addr[1]}/cluster/init" >/dev/null
  for i in 2 3; do
    curl -sf -X POST "http://${addr[1]}/cluster/nodes" \
      -d "{\"id\":$i,\"addr\":\"${addr[$i]}\",\"raft_addr\":\"${raft[$i]}\"}" >/dev/null
  done
}
