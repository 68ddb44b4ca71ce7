#!/usr/bin/env bash
# The work of one `compile/routes/10000` iteration (a full compile of 10,000 Routes and the drop
# of its table), counted by valgrind's callgrind inside criterion's timing loop: instructions,
# malloc calls, and L1 data-cache misses (callgrind's cache simulation). Counts repeat from run to
# run; the VM's wall-clock time for the same binary varies by 2.5x within an hour, which hides a
# 10% change (README "Performance").
#
# usage: bench/compile_callgrind.sh [ROUTING_BENCH_BINARY]
#   without an argument, builds the routing bench (cargo bench --no-run) and counts it;
#   compare two commits by passing each one's target/release/deps/routing-* binary.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
BIN=${1:-}
if [[ -z $BIN ]]; then
  BIN=$(cargo bench --bench routing --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "routing" and m.get("executable"):
        print(m["executable"])')
fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$OUT" \
  --toggle-collect='criterion::bencher::Bencher<M>::iter' \
  "$BIN" --bench 'compile/routes/10000$' --profile-time 2 >/dev/null 2>&1
python3 - "$OUT" "$BIN" <<'PY'
import re, sys
f = open(sys.argv[1]).read()
events = re.search(r'^events: (.*)$', f, re.M).group(1).split()
totals = dict(zip(events, map(int, re.search(r'^(?:summary|totals): (.*)$', f, re.M).group(1).split())))
names = {}
for m in re.finditer(r'^c?fn=\((\d+)\) (.*)$', f, re.M):
    names[m.group(1)] = m.group(2)
def calls(name):
    ids = {i for i, n in names.items() if n == name}
    lines = f.split('\n')
    return sum(int(lines[i + 1].split()[0][6:]) for i, l in enumerate(lines)
               if (m := re.match(r'^cfn=\((\d+)\)', l)) and m.group(1) in ids
               and lines[i + 1].startswith('calls='))
# tls::build runs once per compile, never inlined (it is large): the iteration count.
n = calls('tidegate::controller::compile::tls::build')
if n == 0:
    sys.exit('no compile counted: is this the routing bench binary?')
per = lambda k: totals.get(k, 0) // n
print(f"compile/routes/10000, per iteration ({n} counted; {sys.argv[2]}):")
print(f"  instructions {per('Ir'):,}  malloc calls {calls('malloc') // n:,}  "
      f"L1d read misses {per('D1mr'):,}  L1d write misses {per('D1mw'):,}")
PY
