#!/usr/bin/env bash
# File-mode propagation (issue #16): with N Routes in the config directory, the time from a new
# Route file renamed into it (as editors and config tools write files) to the first 200 through
# tidegate for that Route's host, p50/p99/max over CHANGES changes, no other load.
#   bash bench/file_propagation.sh [BINARY]
# Settings: N (2000) CHANGES (100) PAUSE (0.2 s between changes, longer than the debounce, so each
# change follows a quiet period) PROXY_CPU (0) LOAD_CPU (1) SKIP_BUILD=1 LOG_LEVEL (warn)
# KEEP_LOG (a file to copy tidegate's log to)
# Prints a markdown table; writes it to bench/results/file-propagation-<date>.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-2000}
CHANGES=${CHANGES:-100}
PAUSE=${PAUSE:-0.2}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}

die() { echo "file_propagation: $*" >&2; exit 1; }
log() { echo "file_propagation: $*" >&2; }

for tool in python3 curl taskset; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
tidegate_binary "$@"
bench_workdir file-propagation
[[ -n ${KEEP_LOG:-} ]] && trap 'cp "$W/tidegate.log" "$KEEP_LOG"; bench_cleanup' EXIT
HTTP=$(port); ADMIN=$(port)
mkdir -p "$W/config"
# N Routes on their own hosts, answered by the gateway itself (no upstream to time).
python3 - "$W/config/routes.yaml" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(f"""---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: {{ name: r{i} }}
spec:
  hostnames: [r{i}.test]
  rules:
    - matches: [{{ path: {{ type: PathPrefix, value: /api }} }}]
      filters: [{{ directResponse: {{ status: 200, body: "r{i}" }} }}]
""")
PY

taskset -c "$PROXY_CPU" "$TIDEGATE" run --config "$W/config" --http-addr "127.0.0.1:$HTTP" \
    --https-addr off --admin-addr "127.0.0.1:$ADMIN" --log-level "${LOG_LEVEL:-warn}" >"$W/tidegate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
for _ in $(seq 1 600); do
    curl -sf -o /dev/null -H "Host: r$((N - 1)).test" "127.0.0.1:$HTTP/api" && break
    sleep 0.05
done
curl -sf -o /dev/null -H "Host: r$((N - 1)).test" "127.0.0.1:$HTTP/api" || die "not serving; see $W/tidegate.log"
RSS=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$TG_PID/status")

log "$CHANGES changes with $N Routes present"
LATENCY=$(taskset -c "$LOAD_CPU" python3 - "$HTTP" "$W/config" "$CHANGES" "$PAUSE" <<'PY'
import http.client, os, sys, time
port, cfg, n, pause = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
def status(host):
    global conn
    try:
        conn.request("GET", "/api", headers={"Host": host})
        r = conn.getresponse()
        r.read()
        return r.status
    except (http.client.HTTPException, OSError):
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        return 0
samples = []
for i in range(n):
    host = f"new{i}.test"
    tmp = os.path.join(cfg, ".new.tmp")
    with open(tmp, "w") as f:
        f.write(f"""apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: {{ name: new{i} }}
spec:
  hostnames: [{host}]
  rules:
    - filters: [{{ directResponse: {{ status: 200, body: "new{i}" }} }}]
""")
    t0 = time.monotonic()
    os.rename(tmp, os.path.join(cfg, f"new{i}.yaml"))
    while status(host) != 200:
        if time.monotonic() - t0 > 10:
            sys.exit(f"change {i} not served after 10 s")
    samples.append((time.monotonic() - t0) * 1000)
    time.sleep(pause)
samples.sort()
p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print(f"{p(0.5):.1f} {p(0.99):.1f} {samples[-1]:.1f}")
PY
)
read -r P50 P99 PMAX <<<"$LATENCY"
LOAD=$(cut -d' ' -f1 /proc/loadavg)
TABLE=$(
    echo "| figure | value |"
    echo "|---|---|"
    echo "| file mode, $N Routes: Route file renamed in → first 200 (p50 / p99 / max of $CHANGES) | $P50 / $P99 / $PMAX ms |"
    echo "| RSS with $N Routes | $RSS MiB |"
    echo "| load average at the end | $LOAD |"
)
echo "$TABLE"
mkdir -p "$RESULTS_DIR"
{
    echo "# File-mode propagation, $(date -u +%Y-%m-%d\ %H:%M) UTC"
    echo
    echo "Binary: $TIDEGATE (run from the tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), which need not be what built it)"
    echo
    echo "$TABLE"
} >"$RESULTS_DIR/file-propagation-$(date -u +%Y-%m-%d-%H%M%S).md"
