#!/usr/bin/env bash
# End-to-end test of Tidegate on a kind cluster, for CI that has Docker (GitHub Actions: see
# .github/workflows/e2e.yaml). It builds the image from the Dockerfile, creates a kind cluster,
# loads the image, installs the Helm chart, applies examples/kubernetes/ (an echo service, a
# canary of it, a Route and an Ingress), and checks through the node port mapping:
#   - the Route's and Backend's status conditions, and the Ingress's published address;
#   - the canary split (20%) and the header override (x-canary: always / never);
#   - the Ingress is served;
#   - a rolling restart of the backend Deployment, then of Tidegate itself, under a load loop,
#     with zero failed requests.
# Needs: docker, kind, kubectl, helm, curl. Settings (environment):
#   CLUSTER (tidegate-e2e), IMAGE (tidegate:e2e), HOST_PORT (8080), NODE_IMAGE (kind's default),
#   KEEP_CLUSTER=1 to leave the cluster running afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-tidegate-e2e}
IMAGE=${IMAGE:-tidegate:e2e}
HOST_PORT=${HOST_PORT:-8080}
NODE_IMAGE=${NODE_IMAGE:-}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
BASE="http://127.0.0.1:$HOST_PORT"
WORK=$(mktemp -d)

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done

finish() {
  local rc=$?
  if [ "$rc" -ne 0 ] && kubectl cluster-info >/dev/null 2>&1; then
    step "diagnostics (exit $rc)"
    kubectl get pods,svc,endpointslices -A -o wide || true
    kubectl -n demo get routes.tidegate.dev,backends.tidegate.dev,ingresses -o yaml || true
    kubectl -n tidegate logs -l app.kubernetes.io/name=tidegate --tail=200 --prefix || true
  fi
  if [ "$KEEP_CLUSTER" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap finish EXIT

step "build the image $IMAGE"
docker build -t "$IMAGE" .

step "create the kind cluster $CLUSTER"
sed "s/hostPort: 8080/hostPort: $HOST_PORT/" e2e/kind/cluster.yaml > "$WORK/cluster.yaml"
create=(kind create cluster --name "$CLUSTER" --config "$WORK/cluster.yaml" --wait 180s)
if [ -n "$NODE_IMAGE" ]; then create+=(--image "$NODE_IMAGE"); fi
"${create[@]}"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "helm install"
helm install tidegate charts/tidegate --namespace tidegate --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set service.type=NodePort --set service.nodePorts.http=30080 \
  --set 'controller.publishAddresses={127.0.0.1}' --set controller.httpPublicPort="$HOST_PORT" \
  --wait --timeout 5m
kubectl -n tidegate get pods -o wide

step "apply examples/kubernetes/"
kubectl apply -f examples/kubernetes/
kubectl -n demo rollout status deploy/echo --timeout 180s
kubectl -n demo rollout status deploy/echo-canary --timeout 180s

step "status conditions"
for condition in Accepted ResolvedRefs Programmed; do
  kubectl -n demo wait --for="condition=$condition" route.tidegate.dev/web --timeout 60s
done
kubectl -n demo wait --for=condition=Accepted backend.tidegate.dev/echo --timeout 60s
# Eventually-true checks: poll a command until it prints the expected value.
expect() {
  local want=$1 what=$2; shift 2
  local got=""
  for _ in $(seq 1 60); do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && return 0
    sleep 1
  done
  fail "$what: expected '$want', got '$got'"
}
expect 2 "ready endpoints of Backend echo" \
  kubectl -n demo get backend.tidegate.dev/echo -o 'jsonpath={.status.endpoints.ready}'
expect 127.0.0.1 "Ingress shop's published address" \
  kubectl -n demo get ingress shop -o 'jsonpath={.status.loadBalancer.ingress[0].ip}'

# One request: prints the answering pod's name, or fails.
hit() {
  local host=$1; shift
  curl -sS --fail --max-time 5 -H "Host: $host" "$@" "$BASE/hostname"
}
# How many of N requests the canary answered.
canary_share() {
  local n=$1; shift
  local count=0 pod
  for _ in $(seq 1 "$n"); do
    pod=$(hit "$@") || fail "a request to $1 failed"
    case $pod in echo-canary-*) count=$((count + 1)) ;; esac
  done
  echo "$count"
}

step "traffic: the Route, the canary split and the header override"
expect 200 "web.e2e.test answers" \
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Host: web.e2e.test' "$BASE/hostname"
share=$(canary_share 100 web.e2e.test)
echo "canary answered $share of 100 requests (weight 20)"
# Each replica splits exactly 1 in 5 over its own cycle; two replicas share the requests.
if [ "$share" -lt 15 ] || [ "$share" -gt 25 ]; then fail "canary share $share/100, expected about 20"; fi
always=$(canary_share 20 web.e2e.test -H 'x-canary: always')
[ "$always" = 20 ] || fail "x-canary: always reached the canary $always times of 20"
never=$(canary_share 20 web.e2e.test -H 'x-canary: never')
[ "$never" = 0 ] || fail "x-canary: never reached the canary $never times of 20"

step "traffic: the Ingress"
pod=$(hit ingress.e2e.test) || fail "the Ingress is not served"
case $pod in echo-*) echo "ingress.e2e.test answered by $pod" ;; *) fail "the Ingress answered '$pod'" ;; esac

# Requests in a loop until $WORK/stop exists (at most 20000): one status code a line.
load() {
  local out=$1
  for _ in $(seq 1 20000); do
    [ -f "$WORK/stop" ] && break
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 -H 'Host: web.e2e.test' "$BASE/hostname" || echo 000
  done > "$out"
}
# Runs "$@" (a rollout) under load and fails on any request that did not get 200.
under_load() {
  local name=$1; shift
  rm -f "$WORK/stop"
  load "$WORK/$name.codes" &
  local loader=$!
  sleep 3
  "$@"
  sleep 15   # old pods finish their shutdown delay and drain while the load goes on
  touch "$WORK/stop"
  wait "$loader"
  local total failed
  total=$(wc -l < "$WORK/$name.codes")
  failed=$(grep -cv '^200$' "$WORK/$name.codes" || true)
  echo "$name: $total requests, $failed failed"
  [ "$total" -ge 50 ] || fail "$name: only $total requests were sent"
  [ "$failed" -eq 0 ] || { sort "$WORK/$name.codes" | uniq -c; fail "$name: $failed requests failed"; }
}
restart() {
  kubectl -n "$1" rollout restart "deploy/$2"
  kubectl -n "$1" rollout status "deploy/$2" --timeout 180s
}

step "a rolling restart of the backend under load"
under_load backend restart demo echo

step "a rolling restart of Tidegate under load"
under_load tidegate restart tidegate tidegate

step "passed"
