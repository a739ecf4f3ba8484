//! Configuration of the audit log's spool and sinks, in the gateway's
//! camelCase YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where records are spooled and where they are delivered.
///
/// ```yaml
/// replica: gw-0
/// spoolDir: /var/lib/tollgate/audit
/// spoolMaxBytes: 268435456
/// sinks:
///   - type: file
///     path: /var/log/tollgate/audit.log
///     maxBytes: 104857600
///     maxFiles: 10
///   - type: webhook
///     name: siem
///     url: https://siem.example:8088/services/collector/raw
///     headers: {Authorization: "Splunk 0000"}
///   - type: otlp
///     endpoint: http://otel-collector:4318
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfig {
    /// This replica's chain name: `replica` in every record.
    pub replica: String,
    /// Segments and sink cursors; one directory per replica.
    pub spool_dir: PathBuf,
    /// Past this the oldest segment is deleted, delivered or not.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Size at which a segment is closed and a new one started; by default
    /// an eighth of `spoolMaxBytes` (at most 16 MiB), so the bound drops
    /// small slices, never the whole spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_max_bytes: Option<u64>,
    /// Records waiting in memory for the spool writer; past this they are
    /// counted as lost (and a marker record says how many).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// fsync the spool after each batch, so a machine crash (not only a
    /// process crash) loses nothing that was spooled.
    #[serde(default = "default_true")]
    pub fsync: bool,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

impl AuditConfig {
    /// A config with the defaults and no sinks.
    pub fn new(replica: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            replica: replica.into(),
            spool_dir: spool_dir.into(),
            spool_max_bytes: default_spool_max_bytes(),
            segment_max_bytes: None,
            queue_capacity: default_queue_capacity(),
            fsync: true,
            sinks: Vec::new(),
        }
    }

    pub fn segment_bytes(&self) -> u64 {
        let half_bound = (self.spool_max_bytes / 2).max(1);
        self.segment_max_bytes
            .unwrap_or((self.spool_max_bytes / 8).min(16 << 20))
            .clamp(1, half_bound)
    }
}

fn default_spool_max_bytes() -> u64 {
    256 << 20
}

fn default_queue_capacity() -> usize {
    16_384
}

fn default_true() -> bool {
    true
}

/// One destination. `name` (default: the type) names the sink's cursor
/// file in the spool, so it must be unique and stay the same across
/// restarts for the sink to resume where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SinkConfig {
    Stdout(StdoutSinkConfig),
    File(FileSinkConfig),
    Webhook(WebhookSinkConfig),
    Otlp(OtlpSinkConfig),
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        let (name, kind) = match self {
            SinkConfig::Stdout(c) => (&c.name, "stdout"),
            SinkConfig::File(c) => (&c.name, "file"),
            SinkConfig::Webhook(c) => (&c.name, "webhook"),
            SinkConfig::Otlp(c) => (&c.name, "otlp"),
        };
        name.as_deref().unwrap_or(kind)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::File(_) => "file",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Otlp(_) => "otlp",
        }
    }

    pub(crate) fn batch_size(&self) -> usize {
        let size = match self {
            SinkConfig::Stdout(c) => c.batch_size,
            SinkConfig::File(c) => c.batch_size,
            SinkConfig::Webhook(c) => c.http.batch_size,
            SinkConfig::Otlp(c) => c.http.batch_size,
        };
        size.max(1)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StdoutSinkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_local_batch")]
    pub batch_size: usize,
}

impl Default for StdoutSinkConfig {
    fn default() -> Self {
        Self {
            name: None,
            batch_size: default_local_batch(),
        }
    }
}

/// `path` and, once it reaches `maxBytes`, `path.1` .. `path.{maxFiles}`
/// (`.1` the newest); read oldest first they verify as one chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSinkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub path: PathBuf,
    #[serde(default = "default_file_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    #[serde(default = "default_true")]
    pub fsync: bool,
    #[serde(default = "default_local_batch")]
    pub batch_size: usize,
}

impl FileSinkConfig {
    /// A file sink at `path` with the default rotation.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            name: None,
            path: path.into(),
            max_bytes: default_file_max_bytes(),
            max_files: default_max_files(),
            fsync: true,
            batch_size: default_local_batch(),
        }
    }
}

fn default_local_batch() -> usize {
    1024
}

fn default_file_max_bytes() -> u64 {
    100 << 20
}

fn default_max_files() -> u32 {
    10
}

/// How batches are POSTed and retried, shared by `webhook` and `otlp`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpDeliveryConfig {
    /// Sent with every request, e.g. `Authorization` for a SIEM.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_http_batch")]
    pub batch_size: usize,
    /// First retry delay; doubled per failure up to `backoffMaxMs`.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl Default for HttpDeliveryConfig {
    fn default() -> Self {
        Self {
            headers: BTreeMap::new(),
            timeout_ms: default_timeout_ms(),
            batch_size: default_http_batch(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_http_batch() -> usize {
    500
}

fn default_backoff_initial_ms() -> u64 {
    200
}

fn default_backoff_max_ms() -> u64 {
    30_000
}

/// POST of NDJSON batches (`Content-Type: application/x-ndjson`), one
/// record per line as spooled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSinkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    #[serde(flatten)]
    pub http: HttpDeliveryConfig,
}

/// OTLP/HTTP JSON logs: `POST {endpoint}/v1/logs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtlpSinkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Base URL, e.g. `http://otel-collector:4318`.
    pub endpoint: String,
    #[serde(flatten)]
    pub http: HttpDeliveryConfig,
}
