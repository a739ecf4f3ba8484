#!/usr/bin/env bash
# shellcheck disable=SC2154  # bin, dir and repo are set by lib.sh
# Control-plane chaos against a real kube-apiserver: a controller and a
# gateway (out of cluster, as in docs/out-of-cluster.md) serve steady chat
# load (`tollgate-soak load`: 60% plain, 40% streams) while
#
#   1. the controller goes away for 8 s and comes back;
#   2. the kube-apiserver goes away for 8 s and comes back (same flags,
#      same etcd);
#
# Each phase counts the requests the clients saw fail (the data plane must
# not notice: zero), then proves the control path recovered: the gateway is
# connected again (AIGateway connectedGateways 1) and a route created after
# the outage is served.
#
#   TOLLGATE_BIN=target/release/tollgate SOAK_BIN=target/release/tollgate-soak tests/k8s/chaos.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # read by lib.sh
suite=chaos
# shellcheck source=lib.sh
source "$here/lib.sh"
tollgate="${TOLLGATE_BIN:-$repo/target/release/tollgate}"
soak="${SOAK_BIN:-$repo/target/release/tollgate-soak}"
for b in "$tollgate" "$soak"; do
  [[ -x "$b" ]] || { log "no binary at $b: cargo build --release -p tollgate-cli -p tollgate-bench"; exit 1; }
done
down_seconds="${DOWN_SECONDS:-8}"

start_cluster
k() { "$bin/kubectl" --request-timeout=10s "$@"; }

mapfile -t ports < <(free_ports 5)
mock_port="${ports[0]}" config_port="${ports[1]}" metrics_port="${ports[2]}" listen_port="${ports[3]}" admin_port="${ports[4]}"
ns=chaos gw=edge key="tg-chaos-$(openssl rand -hex 8)"

k apply --server-side -f "$repo/crds/" >/dev/null
k wait --for=condition=Established --timeout=60s crd/aigateways.tollgate.dev crd/airoutes.tollgate.dev >/dev/null
"$tollgate" mock --listen "127.0.0.1:$mock_port" --ttft-ms 5 --token-delay-ms 2 --output-tokens 8 >/dev/null 2>"$dir/mock.log" &
pids+=($!)
route() { # NAME ALIAS
  printf 'apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: %s, namespace: %s}\nspec:\n  gatewayRef: {name: %s}\n  models: [%s]\n  backends: [{providerRef: {name: mock}, model: mock-chat}]\n' "$1" "$ns" "$gw" "$2"
}
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: $ns}
stringData: {client: "$key"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: $gw, namespace: $ns}
spec:
  apiKeys: [{secretRef: {name: keys, key: client}, principal: {user: chaos}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock, namespace: $ns}
spec: {type: Mock, endpoint: "http://127.0.0.1:$mock_port/v1"}
---
$(route chat chat)
YAML

controller_pid=""
start_controller() {
  "$tollgate" controller --config-listen "127.0.0.1:$config_port" --controller-url "https://127.0.0.1:$config_port" \
    --metrics-listen "127.0.0.1:$metrics_port" --tls-secret tollgate-controller-tls --tls-secret-namespace "$ns" \
    >>"$dir/controller.log" 2>&1 &
  controller_pid=$!
  pids+=("$controller_pid")
}
# until_ok SECONDS CMD...: retries CMD every 0.2 s; fails after SECONDS.
until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}
healthy() { curl -fsS -o /dev/null --max-time 2 "$1"; }
start_controller
until_ok 60 healthy "http://127.0.0.1:$metrics_port/readyz" || { nok "controller never ready"; exit 1; }
until_ok 60 bash -c "'$bin/kubectl' -n $ns get configmap tollgate-$gw-controller-ca -o jsonpath='{.data.ca\.crt}' >'$dir/ca.crt' && grep -q 'BEGIN CERT' '$dir/ca.crt'"
until_ok 60 bash -c "'$bin/kubectl' -n $ns create token tollgate-$gw --audience tollgate.dev/controller --duration 1h >'$dir/token' && test -s '$dir/token'"
"$tollgate" gateway --controller "https://127.0.0.1:$config_port" --gateway "$ns/$gw" \
  --controller-token-file "$dir/token" --controller-ca-file "$dir/ca.crt" --pod-name chaos-gateway \
  --listen "127.0.0.1:$listen_port" --admin-listen "127.0.0.1:$admin_port" >"$dir/gateway.log" 2>&1 &
pids+=($!)
if until_ok 60 healthy "http://127.0.0.1:$admin_port/readyz"; then ok "controller and gateway up; the gateway holds its first configuration"
else nok "gateway never ready"; exit 1; fi

connected() { [[ "$(k -n "$ns" get aigateway "$gw" -o jsonpath='{.status.connectedGateways}')" == 1 ]]; }
served() { # ALIAS
  [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$listen_port/v1/chat/completions" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")" == 200 ]]
}
until_ok 30 connected || nok "connectedGateways never 1 before the chaos"

# phase NAME DOWN_CMD UP_CMD: load over the outage; failures counted.
phase() {
  local name="$1" down="$2" up="$3" seconds=$((down_seconds + 14)) result ok_n failed_n
  "$soak" load --target "127.0.0.1:$listen_port" --key "$key" --model chat --seconds "$seconds" --concurrency 4 \
    >"$dir/load-$name.json" 2>"$dir/load-$name.log" &
  local load_pid=$!
  sleep 3
  "$down"
  sleep "$down_seconds"
  "$up"
  wait "$load_pid" || true
  result="$(cat "$dir/load-$name.json")"
  ok_n="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$result" 2>/dev/null || echo 0)"
  failed_n="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["failed"])' "$result" 2>/dev/null || echo -1)"
  if [[ "$failed_n" == 0 && "$ok_n" -gt 0 ]]; then
    ok "$name down ${down_seconds}s under load: $ok_n requests served, 0 failed"
  else nok "$name down under load: $result"; fi
}

controller_down() { kill -TERM "$controller_pid"; wait "$controller_pid" 2>/dev/null || true; }
controller_up() { start_controller; until_ok 60 healthy "http://127.0.0.1:$metrics_port/readyz"; }
phase controller controller_down controller_up
if until_ok 30 connected; then ok "after the controller came back the gateway is connected again (connectedGateways 1)"
else nok "the gateway did not reconnect to the restarted controller"; fi
route after-controller after-controller | k apply -f - >/dev/null
if until_ok 30 served after-controller; then ok "a route created after the controller outage is served"
else nok "route after-controller not served"; fi

apiserver_cmd=()
apiserver_down() {
  local pid
  pid="$(cat "$dir/kube-apiserver.pid")"
  mapfile -d '' -t apiserver_cmd <"/proc/$pid/cmdline"
  kill -TERM "$pid"
  until_ok 30 bash -c "! kill -0 $pid" || kill -KILL "$pid"
}
apiserver_up() {
  setsid "${apiserver_cmd[@]}" >>"$dir/kube-apiserver.log" 2>&1 </dev/null &
  echo "$!" >"$dir/kube-apiserver.pid"
  until_ok 60 "$here/envtest.sh" status "$dir"
}
phase kube-apiserver apiserver_down apiserver_up
route after-apiserver after-apiserver | k apply -f - >/dev/null
if until_ok 60 served after-apiserver; then ok "a route created after the apiserver outage is served (the controller's watches resumed)"
else nok "route after-apiserver not served"; fi
if until_ok 30 connected; then ok "connectedGateways 1 after the apiserver outage"
else nok "connectedGateways not 1 after the apiserver outage"; fi
