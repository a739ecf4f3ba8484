//! Regression floor on the labelled corpus (`tests/pii/corpus.jsonl`): per
//! type, precision and recall of exact span matches stay at or above
//! `FLOOR`. The full side-by-side with Presidio (overlap scoring, throughput)
//! is `make eval-pii`; this keeps a recognizer change from quietly losing
//! ground.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_guard::{Kind, Recognizers};

const FLOOR: f64 = 0.95;

#[test]
fn every_kind_keeps_its_precision_and_recall_on_the_corpus() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/pii/corpus.jsonl");
    let corpus = std::fs::read_to_string(path).expect("tests/pii/corpus.jsonl");
    let recognizers = Recognizers::new();
    // kind -> (true positives, predicted, gold)
    let mut counts: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).expect("a JSON line");
        let text = value["text"].as_str().expect("text");
        // Code point offsets, as the corpus has them.
        let char_at = |byte: usize| text[..byte].chars().count() as u64;
        let predicted: Vec<(u64, u64, &str)> = recognizers
            .scan(text)
            .into_iter()
            .map(|f| (char_at(f.start), char_at(f.end), f.kind.as_str()))
            .collect();
        let gold: Vec<(u64, u64, &'static str)> = value["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|s| {
                (
                    s["start"].as_u64().expect("start"),
                    s["end"].as_u64().expect("end"),
                    kind_named(s["type"].as_str().expect("type")),
                )
            })
            .collect();
        for p in &predicted {
            let entry = counts.entry(p.2).or_default();
            entry.1 += 1;
            if gold.contains(p) {
                entry.0 += 1;
            }
        }
        for g in &gold {
            counts.entry(g.2).or_default().2 += 1;
        }
    }
    for kind in Kind::ALL {
        let (tp, predicted, gold) = counts.get(kind.as_str()).copied().unwrap_or_default();
        assert!(gold > 0, "{}: no labelled examples", kind.as_str());
        let precision = f64::from(tp) / f64::from(predicted.max(1));
        let recall = f64::from(tp) / f64::from(gold);
        eprintln!(
            "{:<12} precision {precision:.3} recall {recall:.3} ({tp} of {gold}, {predicted} found)",
            kind.as_str()
        );
        assert!(
            precision >= FLOOR && recall >= FLOOR,
            "{}: precision {precision:.3}, recall {recall:.3} below {FLOOR}",
            kind.as_str()
        );
    }
}

/// The static name of a corpus type (every corpus type is a [`Kind`]).
fn kind_named(name: &str) -> &'static str {
    Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .find(|k| *k == name)
        .unwrap_or_else(|| panic!("unknown corpus type {name}"))
}
