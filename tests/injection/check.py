#!/usr/bin/env python3
"""Validate the prompt-injection evaluation sets and print their composition.

Usage: python3 tests/injection/check.py [FILE ...]
(defaults to dev.jsonl and test.jsonl next to this script). Exits non-zero on
any schema problem. Standard library only.
"""
import collections
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
FIELDS = {"id", "text", "label", "channel", "technique"}
LABELS = {"injection", "benign"}
CHANNELS = {"user", "tool_result", "document", "system"}
INJECTION_TECHNIQUES = {
    "ignore_instructions", "role_override", "system_prompt_exfiltration",
    "fake_system_message", "data_exfiltration", "tool_abuse", "obfuscated",
    "indirect", "payload_splitting", "jailbreak_roleplay",
}
EXPECTED_TOTAL = {"dev": 240, "test": 120}


def check(path):
    errors = []
    rows = []
    prefix = path.stem
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                errors.append(f"{path.name}:{n}: blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{path.name}:{n}: invalid JSON: {e}")
                continue
            if set(obj) != FIELDS:
                errors.append(f"{path.name}:{n}: fields {sorted(obj)} != {sorted(FIELDS)}")
                continue
            if not all(isinstance(obj[k], str) and obj[k] for k in FIELDS):
                errors.append(f"{path.name}:{n}: empty or non-string field")
            if not obj["id"].startswith(prefix + "-"):
                errors.append(f"{path.name}:{n}: id {obj['id']!r} lacks prefix {prefix}-")
            if obj["label"] not in LABELS:
                errors.append(f"{path.name}:{n}: bad label {obj['label']!r}")
            if obj["channel"] not in CHANNELS:
                errors.append(f"{path.name}:{n}: bad channel {obj['channel']!r}")
            tech = obj["technique"]
            if obj["label"] == "benign" and not tech.startswith("benign_"):
                errors.append(f"{path.name}:{n}: benign row with technique {tech!r}")
            if obj["label"] == "injection" and tech not in INJECTION_TECHNIQUES:
                errors.append(f"{path.name}:{n}: injection row with technique {tech!r}")
            if tech == "indirect" and obj["channel"] not in {"tool_result", "document"}:
                errors.append(f"{path.name}:{n}: indirect row on channel {obj['channel']!r}")
            rows.append(obj)
    ids = collections.Counter(r["id"] for r in rows)
    errors += [f"{path.name}: duplicate id {i}" for i, c in ids.items() if c > 1]
    texts = collections.Counter(r["text"] for r in rows)
    errors += [f"{path.name}: duplicate text {t[:60]!r}" for t, c in texts.items() if c > 1]
    want = EXPECTED_TOTAL.get(prefix)
    if want is not None and len(rows) != want:
        errors.append(f"{path.name}: {len(rows)} rows, expected {want}")
    return rows, errors


def report(name, rows):
    print(f"== {name}: {len(rows)} rows")
    for key in ("label", "channel", "technique"):
        c = collections.Counter(r[key] for r in rows)
        print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))))
    lines = [r["text"].count("\n") + 1 for r in rows]
    print(f"  lines per text: min={min(lines)} max={max(lines)}")


def main(argv):
    paths = [pathlib.Path(p) for p in argv] or [HERE / "dev.jsonl", HERE / "test.jsonl"]
    all_errors = []
    texts = {}
    for p in paths:
        rows, errors = check(p)
        all_errors += errors
        report(p.name, rows)
        texts[p.name] = {r["text"] for r in rows}
    names = list(texts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for t in texts[a] & texts[b]:
                all_errors.append(f"text appears in both {a} and {b}: {t[:60]!r}")
    for e in all_errors:
        print("ERROR", e, file=sys.stderr)
    print("OK" if not all_errors else f"{len(all_errors)} error(s)")
    return 1 if all_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
