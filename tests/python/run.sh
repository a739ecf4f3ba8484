#!/usr/bin/env bash
# Runs the official-SDK integration suite (openai and anthropic) against a
# locally built gateway and `tollgate mock`.
#
#   bash tests/python/run.sh            # whole suite
#   bash tests/python/run.sh -k stream  # extra args go to pytest, which runs
#                                       # in tests/python/ (paths relative to it)
#
# Env: TOLLGATE_BIN (binary to test; default <repo>/target/debug/tollgate,
# built with `cargo build -p tollgate-cli` when missing), PYTHON (default python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$HERE/.venv"
STAMP="$VENV/.requirements.sha256"

# Hash of the requirements and the interpreter: either changing rebuilds the venv.
want="$( { cat "$HERE/requirements.txt"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ ! -x "$VENV/bin/python" || "$want" != "$have" ]]; then
    echo "run.sh: creating $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" > "$STAMP"
fi

if [[ -z "${TOLLGATE_BIN:-}" ]]; then
    target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
    [[ "$target_dir" = /* ]] || target_dir="$REPO/$target_dir"
    export TOLLGATE_BIN="$target_dir/debug/tollgate"
    if [[ ! -x "$TOLLGATE_BIN" ]]; then
        echo "run.sh: $TOLLGATE_BIN missing; building it" >&2
        (cd "$REPO" && cargo build -p tollgate-cli)
    fi
fi
if [[ ! -x "$TOLLGATE_BIN" || -d "$TOLLGATE_BIN" ]]; then
    echo "run.sh: TOLLGATE_BIN=$TOLLGATE_BIN is not an executable" >&2
    exit 2
fi
# Absolute, since pytest runs from this directory (test paths given as
# arguments are relative to tests/python/).
export TOLLGATE_BIN="$(cd "$(dirname "$TOLLGATE_BIN")" && pwd)/$(basename "$TOLLGATE_BIN")"

cd "$HERE"
exec "$VENV/bin/python" -m pytest -q "$@"
