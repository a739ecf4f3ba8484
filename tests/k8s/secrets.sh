#!/usr/bin/env bash
# shellcheck disable=SC2154  # bin, dir and repo are set by lib.sh
# Secrets hygiene and least privilege, proven against a real kube-apiserver:
#
#   1. The chart's objects in tollgate-system; the controller runs out of
#      cluster (scripts/out-of-cluster.sh) with a token of ITS OWN
#      ServiceAccount, so it has exactly the chart's rights (leader election
#      and its TLS Secret included), and serves one AIGateway in team-a whose
#      client keys and provider credentials live in Secrets. The gateway
#      subscribes with its ServiceAccount's token, as its pods would.
#   2. Traffic and churn that make every credential pass through: chat and
#      streams on an OpenAI-type and an Anthropic-type provider (the mock
#      checks their keys), a wrong client key, a provider whose key the mock
#      refuses, a client key rotated in its Secret (old refused, new served),
#      a key minted with `tollgate keys create` (a labelled Secret, no
#      AIGateway edit), and a Secret reference that does not resolve (a
#      Warning Event).
#   3. The sweep: every credential of the run (client keys old and new,
#      provider keys, the wrong key, both ServiceAccount tokens) is searched
#      for, whole and by its random part, in the controller's and gateway's
#      logs (debug level), both /metrics, every gateway admin response, the
#      status of every Tollgate object, every Event, and every response a
#      client got. A planted value first proves the sweep finds one.
#   4. kubectl auth can-i --list: the controller's ServiceAccount holds
#      exactly tests/k8s/rbac/controller-*.txt; the gateway's ServiceAccount
#      (made by the controller) holds nothing beyond what every
#      ServiceAccount holds.
#
#   tests/k8s/secrets.sh      # last line: "secrets: N passed, N failed"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # read by lib.sh
suite=secrets
# shellcheck source=lib.sh
source "$here/lib.sh"
tollgate="${TOLLGATE_BIN:-$repo/target/debug/tollgate}"
[[ -x "$tollgate" ]] || { log "no tollgate binary at $tollgate: make build, or set TOLLGATE_BIN"; exit 1; }

start_cluster
k() { "$bin/kubectl" --request-timeout=30s "$@"; }

mapfile -t ports < <(free_ports 5)
mock_port="${ports[0]}" config_port="${ports[1]}" metrics_port="${ports[2]}" listen_port="${ports[3]}" admin_port="${ports[4]}"
system=tollgate-system controller_sa=tollgate-controller
ns=team-a gw=edge gateway_sa="tollgate-$gw"
evidence="$dir/evidence"   # everything the sweep reads
mkdir -p "$evidence"

# Every credential is random per run, so a hit can only be a leak of this run.
random() { openssl rand -hex 12; }
client_key="tg-sweep-client-$(random)"
rotated_key="tg-sweep-rotated-$(random)"
openai_key="sk-sweep-openai-$(random)"
anthropic_key="sk-ant-sweep-$(random)"
wrong_key="sk-sweep-wrong-$(random)"

# ---------------------------------------------------------------- 1. install

helm_render="$dir/chart.yaml"
if k apply --server-side -f "$repo/crds/" >/dev/null &&
  k wait --for=condition=Established --timeout=60s crd/aigateways.tollgate.dev crd/modelproviders.tollgate.dev crd/airoutes.tollgate.dev >/dev/null &&
  k create namespace "$system" >/dev/null &&
  "$bin/helm" template tollgate "$repo/charts/tollgate" --namespace "$system" >"$helm_render" &&
  k apply --server-side -f "$helm_render" >/dev/null; then
  ok "CRDs and the chart (helm template -n $system) applied"
else nok "CRDs and chart applied"; fi

# The controller's own kubeconfig: the apiserver's address and CA, its token.
controller_token="$(k -n "$system" create token "$controller_sa" --duration 1h)"
server="$(sed -n 's/^TOLLGATE_K8S_SERVER=//p' "$dir/env")"
controller_kubeconfig="$dir/controller.kubeconfig"
KUBECONFIG="$controller_kubeconfig" k config set-cluster envtest --server "$server" \
  --certificate-authority "$dir/pki/ca.crt" --embed-certs >/dev/null
KUBECONFIG="$controller_kubeconfig" k config set-credentials "$controller_sa" --token "$controller_token" >/dev/null
KUBECONFIG="$controller_kubeconfig" k config set-context controller --cluster envtest --user "$controller_sa" >/dev/null
KUBECONFIG="$controller_kubeconfig" k config use-context controller >/dev/null
if [[ "$(KUBECONFIG="$controller_kubeconfig" k auth whoami -o jsonpath='{.status.userInfo.username}')" == "system:serviceaccount:$system:$controller_sa" ]]; then
  ok "controller kubeconfig authenticates as system:serviceaccount:$system:$controller_sa"
else nok "controller kubeconfig identity"; fi

"$tollgate" mock --listen "127.0.0.1:$mock_port" --openai-key "$openai_key" --anthropic-key "$anthropic_key" \
  >/dev/null 2>"$evidence/mock.log" &
pids+=($!)

manifests() { # CLIENT_KEY
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: v1
kind: Secret
metadata: {name: client-keys, namespace: $ns}
stringData: {client: "$1"}
---
apiVersion: v1
kind: Secret
metadata: {name: providers, namespace: $ns}
stringData: {openai: "$openai_key", anthropic: "$anthropic_key", wrong: "$wrong_key"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: $gw, namespace: $ns}
spec:
  apiKeys:
  - secretRef: {name: client-keys, key: client}
    principal: {user: sweeper, team: security}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: openai, namespace: $ns}
spec:
  type: OpenAI
  endpoint: "http://127.0.0.1:$mock_port/v1"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: providers, key: openai}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: anthropic, namespace: $ns}
spec:
  type: Anthropic
  endpoint: "http://127.0.0.1:$mock_port/v1"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: providers, key: anthropic}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: refused, namespace: $ns}
spec:
  type: OpenAI
  endpoint: "http://127.0.0.1:$mock_port/v1"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: providers, key: wrong}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: dangling, namespace: $ns}
spec:
  type: OpenAI
  endpoint: "http://127.0.0.1:$mock_port/v1"
  network: {allowLoopback: true}
  credentials: {secretRef: {name: providers, key: no-such-key}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [chat]
  backends: [{providerRef: {name: openai}, model: mock-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: claude, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [claude]
  backends: [{providerRef: {name: anthropic}, model: mock-claude}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: refused, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [refused]
  backends: [{providerRef: {name: refused}, model: mock-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: dangling, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [dangling]
  backends: [{providerRef: {name: dangling}, model: mock-chat}]
YAML
}
if manifests "$client_key" | k apply -f - >/dev/null; then ok "team-a: AIGateway, 2 Secrets, 4 ModelProviders, 4 AIRoutes applied"
else nok "team-a manifests applied"; fi

# The controller (as its ServiceAccount, electing a leader and keeping its
# TLS Secret in tollgate-system) and the gateway, through the guide's script.
started=$SECONDS
KUBECONFIG="$KUBECONFIG" KUBECTL="$bin/kubectl" TOLLGATE_BIN="$tollgate" NAMESPACE="$ns" GATEWAY="$gw" \
  CONTROLLER_KUBECONFIG="$controller_kubeconfig" POD_NAMESPACE="$system" \
  TLS_SECRET=tollgate-controller-tls TLS_SECRET_NAMESPACE="$system" \
  CONFIG_PORT="$config_port" METRICS_PORT="$metrics_port" LISTEN_PORT="$listen_port" ADMIN_PORT="$admin_port" \
  WAIT_SECONDS=60 WORK_DIR="$dir/work" TOLLGATE_LOG=debug \
  "$repo/scripts/out-of-cluster.sh" 2>"$dir/script.log" &
script_pid=$!
pids+=("$script_pid")
ready=0
for _ in $(seq 1 600); do
  if grep -q '^out-of-cluster: ready:' "$dir/script.log"; then ready=1; break; fi
  kill -0 "$script_pid" 2>/dev/null || break
  sleep 0.2
done
if ((ready)); then ok "controller (its own ServiceAccount) and gateway ready in $((SECONDS - started))s"
else nok "controller and gateway never got ready"; sed 's/^/    | /' "$dir/script.log" | tail -n 30; fi
gateway_token="$(cat "$dir/work/token" 2>/dev/null || true)"
if [[ "$(k -n "$system" get lease tollgate-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" != "" ]]; then
  ok "the controller holds Lease $system/tollgate-controller"
else nok "no leader Lease in $system"; fi

# ---------------------------------------------------------------- 2. traffic

api="http://127.0.0.1:$listen_port"
call() { # KEY PATH BODY [extra curl args...] -> status; head and body go to the evidence
  local key="$1" path="$2" body="$3" out
  shift 3
  # Called in $(...): a counter would not survive, a unique file does.
  out="$(mktemp "$evidence/response-XXXXXX")"
  curl -sS -o "$out.body" -D "$out.head" -w '%{http_code}' --max-time 20 \
    "$api$path" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "$@" -d "$body" || echo 000
}
chat='{"model":"chat","messages":[{"role":"user","content":"Hello!"}]}'
stream='{"model":"chat","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'
claude='{"model":"claude","max_tokens":32,"messages":[{"role":"user","content":"Hello!"}]}'
claude_stream='{"model":"claude","max_tokens":32,"stream":true,"messages":[{"role":"user","content":"Hello!"}]}'
statuses="$(call "$client_key" /v1/chat/completions "$chat") $(call "$client_key" /v1/chat/completions "$stream")"
statuses+=" $(call "$client_key" /v1/messages "$claude" -H 'anthropic-version: 2023-06-01')"
statuses+=" $(call "$client_key" /v1/messages "$claude_stream" -H 'anthropic-version: 2023-06-01')"
statuses+=" $(call "$client_key" /v1/chat/completions "$chat" -H "x-api-key: $client_key")"
if [[ "$statuses" == "200 200 200 200 200" ]]; then ok "chat, stream, messages, messages stream: 200 through keyed providers"
else nok "keyed traffic statuses: $statuses"; fi
wrong="$(call "$wrong_key" /v1/chat/completions "$chat")"
refused="$(call "$client_key" /v1/chat/completions "${chat/\"chat\"/\"refused\"}")"
dangling="$(call "$client_key" /v1/chat/completions "${chat/\"chat\"/\"dangling\"}")"
if [[ "$wrong $refused $dangling" == "401 502 404" ]] &&
  grep -qF "rejected the gateway's credentials" "$evidence"/response-*.body; then
  ok "wrong client key 401; the provider refusing the gateway's key 502 (says so); route on a dangling Secret key not served (404)"
else nok "error statuses (want 401 502 404): $wrong $refused $dangling"; fi

# served_within_20s KEY: retries a chat with KEY until it is 200 (a config
# change on its way); prints the last status.
served_within_20s() {
  local got=""
  for _ in $(seq 1 100); do
    got="$(call "$1" /v1/chat/completions "$chat")"
    [[ "$got" == 200 ]] && break
    sleep 0.2
  done
  echo "$got"
}

# Rotation: the client key changes in its Secret; the old one stops working.
k -n "$ns" patch secret client-keys --type merge -p "{\"stringData\":{\"client\":\"$rotated_key\"}}" >/dev/null
rotated="$(served_within_20s "$rotated_key")"
old="$(call "$client_key" /v1/chat/completions "$chat")"
if [[ "$rotated $old" == "200 401" ]]; then ok "client key rotated in its Secret: new key 200, old key 401"
else nok "rotation (want 200 401): $rotated $old"; fi

# A key minted as a labelled Secret (`tollgate keys create`), no AIGateway edit.
minted_key=""
if "$tollgate" keys create --gateway "$gw" -n "$ns" --team security --app sweeper --expires-in 1d \
  2>"$dir/minted.err" | k apply -f - >/dev/null; then
  minted_key="$(sed -n 's/^key: //p' "$dir/minted.err")"
fi
minted="$(served_within_20s "$minted_key")"
if [[ -n "$minted_key" && "$minted" == 200 ]]; then ok "a key minted by tollgate keys create (a labelled Secret) is served through the controller"
else nok "minted key: ${minted:-no answer}"; fi

# A Warning Event names the dangling reference.
warned=0
for _ in $(seq 1 100); do
  if k -n "$ns" get events -o jsonpath='{range .items[*]}{.type} {.reason} {.message}{"\n"}{end}' 2>/dev/null |
    grep -q '^Warning .*no-such-key'; then warned=1; break; fi
  sleep 0.2
done
if ((warned)); then ok "Warning Event for the Secret key that does not exist"
else nok "no Warning Event naming no-such-key"; fi

# ---------------------------------------------------------------- 3. sweep

# Everything observable, into the evidence directory.
for path in /metrics /config /readyz /healthz; do
  curl -sS --max-time 10 "http://127.0.0.1:$admin_port$path" >"$evidence/gateway-admin${path//\//-}.txt" || true
done
for path in /metrics /readyz /healthz; do
  curl -sS --max-time 10 "http://127.0.0.1:$metrics_port$path" >"$evidence/controller${path//\//-}.txt" || true
done
k get aigateways,modelproviders,airoutes -A -o yaml >"$evidence/tollgate-objects.yaml"
k get events -A -o yaml >"$evidence/events-core.yaml"
k get events.events.k8s.io -A -o yaml >"$evidence/events.yaml"
cp "$dir/work/controller.log" "$dir/work/gateway.log" "$dir/script.log" "$evidence/" 2>/dev/null || true

# sweep NEEDLE...: prints "file: what" for each needle found (no values).
sweep() {
  local needle
  for needle in "$@"; do
    grep -rlF -- "$needle" "$evidence" 2>/dev/null | sed "s|^$evidence/||; s|\$|: ${needle:0:6}…|" || true
  done
}
# Each credential whole and by its random part (whole or its first 16
# characters): a truncated or re-prefixed leak is caught as well.
needles=()
for secret in "$client_key" "$rotated_key" "$openai_key" "$anthropic_key" "$wrong_key" "$minted_key"; do
  [[ -n "$secret" ]] || continue
  random_part="${secret##*-}"
  needles+=("$secret" "$random_part" "${random_part:0:16}")
done
for token in "$controller_token" "$gateway_token"; do
  [[ -n "$token" ]] && needles+=("$token" "${token##*.}")
done

# The sweep finds a planted value (or it proves nothing).
echo "planted ${openai_key##*-}" >"$evidence/planted.txt"
if [[ "$(sweep "${needles[@]}")" == *planted.txt* ]]; then ok "the sweep finds a planted provider key"
else nok "the sweep misses a planted value"; fi
rm -f "$evidence/planted.txt"

lines=$(cat "$evidence"/*.log | wc -l)
files=$(find "$evidence" -type f | wc -l)
debug_lines=$(grep -c 'DEBUG' "$evidence/gateway.log" "$evidence/controller.log" | awk -F: '{s += $2} END {print s + 0}')
leaks="$(sweep "${needles[@]}" | sort -u)"
if [[ -z "$leaks" && $lines -gt 50 && $debug_lines -gt 0 && -s "$evidence/events.yaml" && -s "$evidence/gateway-admin-metrics.txt" ]]; then
  ok "no credential (${#needles[@]} needles) in $files files: $lines log lines ($debug_lines at debug), metrics, admin responses, statuses, Events, client responses"
else nok "credentials found (or too little evidence: $lines log lines, $debug_lines debug):"; sed 's/^/    | /' <<<"$leaks"; fi

# ---------------------------------------------------------------- 4. RBAC

# can-i --list, normalised: the table without its header, runs of blanks as
# one space, sorted (kubectl prints [] for an empty column).
rights() { # AS NAMESPACE
  k auth can-i --list --as="$1" -n "$2" 2>/dev/null | tail -n +2 | sed -E 's/[[:space:]]+/ /g; s/^ //; s/ $//' | sort
}
controller_as="system:serviceaccount:$system:$controller_sa"
for where in "$ns" "$system"; do
  golden="$here/rbac/controller-$([[ $where == "$system" ]] && echo release || echo other)-namespace.txt"
  got="$(rights "$controller_as" "$where")"
  if [[ "${UPDATE_GOLDEN:-}" == 1 ]]; then printf '%s\n' "$got" >"$golden"; fi
  if diff -u "$golden" <(printf '%s\n' "$got") >"$dir/rbac.diff"; then
    ok "kubectl auth can-i --list as the controller in $where: exactly $(basename "$golden") ($(wc -l <<<"$got") rules)"
  else nok "controller rights in $where differ from $(basename "$golden") (UPDATE_GOLDEN=1 to accept):"; sed 's/^/    | /' "$dir/rbac.diff"; fi
done
# The gateway's ServiceAccount exists (the controller made it) and holds what
# a ServiceAccount nobody granted anything holds: no Secret, no API object.
if k -n "$ns" get serviceaccount "$gateway_sa" >/dev/null 2>&1; then
  gateway_rights="$(rights "system:serviceaccount:$ns:$gateway_sa" "$ns")"
  baseline="$(rights "system:serviceaccount:$ns:granted-nothing" "$ns")"
  if [[ -n "$baseline" && "$gateway_rights" == "$baseline" ]] && ! grep -qE '^(secrets|\*)' <<<"$gateway_rights"; then
    ok "kubectl auth can-i --list as the gateway ($ns/$gateway_sa): only what every ServiceAccount holds ($(wc -l <<<"$gateway_rights") rules, none on Secrets)"
  else nok "the gateway's ServiceAccount holds more than the baseline:"; diff <(printf '%s\n' "$baseline") <(printf '%s\n' "$gateway_rights") | sed 's/^/    | /'; fi
else nok "the controller made no ServiceAccount $ns/$gateway_sa"; fi
