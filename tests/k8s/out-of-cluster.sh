#!/usr/bin/env bash
# shellcheck disable=SC2154  # bin, dir and repo are set by lib.sh
# docs/out-of-cluster.md, run: scripts/out-of-cluster.sh against a real
# kube-apiserver (no nodes: nothing runs in the "cluster" but the API), with
# the mock provider as a local process. Checks that a chat completion goes
# through the laptop gateway, that the AIGateway's status counts it
# (connectedGateways 1), that everything listens on loopback only, that
# stopping the script stops both processes, and that their logs, written to
# files, carry no colour codes. A provider that refuses connections opens
# its circuit breaker on the gateway, which the ModelProvider's status shows
# (condition CircuitClosed False/CircuitOpen, column Circuit), and closes
# again once the provider answers. A route reads prompt context from a
# ConfigMap: a missing one shows in its status, an edit reaches requests.
#
#   TOLLGATE_BIN=target/debug/tollgate tests/k8s/out-of-cluster.sh   # last line: "out-of-cluster: N passed, N failed"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # read by lib.sh
suite=out-of-cluster
# shellcheck source=lib.sh
source "$here/lib.sh"
tollgate="${TOLLGATE_BIN:-$repo/target/debug/tollgate}"
[[ -x "$tollgate" ]] || { log "no tollgate binary at $tollgate: make build, or set TOLLGATE_BIN"; exit 1; }

start_cluster
k() { "$bin/kubectl" --request-timeout=30s "$@"; }

mapfile -t ports < <(free_ports 6)
mock_port="${ports[0]}" config_port="${ports[1]}" metrics_port="${ports[2]}" listen_port="${ports[3]}" admin_port="${ports[4]}"
# Nothing listens here until the recovery step: connections are refused.
flaky_port="${ports[5]}"
ns=out-of-cluster gw=edge

# The cluster side: CRDs, then an AIGateway whose provider is the local mock.
if k apply --server-side -f "$repo/crds/" >/dev/null &&
  k wait --for=condition=Established --timeout=60s crd/aigateways.tollgate.dev crd/modelproviders.tollgate.dev crd/airoutes.tollgate.dev >/dev/null; then
  ok "CRDs applied and Established"
else nok "CRDs applied"; fi
"$tollgate" mock --listen "127.0.0.1:$mock_port" >/dev/null 2>"$dir/mock.log" &
pids+=($!)
config="apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: v1
kind: Secret
metadata: {name: $gw-keys, namespace: $ns}
stringData: {client: tg-test-key}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: $gw, namespace: $ns}
spec:
  apiKeys:
  - secretRef: {name: $gw-keys, key: client}
    principal: {user: laptop}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock, namespace: $ns}
spec: {type: Mock, endpoint: \"http://127.0.0.1:$mock_port/v1\"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [chat]
  backends: [{providerRef: {name: mock}, model: mock-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: flaky, namespace: $ns}
spec:
  type: Mock
  endpoint: \"http://127.0.0.1:$flaky_port/v1\"
  circuitBreaker: {consecutiveFailures: 1, openFor: 2s}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: resilient, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [resilient]
  backends:
  - {providerRef: {name: flaky}, model: mock-chat, priority: 0}
  - {providerRef: {name: mock}, model: mock-chat, priority: 1}"
if k apply -f - <<<"$config" >/dev/null; then ok "AIGateway $ns/$gw, its key, a Mock provider at 127.0.0.1:$mock_port and an AIRoute applied"
else nok "applying the test configuration"; fi

# The guide's script, as a user runs it, until it says ready (its own waits
# are bounded by WAIT_SECONDS; this bound covers them all).
started=$SECONDS
KUBECONFIG="$KUBECONFIG" KUBECTL="$bin/kubectl" TOLLGATE_BIN="$tollgate" NAMESPACE="$ns" GATEWAY="$gw" \
  CONFIG_PORT="$config_port" METRICS_PORT="$metrics_port" LISTEN_PORT="$listen_port" ADMIN_PORT="$admin_port" \
  WAIT_SECONDS=30 WORK_DIR="$dir/work" TOLLGATE_LOG=info \
  "$repo/scripts/out-of-cluster.sh" 2>"$dir/script.log" &
script_pid=$!
pids+=("$script_pid")
ready=0
for _ in $(seq 1 450); do
  if grep -q '^out-of-cluster: ready:' "$dir/script.log"; then ready=1; break; fi
  kill -0 "$script_pid" 2>/dev/null || break
  sleep 0.2
done
if ((ready)); then ok "scripts/out-of-cluster.sh ready in $((SECONDS - started))s: $(grep -c '^out-of-cluster:' "$dir/script.log") steps logged"
else nok "scripts/out-of-cluster.sh never got ready"; sed 's/^/    | /' "$dir/script.log" | tail -n 30; fi

# A chat completion through the laptop gateway, served by the mock.
if body="$(curl -fsS --max-time 10 "http://127.0.0.1:$listen_port/v1/chat/completions" \
  -H 'Authorization: Bearer tg-test-key' -H 'Content-Type: application/json' \
  -d '{"model":"chat","messages":[{"role":"user","content":"Hello!"}]}')" &&
  python3 -c 'import json,sys; b=json.loads(sys.argv[1]); assert b["choices"][0]["message"]["content"] and b["model"]=="mock-chat", b' "$body"; then
  ok "chat completion through the gateway at 127.0.0.1:$listen_port (model chat -> mock-chat)"
else nok "chat completion: ${body:-no response}"; fi
if code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$listen_port/v1/chat/completions" \
  -H 'Content-Type: application/json' -d '{"model":"chat","messages":[]}')" && [[ "$code" == 401 ]]; then
  ok "without the key: 401 (the pushed configuration carries the AIGateway's keys)"
else nok "without the key: ${code:-no response}"; fi

# The AIGateway's status counts the laptop gateway.
connected=""
for _ in $(seq 1 100); do
  connected="$(k -n "$ns" get aigateway "$gw" -o jsonpath='{.status.connectedGateways}')" || true
  [[ "$connected" == 1 ]] && break
  sleep 0.2
done
if [[ "$connected" == 1 ]]; then ok "AIGateway $ns/$gw status: connectedGateways 1"
else nok "AIGateway $ns/$gw status: connectedGateways '${connected}'"; fi

# Acknowledged by the laptop gateway: the AIGateway is Programmed.
if k -n "$ns" wait --for=condition=Programmed "aigateway/$gw" --timeout=20s >/dev/null; then
  ok "AIGateway $ns/$gw Programmed=True once the laptop gateway acknowledged its configuration"
else nok "AIGateway $ns/$gw not Programmed: $(k -n "$ns" get aigateway "$gw" -o jsonpath='{.status.conditions}')"; fi

# Circuit breaker in ModelProvider status: `flaky` refuses connections, so
# one request through `resilient` opens its breaker (and is answered by the
# fallback); the gateway reports it and the controller writes the status.
resilient() {
  curl -fsS -o /dev/null --max-time 10 "http://127.0.0.1:$listen_port/v1/chat/completions" \
    -H 'Authorization: Bearer tg-test-key' -H 'Content-Type: application/json' \
    -d '{"model":"resilient","messages":[{"role":"user","content":"Hello!"}]}'
}
circuit_reason() { k -n "$ns" get modelprovider flaky -o jsonpath='{.status.conditions[?(@.type=="CircuitClosed")].reason}' 2>/dev/null || true; }
if resilient; then ok "a request to the route whose first backend refuses connections is answered by the fallback"
else nok "a request through route resilient failed"; fi
reason="" started=$SECONDS
for _ in $(seq 1 100); do
  reason="$(circuit_reason)"
  [[ "$reason" == CircuitOpen ]] && break
  # Once open for 2s the breaker is half-open: a request opens it again.
  [[ "$reason" == CircuitHalfOpen ]] && resilient
  sleep 0.2
done
message="$(k -n "$ns" get modelprovider flaky -o jsonpath='{.status.conditions[?(@.type=="CircuitClosed")].message}' || true)"
if [[ "$reason" == CircuitOpen && "$message" == "circuit open on 1 of 1 gateway replicas ($ns/$gw):"* ]]; then
  ok "ModelProvider flaky: CircuitClosed False/CircuitOpen in $((SECONDS - started))s: $message"
else nok "ModelProvider flaky: CircuitClosed reason '${reason}': ${message:-no message}"; fi
row="$(k -n "$ns" get modelprovider flaky --no-headers -o custom-columns=C:.status.circuit 2>/dev/null || true)"
header="$(k -n "$ns" get modelprovider flaky 2>/dev/null | head -n1 || true)"
if [[ "$row" =~ ^(Open|HalfOpen)\ 1/1$ && "$header" == *CIRCUIT* ]]; then ok "kubectl get modelprovider has a CIRCUIT column: $row"
else nok "kubectl get modelprovider: circuit '${row}', header '${header}'"; fi
if [[ "$(k -n "$ns" get modelprovider mock -o jsonpath='{.status.circuit}/{.status.conditions[?(@.type=="CircuitClosed")].status}' || true)" == Closed/True ]]; then
  ok "ModelProvider mock (healthy): circuit Closed, CircuitClosed True"
else nok "ModelProvider mock: $(k -n "$ns" get modelprovider mock -o jsonpath='{.status}' || true)"; fi

# Recovery: `flaky` answers from now on; after openFor a request probes it,
# the probe succeeds, the breaker closes and the status follows.
"$tollgate" mock --listen "127.0.0.1:$flaky_port" >/dev/null 2>"$dir/flaky.log" &
pids+=($!)
reason="" started=$SECONDS
for _ in $(seq 1 60); do
  resilient || true
  reason="$(circuit_reason)"
  [[ "$reason" == CircuitClosed ]] && break
  sleep 0.5
done
if [[ "$reason" == CircuitClosed && "$(k -n "$ns" get modelprovider flaky -o jsonpath='{.status.circuit}' || true)" == Closed ]]; then
  ok "ModelProvider flaky: CircuitClosed True again $((SECONDS - started))s after it began answering"
else nok "ModelProvider flaky did not close: reason '${reason}'"; fi
if k -n "$ns" get events --field-selector involvedObject.name=flaky -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' 2>/dev/null |
  sort -u | paste -sd' ' | grep -q 'CircuitClosed.*CircuitOpen\|CircuitOpen.*CircuitClosed'; then
  ok "Events on ModelProvider flaky: a CircuitOpen Warning and a CircuitClosed recovery"
else nok "Events on flaky: $(k -n "$ns" get events --field-selector involvedObject.name=flaky -o jsonpath='{range .items[*]}{.type}/{.reason} {end}' || true)"; fi
# Prompt context from a ConfigMap: a route naming a missing one reports it
# in its status; once the ConfigMap exists its text reaches the prompt (the
# mock's echo repeats the last user message, here the injected context),
# and an edit to it reaches the next requests without touching the route.
ctx_route="apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: ctx, namespace: $ns}
spec:
  gatewayRef: {name: $gw}
  models: [ctx]
  backends: [{providerRef: {name: mock}, model: mock-chat}]
  prompts:
    context: [{configMapKeyRef: {name: refund-policy, key: text}, role: user}]"
policy() {
  k -n "$ns" create configmap refund-policy --from-literal=text="Refund policy, edition $1. [mock echo=1]" \
    --dry-run=client -o yaml | k apply --server-side --force-conflicts -f - >/dev/null
}
ctx_answer() {
  curl -fsS --max-time 10 "http://127.0.0.1:$listen_port/v1/chat/completions" \
    -H 'Authorization: Bearer tg-test-key' -H 'Content-Type: application/json' \
    -d '{"model":"ctx","messages":[{"role":"system","content":"Answer briefly."}]}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])' 2>/dev/null || true
}
k apply -f - <<<"$ctx_route" >/dev/null || true
reason=""
for _ in $(seq 1 100); do
  reason="$(k -n "$ns" get airoute ctx -o jsonpath='{.status.conditions[?(@.type=="ResolvedRefs")].reason}')" || true
  [[ "$reason" == ConfigMapNotFound ]] && break
  sleep 0.2
done
if [[ "$reason" == ConfigMapNotFound ]]; then ok "AIRoute ctx naming a missing ConfigMap: ResolvedRefs False/ConfigMapNotFound"
else nok "AIRoute ctx: ResolvedRefs reason '${reason}': $(k -n "$ns" get airoute ctx -o jsonpath='{.status.conditions}' || true)"; fi
# Waits (bounded) until route ctx answers with edition $1 of the policy.
await_edition() {
  answer=""
  for _ in $(seq 1 100); do
    answer="$(ctx_answer)"
    [[ "$answer" == "Refund policy, edition $1." ]] && return 0
    sleep 0.2
  done
  return 1
}
policy 1
if await_edition 1; then ok "ConfigMap created: its text is injected into route ctx's prompt"
else nok "route ctx after the ConfigMap was created answered '${answer}'"; fi
started=$SECONDS
policy 2
if await_edition 2; then ok "ConfigMap edited: the new text reaches route ctx's prompt in $((SECONDS - started))s, the route unchanged"
else nok "route ctx after the ConfigMap edit answered '${answer}'"; fi

# Loopback only: every port the two processes listen on is on 127.0.0.1.
if command -v ss >/dev/null; then
  exposed="$(ss -Hltn | awk -v ports=" $config_port $metrics_port $listen_port $admin_port " \
    '{n = split($4, a, ":"); if (index(ports, " " a[n] " ") && $4 !~ /^127\.0\.0\.1:/) print $4}')"
  if [[ -z "$exposed" ]]; then ok "controller and gateway listen on 127.0.0.1 only"
  else nok "listening beyond loopback: $exposed"; fi
fi

# Stopping the script stops both processes.
kill -TERM "$script_pid" 2>/dev/null || true
stopped=0
for _ in $(seq 1 100); do
  if ! kill -0 "$script_pid" 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
wait "$script_pid" 2>/dev/null || true
if ((stopped)) && ! curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$admin_port/healthz" &&
  ! curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$metrics_port/healthz"; then
  ok "SIGTERM to the script stopped the controller and the gateway"
else nok "after SIGTERM the script or its processes still run"; fi

# Logs written to files carry no colour codes (stderr is not a terminal).
if [[ -s "$dir/work/controller.log" && -s "$dir/work/gateway.log" ]] &&
  ! grep -q $'\e\[' "$dir/work/controller.log" "$dir/work/gateway.log"; then
  ok "controller and gateway logs in files: $(cat "$dir/work/controller.log" "$dir/work/gateway.log" | wc -l) lines, no ANSI escape codes"
else nok "controller/gateway logs missing or coloured: $(grep -l $'\e\[' "$dir/work/"*.log 2>/dev/null | paste -sd' ')"; fi

# The guide shows what the script does.
guide="$repo/docs/out-of-cluster.md"
missing=()
for want in "scripts/out-of-cluster.sh" "--config-listen" "--controller-url" "--metrics-listen" "--tls-secret-namespace" \
  "--controller-token-file" "--controller-ca-file" "--audience tollgate.dev/controller" "controller-ca"; do
  grep -qF -- "$want" "$guide" || missing+=("$want")
done
if ((${#missing[@]} == 0)) && grep -qF "docs/out-of-cluster.md" "$repo/README.md"; then
  ok "docs/out-of-cluster.md names the script and each step's flags; README.md links it"
else nok "docs/out-of-cluster.md lacks: ${missing[*]} (or README.md does not link it)"; fi
