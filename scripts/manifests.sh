#!/usr/bin/env bash
# Renders manifests/tidegate.yaml from the Helm chart with its default values: the namespace
# `tidegate`, the CRDs, then every object of `helm template` (release `tidegate`). Prints to
# stdout; `just manifests` writes the file and .ci/run fails when the file is stale.
# usage: bash scripts/manifests.sh > manifests/tidegate.yaml
#        HELM=helm bash scripts/manifests.sh   (a helm of your own; default: e2e/tools/helm.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
HELM=${HELM:-$(bash e2e/tools/helm.sh)/helm}
export HELM_CACHE_HOME=${HELM_CACHE_HOME:-$HOME/.cache/tidegate/helm/cache}
export HELM_CONFIG_HOME=${HELM_CONFIG_HOME:-$HOME/.cache/tidegate/helm/config}
export HELM_DATA_HOME=${HELM_DATA_HOME:-$HOME/.cache/tidegate/helm/data}
cat <<'HEAD'
# Tidegate, installed with plain manifests: `kubectl apply -f manifests/`.
# Generated from charts/tidegate with its default values (`just manifests`); do not edit by
# hand: change the chart and regenerate (CI fails when this file is stale). The image is
# tidegate:0.1.0: build it from the Dockerfile and push it where your cluster pulls from, or
# change the Deployment's image.
apiVersion: v1
kind: Namespace
metadata:
  name: tidegate
HEAD
"$HELM" template tidegate charts/tidegate --namespace tidegate --include-crds
