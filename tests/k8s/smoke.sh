#!/usr/bin/env bash
# shellcheck disable=SC2154  # bin, dir and repo are set by lib.sh
# Smoke test of the envtest harness against Tollgate's CRDs:
# build (or reuse) the binaries, start etcd + kube-apiserver, install the CRDs,
# apply the quickstart and the cluster quickstart, check CEL validation, ServiceAccount tokens
# (TokenRequest + TokenReview), RBAC, and helm; stop. Exits non-zero on any failure.
#
#   tests/k8s/smoke.sh            # keeps the run dir only on failure
#   TOLLGATE_SMOKE_CRDS=DIR tests/k8s/smoke.sh   # try other CRD manifests
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # read by lib.sh
suite=smoke
# shellcheck source=lib.sh
source "$here/lib.sh"
crds="${TOLLGATE_SMOKE_CRDS:-$repo/crds}"

start_cluster

k() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" --request-timeout=30s "$@"; }

# 0. Versions as built.
if v="$(k version -o json)" && grep -q '"gitVersion": "v1\.' <<<"$v"; then
  ok "kubectl version: $(grep -o '"gitVersion": "[^"]*"' <<<"$v" | cut -d'"' -f4 | paste -sd' ')"
else nok "kubectl version"; fi

# 1. CRDs, server-side apply, Established.
if k apply --server-side -f "$crds/" &&
  k wait --for=condition=Established --timeout=60s \
    crd/aigateways.tollgate.dev crd/modelproviders.tollgate.dev crd/airoutes.tollgate.dev \
    crd/tokenbudgets.tollgate.dev crd/mcpservers.tollgate.dev; then
  ok "CRDs applied and Established"
else nok "CRDs applied and Established"; fi

# 2. The quickstart applies cleanly (default namespace).
if k apply -f "$repo/deploy/examples/quickstart.yaml" &&
  [[ "$(k get airoutes -o name | wc -l)" -eq 5 ]]; then
  ok "quickstart.yaml applied ($(k get aigateways,modelproviders,airoutes,tokenbudgets -o name | paste -sd' '))"
else nok "quickstart.yaml applied"; fi

# 2b. The cluster quickstart applies too, in its own namespace, with no
#     warning (its mock Deployment meets the namespace's restricted Pod
#     Security level), and its provider points at the mock's Service.
if out="$(k apply -f "$repo/deploy/examples/cluster-quickstart.yaml" 2>&1)" &&
  ! grep -qi warning <<<"$out" &&
  [[ "$(k -n tollgate-quickstart get deployment,service mock -o name | wc -l)" -eq 2 ]] &&
  [[ "$(k -n tollgate-quickstart get airoutes -o name | wc -l)" -eq 3 ]] &&
  [[ "$(k -n tollgate-quickstart get modelprovider mock -o jsonpath='{.spec.endpoint}')" == http://mock.tollgate-quickstart.svc:8081/v1 ]]; then
  ok "cluster-quickstart.yaml applied: mock Deployment + Service, provider at its DNS name, 3 AIRoutes, no warnings"
else nok "cluster-quickstart.yaml applied: $out"; fi

# 3. CEL validation rejects a backend weight of 101.
invalid='apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: invalid-weight
spec:
  gatewayRef: {name: quickstart}
  models: [bad]
  backends:
  - providerRef: {name: mock}
    model: mock-chat
    weight: 101'
# refused WHAT MANIFEST FIELD MESSAGE: the apiserver refuses MANIFEST with
# MESSAGE on FIELD (a regex for grep -o, shown in the ok line).
refused() {
  local out
  if out="$(k apply -f - <<<"$2" 2>&1)"; then
    nok "$1 was accepted: $out"
  elif grep -qF "$4" <<<"$out"; then
    ok "$1 rejected: $(grep -o "$3: [^,]*" <<<"$out" | head -n1)"
  else nok "$1 rejected for the wrong reason: $out"; fi
}
refused "invalid AIRoute" "$invalid" 'spec.backends\[0\].weight' "weight must be between 0 and 100"

# 3b. CEL validation refuses an endpoint without a host, with the message
# `tollgate validate` prints (crates/api ENDPOINT_MESSAGE).
nohost='apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata:
  name: no-host
spec:
  type: Mock
  endpoint: "http://"'
refused "endpoint http://" "$nohost" 'spec.endpoint' \
  'spec.endpoint: Invalid value: "http://": endpoint must be an http:// or https:// URL with a host'

# 3b'. A guard policy's moderation window without output moderation.
window='apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata:
  name: lonely-window
spec:
  guardPolicies:
  - name: p
    output: {streamModerationWindow: 64}'
refused "streamModerationWindow without moderation" "$window" 'spec.guardPolicies\[0\].output' \
  "streamModerationWindow sets the window of output moderation: it needs moderation"

# 3c. Rules new with item 13.5: duplicate aliases and header names, a
# listener on the admin port's default, a zero timeout, a catalog model twice.
dupes='apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: dupes
spec:
  gatewayRef: {name: quickstart}
  models: [a, a]
  headers: [{name: X-A, value: "1"}, {name: x-a, value: "2"}]
  timeouts: {request: 0s}
  backends:
  - providerRef: {name: mock}
    model: mock-chat
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata:
  name: clash
spec:
  listener: {port: 9090}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata:
  name: twice
spec:
  type: Mock
  endpoint: http://mock:1/v1
  models: [{name: m}, {name: m}]'
out="$(k apply -f - <<<"$dupes" 2>&1 || true)"
missing=""
for want in "model aliases must be unique" "header names must be unique (case-insensitive)" \
  "must be a duration greater than zero" "listener and admin ports must differ" \
  'spec.models[1]: Duplicate value'; do
  grep -qF "$want" <<<"$out" || missing="$missing [$want]"
done
if [[ -z "$missing" ]]; then ok "uniqueness, default-port and zero-timeout rules enforced by the apiserver"
else nok "apiserver did not report:$missing in: $out"; fi

# 3d. An MCPServer is either external (url) or run by the controller (run),
# never both; a Stdio server needs its command (crates/api mcp.rs messages).
both='apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: both
spec:
  gatewayRef: {name: quickstart}
  url: http://tools.example.com/mcp
  run: {image: "example/tools:1"}'
refused "MCPServer with url and run" "$both" 'spec' "exactly one of url and run must be set"
nocommand='apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: no-command
spec:
  gatewayRef: {name: quickstart}
  run: {image: "example/tools:1", transport: Stdio}'
refused "Stdio MCPServer without command" "$nocommand" 'spec.run' "a Stdio server needs command"

# 4. ServiceAccount token via TokenRequest, verified by TokenReview.
ns=tollgate-smoke sa=gateway
if k create namespace "$ns" >/dev/null && k -n "$ns" create serviceaccount "$sa" >/dev/null &&
  token="$(k -n "$ns" create token "$sa" --duration=10m)" && [[ -n "$token" ]]; then
  ok "kubectl create token $sa (${#token} bytes)"
else nok "kubectl create token"; token=""; fi

review="apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec:
  token: $token"
if r="$(k create -f - -o jsonpath='{.status.authenticated} {.status.user.username} {.status.audiences}' <<<"$review")" &&
  [[ "$r" == "true system:serviceaccount:$ns:$sa "* ]]; then
  ok "TokenReview: $r"
else nok "TokenReview: ${r:-error}"; fi

# 5. The token authenticates to the API itself and RBAC applies to it.
server="$(sed -n 's/^TOLLGATE_K8S_SERVER=//p' "$dir/env")"
ka() { "$bin/kubectl" --kubeconfig /dev/null --server "$server" \
  --certificate-authority "$dir/pki/ca.crt" --token "$token" --request-timeout=30s "$@"; }
if who="$(ka auth whoami -o jsonpath='{.status.userInfo.username}')" &&
  [[ "$who" == "system:serviceaccount:$ns:$sa" ]]; then
  ok "SA token authenticates as $who"
else nok "SA token whoami: ${who:-error}"; fi
if out="$(ka -n "$ns" get secrets 2>&1)"; then
  nok "RBAC: SA could list secrets"
elif grep -q Forbidden <<<"$out"; then
  ok "RBAC: SA forbidden to list secrets"
else nok "RBAC: unexpected error: $out"; fi

# 6. The static admin token works too.
if [[ "$("$bin/kubectl" --kubeconfig "$dir/kubeconfig" --context envtest-token auth whoami \
  -o jsonpath='{.status.userInfo.username}')" == admin-token ]]; then
  ok "static admin token authenticates"
else nok "static admin token"; fi

# 7. helm runs and talks to the apiserver.
if hv="$("$bin/helm" version --short)" &&
  "$bin/helm" --kubeconfig "$dir/kubeconfig" list -A >/dev/null; then
  ok "helm $hv (helm list -A against the apiserver)"
else nok "helm"; fi
