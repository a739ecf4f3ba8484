//! Which snapshot each gateway fleet should run, who is subscribed, and what
//! each subscriber reported running. No network IO: the compile loop
//! publishes, the config server subscribes and records acknowledgements, the
//! status loop reads [`Hub::tallies`], [`Hub::usage`] and [`Hub::circuits`].
//!
//! Each gateway has a `watch` channel holding only the newest snapshot frame,
//! so a slow subscriber skips versions instead of queueing stale ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tollgate_config::push::{
    BudgetAlert, CircuitState, FrameError, GatewayMessage, MAX_REPORTED_CIRCUITS, ProviderCircuit,
    snapshot_frame,
};
use tollgate_config::{ObjectRef, Snapshot};

/// The pod name of a subscriber that did not say (never deduplicated).
pub const UNKNOWN_POD: &str = "unknown";

/// One snapshot, encoded once for every subscriber.
#[derive(Debug, Clone)]
pub struct Published {
    pub hash: String,
    pub frame: Bytes,
}

/// Subscribers of one gateway and what they run, for its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// The snapshot currently published (full hash), if any.
    pub hash: Option<String>,
    /// Open subscriptions.
    pub connected: i32,
    /// Subscriptions that acknowledged the published snapshot.
    pub updated: i32,
}

/// How many subscribers of a gateway report a provider's circuit breaker
/// open or half-open; the rest (of `Tally::connected`) report it closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Circuits {
    pub open: i32,
    pub half_open: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("the controller has not compiled the configuration yet")]
    NotReady,
    #[error("AIGateway {0} does not exist")]
    UnknownGateway(ObjectRef),
}

#[derive(Debug)]
struct Subscriber {
    pod: String,
    /// The hash it last said it runs.
    running: Option<String>,
    /// Its last budget usage report: (shared, counters).
    usage: Option<(bool, Vec<(String, u64)>)>,
    /// The providers whose breaker it last reported not closed, sorted.
    circuits: Vec<ProviderCircuit>,
}

#[derive(Debug)]
struct Channel {
    latest: watch::Sender<Option<Published>>,
    subscribers: BTreeMap<u64, Subscriber>,
}

impl Channel {
    fn new() -> Self {
        Self {
            latest: watch::Sender::new(None),
            subscribers: BTreeMap::new(),
        }
    }
}

/// Alerts held for the status writer between two passes.
const MAX_PENDING_ALERTS: usize = 1_000;

#[derive(Debug, Default)]
struct State {
    /// Alerts reported by gateways, not yet delivered.
    alerts: Vec<(ObjectRef, BudgetAlert)>,
    /// Set by the first publish: until then "unknown gateway" cannot be told
    /// from "not compiled yet".
    ready: bool,
    gateways: BTreeMap<ObjectRef, Channel>,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// Poked when subscriptions or acknowledgements change, so status follows.
    changed: Arc<Notify>,
    next_id: AtomicU64,
}

impl Hub {
    pub fn new(changed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            changed,
            next_id: AtomicU64::new(1),
        })
    }

    /// The notifier poked on subscription and acknowledgement changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `snapshots` current. `gateways` lists every AIGateway that
    /// exists: one without a snapshot (its compile failed) keeps the last one
    /// it had, so its pods keep serving; a gateway no longer listed is
    /// dropped and its subscribers' streams end. Returns encoding failures.
    pub fn publish<'a>(
        &self,
        gateways: impl IntoIterator<Item = &'a ObjectRef>,
        snapshots: &BTreeMap<ObjectRef, Snapshot>,
    ) -> Vec<(ObjectRef, FrameError)> {
        let mut failures = Vec::new();
        let mut state = self.state();
        let mut kept = BTreeMap::new();
        for gateway in gateways {
            let channel = state.gateways.remove(gateway).unwrap_or_else(Channel::new);
            if let Some(snapshot) = snapshots.get(gateway) {
                let unchanged = channel
                    .latest
                    .borrow()
                    .as_ref()
                    .is_some_and(|p| p.hash == snapshot.hash);
                if !unchanged {
                    match snapshot_frame(snapshot) {
                        Ok(frame) => {
                            channel.latest.send_replace(Some(Published {
                                hash: snapshot.hash.clone(),
                                frame: Bytes::from(frame),
                            }));
                        }
                        Err(error) => failures.push((gateway.clone(), error)),
                    }
                }
            }
            kept.insert(gateway.clone(), channel);
        }
        // Whatever is left was deleted; dropping its sender ends its streams.
        state.gateways = kept;
        state.ready = true;
        // No poke: the publisher is the loop that reads the tallies next.
        failures
    }

    /// Registers a subscriber of `gateway`'s snapshots.
    pub fn subscribe(
        self: &Arc<Self>,
        gateway: &ObjectRef,
        pod: &str,
    ) -> Result<Subscription, SubscribeError> {
        let mut state = self.state();
        if !state.ready {
            return Err(SubscribeError::NotReady);
        }
        let channel = state
            .gateways
            .get_mut(gateway)
            .ok_or_else(|| SubscribeError::UnknownGateway(gateway.clone()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A pod that reconnects before the controller noticed its old stream
        // was dead (a half-open connection) replaces it: status counts pods.
        if pod != UNKNOWN_POD {
            channel.subscribers.retain(|_, s| s.pod != pod);
        }
        channel.subscribers.insert(
            id,
            Subscriber {
                pod: pod.to_string(),
                running: None,
                usage: None,
                circuits: Vec::new(),
            },
        );
        let updates = channel.latest.subscribe();
        drop(state);
        self.changed.notify_one();
        Ok(Subscription {
            hub: self.clone(),
            gateway: gateway.clone(),
            id,
            updates,
        })
    }

    /// Per gateway: the published hash, open subscriptions and how many run it.
    pub fn tallies(&self) -> BTreeMap<ObjectRef, Tally> {
        let state = self.state();
        state
            .gateways
            .iter()
            .map(|(gateway, channel)| {
                let hash = channel.latest.borrow().as_ref().map(|p| p.hash.clone());
                let updated = channel
                    .subscribers
                    .values()
                    .filter(|s| hash.is_some() && s.running == hash)
                    .count();
                let tally = Tally {
                    hash,
                    connected: channel.subscribers.len() as i32,
                    updated: updated as i32,
                };
                (gateway.clone(), tally)
            })
            .collect()
    }

    /// Per gateway, each budget counter's usage: summed over pods that count
    /// alone, the largest report where the state is shared.
    pub fn usage(&self) -> BTreeMap<ObjectRef, BTreeMap<String, u64>> {
        let state = self.state();
        let mut out: BTreeMap<ObjectRef, BTreeMap<String, u64>> = BTreeMap::new();
        for (gateway, channel) in &state.gateways {
            for subscriber in channel.subscribers.values() {
                let Some((shared, counters)) = &subscriber.usage else {
                    continue;
                };
                let totals = out.entry(gateway.clone()).or_default();
                for (key, used) in counters {
                    let total = totals.entry(key.clone()).or_default();
                    *total = if *shared {
                        (*total).max(*used)
                    } else {
                        *total + used
                    };
                }
            }
        }
        out
    }

    /// Per gateway, each provider some subscriber reports not closed, and
    /// how many do. A subscriber that disconnects no longer counts.
    pub fn circuits(&self) -> BTreeMap<ObjectRef, BTreeMap<String, Circuits>> {
        let state = self.state();
        let mut out: BTreeMap<ObjectRef, BTreeMap<String, Circuits>> = BTreeMap::new();
        for (gateway, channel) in &state.gateways {
            for circuit in channel.subscribers.values().flat_map(|s| &s.circuits) {
                let counts = out
                    .entry(gateway.clone())
                    .or_default()
                    .entry(circuit.provider.clone())
                    .or_default();
                match circuit.state {
                    CircuitState::Open => counts.open += 1,
                    CircuitState::HalfOpen => counts.half_open += 1,
                }
            }
        }
        out
    }

    /// Keeps a subscriber's newest circuit report (bounded: pods are not
    /// trusted to send few or short names); a change wakes the status writer.
    fn record_circuits(&self, gateway: &ObjectRef, id: u64, circuits: &[ProviderCircuit]) {
        let mut circuits: Vec<ProviderCircuit> = circuits
            .iter()
            .filter(|c| !c.provider.is_empty() && c.provider.len() <= 253)
            .take(MAX_REPORTED_CIRCUITS)
            .cloned()
            .collect();
        circuits.sort();
        // One state per provider: a confused peer must not count twice.
        circuits.dedup_by(|a, b| a.provider == b.provider);
        self.update(gateway, id, |s| replace(&mut s.circuits, circuits));
    }

    /// Queues alerts for the status writer (which records Events and calls
    /// webhooks), bounded; pods are not trusted to send few.
    fn record_alerts(&self, gateway: &ObjectRef, alerts: &[BudgetAlert]) {
        if alerts.is_empty() {
            return;
        }
        let mut state = self.state();
        let room = MAX_PENDING_ALERTS.saturating_sub(state.alerts.len());
        state.alerts.extend(
            alerts
                .iter()
                .filter(|a| a.budget.len() <= 507 && a.message.len() <= 1024)
                .take(room)
                .map(|a| (gateway.clone(), a.clone())),
        );
        drop(state);
        self.changed.notify_one();
    }

    /// The alerts reported since the last call.
    pub fn take_alerts(&self) -> Vec<(ObjectRef, BudgetAlert)> {
        std::mem::take(&mut self.state().alerts)
    }

    fn record_usage(&self, gateway: &ObjectRef, id: u64, usage: (bool, Vec<(String, u64)>)) {
        self.update(gateway, id, |s| replace(&mut s.usage, Some(usage)));
    }

    /// Applies `update` to one subscriber, if it is still subscribed; a
    /// change (`true`) wakes the status writer.
    fn update(&self, gateway: &ObjectRef, id: u64, update: impl FnOnce(&mut Subscriber) -> bool) {
        let mut state = self.state();
        let changed = state
            .gateways
            .get_mut(gateway)
            .and_then(|c| c.subscribers.get_mut(&id))
            .is_some_and(update);
        drop(state);
        if changed {
            self.changed.notify_one();
        }
    }

    /// The pods subscribed to `gateway` and the hash each runs.
    #[cfg(test)]
    fn subscribers(&self, gateway: &ObjectRef) -> Vec<(String, Option<String>)> {
        let state = self.state();
        state
            .gateways
            .get(gateway)
            .map(|c| {
                c.subscribers
                    .values()
                    .map(|s| (s.pod.clone(), s.running.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record(&self, gateway: &ObjectRef, id: u64, running: Option<String>) {
        self.update(gateway, id, |s| replace(&mut s.running, running));
    }

    fn unsubscribe(&self, gateway: &ObjectRef, id: u64) {
        let mut state = self.state();
        if let Some(channel) = state.gateways.get_mut(gateway) {
            channel.subscribers.remove(&id);
        }
        drop(state);
        self.changed.notify_one();
    }
}

/// One open subscription; dropping it unregisters the subscriber.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    gateway: ObjectRef,
    id: u64,
    /// The newest snapshot of the gateway; closed when the gateway is deleted.
    pub updates: watch::Receiver<Option<Published>>,
}

impl Subscription {
    /// Records what the gateway reported. A rejection means it still runs
    /// its previous snapshot, which is not the published one.
    pub fn record(&self, message: &GatewayMessage) {
        match message {
            GatewayMessage::Applied { hash } => {
                self.hub.record(&self.gateway, self.id, Some(hash.clone()));
            }
            GatewayMessage::Usage {
                shared,
                counters,
                alerts,
                circuits,
            } => {
                let mut counters = counters.clone();
                counters.truncate(tollgate_config::push::MAX_REPORTED_COUNTERS);
                self.hub
                    .record_usage(&self.gateway, self.id, (*shared, counters));
                self.hub.record_alerts(&self.gateway, alerts);
                self.hub.record_circuits(&self.gateway, self.id, circuits);
            }
            GatewayMessage::Rejected { hash, error } => {
                // Both strings come from the pod: bound them before logging.
                tracing::warn!(
                    gateway = %self.gateway,
                    hash = %prefix(hash, 12),
                    error = %prefix(error, 512),
                    "a gateway rejected its snapshot"
                );
            }
        }
    }

    pub fn gateway(&self) -> &ObjectRef {
        &self.gateway
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.gateway, self.id);
    }
}

/// Stores `value` in `slot`; whether that changed it.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// At most `chars` characters of `text` (cut on a character boundary: the
/// text may come from a peer).
fn prefix(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(end, _)| &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::load::{Loaded, add_documents};

    fn gateway(name: &str) -> ObjectRef {
        ObjectRef {
            kind: "AIGateway".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// Snapshots of gateway `gw` whose only route sends to backend `model`.
    fn snapshots(model: &str) -> BTreeMap<ObjectRef, Snapshot> {
        let yaml = format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: gw}}
spec: {{}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: mock}}
spec: {{type: Mock, endpoint: "http://127.0.0.1:9/v1"}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  gatewayRef: {{name: gw}}
  models: [chat]
  backends: [{{providerRef: {{name: mock}}, model: {model}}}]
"#
        );
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "test.yaml", &yaml, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        tollgate_config::compile(
            &loaded.resources,
            &tollgate_config::DigestKey::from_bytes([9; 32]),
        )
        .snapshots
    }

    fn hub() -> Arc<Hub> {
        Hub::new(Arc::new(Notify::new()))
    }

    #[test]
    fn nobody_subscribes_before_the_first_compile() {
        let hub = hub();
        assert_eq!(
            hub.subscribe(&gateway("gw"), "pod").unwrap_err(),
            SubscribeError::NotReady
        );
        hub.publish([&gateway("gw")], &snapshots("a"));
        assert!(hub.subscribe(&gateway("gw"), "pod").is_ok());
        assert_eq!(
            hub.subscribe(&gateway("other"), "pod").unwrap_err(),
            SubscribeError::UnknownGateway(gateway("other"))
        );
    }

    #[test]
    fn a_subscriber_sees_the_newest_snapshot_and_is_counted_once_it_acks() {
        let hub = hub();
        let first = snapshots("a");
        hub.publish([&gateway("gw")], &first);
        let subscription = hub.subscribe(&gateway("gw"), "pod-1").unwrap();
        let hash_a = first[&gateway("gw")].hash.clone();
        assert_eq!(
            subscription
                .updates
                .borrow()
                .as_ref()
                .map(|p| p.hash.clone()),
            Some(hash_a.clone())
        );
        let tally = |hub: &Hub| hub.tallies()[&gateway("gw")].clone();
        assert_eq!(
            tally(&hub),
            Tally {
                hash: Some(hash_a.clone()),
                connected: 1,
                updated: 0
            }
        );
        subscription.record(&GatewayMessage::Applied {
            hash: hash_a.clone(),
        });
        assert_eq!(tally(&hub).updated, 1);

        // A new version: the subscriber still runs the old one until it acks.
        let second = snapshots("b");
        let hash_b = second[&gateway("gw")].hash.clone();
        hub.publish([&gateway("gw")], &second);
        assert!(subscription.updates.has_changed().unwrap());
        assert_eq!(tally(&hub).updated, 0);
        subscription.record(&GatewayMessage::Rejected {
            hash: hash_b.clone(),
            error: "no".into(),
        });
        assert_eq!(tally(&hub).updated, 0, "a rejection is not an update");
        subscription.record(&GatewayMessage::Applied {
            hash: hash_b.clone(),
        });
        assert_eq!(tally(&hub).updated, 1);
        assert_eq!(
            hub.subscribers(&gateway("gw")),
            vec![("pod-1".to_string(), Some(hash_b))]
        );

        drop(subscription);
        assert_eq!(tally(&hub).connected, 0);
    }

    #[test]
    fn a_reconnecting_pod_replaces_its_old_subscription() {
        let hub = hub();
        let first = snapshots("a");
        let hash = first[&gateway("gw")].hash.clone();
        hub.publish([&gateway("gw")], &first);
        let old = hub.subscribe(&gateway("gw"), "pod-1").unwrap();
        old.record(&GatewayMessage::Applied { hash: hash.clone() });
        let new = hub.subscribe(&gateway("gw"), "pod-1").unwrap();
        let tally = hub.tallies()[&gateway("gw")].clone();
        assert_eq!((tally.connected, tally.updated), (1, 0));
        new.record(&GatewayMessage::Applied { hash: hash.clone() });
        old.record(&GatewayMessage::Applied { hash });
        drop(old);
        let tally = hub.tallies()[&gateway("gw")].clone();
        assert_eq!(
            (tally.connected, tally.updated),
            (1, 1),
            "the old stream ending changes nothing"
        );
        // Subscribers that did not name their pod are never merged.
        let _a = hub.subscribe(&gateway("gw"), UNKNOWN_POD).unwrap();
        let _b = hub.subscribe(&gateway("gw"), UNKNOWN_POD).unwrap();
        assert_eq!(hub.tallies()[&gateway("gw")].connected, 3);
    }

    fn circuit_report(circuits: &[(&str, CircuitState)]) -> GatewayMessage {
        GatewayMessage::Usage {
            shared: false,
            counters: Vec::new(),
            alerts: Vec::new(),
            circuits: circuits
                .iter()
                .map(|(provider, state)| ProviderCircuit {
                    provider: provider.to_string(),
                    state: *state,
                })
                .collect(),
        }
    }

    /// Whether the status writer was poked since the last call.
    async fn poked(changed: &Notify) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(20), changed.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn circuits_count_the_replicas_reporting_them_until_they_close_or_leave() {
        use CircuitState::{HalfOpen, Open};
        let changed = Arc::new(Notify::new());
        let hub = Hub::new(changed.clone());
        hub.publish([&gateway("gw"), &gateway("other")], &snapshots("a"));
        let one = hub.subscribe(&gateway("gw"), "pod-1").unwrap();
        let two = hub.subscribe(&gateway("gw"), "pod-2").unwrap();
        let _three = hub.subscribe(&gateway("gw"), "pod-3").unwrap();
        poked(&changed).await;
        assert!(hub.circuits().is_empty(), "nothing reported: all closed");

        one.record(&circuit_report(&[("mock", Open), ("spare", HalfOpen)]));
        assert!(
            poked(&changed).await,
            "a new report wakes the status writer"
        );
        two.record(&circuit_report(&[("mock", Open)]));
        let counts = |hub: &Hub| {
            hub.circuits()
                .get(&gateway("gw"))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            counts(&hub),
            BTreeMap::from([
                (
                    "mock".to_string(),
                    Circuits {
                        open: 2,
                        half_open: 0
                    }
                ),
                (
                    "spare".to_string(),
                    Circuits {
                        open: 0,
                        half_open: 1
                    }
                ),
            ])
        );
        poked(&changed).await;
        two.record(&circuit_report(&[("mock", Open)]));
        assert!(
            !poked(&changed).await,
            "the same report again changes nothing"
        );

        // pod-1 probes: half-open; pod-2's probe succeeded (absent: closed).
        one.record(&circuit_report(&[("mock", HalfOpen)]));
        two.record(&circuit_report(&[]));
        assert_eq!(
            counts(&hub),
            BTreeMap::from([(
                "mock".to_string(),
                Circuits {
                    open: 0,
                    half_open: 1
                }
            )])
        );
        assert!(poked(&changed).await);

        // A replica that disconnects takes its report with it.
        drop(one);
        assert!(hub.circuits().is_empty());

        // A confused or hostile peer counts once per provider, bounded.
        let many: Vec<(String, CircuitState)> = (0..MAX_REPORTED_CIRCUITS + 10)
            .map(|i| (format!("p{i}"), Open))
            .collect();
        let many: Vec<(&str, CircuitState)> = many.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        two.record(&circuit_report(&many));
        assert_eq!(counts(&hub).len(), MAX_REPORTED_CIRCUITS);
        two.record(&circuit_report(&[
            ("mock", Open),
            ("mock", HalfOpen),
            ("", Open),
        ]));
        assert_eq!(
            counts(&hub),
            BTreeMap::from([(
                "mock".to_string(),
                Circuits {
                    open: 1,
                    half_open: 0
                }
            )])
        );
    }

    #[test]
    fn peer_text_is_cut_on_character_boundaries() {
        assert_eq!(prefix("a€€€€€€€€€€€€€€", 3), "a€€");
        assert_eq!(prefix("abc", 12), "abc");
        let rejected = GatewayMessage::Rejected {
            hash: "€".repeat(20),
            error: "x".repeat(10_000),
        };
        let hub = hub();
        hub.publish([&gateway("gw")], &snapshots("a"));
        hub.subscribe(&gateway("gw"), "pod")
            .unwrap()
            .record(&rejected);
    }

    #[test]
    fn republishing_the_same_snapshot_wakes_nobody() {
        let hub = hub();
        hub.publish([&gateway("gw")], &snapshots("a"));
        let mut subscription = hub.subscribe(&gateway("gw"), "pod").unwrap();
        subscription.updates.mark_unchanged();
        hub.publish([&gateway("gw")], &snapshots("a"));
        assert!(!subscription.updates.has_changed().unwrap());
    }

    #[test]
    fn a_failed_compile_keeps_the_last_snapshot_and_a_deleted_gateway_ends_streams() {
        let hub = hub();
        let first = snapshots("a");
        hub.publish([&gateway("gw")], &first);
        let subscription = hub.subscribe(&gateway("gw"), "pod").unwrap();
        hub.publish([&gateway("gw")], &BTreeMap::new());
        assert_eq!(
            hub.tallies()[&gateway("gw")].hash.as_deref(),
            Some(first[&gateway("gw")].hash.as_str())
        );
        hub.publish([], &BTreeMap::new());
        assert!(
            subscription.updates.has_changed().is_err(),
            "sender dropped"
        );
        assert!(hub.tallies().is_empty());
    }
}
