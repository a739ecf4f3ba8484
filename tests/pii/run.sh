#!/usr/bin/env bash
# PII detection, Tollgate's recognizers (crates/guard) next to Presidio's
# analyzer on the committed corpus: precision, recall and F1 per type from
# the one scorer, and single-thread throughput of both.
#
#   bash tests/pii/run.sh            # both engines
#   PRESIDIO=0 bash tests/pii/run.sh # Tollgate only (no Python install)
#
# Results land in tests/pii/out/ (ignored by git).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/out"
mkdir -p "$OUT"
cd "$REPO"

cargo build --release -q -p tollgate-guard --example pii_eval
"${CARGO_TARGET_DIR:-$REPO/target}/release/examples/pii_eval" \
    "$HERE/corpus.jsonl" "$OUT/tollgate-preds.jsonl" "$OUT/tollgate-stats.json"

bash "$HERE/setup.sh"
PY="$HERE/.venv/bin/python"
"$PY" "$HERE/score.py" --corpus "$HERE/corpus.jsonl" --predictions "$OUT/tollgate-preds.jsonl" \
    --name tollgate --json "$OUT/tollgate-score.json"

if [[ "${PRESIDIO:-1}" != 0 ]]; then
    "$PY" "$HERE/presidio_eval.py" --corpus "$HERE/corpus.jsonl" \
        --out "$OUT/presidio-preds.jsonl" --stats "$OUT/presidio-stats.json"
    "$PY" "$HERE/score.py" --corpus "$HERE/corpus.jsonl" --predictions "$OUT/presidio-preds.jsonl" \
        --name presidio --unsupported SECRET --json "$OUT/presidio-score.json"
    "$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/tollgate-stats.json"))
p = json.load(open(f"{out}/presidio-stats.json"))
ps = p.get("sentences_per_second")
print(f"\nthroughput, one thread: tollgate {t['sentences_per_second']:.0f} sentences/s "
      f"({t['megabytes_per_second']:.1f} MB/s), presidio {ps:.0f} sentences/s: "
      f"{t['sentences_per_second'] / ps:.0f}x")
PYEOF
fi
