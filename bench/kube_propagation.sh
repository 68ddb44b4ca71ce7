#!/usr/bin/env bash
# Kubernetes-mode propagation (issue #16): against a real etcd + kube-apiserver on loopback,
# with N Routes present, the time from creating a new Route to the first 200 through tidegate,
# p50/p99/max over CHANGES changes; also start -> serving all N Routes and the RSS then.
#   bash bench/kube_propagation.sh [BINARY]
# Settings: N (2000) CHANGES (50) PAUSE (0.2 s between changes, longer than the debounce, so each
# change follows a quiet period) SETTLE (1: changes start once tidegate has written the status of
# every Route it found at start; 0: at once, while it writes them) KUBE_BIN (~/.cache/tidegate/kube-apiserver-1.20/bin, from
# e2e/kube/build.sh) API_PORT ETCD_PORT PEER_PORT (16743 24090 24100) SKIP_BUILD=1
# Needs python3, curl, openssl. Prints a markdown table; writes it to
# bench/results/kube-propagation-<date>.md, and tidegate's log (LOG_LEVEL, info) beside it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-2000}
CHANGES=${CHANGES:-50}
PAUSE=${PAUSE:-0.2}
SETTLE=${SETTLE:-1}
KUBE_BIN=${KUBE_BIN:-$HOME/.cache/tidegate/kube-apiserver-1.20/bin}
export API_PORT=${API_PORT:-16743} ETCD_PORT=${ETCD_PORT:-24090} PEER_PORT=${PEER_PORT:-24100}
export TOKEN=${TOKEN:-bench-admin-token}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}

die() { echo "kube_propagation: $*" >&2; exit 1; }
log() { echo "kube_propagation: $*" >&2; }

for tool in python3 curl openssl; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
[[ -x $KUBE_BIN/kube-apiserver && -x $KUBE_BIN/etcd ]] ||
    die "no etcd/kube-apiserver in $KUBE_BIN (bash e2e/kube/build.sh builds them)"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
tidegate_binary "$@"
bench_workdir kube-propagation
WORK=$W
KR=$WORK/kube
stop_apiserver() { bash "$ROOT/e2e/kube/stop.sh" "$KR" >/dev/null 2>&1 || true; bench_cleanup; }
trap stop_apiserver EXIT

log "starting etcd + kube-apiserver (port $API_PORT)"
KUBECONFIG_PATH=$(bash "$ROOT/e2e/kube/start.sh" "$KUBE_BIN" "$KR" | tail -1)
API="https://127.0.0.1:$API_PORT"
CA=$KR/certs/apiserver.crt
api() { # METHOD PATH [BODY-FILE]
    local args=(-sf --cacert "$CA" -H "Authorization: Bearer $TOKEN" -X "$1")
    if [[ $# -ge 3 ]]; then
        args+=(-H "Content-Type: application/yaml" --data-binary "@$3")
    fi
    curl "${args[@]}" "$API$2" >/dev/null
}

log "installing the CRDs"
"$TIDEGATE" crds --without-cel > "$WORK/crds.yaml"
python3 - "$WORK/crds.yaml" "$WORK" <<'PY'
import sys
docs = [d for d in open(sys.argv[1]).read().split("\n---\n") if d.strip()]
for i, d in enumerate(docs):
    open(f"{sys.argv[2]}/crd-{i}.yaml", "w").write(d)
PY
for f in "$WORK"/crd-*.yaml; do
    api POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions "$f"
done
for _ in $(seq 1 100); do
    api GET /apis/tidegate.dev/v1alpha1/namespaces/default/routes 2>/dev/null && break
    sleep 0.2
done
printf 'apiVersion: v1\nkind: Namespace\nmetadata: { name: bench }\n' > "$WORK/ns.yaml"
api POST /api/v1/namespaces "$WORK/ns.yaml"

UP=$(port); TG=$(port); TG_ADMIN=$(port)
mkdir -p "$WORK/www" && echo ok > "$WORK/www/index.html"
python3 -m http.server "$UP" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$UP"

log "creating a Backend and $N Routes"
cat > "$WORK/backend.yaml" <<EOF
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: { name: up, namespace: bench }
spec: { endpoints: ["127.0.0.1:$UP"] }
EOF
api POST /apis/tidegate.dev/v1alpha1/namespaces/bench/backends "$WORK/backend.yaml"
# Creates run in parallel (16 at a time) through the apiserver's REST API.
python3 - "$API" "$CA" "$TOKEN" "$N" <<'PY'
import json, ssl, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
api, ca, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
def create(i):
    body = {"apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": f"r{i:05}", "namespace": "bench"},
            "spec": {"hostnames": [f"r{i}.bench.test"],
                     "rules": [{"matches": [{"path": {"value": "/"}}], "backendRefs": [{"name": "up"}]}]}}
    req = urllib.request.Request(f"{api}/apis/tidegate.dev/v1alpha1/namespaces/bench/routes",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, context=ctx).read()
with ThreadPoolExecutor(16) as pool:
    list(pool.map(create, range(n)))
PY

log "starting tidegate in Kubernetes mode"
START_NS=$(date +%s%N)
KUBECONFIG=$KUBECONFIG_PATH POD_NAME=bench-0 POD_NAMESPACE=bench \
    "$TIDEGATE" run --namespace bench --http-addr "127.0.0.1:$TG" --https-addr off \
    --admin-addr "127.0.0.1:$TG_ADMIN" --leader-elect=false --access-log off --log-format text \
    --log-level "${LOG_LEVEL:-info}" >"$WORK/tidegate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
LAST=$((N - 1))
for _ in $(seq 1 3000); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: r$LAST.bench.test" "http://127.0.0.1:$TG/" || true)
    [[ $code == 200 ]] && break
    kill -0 "$TG_PID" 2>/dev/null || die "tidegate exited: $(tail -5 "$WORK/tidegate.log")"
    sleep 0.01
done
[[ $code == 200 ]] || die "Route r$LAST not served after 30 s: $(tail -5 "$WORK/tidegate.log")"
SERVING_MS=$((($(date +%s%N) - START_NS) / 1000000))
RSS_MIB=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$TG_PID/status")
log "serving $N Routes ${SERVING_MS} ms after start, RSS ${RSS_MIB} MiB"

# A fresh Route has no status: tidegate writes N of them after its start, one apiserver write
# each, and every write comes back to it as a watch event. SETTLE=1 (the default) waits for the
# last one (the writer goes in identity order) and measures changes on a settled cluster;
# SETTLE=0 measures them while that backlog is being written.
SETTLED="while the start-up statuses are written"
if [[ $SETTLE == 1 ]]; then
    LAST_NAME=$(printf 'r%05d' "$LAST")
    for _ in $(seq 1 12000); do
        curl -sf --cacert "$CA" -H "Authorization: Bearer $TOKEN" \
            "$API/apis/tidegate.dev/v1alpha1/namespaces/bench/routes/$LAST_NAME" |
            grep -q '"observedGeneration"' && break
        sleep 0.05
    done
    STATUS_MS=$((($(date +%s%N) - START_NS) / 1000000))
    log "status written on all $N Routes ${STATUS_MS} ms after start"
    SETTLED="after every start-up status is written"
fi

log "$CHANGES changes: create a Route, time to its first 200"
LATENCY=$(python3 - "$API" "$CA" "$TOKEN" "$TG" "$CHANGES" "$PAUSE" <<'PY'
import http.client, json, ssl, sys, time, urllib.request
api, ca, token, tg, changes, pause = sys.argv[1:7]
changes, pause = int(changes), float(pause)
ctx = ssl.create_default_context(cafile=ca)
proxy = http.client.HTTPConnection("127.0.0.1", int(tg))
def status(host):
    global proxy
    try:
        proxy.request("GET", "/", headers={"Host": host})
        r = proxy.getresponse()
        r.read()
        return r.status
    except (http.client.HTTPException, OSError):
        proxy = http.client.HTTPConnection("127.0.0.1", int(tg))
        return 0
took = []
for i in range(changes):
    host = f"probe{i}.bench.test"
    body = {"apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": f"probe{i}", "namespace": "bench"},
            "spec": {"hostnames": [host],
                     "rules": [{"matches": [{"path": {"value": "/"}}], "backendRefs": [{"name": "up"}]}]}}
    req = urllib.request.Request(f"{api}/apis/tidegate.dev/v1alpha1/namespaces/bench/routes",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    # From the request to the apiserver (what `kubectl apply` sends) to the first 200.
    t0 = time.perf_counter()
    urllib.request.urlopen(req, context=ctx).read()
    while status(host) != 200:
        if time.perf_counter() - t0 > 10:
            sys.exit(f"change {i} not served after 10 s")
        # Not a busy loop: on a small machine that would take a core from tidegate and the
        # apiserver. Each sample may be late by up to this much.
        time.sleep(0.001)
    took.append((time.perf_counter() - t0) * 1000)
    time.sleep(pause)
took.sort()
pick = lambda q: took[min(len(took) - 1, int(q * len(took)))]
print(f"{pick(0.5):.1f} {pick(0.99):.1f} {took[-1]:.1f}")
PY
)
read -r P50 P99 MAX <<<"$LATENCY"

COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/kube-propagation-$(date +%Y%m%d-%H%M%S).md
{
    echo "Kubernetes mode, $N Routes (binary $TIDEGATE; the tree it ran from at $COMMIT, which need not be what built it; $(basename "$(dirname "$KUBE_BIN")"))"
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| Route created -> first 200, $SETTLED (p50 / p99 / max of $CHANGES) | $P50 / $P99 / $MAX ms |"
    echo "| start -> serving all $N Routes | $SERVING_MS ms |"
    if [[ $SETTLE == 1 ]]; then
        echo "| start -> status written on all $N Routes | $STATUS_MS ms |"
    fi
    echo "| RSS serving $N Routes | $RSS_MIB MiB |"
} | tee "$OUT"
# Each compile's "configuration published" line has its elapsed_ms and what triggered it.
cp "$WORK/tidegate.log" "${OUT%.md}.log"
