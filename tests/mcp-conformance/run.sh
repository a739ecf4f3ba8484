#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance,
# every server scenario at every protocol revision it covers) against an MCP
# backend twice, directly and through the gateway's pass-through
# (/mcp/{path}), and fails unless both give the same result for every check.
# It does not require the backend to pass: only that the gateway changes
# nothing.
#
#   bash tests/mcp-conformance/run.sh
#
# Env: TOLLGATE_BIN (binary to test; default <repo>/target/debug/tollgate,
# built with `cargo build -p tollgate-cli` when missing),
# MCP_CONFORMANCE_KEEP=1 keeps the work directory (logs, checks.json,
# normalised results) even on success; it is always kept on failure.
# MCP_TRANSLATE=1 serves the backend with `translateRevisions: true`
# instead: the gateway then changes results on purpose (server-everything
# speaks 2025-11-25 only, so 2026-07-28 scenarios reach it translated), and
# the run reports how many checks got better or worse instead of failing on
# a difference.
#
# Backend: @modelcontextprotocol/server-everything in Streamable HTTP mode (the
# conformance package ships no server of its own). Everything listens on
# 127.0.0.1 only; every wait is bounded; every child is killed on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
NODE_DIR="$REPO/tests/node"
SUITE_TIMEOUT="${MCP_CONFORMANCE_SUITE_TIMEOUT:-1200}"   # seconds per suite run

log() { echo "mcp-conformance: $*" >&2; }

if [[ -z "${TOLLGATE_BIN:-}" ]]; then
    target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
    [[ "$target_dir" = /* ]] || target_dir="$REPO/$target_dir"
    TOLLGATE_BIN="$target_dir/debug/tollgate"
    if [[ ! -x "$TOLLGATE_BIN" ]]; then
        log "$TOLLGATE_BIN missing; building it"
        (cd "$REPO" && cargo build -p tollgate-cli)
    fi
fi
if [[ ! -x "$TOLLGATE_BIN" || -d "$TOLLGATE_BIN" ]]; then
    log "TOLLGATE_BIN=$TOLLGATE_BIN is not an executable"
    exit 2
fi
command -v curl >/dev/null || { log "curl is required"; exit 2; }

# Node 22 from tests/node (installed there on first use); the system node is
# never used to run anything.
NODE="$(bash "$NODE_DIR/setup.sh" | tail -n 1)"
CONFORMANCE="$NODE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
EVERYTHING="$NODE_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
# Any Node server started here binds loopback even when asked for all
# interfaces (server-everything's app.listen(PORT) would bind 0.0.0.0).
export NODE_OPTIONS="--require $NODE_DIR/loopback-only.cjs"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-mcp-conformance.XXXXXX")"
pids=()        # backend and gateway
suite_pid=     # the conformance run in progress, if any
ok=0
cleanup() {
    local pid
    [[ -z "$suite_pid" ]] || pids+=("$suite_pid")
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $ok == 1 && "${MCP_CONFORMANCE_KEEP:-}" != 1 ]]; then
        rm -rf "$WORK"
    else
        log "logs and results kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port: the OS picks one, we release it and the backend takes
# it (server-everything only takes a fixed PORT).
free_port() {
    "$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Polls until `curl` gets any HTTP answer from $1, for at most $2 seconds.
await_http() {
    local url=$1 deadline=$((SECONDS + $2))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)" =~ ^[1-5] ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# --- The plan: every server scenario at every revision it covers -----------
# `list --server` prints "  - <scenario> [<rev>,<rev>]" or "[extension]".
"$NODE" "$CONFORMANCE" list --server > "$WORK/list.txt"
"$NODE" -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n");
const plan = [];
for (const l of lines) {
  const m = l.match(/^\s*-\s+(\S+)\s+\[([^\]]+)\]/);
  if (m) for (const v of m[2].split(",")) plan.push({ version: v.trim(), scenario: m[1] });
}
if (!plan.length) { console.error("no server scenarios listed"); process.exit(1); }
console.log(JSON.stringify(plan));
' "$WORK/list.txt" > "$WORK/plan.json"
versions=($("$NODE" -e 'for (const v of new Set(require(process.argv[1]).map(p => p.version))) if (v !== "extension") console.log(v)' "$WORK/plan.json" | sort))
scenarios_at() {
    "$NODE" -e 'for (const p of require(process.argv[1])) if (p.version === process.argv[2]) console.log(p.scenario)' "$WORK/plan.json" "$1"
}
extensions=($(scenarios_at extension))
log "$("$NODE" "$CONFORMANCE" --version): $("$NODE" -e 'console.log(require(process.argv[1]).length)' "$WORK/plan.json") (revision, scenario) pairs; revisions ${versions[*]}, ${#extensions[@]} extension scenarios"

# --- The backend ------------------------------------------------------------
port="$(free_port)"
PORT="$port" "$NODE" "$EVERYTHING" streamableHttp > "$WORK/backend.log" 2>&1 &
pids+=($!)
BACKEND="http://127.0.0.1:$port/mcp"
await_http "$BACKEND" 30 || { log "backend did not come up"; cat "$WORK/backend.log" >&2; exit 1; }

# --- The gateway: open (no API keys: the conformance client sends no
# credential), one MCPServer passed through at /mcp/everything --------------
translate=false
[[ -n "${MCP_TRANSLATE:-}" ]] && translate=true
cat > "$WORK/gateway.yaml" <<YAML
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: conformance}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: everything}
spec:
  gatewayRef: {name: conformance}
  url: $BACKEND
  translateRevisions: $translate
YAML
"$TOLLGATE_BIN" gateway --config "$WORK/gateway.yaml" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    > "$WORK/gateway.out" 2> "$WORK/gateway.log" &
pids+=($!)
# Its first stdout line names the ports it took: "listening data=... admin=...".
deadline=$((SECONDS + 30))
until grep -q '^listening ' "$WORK/gateway.out" 2>/dev/null; do
    if ((SECONDS >= deadline)) || ! kill -0 "${pids[-1]}" 2>/dev/null; then
        log "gateway did not start"; cat "$WORK/gateway.log" >&2; exit 1
    fi
    sleep 0.1
done
data="$(sed -n 's/^listening .*data=\([^ ]*\).*/\1/p' "$WORK/gateway.out" | head -n 1)"
admin="$(sed -n 's/^listening .*admin=\([^ ]*\).*/\1/p' "$WORK/gateway.out" | head -n 1)"
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null --max-time 1 "$admin/readyz" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "gateway not ready"; cat "$WORK/gateway.log" >&2; exit 1; }
    sleep 0.1
done
GATEWAY="$data/mcp/everything"

# --- The suite, against each target ----------------------------------------
# The suite exits 1 when a check fails, which the backend does on its own;
# only a time-out or a crash (any other code) is the harness's failure.
run_suite() {
    local out=$1 logfile=$2 rc=0
    shift 2
    # In the background and waited for, so a signal to this script runs the
    # trap (which kills it) at once instead of after the suite.
    timeout "$SUITE_TIMEOUT" "$NODE" "$CONFORMANCE" server --timeout 30000 -o "$out" "$@" >> "$logfile" 2>&1 &
    suite_pid=$!
    wait "$suite_pid" || rc=$?
    suite_pid=
    if ((rc > 1)); then
        log "conformance $* exited $rc (see $logfile)"
        return 1
    fi
}
# A scenario that throws writes no checks.json: a --suite run prints "Failed
# to run scenario <name>: <error>" and counts it as one failed check, a
# --scenario run prints "Server test error: <error>". Record it as that one
# failed check, so a crash is compared rather than lost.
record_crash() {
    local dir=$1 scenario=$2 logfile=$3 result
    result="$(ls -d "$dir/server-$scenario"-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T* 2>/dev/null | tail -n 1)"
    [[ -n "$result" && -f "$result/checks.json" ]] && return 0
    [[ -n "$result" ]] || result="$dir/server-$scenario-1970-01-01T00-00-00-000Z"
    mkdir -p "$result"
    "$NODE" -e '
const [scenario, logfile, out] = process.argv.slice(1);
const log = require("fs").readFileSync(logfile, "utf8");
const escaped = scenario.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const error = (log.match(new RegExp(`^Failed to run scenario ${escaped}: (.*)$`, "m")) ??
  log.match(/^Server test error: (.*)$/m) ?? [, "no result (see the log)"])[1];
require("fs").writeFileSync(out, JSON.stringify([{ id: scenario, name: scenario,
  description: "Failed to run scenario", status: "FAILURE", errorMessage: error }], null, 2));
' "$scenario" "$logfile" "$result/checks.json"
}
for target in direct gateway; do
    if [[ $target == direct ]]; then url=$BACKEND; else url=$GATEWAY; fi
    log "running the suite against $target ($url)"
    for version in "${versions[@]}"; do
        # --spec-version picks exactly the scenarios that apply at this
        # revision and runs them on its wire (stateful handshake through
        # 2025-11-25, stateless _meta for 2026-07-28).
        run_suite "$WORK/$target/$version" "$WORK/$target-$version.log" \
            --url "$url" --suite all --spec-version "$version"
        for scenario in $(scenarios_at "$version"); do
            record_crash "$WORK/$target/$version" "$scenario" "$WORK/$target-$version.log"
        done
    done
    # Extension scenarios are on no revision's timeline: each runs once, at
    # the suite's own choice of wire.
    for scenario in "${extensions[@]}"; do
        logfile="$WORK/$target-extension-$scenario.log"
        run_suite "$WORK/$target/extension" "$logfile" --url "$url" --scenario "$scenario"
        record_crash "$WORK/$target/extension" "$scenario" "$logfile"
    done
done

# --- Compare ---------------------------------------------------------------
mkdir -p "$WORK/compare"
if "$NODE" "$HERE/compare.mjs" "$WORK/plan.json" "$WORK/direct" "$WORK/gateway" "$WORK/compare"; then
    ok=1
else
    exit 1
fi
