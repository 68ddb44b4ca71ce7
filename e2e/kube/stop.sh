#!/usr/bin/env bash
# Stop what start.sh started in RUN_DIR: the apiserver, then etcd (or only the apiserver with
# `stop.sh RUN_DIR apiserver`, to test a controller that loses its apiserver).
set -uo pipefail
R=${1:?run dir}; WHAT=${2:-all}
stop() {
  local f="$R/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}
stop apiserver
[ "$WHAT" = apiserver ] || stop etcd
