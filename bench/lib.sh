# shellcheck shell=bash
# Helpers the bench scripts share; `source bench/lib.sh` from the repository root.
#
#   port                  a free loopback TCP port (printed)
#   wait_port PORT        until something accepts on 127.0.0.1:PORT (15 s), else exit 1
#   cpu_ticks PID         the process's CPU so far (utime + stime, in ticks of $HZ per second)
#   bench_workdir NAME    W: a fresh directory; on exit every PID in PIDS is killed and W removed
#   tidegate_binary [BIN] TIDEGATE: BIN if given, else $ROOT/target/release/tidegate, built first
#                         unless SKIP_BUILD=1
#   one_route FILE PORT [HOST]
#                         writes a Backend `up` (127.0.0.1:PORT) and a Route `r` to it (for HOST
#                         only, if given) to FILE
#   tls_route FILE HOST CRT KEY
#                         writes a Route `tls` for HOST to the Backend `up`, its HTTPS served with
#                         the PEM certificate CRT and key KEY (a Secret `tls-cert`), to FILE
#   nginx_upstream PORT BODY
#                         starts an nginx on 127.0.0.1:PORT answering 200 with BODY (config in W)

# shellcheck disable=SC2034 # read by the scripts that source this file
HZ=$(getconf CLK_TCK)
PIDS=()

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing on :$1" >&2
  exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

bench_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${W:-}" ]; then rm -rf "$W"; fi
}

bench_workdir() {
  W=$(mktemp -d "${TMPDIR:-/tmp}/tidegate-$1.XXXXXX")
  trap bench_cleanup EXIT
}

tidegate_binary() {
  if [[ $# -ge 1 ]]; then
    TIDEGATE=$1
    return
  fi
  if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "building release" >&2
    (cd "$ROOT" && cargo build --release --locked --quiet)
  fi
  TIDEGATE=$ROOT/target/release/tidegate
}

one_route() {
  local hosts=""
  if [[ -n ${3:-} ]]; then hosts="
  hostnames: [$3]"; fi
  cat >"$1" <<YAML
apiVersion: tidegate.dev/v1alpha1
kind: Backend
metadata: { name: up }
spec: { endpoints: ["127.0.0.1:$2"] }
---
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: r }
spec:$hosts
  rules:
    - backendRefs: [{ name: up }]
YAML
}

tls_route() { # FILE HOST CRT KEY
  cat >"$1" <<YAML
apiVersion: tidegate.dev/v1alpha1
kind: Route
metadata: { name: tls }
spec:
  hostnames: [$2]
  tls: { secretName: tls-cert }
  rules:
    - backendRefs: [{ name: up }]
---
apiVersion: v1
kind: Secret
metadata: { name: tls-cert }
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(sed 's/^/    /' "$3")
  tls.key: |
$(sed 's/^/    /' "$4")
YAML
}

nginx_upstream() { # PORT BODY
  cat > "$W/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$1; location / { return 200 "$2"; } } }
NGINX
  nginx -c "$W/nginx.conf" &
  PIDS+=($!)
}
