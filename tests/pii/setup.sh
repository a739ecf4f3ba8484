#!/usr/bin/env bash
# Creates tests/pii/.venv with the pinned requirements (Faker, presidio-analyzer,
# spaCy, phonenumbers). Idempotent: rebuilds only when requirements.txt or the
# interpreter changes (hash stamp, as in tests/python/run.sh).
#
#   bash tests/pii/setup.sh        # then use tests/pii/.venv/bin/python
#
# Env: PYTHON (default python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$HERE/.venv"
STAMP="$VENV/.requirements.sha256"

want="$( { cat "$HERE/requirements.txt"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ ! -x "$VENV/bin/python" || "$want" != "$have" ]]; then
    echo "setup.sh: creating $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" > "$STAMP"
else
    echo "setup.sh: $VENV is up to date" >&2
fi
