//! Each provider's health on this replica, shared by every request: its
//! circuit breaker (outlier ejection: a provider that keeps failing is
//! skipped until a probe succeeds) and its quota (a provider that answered
//! 429 with a reset time, or says its request allowance is spent, is
//! skipped until the reset instead of being tried and failing).
//!
//! A healthy gateway pays one atomic load per attempt: providers enter the
//! table only when they fail or run out of quota, and leave it when healthy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tollgate_config::push::{CircuitState, ProviderCircuit};
use tollgate_config::snapshot::Provider;

use crate::breaker::{Breaker, Gate, Policy, State};

/// Longest a provider is skipped for its quota, whatever it says.
const MAX_QUOTA_WAIT: Duration = Duration::from_secs(300);

/// Why a provider is not tried now, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    CircuitOpen(Duration),
    QuotaSpent(Duration),
}

#[derive(Debug, Default)]
struct Entry {
    breaker: Breaker,
    quota_until: Option<Instant>,
}

impl Entry {
    /// Nothing to remember: closed, no failure in its window, quota left.
    fn healthy(&self, now: Instant) -> bool {
        !self.breaker.is_open()
            && !self.breaker.failed_lately()
            && self.quota_until.is_none_or(|until| until <= now)
    }
}

/// A change of a provider's breaker, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: State,
}

#[derive(Debug, Default)]
pub struct ProviderHealth {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    /// `entries.len()`, read without the lock.
    tracked: AtomicUsize,
    /// Poked when a breaker changes state, so the controller hears of it
    /// before the next periodic report.
    changed: tokio::sync::Notify,
}

impl ProviderHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, entries: &HashMap<Arc<str>, Entry>) {
        self.tracked.store(entries.len(), Ordering::Relaxed);
    }

    /// `Ok` when `provider` may be tried now (`Ok(true)`: half-open, this
    /// attempt is the probe), else why not.
    pub fn check(&self, provider: &Provider, now: Instant) -> Result<bool, Skip> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(false);
        }
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&provider.name) else {
            return Ok(false);
        };
        if let Some(until) = entry.quota_until.filter(|until| *until > now) {
            return Err(Skip::QuotaSpent(until - now));
        }
        match entry.breaker.gate(now) {
            Gate::Pass => Ok(entry.breaker.state(now) == State::HalfOpen),
            Gate::Refuse(wait) => Err(Skip::CircuitOpen(wait)),
        }
    }

    /// Records an attempt's outcome under the provider's own breaker
    /// settings (`spec.circuitBreaker`); nothing when its breaker is off.
    /// `Some` when the breaker changed state.
    pub fn record_outcome(
        &self,
        provider: &Provider,
        success: bool,
        now: Instant,
    ) -> Option<Transition> {
        let config = &provider.circuit_breaker;
        if config.disabled {
            return None;
        }
        let policy = Policy {
            consecutive: config.consecutive_failures,
            error_rate_percent: config.error_rate_percent,
            min_samples: config.min_requests,
            open_for: Duration::from_millis(config.open_for_ms),
        };
        self.record(provider, &policy, success, now)
    }

    /// Records an attempt's outcome; `Some` when the breaker changed state.
    pub fn record(
        &self,
        provider: &Provider,
        policy: &Policy,
        success: bool,
        now: Instant,
    ) -> Option<Transition> {
        if success && self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut entries = self.lock();
        if success && !entries.contains_key(&provider.name) {
            return None;
        }
        let entry = entries.entry(provider.name.clone()).or_default();
        let before = entry.breaker.state(now);
        entry.breaker.record_with(policy, success, now);
        let after = entry.breaker.state(now);
        if entry.healthy(now) {
            entries.remove(&provider.name);
        }
        self.settle(&entries);
        drop(entries);
        let transition = (before != after).then_some(Transition { to: after });
        if transition.is_some() {
            self.changed.notify_one();
        }
        transition
    }

    /// Poked on every breaker transition (a stored permit: one that happens
    /// while nobody waits is not lost).
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// The provider's quota is spent for `wait` (capped at five minutes).
    pub fn quota_spent(&self, provider: &Provider, wait: Duration, now: Instant) {
        let mut entries = self.lock();
        let entry = entries.entry(provider.name.clone()).or_default();
        entry.quota_until = Some(now + wait.min(MAX_QUOTA_WAIT));
        self.settle(&entries);
    }

    /// Every tracked provider's breaker state now.
    pub fn states(&self, now: Instant) -> Vec<(Arc<str>, State)> {
        let entries = self.lock();
        let mut states: Vec<_> = entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.breaker.state(now)))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// The providers among `served` whose breaker is not closed now, sorted:
    /// what this replica reports to the controller. A provider no longer
    /// served keeps its entry here but is not reported.
    pub fn circuits<'a>(
        &self,
        served: impl IntoIterator<Item = &'a Provider>,
        now: Instant,
    ) -> Vec<ProviderCircuit> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let entries = self.lock();
        let mut out: Vec<ProviderCircuit> = served
            .into_iter()
            .filter_map(|provider| {
                let state = match entries.get(&provider.name)?.breaker.state(now) {
                    State::Closed => return None,
                    State::Open => CircuitState::Open,
                    State::HalfOpen => CircuitState::HalfOpen,
                };
                Some(ProviderCircuit {
                    provider: provider.name.to_string(),
                    state,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// How long a provider's quota stays spent, from its answer: on a 429,
/// `retry-after-ms`, `Retry-After` (seconds), or the rate-limit reset
/// headers of OpenAI (`x-ratelimit-reset-requests`, `…-tokens`: `1m30s`)
/// and Anthropic (`anthropic-ratelimit-*-reset`: an RFC 3339 time); on a
/// success, the reset when `x-ratelimit-remaining-requests` (or Anthropic's
/// `…-requests-remaining`) says none are left. `None`: no reason to skip.
pub fn quota_reset(status: u16, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let reset = || {
        header("x-ratelimit-reset-requests")
            .or_else(|| header("x-ratelimit-reset-tokens"))
            .and_then(go_duration)
            .or_else(|| {
                header("anthropic-ratelimit-requests-reset")
                    .or_else(|| header("anthropic-ratelimit-tokens-reset"))
                    .and_then(rfc3339_seconds)
                    .and_then(|at| {
                        let at = UNIX_EPOCH + Duration::from_secs(at);
                        at.duration_since(now).ok()
                    })
            })
    };
    if status == 429 {
        header("retry-after-ms")
            .and_then(|ms| ms.trim().parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_millis(ms as u64))
            .or_else(|| {
                header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            })
            .or_else(reset)
            // A 429 that says nothing: a second, so the next request tries
            // another backend rather than this one again at once.
            .or(Some(Duration::from_secs(1)))
    } else if (200..300).contains(&status) {
        let spent = |name: &str| header(name).is_some_and(|v| v.trim() == "0");
        if spent("x-ratelimit-remaining-requests")
            || spent("anthropic-ratelimit-requests-remaining")
        {
            reset()
        } else {
            None
        }
    } else {
        None
    }
}

/// A Go-style duration as OpenAI sends it: `20ms`, `1s`, `6m0s`, `1h2m3.5s`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += value * unit;
        any = true;
    }
    (any && number.is_empty() && total.is_finite()).then(|| Duration::from_secs_f64(total))
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-12-07T10:00:00Z`,
/// fractions ignored).
fn rfc3339_seconds(text: &str) -> Option<u64> {
    let text = text.trim().strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let time = time.split('.').next()?;
    let mut time = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (time.next()??, time.next()??, time.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> Provider {
        serde_json::from_value(serde_json::json!({
            "name": name, "providerType": "Mock", "baseUrl": "http://127.0.0.1:1/v1",
            "connectTimeoutMs": 1, "requestTimeoutMs": 1, "models": {},
        }))
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_failing_provider_is_skipped_then_probed_and_forgotten_once_healthy() {
        let health = ProviderHealth::default();
        let primary = provider("primary");
        let policy = Policy {
            consecutive: 3,
            open_for: Duration::from_secs(10),
            ..Policy::default()
        };
        let t0 = Instant::now();
        assert_eq!(health.check(&primary, t0), Ok(false));
        assert_eq!(health.record(&primary, &policy, true, t0), None);
        assert!(
            health.states(t0).is_empty(),
            "healthy providers are not tracked"
        );
        health.record(&primary, &policy, false, t0);
        health.record(&primary, &policy, false, t0);
        let opened = health.record(&primary, &policy, false, t0);
        assert_eq!(opened, Some(Transition { to: State::Open }));
        assert_eq!(
            health.check(&primary, t0),
            Err(Skip::CircuitOpen(Duration::from_secs(10)))
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(health.check(&primary, later), Ok(true), "the probe");
        assert!(matches!(
            health.check(&primary, later),
            Err(Skip::CircuitOpen(_))
        ));
        let closed = health.record(&primary, &policy, true, later);
        assert_eq!(closed, Some(Transition { to: State::Closed }));
        assert!(health.states(later).is_empty(), "closed afresh: forgotten");
        assert_eq!(health.check(&primary, later), Ok(false));
        // A failure among successes is remembered until its window is clean.
        health.record(&primary, &policy, false, later);
        assert_eq!(
            health.states(later),
            [(primary.name.clone(), State::Closed)]
        );
        for _ in 0..crate::breaker::WINDOW {
            health.record(&primary, &policy, true, later);
        }
        assert!(health.states(later).is_empty());
        assert_eq!(health.check(&primary, later), Ok(false));
    }

    #[test]
    fn circuits_list_served_providers_that_are_not_closed() {
        let health = ProviderHealth::default();
        let (open, probing, flaky, gone) = (
            provider("open"),
            provider("probing"),
            provider("flaky"),
            provider("gone"),
        );
        let policy = Policy {
            consecutive: 2,
            open_for: Duration::from_secs(10),
            ..Policy::default()
        };
        let t0 = Instant::now();
        assert!(health.circuits([&open], t0).is_empty());
        for p in [&open, &open, &gone, &gone, &flaky] {
            health.record(p, &policy, false, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        for _ in 0..2 {
            health.record(&probing, &policy, false, t1);
        }
        let later = t0 + Duration::from_secs(10);
        let circuits = health.circuits([&probing, &flaky, &open, &open], later);
        let got: Vec<(&str, CircuitState)> = circuits
            .iter()
            .map(|c| (c.provider.as_str(), c.state))
            .collect();
        assert_eq!(
            got,
            [
                ("open", CircuitState::HalfOpen),
                ("probing", CircuitState::Open)
            ],
            "sorted, once each; closed (flaky) and unserved (gone) left out"
        );
    }

    #[test]
    fn a_spent_quota_skips_the_provider_until_its_reset() {
        let health = ProviderHealth::default();
        let primary = provider("primary");
        let t0 = Instant::now();
        health.quota_spent(&primary, Duration::from_secs(2), t0);
        assert_eq!(
            health.check(&primary, t0),
            Err(Skip::QuotaSpent(Duration::from_secs(2)))
        );
        assert_eq!(
            health.check(&primary, t0 + Duration::from_secs(2)),
            Ok(false)
        );
        health.quota_spent(&primary, Duration::from_secs(3600), t0);
        assert_eq!(
            health.check(&primary, t0),
            Err(Skip::QuotaSpent(MAX_QUOTA_WAIT)),
            "capped"
        );
    }

    #[test]
    fn reset_times_are_read_from_every_provider_dialect() {
        let now =
            UNIX_EPOCH + Duration::from_secs(rfc3339_seconds("2026-12-07T10:00:00Z").unwrap());
        let reset =
            |status, pairs: &[(&'static str, &str)]| quota_reset(status, &headers(pairs), now);
        assert_eq!(
            reset(429, &[("retry-after", "7")]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            reset(429, &[("retry-after-ms", "250.5"), ("retry-after", "7")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            reset(429, &[("x-ratelimit-reset-requests", "1m30s")]),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            reset(
                429,
                &[("anthropic-ratelimit-requests-reset", "2026-12-07T10:00:42Z")]
            ),
            Some(Duration::from_secs(42))
        );
        assert_eq!(reset(429, &[]), Some(Duration::from_secs(1)));
        assert_eq!(
            reset(
                200,
                &[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "20ms")
                ]
            ),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            reset(
                200,
                &[
                    ("x-ratelimit-remaining-requests", "12"),
                    ("x-ratelimit-reset-requests", "20ms")
                ]
            ),
            None
        );
        assert_eq!(reset(500, &[("retry-after", "7")]), None);
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(go_duration("soon"), None);
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_seconds("2000-03-01T00:00:00.123Z"),
            Some(951_868_800)
        );
    }
}
