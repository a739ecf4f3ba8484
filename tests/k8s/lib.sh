#!/usr/bin/env bash
# Shared harness for the envtest test scripts (smoke.sh, chart.sh): pass/fail
# counters, one cluster per run in a temp dir, cleanup and the closing
# "NAME: N passed, N failed" line. Source it after setting `suite`.
#
#   suite=smoke; source "$here/lib.sh"; start_cluster
# shellcheck disable=SC2034,SC2154  # repo is for the sourcing script; suite is set by it

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
passed=0
failed=0

log() { echo "$suite: $*" >&2; }
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
nok() { failed=$((failed + 1)); echo "FAIL - $*"; }
# check DESCRIPTION CMD... : ok if CMD succeeds, else FAIL with its output.
check() {
  local desc="$1" out
  shift
  if out="$("$@" 2>&1)"; then ok "$desc"; else nok "$desc"; sed 's/^/    | /' <<<"$out" | tail -n 20; fi
}

# Builds (or reuses) the binaries and starts etcd + kube-apiserver in a fresh
# run dir; sets bin, dir and KUBECONFIG. The dir is kept only on failure.
start_cluster() {
  bin="$("$here/build.sh" | tail -n1)"
  export TOLLGATE_K8S_BIN="$bin"
  dir="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-$suite.XXXXXX")"
  trap finish EXIT
  trap 'exit 130' INT TERM
  TOLLGATE_K8S_WATCH_PID=$$ "$here/envtest.sh" start "$dir" >/dev/null
  ok "etcd + kube-apiserver ready ($(sed -n 's/^TOLLGATE_K8S_SERVER=//p' "$dir/env"))"
  export KUBECONFIG="$dir/kubeconfig"
}

# Background processes of a suite (`pids+=($!)`): stopped before the cluster.
pids=()
stop_processes() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

# free_ports N: N free loopback ports, one a line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

finish() {
  local rc=$?
  stop_processes
  "$here/envtest.sh" stop "$dir" || true
  if [[ $rc -eq 0 && $failed -eq 0 ]]; then
    rm -rf "$dir"
  else
    log "run dir kept for inspection: $dir"
    tail -n 15 "$dir/kube-apiserver.log" 2>/dev/null | sed 's/^/  apiserver| /' >&2 || true
  fi
  echo "$suite: $passed passed, $failed failed"
  [[ $rc -eq 0 && $failed -eq 0 ]] || exit 1
}
