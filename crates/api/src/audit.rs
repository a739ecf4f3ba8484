//! Audit (`AIGateway.spec.audit`): one tamper-evident record per LLM
//! request and per MCP tool call, hash-chained per gateway replica, spooled
//! on disk and delivered to sinks (stdout, rotating file, webhook / SIEM
//! event collector, OTLP logs).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSpec {
    /// What a record holds of the request and the answer besides their
    /// SHA-256 hashes: `None` (default), `Redacted` (personal data and
    /// secrets replaced by their kind, `[EMAIL]`), or `Full`. Content is
    /// capped at 64 KiB per direction (a record says when it was cut).
    #[serde(default)]
    pub content: AuditContent,
    /// The durable spool every record is written to before any sink sees
    /// it; a sink outage loses nothing until the spool is full, and what is
    /// lost beyond that is counted (`tollgate_audit_sink_lost_records_total`)
    /// and marked in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<AuditSpool>,
    /// Where records go. No sink: records are still spooled and chained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, (has(t.name) ? t.name : t.type) == (has(s.name) ? s.name : s.type)))").message("audit sink names (default: the type) must be unique"))]
    pub sinks: Vec<AuditSink>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum AuditContent {
    #[default]
    None,
    Redacted,
    Full,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSpool {
    /// Directory of the spool, one per replica (default
    /// `/var/lib/tollgate/audit`; the controller mounts a volume there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub path: Option<String>,
    /// The bound, in bytes (default 256 MiB, at least 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1048576").message("the spool bound is at least 1 MiB (1048576 bytes)"))]
    pub max_bytes: Option<u64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type != 'File' || has(self.path)").message("a File sink needs a path"))]
#[x_kube(validation = Rule::new("!(self.type == 'Webhook' || self.type == 'Otlp') || has(self.url)").message("Webhook and Otlp sinks need a url"))]
pub struct AuditSink {
    #[serde(rename = "type")]
    pub kind: AuditSinkType,
    /// Names the sink's delivery cursor in the spool (default: the type);
    /// keep it stable across changes so delivery resumes where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a sink name is a DNS label"))]
    pub name: Option<String>,
    /// File: the file written (rotated to `path.1`, `path.2`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub path: Option<String>,
    /// File: size at which it rotates (default 100 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// File: rotated files kept (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxFiles is between 1 and 1000"))]
    pub max_files: Option<u32>,
    /// Webhook: the URL records are POSTed to as NDJSON batches (a SIEM's
    /// HTTP event collector). Otlp: the OTLP/HTTP base URL (`/v1/logs` is
    /// added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must be http:// or https://"))]
    pub url: Option<String>,
    /// Webhook and Otlp: extra request headers (for example the collector's
    /// `Authorization`), each a value or a Secret key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<AuditHeader>,
    /// Webhook and Otlp: per-request timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub timeout: Option<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditSinkType {
    Stdout,
    File,
    Webhook,
    Otlp,
}

impl AuditSinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditSinkType::Stdout => "stdout",
            AuditSinkType::File => "file",
            AuditSinkType::Webhook => "webhook",
            AuditSinkType::Otlp => "otlp",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.secretRef)").message("a header has exactly one of value and secretRef"))]
pub struct AuditHeader {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// A Secret key in the gateway's namespace holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}
