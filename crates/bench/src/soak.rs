//! Pure parts of `tollgate-soak`: the request mix, what each request kind
//! must get back, tallies, and the flatness verdict over resource samples.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// What a load worker sends. Each kind has one expected outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// OpenAI chat completion, passthrough to an OpenAI-format provider.
    Chat,
    /// The same, streamed; must end with `data: [DONE]`.
    ChatStream,
    /// OpenAI chat completion to an Anthropic-format provider (translated).
    Translated,
    /// The same, streamed.
    TranslatedStream,
    /// OpenAI embeddings.
    Embeddings,
    /// Anthropic Messages to an OpenAI-format provider (translated), streamed;
    /// must end with `message_stop`.
    MessagesStream,
    /// A key the gateway does not know: 401.
    BadKey,
    /// A model no route serves: 404.
    UnknownModel,
    /// A body that is not JSON: 400.
    BadJson,
    /// A stream the client drops after its first chunk (the gateway must
    /// release everything it held for it).
    AbandonedStream,
}

impl Kind {
    /// The status the client must see.
    pub fn expected_status(self) -> u16 {
        match self {
            Kind::BadKey => 401,
            Kind::UnknownModel => 404,
            Kind::BadJson => 400,
            _ => 200,
        }
    }

    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Kind::ChatStream
                | Kind::TranslatedStream
                | Kind::MessagesStream
                | Kind::AbandonedStream
        )
    }

    /// The text a complete answer of this kind ends with (streams) or
    /// contains (full bodies); `None` for error kinds and abandoned streams.
    pub fn completion_marker(self) -> Option<&'static str> {
        match self {
            Kind::Chat | Kind::Translated => Some("\"choices\""),
            Kind::ChatStream | Kind::TranslatedStream => Some("data: [DONE]"),
            Kind::Embeddings => Some("\"embedding\""),
            Kind::MessagesStream => Some("message_stop"),
            _ => None,
        }
    }
}

/// A weighted mix of kinds, walked deterministically: request `n` is
/// `pick(n)`, so every run of the same length sends the same mix.
#[derive(Clone, Debug)]
pub struct Mix {
    slots: Vec<Kind>,
}

impl Mix {
    pub fn new(weights: &[(Kind, usize)]) -> Self {
        // Interleave rather than block: the kinds stay mixed at every scale.
        let total: usize = weights.iter().map(|(_, w)| w).sum();
        let mut slots = Vec::with_capacity(total);
        let mut given = vec![0usize; weights.len()];
        for step in 1..=total {
            // The kind furthest behind its share so far goes next.
            let (index, _) = weights
                .iter()
                .enumerate()
                .map(|(i, (_, w))| (i, (*w * step) as f64 / total as f64 - given[i] as f64))
                .fold((0, f64::MIN), |best, candidate| {
                    if candidate.1 > best.1 {
                        candidate
                    } else {
                        best
                    }
                });
            given[index] += 1;
            slots.push(weights[index].0);
        }
        Mix { slots }
    }

    /// The soak's mix: mostly successful traffic of every shape, some
    /// errors and abandoned streams.
    pub fn soak() -> Self {
        Mix::new(&[
            (Kind::Chat, 30),
            (Kind::ChatStream, 20),
            (Kind::Translated, 10),
            (Kind::TranslatedStream, 10),
            (Kind::Embeddings, 5),
            (Kind::MessagesStream, 10),
            (Kind::BadKey, 4),
            (Kind::UnknownModel, 4),
            (Kind::BadJson, 2),
            (Kind::AbandonedStream, 5),
        ])
    }

    /// Chaos traffic: plain and streamed chat only.
    pub fn chaos() -> Self {
        Mix::new(&[(Kind::Chat, 3), (Kind::ChatStream, 2)])
    }

    pub fn pick(&self, n: u64) -> Kind {
        self.slots[(n % self.slots.len() as u64) as usize]
    }
}

/// What happened to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The expected status and, for success kinds, a complete answer.
    Ok,
    /// Anything else, with a short stable reason (`status 502`, `truncated`,
    /// `transport`, `timeout`).
    Failed(String),
}

/// Judges one answer: `status` and the whole `body` read (for abandoned
/// streams, whatever was read before dropping).
pub fn judge(kind: Kind, status: u16, body: &[u8]) -> Outcome {
    if status != kind.expected_status() {
        return Outcome::Failed(format!("status {status}"));
    }
    let Some(marker) = kind.completion_marker() else {
        return Outcome::Ok;
    };
    let text = String::from_utf8_lossy(body);
    // A stream that ended with an error event is not a success.
    if kind.is_stream() && (text.contains("\"error\"") || text.contains("event: error")) {
        return Outcome::Failed("error event in stream".into());
    }
    let complete = if kind.is_stream() {
        text.trim_end().ends_with(marker) || (kind == Kind::MessagesStream && text.contains(marker))
    } else {
        serde_json::from_slice::<serde_json::Value>(body).is_ok() && text.contains(marker)
    };
    if !complete {
        return Outcome::Failed("truncated or malformed answer".into());
    }
    Outcome::Ok
}

/// Counts per kind: successes and failures by reason, plus latencies.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    pub ok: BTreeMap<Kind, u64>,
    pub failed: BTreeMap<Kind, BTreeMap<String, u64>>,
    #[serde(skip)]
    latencies_ms: Vec<u32>,
}

impl Tally {
    pub fn record(&mut self, kind: Kind, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => *self.ok.entry(kind).or_default() += 1,
            Outcome::Failed(reason) => {
                *self
                    .failed
                    .entry(kind)
                    .or_default()
                    .entry(reason)
                    .or_default() += 1
            }
        }
        self.latencies_ms
            .push(latency.as_millis().min(u32::MAX as u128) as u32);
    }

    pub fn merge(&mut self, other: Tally) {
        for (kind, n) in other.ok {
            *self.ok.entry(kind).or_default() += n;
        }
        for (kind, reasons) in other.failed {
            let mine = self.failed.entry(kind).or_default();
            for (reason, n) in reasons {
                *mine.entry(reason).or_default() += n;
            }
        }
        self.latencies_ms.extend(other.latencies_ms);
    }

    pub fn total_ok(&self) -> u64 {
        self.ok.values().sum()
    }

    pub fn total_failed(&self) -> u64 {
        self.failed.values().flat_map(|r| r.values()).sum()
    }

    /// The `q` quantile (0..=1) of latencies, in milliseconds.
    pub fn latency_ms(&mut self, q: f64) -> u32 {
        if self.latencies_ms.is_empty() {
            return 0;
        }
        self.latencies_ms.sort_unstable();
        let index = ((self.latencies_ms.len() - 1) as f64 * q).round() as usize;
        self.latencies_ms[index]
    }

    /// `reason × n` for every failure, one line.
    pub fn failure_summary(&self) -> String {
        let mut parts = Vec::new();
        for (kind, reasons) in &self.failed {
            for (reason, n) in reasons {
                parts.push(format!("{kind:?}: {reason} ×{n}"));
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

/// One reading of the gateway process.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub at_s: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub requests: u64,
}

/// Whether RSS and open fds stayed flat: the median of the last tenth of the
/// samples against the median of the tenth after warm-up (the first tenth).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flatness {
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub fds_start: u64,
    pub fds_end: u64,
    pub flat: bool,
}

/// RSS may grow by this fraction, or [`RSS_SLACK_KIB`], whichever is larger
/// (allocator arenas settle for a while); fds by [`FD_SLACK`] (connections
/// open and close with the load).
pub const RSS_GROWTH_LIMIT: f64 = 0.10;
pub const RSS_SLACK_KIB: u64 = 4096;
pub const FD_SLACK: u64 = 16;

pub fn flatness(samples: &[Sample]) -> Option<Flatness> {
    if samples.len() < 10 {
        return None;
    }
    let tenth = samples.len() / 10;
    let median = |window: &[Sample], f: fn(&Sample) -> u64| {
        let mut values: Vec<u64> = window.iter().map(f).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    let start = &samples[tenth..2 * tenth];
    let end = &samples[samples.len() - tenth..];
    let rss_start = median(start, |s| s.rss_kib);
    let rss_end = median(end, |s| s.rss_kib);
    let fds_start = median(start, |s| s.fds);
    let fds_end = median(end, |s| s.fds);
    let rss_allowed = ((rss_start as f64 * RSS_GROWTH_LIMIT) as u64).max(RSS_SLACK_KIB);
    Some(Flatness {
        rss_start_kib: rss_start,
        rss_end_kib: rss_end,
        fds_start,
        fds_end,
        flat: rss_end <= rss_start + rss_allowed && fds_end <= fds_start + FD_SLACK,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_keeps_the_weights_and_interleaves() {
        let mix = Mix::soak();
        let counts = (0..100).fold(BTreeMap::new(), |mut m, n| {
            *m.entry(mix.pick(n)).or_insert(0) += 1;
            m
        });
        assert_eq!(counts[&Kind::Chat], 30);
        assert_eq!(counts[&Kind::BadJson], 2);
        assert_eq!(counts.values().sum::<i32>(), 100);
        // Interleaved: the first ten requests are not all one kind.
        let first: std::collections::BTreeSet<_> = (0..10).map(|n| mix.pick(n)).collect();
        assert!(first.len() >= 4, "{first:?}");
    }

    #[test]
    fn judge_wants_status_and_a_complete_answer() {
        assert_eq!(judge(Kind::Chat, 200, br#"{"choices":[]}"#), Outcome::Ok);
        assert!(matches!(
            judge(Kind::Chat, 200, br#"{"choices":["#),
            Outcome::Failed(_)
        ));
        assert_eq!(
            judge(Kind::Chat, 502, b"{}"),
            Outcome::Failed("status 502".into())
        );
        assert_eq!(
            judge(
                Kind::ChatStream,
                200,
                b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"
            ),
            Outcome::Ok
        );
        assert!(matches!(
            judge(Kind::ChatStream, 200, b"data: {\"choices\":[]}\n\n"),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            judge(
                Kind::ChatStream,
                200,
                b"data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n"
            ),
            Outcome::Failed(_)
        ));
        assert_eq!(judge(Kind::BadKey, 401, b"{}"), Outcome::Ok);
        assert_eq!(judge(Kind::AbandonedStream, 200, b"data: {"), Outcome::Ok);
    }

    fn samples(rss: impl Fn(usize) -> u64, fds: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..100)
            .map(|i| Sample {
                at_s: i as f64,
                rss_kib: rss(i),
                fds: fds(i),
                requests: i as u64,
            })
            .collect()
    }

    #[test]
    fn flat_when_growth_is_within_the_slack() {
        let f = flatness(&samples(|i| 20_000 + (i as u64 % 7) * 100, |_| 40)).unwrap();
        assert!(f.flat, "{f:?}");
        // Warm-up growth in the first tenth does not count.
        let f = flatness(&samples(|i| if i < 10 { 5_000 } else { 20_000 }, |_| 40)).unwrap();
        assert!(f.flat, "{f:?}");
    }

    #[test]
    fn a_leak_is_not_flat() {
        let rss_leak = flatness(&samples(|i| 20_000 + i as u64 * 200, |_| 40)).unwrap();
        assert!(!rss_leak.flat, "{rss_leak:?}");
        let fd_leak = flatness(&samples(|_| 20_000, |i| 40 + i as u64)).unwrap();
        assert!(!fd_leak.flat, "{fd_leak:?}");
        assert!(flatness(&samples(|_| 1, |_| 1)[..5]).is_none());
    }
}
