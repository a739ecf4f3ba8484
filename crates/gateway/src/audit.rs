//! Audit records of this replica: one per LLM request (written when the
//! request settles) and one per MCP tool call, sealed into the replica's
//! hash chain and spooled by `tollgate-audit`, which delivers them to the
//! configured sinks. Configured by `AIGateway.spec.audit`; without it
//! nothing here runs and a request pays one pointer load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tollgate_api::audit::{AuditContent, AuditSinkType};
use tollgate_audit::{
    AuditConfig, AuditLog, FileSinkConfig, HttpDeliveryConfig, OtlpSinkConfig, SinkConfig,
    StdoutSinkConfig, WebhookSinkConfig,
};
use tollgate_config::snapshot;

/// Content kept per direction when content is captured.
pub const MAX_CONTENT: usize = 64 * 1024;

/// How long a replaced audit log may take to hand its spool over.
const HANDOVER: Duration = Duration::from_secs(5);

/// The replica's audit log, replaced when `spec.audit` changes.
#[derive(Default)]
pub struct Audit {
    current: ArcSwapOption<Auditor>,
    /// Records that had no log to go to (its configuration was being
    /// replaced, or its spool could not be opened): counted, never silent.
    pub unlogged: AtomicU64,
}

pub struct Auditor {
    log: AuditLog,
    settings: snapshot::Audit,
}

impl Auditor {
    pub fn content(&self) -> AuditContent {
        self.settings.content
    }

    pub fn record(&self, fields: Map<String, Value>) {
        self.log.record(fields);
    }

    pub fn stats(&self) -> tollgate_audit::AuditStats {
        self.log.stats()
    }
}

/// This replica's name in its chain: the pod name, else the hostname.
pub fn replica_name() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(hostname)
        .unwrap_or_else(|| "tollgate".to_string())
}

/// The machine's hostname (in Kubernetes, the pod's name).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

impl Audit {
    /// The running auditor, if audit is configured.
    pub fn current(&self) -> Option<Arc<Auditor>> {
        self.current.load_full()
    }

    /// Records `fields` or counts them as unlogged.
    pub fn record(&self, fields: Map<String, Value>) {
        match self.current.load().as_ref() {
            Some(auditor) => auditor.record(fields),
            None => {
                self.unlogged.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies `settings` from a newly installed configuration: nothing
    /// when they did not change; otherwise the running log is shut down
    /// (its spool flushed and released) and a new one started on the new
    /// settings, on the current tokio runtime.
    pub fn configure(self: &Arc<Self>, settings: Option<&snapshot::Audit>) {
        let running = self.current.load_full();
        if running.as_ref().map(|a| &a.settings) == settings {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!("audit settings changed outside a tokio runtime: not applied");
            return;
        }
        let Some(settings) = settings.cloned() else {
            self.current.store(None);
            if let Some(old) = running.and_then(Arc::into_inner) {
                tokio::spawn(async move { old.log.shutdown(HANDOVER).await });
            }
            return;
        };
        let this = self.clone();
        let start = move || match AuditLog::start(audit_config(&settings)) {
            Ok(log) => {
                tracing::info!(spool = %settings.spool_path, sinks = settings.sinks.len(), "audit log started");
                this.current
                    .store(Some(Arc::new(Auditor { log, settings })));
            }
            Err(error) => {
                tracing::error!(%error, spool = %settings.spool_path, "audit log cannot start: records are counted as unlogged");
            }
        };
        match running {
            None => start(),
            Some(old) => {
                // Until the old log has released the spool, records count
                // as unlogged.
                self.current.store(None);
                tokio::spawn(async move {
                    if let Some(old) = wait_unshared(old).await {
                        old.log.shutdown(HANDOVER).await;
                    }
                    start();
                });
            }
        }
    }
}

impl Audit {
    /// Copies the log's totals into the metrics (at scrape time).
    pub fn publish(&self, metrics: &crate::metrics::Metrics) {
        let mut seen = metrics
            .audit_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Counters move by what changed since the last scrape; a new log
        // (reconfigured) starts its totals again from zero.
        let mut advance =
            |key: String, total: u64, counter: &prometheus_client::metrics::counter::Counter| {
                let last = seen.insert(key, total).unwrap_or(0);
                counter.inc_by(if total >= last { total - last } else { total });
            };
        advance(
            "unlogged".into(),
            self.unlogged.load(Ordering::Relaxed),
            &metrics.audit_records_lost,
        );
        let Some(auditor) = self.current() else {
            return;
        };
        let stats = auditor.stats();
        advance(
            "recorded".into(),
            stats.records_recorded,
            &metrics.audit_records,
        );
        advance(
            "lost".into(),
            stats.records_lost,
            &metrics.audit_records_lost,
        );
        metrics
            .audit_spool_bytes
            .set(i64::try_from(stats.spool_bytes).unwrap_or(i64::MAX));
        for sink in &stats.sinks {
            let labels = crate::metrics::AuditSinkLabels {
                sink: sink.name.clone(),
            };
            advance(
                format!("delivered/{}", sink.name),
                sink.delivered,
                &metrics.audit_sink_delivered.get_or_create(&labels),
            );
            advance(
                format!("lost/{}", sink.name),
                sink.lost,
                &metrics.audit_sink_lost.get_or_create(&labels),
            );
            metrics
                .audit_sink_backlog
                .get_or_create(&labels)
                .set(i64::try_from(sink.backlog).unwrap_or(i64::MAX));
        }
    }

    /// Stops the log at process end: delivers what the sinks take within
    /// `deadline`; the rest stays in the spool for the next start.
    pub async fn shutdown(&self, deadline: Duration) {
        let Some(running) = self.current.swap(None) else {
            return;
        };
        if let Some(auditor) = wait_unshared(running).await {
            let stats = auditor.log.shutdown(deadline).await;
            tracing::info!(
                recorded = stats.records_recorded,
                lost = stats.records_lost,
                "audit log stopped"
            );
        }
    }
}

/// The auditor once no request holds it any more (bounded wait).
async fn wait_unshared(mut auditor: Arc<Auditor>) -> Option<Auditor> {
    for _ in 0..100 {
        match Arc::try_unwrap(auditor) {
            Ok(auditor) => return Some(auditor),
            Err(shared) => auditor = shared,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn audit_config(settings: &snapshot::Audit) -> AuditConfig {
    let mut config = AuditConfig::new(replica_name(), &settings.spool_path);
    config.spool_max_bytes = settings.spool_max_bytes;
    config.sinks = settings.sinks.iter().map(sink_config).collect();
    config
}

fn sink_config(sink: &snapshot::AuditSink) -> SinkConfig {
    let name = Some(sink.name.clone());
    let http = || HttpDeliveryConfig {
        headers: sink
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.0.clone()))
            .collect(),
        timeout_ms: sink.timeout_ms,
        ..HttpDeliveryConfig::default()
    };
    match sink.kind {
        AuditSinkType::Stdout => SinkConfig::Stdout(StdoutSinkConfig {
            name,
            ..StdoutSinkConfig::default()
        }),
        AuditSinkType::File => {
            let mut file = FileSinkConfig::new(sink.path.clone().unwrap_or_default());
            file.name = name;
            if let Some(max) = sink.max_bytes {
                file.max_bytes = max;
            }
            if let Some(max) = sink.max_files {
                file.max_files = max;
            }
            SinkConfig::File(file)
        }
        AuditSinkType::Webhook => SinkConfig::Webhook(WebhookSinkConfig {
            name,
            url: sink.url.clone().unwrap_or_default(),
            http: http(),
        }),
        AuditSinkType::Otlp => SinkConfig::Otlp(OtlpSinkConfig {
            name,
            endpoint: sink.url.clone().unwrap_or_default(),
            http: http(),
        }),
    }
}

/// What a request's record captures of its bodies while it runs: hashes
/// always, content per `spec.audit.content`, capped.
pub struct Capture {
    pub auditor: Arc<Auditor>,
    request_sha256: Option<String>,
    request: Option<String>,
    response: Sha256,
    response_content: Option<Vec<u8>>,
    truncated: bool,
}

impl Capture {
    pub fn new(auditor: Arc<Auditor>) -> Self {
        let keep = auditor.content() != AuditContent::None;
        Self {
            auditor,
            request_sha256: None,
            request: None,
            response: Sha256::new(),
            response_content: keep.then(Vec::new),
            truncated: false,
        }
    }

    /// The request body as the client sent it.
    pub fn request_bytes(&mut self, request: &[u8]) {
        self.request_sha256 = Some(hex::encode(Sha256::digest(request)));
        if self.auditor.content() != AuditContent::None {
            self.request = Some(capped_text(request));
            self.truncated |= request.len() > MAX_CONTENT;
        }
    }

    /// Bytes of the answer as they leave for the client.
    pub fn response_bytes(&mut self, bytes: &[u8]) {
        self.response.update(bytes);
        if let Some(content) = &mut self.response_content {
            let room = MAX_CONTENT.saturating_sub(content.len());
            if bytes.len() > room {
                self.truncated = true;
            }
            content.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// The record's body fields: hashes and, when kept, content (redacted
    /// with every built-in recognizer for `Redacted`).
    pub fn fields(&self, fields: &mut Map<String, Value>) {
        if let Some(hash) = &self.request_sha256 {
            fields.insert("requestSha256".into(), json!(hash));
        }
        fields.insert(
            "responseSha256".into(),
            json!(hex::encode(self.response.clone().finalize())),
        );
        let shown = |text: &str| match self.auditor.content() {
            AuditContent::Redacted => redact_everything(text),
            _ => text.to_string(),
        };
        if let Some(request) = &self.request {
            fields.insert("request".into(), json!(shown(request)));
        }
        if let Some(response) = &self.response_content {
            fields.insert(
                "response".into(),
                json!(shown(&String::from_utf8_lossy(response))),
            );
        }
        if self.truncated {
            fields.insert("contentTruncated".into(), json!(true));
        }
    }
}

fn capped_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_CONTENT)]).into_owned()
}

/// `text` with every built-in kind redacted.
fn redact_everything(text: &str) -> String {
    use std::sync::LazyLock;
    static RULES: LazyLock<Option<tollgate_guard::Rules>> = LazyLock::new(|| {
        let all: Vec<_> = tollgate_guard::Kind::ALL
            .iter()
            .map(|kind| (*kind, tollgate_guard::Action::Redact))
            .collect();
        tollgate_guard::Rules::new(crate::llm::guard::recognizers().clone(), &all, &[]).ok()
    });
    let Some(rules) = RULES.as_ref() else {
        return String::new();
    };
    let mut masks = tollgate_guard::MaskTable::default();
    match rules.apply(text, &mut masks, &mut Vec::new()) {
        Ok(Some(redacted)) => redacted,
        Ok(None) => text.to_string(),
        // Redact never blocks; nothing rather than the raw text if it did.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_content_hides_every_builtin_kind() {
        assert_eq!(
            redact_everything(r#"{"content":"mail ann@example.com, card 4111 1111 1111 1111"}"#),
            r#"{"content":"mail [EMAIL], card [CREDIT_CARD]"}"#
        );
        assert_eq!(redact_everything("nothing"), "nothing");
    }
}
