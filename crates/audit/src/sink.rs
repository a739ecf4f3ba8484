//! The IO edge: [`AuditLog::record`] seals a record into this replica's
//! chain and queues it without blocking; a writer appends it to the spool;
//! one task per sink delivers from the spool and advances its cursor only
//! once the sink has acknowledged.
//!
//! Nothing is dropped silently. A full in-memory queue counts the record
//! as lost and, once there is room again, seals a marker record saying how
//! many were lost; a full spool deletes its oldest segment and each sink
//! that had not delivered it counts exactly the records it lost, which also
//! show as a gap (`Missing`) when its output is verified.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Chain;
use crate::config::{AuditConfig, SinkConfig};
use crate::deliver::{BuildError, Delivery, format_rfc3339_millis};
use crate::spool::{
    self, RecoverError, SinkProgress, SpoolReader, SpoolShared, SpoolWriter, Spooled,
    unreachable_records,
};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("AuditLog::start must be called within a tokio runtime")]
    NoRuntime,
    #[error("audit config: {0}")]
    Config(String),
    #[error("audit sink {sink}: {source}")]
    Sink {
        sink: String,
        #[source]
        source: BuildError,
    },
    #[error("audit spool {dir}: {source}")]
    Spool {
        dir: String,
        #[source]
        source: RecoverError,
    },
    #[error(
        "audit spool {dir} continues replica {found:?}'s chain, not {expected:?}: give each replica its own spool"
    )]
    OtherReplica {
        dir: String,
        found: String,
        expected: String,
    },
}

/// A snapshot of the audit log's counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records accepted by [`AuditLog::record`] (and loss markers) since start.
    pub records_recorded: u64,
    /// Records appended to the spool since start.
    pub records_spooled: u64,
    /// Records lost before reaching the spool: queue full, a write that
    /// failed, or recorded after shutdown.
    pub records_lost: u64,
    pub spool_bytes: u64,
    pub spool_segments: u64,
    /// Seq of the newest record flushed to the spool.
    pub last_seq: u64,
    pub sinks: Vec<SinkStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub name: String,
    pub kind: &'static str,
    /// Records the sink acknowledged since start.
    pub delivered: u64,
    /// Records the sink will never get: deleted by the spool's bound (or
    /// never spooled) before it delivered them.
    pub lost: u64,
    /// Spooled records still to deliver.
    pub backlog: u64,
    /// The last seq the sink acknowledged (its persisted cursor).
    pub acked_seq: u64,
    /// Failed delivery attempts since start (each is retried).
    pub failures: u64,
    /// Failed attempts since the last success: non-zero while it is down.
    pub consecutive_failures: u64,
    pub last_error: Option<String>,
}

/// The audit log of one replica. Cheap to clone; all clones feed the same
/// chain.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    producer: Mutex<Producer>,
    recorded: AtomicU64,
    lost_before_spool: AtomicU64,
    spool: Arc<SpoolShared>,
    durable: watch::Receiver<u64>,
    sinks: Vec<Arc<SinkShared>>,
    tasks: Mutex<Option<Tasks>>,
    stopping: watch::Sender<Option<Instant>>,
}

struct Producer {
    chain: Chain,
    /// `None` once shut down.
    queue: Option<mpsc::Sender<Spooled>>,
    /// Lost to a full queue since the last marker record.
    unreported_lost: u64,
}

struct Tasks {
    writer: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
}

struct SinkShared {
    name: String,
    kind: &'static str,
    acked: Arc<AtomicU64>,
    /// Last seq handed to the sink (delivered or in flight).
    read_through: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Everything one sink task needs.
struct SinkTask {
    delivery: Delivery,
    shared: Arc<SinkShared>,
    spool: Arc<SpoolShared>,
    durable: watch::Receiver<u64>,
    stopping: watch::Receiver<Option<Instant>>,
    dir: std::path::PathBuf,
    fsync: bool,
    batch_size: usize,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl AuditLog {
    /// Opens (or resumes) the spool in `config.spoolDir` and starts the
    /// writer and one task per sink on the current tokio runtime. After a
    /// restart the chain continues from the last spooled record and each
    /// sink from its cursor.
    pub fn start(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AuditError::NoRuntime)?;
        validate(&config)?;
        let deliveries = config
            .sinks
            .iter()
            .map(|sink| {
                Delivery::build(sink, &config.replica).map_err(|source| AuditError::Sink {
                    sink: sink.name().to_string(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let dir = config.spool_dir.clone();
        let spool_error = |source: RecoverError| AuditError::Spool {
            dir: dir.display().to_string(),
            source,
        };
        let recovered = spool::recover(&dir).map_err(spool_error)?;
        let (chain, last_seq) = match &recovered.head {
            Some(head) => resume_chain(head, &config)?,
            None => (Chain::new(config.replica.clone()), 0),
        };
        let floor = recovered
            .segments
            .first()
            .map_or(last_seq + 1, |s| s.first_seq);
        let spool = Arc::new(SpoolShared::default());
        spool.floor.store(floor, Ordering::Release);
        spool.bytes.store(
            recovered.segments.iter().map(|s| s.bytes).sum(),
            Ordering::Relaxed,
        );
        spool
            .segments
            .store(recovered.segments.len() as u64, Ordering::Relaxed);

        let mut sinks = Vec::new();
        for sink in &config.sinks {
            let name = sink.name().to_string();
            let stored =
                spool::load_cursor(&dir, &name).map_err(|e| spool_error(RecoverError::Io(e)))?;
            let acked = match stored {
                Some(acked) if acked > last_seq => {
                    tracing::warn!(
                        sink = %name, acked, last_seq,
                        "audit sink cursor is past the spool's last record (spool replaced?): resuming from the spool's end"
                    );
                    last_seq
                }
                Some(acked) => acked,
                // A new sink gets what the spool still holds.
                None => floor - 1,
            };
            sinks.push(Arc::new(SinkShared {
                name,
                kind: sink.kind(),
                acked: Arc::new(AtomicU64::new(acked)),
                read_through: AtomicU64::new(acked),
                delivered: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                consecutive_failures: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }));
        }

        let (durable_tx, durable) = watch::channel(last_seq);
        let (stopping, stopping_rx) = watch::channel(None);
        let (queue, records) = mpsc::channel(config.queue_capacity.max(1));
        let writer = SpoolWriter {
            dir: dir.clone(),
            segments: recovered.segments.into(),
            active: None,
            max_bytes: config.spool_max_bytes,
            segment_bytes: config.segment_bytes(),
            fsync: config.fsync,
            last_seq,
            shared: spool.clone(),
            sinks: sinks
                .iter()
                .map(|s| SinkProgress {
                    name: s.name.clone(),
                    acked: s.acked.clone(),
                })
                .collect(),
            durable: durable_tx,
        };
        let writer = runtime.spawn_blocking(move || writer.run(records));
        let sink_tasks = config
            .sinks
            .iter()
            .zip(deliveries)
            .zip(&sinks)
            .map(|((sink, delivery), shared)| {
                let (backoff_initial, backoff_max) = backoff_of(sink);
                let reader =
                    SpoolReader::new(dir.clone(), shared.acked.load(Ordering::Relaxed) + 1);
                let task = SinkTask {
                    delivery,
                    shared: shared.clone(),
                    spool: spool.clone(),
                    durable: durable.clone(),
                    stopping: stopping_rx.clone(),
                    dir: dir.clone(),
                    fsync: config.fsync,
                    batch_size: sink.batch_size(),
                    backoff_initial,
                    backoff_max,
                };
                runtime.spawn(task.run(reader))
            })
            .collect();

        Ok(AuditLog {
            inner: Arc::new(Inner {
                producer: Mutex::new(Producer {
                    chain,
                    queue: Some(queue),
                    unreported_lost: 0,
                }),
                recorded: AtomicU64::new(0),
                lost_before_spool: AtomicU64::new(0),
                spool,
                durable,
                sinks,
                tasks: Mutex::new(Some(Tasks {
                    writer,
                    sinks: sink_tasks,
                })),
                stopping,
            }),
        })
    }

    /// Seals `fields` as this replica's next record (a `ts` is added when
    /// absent) and queues it for the spool. Never blocks on IO: when the
    /// queue is full the record is counted as lost, and the next record
    /// that fits is preceded by a marker record with the count.
    pub fn record(&self, mut fields: Map<String, Value>) {
        if !fields.contains_key("ts") {
            fields.insert(
                "ts".into(),
                Value::String(format_rfc3339_millis(now_millis())),
            );
        }
        let inner = &*self.inner;
        let mut producer = inner
            .producer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Producer {
            chain,
            queue,
            unreported_lost,
        } = &mut *producer;
        let Some(queue) = queue.as_ref() else {
            inner.lost_before_spool.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Reserve before sealing: a seq is only used by a record that will
        // reach the writer, so the spool has no gaps of its own making.
        if *unreported_lost > 0 {
            let Ok(permit) = queue.try_reserve() else {
                *unreported_lost += 1;
                inner.lost_before_spool.fetch_add(1, Ordering::Relaxed);
                return;
            };
            permit.send(seal(chain, lost_marker(*unreported_lost)));
            inner.recorded.fetch_add(1, Ordering::Relaxed);
            *unreported_lost = 0;
        }
        match queue.try_reserve() {
            Ok(permit) => {
                permit.send(seal(chain, fields));
                inner.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if *unreported_lost == 0 {
                    tracing::warn!(%error, "audit queue full: records are being lost (counted)");
                }
                *unreported_lost += 1;
                inner.lost_before_spool.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> AuditStats {
        let inner = &*self.inner;
        let last_seq = *inner.durable.borrow();
        let floor = inner.spool.floor.load(Ordering::Acquire);
        AuditStats {
            records_recorded: inner.recorded.load(Ordering::Relaxed),
            records_spooled: inner.spool.spooled.load(Ordering::Relaxed),
            records_lost: inner.lost_before_spool.load(Ordering::Relaxed)
                + inner.spool.write_failures.load(Ordering::Relaxed),
            spool_bytes: inner.spool.bytes.load(Ordering::Relaxed),
            spool_segments: inner.spool.segments.load(Ordering::Relaxed),
            last_seq,
            sinks: inner
                .sinks
                .iter()
                .map(|sink| {
                    let acked = sink.acked.load(Ordering::Acquire);
                    let read_through = sink.read_through.load(Ordering::Acquire).max(acked);
                    let pending_loss = unreachable_records(read_through, floor);
                    SinkStats {
                        name: sink.name.clone(),
                        kind: sink.kind,
                        delivered: sink.delivered.load(Ordering::Relaxed),
                        lost: sink.lost.load(Ordering::Relaxed) + pending_loss,
                        backlog: last_seq.saturating_sub(acked).saturating_sub(pending_loss),
                        acked_seq: acked,
                        failures: sink.failures.load(Ordering::Relaxed),
                        consecutive_failures: sink.consecutive_failures.load(Ordering::Relaxed),
                        last_error: sink
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone(),
                    }
                })
                .collect(),
        }
    }

    /// Stops accepting records, lets the writer spool what is queued and
    /// the sinks deliver what they can until `deadline` has passed. What a
    /// sink did not deliver stays in the spool for the next start. Any
    /// clone may call it; later calls just return the stats.
    pub async fn shutdown(self, deadline: Duration) -> AuditStats {
        let until = Instant::now() + deadline;
        drop(
            self.inner
                .producer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queue
                .take(),
        );
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tasks) = tasks {
            if tokio::time::timeout_at(until, tasks.writer).await.is_err() {
                tracing::warn!("audit spool writer did not finish before the shutdown deadline");
            }
            self.inner.stopping.send_replace(Some(until));
            for mut sink in tasks.sinks {
                if tokio::time::timeout_at(until, &mut sink).await.is_err() {
                    sink.abort();
                }
            }
        }
        self.stats()
    }
}

fn validate(config: &AuditConfig) -> Result<(), AuditError> {
    let bad = |why: String| Err(AuditError::Config(why));
    if config.replica.is_empty() {
        return bad("replica must not be empty".into());
    }
    if config.spool_max_bytes == 0 {
        return bad("spoolMaxBytes must be positive".into());
    }
    let mut names = HashSet::new();
    for sink in &config.sinks {
        let name = sink.name();
        if !spool::valid_sink_name(name) {
            return bad(format!(
                "sink name {name:?}: letters, digits, '-', '_' and '.' only (it names a file in the spool)"
            ));
        }
        if !names.insert(name) {
            return bad(format!(
                "two sinks are named {name:?}: give each its own name"
            ));
        }
    }
    Ok(())
}

fn resume_chain(head: &Value, config: &AuditConfig) -> Result<(Chain, u64), AuditError> {
    let replica = head.get("replica").and_then(Value::as_str);
    let seq = head.get("seq").and_then(Value::as_u64);
    let hash = head.get("hash").and_then(Value::as_str);
    let dir = config.spool_dir.display().to_string();
    match (replica, seq, hash) {
        (Some(replica), Some(seq), Some(hash)) if replica == config.replica => {
            Ok((Chain::resume(replica, seq, hash), seq))
        }
        (Some(found), Some(_), Some(_)) => Err(AuditError::OtherReplica {
            dir,
            found: found.to_string(),
            expected: config.replica.clone(),
        }),
        _ => Err(AuditError::Spool {
            dir: dir.clone(),
            source: RecoverError::Corrupt {
                path: config.spool_dir.clone(),
                why: "the last spooled record lacks replica, seq or hash".into(),
            },
        }),
    }
}

fn backoff_of(sink: &SinkConfig) -> (Duration, Duration) {
    let http = match sink {
        SinkConfig::Webhook(c) => &c.http,
        SinkConfig::Otlp(c) => &c.http,
        // Local sinks fail on a full disk or a closed pipe: retry calmly.
        SinkConfig::Stdout(_) | SinkConfig::File(_) => {
            return (Duration::from_millis(200), Duration::from_secs(5));
        }
    };
    (
        Duration::from_millis(http.backoff_initial_ms.max(1)),
        Duration::from_millis(http.backoff_max_ms.max(http.backoff_initial_ms).max(1)),
    )
}

/// Delay before retry number `attempt` (0 first): doubling, capped.
pub(crate) fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lost_marker(count: u64) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("kind".into(), Value::String("audit.lost".into()));
    fields.insert("lost".into(), Value::from(count));
    fields.insert(
        "reason".into(),
        Value::String("audit queue full: records were not spooled".into()),
    );
    fields.insert(
        "ts".into(),
        Value::String(format_rfc3339_millis(now_millis())),
    );
    fields
}

fn seal(chain: &mut Chain, fields: Map<String, Value>) -> Spooled {
    let sealed = chain.seal(fields);
    // Serializing a Value cannot fail.
    let mut line = serde_json::to_vec(&sealed).unwrap_or_default();
    line.push(b'\n');
    Spooled {
        seq: chain.seq(),
        line,
    }
}

impl SinkTask {
    async fn run(mut self, reader: SpoolReader) {
        // The reader moves into each blocking read and back.
        let mut reader = Some(reader);
        loop {
            let target = *self.durable.borrow_and_update();
            let floor = self.spool.floor.load(Ordering::Acquire);
            let Some(mut current) = reader.take() else {
                return;
            };
            let batch_size = self.batch_size;
            let read = tokio::task::spawn_blocking(move || {
                let batch = current.read(floor, target, batch_size);
                (current, batch)
            })
            .await;
            let (batch, caught_up) = match read {
                Ok((back, batch)) => {
                    let next = back.next_seq();
                    self.shared
                        .read_through
                        .store(next.saturating_sub(1), Ordering::Release);
                    reader = Some(back);
                    (batch, next > target)
                }
                Err(error) => {
                    tracing::error!(sink = %self.shared.name, %error, "audit sink reader failed; sink stopped");
                    return;
                }
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    self.note_failure(&format!("reading the spool: {error}"));
                    if !self.pause(self.backoff_max).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.skipped > 0 {
                self.shared.lost.fetch_add(batch.skipped, Ordering::Relaxed);
                tracing::warn!(
                    sink = %self.shared.name,
                    lost = batch.skipped,
                    "audit sink lost records the spool no longer holds (over its bound)"
                );
            }
            if batch.records.is_empty() {
                if !caught_up {
                    // A segment vanished under the reader: look again soon.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                // Wait for more, or end once the writer is gone.
                if self.durable.changed().await.is_err() && *self.durable.borrow() <= target {
                    return;
                }
                continue;
            }
            let records = Arc::new(batch.records);
            if !self.deliver(records.clone()).await {
                return;
            }
            let (count, last) = (records.len() as u64, records.last().map_or(0, |r| r.0));
            self.shared.acked.store(last, Ordering::Release);
            self.shared.delivered.fetch_add(count, Ordering::Relaxed);
            let (dir, name, fsync) = (self.dir.clone(), self.shared.name.clone(), self.fsync);
            let stored =
                tokio::task::spawn_blocking(move || spool::store_cursor(&dir, &name, last, fsync))
                    .await;
            if !matches!(stored, Ok(Ok(()))) {
                tracing::error!(sink = %self.shared.name, "audit sink cursor not saved; a restart may resend records");
            }
        }
    }

    /// Sends `records` until the sink takes them, backing off between
    /// attempts. False when the shutdown deadline came first.
    async fn deliver(&mut self, records: Arc<Vec<(u64, String)>>) -> bool {
        let mut attempt = 0;
        loop {
            match self.delivery.deliver(records.clone()).await {
                Ok(()) => {
                    if attempt > 0 {
                        tracing::info!(sink = %self.shared.name, attempts = attempt + 1, "audit sink delivering again");
                    }
                    self.shared.consecutive_failures.store(0, Ordering::Relaxed);
                    return true;
                }
                Err(error) => {
                    if attempt == 0 {
                        tracing::warn!(sink = %self.shared.name, %error, "audit sink delivery failed; retrying with backoff");
                    }
                    self.note_failure(&error.to_string());
                    let delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max);
                    attempt = attempt.saturating_add(1);
                    if !self.pause(delay).await {
                        return false;
                    }
                }
            }
        }
    }

    fn note_failure(&self, error: &str) {
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        self.shared
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed);
        *self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    /// Waits `delay`; false when shutting down and the deadline would pass
    /// first.
    async fn pause(&mut self, delay: Duration) -> bool {
        let give_up =
            |stopping: Option<Instant>| stopping.is_some_and(|d| Instant::now() + delay >= d);
        if give_up(*self.stopping.borrow()) {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            changed = self.stopping.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(delay).await;
                    return true;
                }
                !give_up(*self.stopping.borrow())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<u64> = (0..7)
            .map(|a| backoff_delay(a, initial, max).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff_delay(u32::MAX, initial, max), max);
    }

    #[test]
    fn sink_names_must_be_unique_and_file_safe() {
        let mut config = AuditConfig::new("gw", "/tmp/x");
        config.sinks =
            serde_json::from_value(serde_json::json!([{"type": "stdout"}, {"type": "stdout"}]))
                .unwrap();
        assert!(matches!(validate(&config), Err(AuditError::Config(_))));
        config.sinks = serde_json::from_value(serde_json::json!([
            {"type": "stdout"},
            {"type": "stdout", "name": "../escape"}
        ]))
        .unwrap();
        assert!(matches!(validate(&config), Err(AuditError::Config(_))));
        config.sinks.pop();
        assert!(validate(&config).is_ok());
    }

    #[test]
    fn the_config_reads_from_camel_case_yaml() {
        let yaml = r#"
replica: gw-0
spoolDir: /var/lib/tollgate/audit
spoolMaxBytes: 1048576
sinks:
  - type: file
    path: /var/log/tollgate/audit.log
    maxBytes: 4096
    maxFiles: 3
  - type: webhook
    name: siem
    url: https://siem.example:8088/services/collector/raw
    headers: {Authorization: "Splunk 0000"}
    timeoutMs: 2500
    batchSize: 100
    backoffMaxMs: 5000
  - type: otlp
    endpoint: http://collector:4318
  - type: stdout
"#;
        let config: AuditConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(config.spool_max_bytes, 1 << 20);
        assert_eq!(config.segment_bytes(), 128 << 10);
        assert!(config.fsync);
        let names: Vec<&str> = config.sinks.iter().map(SinkConfig::name).collect();
        assert_eq!(names, ["file", "siem", "otlp", "stdout"]);
        let SinkConfig::Webhook(webhook) = &config.sinks[1] else {
            panic!("a webhook")
        };
        assert_eq!(webhook.http.headers["Authorization"], "Splunk 0000");
        assert_eq!(
            (
                webhook.http.timeout_ms,
                webhook.http.batch_size,
                webhook.http.backoff_max_ms
            ),
            (2500, 100, 5000)
        );
        assert_eq!(webhook.http.backoff_initial_ms, 200);
        let SinkConfig::File(file) = &config.sinks[0] else {
            panic!("a file")
        };
        assert_eq!((file.max_bytes, file.max_files), (4096, 3));
        assert!(validate(&config).is_ok());
    }
}
