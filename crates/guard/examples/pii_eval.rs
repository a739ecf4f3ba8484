//! Runs the recognizers over the labelled corpus (`tests/pii/corpus.jsonl`)
//! and writes predictions in the format `tests/pii/score.py` scores (code
//! point offsets), plus throughput: sentences and megabytes per second on
//! one thread, the same measure as `tests/pii/presidio_eval.py`.
//!
//! cargo run --release -p tollgate-guard --example pii_eval -- \
//!     tests/pii/corpus.jsonl preds.jsonl stats.json

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_guard::Recognizers;

/// The timed passes run until at least this long has been measured.
const MIN_MEASURED: Duration = Duration::from_secs(2);
/// And at most this many passes over the corpus.
const MAX_PASSES: u32 = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, corpus, predictions, stats] = args.as_slice() else {
        return Err("usage: pii_eval CORPUS.jsonl PREDICTIONS.jsonl STATS.json".into());
    };
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(corpus)?).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)?;
        let id = value["id"].clone();
        let text = value["text"]
            .as_str()
            .ok_or("a line without text")?
            .to_string();
        lines.push((id, text));
    }
    let recognizers = Recognizers::new();

    let mut out = std::io::BufWriter::new(std::fs::File::create(predictions)?);
    for (id, text) in &lines {
        let spans: Vec<Value> = recognizers
            .scan(text)
            .into_iter()
            .map(|f| {
                json!({
                    "start": text[..f.start].chars().count(),
                    "end": text[..f.end].chars().count(),
                    "type": f.kind.as_str(),
                })
            })
            .collect();
        writeln!(out, "{}", json!({"id": id, "spans": spans}))?;
    }
    out.flush()?;

    // Throughput: whole passes over the corpus, after one warm-up pass.
    let bytes: usize = lines.iter().map(|(_, t)| t.len()).sum();
    let mut found = 0usize;
    for (_, text) in &lines {
        found += recognizers.scan(text).len();
    }
    let started = Instant::now();
    let mut passes = 0u32;
    while passes < MAX_PASSES && (passes == 0 || started.elapsed() < MIN_MEASURED) {
        for (_, text) in &lines {
            found += std::hint::black_box(recognizers.scan(std::hint::black_box(text))).len();
        }
        passes += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sentences = lines.len() as f64 * f64::from(passes);
    let report = json!({
        "engine": "tollgate-guard",
        "sentences": lines.len(),
        "bytes": bytes,
        "passes": passes,
        "seconds": seconds,
        "sentences_per_second": sentences / seconds,
        "megabytes_per_second": bytes as f64 * f64::from(passes) / seconds / 1e6,
        "findings_seen": found,
    });
    std::fs::write(stats, serde_json::to_vec_pretty(&report)?)?;
    println!("{report}");
    Ok(())
}
