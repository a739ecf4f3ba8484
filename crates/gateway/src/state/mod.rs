//! Budget counters and rate-limit buckets: reserve an estimate against
//! several counters and take from several buckets at once (all fit or
//! nothing is charged), settle each with the actual figure later. In memory
//! for one process ([`memory`], [`throttle`]); Redis for many, in one round
//! trip per admission and one per settle.
//!
//! A reservation is charged into the counter's current slot and settled in
//! that same slot, so a request that spans a window boundary never moves
//! usage from one window into the next.

pub mod memory;
pub mod redis;
pub mod throttle;
pub use tollgate_config::window;

use std::sync::Arc;

use memory::MemoryCounters;
use redis::RedisCounters;
use throttle::{Take, Throttles};

pub use window::Span;

use tollgate_config::snapshot::budget::CounterKey;

/// One counter a request is charged against.
#[derive(Clone, Debug)]
pub struct Check {
    /// Budget, member, window and metric: the counter's identity.
    pub key: Arc<str>,
    pub span: Span,
    /// The estimated charge.
    pub amount: u64,
    pub limit: u64,
    /// Refuse the request when it does not fit; otherwise charge it anyway
    /// and report it as over.
    pub enforce: bool,
}

/// What was charged where, to settle later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub key: Arc<str>,
    pub span: Span,
    pub slot: i64,
    pub amount: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every check was charged. `over`: the unenforced checks that did not
    /// fit; `used`: each counter after the charge, in check order.
    Admitted {
        charges: Vec<Charge>,
        over: Vec<usize>,
        used: Vec<u64>,
    },
    /// Nothing was charged: check `failing` does not fit. `retry_after_ms`
    /// is when enough of its usage will have left the window, `None` when
    /// the request alone is larger than the limit.
    Refused {
        failing: usize,
        used: u64,
        retry_after_ms: Option<i64>,
    },
    /// Nothing was charged: bucket `bucket` of the takes holds too little;
    /// it will in `retry_after_ms`.
    Throttled { bucket: usize, retry_after_ms: i64 },
}

/// Where a gateway's counters live.
#[derive(Clone)]
pub enum Store {
    /// This process's ([`crate::runtime::Gateway::counters`] and
    /// [`crate::runtime::Gateway::throttles`]).
    Memory(Arc<MemoryCounters>, Arc<Throttles>),
    Redis(Arc<RedisCounters>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Memory(..) => "Store::Memory",
            Store::Redis(_) => "Store::Redis",
        })
    }
}

impl Store {
    /// Takes from every bucket and charges every counter, or does nothing.
    pub async fn reserve(
        &self,
        checks: &[Check],
        takes: &[Take],
        now_ms: i64,
    ) -> Result<Verdict, redis::RedisStateError> {
        match self {
            Store::Memory(counters, throttles) => {
                if let Err((bucket, retry_after_ms)) = throttles.take(takes, now_ms) {
                    return Ok(Verdict::Throttled {
                        bucket,
                        retry_after_ms,
                    });
                }
                let verdict = counters.reserve(checks, now_ms);
                if matches!(verdict, Verdict::Refused { .. }) {
                    // Not served: the buckets get their share back.
                    for take in takes {
                        throttles.settle(take, 0.0, now_ms);
                    }
                }
                Ok(verdict)
            }
            Store::Redis(counters) => counters.reserve(checks, takes, now_ms).await,
        }
    }

    /// Every counter of `budgets` with usage in its current window, busiest
    /// first, at most `max`; and whether the figures are shared by every
    /// replica (Redis) rather than this process's own.
    pub async fn usage(&self, budgets: &[&str], max: usize) -> (bool, Vec<(String, u64)>) {
        let now = window::now_ms();
        let (shared, all) = match self {
            Store::Memory(counters, _) => (false, counters.usage(now)),
            Store::Redis(counters) => (true, counters.usage(now).await),
        };
        let mut counters: Vec<(String, u64)> = all
            .into_iter()
            .filter(|(key, used)| {
                *used > 0 && CounterKey::parse(key).is_some_and(|k| budgets.contains(&k.budget))
            })
            .map(|(key, used)| (key.to_string(), used))
            .collect();
        counters.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counters.truncate(max);
        (shared, counters)
    }

    /// Replaces each charge's estimate with the actual figure, and gives
    /// token buckets back what their estimate took beyond `tokens` (for
    /// Redis, in the background).
    pub fn settle(
        &self,
        charges: Vec<Charge>,
        actual: Vec<u64>,
        token_takes: &[Take],
        tokens: u64,
    ) {
        match self {
            Store::Memory(counters, throttles) => {
                counters.settle(&charges, &actual);
                let now = window::now_ms();
                for take in token_takes {
                    throttles.settle(take, tokens as f64, now);
                }
            }
            Store::Redis(counters) => counters.settle(charges, actual, token_takes, tokens),
        }
    }
}

/// Used so far in a window, oldest slot first, summed: when will
/// `used - freed + amount <= limit`? `None` if never (amount > limit).
pub fn retry_after_ms(
    span: Span,
    now_ms: i64,
    slots: impl IntoIterator<Item = (i64, u64)>,
    amount: u64,
    limit: u64,
) -> Option<i64> {
    if amount > limit {
        return None;
    }
    let slots: Vec<(i64, u64)> = slots.into_iter().collect();
    let mut used: u64 = slots.iter().map(|(_, v)| v).sum();
    for (slot, value) in slots {
        used = used.saturating_sub(value);
        if used + amount <= limit {
            return Some((span.expires_ms(slot) - now_ms).max(1));
        }
    }
    // No usage in the window (or it all fits): the caller checked it did not.
    Some(1)
}
