#!/usr/bin/env bash
# Runs every test: unit, golden, integration (real sockets, the real binary), and the Kubernetes
# tests against a real kube-apiserver and a real Redis. Tests that need an outside service are marked #[ignore]
# and run here with --include-ignored, after this script has installed and started what they need.
set -euo pipefail
cd "$(dirname "$0")/.."

# `--soak`: afterwards, the long soak (tests/soak.rs) in a release build: 10,000,000 requests and
# 1,000 configuration changes (TIDEGATE_SOAK_REQUESTS / TIDEGATE_SOAK_CHANGES override them).
soak=0
args=()
for a in "$@"; do
  if [ "$a" = "--soak" ]; then soak=1; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"

# --- What the tests need from Debian (a fresh machine may lack some of it) ---
need=()
for tool in curl openssl python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
# Global rate limits: redis-server; the clock-skew test runs gateways under libfaketime.
command -v redis-server >/dev/null || need+=(redis-server)
# TCP Routes (tests/l4.rs): redis-cli through the gateway (Debian: redis-tools).
command -v redis-cli >/dev/null || need+=(redis-tools)
# TLS to backends (tests/backend_tls.rs): nginx is the TLS, mTLS and HTTP/2-over-TLS upstream.
command -v nginx >/dev/null || need+=(nginx)
# PROXY protocol (tests/proxy_protocol.rs): HAProxy in front with send-proxy/send-proxy-v2.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v faketime >/dev/null || need+=(faketime)
# Backends that follow DNS (tests/dns.rs): dnsmasq, the program only (no system service).
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# UDP Routes (tests/udp.rs): dig (Debian: dnsutils) through the gateway to dnsmasq.
command -v dig >/dev/null || need+=(dnsutils)
# Basic authentication (tests/access): htpasswd files made by Apache's htpasswd.
command -v htpasswd >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# --- HTTP/2 abuse tests (tests/abuse.rs) and HPACK checks (tests/routing.rs): Python's h2 package (python-hyper) ---
if ! python3 -c 'import h2, hpack' 2>/dev/null; then
  echo "installing the h2 package (pip, else Debian's python3-h2)" >&2
  python3 -m pip install --quiet h2 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-h2
  }
  python3 -c 'import h2, hpack'
fi

# --- JWT attack corpus (tests/access/jwt.rs): PyJWT and cryptography ---
if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
  echo "installing PyJWT and cryptography (pip, else Debian's python3-jwt)" >&2
  python3 -m pip install --quiet pyjwt cryptography || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-jwt python3-cryptography
  }
  python3 -c 'import jwt, cryptography'
fi

# --- Kubernetes mode: a real kube-apiserver + etcd on loopback (e2e/kube/) ---
KUBE_DIR=${TIDEGATE_KUBE_DIR:-${HOME}/.cache/tidegate/kube-apiserver-1.20}
bash e2e/kube/build.sh "$KUBE_DIR"   # a no-op when already built (cached outside the repo)
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tidegate-kube.XXXXXX")
# Free loopback ports, so that several runs (or a developer's own cluster) do not collide.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); PEER_PORT=$(free_port); API_PORT=$(free_port)
export ETCD_PORT PEER_PORT API_PORT
cleanup() {
  bash e2e/kube/stop.sh "$RUN_DIR"
  if [ -f "$RUN_DIR/redis.pid" ]; then kill "$(cat "$RUN_DIR/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
KUBECONFIG_PATH=$(bash e2e/kube/start.sh "$KUBE_DIR/bin" "$RUN_DIR" | tail -n 1)
export TIDEGATE_TEST_KUBECONFIG="$KUBECONFIG_PATH"
# The resilience test starts its own apiserver from these binaries (it stops and restarts it).
export TIDEGATE_TEST_KUBE_BIN="$KUBE_DIR/bin"
echo "kube-apiserver on 127.0.0.1:$API_PORT (kubeconfig $KUBECONFIG_PATH)" >&2

# --- Global rate limits: a real redis-server on a free loopback port (tests that kill and restart
# Redis start their own from PATH) ---
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$RUN_DIR" --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
  sleep 0.1
done
export TIDEGATE_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
TIDEGATE_TEST_FAKETIME_LIB=$(find /usr/lib /usr/lib64 -name libfaketimeMT.so.1 2>/dev/null | head -n 1)
export TIDEGATE_TEST_FAKETIME_LIB
echo "redis-server on 127.0.0.1:$REDIS_PORT; libfaketime: ${TIDEGATE_TEST_FAKETIME_LIB:-missing}" >&2

# --- Delivery: a real helm + kubectl (e2e/tools/helm.sh), and the container image built with
# podman from the Dockerfile (e2e/tools/podman.sh: podman from Debian, and local stand-ins for the
# base images where no image registry can be reached, as on our machines) ---
HELM_DIR=$(bash e2e/tools/helm.sh)
export TIDEGATE_TEST_HELM="$HELM_DIR/helm" TIDEGATE_TEST_KUBECTL="$HELM_DIR/kubectl"
CONTAINERS_CONF=$(bash e2e/tools/podman.sh)
export CONTAINERS_CONF
export TIDEGATE_TEST_IMAGE=localhost/tidegate:test
echo "building $TIDEGATE_TEST_IMAGE (podman; the first build compiles every dependency)" >&2
started=$(date +%s)
podman build --pull=never --quiet -t "$TIDEGATE_TEST_IMAGE" . >&2
echo "image built in $(( $(date +%s) - started ))s" >&2

cargo test --locked -- --include-ignored "$@"

if [ "$soak" = 1 ]; then
  echo "long soak (release build)" >&2
  TIDEGATE_SOAK_REQUESTS=${TIDEGATE_SOAK_REQUESTS:-10000000} TIDEGATE_SOAK_CHANGES=${TIDEGATE_SOAK_CHANGES:-1000} \
    cargo test --locked --release --test soak -- --nocapture
fi
