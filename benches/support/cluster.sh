# Shared by benches/cluster.sh and benches/cluster-cpu.sh: starting nodes and preloading keys.
# Expects `bin` (the twinkv binary), `work` (a scratch dir), the array `pids` and `N` (keys).
# Only ever targets 127.0.0.1.

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

