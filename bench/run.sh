#!/usr/bin/env bash
# Side-by-side HTTP proxy benchmark: tidegate against nginx, HAProxy and Caddy on this machine.
# See bench/README.md. Settings come from the environment:
#   ROUNDS (3)  DURATION seconds per load (10)  WARMUP seconds before each load (1)
#   QUICK=1     smoke run: 1 round of 3 s loads, results under bench/work/results
#   PROXIES ("none tidegate nginx haproxy caddy")  LOADS ("h1-64 h1-256 h2c")
#   H2_CLIENTS (64)  H2_STREAMS (4)  PROXY_CPU (0)  LOAD_CPU (1)
#   NGINX_UPSTREAM_KEEPALIVE (1024: Tidegate's own default idle pool)  RESULTS_DIR (bench/results)  SKIP_BUILD=1
#   TIDEGATE (target/release/tidegate: another build to measure, with SKIP_BUILD=1)
#   SYSCALLS=1  also count the proxy's syscalls per request (perf stat; needs perf and the right
#               to trace the proxy: root or kernel.perf_event_paranoid <= 1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
WORK=$BENCH/work
REPORT=(python3 "$BENCH/report.py")
export PATH=$PATH:/usr/sbin:/sbin

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-3}
    RESULTS_DIR=${RESULTS_DIR:-$WORK/results}
else
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-10}
    RESULTS_DIR=${RESULTS_DIR:-$BENCH/results}
fi
WARMUP=${WARMUP:-1}
PROXIES=${PROXIES:-none tidegate nginx haproxy caddy}
LOADS=${LOADS:-h1-64 h1-256 h2c}
H2_CLIENTS=${H2_CLIENTS:-64}
H2_STREAMS=${H2_STREAMS:-4}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Idle upstream connections nginx and Caddy keep: Tidegate keeps up to 1,024 per endpoint and
# HAProxy has no limit. With fewer than a load's concurrency (64 was the default until
# 2026-12-04) nginx closes and reopens upstream connections under h1-256, which costs it ~40%
# more CPU per request and flattered every proxy compared with it.
NGINX_UPSTREAM_KEEPALIVE=${NGINX_UPSTREAM_KEEPALIVE:-1024}

die() {
    echo "bench: $*" >&2
    exit 1
}
log() { echo "bench: $*" >&2; }

((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
if [[ ${SYSCALLS:-0} == 1 ]]; then
    command -v perf >/dev/null || die "SYSCALLS=1 needs perf (Debian: linux-perf)"
fi
# The under-load RSS sample is taken one second before the end of each load.
((DURATION >= 2)) || die "DURATION must be at least 2 seconds"
(($(nproc) >= 2)) || die "needs at least 2 CPUs (proxy on one, load generator and upstream on another)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# 256 client connections need ~512 descriptors in a proxy; leave the rest as headroom.
((NOFILE >= 2048)) || die "open file limit $NOFILE is too low (need 2048)"

# --- peers ---------------------------------------------------------------------------------------

install_missing() {
    local need=()
    command -v nginx >/dev/null || need+=(nginx)
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v caddy >/dev/null || need+=(caddy)
    command -v wrk >/dev/null || need+=(wrk)
    command -v h2load >/dev/null || need+=(nghttp2-client)
    ((${#need[@]})) || return 0
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    log "installing ${need[*]} from Debian"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${need[@]}"
}

install_missing

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
fi
TIDEGATE=${TIDEGATE:-$ROOT/target/release/tidegate}
[[ -x $TIDEGATE ]] || die "$TIDEGATE is missing"
# Access logs are off for every proxy; builds before `--access-log` had none to turn off.
TIDEGATE_ACCESS_LOG_OFF=()
if "$TIDEGATE" run --help | grep -q -- --access-log; then
    TIDEGATE_ACCESS_LOG_OFF=(--access-log off)
fi

# From here on this shell, its helpers, the load generators and the upstream share LOAD_CPU;
# each proxy under test gets PROXY_CPU to itself.
taskset -cp "$LOAD_CPU" $$ >/dev/null

rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS_DIR"
RUNS=$WORK/runs.jsonl
UNSUPPORTED=$WORK/unsupported.tsv
: >"$RUNS"
: >"$UNSUPPORTED"

# --- process bookkeeping -------------------------------------------------------------------------

# Children not yet reaped: their PIDs cannot be reused, so killing them on exit is safe.
STARTED=()
LOAD_PID=

# start NAME CPU CMD...: runs CMD pinned to CPU, output in $WORK/NAME.log; sets LAST_PID.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${STARTED[@]}"; do
        if [[ $p != "$pid" ]]; then keep+=("$p"); fi
    done
    STARTED=("${keep[@]}")
}

cleanup() {
    local pid
    if [[ -n $LOAD_PID ]]; then stop "$LOAD_PID"; fi
    for pid in "${STARTED[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then stop "$pid"; fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_ready NAME PID URL BODY: until URL answers BODY; on failure shows the log, returns 1.
wait_ready() {
    local name=$1 pid=$2 url=$3 body=$4 i got
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$WORK/$name.log" >&2
            log "$name exited during startup"
            return 1
        fi
        got=$(curl -fsS --max-time 1 "$url" 2>/dev/null) || got=
        if [[ $got == "$body" ]]; then return 0; fi
        sleep 0.1
    done
    tail -n 20 "$WORK/$name.log" >&2
    log "$name did not answer $url with the upstream body"
    return 1
}

# h2c_ok URL BODY: whether URL answers BODY over HTTP/2 with prior knowledge.
h2c_ok() {
    local got
    got=$(curl -fsS --max-time 2 --http2-prior-knowledge "$1" 2>/dev/null) || return 1
    [[ $got == "$2" ]]
}

# --- configurations ------------------------------------------------------------------------------

read -r UP_PORT UP_H2_PORT TG_PORT TG_ADMIN_PORT NGX_PORT NGX_H2_PORT HAP_PORT HAP_H2_PORT \
    CADDY_PORT < <("${REPORT[@]}" ports 9)

# ~100 bytes, so the upstream is never the bottleneck.
BODY="tidegate bench upstream: a fixed 100-byte body (newline included) so every proxy moves equal bytes."
BODY_BYTES=$((${#BODY} + 1))

NGINX_VERSION=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
# nginx >= 1.25.1 spells h2c as `http2 on;`; older versions as `listen ... http2`.
nginx_h2c_listen() {
    if [[ $(printf '%s\n' 1.25.1 "$NGINX_VERSION" | sort -V | head -n1) == 1.25.1 ]]; then
        echo "listen 127.0.0.1:$1; http2 on;"
    else
        echo "listen 127.0.0.1:$1 http2;"
    fi
}

# nginx_main DIR: the settings shared by both nginx instances (one worker, no logs).
nginx_main() {
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}

write_upstream_config() {
    local d=$WORK/upstream
    mkdir -p "$d/tmp"
    {
        nginx_main "$d"
        cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
    server {
        $(nginx_h2c_listen "$UP_H2_PORT")
        location / { default_type text/plain; return 200 "$BODY\n"; }
    }
}
EOF
    } >"$d/nginx.conf"
}

write_nginx_config() {
    local d=$WORK/nginx
    mkdir -p "$d/tmp"
    local location="location / { proxy_pass http://upstream; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
    {
        nginx_main "$d"
        cat <<EOF
    upstream upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive $NGINX_UPSTREAM_KEEPALIVE;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        $location
    }
    server {
        $(nginx_h2c_listen "$NGX_H2_PORT")
        $location
    }
}
EOF
    } >"$d/nginx.conf"
}

write_tidegate_config() {
    local d=$WORK/tidegate/config
    mkdir -p "$d"
    cat >"$d/backend.yaml" <<EOF
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata:
  name: upstream
spec:
  endpoints: ["127.0.0.1:$UP_PORT"]
EOF
    cat >"$d/route.yaml" <<EOF
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata:
  name: bench
spec:
  rules:
    - backendRefs:
        - { name: upstream }
EOF
}

write_haproxy_config() {
    mkdir -p "$WORK/haproxy"
    # No `log` lines anywhere: HAProxy logs nothing.
    cat >"$WORK/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:$HAP_PORT
    bind 127.0.0.1:$HAP_H2_PORT proto h2
    default_backend upstream
backend upstream
    server upstream 127.0.0.1:$UP_PORT
EOF
}

write_caddy_config() {
    mkdir -p "$WORK/caddy/data" "$WORK/caddy/config"
    # No access logs (none configured) and the default logger at ERROR; no admin endpoint.
    cat >"$WORK/caddy/caddy.json" <<EOF
{
  "admin": { "disabled": true },
  "logging": { "logs": { "default": { "level": "ERROR" } } },
  "storage": { "module": "file_system", "root": "$WORK/caddy/data" },
  "apps": {
    "http": {
      "servers": {
        "bench": {
          "listen": ["127.0.0.1:$CADDY_PORT"],
          "protocols": ["h1", "h2c"],
          "automatic_https": { "disable": true },
          "routes": [{
            "handle": [{
              "handler": "reverse_proxy",
              "upstreams": [{ "dial": "127.0.0.1:$UP_PORT" }],
              "transport": {
                "protocol": "http",
                "keep_alive": { "enabled": true, "max_idle_conns_per_host": $NGINX_UPSTREAM_KEEPALIVE }
              }
            }]
          }]
        }
      }
    }
  }
}
EOF
}

write_upstream_config
write_nginx_config
write_tidegate_config
write_haproxy_config
write_caddy_config

# --- proxies -------------------------------------------------------------------------------------

# start_proxy NAME: starts it on PROXY_CPU and waits until it proxies; sets PROXY_PID (empty for
# none), H1_URL and H2_URL (empty when the proxy cannot serve h2c). Returns 1 if it never proxied.
start_proxy() {
    local name=$1 h1_port h2_port
    PROXY_PID=
    case $name in
    none)
        h1_port=$UP_PORT
        h2_port=$UP_H2_PORT
        ;;
    tidegate)
        start tidegate "$PROXY_CPU" "$TIDEGATE" run --config "$WORK/tidegate/config" \
            --http-addr "127.0.0.1:$TG_PORT" --https-addr off --admin-addr "127.0.0.1:$TG_ADMIN_PORT" \
            --worker-threads 1 --log-format text --log-level warn --drain-timeout 1s \
            "${TIDEGATE_ACCESS_LOG_OFF[@]}"
        h1_port=$TG_PORT
        h2_port=$TG_PORT
        ;;
    nginx)
        start nginx "$PROXY_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
            -e "$WORK/nginx/error.log"
        h1_port=$NGX_PORT
        h2_port=$NGX_H2_PORT
        ;;
    haproxy)
        start haproxy "$PROXY_CPU" haproxy -db -f "$WORK/haproxy/haproxy.cfg"
        h1_port=$HAP_PORT
        h2_port=$HAP_H2_PORT
        ;;
    caddy)
        start caddy "$PROXY_CPU" env GOMAXPROCS=1 HOME="$WORK/caddy" \
            XDG_DATA_HOME="$WORK/caddy/data" XDG_CONFIG_HOME="$WORK/caddy/config" \
            caddy run --config "$WORK/caddy/caddy.json"
        h1_port=$CADDY_PORT
        h2_port=$CADDY_PORT
        ;;
    *) die "unknown proxy $name" ;;
    esac
    H1_URL=http://127.0.0.1:$h1_port/
    H2_URL=http://127.0.0.1:$h2_port/
    if [[ $name != none ]]; then
        PROXY_PID=$LAST_PID
        if ! wait_ready "$name" "$PROXY_PID" "$H1_URL" "$BODY"; then
            stop "$PROXY_PID"
            return 1
        fi
    fi
    if ! h2c_ok "$H2_URL" "$BODY"; then
        log "$name does not answer h2c (prior knowledge) on $H2_URL: reported as n/a"
        H2_URL=
    fi
}

# --- loads ---------------------------------------------------------------------------------------

# load_cmd LOAD URL SECONDS H2LOAD_LOG: sets LOAD_CMD, the load generator pinned to LOAD_CPU.
load_cmd() {
    local load=$1 url=$2 secs=$3 h2log=$4
    case $load in
    h1-*) LOAD_CMD=(taskset -c "$LOAD_CPU" wrk -t1 "-c${load#h1-}" "-d${secs}s" --latency "$url") ;;
    h2c)
        LOAD_CMD=(taskset -c "$LOAD_CPU" h2load -t1 "-c$H2_CLIENTS" "-m$H2_STREAMS" -D "$secs"
            "--log-file=$h2log" "$url")
        ;;
    *) die "unknown load $load" ;;
    esac
}

UP_PID=

# measure ROUND PROXY LOAD RSS_IDLE: warm up, then one measured run; appends to $RUNS.
measure() {
    local round=$1 proxy=$2 load=$3 rss_idle=$4 url tool out h2log rc=0
    local cpu_before="0 0" cpu_after="0 0" rss_load=0 up_before up_after cores_before cores_after
    local perf_pid='' perf_out syscalls=()
    if [[ $load == h2c ]]; then
        url=$H2_URL
        tool=h2load
    else
        url=$H1_URL
        tool=wrk
    fi
    if [[ -z $url ]]; then
        printf '%s\t%s\t%s\n' "$proxy" "$load" "no h2c" >>"$UNSUPPORTED"
        return 0
    fi
    out=$WORK/run-$round-$proxy-$load.txt
    h2log=$WORK/run-$round-$proxy-$load.h2log
    if ((WARMUP > 0)); then
        load_cmd "$load" "$url" "$WARMUP" /dev/null
        "${LOAD_CMD[@]}" >/dev/null 2>&1 || true
    fi
    load_cmd "$load" "$url" "$DURATION" "$h2log"
    if [[ -n $PROXY_PID ]]; then cpu_before=$("${REPORT[@]}" cpu "$PROXY_PID"); fi
    up_before=$("${REPORT[@]}" cpu "$UP_PID")
    cores_before=$("${REPORT[@]}" cores "$PROXY_CPU" "$LOAD_CPU")
    perf_out=$WORK/run-$round-$proxy-$load.perf
    if [[ ${SYSCALLS:-0} == 1 && -n $PROXY_PID ]]; then
        perf stat -x, -e raw_syscalls:sys_enter -o "$perf_out" \
            -p "$("${REPORT[@]}" tree "$PROXY_PID")" &
        perf_pid=$!
    fi
    "${LOAD_CMD[@]}" >"$out" 2>&1 &
    LOAD_PID=$!
    sleep $((DURATION - 1))
    if [[ -n $PROXY_PID ]]; then rss_load=$("${REPORT[@]}" rss "$PROXY_PID"); fi
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        syscalls=(--syscalls "$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$perf_out")")
        [[ ${syscalls[1]} =~ ^[0-9]+$ ]] || die "perf stat counted no syscalls (see $perf_out)"
    fi
    cores_after=$("${REPORT[@]}" cores "$PROXY_CPU" "$LOAD_CPU")
    if [[ -n $PROXY_PID ]]; then cpu_after=$("${REPORT[@]}" cpu "$PROXY_PID"); fi
    up_after=$("${REPORT[@]}" cpu "$UP_PID")
    if ((rc != 0)); then log "$tool exited with $rc for $proxy $load (see $out)"; fi
    "${REPORT[@]}" record --runs "$RUNS" --round "$round" --proxy "$proxy" --load "$load" \
        --tool "$tool" --output "$out" --h2load-log "$h2log" \
        --cpu-before "$cpu_before" --cpu-after "$cpu_after" \
        --up-cpu-before "$up_before" --up-cpu-after "$up_after" \
        --cores-before "$cores_before" --cores-after "$cores_after" \
        --rss-idle "$rss_idle" --rss-load "$rss_load" "${syscalls[@]}"
    rm -f "$h2log"
}

# --- run -----------------------------------------------------------------------------------------

STAMP=$(date -u +%Y-%m-%d-%H%M%S)
tidegate_version="$("$TIDEGATE" version | awk '{print $2}') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ", dirty"))"
if [[ ${SKIP_BUILD:-0} == 1 ]]; then tidegate_version+=" (prebuilt binary, may not match the tree)"; fi
"${REPORT[@]}" meta --out "$WORK/meta.json" --started "$(date -u +'%Y-%m-%d %H:%M:%S UTC')" \
    --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" --rounds "$ROUNDS" --duration "$DURATION" \
    --warmup "$WARMUP" --proxies "$PROXIES" --loads "$LOADS" \
    --h2-clients "$H2_CLIENTS" --h2-streams "$H2_STREAMS" --body-bytes "$BODY_BYTES" \
    --nginx-keepalive "$NGINX_UPSTREAM_KEEPALIVE" \
    --version "tidegate=$tidegate_version" \
    --version "nginx=$NGINX_VERSION" \
    --version "haproxy=$(haproxy -v | awk 'NR==1 {print $3}')" \
    --version "caddy=$(caddy version | awk '{print $1}')" \
    --version "wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}' || true)" \
    --version "h2load=$(h2load --version | awk '{print $2}')"

start upstream "$LOAD_CPU" nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" \
    -e "$WORK/upstream/error.log"
UP_PID=$LAST_PID
wait_ready upstream "$UP_PID" "http://127.0.0.1:$UP_PORT/" "$BODY" || die "the upstream did not start"
h2c_ok "http://127.0.0.1:$UP_H2_PORT/" "$BODY" || die "the upstream does not answer h2c"

log "$ROUNDS round(s) × {$PROXIES} × {$LOADS}, $DURATION s each"
for ((round = 1; round <= ROUNDS; round++)); do
    for proxy in $PROXIES; do
        if ! start_proxy "$proxy"; then
            for load in $LOADS; do
                printf '%s\t%s\t%s\n' "$proxy" "$load" "failed to start" >>"$UNSUPPORTED"
            done
            continue
        fi
        sleep 1
        rss_idle=0
        if [[ -n $PROXY_PID ]]; then rss_idle=$("${REPORT[@]}" rss "$PROXY_PID"); fi
        for load in $LOADS; do
            measure "$round" "$proxy" "$load" "$rss_idle"
        done
        if [[ -n $PROXY_PID ]]; then stop "$PROXY_PID"; fi
    done
done

stop "$UP_PID"
"${REPORT[@]}" report --meta "$WORK/meta.json" --runs "$RUNS" --unsupported "$UNSUPPORTED" \
    --json "$RESULTS_DIR/$STAMP.json" --md "$RESULTS_DIR/$STAMP.md"
log "wrote $RESULTS_DIR/$STAMP.json and $RESULTS_DIR/$STAMP.md"
