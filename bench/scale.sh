#!/usr/bin/env bash
# Scale figures for tidegate (issue "Performance", deliverable 3), printed as a markdown table and
# written to bench/results/scale-<date>.md:
#   1. RSS with N idle keep-alive client connections (each served one request first), next to
#      nginx configured the same way;
#   2. time from a configuration change (a file renamed into the config directory) to the first
#      request answered by the new table, p50/p99 over CHANGES changes, under full load;
#   3. a configuration change every 100 ms for DURATION seconds under full load: failed requests
#      (wrk's socket errors and non-2xx answers) must be zero.
# Settings: IDLE_CONNS (10000) CHANGES (100) DURATION (20) PROXY_CPU (0) LOAD_CPU (1) SKIP_BUILD=1
# TIDEGATE (the binary). CHANGES=0 skips part 2 and DURATION=0 part 3 (both: the idle figures only).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IDLE_CONNS=${IDLE_CONNS:-10000}
CHANGES=${CHANGES:-100}
DURATION=${DURATION:-20}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
export PATH=$PATH:/usr/sbin:/sbin

die() { echo "scale: $*" >&2; exit 1; }
log() { echo "scale: $*" >&2; }

for tool in nginx wrk python3 curl taskset; do
    command -v "$tool" >/dev/null || die "needs $tool (apt-get install -y nginx wrk python3 curl util-linux)"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= IDLE_CONNS + 1000)) || die "open file limit $(ulimit -n) is too low for $IDLE_CONNS connections"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building release"
    (cd "$ROOT" && cargo build --release --locked --quiet)
fi
TIDEGATE=${TIDEGATE:-$ROOT/target/release/tidegate}

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir scale
WORK=$W

UP=$(port); TG=$(port); TG_ADMIN=$(port); NGX=$(port)
BODY="tidegate scale upstream: a fixed 100-byte body (newline included) so every proxy moves equal"

mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/config"
cat > "$WORK/up/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/up/nginx.pid; error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "$BODY\n"; } } }
EOF
cat > "$WORK/ngx/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/ngx/nginx.pid; error_log $WORK/ngx/error.log;
worker_rlimit_nofile 65536;
events { worker_connections $((IDLE_CONNS + 1000)); }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
cat > "$WORK/config/bench.yaml" <<EOF
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: { name: up }
spec: { endpoints: ["127.0.0.1:$UP"] }
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: bench }
spec:
  rules:
    - backendRefs: [{ name: up }]
EOF

taskset -c "$LOAD_CPU" nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log" &
PIDS+=($!)
taskset -c "$PROXY_CPU" "$TIDEGATE" run --config "$WORK/config" --http-addr "127.0.0.1:$TG" --https-addr off \
    --admin-addr "127.0.0.1:$TG_ADMIN" --worker-threads 1 --access-log off --log-format text \
    --log-level warn --idle-timeout 300s >"$WORK/tidegate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$TG/" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$TG/" || die "tidegate does not proxy (see $WORK/tidegate.log)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; } # KiB -> MiB, one decimal

# --- 1. idle connections -------------------------------------------------------------------------
idle_rss() { # PID PORT -> "before after"
    local pid=$1 port=$2 before after
    before=$(rss_kib "$pid")
    python3 - "$port" "$IDLE_CONNS" "$WORK/hold.$port" <<'PY' &
import os, socket, sys, time
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed early")
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:40]
    conns.append(s)
open(flag, "w").close()
time.sleep(3600)
PY
    local holder=$!
    for _ in $(seq 600); do [[ -e $WORK/hold.$port ]] && break; sleep 0.1; done
    [[ -e $WORK/hold.$port ]] || die "could not open $IDLE_CONNS connections to port $port"
    sleep 1
    after=$(rss_kib "$pid")
    kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
    echo "$before $after"
}
log "1/3: $IDLE_CONNS idle connections"
read -r TG_BEFORE TG_AFTER < <(idle_rss "$TG_PID" "$TG")
taskset -c "$PROXY_CPU" nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" -e "$WORK/ngx/error.log" &
PIDS+=($!)
sleep 0.5
NGX_WORKER=$(pgrep -P "$(cat "$WORK/ngx/nginx.pid")" | head -1)
read -r NGX_BEFORE NGX_AFTER < <(idle_rss "$NGX_WORKER" "$NGX")

# --- 2. change -> serving latency under load -----------------------------------------------------
P50=- P99=- PMAX=-
if ((CHANGES > 0)); then
log "2/3: $CHANGES configuration changes under load"
taskset -c "$LOAD_CPU" wrk -t1 -c64 -d600s -H "Host: bench" "http://127.0.0.1:$TG/" >/dev/null 2>&1 &
WRK=$!
PIDS+=("$WRK")
sleep 1
LATENCY=$(taskset -c "$LOAD_CPU" python3 - "$TG" "$WORK/config" "$CHANGES" <<'PY'
import http.client, os, statistics, sys, time
port, cfg, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def route(version):
    return f"""apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: {{ name: probe }}
spec:
  hostnames: [probe.test]
  rules:
    - filters: [{{ directResponse: {{ status: 200, body: "v{version}" }} }}]
"""
def body():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/", headers={"Host": "probe.test"})
    r = c.getresponse()
    b = r.read().decode()
    c.close()
    return b
samples = []
for i in range(1, n + 1):
    tmp = os.path.join(cfg, ".probe.tmp")
    with open(tmp, "w") as f:
        f.write(route(i))
    t0 = time.monotonic()
    os.rename(tmp, os.path.join(cfg, "probe.yaml"))
    while body() != f"v{i}":
        if time.monotonic() - t0 > 10:
            sys.exit(f"change {i} not served after 10 s")
        time.sleep(0.0005)
    samples.append((time.monotonic() - t0) * 1000)
    time.sleep(0.2)
samples.sort()
p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print(f"{p(0.5):.1f} {p(0.99):.1f} {samples[-1]:.1f}")
PY
)
kill "$WRK" 2>/dev/null; wait "$WRK" 2>/dev/null || true
read -r P50 P99 PMAX <<<"$LATENCY"
fi

# --- 3. a change every 100 ms under full load ----------------------------------------------------
REQS=- NON2XX=0 SOCKERR=0 RELOADS=-
if ((DURATION > 0)); then
log "3/3: a change every 100 ms for ${DURATION}s under full load"
reloads() { curl -s "http://127.0.0.1:$TG_ADMIN/metrics" | awk '/^tidegate_config_reloads_total\{result="success"\}/ {print $2}'; }
R0=$(reloads)
taskset -c "$LOAD_CPU" python3 - "$WORK/config" "$DURATION" "$UP" <<'PY' &
import os, sys, time
cfg, duration, up = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + duration + 1
i = 0
while time.monotonic() < end:
    i += 1
    # The benched route alternates between two shapes: a header filter on and off.
    filt = f"      filters: [{{ requestHeaderModifier: {{ set: [{{ name: x-gen, value: \"{i}\" }}] }} }}]\n" if i % 2 else ""
    tmp = os.path.join(cfg, ".bench.tmp")
    with open(tmp, "w") as f:
        f.write(f"""apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: {{ name: up }}
spec: {{ endpoints: ["127.0.0.1:{up}"] }}
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: {{ name: bench }}
spec:
  rules:
    - backendRefs: [{{ name: up }}]
{filt}""")
    os.rename(tmp, os.path.join(cfg, "bench.yaml"))
    time.sleep(0.1)
PY
CHURN=$!
PIDS+=("$CHURN")
sleep 0.5
WRK_OUT=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${DURATION}s" -H "Host: bench" "http://127.0.0.1:$TG/")
wait "$CHURN" 2>/dev/null || true
R1=$(reloads)
REQS=$(awk '/requests in/ {print $1}' <<<"$WRK_OUT")
NON2XX=$(awk '/Non-2xx/ {print $NF}' <<<"$WRK_OUT")
SOCKERR=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' <<<"$WRK_OUT")
RELOADS=$(python3 -c "print(int(float('${R1:-0}') - float('${R0:-0}')))")
fi

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/scale-$(date -u +%Y-%m-%d-%H%M%S).md
{
    echo "# tidegate scale figures ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo). Proxy on CPU $PROXY_CPU, load and upstream on CPU $LOAD_CPU; tidegate with one worker thread, access log off."
    echo
    echo "| figure | tidegate | nginx (worker process) |"
    echo "|---|---|---|"
    echo "| RSS idle, no connections | $(mib "$TG_BEFORE") MiB | $(mib "$NGX_BEFORE") MiB |"
    echo "| RSS with $IDLE_CONNS idle keep-alive connections | $(mib "$TG_AFTER") MiB | $(mib "$NGX_AFTER") MiB |"
    echo "| per idle connection | $(( (TG_AFTER - TG_BEFORE) * 1024 / IDLE_CONNS )) bytes | $(( (NGX_AFTER - NGX_BEFORE) * 1024 / IDLE_CONNS )) bytes |"
    echo "| config change → serving, under load (p50 / p99 / max of $CHANGES) | $P50 / $P99 / $PMAX ms | |"
    echo "| change every 100 ms for ${DURATION}s under load: requests / failed / reloads | $REQS / $(( ${NON2XX:-0} + ${SOCKERR:-0} )) / $RELOADS | |"
} | tee "$OUT"
log "written to $OUT"
if (( ${NON2XX:-0} + ${SOCKERR:-0} > 0 )); then
    echo "$WRK_OUT" >&2
    die "requests failed during configuration churn"
fi
