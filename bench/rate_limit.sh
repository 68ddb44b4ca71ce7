#!/usr/bin/env bash
# Rate-limit figures on this machine (issue #12), printed as a markdown table:
#
# 1. Cost: added latency (p50/p99, wrk) and CPU per request (the gateway's utime+stime over the
#    requests it served; Redis's too) of a rule with a Local limit and of one with a Global
#    (Redis) limit, against the same rule without a limit. The limits are set so high that
#    every request is allowed: what is measured is the decision, not refusals.
# 2. Accuracy: requests allowed under load for one key against what the limit allows
#    (burst + rate × time): a Local limit in one gateway, and a Global limit shared by two
#    gateways through one Redis (the limit the issue says must not multiply with replicas).
#
# usage: bench/rate_limit.sh [BINARY]      (default target/release/tidegate; build it first)
#   DURATION=10 CONNECTIONS=16 RATE=1000 BURST=100 REDIS_TIMEOUT=1s bench/rate_limit.sh
# REDIS_TIMEOUT is generous by default: on a busy machine a 50 ms call can time out, and
# failureMode Open would then let requests through uncounted (the error count is printed).
# Needs redis-server, nginx (the upstream), wrk, python3 and curl (apt-get install -y
# redis-server nginx wrk curl). Wall-clock figures depend on what else the machine runs: say
# how busy it was when quoting them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tidegate}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
RATE=${RATE:-1000}
BURST=${BURST:-100}
REDIS_TIMEOUT=${REDIS_TIMEOUT:-1s}
for tool in redis-server nginx wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y redis-server nginx wrk curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release" >&2; exit 1; }

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir rl

UP=$(port); REDIS=$(port)
nginx_upstream "$UP" ok
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$W" \
  --logfile "$W/redis.log" & REDIS_PID=$!; PIDS+=("$REDIS_PID")
wait_port "$UP"; wait_port "$REDIS"

# Rules by path: /none (no limit), /local and /global (one per-client limit each, too high to
# refuse anything), /exact-local and /exact-global (one shared bucket of RATE/s, BURST).
mkdir -p "$W/config"
policy() { # NAME RULE LIMIT
  printf -- '---\napiVersion: tidegate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: %s }\nspec:\n  targetRef: { kind: Route, name: r, rule: %s }\n  limits:\n    - { %s }\n' "$1" "$2" "$3"
}
{
  printf 'apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: { name: up }\nspec: { endpoints: ["127.0.0.1:%s"] }\n' "$UP"
  printf -- '---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: { name: r }\nspec:\n  rules:\n'
  for r in none local global exact-local exact-global; do
    printf '    - name: %s\n      matches: [{ path: { type: Exact, value: /%s } }]\n      backendRefs: [{ name: up }]\n' "$r" "$r"
  done
  policy local local "name: l, key: { clientIP: {} }, rate: 1000000000, per: 1h"
  policy global global "name: g, key: { clientIP: {} }, rate: 1000000000, per: 1h, scope: Global"
  policy exact-local exact-local "name: el, key: { none: {} }, rate: $RATE, per: 1s, burst: $BURST"
  policy exact-global exact-global "name: eg, key: { none: {} }, rate: $RATE, per: 1s, burst: $BURST, scope: Global"
} > "$W/config/all.yaml"
"$BIN" validate --config "$W/config" --redis-url "redis://127.0.0.1:$REDIS" >/dev/null

start_gateway() { # N -> sets GW_PID_N, HTTP_N, ADMIN_N
  local http admin
  http=$(port); admin=$(port)
  "$BIN" run --config "$W/config" --http-addr "127.0.0.1:$http" --admin-addr "127.0.0.1:$admin" --https-addr 127.0.0.1:0 \
    --redis-url "redis://127.0.0.1:$REDIS" --redis-timeout "$REDIS_TIMEOUT" --access-log off --log-level warn \
    2>"$W/gateway$1.err" &
  PIDS+=($!)
  eval "GW_PID_$1=$! HTTP_$1=$http ADMIN_$1=$admin"
  for _ in $(seq 1 300); do curl -sf -o /dev/null "127.0.0.1:$admin/readyz" && return 0; sleep 0.05; done
  echo "gateway $1 not ready:" >&2; cat "$W/gateway$1.err" >&2; exit 1
}
start_gateway 1
start_gateway 2

# --- 1. Cost ---
latency() { # PATH -> "p50_ms p99_ms requests gateway_cpu_us_per_req redis_cpu_us_per_req"
  local g0 r0 g1 r1
  wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$HTTP_1$1" >/dev/null # warm up
  g0=$(cpu_ticks "$GW_PID_1"); r0=$(cpu_ticks "$REDIS_PID")
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$HTTP_1$1" > "$W/wrk.out"
  g1=$(cpu_ticks "$GW_PID_1"); r1=$(cpu_ticks "$REDIS_PID")
  python3 - "$W/wrk.out" "$((g1 - g0))" "$((r1 - r0))" "$HZ" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
pct = {m.group(1): ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
n = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
assert not bad, f"{bad.group(1)} requests were not 200: the cost run must not be limited"
hz = int(sys.argv[4])
us = lambda ticks: int(ticks) / hz * 1e6 / n
print(f"{pct['50']:.3f} {pct['99']:.3f} {n} {us(sys.argv[2]):.1f} {us(sys.argv[3]):.1f}")
PY
}
read -r n50 n99 nreq ncpu _ <<<"$(latency /none)"
read -r l50 l99 lreq lcpu _ <<<"$(latency /local)"
read -r g50 g99 greq gcpu gredis <<<"$(latency /global)"

# --- 2. Accuracy ---
allowed() { # ADMIN LIMIT -> allowed decisions
  curl -sf "127.0.0.1:$1/metrics" | awk -v l="limit=\"$2\"" '/^tidegate_rate_limit_decisions_total/ && index($0, l) && /result="allowed"/ {s += $2} END {print s + 0}'
}
accuracy() { # PATH LIMIT GATEWAYS... -> "allowed ceiling seconds offered"
  local path=$1 limit=$2; shift 2
  local before=0 after=0 t0 t1 pids=() offered=0
  for g in "$@"; do before=$((before + $(allowed "$(eval echo "\$ADMIN_$g")" "$limit"))); done
  t0=$(date +%s.%N)
  for g in "$@"; do
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$(eval echo "\$HTTP_$g")$path" >"$W/acc.$g" &
    pids+=($!)
  done
  wait "${pids[@]}"
  t1=$(date +%s.%N)
  for g in "$@"; do
    after=$((after + $(allowed "$(eval echo "\$ADMIN_$g")" "$limit")))
    offered=$((offered + $(awk '/requests in/ {print $1}' "$W/acc.$g")))
  done
  python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print($after-$before, $BURST+$RATE*t, round(t,2), $offered)" "$t0" "$t1"
}
sleep 1 # the shared buckets are full again before each run (they had a quiet second)
read -r la lc lt lo <<<"$(accuracy /exact-local el 1)"
sleep 1
read -r ga gc gt go <<<"$(accuracy /exact-global eg 1 2)"
errors=$(curl -sf "127.0.0.1:$ADMIN_1/metrics" "127.0.0.1:$ADMIN_2/metrics" | awk '/^tidegate_redis_errors_total/ {s += $2} END {print s + 0}')

python3 - <<PY
rows = [
    ("no limit", $n50, $n99, $nreq, $ncpu, None),
    ("Local limit (clientIP)", $l50, $l99, $lreq, $lcpu, None),
    ("Global limit (clientIP, Redis)", $g50, $g99, $greq, $gcpu, $gredis),
]
print(f"cost: wrk -t1 -c$CONNECTIONS, ${DURATION}s per row, one gateway (all allowed)\n")
print("| rule | p50 ms | p99 ms | requests | gateway CPU µs/req | Redis CPU µs/req |")
print("|---|---|---|---|---|---|")
for name, p50, p99, n, cpu, redis in rows:
    print(f"| {name} | {p50:.3f} | {p99:.3f} | {n} | {cpu:.1f} | {'' if redis is None else f'{redis:.1f}'} |")
print(f"\naccuracy: one shared bucket of $RATE/s, burst $BURST; wrk -t1 -c$CONNECTIONS per gateway\n")
print("| limit | gateways | seconds | requests sent | allowed | burst + rate × t | allowed / that |")
print("|---|---|---|---|---|---|---|")
for name, gws, t, o, a, c in [("Local", 1, $lt, $lo, $la, $lc), ("Global (Redis)", 2, $gt, $go, $ga, $gc)]:
    print(f"| {name} | {gws} | {t} | {o} | {a} | {c:.0f} | {a / c:.4f} |")
print(f"\nRedis errors during the runs (--redis-timeout $REDIS_TIMEOUT): $errors")
PY
