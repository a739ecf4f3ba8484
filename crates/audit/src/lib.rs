//! Tamper-evident audit records. Each gateway replica writes one JSON object
//! per line and chains them: every record carries its replica, a sequence
//! number, the hash of the replica's previous record (`prev`) and its own
//! `hash`, SHA-256 over its canonical JSON (keys sorted, no whitespace,
//! `hash` left out). Editing a record breaks its hash; removing one leaves a
//! gap in the sequence and a `prev` that no longer matches; editing one and
//! recomputing its hash breaks the next record's `prev`. [`verify`] reports
//! each of these with the line it was found on.
//!
//! Numbers in records should be integers (or decimal strings): a float's
//! text may not survive a JSON parser and encoder bit for bit, and the hash
//! covers it.
//!
//! What a chain alone cannot show: records cut off the end (the last one
//! verified is reported so it can be compared with what the sink received),
//! or a whole chain rewritten from some point on by someone who can write
//! the file (anchor the latest hash elsewhere for that).
//!
//! The pure part (this file) seals and verifies; [`AuditLog`] is the IO
//! edge that spools sealed records durably and delivers them to sinks.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

mod config;
mod deliver;
mod sink;
mod spool;

pub use config::{
    AuditConfig, FileSinkConfig, HttpDeliveryConfig, OtlpSinkConfig, SinkConfig, StdoutSinkConfig,
    WebhookSinkConfig,
};
pub use deliver::{BuildError, SinkError};
pub use sink::{AuditError, AuditLog, AuditStats, SinkStats};
pub use spool::RecoverError;

/// `prev` of a replica's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One replica's chain, as its writer keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    replica: String,
    seq: u64,
    prev: String,
}

impl Chain {
    /// A new chain: its first record gets `seq` 1 and `prev` [`GENESIS`].
    pub fn new(replica: impl Into<String>) -> Self {
        Self::resume(replica, 0, GENESIS)
    }

    /// A chain continued after its record `seq` with hash `prev` (a restart
    /// reading the last line of its own file).
    pub fn resume(replica: impl Into<String>, seq: u64, prev: impl Into<String>) -> Self {
        Self {
            replica: replica.into(),
            seq,
            prev: prev.into(),
        }
    }

    /// The seq of the last record sealed (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// `fields` made the next record: `replica`, `seq`, `prev` and `hash`
    /// added (any fields of those names are replaced).
    pub fn seal(&mut self, mut fields: Map<String, Value>) -> Value {
        self.seq += 1;
        fields.insert("replica".into(), Value::String(self.replica.clone()));
        fields.insert("seq".into(), Value::from(self.seq));
        fields.insert("prev".into(), Value::String(self.prev.clone()));
        fields.remove("hash");
        let hash = digest(&fields);
        fields.insert("hash".into(), Value::String(hash.clone()));
        self.prev = hash;
        Value::Object(fields)
    }
}

/// SHA-256 hex of `fields`' canonical JSON, without `hash`.
pub fn digest(fields: &Map<String, Value>) -> String {
    let mut canonical = Vec::with_capacity(256);
    write_canonical(
        &Value::Object(
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != "hash")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        &mut canonical,
    );
    hex::encode(Sha256::digest(&canonical))
}

/// JSON with object keys sorted at every level, whatever order the map
/// keeps them in, so a record hashes the same wherever it is parsed.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push(b'{');
            for (i, (key, value)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string cannot fail.
                out.extend(serde_json::to_vec(key).unwrap_or_default());
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

/// A problem [`verify`] found, with the 1-based line it is on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    #[error("line {line}: not an audit record: {why}")]
    Malformed { line: usize, why: String },
    #[error("line {line}: record {replica}#{seq} does not match its hash: it was edited")]
    Edited {
        line: usize,
        replica: String,
        seq: u64,
    },
    #[error(
        "line {line}: record {replica}#{seq} follows #{previous}: {} missing before it",
        missing(*previous, *seq)
    )]
    Missing {
        line: usize,
        replica: String,
        previous: u64,
        seq: u64,
    },
    #[error(
        "line {line}: record {replica}#{seq} does not link to the record before it (prev differs): that one was replaced or edited and re-hashed"
    )]
    BrokenLink {
        line: usize,
        replica: String,
        seq: u64,
    },
}

fn missing(previous: u64, seq: u64) -> String {
    match seq.saturating_sub(previous) {
        0 | 1 => format!("record #{seq} is repeated or out of order"),
        2 => format!("record #{} is", previous + 1),
        _ => format!("records #{}..#{} are", previous + 1, seq - 1),
    }
}

/// What a verified stream held, per replica: first and last sequence
/// number, the last hash, and whether the chain starts at its genesis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub chains: BTreeMap<String, ChainSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSummary {
    pub first: u64,
    pub last: u64,
    pub last_hash: String,
    /// False for a rotated segment that starts mid-chain.
    pub from_genesis: bool,
}

/// Checks records in the order written (several files: oldest first).
/// `lines` yields (1-based line number, text); blank lines are skipped.
/// Every problem is reported, not just the first.
pub fn verify<I, S>(lines: I) -> (Report, Vec<Tamper>)
where
    I: IntoIterator<Item = (usize, S)>,
    S: AsRef<str>,
{
    let mut report = Report::default();
    let mut problems = Vec::new();
    for (line, text) in lines {
        let text = text.as_ref();
        if text.trim().is_empty() {
            continue;
        }
        let fields = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                problems.push(Tamper::Malformed {
                    line,
                    why: "not a JSON object".into(),
                });
                continue;
            }
            Err(e) => {
                problems.push(Tamper::Malformed {
                    line,
                    why: e.to_string(),
                });
                continue;
            }
        };
        let (Some(replica), Some(seq), Some(prev), Some(hash)) = (
            fields.get("replica").and_then(Value::as_str),
            fields.get("seq").and_then(Value::as_u64),
            fields.get("prev").and_then(Value::as_str),
            fields.get("hash").and_then(Value::as_str),
        ) else {
            problems.push(Tamper::Malformed {
                line,
                why: "replica, seq, prev or hash missing".into(),
            });
            continue;
        };
        report.records += 1;
        let replica = replica.to_string();
        if digest(&fields) != hash {
            problems.push(Tamper::Edited {
                line,
                replica: replica.clone(),
                seq,
            });
        }
        match report.chains.get_mut(&replica) {
            None => {
                report.chains.insert(
                    replica,
                    ChainSummary {
                        first: seq,
                        last: seq,
                        last_hash: hash.to_string(),
                        from_genesis: seq == 1 && prev == GENESIS,
                    },
                );
            }
            Some(chain) => {
                if seq != chain.last + 1 {
                    problems.push(Tamper::Missing {
                        line,
                        replica: replica.clone(),
                        previous: chain.last,
                        seq,
                    });
                } else if prev != chain.last_hash {
                    problems.push(Tamper::BrokenLink {
                        line,
                        replica: replica.clone(),
                        seq,
                    });
                }
                chain.last = seq;
                chain.last_hash = hash.to_string();
            }
        }
    }
    (report, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(n: u64) -> Map<String, Value> {
        let Value::Object(fields) = json!({
            "kind": "llm",
            "principal": {"user": "ann", "team": "research"},
            "route": "default/chat",
            "decision": {"action": "allowed", "rules": []},
            "tokens": {"input": 10 + n, "output": 5},
        }) else {
            unreachable!()
        };
        fields
    }

    /// Lines of two interleaved replicas, `n` records each.
    fn log(n: u64) -> Vec<String> {
        let mut a = Chain::new("gw-a");
        let mut b = Chain::new("gw-b");
        (1..=n)
            .flat_map(|i| [a.seal(record(i)), b.seal(record(i))])
            .map(|v| v.to_string())
            .collect()
    }

    fn check(lines: &[String]) -> (Report, Vec<Tamper>) {
        verify(lines.iter().enumerate().map(|(i, l)| (i + 1, l)))
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (report, problems) = check(&log(5));
        assert_eq!(problems, []);
        assert_eq!(report.records, 10);
        let a = &report.chains["gw-a"];
        assert_eq!((a.first, a.last, a.from_genesis), (1, 5, true));
    }

    #[test]
    fn an_edited_record_is_found() {
        let mut lines = log(3);
        lines[2] = lines[2].replace("\"input\":12", "\"input\":1200");
        let (_, problems) = check(&lines);
        assert_eq!(
            problems,
            [Tamper::Edited {
                line: 3,
                replica: "gw-a".into(),
                seq: 2
            }]
        );
        assert_eq!(
            problems[0].to_string(),
            "line 3: record gw-a#2 does not match its hash: it was edited"
        );
    }

    #[test]
    fn a_removed_record_is_found() {
        let mut lines = log(4);
        lines.remove(2); // gw-a #2: gw-a #3 is now on line 4
        let (_, problems) = check(&lines);
        assert_eq!(
            problems,
            [Tamper::Missing {
                line: 4,
                replica: "gw-a".into(),
                previous: 1,
                seq: 3
            }]
        );
        assert!(problems[0].to_string().contains("record #2 is missing"));
    }

    #[test]
    fn an_edited_and_rehashed_record_breaks_the_next_link() {
        let mut lines = log(3);
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&lines[2]) else {
            panic!("a record")
        };
        fields.insert("route".into(), json!("default/other"));
        let hash = digest(&fields);
        fields.insert("hash".into(), json!(hash));
        lines[2] = Value::Object(fields).to_string();
        let (_, problems) = check(&lines);
        assert_eq!(
            problems,
            [Tamper::BrokenLink {
                line: 5,
                replica: "gw-a".into(),
                seq: 3
            }]
        );
    }

    #[test]
    fn a_rotated_segment_verifies_from_where_it_starts() {
        let lines = log(4);
        let (report, problems) = check(&lines[4..]);
        assert_eq!(problems, []);
        let a = &report.chains["gw-a"];
        assert_eq!((a.first, a.last, a.from_genesis), (3, 4, false));
    }

    #[test]
    fn the_hash_does_not_depend_on_key_order() {
        let mut chain = Chain::new("gw");
        let sealed = chain.seal(record(1)).to_string();
        // The same record with its keys in another order.
        let value: Value = serde_json::from_str(&sealed).unwrap();
        let Value::Object(fields) = value else {
            panic!()
        };
        let reversed: Map<String, Value> = fields.into_iter().rev().collect();
        let (_, problems) = check(&[Value::Object(reversed).to_string()]);
        assert_eq!(problems, []);
    }

    #[test]
    fn garbage_lines_are_reported_and_the_rest_still_checked() {
        let mut lines = log(2);
        lines.insert(1, "{not json".into());
        lines.insert(2, "[1,2]".into());
        let (report, problems) = check(&lines);
        assert_eq!(report.records, 4);
        assert_eq!(problems.len(), 2);
        assert!(matches!(problems[0], Tamper::Malformed { line: 2, .. }));
    }
}
