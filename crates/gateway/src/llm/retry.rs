//! Whether a failed attempt is tried again at the same backend, and after how
//! long. Pure: the caller passes the clock's reading and the random draw.
//!
//! Backoff is exponential with "equal jitter": the n-th retry waits between
//! half and all of `backoff · 2ⁿ` (capped), so replicas that failed together
//! do not retry together, yet no retry comes sooner than half its step.

use std::time::Duration;

use rand::Rng;
use tollgate_config::snapshot::Resilience;

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No connection, a timeout, a broken or empty answer, or a 5xx: the
    /// same backend may well answer the next time.
    Transient,
    /// A 429, with the provider's reset time when it gave one.
    RateLimited(Option<Duration>),
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try the same backend again.
    Retry(Duration),
    /// Go on to the next backend (or give up when there is none).
    Move,
}

/// The decision after the `retried`-th retry of a backend failed with
/// `fault`. `another_backend`: one remains after this one; `remaining`: time
/// left before the request's deadline.
pub fn after_failure(
    policy: &Resilience,
    retried: u32,
    fault: Fault,
    another_backend: bool,
    remaining: Duration,
    rng: &mut impl Rng,
) -> Next {
    if retried >= policy.retries {
        return Next::Move;
    }
    let backoff = backoff(policy, retried, rng);
    let wait = match fault {
        Fault::Transient => backoff,
        // A provider that named its reset is skipped until then
        // (`providers::health`): with another backend left, waiting for it
        // only adds latency.
        Fault::RateLimited(Some(_)) if another_backend => return Next::Move,
        Fault::RateLimited(reset) => reset.map_or(backoff, |reset| reset.max(backoff)),
    };
    // A retry needs time to answer as well: one that could only start at
    // the deadline is not worth the wait.
    if wait.saturating_mul(2) >= remaining {
        return Next::Move;
    }
    Next::Retry(wait)
}

/// The jittered wait before retry number `retried` (0 for the first).
fn backoff(policy: &Resilience, retried: u32, rng: &mut impl Rng) -> Duration {
    let step = policy
        .backoff_ms
        .saturating_mul(1u64 << retried.min(20))
        .min(policy.max_backoff_ms.max(policy.backoff_ms));
    let half = step / 2;
    Duration::from_millis(half + rng.random_range(0..=step - half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(retries: u32) -> Resilience {
        Resilience {
            retries,
            backoff_ms: 100,
            max_backoff_ms: 1_000,
            ..Resilience::default()
        }
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(3)
    }

    const AMPLE: Duration = Duration::from_secs(60);

    #[test]
    fn no_retries_configured_moves_on_at_once() {
        let next = after_failure(&policy(0), 0, Fault::Transient, false, AMPLE, &mut rng());
        assert_eq!(next, Next::Move);
    }

    #[test]
    fn backoff_doubles_within_equal_jitter_up_to_its_cap() {
        let policy = policy(10);
        let mut rng = rng();
        for (retried, step) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1_000),
            (9, 1_000),
        ] {
            for _ in 0..200 {
                let Next::Retry(wait) =
                    after_failure(&policy, retried, Fault::Transient, true, AMPLE, &mut rng)
                else {
                    panic!("retry {retried} should be allowed");
                };
                let ms = wait.as_millis() as u64;
                assert!(ms >= step / 2 && ms <= step, "retry {retried}: {ms} ms");
            }
        }
    }

    #[test]
    fn the_retry_budget_is_per_backend() {
        let policy = policy(2);
        let mut rng = rng();
        assert!(matches!(
            after_failure(&policy, 1, Fault::Transient, true, AMPLE, &mut rng),
            Next::Retry(_)
        ));
        assert_eq!(
            after_failure(&policy, 2, Fault::Transient, true, AMPLE, &mut rng),
            Next::Move
        );
    }

    #[test]
    fn a_rate_limit_reset_is_honoured_on_the_last_backend_and_skipped_otherwise() {
        let policy = policy(3);
        let reset = Some(Duration::from_millis(1_500));
        let mut rng = rng();
        assert_eq!(
            after_failure(
                &policy,
                0,
                Fault::RateLimited(reset),
                false,
                AMPLE,
                &mut rng
            ),
            Next::Retry(Duration::from_millis(1_500))
        );
        assert_eq!(
            after_failure(&policy, 0, Fault::RateLimited(reset), true, AMPLE, &mut rng),
            Next::Move
        );
        // Without a reset time a 429 backs off like any transient fault.
        let Next::Retry(wait) =
            after_failure(&policy, 0, Fault::RateLimited(None), true, AMPLE, &mut rng)
        else {
            panic!("a bare 429 is retried");
        };
        assert!(wait <= Duration::from_millis(100));
    }

    #[test]
    fn no_wait_outlasts_the_deadline() {
        let policy = policy(3);
        let mut rng = rng();
        let reset = Some(Duration::from_secs(30));
        assert_eq!(
            after_failure(
                &policy,
                0,
                Fault::RateLimited(reset),
                false,
                Duration::from_secs(20),
                &mut rng
            ),
            Next::Move
        );
        assert_eq!(
            after_failure(
                &policy,
                0,
                Fault::Transient,
                false,
                Duration::from_millis(100),
                &mut rng
            ),
            Next::Move,
            "a 50-100 ms wait leaves too little of 100 ms"
        );
    }
}
