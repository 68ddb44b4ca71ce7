#!/usr/bin/env bash
# TLS termination figures (issue #11), tidegate against nginx in one run, printed as a markdown
# table. The load comes from bench/tls_load.rs (rustls; `cargo build --release --example
# tls_load`), which decides what a handshake is: wrk resumes sessions on its own (and Debian's
# negotiated TLS 1.2 with a server offering 1.3).
#
# 1. Full handshakes: a new TCP connection and a full handshake (no resumption) per request.
# 2. Resumed handshakes: a new connection per request, resuming with a session ticket.
# 3. Keep-alive HTTPS: requests on persistent TLS connections.
# For each: per second, and the proxy's CPU (utime+stime) per handshake or request, which does
# not depend on whether the load generator was the bottleneck.
#
# Each proxy runs alone on PROXY_CPU with one worker (tidegate --worker-threads 1, nginx
# worker_processes 1); the upstream (nginx, plain HTTP, keep-alive) and the client share
# LOAD_CPU. Both proxies hold the same certificate (ECDSA P-256 by default, KEY=rsa for RSA
# 2048) and offer TLS 1.2 and 1.3; the client speaks TLS=1.3 (default) or TLS=1.2.
#
# usage: bench/tls.sh [BINARY]     (default target/release/tidegate; build it first)
#   ROUNDS=3 DURATION=10 HANDSHAKE_CONNECTIONS=16 KEEPALIVE_CONNECTIONS=64 KEY=ecdsa|rsa
#   TLS=1.3|1.2 PROXY_CPU=0 LOAD_CPU=1
# Needs nginx, openssl, curl, python3 (apt-get install -y nginx openssl curl python3).
# CPU per handshake or request is the figure to quote on a busy machine; rates depend on what
# else runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tidegate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
HANDSHAKE_CONNECTIONS=${HANDSHAKE_CONNECTIONS:-16}
KEEPALIVE_CONNECTIONS=${KEEPALIVE_CONNECTIONS:-64}
KEY=${KEY:-ecdsa}
TLS=${TLS:-1.3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
for tool in nginx openssl curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y nginx openssl curl python3)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release" >&2; exit 1; }
cargo build --release --quiet --example tls_load
LOAD=target/release/examples/tls_load
(($(nproc) >= 2)) || { echo "needs at least 2 CPUs" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir tls
taskset -cp "$LOAD_CPU" $$ >/dev/null

# --- certificate: a CA and a leaf for bench.test ---
case $KEY in
  ecdsa) keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) keyopt=(-newkey rsa:2048) ;;
  *) echo "KEY must be ecdsa or rsa" >&2; exit 1 ;;
esac
openssl req -x509 "${keyopt[@]}" -nodes -days 2 -subj /CN=bench-ca -keyout "$W/ca.key" -out "$W/ca.crt" 2>/dev/null
openssl req "${keyopt[@]}" -nodes -subj /CN=bench.test -keyout "$W/tls.key" -out "$W/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.test\n' >"$W/san.ext"
openssl x509 -req -in "$W/tls.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial -days 2 \
  -extfile "$W/san.ext" -out "$W/tls.crt" 2>/dev/null

UP=$(port); NGX=$(port); NGX_CHECK=$(port); TG_HTTP=$(port); TG_HTTPS=$(port); TG_ADMIN=$(port)
BODY="tidegate tls bench: a fixed body"

# --- upstream: plain HTTP, keep-alive, on LOAD_CPU ---
mkdir -p "$W/up" "$W/ngx"
cat >"$W/up/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $W/up/nginx.pid; error_log $W/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { default_type text/plain; return 200 "$BODY\n"; } } }
NGINX
taskset -c "$LOAD_CPU" nginx -c "$W/up/nginx.conf" & PIDS+=($!)

# --- nginx terminating TLS on PROXY_CPU (its defaults: TLS 1.2 and 1.3, a session cache off) ---
cat >"$W/ngx/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $W/ngx/nginx.pid; error_log $W/ngx/error.log;
events { worker_connections 4096; }
http {
  log_format reuse '\$ssl_session_reused \$ssl_protocol';
  access_log off;
  keepalive_requests 1000000;
  ssl_protocols TLSv1.2 TLSv1.3;
  upstream up { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGX ssl;
    server_name bench.test;
    ssl_certificate $W/tls.crt; ssl_certificate_key $W/tls.key;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  # The same, logging whether each session was resumed: the check that the client makes the handshakes it says.
  server {
    listen 127.0.0.1:$NGX_CHECK ssl;
    ssl_certificate $W/tls.crt; ssl_certificate_key $W/tls.key;
    access_log $W/ngx/access.log reuse;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
taskset -c "$PROXY_CPU" nginx -c "$W/ngx/nginx.conf" & NGX_PID=$!; PIDS+=("$NGX_PID")

# --- tidegate terminating TLS on PROXY_CPU: the same certificate, from files ---
mkdir -p "$W/tg"
cat >"$W/tg/backend.yaml" <<YAML
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: { name: up }
spec: { endpoints: ["127.0.0.1:$UP"] }
YAML
tls_route "$W/tg/route.yaml" bench.test "$W/tls.crt" "$W/tls.key"
"$BIN" validate --config "$W/tg" >/dev/null
taskset -c "$PROXY_CPU" "$BIN" run --config "$W/tg" --http-addr "127.0.0.1:$TG_HTTP" \
  --https-addr "127.0.0.1:$TG_HTTPS" --admin-addr "127.0.0.1:$TG_ADMIN" --worker-threads 1 \
  --access-log off --log-level warn 2>"$W/tg/err.log" & TG_PID=$!; PIDS+=("$TG_PID")

wait_port "$UP"; wait_port "$NGX"; wait_port "$TG_HTTPS"
# nginx's work is done by its one worker process (the master only starts it).
NGX_WORKER=$(pgrep -P "$NGX_PID")
for p in "$NGX" "$TG_HTTPS"; do
  got=$(curl -fsS --cacert "$W/ca.crt" --resolve "bench.test:$p:127.0.0.1" "https://bench.test:$p/")
  [ "$got" = "$BODY" ] || { echo "127.0.0.1:$p answered '$got'" >&2; exit 1; }
done

# run PID PORT MODE: one load; prints "requests errors seconds cpu_seconds".
run() {
  local pid=$1 port=$2 mode=$3 c before after out
  if [ "$mode" = keepalive ]; then c=$KEEPALIVE_CONNECTIONS; else c=$HANDSHAKE_CONNECTIONS; fi
  before=$(cpu_ticks "$pid")
  out=$("$LOAD" "127.0.0.1:$port" bench.test "$W/ca.crt" "$mode" "$c" "$DURATION" "$TLS")
  after=$(cpu_ticks "$pid")
  echo "$out $(python3 -c "print(($after - $before) / $HZ)")"
}

# The client makes what it says: nginx logs `.` for a full handshake and `r` for a resumed one.
"$LOAD" "127.0.0.1:$NGX_CHECK" bench.test "$W/ca.crt" full 2 1 "$TLS" >/dev/null
full=$(sort -u "$W/ngx/access.log" | tr '\n' ' ')
: >"$W/ngx/access.log"
"$LOAD" "127.0.0.1:$NGX_CHECK" bench.test "$W/ca.crt" resumed 2 1 "$TLS" >/dev/null
resumed=$(grep -c '^r ' "$W/ngx/access.log" || true)
VERSION=$(awk '{print $2}' "$W/ngx/access.log" | sort -u | tr '\n' ' ')
if [[ $full != ". TLSv$TLS " || $resumed -lt 10 ]]; then
  echo "the client did not make the handshakes it says: full mode logged '$full'; resumed mode $resumed resumed" >&2
  exit 1
fi

: >"$W/runs"
for round in $(seq 1 "$ROUNDS"); do
  for mode in full resumed keepalive; do
    for proxy in tidegate nginx; do
      if [ $proxy = tidegate ]; then pid=$TG_PID p=$TG_HTTPS; else pid=$NGX_WORKER p=$NGX; fi
      echo "round $round: $proxy $mode" >&2
      echo "$proxy $mode $(run "$pid" "$p" "$mode")" >>"$W/runs"
    done
  done
done

python3 - "$W/runs" "$KEY" "$ROUNDS" "$DURATION" "$VERSION" <<'PY'
import statistics, sys
runs, key, rounds, duration, version = sys.argv[1:6]
by = {}
for line in open(runs):
    proxy, mode, ok, errors, secs, cpu = line.split()
    by.setdefault((proxy, mode), []).append((int(ok) / float(secs), float(cpu) / max(int(ok), 1) * 1e6, int(errors)))
def med(proxy, mode, i):
    return statistics.median(r[i] for r in by[(proxy, mode)])
print(f"{version.strip()}, {key} certificate; median of {rounds} rounds of {duration} s; each proxy on one core")
print()
print("| load | tidegate | nginx | tidegate / nginx |")
print("|---|---|---|---|")
for mode, what, unit in [
    ("full", "full handshakes/s", "handshake"),
    ("resumed", "resumed handshakes/s", "handshake"),
    ("keepalive", "keep-alive HTTPS requests/s", "request"),
]:
    t, n = med("tidegate", mode, 0), med("nginx", mode, 0)
    print(f"| {what} | {t:,.0f} | {n:,.0f} | {t / n:.2f} |")
    t, n = med("tidegate", mode, 1), med("nginx", mode, 1)
    print(f"| CPU µs per {unit} ({mode}) | {t:,.1f} | {n:,.1f} | {t / n if n else float('nan'):.2f} |")
bad = {f"{p} {m}": sum(r[2] for r in rs) for (p, m), rs in by.items() if any(r[2] for r in rs)}
if bad:
    print()
    print("failed requests: " + ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())))
PY
