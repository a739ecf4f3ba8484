//! Latency summaries, added-latency and ratio arithmetic, pass/fail checks.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Histograms record nanoseconds, 3 significant digits, up to 60 s.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().clamp(1, u64::MAX as u128) as u64);
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1e3,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Latency a proxy adds on top of talking to the mock directly.
///
/// This is a difference of percentiles (p50 via proxy − p50 direct), not a
/// percentile of per-request differences: the two runs are separate
/// samples, so that is the only meaningful comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AddedLatency {
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn added_latency(target: &LatencySummary, direct: &LatencySummary) -> AddedLatency {
    AddedLatency {
        p50_us: target.p50_us - direct.p50_us,
        p99_us: target.p99_us - direct.p99_us,
    }
}

/// Added latencies below this are within loopback/timer noise; a baseline
/// (nginx) figure is clamped up to it so a near-zero or negative baseline
/// does not make any ratio explode or flip sign.
pub const LATENCY_NOISE_FLOOR_US: f64 = 5.0;
/// Same idea for CPU µs/request (tick resolution is 10 ms per phase).
pub const CPU_NOISE_FLOOR_US: f64 = 1.0;

/// `value / max(baseline, floor)`; `None` if either input is missing/NaN.
pub fn ratio(value: f64, baseline: f64, floor: f64) -> Option<f64> {
    if !value.is_finite() || !baseline.is_finite() {
        return None;
    }
    Some(value / baseline.max(floor))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass(String),
    Fail(String),
    Skipped(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass(_) => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skipped(_) => "SKIP",
        }
    }
    pub fn detail(&self) -> &str {
        match self {
            Verdict::Pass(d) | Verdict::Fail(d) | Verdict::Skipped(d) => d,
        }
    }
}

/// `value <= factor * baseline`, with the baseline clamped to `floor`.
pub fn check_ratio(value: f64, baseline: f64, factor: f64, floor: f64, unit: &str) -> Verdict {
    match ratio(value, baseline, floor) {
        None => Verdict::Skipped("missing data".into()),
        Some(r) => {
            let d = format!(
                "{value:.1}{unit} vs baseline {baseline:.1}{unit} (ratio {r:.2}, limit {factor:.1}x)"
            );
            if r <= factor {
                Verdict::Pass(d)
            } else {
                Verdict::Fail(d)
            }
        }
    }
}

/// `value < limit`.
pub fn check_below(value: f64, limit: f64, unit: &str) -> Verdict {
    if !value.is_finite() {
        return Verdict::Skipped("missing data".into());
    }
    let d = format!("{value:.1}{unit} (limit < {limit:.1}{unit})");
    if value < limit {
        Verdict::Pass(d)
    } else {
        Verdict::Fail(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            p50_us: p50,
            p99_us: p99,
            ..Default::default()
        }
    }

    #[test]
    fn histogram_percentiles_in_us() {
        let mut h = new_histogram();
        for i in 1..=1000u64 {
            record(&mut h, Duration::from_micros(i));
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 1000);
        // 3 significant digits: within 0.1%.
        assert!((s.p50_us - 500.0).abs() <= 0.5, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{}", s.p99_us);
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{}", s.max_us);
        assert_eq!(LatencySummary::from_histogram(&new_histogram()).count, 0);
    }

    #[test]
    fn added_latency_is_difference_of_percentiles() {
        let a = added_latency(&summary(180.0, 450.0), &summary(100.0, 300.0));
        assert_eq!(
            a,
            AddedLatency {
                p50_us: 80.0,
                p99_us: 150.0
            }
        );
        // Noise can make a proxy look faster than direct; keep the sign.
        let b = added_latency(&summary(95.0, 290.0), &summary(100.0, 300.0));
        assert_eq!(b.p50_us, -5.0);
    }

    #[test]
    fn ratio_clamps_baseline() {
        assert_eq!(ratio(60.0, 30.0, 5.0), Some(2.0));
        // Baseline below the floor (or negative) is clamped.
        assert_eq!(ratio(10.0, 1.0, 5.0), Some(2.0));
        assert_eq!(ratio(10.0, -3.0, 5.0), Some(2.0));
        assert_eq!(ratio(f64::NAN, 3.0, 5.0), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(check_ratio(60.0, 30.0, 2.0, 5.0, "us").label(), "PASS");
        assert_eq!(check_ratio(61.0, 30.0, 2.0, 5.0, "us").label(), "FAIL");
        assert_eq!(check_ratio(f64::NAN, 30.0, 2.0, 5.0, "us").label(), "SKIP");
        assert_eq!(check_below(0.4, 0.5, "ms").label(), "PASS");
        assert_eq!(check_below(0.5, 0.5, "ms").label(), "FAIL");
    }
}
