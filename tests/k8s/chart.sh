#!/usr/bin/env bash
# shellcheck disable=SC2154  # bin, dir and repo are set by lib.sh
# The Helm charts (charts/tollgate, charts/tollgate-crds) and the kustomize
# install (deploy/) against a real kube-apiserver (tests/k8s/envtest.sh):
#
#   offline   helm lint; helm template with default values and with
#             charts/tollgate/ci/full-values.yaml; the configuration server's
#             wiring (--config-listen, --controller-url = the config Service,
#             --tls-secret, --tls-san); values.schema.json rejects
#             bad values (replicaCount=-1, ...); the CRD copies are in sync
#             (charts/sync-crds.sh --check, which also catches a tampered copy)
#             and byte-identical to crds/ apart from the keep annotation.
#   cluster   1. helm template tollgate-crds | kubectl apply --server-side, CRDs
#                Established;
#             2. helm template tollgate -n tollgate-system | kubectl apply
#                --server-side; RBAC of its ServiceAccount via kubectl auth
#                can-i (--as system:serviceaccount:tollgate-system:tollgate-controller),
#                including the TLS Secret Role; the live Deployment's
#                --controller-url names the live Service and its config port;
#             3. the chart's objects deleted, then kubectl apply -k deploy/
#                --server-side INTO THE SAME NAMESPACE (tollgate-system), the
#                same can-i checks against the kustomize objects alone; a second
#                apply -k changes nothing (idempotent: same resourceVersions,
#                kubectl diff empty); the chart's render applied on top by
#                another field manager raises no conflict (every field it
#                shares with the kustomize install has the same value);
#             4. real helm: install/upgrade/uninstall of charts/tollgate with
#                the full values in namespace tollgate-opts (the controller's
#                TLS Secret written as its ServiceAccount, and left behind by
#                helm uninstall); tollgate-crds
#                taken over by helm, upgraded (the change reaches the cluster),
#                uninstalled (CRDs and users' resources stay: resource-policy keep).
#
#   tests/k8s/chart.sh      # last line: "chart: N passed, N failed"; exit 1 on any failure
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # read by lib.sh
suite=chart
# shellcheck source=lib.sh
source "$here/lib.sh"

start_cluster
export HELM="$bin/helm"
# helm keeps state (repositories, cache) under these: keep it out of $HOME.
export HELM_CACHE_HOME="$dir/helm/cache" HELM_CONFIG_HOME="$dir/helm/config" HELM_DATA_HOME="$dir/helm/data"

k() { "$bin/kubectl" --request-timeout=30s "$@"; }
helm() { "$HELM" "$@"; }
cd "$repo"

chart=charts/tollgate
crds_chart=charts/tollgate-crds
full="$chart/ci/full-values.yaml"
ns=tollgate-system
sa=tollgate-controller

# ---------------------------------------------------------------- offline

check "helm lint --strict $chart $crds_chart" helm lint --strict "$chart" "$crds_chart"
check "helm lint --strict $chart -f $full" helm lint --strict "$chart" -f "$full"

render_default="$dir/default.yaml"
render_full="$dir/full.yaml"
render_crds="$dir/crds.yaml"
if helm template tollgate "$chart" --namespace "$ns" >"$render_default" &&
  helm template tg "$chart" --namespace tollgate-opts -f "$full" >"$render_full" &&
  helm template tollgate-crds "$crds_chart" >"$render_crds"; then
  ok "helm template: default values, $full, tollgate-crds ($(grep -c '^kind:' "$render_default") + $(grep -c '^kind:' "$render_full") + $(grep -c '^kind:' "$render_crds") objects)"
else nok "helm template"; fi

# What the default render holds.
has() { grep -qF -- "$2" "$1"; }
missing=()
for want in \
  "kind: Deployment" "replicas: 2" "image: ghcr.io/tollgate-dev/tollgate:0.1.0" \
  "imagePullPolicy: IfNotPresent" "- controller" "- --metrics-listen=0.0.0.0:9091" \
  "- --leader-election-namespace=\$(POD_NAMESPACE)" "- --leader-election-id=tollgate-controller" \
  "- --gateway-image=ghcr.io/tollgate-dev/tollgate:0.1.0" "name: TOLLGATE_LOG_FORMAT" 'value: "json"' \
  "fieldPath: metadata.name" "fieldPath: metadata.namespace" "path: /healthz" "path: /readyz" \
  "runAsNonRoot: true" "readOnlyRootFilesystem: true" "allowPrivilegeEscalation: false" \
  "- ALL" "type: RuntimeDefault" "kind: ServiceAccount" "kind: ClusterRole" \
  "kind: ClusterRoleBinding" "kind: Role" "kind: RoleBinding" "kind: Service" \
  "kind: PodDisruptionBudget" "serviceAccountName: tollgate-controller" "memory: 256Mi" \
  "- --config-listen=0.0.0.0:8443" "- --controller-url=https://tollgate-controller.tollgate-system.svc:8443" \
  "- --tls-secret=tollgate-controller-tls" "- --tls-secret-namespace=\$(POD_NAMESPACE)" \
  "name: tollgate-controller-metrics" 'resourceNames: ["tollgate-controller-tls"]' \
  "name: tollgate-controller-tls" '"serviceaccounts", "configmaps"' 'resources: ["services"]' \
  'verbs: ["list", "watch", "create", "patch", "delete"]'; do
  has "$render_default" "$want" || missing+=("$want")
done
if ((${#missing[@]} == 0)); then ok "default render: deployment (2 replicas, args incl. config server, env, probes, hardening), SA, RBAC (+ TLS Role, configmaps), Services, PDB"
else nok "default render lacks: ${missing[*]}"; fi
if ! grep -q 'kind: CustomResourceDefinition' "$render_default" && ! grep -q '^kind: Namespace' "$render_default"; then
  ok "tollgate chart renders no CRD and no Namespace"
else nok "tollgate chart renders a CRD or a Namespace"; fi

# The configuration server's wiring, read structurally from a render: the
# container listens on the port named "config" (--config-listen), and
# --controller-url is https://<Service>.<namespace>.svc:<port> of a rendered
# ClusterIP Service in the release namespace whose port of that number is named
# "config" and targets the container's "config" port.
wiring() { # render-file namespace -> prints "url service:port" or fails
  python3 - "$1" "$2" <<'EOF'
import re, sys
text, ns = open(sys.argv[1]).read(), sys.argv[2]
docs = [d for d in re.split(r"(?m)^---$", text) if re.search(r"(?m)^kind:", d)]
def kind(d): return re.search(r"(?m)^kind: (\S+)", d).group(1)
def name(d): return re.search(r"(?m)^  name: (\S+)", d).group(1)
dep = next(d for d in docs if kind(d) == "Deployment")
arg = lambda flag: re.findall(r"(?m)^ +- " + re.escape(flag) + r"=(\S+)$", dep)
listen, url = arg("--config-listen"), arg("--controller-url")
assert len(listen) == 1 and len(url) == 1, ("flags", listen, url)
lport = int(listen[0].rsplit(":", 1)[1])
cport = re.search(r"- name: config\n +containerPort: (\d+)", dep)
assert cport and int(cport.group(1)) == lport, ("container port config", lport)
m = re.fullmatch(r"https://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)", url[0])
assert m, ("url", url[0])
svc_name, svc_ns, port = m.group(1), m.group(2), int(m.group(3))
assert svc_ns == ns, ("namespace", svc_ns, ns)
svc = [d for d in docs if kind(d) == "Service" and name(d) == svc_name]
assert len(svc) == 1, ("no Service", svc_name)
svc = svc[0]
assert "type: ClusterIP" in svc and ("namespace: " + ns) in svc, "service type/namespace"
p = re.search(r"- name: config\n +port: (\d+)\n +targetPort: config\n", svc)
assert p and int(p.group(1)) == port, ("service port config", port)
print(url[0], f"{svc_name}:{port}")
EOF
}
if out="$(wiring "$render_default" "$ns" 2>&1)" && [[ "$out" == "https://tollgate-controller.$ns.svc:8443 tollgate-controller:8443" ]]; then
  ok "config server wiring (default): --config-listen 8443 = container port config, --controller-url = Service port config ($out)"
else nok "config server wiring (default): $out"; fi
if out="$(helm template tg "$chart" -n team-b --set configServer.port=9443 --set metrics.service.enabled=false >"$dir/cfg.yaml" &&
  wiring "$dir/cfg.yaml" team-b 2>&1)" && [[ "$out" == "https://tg-tollgate-controller.team-b.svc:9443 tg-tollgate-controller:9443" ]] &&
  [[ "$(grep -c '^kind: Service$' "$dir/cfg.yaml")" == 1 ]] && ! grep -q 'controller-metrics' "$dir/cfg.yaml"; then
  ok "config server wiring follows release, namespace and configServer.port; the config Service stays without the metrics Service ($out)"
else nok "config server wiring (port 9443, no metrics Service): $out"; fi
if helm template t "$chart" --set configServer.url=https://tollgate.example.test:443 --set 'configServer.extraSANs={a.example.test,192.0.2.1}' \
  --set configServer.tlsSecretName=custom-tls >"$dir/cfg.yaml" &&
  has "$dir/cfg.yaml" "- --controller-url=https://tollgate.example.test:443" && has "$dir/cfg.yaml" "- --tls-san=a.example.test" &&
  has "$dir/cfg.yaml" "- --tls-san=192.0.2.1" && has "$dir/cfg.yaml" "- --tls-secret=custom-tls" &&
  has "$dir/cfg.yaml" 'resourceNames: ["custom-tls"]' && has "$dir/cfg.yaml" "- name: config"; then
  ok "configServer.url, extraSANs, tlsSecretName reach the args and the TLS Role"
else nok "configServer.url/extraSANs/tlsSecretName overrides"; fi
if out="$(helm template t "$chart" --set configServer.port=9091 2>&1)"; then nok "configServer.port = metrics.port accepted"
elif grep -q 'configServer.port and metrics.port must differ' <<<"$out"; then ok "configServer.port = metrics.port refused"
else nok "configServer.port = metrics.port failed for another reason: $out"; fi

missing=()
for want in \
  "name: tg-full-controller" "replicas: 3" "image: registry.example.test/tollgate/tollgate:0.2.0-rc.1" \
  "imagePullPolicy: Always" "- --metrics-listen=0.0.0.0:9100" "- --leader-election-id=tg-full-leader" \
  "- --gateway-image=registry.example.test/tollgate/gateway@sha256:0123456789abcdef" \
  '- "--some-future-flag=1"' "name: RUST_LOG" 'value: "text"' "serviceAccountName: tg-full-sa" \
  "name: tg-full-sa" 'resourceNames: ["tg-full-leader"]' "minAvailable: 50%" "port: 80" \
  "- --config-listen=0.0.0.0:9443" "- --controller-url=https://tollgate-config.example.test:9443" \
  "- --tls-secret=tg-full-certs" 'resourceNames: ["tg-full-certs"]' "port: 9443" \
  "- --tls-san=tollgate-config.internal.example.test" "- --tls-san=10.0.0.10" \
  "prometheus.io/scrape: \"true\"" "team: platform" "tier: control-plane" "priorityClassName: tollgate-critical" \
  "kubernetes.io/os: linux" "node-role.kubernetes.io/control-plane" "podAntiAffinity:" \
  "topologyKey: topology.kubernetes.io/zone" "terminationGracePeriodSeconds: 45" "successThreshold: 2" \
  "- name: registry-creds" "example.test/role: tollgate"; do
  has "$render_full" "$want" || missing+=("$want")
done
# The zone constraint had no labelSelector: it gets the pod's selector labels.
if ! awk '/topologySpreadConstraints:/{t=1} t&&/app.kubernetes.io\/instance: tg$/{f=1} END{exit !f}' "$render_full"; then
  missing+=("default labelSelector on topology spread constraint")
fi
if ((${#missing[@]} == 0)); then ok "full-values render: every option reaches the manifests"
else nok "full-values render lacks: ${missing[*]}"; fi

# The schema rejects bad values.
schema_rejects() { # description --set...
  local desc="$1" out
  shift
  if out="$(helm template t "$chart" "$@" 2>&1)"; then
    nok "schema accepted $desc"
  elif grep -q "values don't meet the specifications of the schema" <<<"$out"; then
    ok "schema rejects $desc: $(grep -m1 -o "at '[^']*'.*" <<<"$out")"
  else nok "$desc failed for another reason: $(tail -n 3 <<<"$out")"; fi
}
schema_rejects "replicaCount=-1" --set replicaCount=-1
schema_rejects "replicaCount=two" --set replicaCount=two
schema_rejects "an unknown top-level key" --set replicaCont=2
schema_rejects "logFormat=xml" --set logFormat=xml
schema_rejects "image.pullPolicy=Sometimes" --set image.pullPolicy=Sometimes
schema_rejects "metrics.port=70000" --set metrics.port=70000
schema_rejects "podDisruptionBudget.maxUnavailable=-1" --set podDisruptionBudget.maxUnavailable=-1
schema_rejects "an unknown key under image" --set image.tags=1
schema_rejects "a non-string pod label" --set podLabels.a=1
schema_rejects "whenUnsatisfiable=Maybe" --set 'topologySpreadConstraints[0].whenUnsatisfiable=Maybe'
schema_rejects "configServer.port=0" --set configServer.port=0
schema_rejects "configServer.port=70000" --set configServer.port=70000
schema_rejects "configServer.port=https" --set configServer.port=https
schema_rejects "configServer.url=http://..." --set configServer.url=http://tollgate.example.test:8443
schema_rejects "configServer.url with a path" --set configServer.url=https://tollgate.example.test:8443/config
schema_rejects "configServer.tlsSecretName=Bad_Name" --set configServer.tlsSecretName=Bad_Name
schema_rejects "a configServer.extraSANs entry with a comma" --set 'configServer.extraSANs[0]=a\,b'
schema_rejects "an unknown key under configServer" --set configServer.listen=1
if out="$(helm template t "$chart" --kube-version 1.29.9 2>&1)"; then nok "chart rendered for Kubernetes 1.29"
elif grep -q 'kubeVersion' <<<"$out" && helm template t "$chart" --kube-version 1.30.0 >/dev/null 2>&1; then
  ok "kubeVersion >=1.30.0-0: 1.29 refused, 1.30 accepted"
else nok "kubeVersion check: $out"; fi
if helm template t "$chart" --set replicaCount=0 --set logFormat=text >/dev/null 2>&1; then
  ok "schema accepts replicaCount=0, logFormat=text"
else nok "schema rejects valid values"; fi

# Every value is documented in the README's table.
undocumented="$(python3 - "$chart/values.schema.json" "$chart/README.md" <<'EOF'
import json, sys
schema = json.load(open(sys.argv[1]))
readme = open(sys.argv[2]).read()
missing = []
# Documented as a whole (free-form or Kubernetes objects passed through).
whole = {"strategy", "resources", "affinity", "livenessProbe", "readinessProbe",
         "podSecurityContext", "securityContext"}
def walk(node, path):
    props = node.get("properties")
    if props and (not path or (node.get("additionalProperties") is False and path not in whole)):
        for key, sub in props.items():
            if key != "global":
                walk(sub, f"{path}.{key}" if path else key)
    elif f"`{path}`" not in readme:
        missing.append(path)
walk(schema, "")
print(" ".join(missing))
EOF
)" || undocumented="(python3 failed)"
if [[ -z "$undocumented" ]]; then ok "README.md documents every value"
else nok "README.md does not document: $undocumented"; fi

# CRD copies.
check "charts/sync-crds.sh --check: copies in sync with crds/" charts/sync-crds.sh --check
identical=1
for f in crds/*.yaml; do
  name="$(basename "$f")"
  # The chart copy minus exactly the two added lines must be the source, byte for byte.
  if ! diff <(awk 'p=="metadata:" && $0=="  annotations:" {getline nxt; if (nxt=="    helm.sh/resource-policy: keep") {p=nxt; next} else {print; print nxt; p=nxt; next}} {print; p=$0}' \
    "$crds_chart/templates/$name") "$f" >/dev/null ||
    [[ "$(grep -c '^    helm.sh/resource-policy: keep$' "$crds_chart/templates/$name")" != 1 ]] ||
    ! cmp -s "$f" "deploy/base/crds/$name"; then
    identical=0
    log "$name: copy differs from crds/$name"
  fi
done
n_src="$(ls crds/*.yaml | wc -l)"
if ((identical)) && [[ "$(ls "$crds_chart"/templates/*.yaml | wc -l)" == "$n_src" ]] &&
  [[ "$(ls deploy/base/crds/*.yaml | grep -vc kustomization.yaml)" == "$n_src" ]]; then
  ok "CRD copies: chart = crds/ + keep annotation only, deploy/base/crds = crds/ ($n_src CRDs)"
else nok "CRD copies differ from crds/"; fi

# --check notices a stale copy (in a scratch copy of the tree, never the repo).
scratch="$dir/tree"
mkdir -p "$scratch/deploy" "$scratch/tests/k8s"
cp -r charts crds "$scratch/"
cp -r deploy/base "$scratch/deploy/"
echo "# stale" >>"$scratch/$crds_chart/templates/$(basename "$(ls crds/*.yaml | head -n1)")"
if "$scratch/charts/sync-crds.sh" --check >/dev/null 2>&1; then nok "--check missed a tampered chart CRD"
else ok "--check exits non-zero on a tampered chart CRD"; fi
cp -r "$crds_chart/templates/." "$scratch/$crds_chart/templates/"
sed -i 's/replicaCount: 2/replicaCount: 3/' "$scratch/$chart/values.yaml"
if "$scratch/charts/sync-crds.sh" --check >/dev/null 2>&1; then nok "--check missed a chart change not rendered into deploy/base"
else ok "--check exits non-zero when deploy/base/controller.yaml lags the chart"; fi
if "$scratch/charts/sync-crds.sh" >/dev/null 2>&1 && "$scratch/charts/sync-crds.sh" --check >/dev/null 2>&1 &&
  grep -q 'replicas: 3' "$scratch/deploy/base/controller.yaml"; then
  ok "sync-crds.sh rewrites stale copies (then --check passes)"
else nok "sync-crds.sh did not repair the scratch tree"; fi

# kustomize renders the chart's default objects (+ Namespace and CRDs).
names() { k create --dry-run=client -o name -f "$1" | grep -v '^\(namespace\|customresourcedefinition\.apiextensions\.k8s\.io\)/' | sort; }
if k kustomize deploy/ >"$dir/kustomize.yaml" && diff <(names "$dir/kustomize.yaml") <(names "$render_default") >/dev/null &&
  [[ "$(grep -c '^kind: CustomResourceDefinition$' "$dir/kustomize.yaml")" == "$(ls crds/*.yaml | wc -l)" ]] &&
  grep -q '^kind: Namespace$' "$dir/kustomize.yaml"; then
  ok "kubectl kustomize deploy/: the chart's default objects + Namespace $ns + CRDs ($(grep -c '^kind:' "$dir/kustomize.yaml") objects)"
else nok "kustomize deploy/ and the chart's default render hold different objects"; fi
if ! grep -q 'quickstart' "$dir/kustomize.yaml"; then ok "deploy/examples is not part of deploy/"
else nok "deploy/ includes deploy/examples"; fi

# ---------------------------------------------------------------- cluster

crd_names=(crd/aigateways.tollgate.dev crd/modelproviders.tollgate.dev crd/airoutes.tollgate.dev crd/tokenbudgets.tollgate.dev crd/mcpservers.tollgate.dev)

# 1. CRD chart.
if k apply --server-side --field-manager=chart-sh-template -f "$render_crds" >/dev/null &&
  k wait --for=condition=Established --timeout=60s "${crd_names[@]}" >/dev/null; then
  ok "helm template tollgate-crds | kubectl apply --server-side: ${#crd_names[@]} CRDs Established"
else nok "CRD chart applied and Established"; fi
if [[ "$(k get crd airoutes.tollgate.dev -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" == keep ]]; then
  ok "CRDs carry helm.sh/resource-policy=keep"
else nok "CRDs lack helm.sh/resource-policy=keep"; fi

# 2. Controller chart, default values.
k create namespace "$ns" >/dev/null
if out="$(k apply --server-side --field-manager=chart-sh-template -f "$render_default" 2>&1)"; then
  ok "helm template tollgate -n $ns | kubectl apply --server-side ($(wc -l <<<"$out") objects)"
else nok "chart render applied: $out"; fi
if [[ "$(k -n "$ns" get deployment tollgate-controller -o jsonpath='{.spec.replicas} {.spec.template.spec.serviceAccountName} {.spec.template.spec.containers[0].readinessProbe.httpGet.path}')" == "2 $sa /readyz" ]]; then
  ok "live Deployment: 2 replicas, SA $sa, readiness /readyz"
else nok "live Deployment fields"; fi

as="system:serviceaccount:$ns:$sa"
# can WANT(yes|no) ARGS... : kubectl auth can-i as the controller's ServiceAccount.
can() {
  local want="$1" got
  shift
  got="$(k auth can-i --as="$as" "$@" 2>/dev/null)" || true
  [[ "$got" == "$want" ]]
}
rbac_suite() { # label
  local label="$1" bad=()
  can yes list airoutes.tollgate.dev -n team-a || bad+=("list airoutes")
  can yes watch aigateways.tollgate.dev --all-namespaces || bad+=("watch aigateways (all namespaces)")
  can yes patch airoutes.tollgate.dev --subresource=status -n team-a || bad+=("patch airoutes/status")
  can yes patch aigateways.tollgate.dev --subresource=status -n team-a || bad+=("patch aigateways/status")
  can yes patch modelproviders.tollgate.dev --subresource=status -n team-a || bad+=("patch modelproviders/status")
  can yes list secrets -n team-a || bad+=("list secrets")
  can yes watch secrets --all-namespaces || bad+=("watch secrets")
  can yes create tokenreviews.authentication.k8s.io || bad+=("create tokenreviews")
  can yes create deployments.apps -n team-a || bad+=("create deployments")
  can yes patch deployments.apps -n team-a || bad+=("patch deployments")
  local r
  for r in services serviceaccounts roles.rbac.authorization.k8s.io rolebindings.rbac.authorization.k8s.io \
    horizontalpodautoscalers.autoscaling poddisruptionbudgets.policy events events.events.k8s.io; do
    can yes create "$r" -n team-a || bad+=("create $r")
    can yes patch "$r" -n team-a || bad+=("patch $r")
  done
  can yes create leases.coordination.k8s.io -n "$ns" || bad+=("create leases in $ns")
  can yes update leases.coordination.k8s.io/tollgate-controller -n "$ns" || bad+=("update lease tollgate-controller")
  can yes get leases.coordination.k8s.io/tollgate-controller -n "$ns" || bad+=("get lease tollgate-controller")
  # Must not.
  can no delete secrets -n team-a || bad+=("NOT delete secrets")
  can no get secrets -n team-a || bad+=("NOT get secrets")
  can no create secrets -n team-a || bad+=("NOT create secrets")
  can no create pods --subresource=exec -n team-a || bad+=("NOT create pods/exec")
  can no create pods -n team-a || bad+=("NOT create pods")
  # Delete on Deployments and Services only: an MCPServer whose run is removed.
  can yes delete deployments.apps -n team-a || bad+=("delete deployments")
  can yes delete services -n team-a || bad+=("delete services")
  can no delete serviceaccounts -n team-a || bad+=("NOT delete serviceaccounts")
  can no deletecollection deployments.apps -n team-a || bad+=("NOT deletecollection deployments")
  can no update deployments.apps -n team-a || bad+=("NOT update deployments")
  can no patch airoutes.tollgate.dev -n team-a || bad+=("NOT patch airoutes (spec)")
  can no delete aigateways.tollgate.dev -n team-a || bad+=("NOT delete aigateways")
  can no create clusterroles.rbac.authorization.k8s.io || bad+=("NOT create clusterroles")
  can no escalate roles.rbac.authorization.k8s.io -n team-a || bad+=("NOT escalate roles")
  can no bind roles.rbac.authorization.k8s.io -n team-a || bad+=("NOT bind roles")
  can no create leases.coordination.k8s.io -n team-a || bad+=("NOT create leases outside $ns")
  can no update leases.coordination.k8s.io/someone-else -n "$ns" || bad+=("NOT update another lease")
  can no patch customresourcedefinitions.apiextensions.k8s.io || bad+=("NOT patch CRDs")
  # ConfigMaps: the CA copied next to each gateway (server-side apply, watches).
  for r in list watch create patch; do
    can yes "$r" configmaps -n team-a || bad+=("$r configmaps")
  done
  can no delete configmaps -n team-a || bad+=("NOT delete configmaps")
  can no update configmaps -n team-a || bad+=("NOT update configmaps")
  # The TLS Secret: create any in $ns (create has no name), get/update only
  # its own; nothing else by name, nowhere else.
  can yes get secrets/tollgate-controller-tls -n "$ns" || bad+=("get secret tollgate-controller-tls in $ns")
  can yes update secrets/tollgate-controller-tls -n "$ns" || bad+=("update secret tollgate-controller-tls in $ns")
  can yes create secrets -n "$ns" || bad+=("create secrets in $ns")
  can no get secrets/someone-else -n "$ns" || bad+=("NOT get another secret in $ns")
  can no update secrets/someone-else -n "$ns" || bad+=("NOT update another secret in $ns")
  can no get secrets -n "$ns" || bad+=("NOT get secrets (any name) in $ns")
  can no delete secrets/tollgate-controller-tls -n "$ns" || bad+=("NOT delete the TLS secret")
  can no patch secrets/tollgate-controller-tls -n "$ns" || bad+=("NOT patch the TLS secret")
  can no get secrets/tollgate-controller-tls -n team-a || bad+=("NOT get tollgate-controller-tls outside $ns")
  can no update secrets/tollgate-controller-tls -n team-a || bad+=("NOT update tollgate-controller-tls outside $ns")
  can no get secrets --all-namespaces || bad+=("NOT get secrets cluster-wide")
  if ((${#bad[@]} == 0)); then
    ok "RBAC ($label) as $as: can list airoutes, patch */status, list+watch secrets, create tokenreviews, create/patch deployments, configmaps etc., delete deployments and services (MCPServer run removed), leader Lease, get/update/create its TLS Secret in $ns; cannot delete/get secrets, get/update/delete other secrets or its own elsewhere, pods/exec, update deployments, delete other kinds, escalate, other leases"
  else nok "RBAC ($label) as $as, wrong answers for: ${bad[*]}"; fi
}
rbac_suite "chart"
# The live objects agree: the Deployment's --controller-url names the live
# Service and its config port.
live_wiring() { # label deployment service port
  local url svc_port target
  url="$(k -n "$ns" get deployment "$2" -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -o -- '--controller-url=[^"]*' | cut -d= -f2-)"
  svc_port="$(k -n "$ns" get service "$3" -o jsonpath='{.spec.type} {.spec.ports[?(@.name=="config")].port}')"
  target="$(k -n "$ns" get service "$3" -o jsonpath='{.spec.ports[?(@.name=="config")].targetPort}')"
  if [[ "$url" == "https://$3.$ns.svc:$4" && "$svc_port" == "ClusterIP $4" && "$target" == config ]]; then
    ok "live ($1): --controller-url $url = Service $3, ClusterIP, port config $4 -> targetPort config"
  else nok "live ($1): url '$url', Service '$svc_port' targetPort '$target'"; fi
}
live_wiring chart tollgate-controller tollgate-controller 8443

# 3. kustomize: same namespace, after removing the chart's objects, so the
#    checks below see only what deploy/ created.
if k delete --timeout=60s -f "$render_default" >/dev/null 2>&1 &&
  ! k -n "$ns" get deployment tollgate-controller >/dev/null 2>&1 &&
  ! k get clusterrolebinding tollgate-controller >/dev/null 2>&1; then
  ok "chart objects deleted before the kustomize install"
else nok "deleting the chart objects"; fi
if out="$(k apply -k deploy/ --server-side 2>&1)"; then
  ok "kubectl apply -k deploy/ --server-side into $ns ($(wc -l <<<"$out") objects)"
else nok "kubectl apply -k deploy/: $out"; fi
if grep -qi 'warning' <<<"$out"; then nok "apply -k printed warnings: $(grep -i warning <<<"$out" | head -n 3)"
else ok "apply -k: no warnings (pod template meets the namespace's restricted Pod Security level)"; fi
rbac_suite "kustomize"
live_wiring kustomize tollgate-controller tollgate-controller 8443

versions() { k get -k deploy/ -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{"\n"}{end}'; }
before="$(versions)"
if k apply -k deploy/ --server-side >/dev/null 2>&1 && after="$(versions)" && [[ -n "$before" && "$before" == "$after" ]]; then
  ok "apply -k again is a no-op ($(wc -l <<<"$before") objects, resourceVersions unchanged)"
else nok "second apply -k changed objects: $(diff <(echo "$before") <(echo "${after:-}") | head -n 6 | tr '\n' ' ')"; fi
if out="$(k diff -k deploy/ --server-side --field-manager=kubectl 2>&1)"; then
  ok "kubectl diff -k deploy/ --server-side: no difference"
else nok "kubectl diff -k deploy/: $(head -n 20 <<<"$out")"; fi

# Proof that kustomize installed what the chart installs: SSA by a second
# field manager conflicts on any shared field whose value differs.
if out="$(k apply --server-side --field-manager=chart-sh-template -f "$render_default" 2>&1)"; then
  ok "chart render applied over the kustomize install: no field conflicts"
else nok "chart render conflicts with the kustomize install: $(head -n 10 <<<"$out")"; fi
# ... and the PodSecurity warning check above is meaningful: a privileged pod
# template in the same namespace does draw one.
priv="apiVersion: apps/v1
kind: Deployment
metadata: {name: privileged, namespace: $ns}
spec:
  selector: {matchLabels: {app: p}}
  template:
    metadata: {labels: {app: p}}
    spec:
      containers: [{name: p, image: busybox, securityContext: {privileged: true}}]"
if out="$(k apply --dry-run=server -f - <<<"$priv" 2>&1)" && grep -q 'would violate PodSecurity' <<<"$out"; then
  ok "control: a privileged Deployment in $ns draws a PodSecurity warning"
else nok "control: no PodSecurity warning for a privileged Deployment (admission off?)"; fi

# 4. Real helm releases.
opts=tollgate-opts
if helm install tg "$chart" -n "$opts" --create-namespace -f "$full" >"$dir/install-tg.txt" &&
  [[ "$(k -n "$opts" get deployment tg-full-controller -o jsonpath='{.spec.replicas}')" == 3 ]]; then
  ok "helm install tg -n $opts -f full-values.yaml (3 replicas)"
else nok "helm install with full values"; fi
if grep -qF 'Config server:   https://tollgate-config.example.test:9443' "$dir/install-tg.txt" &&
  grep -qF 'TLS Secret:      tg-full-certs' "$dir/install-tg.txt" &&
  grep -qF "http://tg-full-controller-metrics.$opts.svc:80/metrics" "$dir/install-tg.txt" &&
  grep -qF 'Image:           registry.example.test/tollgate/tollgate:0.2.0-rc.1 (controller)' "$dir/install-tg.txt" &&
  grep -qF 'Gateway image:   registry.example.test/tollgate/gateway@sha256:0123456789abcdef' "$dir/install-tg.txt" &&
  grep -qF "kubectl -n $opts rollout status deployment/tg-full-controller" "$dir/install-tg.txt" &&
  grep -qF 'wait --for=condition=Programmed aigateway/quickstart' "$dir/install-tg.txt" &&
  grep -qF 'curl -s http://127.0.0.1:8080/v1/chat/completions' "$dir/install-tg.txt"; then
  ok "helm install NOTES name the images that run, the config server URL, the TLS Secret, the metrics Service, and how to verify (rollout, Programmed, curl)"
else nok "helm install NOTES: $(sed -n '/NOTES/,$p' "$dir/install-tg.txt" | head -n 8 | tr '\n' ' ')"; fi
if [[ "$(k -n "$opts" get service tg-full-controller -o jsonpath='{.spec.ports[?(@.name=="config")].port}')" == 9443 ]]; then
  ok "release tg: Service tg-full-controller has port config 9443"
else nok "release tg: config Service port"; fi
as="system:serviceaccount:$opts:tg-full-sa"
if can yes update leases.coordination.k8s.io/tg-full-leader -n "$opts" &&
  can no update leases.coordination.k8s.io/tollgate-controller -n "$opts" &&
  can yes create tokenreviews.authentication.k8s.io && can no delete secrets -n team-a &&
  can yes get secrets/tg-full-certs -n "$opts" && can yes update secrets/tg-full-certs -n "$opts" &&
  can no get secrets/tg-full-controller-tls -n "$opts" && can no get secrets/tollgate-controller-tls -n "$opts" &&
  can no get secrets/tg-full-certs -n "$ns"; then
  ok "RBAC of release tg follows serviceAccount.name, leaderElection.id and configServer.tlsSecretName"
else nok "RBAC of release tg"; fi
if helm upgrade tg "$chart" -n "$opts" --reuse-values --set replicaCount=1 >/dev/null &&
  [[ "$(k -n "$opts" get deployment tg-full-controller -o jsonpath='{.spec.replicas}')" == 1 ]]; then
  ok "helm upgrade tg --set replicaCount=1"
else nok "helm upgrade tg"; fi
if out="$(helm upgrade tg "$chart" -n "$opts" --reuse-values --set replicaCount=-1 2>&1)"; then
  nok "helm upgrade accepted replicaCount=-1"
else ok "helm upgrade --set replicaCount=-1 refused by the schema"; fi
# What the controller does with its TLS Secret, done as its ServiceAccount
# (real requests, not can-i): create, get, update (replace with the
# resourceVersion read); delete is refused.
tls_secret="apiVersion: v1
kind: Secret
metadata: {name: tg-full-certs, namespace: $opts}
type: Opaque
stringData: {ca.crt: test}"
if k --as="$as" create -f - <<<"$tls_secret" >/dev/null &&
  k --as="$as" -n "$opts" get secret tg-full-certs -o yaml >"$dir/tls-secret.yaml" &&
  sed 's/^  ca.crt: .*/  ca.crt: dXBkYXRlZA==/' "$dir/tls-secret.yaml" | k --as="$as" replace -f - >/dev/null &&
  [[ "$(k -n "$opts" get secret tg-full-certs -o jsonpath='{.data.ca\.crt}' | base64 -d)" == updated ]] &&
  ! k --as="$as" -n "$opts" delete secret tg-full-certs >/dev/null 2>&1 &&
  ! k --as="$as" -n "$opts" get secret tg-full-controller-tls >/dev/null 2>&1; then
  ok "as $as: create, get and replace Secret tg-full-certs in $opts; delete it refused"
else nok "TLS Secret requests as $as"; fi
if helm uninstall tg -n "$opts" >/dev/null && ! k -n "$opts" get deployment tg-full-controller >/dev/null 2>&1 &&
  ! k get clusterrole tg-full-controller >/dev/null 2>&1 && ! k -n "$opts" get role tg-full-controller-tls >/dev/null 2>&1 &&
  ! k -n "$opts" get service tg-full-controller >/dev/null 2>&1; then
  ok "helm uninstall tg removes its objects"
else nok "helm uninstall tg"; fi
if k -n "$opts" get secret tg-full-certs >/dev/null 2>&1; then
  ok "helm uninstall tg leaves the controller-created TLS Secret tg-full-certs (as README.md says)"
else nok "the TLS Secret went with helm uninstall"; fi

# tollgate-crds as a helm release: adopt the CRDs, upgrade them, uninstall.
if helm install tollgate-crds "$crds_chart" --take-ownership >/dev/null; then
  ok "helm install tollgate-crds --take-ownership (CRDs already there)"
else nok "helm install tollgate-crds"; fi
k apply -f deploy/examples/quickstart.yaml >/dev/null
upgraded="$dir/tollgate-crds-next"
cp -r "$crds_chart" "$upgraded"
sed -i 's/^version: .*/version: 0.1.1-test/' "$upgraded/Chart.yaml"
sed -i 's/^    helm.sh\/resource-policy: keep$/&\n    tollgate.dev\/upgrade-test: "yes"/' "$upgraded/templates/airoutes.tollgate.dev.yaml"
if helm upgrade tollgate-crds "$upgraded" >/dev/null &&
  [[ "$(k get crd airoutes.tollgate.dev -o jsonpath='{.metadata.annotations.tollgate\.dev/upgrade-test}')" == yes ]]; then
  ok "helm upgrade tollgate-crds changes the CRDs in the cluster (templates, not crds/)"
else nok "helm upgrade tollgate-crds did not reach the CRDs"; fi
if helm uninstall tollgate-crds >/dev/null &&
  k get "${crd_names[@]}" >/dev/null &&
  [[ "$(k get airoutes -n default -o name | wc -l)" -eq 5 ]]; then
  ok "helm uninstall tollgate-crds keeps the CRDs and the users' AIRoutes"
else nok "helm uninstall tollgate-crds deleted CRDs or resources"; fi
