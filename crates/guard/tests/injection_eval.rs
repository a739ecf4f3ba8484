//! The injection heuristics against the labelled sets in `tests/injection/`:
//! precision and recall at the default threshold, overall and by channel
//! (user, document, tool result). `dev.jsonl` is what the heuristics were
//! tuned on; `test.jsonl` was written separately and held out, so its
//! figures are the honest ones. Run with `--nocapture` to see the tables.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_guard::injection::{DEFAULT_THRESHOLD, InjectionDetector};

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
    tn: u32,
}

impl Counts {
    fn precision(self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fp).max(1))
    }
    fn recall(self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fn_).max(1))
    }
    fn add(&mut self, malicious: bool, flagged: bool) {
        match (malicious, flagged) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
}

/// Overall counts, and by channel, for one file; the misses are printed.
fn evaluate(file: &str) -> (Counts, BTreeMap<String, Counts>) {
    let path = format!(
        "{}/../../tests/injection/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let detector = InjectionDetector::new();
    let mut overall = Counts::default();
    let mut by_channel: BTreeMap<String, Counts> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let example: Value = serde_json::from_str(line).expect("a JSON line");
        let malicious = example["label"] == "injection";
        let verdict = detector.assess(example["text"].as_str().expect("text"));
        let flagged = verdict.flagged(DEFAULT_THRESHOLD);
        overall.add(malicious, flagged);
        let channel = example["channel"].as_str().unwrap_or("?").to_string();
        by_channel
            .entry(channel)
            .or_default()
            .add(malicious, flagged);
        if malicious != flagged {
            eprintln!(
                "{file} {} {}: {} (score {:.2}, {:?})",
                example["id"],
                if flagged { "false positive" } else { "missed" },
                example["technique"],
                verdict.score,
                verdict.signals
            );
        }
    }
    eprintln!(
        "{file}: precision {:.3} recall {:.3} (tp {} fp {} fn {} tn {})",
        overall.precision(),
        overall.recall(),
        overall.tp,
        overall.fp,
        overall.fn_,
        overall.tn
    );
    for (channel, c) in &by_channel {
        eprintln!(
            "  {channel:<12} precision {:.3} recall {:.3} (tp {} fp {} fn {} tn {})",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_,
            c.tn
        );
    }
    (overall, by_channel)
}

#[test]
fn heuristics_on_the_development_set() {
    let (overall, _) = evaluate("dev.jsonl");
    assert!(
        overall.precision() >= 0.9,
        "dev precision {:.3}",
        overall.precision()
    );
    assert!(
        overall.recall() >= 0.8,
        "dev recall {:.3}",
        overall.recall()
    );
}

#[test]
fn heuristics_on_the_held_out_set() {
    let (overall, _) = evaluate("test.jsonl");
    // Not seen while tuning: recall here is far below dev's (0.33 when
    // written), the heuristics' honest limit and why a policy may add a
    // classifier. The floor only keeps a change from making it worse.
    assert!(
        overall.precision() >= 0.85,
        "held-out precision {:.3}",
        overall.precision()
    );
    assert!(
        overall.recall() >= 0.3,
        "held-out recall {:.3}",
        overall.recall()
    );
}
