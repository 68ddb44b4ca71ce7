#!/usr/bin/env bash
# Serverless figures: the release binary's size (as built, and stripped as in the image), the
# time from exec to a 200 from /readyz with examples/quickstart (median and max of RUNS starts),
# and the resident memory of an idle gateway once ready.
#   bash bench/serverless.sh [BINARY]      (default: target/release/tidegate, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tidegate}
RUNS=${RUNS:-20}
[ -x "$BIN" ] || cargo build --release --locked --quiet --bin tidegate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
strip -o "$work/stripped" "$BIN"
echo "binary: $(( $(stat -c %s "$BIN") / 1024 )) KiB as built, $(( $(stat -c %s "$work/stripped") / 1024 )) KiB stripped"
python3 - "$BIN" "$RUNS" <<'PY'
import socket, statistics, subprocess, sys, time

binary, runs = sys.argv[1], int(sys.argv[2])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
            c.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

times, rss = [], []
for _ in range(runs):
    http, admin = free_port(), free_port()
    started = time.perf_counter()
    p = subprocess.Popen([binary, "run", "--config", "examples/quickstart",
                          "--http-addr", f"127.0.0.1:{http}", "--admin-addr", f"127.0.0.1:{admin}",
                          "--https-addr", "127.0.0.1:0",
                          "--access-log", "off", "--log-level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready(admin):
        if time.perf_counter() - started > 10:
            sys.exit("not ready within 10 s")
        time.sleep(0.0002)
    times.append((time.perf_counter() - started) * 1000)
    time.sleep(1)
    with open(f"/proc/{p.pid}/status") as f:
        rss += [int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:")]
    p.terminate(); p.wait()
print(f"start -> ready: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms ({runs} starts)")
print(f"idle RSS once ready: median {statistics.median(rss):.1f} MiB")
PY
