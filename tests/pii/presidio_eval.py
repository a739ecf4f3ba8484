#!/usr/bin/env python3
"""Run Microsoft Presidio's AnalyzerEngine over the corpus; write predictions and throughput.

    presidio_eval.py --corpus corpus.jsonl --out presidio-preds.jsonl --stats presidio-stats.json
                     [--nlp auto|model|blank|none] [--warmup 50]

Presidio configuration: its predefined recognizers for language "en", the
default score threshold (AnalyzerEngine's default_score_threshold = 0, so every
match a recognizer returns is kept, whatever its score), and analyze() asked
only for the six entity types that have a counterpart in our label set:
    EMAIL_ADDRESS->EMAIL  PHONE_NUMBER->PHONE  CREDIT_CARD->CREDIT_CARD
    US_SSN->US_SSN        IBAN_CODE->IBAN      IP_ADDRESS->IP_ADDRESS
Presidio has no general recognizer for API keys / private keys, so SECRET is
reported as not supported.

NLP engine (--nlp, default auto: the first that loads):
  model  an installed spaCy English pipeline (en_core_web_sm/md/lg), if any;
  blank  spacy.blank("en"): spaCy's English tokenizer, no trained weights. The
         recognizers used here are regex / checksum / phonenumbers based and
         need only tokens (for context words), so results do not depend on NER;
  none   Presidio's NoOpNlpEngine: pattern recognizers only, no tokens at all.
The one used is recorded in the stats JSON ("nlp_engine").

Throughput: `--warmup` texts are analyzed first and not timed (lazy regex
compilation, caches); then the whole corpus is analyzed, single process,
timed with a wall clock; that is repeated (--repeat, default 3) and the median
pass is reported, with every pass listed. MB/s counts UTF-8 bytes of the texts, MB = 10^6 bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

# tldextract (used by Presidio's email validation) would otherwise try to download
# the Public Suffix List; with no URLs it uses the snapshot shipped in the package.
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

import spacy  # noqa: E402
from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import NoOpNlpEngine, SpacyNlpEngine  # noqa: E402

ENTITY_MAP = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
              "US_SSN": "US_SSN", "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP_ADDRESS"}
UNSUPPORTED = ["SECRET"]
SPACY_MODELS = ["en_core_web_sm", "en_core_web_md", "en_core_web_lg"]


def make_nlp_engine(choice: str, tmpdir: str):
    """Return (engine, description) for the first option that works."""
    order = ["model", "blank", "none"] if choice == "auto" else [choice]
    errors = []
    for opt in order:
        try:
            if opt == "model":
                name = next((m for m in SPACY_MODELS if spacy.util.is_package(m)), None)
                if name is None:
                    raise RuntimeError(f"none of {SPACY_MODELS} is installed")
                engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": name}])
                engine.load()
                return engine, f"spacy model {name}"
            if opt == "blank":
                # SpacyNlpEngine loads by name or path: save the blank pipeline to a
                # directory so it loads like a model (and nothing is downloaded).
                path = os.path.join(tmpdir, "blank_en")
                spacy.blank("en").to_disk(path)
                engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": path}])
                engine.load()
                return engine, f"spacy.blank('en') (spaCy {spacy.__version__} tokenizer only, no trained model)"
            if opt == "none":
                engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
                engine.load()
                return engine, "none (NoOpNlpEngine: pattern recognizers only)"
        except Exception as e:  # try the next option, but say why this one failed
            errors.append(f"{opt}: {e}")
            print(f"presidio_eval: NLP option {opt!r} unavailable: {e}", file=sys.stderr)
    raise SystemExit("no NLP engine could be set up: " + "; ".join(errors))


def to_spans(results) -> list[dict]:
    spans = [{"start": r.start, "end": r.end, "type": ENTITY_MAP[r.entity_type], "score": round(r.score, 3)}
             for r in results if r.entity_type in ENTITY_MAP]
    return sorted(spans, key=lambda s: (s["start"], s["end"], s["type"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True, help="predictions JSONL")
    ap.add_argument("--stats", required=True, help="throughput and configuration JSON")
    ap.add_argument("--nlp", choices=["auto", "model", "blank", "none"], default="auto")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the corpus (median reported)")
    args = ap.parse_args()

    with open(args.corpus, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    texts = [r["text"] for r in rows]

    with tempfile.TemporaryDirectory() as tmpdir:
        t0 = time.perf_counter()
        nlp_engine, nlp_desc = make_nlp_engine(args.nlp, tmpdir)
        analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
        init_s = time.perf_counter() - t0
    entities = list(ENTITY_MAP)

    for text in texts[: args.warmup]:
        analyzer.analyze(text=text, language="en", entities=entities)

    # Timings on a shared 2-core machine vary run to run: time --repeat full
    # passes and report the median; predictions come from the first pass.
    load_before = os.getloadavg()
    runs = []
    results = None
    for _ in range(args.repeat):
        out = []
        t0 = time.perf_counter()
        for text in texts:
            out.append(analyzer.analyze(text=text, language="en", entities=entities))
        runs.append(time.perf_counter() - t0)
        results = results or out
    load_after = os.getloadavg()
    elapsed = statistics.median(runs)

    with open(args.out, "w", encoding="utf-8") as f:
        for row, res in zip(rows, results):
            f.write(json.dumps({"id": row["id"], "spans": to_spans(res)}) + "\n")

    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    from importlib.metadata import version
    stats = {
        "system": "presidio-analyzer",
        "presidio_analyzer_version": version("presidio-analyzer"),
        "spacy_version": spacy.__version__,
        "phonenumbers_version": version("phonenumbers"),
        "python": platform.python_version(),
        "nlp_engine": nlp_desc,
        "spacy_model_used": nlp_desc.startswith("spacy model"),
        "patterns_only": nlp_desc.startswith("none"),
        "score_threshold": analyzer.default_score_threshold,
        "entities_requested": entities,
        "entity_map": ENTITY_MAP,
        "unsupported_types": UNSUPPORTED,
        "recognizers": sorted({r.name for r in analyzer.get_recognizers("en")
                               if set(r.supported_entities) & set(entities)}),
        "sentences": len(texts),
        "utf8_bytes": nbytes,
        "warmup_sentences": min(args.warmup, len(texts)),
        "init_seconds": round(init_s, 3),
        "timed_passes": args.repeat,
        "elapsed_seconds_per_pass": [round(r, 3) for r in runs],
        "elapsed_seconds": round(elapsed, 3),  # median pass
        "sentences_per_second": round(len(texts) / elapsed, 1),
        "mb_per_second": round(nbytes / 1e6 / elapsed, 4),
        # Fastest pass: the least disturbed by other load on the machine.
        "best_sentences_per_second": round(len(texts) / min(runs), 1),
        "best_mb_per_second": round(nbytes / 1e6 / min(runs), 4),
        "processes": 1,
        # The host may be busy (e.g. a compile); the load average tells a reader how much.
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    with open(args.stats, "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    print(f"presidio {stats['presidio_analyzer_version']} ({nlp_desc}): {len(texts)} sentences in {elapsed:.2f}s = "
          f"{stats['sentences_per_second']} sentences/s, {stats['mb_per_second']} MB/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
