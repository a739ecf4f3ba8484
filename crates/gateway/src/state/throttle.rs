//! Smooth throttling: token buckets per (budget, member) for requests per
//! second and tokens per minute. A request takes from every bucket that
//! applies or from none; its token estimate is settled with the actual
//! count afterwards (the difference goes back, or is owed). This is the
//! in-process form; with Redis the same arithmetic runs in its scripts
//! ([`super::redis`]), so every replica draws from one bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_config::snapshot::budget::Bucket;

/// One bucket a request takes from.
#[derive(Clone, Debug)]
pub struct Take {
    pub key: Arc<str>,
    pub bucket: Bucket,
    pub amount: f64,
}

#[derive(Debug, Default)]
pub struct Throttles {
    levels: Mutex<HashMap<Arc<str>, (f64, i64)>>,
}

/// Buckets idle this long are full again and forgotten.
const FORGET_AFTER_MS: i64 = 10 * 60_000;

impl Throttles {
    fn level(levels: &HashMap<Arc<str>, (f64, i64)>, take: &Take, now_ms: i64) -> f64 {
        match levels.get(&take.key) {
            None => take.bucket.capacity,
            Some(&(level, at)) => {
                let refill = (now_ms - at).max(0) as f64 / 1000.0 * take.bucket.per_second;
                (level + refill).min(take.bucket.capacity)
            }
        }
    }

    /// Takes `amount` from every bucket, or nothing: `Err((index,
    /// retry_after_ms))` for the bucket that is shortest, when it will hold
    /// enough. A request larger than a bucket waits for it to be full and
    /// empties it.
    pub fn take(&self, takes: &[Take], now_ms: i64) -> Result<(), (usize, i64)> {
        if takes.is_empty() {
            return Ok(());
        }
        let mut levels = self.levels.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wait = (0, 0i64);
        for (index, take) in takes.iter().enumerate() {
            let need = take.amount.min(take.bucket.capacity);
            let level = Self::level(&levels, take, now_ms);
            if level < need {
                let ms = ((need - level) / take.bucket.per_second * 1000.0).ceil() as i64;
                if ms.max(1) > wait.1 {
                    wait = (index, ms.max(1));
                }
            }
        }
        if wait.1 > 0 {
            return Err(wait);
        }
        for take in takes {
            let level = Self::level(&levels, take, now_ms);
            levels.insert(take.key.clone(), (level - take.amount, now_ms));
        }
        if levels.len() > 10_000 {
            levels.retain(|_, (_, at)| now_ms - *at < FORGET_AFTER_MS);
        }
        Ok(())
    }

    /// Gives back `estimate - actual` (or takes the excess) of a token bucket.
    pub fn settle(&self, take: &Take, actual: f64, now_ms: i64) {
        let mut levels = self.levels.lock().unwrap_or_else(PoisonError::into_inner);
        let level = Self::level(&levels, take, now_ms);
        let settled = (level + take.amount - actual).min(take.bucket.capacity);
        levels.insert(take.key.clone(), (settled, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(key: &str, per_second: f64, capacity: f64, amount: f64) -> Take {
        Take {
            key: Arc::from(key),
            bucket: Bucket {
                per_second,
                capacity,
            },
            amount,
        }
    }

    #[test]
    fn a_burst_then_the_steady_rate_with_exact_retry_after() {
        let t = Throttles::default();
        let rps = take("r", 10.0, 5.0, 1.0);
        for _ in 0..5 {
            assert_eq!(t.take(std::slice::from_ref(&rps), 0), Ok(()));
        }
        assert_eq!(
            t.take(std::slice::from_ref(&rps), 0),
            Err((0, 100)),
            "one more in 100 ms"
        );
        assert_eq!(t.take(std::slice::from_ref(&rps), 100), Ok(()));
        assert_eq!(t.take(std::slice::from_ref(&rps), 150), Err((0, 50)));
    }

    #[test]
    fn all_buckets_or_none_and_settling_returns_unused_tokens() {
        let t = Throttles::default();
        let requests = take("r", 100.0, 100.0, 1.0);
        let tokens = take("t", 1000.0 / 60.0, 1000.0, 600.0);
        assert_eq!(t.take(&[requests.clone(), tokens.clone()], 0), Ok(()));
        assert_eq!(
            t.take(&[requests.clone(), tokens.clone()], 0),
            Err((1, 12_000)),
            "the token bucket is the short one: 200 more at 1000/min"
        );
        // The first used 100 of its 600: 500 come back, the second fits.
        t.settle(&tokens, 100.0, 0);
        assert_eq!(t.take(&[requests, tokens], 0), Ok(()));
        // Larger than the bucket: waits for it to be full.
        let t = Throttles::default();
        let huge = take("h", 10.0, 100.0, 500.0);
        assert_eq!(t.take(std::slice::from_ref(&huge), 0), Ok(()));
        assert_eq!(
            t.take(std::slice::from_ref(&huge), 0),
            Err((0, 50_000)),
            "-400 → 100 at 10/s"
        );
    }
}
