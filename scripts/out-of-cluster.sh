#!/usr/bin/env bash
# Runs the Tollgate controller and one gateway on this machine against the
# cluster in KUBECONFIG, exactly as docs/out-of-cluster.md describes, step by
# step; tests/k8s/out-of-cluster.sh runs it against a real kube-apiserver so
# the guide cannot rot. Everything listens on loopback only. Runs until
# Ctrl-C (or SIGTERM); both processes are stopped on exit.
#
#   KUBECONFIG=~/.kube/config GATEWAY=quickstart NAMESPACE=tollgate-quickstart scripts/out-of-cluster.sh
#
# Settings (environment):
#   TOLLGATE_BIN    the tollgate binary (default: target/debug/tollgate, else tollgate on PATH)
#   KUBECTL         kubectl (default: kubectl)
#   NAMESPACE       namespace of the AIGateway (default: default)
#   GATEWAY         name of the AIGateway to serve (default: quickstart)
#   CONFIG_PORT     controller's configuration server, HTTPS (default: 8443)
#   METRICS_PORT    controller's /healthz, /readyz, /metrics (default: 9091)
#   LISTEN_PORT     gateway API (default: 8080)
#   ADMIN_PORT      gateway admin: /metrics, /healthz, /readyz (default: 9090)
#   TLS_SECRET      Secret for the controller's CA and certificate, created in
#                   TLS_SECRET_NAMESPACE (default: tollgate-controller-tls-local,
#                   so an in-cluster controller's Secret is left alone)
#   TLS_SECRET_NAMESPACE  namespace of that Secret (default: NAMESPACE)
#   CONTROLLER_KUBECONFIG the controller's own kubeconfig (default: KUBECONFIG);
#                   one holding its ServiceAccount's token runs it with exactly
#                   the chart's rights
#   TOKEN_DURATION  lifetime of the gateway's ServiceAccount token (default: 1h)
#   WAIT_SECONDS    bound of every wait (default: 60)
#   WORK_DIR        where the CA, token and logs go (default: a temp dir, removed on exit)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${TOLLGATE_BIN:-}"
if [[ -z "$bin" ]]; then
  if [[ -x "$repo/target/debug/tollgate" ]]; then bin="$repo/target/debug/tollgate"; else bin=tollgate; fi
fi
kubectl="${KUBECTL:-kubectl}"
ns="${NAMESPACE:-default}"
gateway="${GATEWAY:-quickstart}"
config_port="${CONFIG_PORT:-8443}"
metrics_port="${METRICS_PORT:-9091}"
listen_port="${LISTEN_PORT:-8080}"
admin_port="${ADMIN_PORT:-9090}"
tls_secret="${TLS_SECRET:-tollgate-controller-tls-local}"
tls_secret_namespace="${TLS_SECRET_NAMESPACE:-$ns}"
controller_env=()
[[ -n "${CONTROLLER_KUBECONFIG:-}" ]] && controller_env=("KUBECONFIG=$CONTROLLER_KUBECONFIG")
token_duration="${TOKEN_DURATION:-1h}"
wait_seconds="${WAIT_SECONDS:-60}"
# The controller names the gateway's objects after it (workload.rs).
sa="tollgate-$gateway"
ca_configmap="tollgate-$gateway-controller-ca"
# Loopback: the certificate is issued for this host, and nothing is exposed.
controller_url="https://127.0.0.1:$config_port"

log() { echo "out-of-cluster: $*" >&2; }
die() { log "$*"; exit 1; }
k() { "$kubectl" --request-timeout=30s -n "$ns" "$@"; }

if [[ -n "${WORK_DIR:-}" ]]; then
  work="$WORK_DIR" keep_work=1
  mkdir -p "$work"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-out-of-cluster.XXXXXX")" keep_work=0
fi
controller_pid="" gateway_pid=""
cleanup() {
  local rc=$?
  for pid in $gateway_pid $controller_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in $gateway_pid $controller_pid; do wait "$pid" 2>/dev/null || true; done
  if ((rc != 0)); then
    for f in controller gateway; do
      [[ -s "$work/$f.log" ]] && tail -n 20 "$work/$f.log" | sed "s/^/  $f| /" >&2
    done
  fi
  ((keep_work)) || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for DESCRIPTION CMD... : retries CMD every 0.2 s for WAIT_SECONDS.
wait_for() {
  local what="$1" deadline=$((SECONDS + wait_seconds))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${wait_seconds}s waiting for $what"
    for pid in $controller_pid $gateway_pid; do
      kill -0 "$pid" 2>/dev/null || die "a process exited while waiting for $what"
    done
    sleep 0.2
  done
}
healthy() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# 1. The cluster is reachable and holds the CRDs and the AIGateway.
command -v "$bin" >/dev/null || die "no tollgate binary at $bin (set TOLLGATE_BIN)"
k get crd aigateways.tollgate.dev >/dev/null || die "no Tollgate CRDs in the cluster: kubectl apply --server-side -f crds/"
k get aigateway "$gateway" >/dev/null || die "no AIGateway $ns/$gateway: apply one first"
log "cluster $("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}'), AIGateway $ns/$gateway"

# 2. The controller, from KUBECONFIG, with its configuration server on
#    loopback; the certificate it issues names 127.0.0.1 (the URL's host).
env "${controller_env[@]}" "$bin" controller \
  --config-listen "127.0.0.1:$config_port" \
  --controller-url "$controller_url" \
  --metrics-listen "127.0.0.1:$metrics_port" \
  --tls-secret "$tls_secret" --tls-secret-namespace "$tls_secret_namespace" \
  >"$work/controller.log" 2>&1 &
controller_pid=$!
wait_for "the controller to lead (http://127.0.0.1:$metrics_port/readyz)" healthy "http://127.0.0.1:$metrics_port/readyz"
log "controller leading; configuration server at $controller_url"

# 3. The CA the controller publishes next to the gateway (what the pods mount).
ca_ready() {
  k get configmap "$ca_configmap" -o jsonpath='{.data.ca\.crt}' >"$work/ca.crt" && grep -q 'BEGIN CERTIFICATE' "$work/ca.crt"
}
wait_for "ConfigMap $ns/$ca_configmap" ca_ready
log "CA from ConfigMap $ns/$ca_configmap -> $work/ca.crt"

# 4. A token of the gateway's ServiceAccount (created by the controller), for
#    the audience the configuration server accepts.
token() {
  k create token "$sa" --audience tollgate.dev/controller --duration "$token_duration" >"$work/token" && [[ -s "$work/token" ]]
}
wait_for "a token of ServiceAccount $ns/$sa" token
log "token of ServiceAccount $ns/$sa (audience tollgate.dev/controller, $token_duration) -> $work/token"

# 5. The gateway, subscribed to the controller as its pods would be.
"$bin" gateway \
  --controller "$controller_url" \
  --gateway "$ns/$gateway" \
  --controller-token-file "$work/token" \
  --controller-ca-file "$work/ca.crt" \
  --pod-name "out-of-cluster-${HOSTNAME:-laptop}" \
  --listen "127.0.0.1:$listen_port" \
  --admin-listen "127.0.0.1:$admin_port" \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
# Ready once the first configuration snapshot arrived.
wait_for "the gateway's first configuration (http://127.0.0.1:$admin_port/readyz)" healthy "http://127.0.0.1:$admin_port/readyz"

log "ready: gateway http://127.0.0.1:$listen_port (admin http://127.0.0.1:$admin_port), controller $controller_url (metrics http://127.0.0.1:$metrics_port/metrics); logs in $work. Ctrl-C stops both."
# Either process ending ends the run (and the trap stops the other).
wait -n "$controller_pid" "$gateway_pid" || true
die "a process exited"
