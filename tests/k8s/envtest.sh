#!/usr/bin/env bash
# A real Kubernetes API (etcd + kube-apiserver, no nodes, no controllers) for
# end-to-end tests, in the manner of controller-runtime's envtest.
#
#   tests/k8s/envtest.sh start DIR   # start; prints KEY=VALUE lines (also in DIR/env)
#   tests/k8s/envtest.sh stop DIR    # stop both processes (pids in DIR)
#   tests/k8s/envtest.sh status DIR  # exit 0 if the apiserver is ready
#
# A watchdog stops the processes by itself after TOLLGATE_K8S_MAX_LIFETIME
# seconds (default 7200), or as soon as process TOLLGATE_K8S_WATCH_PID exits if
# that is set (a test runner passes its own pid so that a crashed run leaves
# nothing behind).
#
# Everything listens on 127.0.0.1 only, on free ports picked at start. DIR holds
# the etcd data, certificates, logs, pids and:
#   DIR/kubeconfig     admin (client certificate CN=admin, O=system:masters)
#   DIR/admin.token    a static bearer token for the same admin rights
#   DIR/env            KUBECONFIG, TOLLGATE_K8S_SERVER, TOLLGATE_K8S_BIN, ...
#
# Binaries come from $TOLLGATE_K8S_BIN if set, else from build.sh (cached).
# Without kube-controller-manager there is no garbage collection, no namespace
# finalization (a deleted namespace stays Terminating) and no "default"
# ServiceAccount in new namespaces: create ServiceAccounts explicitly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
READY_TIMEOUT="${TOLLGATE_K8S_READY_TIMEOUT:-60}"   # seconds, per attempt
MAX_LIFETIME="${TOLLGATE_K8S_MAX_LIFETIME:-7200}"   # seconds
WATCH_PID="${TOLLGATE_K8S_WATCH_PID:-}"
ISSUER="https://kubernetes.default.svc.cluster.local"

log() { echo "envtest.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }

bin_dir() {
  if [[ -n "${TOLLGATE_K8S_BIN:-}" ]]; then echo "$TOLLGATE_K8S_BIN"; return; fi
  "$here/build.sh" | tail -n1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null && return
  # Fallback without python: a random high port nobody answers on.
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

# Is PID alive and one we started for this DIR?
ours() {
  local pid="$1" dir="$2"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"
}

stop_pids() { # dir name... : SIGTERM all at once, wait up to 10 s, then SIGKILL
  local dir="$1" name pid pids=() left
  shift
  for name in "$@"; do
    [[ -f "$dir/$name.pid" ]] || continue
    pid="$(cat "$dir/$name.pid")"
    if ours "$pid" "$dir"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$dir/$name.pid"
  done
  for _ in $(seq 1 100); do
    left=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "pids ${left[*]} did not stop in 10 s; SIGKILL"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

gen_pki() { # dir
  local pki="$1/pki"
  [[ -f "$pki/admin.crt" ]] && return 0
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
      -keyout ca.key -out ca.crt -subj "/CN=tollgate-envtest-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    sign() { # name subject extfile-lines
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%b' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 3650 -sha256 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" \
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    sign admin "/O=system:masters/CN=admin" \
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    # Service-account token signing pair.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # Static admin bearer token (token,user,uid,"groups").
    tok="tg-envtest-$(openssl rand -hex 16)"
    echo "$tok,admin-token,admin-token,\"system:masters\"" >tokens.csv
    echo "$tok" >../admin.token
    chmod 644 ca.crt ../admin.token
  )
}

write_kubeconfig() { # dir server
  local dir="$1" server="$2" pki="$1/pki" b64="base64 -w0"
  cat >"$dir/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: $server
    certificate-authority-data: $($b64 <"$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $($b64 <"$pki/admin.crt")
    client-key-data: $($b64 <"$pki/admin.key")
- name: admin-token
  user:
    token: $(cat "$dir/admin.token")
contexts:
- name: envtest
  context: {cluster: envtest, user: admin, namespace: default}
- name: envtest-token
  context: {cluster: envtest, user: admin-token, namespace: default}
current-context: envtest
EOF
  chmod 600 "$dir/kubeconfig.tmp"
  mv -f "$dir/kubeconfig.tmp" "$dir/kubeconfig"
}

http_ok() { # url (https, CA-verified, admin cert)
  local dir="$1" url="$2"
  curl -fsS --max-time 2 --cacert "$dir/pki/ca.crt" \
    --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "$url" >/dev/null 2>&1
}

start_etcd() { # bin dir -> sets ETCD_URL
  local bin="$1" dir="$2" attempt cport pport pid
  mkdir -p "$dir/etcd" && chmod 700 "$dir/etcd"
  for attempt in 1 2 3; do
    cport="$(free_port)"; pport="$(free_port)"
    [[ "$cport" != "$pport" ]] || continue
    setsid "$bin/etcd" \
      --name envtest \
      --data-dir "$dir/etcd" \
      --listen-client-urls "http://127.0.0.1:$cport" \
      --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" \
      --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "envtest=http://127.0.0.1:$pport" \
      --unsafe-no-fsync \
      --log-level warn \
      >>"$dir/etcd.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/etcd.pid"
    for _ in $(seq 1 $((READY_TIMEOUT * 5))); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if curl -fsS --max-time 1 "http://127.0.0.1:$cport/health" 2>/dev/null | grep -q '"health":"true"'; then
        ETCD_URL="http://127.0.0.1:$cport"
        return 0
      fi
      sleep 0.2
    done
    log "etcd attempt $attempt failed (ports $cport/$pport); see $dir/etcd.log"
    stop_pids "$dir" etcd
  done
  tail -n 20 "$dir/etcd.log" >&2 || true
  return 1
}

start_apiserver() { # bin dir -> sets API_URL
  local bin="$1" dir="$2" pki="$2/pki" attempt port pid
  for attempt in 1 2 3; do
    port="$(free_port)"
    setsid "$bin/kube-apiserver" \
      --etcd-servers "$ETCD_URL" \
      --etcd-prefix /registry \
      --bind-address 127.0.0.1 \
      --advertise-address 127.0.0.1 \
      --secure-port "$port" \
      --cert-dir "$pki" \
      --tls-cert-file "$pki/apiserver.crt" \
      --tls-private-key-file "$pki/apiserver.key" \
      --client-ca-file "$pki/ca.crt" \
      --token-auth-file "$pki/tokens.csv" \
      --authorization-mode RBAC \
      --service-account-issuer "$ISSUER" \
      --api-audiences "$ISSUER" \
      --service-account-key-file "$pki/sa.pub" \
      --service-account-signing-key-file "$pki/sa.key" \
      --service-cluster-ip-range 10.0.0.0/24 \
      --disable-admission-plugins ServiceAccount \
      --allow-privileged=true \
      --endpoint-reconciler-type none \
      --profiling=false \
      --v 1 \
      >>"$dir/kube-apiserver.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/kube-apiserver.pid"
    for _ in $(seq 1 $((READY_TIMEOUT * 4))); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if http_ok "$dir" "https://127.0.0.1:$port/readyz"; then
        API_URL="https://127.0.0.1:$port"
        return 0
      fi
      sleep 0.25
    done
    log "kube-apiserver attempt $attempt failed (port $port); see $dir/kube-apiserver.log"
    stop_pids "$dir" kube-apiserver
    # A port race shows as "address already in use": retry; anything else: give up.
    grep -q "address already in use" "$dir/kube-apiserver.log" || break
  done
  tail -n 30 "$dir/kube-apiserver.log" >&2 || true
  return 1
}

cmd_start() {
  local dir="$1" bin
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [[ -f "$dir/kube-apiserver.pid" ]] && ours "$(cat "$dir/kube-apiserver.pid")" "$dir"; then
    die "already running in $dir (stop it first)"
  fi
  command -v openssl >/dev/null || die "openssl not found"
  command -v curl >/dev/null || die "curl not found"
  bin="$(bin_dir)"
  [[ -x "$bin/kube-apiserver" && -x "$bin/etcd" ]] || die "binaries missing in $bin"
  local t0=$SECONDS
  gen_pki "$dir"
  start_etcd "$bin" "$dir" || { cmd_stop "$dir"; die "etcd did not become healthy"; }
  start_apiserver "$bin" "$dir" || { cmd_stop "$dir"; die "kube-apiserver did not become ready"; }
  write_kubeconfig "$dir" "$API_URL"
  cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
TOLLGATE_K8S_SERVER=$API_URL
TOLLGATE_K8S_ETCD=$ETCD_URL
TOLLGATE_K8S_BIN=$bin
TOLLGATE_K8S_CA=$dir/pki/ca.crt
TOLLGATE_K8S_TOKEN_FILE=$dir/admin.token
TOLLGATE_K8S_SA_ISSUER=$ISSUER
EOF
  start_watchdog "$dir"
  log "ready in $((SECONDS - t0))s: $API_URL (etcd $ETCD_URL)"
  cat "$dir/env"
}

start_watchdog() { # dir
  local dir="$1"
  setsid "$here/$(basename "$0")" _watchdog "$dir/" "${WATCH_PID:-0}" "$MAX_LIFETIME" \
    >>"$dir/watchdog.log" 2>&1 </dev/null &
  echo "$!" >"$dir/watchdog.pid"
}

cmd_watchdog() { # dir/ watch-pid lifetime
  local dir="${1%/}" watch="$2" lifetime="$3" t=0
  while ((t < lifetime)); do
    if [[ "$watch" != 0 ]] && ! kill -0 "$watch" 2>/dev/null; then
      log "watched process $watch exited; stopping"
      break
    fi
    [[ -f "$dir/kube-apiserver.pid" || -f "$dir/etcd.pid" ]] || exit 0
    sleep 1 & wait $!   # wait, unlike sleep, returns at once on SIGTERM
    t=$((t + 1))
  done
  ((t < lifetime)) || log "max lifetime ${lifetime}s reached; stopping"
  rm -f "$dir/watchdog.pid"
  cmd_stop "$dir"
}

cmd_stop() {
  local dir="$1"
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  stop_pids "$dir" watchdog kube-apiserver etcd
}

cmd_status() {
  local dir="$1" server
  dir="$(cd "$dir" && pwd)"
  [[ -f "$dir/env" ]] || exit 1
  server="$(sed -n 's/^TOLLGATE_K8S_SERVER=//p' "$dir/env")"
  http_ok "$dir" "$server/readyz" || exit 1
}

if [[ "${1:-}" == _watchdog && $# -eq 4 ]]; then cmd_watchdog "$2" "$3" "$4"; exit; fi
[[ $# -eq 2 ]] || usage
case "$1" in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  status) cmd_status "$2" ;;
  *) usage ;;
esac
