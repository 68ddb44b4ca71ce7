#!/usr/bin/env bash
# L4 figures (issue #15), side by side in one run, printed as markdown tables:
#
# 1. TCP throughput: CONNECTIONS connections writing 64 KiB blocks through the proxy to a sink,
#    for tidegate (a TCP Route), HAProxy (mode tcp) and nginx (stream): GB/s, and the proxy's
#    CPU (utime+stime) per GB moved.
# 2. UDP datagrams: CLIENTS client sockets, each keeping WINDOW datagrams of SIZE bytes in flight
#    through the proxy to a UDP echo (a session per client), for tidegate (a UDP Route) and nginx
#    (stream, udp): datagrams/s through the proxy (both ways) and its CPU per datagram.
# Each figure is the median of ROUNDS rounds; the proxies take turns in each round. The ratio
# lines compare tidegate with the others (CPU ratio below 1: tidegate spends less).
#
# Each proxy runs alone on PROXY_CPU with one worker (tidegate --worker-threads 1, HAProxy
# nbthread 1, nginx worker_processes 1); the backends and the load (bench/l4_load.rs, built with
# rustc -O) share LOAD_CPU. CPU per GB and per datagram do not depend on whether the load was the
# bottleneck; rates do, and on what else runs: say how busy the machine was when quoting them.
#
# usage: bench/l4.sh [BINARY]     (default target/release/tidegate; build it first)
#   ROUNDS=3 DURATION=10 CONNECTIONS=4 CLIENTS=16 WINDOW=8 SIZE=512 PROXY_CPU=0 LOAD_CPU=1
# Needs haproxy, nginx with the stream module, python3 and rustc
# (apt-get install -y haproxy nginx libnginx-mod-stream python3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tidegate}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-4}
CLIENTS=${CLIENTS:-16}
WINDOW=${WINDOW:-8}
SIZE=${SIZE:-512}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
export PATH=$PATH:/usr/sbin:/sbin
for tool in haproxy nginx python3 rustc taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y haproxy nginx libnginx-mod-stream python3)" >&2; exit 1; }
done
STREAM_MODULE=${STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
if ! nginx -V 2>&1 | grep -q -- '--with-stream\( \|$\)'; then
  [ -f "$STREAM_MODULE" ] || { echo "nginx has no stream module (apt-get install -y libnginx-mod-stream)" >&2; exit 1; }
  LOAD_STREAM="load_module $STREAM_MODULE;"
else
  LOAD_STREAM=
fi
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release" >&2; exit 1; }
CPUS=$(nproc)
((CPUS >= 2)) || { echo "needs at least 2 CPUs" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir l4
taskset -cp "$LOAD_CPU" $$ >/dev/null
rustc -O --edition 2021 -o "$W/l4_load" bench/l4_load.rs
LOAD=$W/l4_load

SINK=$(port); ECHO=$(port)
TG_TCP=$(port); TG_UDP=$(port); TG_HTTP=$(port); TG_ADMIN=$(port)
HAP_TCP=$(port); NGX_TCP=$(port); NGX_UDP=$(port)

# --- backends on LOAD_CPU ---
taskset -c "$LOAD_CPU" "$LOAD" tcp-sink "127.0.0.1:$SINK" & PIDS+=($!)
taskset -c "$LOAD_CPU" "$LOAD" udp-echo "127.0.0.1:$ECHO" & PIDS+=($!)

# --- tidegate: a TCP Route and a UDP Route ---
mkdir -p "$W/tg" "$W/ngx"
cat >"$W/tg/all.yaml" <<YAML
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: { name: sink }
spec: { protocol: TCP, endpoints: ["127.0.0.1:$SINK"] }
---
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: { name: echo }
spec: { protocol: UDP, endpoints: ["127.0.0.1:$ECHO"] }
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: tcp }
spec: { protocol: TCP, port: $TG_TCP, backendRefs: [{ name: sink }] }
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: udp }
spec: { protocol: UDP, port: $TG_UDP, backendRefs: [{ name: echo }], udp: { idleTimeout: 60s } }
YAML
PORTS="127.0.0.1:$TG_TCP/tcp,127.0.0.1:$TG_UDP/udp"
"$BIN" validate --config "$W/tg" --l4-ports "$PORTS" >/dev/null 2>&1 \
  || { "$BIN" validate --config "$W/tg" --l4-ports "$PORTS"; exit 1; }
taskset -c "$PROXY_CPU" "$BIN" run --config "$W/tg" --http-addr "127.0.0.1:$TG_HTTP" \
  --admin-addr "127.0.0.1:$TG_ADMIN" --l4-ports "$PORTS" --worker-threads 1 \
  --access-log off --log-level warn 2>"$W/tg/err.log" & TG_PID=$!; PIDS+=("$TG_PID")

# --- HAProxy, mode tcp ---
cat >"$W/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
listen tcp
  bind 127.0.0.1:$HAP_TCP
  server sink 127.0.0.1:$SINK
HAP
taskset -c "$PROXY_CPU" haproxy -db -f "$W/haproxy.cfg" 2>"$W/haproxy.log" & HAP_PID=$!; PIDS+=("$HAP_PID")

# --- nginx stream: TCP and UDP ---
cat >"$W/ngx/nginx.conf" <<NGINX
$LOAD_STREAM
worker_processes 1; daemon off; pid $W/ngx/nginx.pid; error_log $W/ngx/error.log;
events { worker_connections 4096; }
stream {
  server { listen 127.0.0.1:$NGX_TCP; proxy_pass 127.0.0.1:$SINK; }
  server { listen 127.0.0.1:$NGX_UDP udp; proxy_pass 127.0.0.1:$ECHO; proxy_timeout 60s; }
}
NGINX
taskset -c "$PROXY_CPU" nginx -c "$W/ngx/nginx.conf" & NGX_PID=$!; PIDS+=("$NGX_PID")

wait_port "$SINK"; wait_port "$TG_TCP"; wait_port "$HAP_TCP"; wait_port "$NGX_TCP"
# nginx's work is done by its one worker process (the master only starts it).
NGX_WORKER=$(pgrep -P "$NGX_PID")
# The UDP paths answer (the UDP Route's port opens when the configuration is loaded).
for p in "$TG_UDP" "$NGX_UDP"; do
  ok=
  for _ in $(seq 1 50); do
    read -r replies _ _ < <("$LOAD" udp "127.0.0.1:$p" 1 1 "$SIZE" 1)
    if [ "$replies" -gt 0 ]; then ok=1; break; fi
  done
  [ -n "$ok" ] || { echo "no UDP echo through 127.0.0.1:$p" >&2; exit 1; }
done

# measure PID ARGS...: one load; prints the load's output and the proxy's CPU seconds.
measure() {
  local pid=$1 before after out
  shift
  before=$(cpu_ticks "$pid")
  out=$("$LOAD" "$@")
  after=$(cpu_ticks "$pid")
  echo "$out $(python3 -c "print(($after - $before) / $HZ)")"
}

: >"$W/results"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for proxy in tidegate haproxy nginx; do
    case $proxy in
      tidegate) pid=$TG_PID; p=$TG_TCP ;;
      haproxy) pid=$HAP_PID; p=$HAP_TCP ;;
      nginx) pid=$NGX_WORKER; p=$NGX_TCP ;;
    esac
    echo "tcp $proxy $(measure "$pid" tcp "127.0.0.1:$p" "$DURATION" "$CONNECTIONS")" >>"$W/results"
  done
  for proxy in tidegate nginx; do
    case $proxy in
      tidegate) pid=$TG_PID; p=$TG_UDP ;;
      nginx) pid=$NGX_WORKER; p=$NGX_UDP ;;
    esac
    echo "udp $proxy $(measure "$pid" udp "127.0.0.1:$p" "$DURATION" "$CLIENTS" "$SIZE" "$WINDOW")" >>"$W/results"
  done
done

echo
echo "L4 on $CPUS CPUs, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg); rounds $ROUNDS x ${DURATION}s"
echo "TCP: $CONNECTIONS connections, 64 KiB writes. UDP: $CLIENTS clients x $WINDOW in flight, $SIZE-byte datagrams."
python3 - "$W/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(xs):
    return statistics.median(xs)
tcp, udp = {}, {}
for r in rows:
    if r[0] == "tcp":
        _, proxy, nbytes, secs, cpu = r
        nbytes, secs, cpu = int(nbytes), float(secs), float(cpu)
        tcp.setdefault(proxy, []).append((nbytes / secs / 1e9, cpu / (nbytes / 1e9)))
    else:
        _, proxy, replies, lost, secs, cpu = r
        replies, lost, secs, cpu = int(replies), int(lost), float(secs), float(cpu)
        datagrams = 2 * replies
        udp.setdefault(proxy, []).append(
            (datagrams / secs, cpu * 1e6 / max(datagrams, 1), lost))
print()
print("| TCP | GB/s | CPU s per GB |")
print("|---|---:|---:|")
t = {p: (med([x[0] for x in v]), med([x[1] for x in v])) for p, v in tcp.items()}
for p, (rate, cpu) in t.items():
    print(f"| {p} | {rate:.2f} | {cpu:.3f} |")
for other in ("haproxy", "nginx"):
    if other in t:
        print(f"\ntidegate / {other} (TCP): throughput {t['tidegate'][0] / t[other][0]:.2f}x, "
              f"CPU per GB {t['tidegate'][1] / t[other][1]:.2f}x")
print()
print("| UDP | datagrams/s | CPU µs per datagram | lost |")
print("|---|---:|---:|---:|")
u = {p: (med([x[0] for x in v]), med([x[1] for x in v]), sum(x[2] for x in v)) for p, v in udp.items()}
for p, (rate, cpu, lost) in u.items():
    print(f"| {p} | {rate:,.0f} | {cpu:.2f} | {lost} |")
if "nginx" in u:
    print(f"\ntidegate / nginx (UDP): datagrams/s {u['tidegate'][0] / u['nginx'][0]:.2f}x, "
          f"CPU per datagram {u['tidegate'][1] / u['nginx'][1]:.2f}x")
PY
