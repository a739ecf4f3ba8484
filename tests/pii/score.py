#!/usr/bin/env python3
"""Score a PII predictions file against the labelled corpus.

    score.py --corpus corpus.jsonl --predictions preds.jsonl [--name X] [--json out.json]
             [--unsupported SECRET ...]

Predictions: one JSON object per line, {"id": n, "spans": [{"start", "end", "type"}]},
offsets in Python str code points, end exclusive (the corpus's convention). An id
missing from the file counts as "no spans predicted" (and is reported).

Matching rule (the same for every system scored):
  1. Both gold and predicted spans are first trimmed: leading and trailing
     whitespace and the characters . , ; : ( ) [ ] < > " ' are dropped (so
     "(415) 555-0132" vs "415) 555-0132", or a trailing period, do not matter).
  2. Within one sentence and one entity type, a predicted span and a gold span
     may match when their trimmed intervals have IoU >= 0.5
     (IoU = overlap length / union length, in code points).
  3. Matching is one-to-one: candidate pairs are taken in order of decreasing
     IoU (ties: earlier gold, then earlier prediction), each gold and each
     prediction used at most once. A matched prediction is a true positive.
  4. Every other prediction is a false positive; every unmatched gold span is
     a false negative. A prediction of the right span with the wrong type is
     therefore one FP (under its type) and one FN (under the gold type).
Precision = TP/(TP+FP), recall = TP/(TP+FN), F1 their harmonic mean (0 when
undefined). Micro-average sums TP/FP/FN over the label set. Types passed with
--unsupported (e.g. SECRET for Presidio, which has no recognizer for it) are
shown but left out of the "supported" micro-average; the all-types micro-average
still counts their misses. Predicted types outside the label set are reported
and ignored. False positives that overlap a corpus hard negative are also
counted by that negative's kind, and recall is broken down by gold subtype.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys

TYPES = ["EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "SECRET"]
STRIP = set(" \t\r\n.,;:()[]<>\"'")


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    s, e = start, end
    while s < e and text[s] in STRIP:
        s += 1
    while e > s and text[e - 1] in STRIP:
        e -= 1
    return (s, e) if s < e else (start, end)  # all punctuation: keep as given


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def load_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn}


def match_sentence(text: str, gold: list[dict], pred: list[dict]):
    """Yield (kind, span) with kind in tp / fp / fn, per the rule in the docstring."""
    g = [(trim(text, s["start"], s["end"]), s) for s in gold]
    p = [(trim(text, s["start"], s["end"]), s) for s in pred]
    pairs = []
    for gi, (gspan, gs) in enumerate(g):
        for pi, (pspan, ps) in enumerate(p):
            if gs["type"] == ps["type"]:
                v = iou(gspan, pspan)
                if v >= 0.5:
                    pairs.append((-v, gi, pi))
    pairs.sort()
    used_g, used_p = set(), set()
    for _, gi, pi in pairs:
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
            yield "tp", g[gi][1]
    for gi, (_, gs) in enumerate(g):
        if gi not in used_g:
            yield "fn", gs
    for pi, (_, ps) in enumerate(p):
        if pi not in used_p:
            yield "fp", ps


def score(corpus: list[dict], preds: dict[int, list[dict]], unsupported: set[str]) -> dict:
    c = {t: collections.Counter() for t in TYPES}
    sub = collections.defaultdict(collections.Counter)  # (type, subtype) -> tp/fn
    fp_by_negative = collections.Counter()
    fp_outside_negatives = collections.Counter()
    other_types = collections.Counter()
    missing = 0
    for row in corpus:
        text = row["text"]
        if row["id"] not in preds:
            missing += 1
        pred = []
        for s in preds.get(row["id"], []):
            if not (0 <= s["start"] < s["end"] <= len(text)):
                raise SystemExit(f"id {row['id']}: span {s} outside text of length {len(text)}")
            if s["type"] in c:
                pred.append(s)
            else:
                other_types[s["type"]] += 1
        for kind, s in match_sentence(text, row["spans"], pred):
            c[s["type"]][kind] += 1
            if kind != "fp":
                sub[(s["type"], s.get("subtype", "-"))][kind] += 1
                continue
            hit = [n["kind"] for n in row.get("negatives", []) if iou((n["start"], n["end"]), (s["start"], s["end"])) > 0]
            if hit:
                fp_by_negative[(s["type"], hit[0])] += 1
            else:
                fp_outside_negatives[s["type"]] += 1

    per_type = {t: prf(c[t]["tp"], c[t]["fp"], c[t]["fn"]) | {"supported": t not in unsupported} for t in TYPES}

    def micro(types):
        return prf(*(sum(c[t][k] for t in types) for k in ("tp", "fp", "fn")))

    return {
        "per_type": per_type,
        "micro_all": micro(TYPES),
        "micro_supported": micro([t for t in TYPES if t not in unsupported]),
        "unsupported": sorted(unsupported),
        "recall_by_subtype": {f"{t}/{s}": prf(n["tp"], 0, n["fn"])["recall"] for (t, s), n in sorted(sub.items())},
        "support_by_subtype": {f"{t}/{s}": n["tp"] + n["fn"] for (t, s), n in sorted(sub.items())},
        "fp_on_hard_negatives": {f"{t}<-{k}": n for (t, k), n in sorted(fp_by_negative.items())},
        "fp_elsewhere": dict(sorted(fp_outside_negatives.items())),
        "ignored_predicted_types": dict(other_types),
        "sentences": len(corpus),
        "sentences_without_prediction_line": missing,
    }


def print_report(name: str, res: dict, out=sys.stdout) -> None:
    print(f"== {name} ==", file=out)
    print(f"{'type':<14}{'precision':>10}{'recall':>9}{'f1':>8}{'support':>9}{'tp':>7}{'fp':>6}{'fn':>6}", file=out)
    rows = [(t, res["per_type"][t]) for t in TYPES]
    rows += [("micro (supp.)", res["micro_supported"]), ("micro (all)", res["micro_all"])]
    for t, m in rows:
        note = "  (not supported)" if t in res["unsupported"] else ""
        print(f"{t:<14}{m['precision']:>10.3f}{m['recall']:>9.3f}{m['f1']:>8.3f}{m['support']:>9}"
              f"{m['tp']:>7}{m['fp']:>6}{m['fn']:>6}{note}", file=out)
    if res["fp_on_hard_negatives"]:
        print("false positives on hard negatives (predicted<-negative kind): "
              + ", ".join(f"{k}={n}" for k, n in res["fp_on_hard_negatives"].items()), file=out)
    if res["fp_elsewhere"]:
        print("false positives not on a hard negative, by type: " + ", ".join(f"{k}={n}" for k, n in res["fp_elsewhere"].items()), file=out)
    # Subtypes worth a look: recall < 0.9 in a type that is supported and not missed whole.
    weak = {k: v for k, v in res["recall_by_subtype"].items()
            if v < 0.9 and k.split("/")[0] not in res["unsupported"] and res["per_type"][k.split("/")[0]]["recall"] > 0}
    if weak:
        print("subtypes with recall < 0.9: " + ", ".join(
            f"{k}={v:.2f}(n={res['support_by_subtype'][k]})" for k, v in weak.items()), file=out)
    if res["ignored_predicted_types"]:
        print(f"ignored predicted types (not in label set): {res['ignored_predicted_types']}", file=out)
    if res["sentences_without_prediction_line"]:
        print(f"warning: {res['sentences_without_prediction_line']} corpus ids had no prediction line", file=out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--name", default=None, help="system name for the report (default: predictions file name)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the numbers here")
    ap.add_argument("--unsupported", nargs="*", default=[], choices=TYPES,
                    help="types the system does not try to detect (kept out of the 'supported' micro-average)")
    args = ap.parse_args()

    corpus = load_jsonl(args.corpus)
    preds: dict[int, list[dict]] = {}
    for row in load_jsonl(args.predictions):
        preds.setdefault(row["id"], []).extend(row.get("spans", []))
    unknown = set(preds) - {r["id"] for r in corpus}
    if unknown:
        raise SystemExit(f"{len(unknown)} prediction ids are not in the corpus, e.g. {sorted(unknown)[:5]}")

    name = args.name or args.predictions
    res = score(corpus, preds, set(args.unsupported))
    res["name"] = name
    print_report(name, res)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
