#!/usr/bin/env bash
# A profile-guided (PGO) release build of the binary: target/pgo/release/tidegate.
#
# 1. builds tidegate instrumented (-Cprofile-generate) in target/pgo-generate;
# 2. trains it on the traffic the benchmarks measure, against an nginx upstream: HTTP/1.1
#    keep-alive from wrk at 64 and 256 connections, h2c from h2load (64 connections x 4
#    streams), HTTPS keep-alive over HTTP/1.1 and HTTP/2 from h2load, and new TLS connections
#    from curl, each with the JSON access log on and off;
# 3. merges the profile with llvm-profdata of rustc's own LLVM version (target/pgo/tidegate-*.profdata);
# 4. builds tidegate again with it (-Cprofile-use) in target/pgo.
#
# LLVM then knows which branches the request path takes: it inlines and lays out the hot code
# together and moves the rest aside (README "Performance" has the figures). The binary behaves
# as the plain release build does; only where its code sits and what is inlined differ. Code
# that training does not reach (L4, auth, gRPC, h2 to upstreams...) is compiled as cold.
#
# usage: bench/pgo.sh          (about twice a release build's time; later runs reuse both
#                               target directories' dependencies)
# Needs wrk, h2load, nginx, openssl, curl and llvm-profdata of rustc's LLVM major version:
#   apt-get install -y wrk nghttp2-client nginx openssl curl llvm-NN
# (NN as `rustc -vV` prints it; Debian bookworm's backports carry recent LLVMs.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-4}

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=""
for c in "llvm-profdata-$llvm" "/usr/lib/llvm-$llvm/bin/llvm-profdata" llvm-profdata; do
  if command -v "$c" >/dev/null && "$c" merge --version 2>/dev/null | grep -q "LLVM version $llvm\."; then
    profdata=$c
    break
  fi
done
[ -n "$profdata" ] || {
  echo "needs llvm-profdata from LLVM $llvm, rustc's own (apt-get install -y llvm-$llvm)" >&2
  exit 1
}
for tool in wrk h2load nginx openssl curl python3; do
  command -v "$tool" >/dev/null ||
    { echo "needs $tool (apt-get install -y wrk nghttp2-client nginx openssl curl python3)" >&2; exit 1; }
done

# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_workdir pgo
mkdir -p target/pgo
# A fixed directory: the path is compiled into the instrumented build, which a later run then
# reuses as it is.
profraw=$ROOT/target/pgo-generate/profraw
rm -rf "$profraw"

echo "pgo: building instrumented (target/pgo-generate)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$profraw" \
  cargo build --release --locked --quiet --bin tidegate --target-dir target/pgo-generate
GEN=$ROOT/target/pgo-generate/release/tidegate

# --- what it is trained on: one Route to an nginx upstream, on HTTP and HTTPS ---
UP=$(port); HTTP=$(port); HTTPS=$(port); ADMIN=$(port)
nginx_upstream "$UP" "$(printf 'x%.0s' $(seq 100))"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pgo.test \
  -addext subjectAltName=DNS:pgo.test -keyout "$W/tls.key" -out "$W/tls.crt" 2>/dev/null
mkdir -p "$W/config"
one_route "$W/config/plain.yaml" "$UP"
tls_route "$W/config/tls.yaml" pgo.test "$W/tls.crt" "$W/tls.key"
wait_port "$UP"

# check NAME OUTPUT PATTERN: the load's output must match PATTERN (it ran and nothing failed).
check() {
  grep -qE "$3" <<<"$2" || { echo "pgo: training load $1 failed:" >&2; echo "$2" >&2; exit 1; }
}
d=$SECONDS_PER_LOAD
for log in json off; do
  "$GEN" run --config "$W/config" --http-addr "127.0.0.1:$HTTP" --https-addr "127.0.0.1:$HTTPS" \
    --admin-addr "127.0.0.1:$ADMIN" --worker-threads 1 --log-level warn --access-log "$log" \
    >/dev/null 2>"$W/tidegate.err" &
  pid=$!
  PIDS+=("$pid")
  wait_port "$HTTP"; wait_port "$HTTPS"
  for c in 64 256; do
    out=$(wrk -t1 -c"$c" -d"${d}s" "http://127.0.0.1:$HTTP/x")
    check "wrk -c$c (log $log)" "$out" "requests in"
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
      echo "pgo: training load wrk -c$c (log $log) had errors:" >&2; echo "$out" >&2; exit 1
    fi
  done
  for load in "h2c|http://127.0.0.1:$HTTP/x|-c64 -m4" \
    "https h2|https://pgo.test:$HTTPS/x|-c64 -m4" \
    "https h1|https://pgo.test:$HTTPS/x|-c64 --h1"; do
    IFS='|' read -r name url flags <<<"$load"
    port=${url##*:}; port=${port%/x}
    # shellcheck disable=SC2086 # flags are words
    out=$(h2load $flags -D "$d" --connect-to "127.0.0.1:$port" "$url" 2>&1 || true)
    check "$name (log $log)" "$out" "requests: [0-9]+ total, [0-9]+ started, [0-9]+ done, [1-9][0-9]* succeeded, 0 failed, 0 errored"
  done
  # New TLS connections: full handshakes.
  for _ in $(seq 200); do
    curl -fsS -o /dev/null -k --resolve "pgo.test:$HTTPS:127.0.0.1" "https://pgo.test:$HTTPS/x" ||
      { echo "pgo: curl over a new TLS connection failed" >&2; exit 1; }
  done
  kill -INT "$pid"
  wait "$pid" || true
done
ls "$profraw"/*.profraw >/dev/null 2>&1 || { echo "pgo: the instrumented binary wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$W/merged.profdata" "$profraw"
# Named by its content: a new profile changes the flags, so cargo rebuilds everything with it
# (under one fixed name, cargo would keep what it built with the previous profile).
sum=$(sha256sum "$W/merged.profdata" | cut -c1-16)
rm -f target/pgo/tidegate-*.profdata
cp "$W/merged.profdata" "target/pgo/tidegate-$sum.profdata"

echo "pgo: building with the profile (target/pgo)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$ROOT/target/pgo/tidegate-$sum.profdata" \
  cargo build --release --locked --quiet --bin tidegate --target-dir target/pgo
echo "$ROOT/target/pgo/release/tidegate"
