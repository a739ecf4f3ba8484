//! Fair sharing of a provider's concurrency cap across principals.
//!
//! One greedy key must not hold every slot while others get 429s, yet a key
//! that is alone must still be able to use all of them. So the limiter is
//! work-conserving and needs no preemption:
//!
//! * A free slot is taken by whoever asks (one principal alone may fill the
//!   provider, exactly as with a plain semaphore).
//! * When the provider is full, a principal holding less than its fair share
//!   (`limit / active principals`, active = holding or waiting for a slot) may
//!   wait up to `maxQueueWait`; one at or above its share is refused at once,
//!   as before, so the greedy key never waits and never delays anyone.
//! * Every released slot goes straight to the waiting principal with the
//!   fewest slots in flight (oldest waiter on ties): max-min fairness, so the
//!   starved key is served by the next stream that ends.
//! * Optionally (`maxShare` < 1), no principal may take more than that
//!   fraction of the slots while another principal holds or waits for one:
//!   headroom for workloads whose streams last longer than `maxQueueWait`.
//!
//! A waiter gets its slot by a message after the counts were updated under
//! the lock; the lock is never held across an await, and a waiter that gives
//! up (timeout or dropped request) hands back a slot granted meanwhile, so
//! none leaks. The [`Permit`] releases its slot when dropped, however the
//! request ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tollgate_config::snapshot::Principal;

/// Whose slot it is: the API key's principal, `None` on an open gateway.
pub type Key = Option<Arc<Principal>>;

/// Why no slot was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The provider is full and this principal has its fair share (or may not wait).
    #[error("the provider is at its concurrency limit")]
    Full,
    /// The principal holds `maxShare` of the slots while others want some.
    #[error("the caller holds its maximum share of the provider")]
    MaxShare,
    /// Waited `maxQueueWait` (or the request's budget) without a slot freeing up.
    #[error("no slot freed up within the queue wait")]
    QueueTimeout,
}

/// The limiter of one provider; shared across snapshots by [`super::http::PermitRegistry`].
pub struct FairLimiter {
    limit: u32,
    /// `maxShare` in slots (at least 1).
    share_cap: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_use: u32,
    /// Only principals holding or waiting for a slot (so `len()` = active).
    tenants: HashMap<Key, Tenant>,
    next_seq: u64,
}

#[derive(Default)]
struct Tenant {
    held: u32,
    waiting: VecDeque<Waiter>,
}

struct Waiter {
    seq: u64,
    grant: oneshot::Sender<()>,
}

impl FairLimiter {
    /// `limit` slots; `max_share` in (0, 1] (1 = no cap beyond fairness).
    pub fn new(limit: u32, max_share: f64) -> Self {
        let limit = limit.max(1);
        let share = if max_share.is_finite() && max_share > 0.0 {
            max_share.min(1.0)
        } else {
            1.0
        };
        let share_cap = ((f64::from(limit) * share).ceil() as u32).clamp(1, limit);
        Self {
            limit,
            share_cap,
            state: Mutex::new(State::default()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn share_cap(&self) -> u32 {
        self.share_cap
    }

    /// Slots in use now (for tests and introspection).
    pub fn in_use(&self) -> u32 {
        self.lock().in_use
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot now, a refusal, or a place in the queue. Pure bookkeeping
    /// under the caller's lock; the waiting is [`Self::acquire`]'s.
    fn admit(&self, state: &mut State, key: &Key, may_wait: bool) -> Admission {
        let (held, waiting) = state
            .tenants
            .get(key)
            .map_or((0, 0), |t| (t.held, t.waiting.len() as u32));
        let active = state.tenants.len() + usize::from(!state.tenants.contains_key(key));
        // With no share configured (cap = limit) holding every slot means full, not over-share.
        if active > 1 && self.share_cap < self.limit && held >= self.share_cap {
            return Admission::Refused(Refusal::MaxShare);
        }
        if state.in_use < self.limit {
            state.in_use += 1;
            state.tenants.entry(key.clone()).or_default().held += 1;
            return Admission::Granted;
        }
        let fair = self.limit.div_ceil(active as u32).min(self.share_cap);
        if !may_wait || held + waiting >= fair {
            return Admission::Refused(Refusal::Full);
        }
        let (grant, rx) = oneshot::channel();
        let seq = state.next_seq;
        state.next_seq += 1;
        state
            .tenants
            .entry(key.clone())
            .or_default()
            .waiting
            .push_back(Waiter { seq, grant });
        Admission::Queued(seq, rx)
    }

    /// A slot for `key`, waiting at most `wait` when the provider is full and
    /// `key` holds less than its fair share (`Duration::ZERO`: never wait).
    pub async fn acquire(self: &Arc<Self>, key: Key, wait: Duration) -> Acquired {
        let admission = {
            let mut state = self.lock();
            self.admit(&mut state, &key, !wait.is_zero())
        };
        let (seq, rx) = match admission {
            Admission::Granted => {
                return Acquired {
                    result: Ok(self.permit(key)),
                    queued: None,
                };
            }
            Admission::Refused(refusal) => {
                return Acquired {
                    result: Err(refusal),
                    queued: None,
                };
            }
            Admission::Queued(seq, rx) => (seq, rx),
        };
        let started = tokio::time::Instant::now();
        let mut queued = Queued {
            limiter: self.clone(),
            key,
            seq,
            rx,
            done: false,
        };
        let granted = match tokio::time::timeout(wait, &mut queued.rx).await {
            Ok(Ok(())) => true,
            // Timed out (or the sender vanished): leave the queue, unless a
            // slot was granted in the meantime.
            _ => queued.withdraw(),
        };
        queued.done = true;
        let key = queued.key.take();
        Acquired {
            result: if granted {
                Ok(self.permit(key))
            } else {
                Err(Refusal::QueueTimeout)
            },
            queued: Some(started.elapsed()),
        }
    }

    fn permit(self: &Arc<Self>, key: Key) -> Permit {
        Permit {
            limiter: self.clone(),
            key,
        }
    }

    /// Gives back one slot of `key` and hands free slots to waiters.
    fn release(&self, state: &mut State, key: &Key) {
        state.in_use = state.in_use.saturating_sub(1);
        if let Some(tenant) = state.tenants.get_mut(key) {
            tenant.held = tenant.held.saturating_sub(1);
            if tenant.held == 0 && tenant.waiting.is_empty() {
                state.tenants.remove(key);
            }
        }
        self.dispatch(state);
    }

    /// While slots are free, grant them to the waiting principal with the
    /// fewest in flight (oldest waiter first on ties).
    fn dispatch(&self, state: &mut State) {
        while state.in_use < self.limit {
            let next = state
                .tenants
                .iter()
                .filter_map(|(key, t)| t.waiting.front().map(|w| (t.held, w.seq, key)))
                .min_by_key(|(held, seq, _)| (*held, *seq))
                .map(|(_, _, key)| key.clone());
            let Some(key) = next else { return };
            let Some(tenant) = state.tenants.get_mut(&key) else {
                return;
            };
            let Some(waiter) = tenant.waiting.pop_front() else {
                return;
            };
            // Counts change only if the waiter is still there to take the slot.
            if waiter.grant.send(()).is_ok() {
                tenant.held += 1;
                state.in_use += 1;
            } else if tenant.held == 0 && tenant.waiting.is_empty() {
                state.tenants.remove(&key);
            }
        }
    }
}

enum Admission {
    Granted,
    Refused(Refusal),
    Queued(u64, oneshot::Receiver<()>),
}

/// What [`FairLimiter::acquire`] gives: a slot or why not, and how long the
/// request queued (`None`: it did not).
pub struct Acquired {
    pub result: Result<Permit, Refusal>,
    pub queued: Option<Duration>,
}

/// A waiter in the queue; dropping it (the request went away) leaves the
/// queue and returns a slot granted meanwhile.
struct Queued {
    limiter: Arc<FairLimiter>,
    key: Key,
    seq: u64,
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Queued {
    /// Leaves the queue; true if a slot had been granted first (it is kept).
    fn withdraw(&mut self) -> bool {
        let mut state = self.limiter.lock();
        if let Some(tenant) = state.tenants.get_mut(&self.key)
            && let Some(at) = tenant.waiting.iter().position(|w| w.seq == self.seq)
        {
            tenant.waiting.remove(at);
            if tenant.held == 0 && tenant.waiting.is_empty() {
                state.tenants.remove(&self.key);
            }
            return false;
        }
        // Not queued any more: granted under the lock, so the message is there.
        self.rx.try_recv().is_ok()
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.withdraw() {
            let mut state = self.limiter.lock();
            self.limiter.release(&mut state, &self.key);
        }
    }
}

/// One slot of a capped provider, released when dropped (the stream body
/// carries it to the end of the response).
pub struct Permit {
    limiter: Arc<FairLimiter>,
    key: Key,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        self.limiter.release(&mut state, &self.key);
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> Key {
        Some(Arc::new(Principal {
            user: user.into(),
            ..Principal::default()
        }))
    }

    const WAIT: Duration = Duration::from_secs(5);

    async fn take(limiter: &Arc<FairLimiter>, k: &Key, n: usize) -> Vec<Permit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(limiter.acquire(k.clone(), WAIT).await.result.unwrap());
        }
        permits
    }

    #[tokio::test]
    async fn a_lone_principal_may_use_every_slot_and_is_refused_at_once_beyond() {
        let limiter = Arc::new(FairLimiter::new(4, 1.0));
        let greedy = key("greedy");
        let held = take(&limiter, &greedy, 4).await;
        let started = tokio::time::Instant::now();
        let over = limiter.acquire(greedy.clone(), WAIT).await;
        assert_eq!(over.result.unwrap_err(), Refusal::Full);
        assert!(
            over.queued.is_none(),
            "a principal at its share never waits"
        );
        assert!(started.elapsed() < Duration::from_millis(100));
        drop(held);
        assert_eq!(limiter.in_use(), 0);
        assert!(limiter.lock().tenants.is_empty());
    }

    #[tokio::test]
    async fn a_starved_principal_gets_the_next_released_slot() {
        let limiter = Arc::new(FairLimiter::new(4, 1.0));
        let (greedy, other) = (key("greedy"), key("other"));
        let mut held = take(&limiter, &greedy, 4).await;
        let waiting = tokio::spawn({
            let (limiter, other) = (limiter.clone(), other.clone());
            async move { limiter.acquire(other, WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The greedy key asks again: refused, it has its share (2 of 4) and more.
        assert_eq!(
            limiter
                .acquire(greedy.clone(), WAIT)
                .await
                .result
                .unwrap_err(),
            Refusal::Full
        );
        held.pop();
        let got = waiting.await.unwrap();
        assert!(got.result.is_ok());
        assert!(got.queued.is_some());
        assert_eq!(limiter.in_use(), 4);
    }

    #[tokio::test]
    async fn many_principals_converge_to_equal_shares_against_one_greedy() {
        let limiter = Arc::new(FairLimiter::new(8, 1.0));
        let greedy = key("greedy");
        let mut greedy_held = take(&limiter, &greedy, 8).await;
        let others: Vec<Key> = (0..3).map(|i| key(&format!("user{i}"))).collect();
        // Each other principal asks for 4 slots; fair share with 4 active is 2.
        let mut tasks = Vec::new();
        for k in &others {
            for _ in 0..4 {
                let (limiter, k) = (limiter.clone(), k.clone());
                tasks.push(tokio::spawn(async move {
                    limiter
                        .acquire(k, Duration::from_millis(500))
                        .await
                        .result
                        .ok()
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The greedy streams end one by one; the freed slots go to the others.
        for _ in 0..6 {
            greedy_held.pop();
        }
        let mut granted = Vec::new();
        for task in tasks {
            granted.push(task.await.unwrap());
        }
        let counts: Vec<usize> = others
            .iter()
            .enumerate()
            .map(|(i, _)| granted[i * 4..i * 4 + 4].iter().flatten().count())
            .collect();
        assert_eq!(counts, vec![2, 2, 2], "each gets its fair share");
        assert_eq!(greedy_held.len(), 2);
        assert_eq!(limiter.in_use(), 8);
        drop(granted);
        drop(greedy_held);
        assert_eq!(limiter.in_use(), 0);
        assert!(
            limiter.lock().tenants.is_empty(),
            "no slot or waiter leaked"
        );
    }

    #[tokio::test]
    async fn the_waiter_with_fewest_in_flight_goes_first() {
        let limiter = Arc::new(FairLimiter::new(4, 1.0));
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let mut held_a = take(&limiter, &a, 2).await;
        let _held_b = take(&limiter, &b, 1).await;
        let _held_c = take(&limiter, &c, 1).await;
        let state = |limiter: &Arc<FairLimiter>, k: &Key| {
            limiter.lock().tenants.get(k).map_or(0, |t| t.held)
        };
        // Three active, fair share ceil(4/3) = 2: b and c (1 each) may wait.
        let wait_b = tokio::spawn({
            let (limiter, b) = (limiter.clone(), b.clone());
            async move { limiter.acquire(b, WAIT).await.result.ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let wait_c = tokio::spawn({
            let (limiter, c) = (limiter.clone(), c.clone());
            async move { limiter.acquire(c, WAIT).await.result.ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        held_a.pop();
        let got_b = wait_b.await.unwrap();
        assert!(
            got_b.is_some(),
            "oldest of the equally served waiters first"
        );
        assert_eq!(state(&limiter, &b), 2);
        held_a.pop();
        assert!(wait_c.await.unwrap().is_some());
        assert_eq!(state(&limiter, &a), 0);
    }

    #[tokio::test]
    async fn a_queue_wait_times_out_and_a_dropped_waiter_leaks_nothing() {
        let limiter = Arc::new(FairLimiter::new(2, 1.0));
        let (greedy, other) = (key("greedy"), key("other"));
        let held = take(&limiter, &greedy, 2).await;
        let timed_out = limiter
            .acquire(other.clone(), Duration::from_millis(30))
            .await;
        assert_eq!(timed_out.result.unwrap_err(), Refusal::QueueTimeout);
        assert!(timed_out.queued.unwrap() >= Duration::from_millis(30));
        // A waiter whose request goes away leaves the queue.
        let abandoned = tokio::spawn({
            let (limiter, other) = (limiter.clone(), other.clone());
            async move { limiter.acquire(other, WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        assert_eq!(limiter.in_use(), 0);
        assert!(limiter.lock().tenants.is_empty());
        // Zero wait: never queue.
        let held = take(&limiter, &greedy, 2).await;
        let refused = limiter.acquire(other.clone(), Duration::ZERO).await;
        assert_eq!(refused.result.unwrap_err(), Refusal::Full);
        assert!(refused.queued.is_none());
        drop(held);
    }

    #[tokio::test]
    async fn a_slot_granted_to_a_waiter_that_went_away_is_handed_on() {
        let limiter = Arc::new(FairLimiter::new(1, 1.0));
        let (a, b) = (key("a"), key("b"));
        let held = take(&limiter, &a, 1).await;
        let (seq, rx) = {
            let mut state = limiter.lock();
            match limiter.admit(&mut state, &b, true) {
                Admission::Queued(seq, rx) => (seq, rx),
                _ => panic!("b should queue"),
            }
        };
        let queued = Queued {
            limiter: limiter.clone(),
            key: b.clone(),
            seq,
            rx,
            done: false,
        };
        drop(held); // granted to b's waiter ...
        assert_eq!(limiter.in_use(), 1);
        drop(queued); // ... which went away before taking it: the slot returns.
        assert_eq!(limiter.in_use(), 0);
        assert!(limiter.lock().tenants.is_empty());
    }

    #[tokio::test]
    async fn max_share_caps_a_principal_only_while_others_are_active() {
        let limiter = Arc::new(FairLimiter::new(4, 0.5));
        assert_eq!(limiter.share_cap(), 2);
        let (a, b) = (key("a"), key("b"));
        // Alone: every slot.
        let alone = take(&limiter, &a, 4).await;
        drop(alone);
        let _b = take(&limiter, &b, 1).await;
        let _a = take(&limiter, &a, 2).await;
        assert_eq!(
            limiter.acquire(a.clone(), WAIT).await.result.unwrap_err(),
            Refusal::MaxShare
        );
        // b still has room.
        assert!(limiter.acquire(b.clone(), WAIT).await.result.is_ok());
    }

    #[test]
    fn share_cap_is_at_least_one_slot() {
        assert_eq!(FairLimiter::new(3, 0.01).share_cap(), 1);
        assert_eq!(FairLimiter::new(3, 0.5).share_cap(), 2);
        assert_eq!(FairLimiter::new(3, f64::NAN).share_cap(), 3);
    }
}
