//! Leader election on a coordination.k8s.io/v1 Lease, with the semantics of
//! client-go's `leaderelection`: one holder at a time, renewed every
//! `retry_period`, taken over by another candidate once it expires or is
//! released. [`decide`] is the pure decision; [`LeaderElection`] is the IO.
//!
//! Safety rests on two things: every write is a replace carrying the
//! resourceVersion that was read (so of two racing candidates only one write
//! lands), and a leader steps down once it has gone `renew_deadline` without a
//! successful renewal, which is before anyone may consider its Lease expired
//! (`lease_duration`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {lease}: {source}")]
    Kube { lease: String, source: kube::Error },
    #[error("lease {0}: request timed out")]
    Timeout(String),
    #[error("lease {0}: still changing concurrently after retries")]
    Conflict(String),
}

/// What a candidate should do about the Lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// There is no Lease object: create it with us as holder.
    Create,
    /// We hold it: write a fresh renewTime.
    Renew,
    /// It is released or expired: take it over (leaseTransitions + 1).
    Acquire,
    /// Another candidate holds a live Lease.
    Wait { holder: String },
}

/// Decides what `identity` does about `lease` (`None`: no Lease object).
///
/// A held Lease counts as expired when either clock says so:
/// - wall clock: `renewTime + leaseDuration < now`;
/// - local observation: the spec has not changed for longer than
///   `leaseDuration` (`unchanged_for`, measured on our monotonic clock since we
///   first saw this exact spec). This is client-go's rule; it needs no clock
///   agreement with the holder and frees a Lease whose holder wrote a
///   renewTime in our future, or none at all.
///
/// The duration is the one the holder declared (`leaseDurationSeconds`), or
/// `default_duration` if it declared none.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Action {
    let Some(spec) = lease else {
        return Action::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Action::Acquire;
    }
    if holder == identity {
        return Action::Renew;
    }
    let duration = match spec.lease_duration_seconds {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds.unsigned_abs().into()),
        _ => default_duration,
    };
    let wall_expired = spec.renew_time.as_ref().is_some_and(|MicroTime(renewed)| {
        // A renewTime in our future gives a negative age: not expired.
        now.duration_since(*renewed)
            > SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
    });
    if wall_expired || unchanged_for > duration {
        Action::Acquire
    } else {
        Action::Wait {
            holder: holder.to_owned(),
        }
    }
}

/// The Lease spec `identity` writes for `action` on top of `current`.
/// `None` for [`Action::Wait`], which writes nothing.
fn desired_spec(
    action: &Action,
    current: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    lease_duration: Duration,
) -> Option<LeaseSpec> {
    // Whole seconds, rounded up: never promise others less than we take.
    let seconds =
        i32::try_from(lease_duration.as_secs() + u64::from(lease_duration.subsec_nanos() > 0))
            .unwrap_or(i32::MAX)
            .max(1);
    let base = LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(seconds),
        renew_time: Some(MicroTime(now)),
        ..current.cloned().unwrap_or_default()
    };
    match action {
        Action::Create => Some(LeaseSpec {
            acquire_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..base
        }),
        Action::Renew => Some(LeaseSpec {
            // A Lease we hold but that lacks acquireTime (e.g. written by
            // hand) gets one now.
            acquire_time: base.acquire_time.clone().or(Some(MicroTime(now))),
            ..base
        }),
        Action::Acquire => Some(LeaseSpec {
            acquire_time: Some(MicroTime(now)),
            lease_transitions: Some(
                current
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0)
                    .saturating_add(1),
            ),
            ..base
        }),
        Action::Wait { .. } => None,
    }
}

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per candidate (e.g. the pod name).
    pub identity: String,
    /// How long others wait after the last renewal before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    /// Must be below `lease_duration`.
    pub renew_deadline: Duration,
    /// Pause between attempts, both renewing and waiting to acquire.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// client-go's defaults: 15 s / 10 s / 2 s.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for one Lease. Cheap to clone: keep a clone to call
/// [`LeaderElection::release`] after the task running [`LeaderElection::run`]
/// has been stopped.
#[derive(Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaderConfig,
}

/// The outcome of one successful round trip.
enum Attempt {
    /// We hold the Lease as of a write we started at this instant.
    Leading(Instant),
    /// Someone else holds it.
    Following(String),
}

impl LeaderElection {
    pub fn new(client: Client, mut config: LeaderConfig) -> Self {
        // A Lease cannot express more (and deadline arithmetic cannot overflow
        // below this); a zero retry period would hammer the apiserver.
        let longest = Duration::from_secs(i32::MAX.unsigned_abs().into());
        config.lease_duration = config.lease_duration.min(longest);
        config.retry_period = config
            .retry_period
            .clamp(Duration::from_millis(10), longest);
        if config.renew_deadline >= config.lease_duration {
            // Otherwise a leader that cannot renew could still be leading when
            // another candidate takes over.
            let clamped = config.lease_duration.mul_f64(2.0 / 3.0);
            tracing::warn!(
                renew_deadline = ?config.renew_deadline,
                lease_duration = ?config.lease_duration,
                "renew_deadline must be below lease_duration; using {clamped:?}"
            );
            config.renew_deadline = clamped;
        }
        LeaderElection {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn kube_error(&self, source: kube::Error) -> Error {
        Error::Kube {
            lease: self.lease_ref(),
            source,
        }
    }

    /// Runs forever: acquires/renews the Lease and publishes leadership on
    /// `leading` (`true` only while our last renewal is younger than
    /// `renew_deadline`). If this future is dropped the channel keeps its last
    /// value: whoever drops it must stop leader work themselves.
    pub async fn run(self, leading: watch::Sender<bool>) {
        let publish = |value: bool| {
            leading.send_if_modified(|current| std::mem::replace(current, value) != value);
        };
        publish(false);
        let config = &self.config;
        // Until when we may act as leader; `None` while not leading.
        let mut valid_until: Option<Instant> = None;
        // The last spec read and when we first saw it (for `decide`).
        let mut observed: Option<(LeaseSpec, Instant)> = None;
        let mut last_holder: Option<String> = None;
        loop {
            if let Some(until) = valid_until
                && Instant::now() >= until
            {
                tracing::warn!(
                    lease = %self.lease_ref(),
                    identity = %config.identity,
                    "could not renew within {:?}; stepping down",
                    config.renew_deadline
                );
                valid_until = None;
                publish(false);
            }
            // A leader's attempt may not outlive its leadership; a follower's
            // is bounded too so a hung request cannot stall the loop.
            let attempt_deadline =
                valid_until.unwrap_or_else(|| Instant::now() + config.renew_deadline);
            let outcome = match tokio::time::timeout_at(
                attempt_deadline,
                self.attempt(&mut observed),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout(self.lease_ref())),
            };
            match outcome {
                Ok(Attempt::Leading(started)) => {
                    if valid_until.is_none() {
                        tracing::info!(
                            lease = %self.lease_ref(),
                            identity = %config.identity,
                            "became leader"
                        );
                    }
                    valid_until = Some(started + config.renew_deadline);
                    last_holder = Some(config.identity.clone());
                    publish(true);
                }
                Ok(Attempt::Following(holder)) => {
                    if valid_until.take().is_some() {
                        tracing::warn!(
                            lease = %self.lease_ref(),
                            identity = %config.identity,
                            %holder,
                            "lost leadership"
                        );
                        publish(false);
                    }
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.lease_ref(), %holder, "new leader observed");
                        last_holder = Some(holder);
                    }
                }
                // A conflict or a failed request: the next round re-reads.
                Err(error) => {
                    tracing::debug!(identity = %config.identity, %error, "lease attempt failed")
                }
            }
            let mut wake = Instant::now() + config.retry_period;
            if let Some(until) = valid_until {
                // Step down on time even if the next renewal would come later.
                wake = wake.min(until);
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// One read-decide-write round.
    async fn attempt(&self, observed: &mut Option<(LeaseSpec, Instant)>) -> Result<Attempt, Error> {
        let config = &self.config;
        let current = self
            .api
            .get_opt(&config.name)
            .await
            .map_err(|e| self.kube_error(e))?;
        let spec = current
            .as_ref()
            .map(|lease| lease.spec.clone().unwrap_or_default());
        // Taken before the write: our deadline must not start later than the
        // renewTime others will measure from.
        let started = Instant::now();
        let now = Timestamp::now();
        let unchanged_since = match (&spec, observed.as_ref()) {
            (Some(spec), Some((seen, since))) if seen == spec => Some(*since),
            _ => None,
        };
        let unchanged_for = match unchanged_since {
            Some(since) => started.saturating_duration_since(since),
            None => {
                *observed = spec.clone().map(|spec| (spec, started));
                Duration::ZERO
            }
        };
        let action = decide(
            spec.as_ref(),
            &config.identity,
            now,
            unchanged_for,
            config.lease_duration,
        );
        let Some(desired) = desired_spec(
            &action,
            spec.as_ref(),
            &config.identity,
            now,
            config.lease_duration,
        ) else {
            let holder = spec.and_then(|s| s.holder_identity).unwrap_or_default();
            return Ok(Attempt::Following(holder));
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(config.name.clone()),
                        namespace: Some(config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(desired),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            // `lease` carries the resourceVersion we read: a concurrent write
            // makes this fail with 409 instead of being overwritten.
            Some(mut lease) => {
                lease.spec = Some(desired);
                self.api
                    .replace(&config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                if let Some(spec) = lease.spec {
                    *observed = Some((spec, started));
                }
                if action == Action::Acquire {
                    tracing::info!(
                        lease = %self.lease_ref(),
                        identity = %config.identity,
                        previous = ?spec.as_ref().and_then(|s| s.holder_identity.as_deref()),
                        "took over lease"
                    );
                }
                Ok(Attempt::Leading(started))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(Error::Conflict(self.lease_ref()))
            }
            Err(error) => Err(self.kube_error(error)),
        }
    }

    /// Best-effort release on shutdown: clears holderIdentity if we hold the
    /// Lease, so a successor takes over at once instead of waiting for it to
    /// expire. Stop the task running [`LeaderElection::run`] (and any leader
    /// work) first, or it may renew again.
    pub async fn release(&self) -> Result<(), Error> {
        // After lease_duration the Lease has expired anyway: waiting longer
        // buys nothing.
        match tokio::time::timeout(self.config.lease_duration, self.release_inner()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.lease_ref())),
        }
    }

    async fn release_inner(&self) -> Result<(), Error> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let Some(mut lease) = self
                .api
                .get_opt(&self.config.name)
                .await
                .map_err(|e| self.kube_error(e))?
            else {
                return Ok(());
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        lease = %self.lease_ref(),
                        identity = %self.config.identity,
                        "released lease"
                    );
                    return Ok(());
                }
                // Someone wrote in between: re-read and check again.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(self.kube_error(error)),
            }
        }
        Err(Error::Conflict(self.lease_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const DEFAULT: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid timestamp")
    }

    fn held(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed - 100))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }
    }

    fn wait(holder: &str) -> Action {
        Action::Wait {
            holder: holder.to_owned(),
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(
            decide(None, ME, at(0), Duration::ZERO, DEFAULT),
            Action::Create
        );
    }

    #[test]
    fn our_lease_is_renewed_even_when_expired() {
        let spec = held(ME, 0, 15);
        assert_eq!(
            decide(Some(&spec), ME, at(1), Duration::ZERO, DEFAULT),
            Action::Renew
        );
        assert_eq!(
            decide(
                Some(&spec),
                ME,
                at(1000),
                Duration::from_secs(1000),
                DEFAULT
            ),
            Action::Renew
        );
    }

    #[test]
    fn others_fresh_lease_is_left_alone() {
        let spec = held("other", 0, 15);
        assert_eq!(
            decide(Some(&spec), ME, at(5), Duration::ZERO, DEFAULT),
            wait("other")
        );
    }

    #[test]
    fn others_expired_lease_is_acquired() {
        let spec = held("other", 0, 15);
        assert_eq!(
            decide(Some(&spec), ME, at(16), Duration::ZERO, DEFAULT),
            Action::Acquire
        );
    }

    #[test]
    fn released_lease_is_acquired() {
        let mut spec = held("other", 0, 15);
        spec.holder_identity = None;
        assert_eq!(
            decide(Some(&spec), ME, at(0), Duration::ZERO, DEFAULT),
            Action::Acquire
        );
        spec.holder_identity = Some(String::new());
        assert_eq!(
            decide(Some(&spec), ME, at(0), Duration::ZERO, DEFAULT),
            Action::Acquire
        );
        // A Lease object with no spec at all counts as released.
        let empty = LeaseSpec::default();
        assert_eq!(
            decide(Some(&empty), ME, at(0), Duration::ZERO, DEFAULT),
            Action::Acquire
        );
    }

    #[test]
    fn expiry_boundary_is_strict() {
        let spec = held("other", 0, 15);
        assert_eq!(
            decide(Some(&spec), ME, at(15), Duration::ZERO, DEFAULT),
            wait("other")
        );
        let just_after = at(15)
            .checked_add(SignedDuration::from_micros(1))
            .expect("in range");
        assert_eq!(
            decide(Some(&spec), ME, just_after, Duration::ZERO, DEFAULT),
            Action::Acquire
        );
    }

    #[test]
    fn renew_time_in_our_future_is_fresh_until_observed_unchanged() {
        // The holder's clock runs an hour ahead of ours.
        let spec = held("other", 3600, 15);
        assert_eq!(
            decide(Some(&spec), ME, at(0), Duration::ZERO, DEFAULT),
            wait("other")
        );
        assert_eq!(
            decide(Some(&spec), ME, at(0), Duration::from_secs(15), DEFAULT),
            wait("other")
        );
        // Unchanged on our own clock for longer than the lease: it is dead.
        assert_eq!(
            decide(Some(&spec), ME, at(16), Duration::from_secs(16), DEFAULT),
            Action::Acquire
        );
    }

    #[test]
    fn missing_renew_time_relies_on_observation() {
        let mut spec = held("other", 0, 15);
        spec.renew_time = None;
        assert_eq!(
            decide(Some(&spec), ME, at(1000), Duration::ZERO, DEFAULT),
            wait("other")
        );
        assert_eq!(
            decide(Some(&spec), ME, at(1000), Duration::from_secs(16), DEFAULT),
            Action::Acquire
        );
    }

    #[test]
    fn lease_duration_falls_back_to_ours_when_missing_or_invalid() {
        for declared in [None, Some(0), Some(-5)] {
            let mut spec = held("other", 0, 1);
            spec.lease_duration_seconds = declared;
            assert_eq!(
                decide(Some(&spec), ME, at(10), Duration::ZERO, DEFAULT),
                wait("other")
            );
            assert_eq!(
                decide(Some(&spec), ME, at(16), Duration::ZERO, DEFAULT),
                Action::Acquire
            );
        }
        // The holder's declared duration wins over ours.
        let spec = held("other", 0, 60);
        assert_eq!(
            decide(Some(&spec), ME, at(30), Duration::ZERO, DEFAULT),
            wait("other")
        );
    }

    #[test]
    fn extreme_times_and_durations_do_not_overflow() {
        let mut spec = held("other", 0, i32::MAX);
        spec.renew_time = Some(MicroTime(Timestamp::MIN));
        assert_eq!(
            decide(Some(&spec), ME, Timestamp::MAX, Duration::ZERO, DEFAULT),
            Action::Acquire
        );
        spec.renew_time = Some(MicroTime(Timestamp::MAX));
        assert_eq!(
            decide(Some(&spec), ME, Timestamp::MIN, Duration::ZERO, DEFAULT),
            wait("other")
        );
        spec.lease_duration_seconds = None;
        spec.renew_time = Some(MicroTime(Timestamp::MIN));
        assert_eq!(
            decide(
                Some(&spec),
                ME,
                Timestamp::MAX,
                Duration::MAX,
                Duration::MAX
            ),
            wait("other"),
            "a default beyond SignedDuration never expires"
        );
    }

    #[test]
    fn written_specs() {
        let now = at(50);
        let create = desired_spec(&Action::Create, None, ME, now, Duration::from_millis(1500))
            .expect("writes");
        assert_eq!(create.holder_identity.as_deref(), Some(ME));
        assert_eq!(create.lease_duration_seconds, Some(2), "rounded up");
        assert_eq!(create.lease_transitions, Some(0));
        assert_eq!(create.acquire_time, Some(MicroTime(now)));
        assert_eq!(create.renew_time, Some(MicroTime(now)));

        let ours = held(ME, 0, 15);
        let renew = desired_spec(&Action::Renew, Some(&ours), ME, now, DEFAULT).expect("writes");
        assert_eq!(renew.acquire_time, ours.acquire_time, "acquireTime kept");
        assert_eq!(renew.lease_transitions, Some(4));
        assert_eq!(renew.renew_time, Some(MicroTime(now)));

        let theirs = held("other", 0, 15);
        let acquire =
            desired_spec(&Action::Acquire, Some(&theirs), ME, now, DEFAULT).expect("writes");
        assert_eq!(acquire.holder_identity.as_deref(), Some(ME));
        assert_eq!(acquire.lease_transitions, Some(5));
        assert_eq!(acquire.acquire_time, Some(MicroTime(now)));
        assert_eq!(acquire.lease_duration_seconds, Some(15));

        assert_eq!(
            desired_spec(&wait("other"), Some(&theirs), ME, now, DEFAULT),
            None
        );
    }
}
