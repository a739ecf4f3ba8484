//! Spike detection for one counter of usage (a budget's member, or the whole
//! group): tokens per interval against an exponentially weighted baseline of
//! past intervals. Pure: time comes in as Unix milliseconds.
//!
//! * The baseline learns only from intervals that are not spikes, so an
//!   incident does not teach it that the spike is normal.
//! * A spike is judged as soon as the current interval's tokens so far pass
//!   `factor × baseline`, so detection takes less than one interval.
//! * One alert per incident: the incident lasts until a whole interval is
//!   back under the threshold, and after an alert the tracker stays quiet
//!   for the cooldown whatever happens.

use tollgate_config::snapshot::budget::AlertPolicy;

/// Weight of the newest interval in the baseline.
const ALPHA: f64 = 0.3;
/// A baseline below this many tokens per interval counts as this much, so
/// a near-idle member going to a trickle is not a 10× "spike".
const MIN_BASELINE: f64 = 100.0;
/// Longer gaps than this many intervals are not replayed one by one.
const MAX_REPLAYED_GAP: i64 = 1_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    /// Tokens in the current interval so far.
    pub tokens: u64,
    /// The baseline tokens per interval it was judged against.
    pub baseline: f64,
    pub factor: u32,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    interval_ms: i64,
    factor: f64,
    warmup: u32,
    cooldown_ms: i64,
    /// Start of the current interval.
    start: i64,
    tokens: u64,
    baseline: f64,
    intervals_seen: u32,
    in_incident: bool,
    quiet_until: i64,
}

impl Tracker {
    pub fn new(policy: &AlertPolicy, now_ms: i64) -> Self {
        let interval_ms = i64::try_from(policy.interval_ms.max(1)).unwrap_or(i64::MAX);
        Self {
            interval_ms,
            factor: f64::from(policy.spike_factor),
            warmup: policy.warmup_intervals,
            cooldown_ms: i64::try_from(policy.cooldown_ms).unwrap_or(i64::MAX),
            start: now_ms - now_ms.rem_euclid(interval_ms),
            tokens: 0,
            baseline: 0.0,
            intervals_seen: 0,
            in_incident: false,
            quiet_until: i64::MIN,
        }
    }

    fn threshold(&self) -> f64 {
        self.factor * self.baseline.max(MIN_BASELINE)
    }

    fn warmed(&self) -> bool {
        self.intervals_seen >= self.warmup
    }

    /// Closes every interval that ended before `now_ms`.
    fn roll(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.start).div_euclid(self.interval_ms);
        if elapsed <= 0 {
            return;
        }
        for i in 0..elapsed.min(MAX_REPLAYED_GAP) {
            let tokens = if i == 0 { self.tokens as f64 } else { 0.0 };
            let spike = self.warmed() && tokens > self.threshold();
            if spike {
                // Still in the incident; the baseline does not learn it.
                continue;
            }
            self.in_incident = false;
            self.baseline = if self.intervals_seen == 0 {
                tokens
            } else {
                ALPHA * tokens + (1.0 - ALPHA) * self.baseline
            };
            self.intervals_seen = self.intervals_seen.saturating_add(1);
        }
        self.start += elapsed * self.interval_ms;
        self.tokens = 0;
    }

    /// Counts `tokens` used at `now_ms`; `Some` when this starts an incident
    /// that is not within the cooldown of the last alert.
    pub fn record(&mut self, tokens: u64, now_ms: i64) -> Option<Spike> {
        self.roll(now_ms);
        self.tokens = self.tokens.saturating_add(tokens);
        if !self.warmed() || self.in_incident || (self.tokens as f64) <= self.threshold() {
            return None;
        }
        self.in_incident = true;
        if now_ms < self.quiet_until {
            return None;
        }
        self.quiet_until = now_ms.saturating_add(self.cooldown_ms);
        Some(Spike {
            tokens: self.tokens,
            baseline: self.baseline,
            factor: self.factor as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AlertPolicy {
        AlertPolicy {
            spike_factor: 10,
            interval_ms: 1_000,
            warmup_intervals: 3,
            cooldown_ms: 10_000,
            webhook: None,
            throttle_offender: None,
        }
    }

    /// `per_interval` tokens in 10 requests per interval, for `intervals`.
    fn steady(t: &mut Tracker, now: &mut i64, per_interval: u64, intervals: u32) -> Vec<Spike> {
        let mut spikes = Vec::new();
        for _ in 0..intervals * 10 {
            spikes.extend(t.record(per_interval / 10, *now));
            *now += 100;
        }
        spikes
    }

    #[test]
    fn steady_load_never_alerts_and_a_spike_alerts_once() {
        let mut now = 1_000_000;
        let mut t = Tracker::new(&policy(), now);
        assert!(steady(&mut t, &mut now, 1_000, 10).is_empty());
        // 10× for 5 intervals: one alert, within the first interval.
        let start = now;
        let spikes = steady(&mut t, &mut now, 12_000, 5);
        assert_eq!(spikes.len(), 1, "{spikes:?}");
        assert!((spikes[0].baseline - 1_000.0).abs() < 1.0, "{spikes:?}");
        assert!(now - start >= 5_000);
        // Back to normal: the baseline did not learn the spike.
        assert!(steady(&mut t, &mut now, 1_000, 3).is_empty());
        assert!((t.baseline - 1_000.0).abs() < 1.0, "{}", t.baseline);
    }

    #[test]
    fn detection_takes_less_than_one_interval() {
        let mut now = 5_000_000;
        let mut t = Tracker::new(&policy(), now);
        steady(&mut t, &mut now, 1_000, 5);
        // The 11th request of 1,000 tokens within one interval crosses 10×.
        let start = now;
        let fired = (0..20).find_map(|i| t.record(1_000, start + i * 10).map(|_| i));
        assert_eq!(fired, Some(10));
    }

    #[test]
    fn a_second_incident_within_the_cooldown_is_quiet_and_after_it_alerts() {
        let mut now = 9_000_000;
        let mut t = Tracker::new(&policy(), now);
        steady(&mut t, &mut now, 1_000, 5);
        assert_eq!(steady(&mut t, &mut now, 20_000, 1).len(), 1);
        steady(&mut t, &mut now, 1_000, 2);
        assert!(steady(&mut t, &mut now, 20_000, 1).is_empty(), "cooldown");
        steady(&mut t, &mut now, 1_000, 8);
        assert_eq!(
            steady(&mut t, &mut now, 20_000, 1).len(),
            1,
            "after cooldown"
        );
    }

    #[test]
    fn no_alert_before_warm_up_or_from_a_near_idle_baseline() {
        let mut now = 0;
        let mut t = Tracker::new(&policy(), now);
        assert!(
            steady(&mut t, &mut now, 50_000, 2).is_empty(),
            "not warmed up"
        );
        let mut t = Tracker::new(&policy(), now);
        steady(&mut t, &mut now, 10, 5);
        // 10 → 500 tokens is 50×, but under 10 × the 100-token floor.
        assert!(steady(&mut t, &mut now, 500, 2).is_empty());
    }
}
