//! A circuit breaker, shared by LLM providers and MCP backends. Pure: time
//! comes in as an `Instant`.
//!
//! Closed, it counts outcomes. It opens after [`Policy::consecutive`]
//! failures in a row, or when at least [`Policy::min_samples`] of the last
//! [`WINDOW`] outcomes hold [`Policy::error_rate_percent`] failures or more.
//! Open, it refuses for [`Policy::open_for`]; then it is half-open and lets
//! one request through as a probe: its success closes the breaker, its
//! failure opens it again.

use std::time::{Duration, Instant};

/// Outcomes the error rate is measured over (a bit each).
pub const WINDOW: u32 = 32;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub consecutive: u32,
    pub error_rate_percent: u32,
    pub min_samples: u32,
    pub open_for: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            consecutive: 5,
            error_rate_percent: 50,
            min_samples: 20,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Breaker {
    /// Failures in a row.
    failures: u32,
    /// The last outcomes, newest in bit 0; 1 is a failure.
    recent: u32,
    /// How many of `recent`'s bits are outcomes (up to [`WINDOW`]).
    samples: u32,
    open_until: Option<Instant>,
    /// When the probe in flight started; a probe that never reports (its
    /// request ended some other way) is replaced after `open_for`.
    probing: Option<Instant>,
    open_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Pass,
    /// Open: refuse, retrying after this long.
    Refuse(Duration),
}

/// A breaker's state, for metrics and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl Breaker {
    pub fn gate(&mut self, now: Instant) -> Gate {
        match self.open_until {
            None => Gate::Pass,
            Some(until) if now < until => Gate::Refuse(until - now),
            // Half-open: one probe at a time.
            Some(_)
                if self
                    .probing
                    .is_some_and(|started| now < started + self.open_for) =>
            {
                Gate::Refuse(Duration::from_secs(1))
            }
            Some(_) => {
                self.probing = Some(now);
                Gate::Pass
            }
        }
    }

    /// Records an outcome with the [`Policy::default`] thresholds.
    pub fn record(&mut self, success: bool, now: Instant) {
        self.record_with(&Policy::default(), success, now);
    }

    pub fn record_with(&mut self, policy: &Policy, success: bool, now: Instant) {
        if success {
            if self.open_until.is_some() {
                // The probe succeeded: closed, counting afresh.
                *self = Self::default();
            }
            self.failures = 0;
            self.push(false);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.push(true);
        let failed = self.recent.count_ones() * 100;
        let rate_tripped = self.samples >= policy.min_samples.max(1)
            && failed >= policy.error_rate_percent * self.samples;
        if self.probing.is_some() || self.failures >= policy.consecutive.max(1) || rate_tripped {
            self.open_until = Some(now + policy.open_for);
            self.open_for = policy.open_for;
            self.probing = None;
        }
    }

    fn push(&mut self, failure: bool) {
        self.recent = (self.recent << 1) | u32::from(failure);
        self.samples = (self.samples + 1).min(WINDOW);
    }

    /// Whether any of the last [`WINDOW`] outcomes was a failure.
    pub fn failed_lately(&self) -> bool {
        self.recent != 0
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    pub fn state(&self, now: Instant) -> State {
        match self.open_until {
            None => State::Closed,
            Some(until) if now < until && self.probing.is_none() => State::Open,
            Some(_) => State::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_probes_and_closes() {
        let mut breaker = Breaker::default();
        let policy = Policy::default();
        let t0 = Instant::now();
        for _ in 0..policy.consecutive - 1 {
            assert_eq!(breaker.gate(t0), Gate::Pass);
            breaker.record(false, t0);
        }
        breaker.record(true, t0);
        assert!(!breaker.is_open(), "a success resets the count");
        for _ in 0..policy.consecutive {
            breaker.record(false, t0);
        }
        assert!(matches!(breaker.gate(t0), Gate::Refuse(d) if d == policy.open_for));
        assert_eq!(breaker.state(t0), State::Open);
        let later = t0 + policy.open_for;
        assert_eq!(breaker.gate(later), Gate::Pass, "the probe");
        assert_eq!(breaker.state(later), State::HalfOpen);
        assert!(
            matches!(breaker.gate(later), Gate::Refuse(_)),
            "one probe at a time"
        );
        breaker.record(false, later);
        assert!(matches!(breaker.gate(later), Gate::Refuse(d) if d == policy.open_for));
        let again = later + policy.open_for;
        assert_eq!(breaker.gate(again), Gate::Pass);
        breaker.record(true, again);
        assert_eq!(breaker.gate(again), Gate::Pass);
        assert!(!breaker.is_open());
        assert_eq!(breaker.state(again), State::Closed);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let policy = Policy::default();
        let mut breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..policy.consecutive {
            breaker.record(false, t0);
        }
        let half_open = t0 + policy.open_for;
        assert_eq!(breaker.gate(half_open), Gate::Pass, "a probe, lost");
        assert!(matches!(breaker.gate(half_open), Gate::Refuse(_)));
        assert_eq!(
            breaker.gate(half_open + policy.open_for),
            Gate::Pass,
            "another probe"
        );
    }

    #[test]
    fn a_high_error_rate_opens_it_without_failures_in_a_row() {
        let policy = Policy {
            consecutive: 100,
            error_rate_percent: 50,
            min_samples: 10,
            open_for: Duration::from_secs(5),
        };
        let mut breaker = Breaker::default();
        let now = Instant::now();
        // Alternating: never two failures in a row, half of them failures.
        for i in 0..9 {
            breaker.record_with(&policy, i % 2 == 0, now);
            assert!(!breaker.is_open(), "too few samples yet ({i})");
        }
        breaker.record_with(&policy, false, now);
        assert!(breaker.is_open(), "5 failures in the last 10");
        // One in four failing stays closed.
        let mut healthy = Breaker::default();
        for i in 0..200 {
            healthy.record_with(&policy, i % 4 != 0, now);
        }
        assert!(!healthy.is_open());
    }
}
