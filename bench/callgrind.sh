#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: repeatable on a noisy
# machine (it counts instructions, not time). Starts an nginx upstream and the given tidegate
# binary, sends N1 then N2 keep-alive requests in two runs, and prints (I(N2) - I(N1)) / (N2 - N1).
#
# usage: bench/callgrind.sh [BINARY] [extra tidegate run flags...]
#   e.g. bench/callgrind.sh target/release/tidegate --access-log off
#        bench/callgrind.sh nginx    (the reference: nginx as the proxy, one worker, keepalive 1024)
#   LOAD=h1 (default): one HTTP/1.1 connection, one request at a time (Python's http.client).
#   LOAD=h1-C: C HTTP/1.1 connections at once from h2load --h1 (N1 and N2 multiples of C).
#   LOAD=h2c: one HTTP/2 (prior knowledge) connection, 4 streams at a time, from h2load
#   (apt-get install -y nghttp2-client); LOAD=h2c-C: C such connections at once.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tidegate}; shift || true
EXTRA=("$@")
N1=${N1:-500}; N2=${N2:-2500}
LOAD=${LOAD:-h1}
TOOLS=(valgrind nginx python3 curl)
CONNS=1
case $LOAD in
  h1) ;;
  h1-[0-9]* | h2c-[0-9]*) CONNS=${LOAD#*-}; TOOLS+=(h2load) ;;
  h2c) TOOLS+=(h2load) ;;
  *) echo "LOAD must be h1, h1-C, h2c or h2c-C, not $LOAD" >&2; exit 1 ;;
esac
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind nginx curl nghttp2-client)" >&2; exit 1; }
done
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir cg
UP=$(port); HTTP=$(port); ADMIN=$(port); H2=$(port)
nginx_upstream "$UP" "$(printf 'x%.0s' $(seq 100))"
mkdir -p "$W/config"
one_route "$W/config/all.yaml" "$UP"
cat > "$W/proxy.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $W/proxy.pid; error_log $W/proxy.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 1024; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$HTTP; listen 127.0.0.1:$H2 http2;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
count() { # N -> total instructions of a run serving N requests
  local out="$W/cg.$1"
  if [[ $BIN == nginx ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" nginx -c "$W/proxy.conf" \
      >/dev/null 2>"$W/proxy.stderr" &
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" run --config "$W/config" \
      --http-addr "127.0.0.1:$HTTP" --https-addr off --admin-addr "127.0.0.1:$ADMIN" --worker-threads 1 --log-level warn "${EXTRA[@]}" \
      >/dev/null 2>"$W/tidegate.err" &
  fi
  local pid=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null -H "Host: h" "127.0.0.1:$HTTP/" && break; sleep 0.1; done
  if [[ $LOAD == h2c* || $LOAD == h1-* ]]; then
    local port=$HTTP flags=(-c "$CONNS" -m 4)
    [[ $BIN == nginx && $LOAD == h2c* ]] && port=$H2
    [[ $LOAD == h1-* ]] && flags=(--h1 -c "$CONNS")
    h2load -n "$1" "${flags[@]}" "http://127.0.0.1:$port/x" >"$W/h2load.$1"
    grep -q "requests: $1 total, $1 started, $1 done, $1 succeeded" "$W/h2load.$1" ||
      { cat "$W/h2load.$1" >&2; exit 1; }
  else
  python3 - "$HTTP" "$1" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    c.request("GET", "/x", headers={"Host": "h"}); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  fi
  if [[ $BIN == nginx ]]; then kill -QUIT "$pid"; else kill -INT "$pid"; fi
  wait "$pid" || true
  grep -h '^summary:\|^totals:' "$out" | head -1 | awk '{print $2}'
}
A=$(count "$N1"); B=$(count "$N2")
echo "instructions per request: $(( (B - A) / (N2 - N1) ))  ($LOAD; $BIN ${EXTRA[*]})"
