//! The wire protocol between the controller and gateway pods.
//!
//! A gateway opens one HTTP/2 request per subscription:
//! `POST /v1/gateways/{namespace}/{name}/subscribe` with its ServiceAccount
//! token as `Authorization: Bearer`. Both bodies are streams of
//! newline-delimited JSON messages:
//!
//! * controller → gateway ([`ServerMessage`]): the current snapshot as soon as
//!   the stream opens and every new version after it (only the newest: a
//!   gateway that falls behind skips versions, never applies stale ones), and
//!   a heartbeat when nothing else was sent for a while;
//! * gateway → controller ([`GatewayMessage`]): which version it now runs,
//!   or why it refused one; and every [`USAGE_INTERVAL`] the usage of its
//!   budget counters, which the controller writes to TokenBudget status,
//!   with the providers whose circuit breaker is not closed on this replica
//!   (for ModelProvider status).
//!
//! Snapshot JSON contains no raw newlines (serde_json escapes them in
//! strings), so one message is one line. Pure: no IO here, so both ends and
//! their tests share one definition.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::snapshot::{Snapshot, SnapshotError};

/// Request header carrying the pod's name, for status and logs.
pub const POD_HEADER: &str = "x-tollgate-pod";

/// How often the controller sends a heartbeat on an idle stream.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A gateway that hears nothing for this long treats the stream as dead.
pub const STREAM_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How often a gateway with budgets reports their usage.
pub const USAGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Most counters one usage report carries (the busiest), so a report stays
/// well under the controller's line limit.
pub const MAX_REPORTED_COUNTERS: usize = 500;

/// Most providers one report lists as not closed; more is a runaway peer.
pub const MAX_REPORTED_CIRCUITS: usize = 500;

/// The path a gateway subscribes on.
pub fn subscribe_path(namespace: &str, name: &str) -> String {
    format!("/v1/gateways/{namespace}/{name}/subscribe")
}

/// The `(namespace, name)` of a subscribe path, if it is one.
pub fn parse_subscribe_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/gateways/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let name = rest.strip_suffix("/subscribe")?;
    let valid = |s: &str| !s.is_empty() && !s.contains('/');
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

/// Controller → gateway: `{"type":"snapshot","snapshot":{..}}` or
/// `{"type":"heartbeat"}`. A flat struct rather than a tagged enum so the
/// snapshot can stay raw (serde's tagged enums buffer their content).
#[derive(Debug, Deserialize)]
struct ServerMessage<'a> {
    #[serde(rename = "type")]
    kind: ServerMessageKind,
    #[serde(borrow, default)]
    snapshot: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ServerMessageKind {
    Snapshot,
    Heartbeat,
}

/// Gateway → controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum GatewayMessage {
    /// The gateway now serves this snapshot.
    Applied { hash: String },
    /// The gateway could not use this snapshot and still serves its previous one.
    Rejected { hash: String, error: String },
    /// Budget counters in their current window, by counter key
    /// (`snapshot::budget::CounterKey`). `shared`: read from the state every
    /// replica shares (Redis), so reports of several pods overlap rather
    /// than add up.
    Usage {
        shared: bool,
        counters: Vec<(String, u64)>,
        /// Alerts raised since the last report; the controller records one
        /// Event per incident for all replicas and calls the webhook.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        alerts: Vec<BudgetAlert>,
        /// Every provider whose circuit breaker is not closed on this
        /// replica, in full each report: a provider absent is closed. A
        /// field of `Usage` rather than a message of its own, so a
        /// controller that predates it ignores it instead of logging an
        /// unreadable message every report.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        circuits: Vec<ProviderCircuit>,
    },
}

/// One provider's circuit breaker on the reporting replica.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCircuit {
    /// The ModelProvider's name (in the gateway's namespace, as in the snapshot).
    pub provider: String,
    pub state: CircuitState,
}

/// A breaker state other than closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CircuitState {
    /// Failing: the provider is skipped until a probe may try it.
    Open,
    /// A probe may try the provider (or one is in flight).
    HalfOpen,
}

/// A usage-anomaly alert of a TokenBudget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetAlert {
    /// `spike` or `softThreshold`.
    pub kind: String,
    /// `namespace/name` of the TokenBudget.
    pub budget: String,
    /// The member it concerns (`""`: the whole group).
    pub member: String,
    /// What crossed: for soft thresholds the counter and percentage, so
    /// different thresholds are different incidents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub message: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `namespace/name` of the MCPServer, for an agent-behaviour alert
    /// (then `budget` is empty and `member` is the agent).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mcp_server: String,
}

impl BudgetAlert {
    /// The webhook body: the alert itself, or Slack's `{"text": ...}`.
    pub fn webhook_body(&self, gateway: &str, slack: bool) -> Vec<u8> {
        let value = if slack {
            serde_json::json!({"text": format!("Tollgate {gateway}: {}", self.message)})
        } else {
            serde_json::json!({
                "source": "tollgate",
                "gateway": gateway,
                "kind": self.kind,
                "budget": self.budget,
                "member": self.member,
                "message": self.message,
                "atMs": self.at_ms,
            })
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("snapshot message without a snapshot")]
    MissingSnapshot,
}

/// One newline-terminated snapshot message, built once and sent to every
/// subscriber of the gateway.
pub fn snapshot_frame(snapshot: &Snapshot) -> Result<Vec<u8>, FrameError> {
    let body = snapshot.to_json()?;
    let mut frame = Vec::with_capacity(body.len() + 40);
    frame.extend_from_slice(br#"{"type":"snapshot","snapshot":"#);
    frame.extend_from_slice(&body);
    frame.extend_from_slice(b"}\n");
    Ok(frame)
}

/// The heartbeat line.
pub fn heartbeat_frame() -> &'static [u8] {
    b"{\"type\":\"heartbeat\"}\n"
}

/// What a gateway received on one line.
#[derive(Debug)]
pub enum Received {
    Snapshot(Box<Snapshot>),
    Heartbeat,
}

/// Decodes one line from the controller; a snapshot whose content does not
/// match its hash is an error, so a damaged snapshot is never served.
pub fn decode_server_line(line: &[u8]) -> Result<Received, FrameError> {
    let message: ServerMessage<'_> = serde_json::from_slice(line)?;
    match (message.kind, message.snapshot) {
        (ServerMessageKind::Snapshot, Some(snapshot)) => Ok(Received::Snapshot(Box::new(
            Snapshot::from_json(snapshot.get().as_bytes())?,
        ))),
        (ServerMessageKind::Snapshot, None) => Err(FrameError::MissingSnapshot),
        (ServerMessageKind::Heartbeat, _) => Ok(Received::Heartbeat),
    }
}

/// One newline-terminated message from the gateway.
pub fn gateway_frame(message: &GatewayMessage) -> Vec<u8> {
    // Strings, integers and plain structs always serialize.
    let mut frame = serde_json::to_vec(message).unwrap_or_default();
    frame.push(b'\n');
    frame
}

/// Splits complete lines off the front of a byte buffer as chunks arrive;
/// a line longer than `max_line` is an error (a runaway peer).
#[derive(Debug, Default)]
pub struct LineBuffer {
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already known to hold no newline, so a
    /// large snapshot arriving in small chunks is scanned once, not per chunk.
    scanned: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("message longer than {0} bytes")]
pub struct LineTooLong(pub usize);

impl LineBuffer {
    /// Appends `chunk` and returns every line it completed (without the newline).
    pub fn push(&mut self, chunk: &[u8], max_line: usize) -> Result<Vec<Vec<u8>>, LineTooLong> {
        self.buffer.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(offset) = self.buffer[from..].iter().position(|&b| b == b'\n') {
            let end = from + offset;
            if end > start {
                lines.push(self.buffer[start..end].to_vec());
            }
            start = end + 1;
            from = start;
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > max_line {
            return Err(LineTooLong(max_line));
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::compile;
    use crate::load::{Loaded, add_documents};

    fn snapshot() -> Snapshot {
        let yaml = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {name: gw}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: mock}
spec: {type: Mock, endpoint: "http://127.0.0.1:9/v1"}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  gatewayRef: {name: gw}
  models: ["line\nbreak"]
  backends: [{providerRef: {name: mock}, model: m}]
"#;
        let mut loaded = Loaded::default();
        add_documents(&mut loaded, "test.yaml", yaml, &|_| None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let compiled = compile(&loaded.resources);
        compiled.snapshots.into_values().next().unwrap()
    }

    #[test]
    fn a_snapshot_travels_as_one_line_and_keeps_its_hash() {
        let snapshot = snapshot();
        let frame = snapshot_frame(&snapshot).unwrap();
        assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(frame.last(), Some(&b'\n'));
        match decode_server_line(&frame[..frame.len() - 1]).unwrap() {
            Received::Snapshot(received) => assert_eq!(*received, snapshot),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    #[test]
    fn a_tampered_snapshot_is_refused() {
        let frame = snapshot_frame(&snapshot()).unwrap();
        let text = String::from_utf8(frame).unwrap();
        let tampered = text.replace("\"m\"", "\"n\"");
        assert_ne!(tampered, text, "the model name is in the frame");
        let error = decode_server_line(tampered.trim_end().as_bytes()).unwrap_err();
        assert!(matches!(
            error,
            FrameError::Snapshot(SnapshotError::HashMismatch { .. })
        ));
    }

    #[test]
    fn heartbeats_and_garbage() {
        let beat = heartbeat_frame();
        assert!(matches!(
            decode_server_line(beat.trim_ascii_end()).unwrap(),
            Received::Heartbeat
        ));
        assert!(decode_server_line(b"{\"type\":\"surprise\"}").is_err());
        assert!(decode_server_line(b"not json").is_err());
        assert!(matches!(
            decode_server_line(b"{\"type\":\"snapshot\"}"),
            Err(FrameError::MissingSnapshot)
        ));
    }

    #[test]
    fn gateway_messages_round_trip() {
        let message = GatewayMessage::Rejected {
            hash: "abc".into(),
            error: "bad\ncert".into(),
        };
        let frame = gateway_frame(&message);
        assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: GatewayMessage = serde_json::from_slice(frame.trim_ascii_end()).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn circuits_ride_on_usage_and_stay_optional() {
        let message = GatewayMessage::Usage {
            shared: false,
            counters: Vec::new(),
            alerts: Vec::new(),
            circuits: vec![ProviderCircuit {
                provider: "down".into(),
                state: CircuitState::HalfOpen,
            }],
        };
        let frame = gateway_frame(&message);
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(
            text.contains(r#""circuits":[{"provider":"down","state":"halfOpen"}]"#),
            "{text}"
        );
        let back: GatewayMessage = serde_json::from_slice(frame.trim_ascii_end()).unwrap();
        assert_eq!(back, message);
        // A report of an older gateway (no field) reads as all closed, and
        // all closed is not written, so an older controller sees what it knows.
        let old: GatewayMessage =
            serde_json::from_str(r#"{"type":"usage","shared":true,"counters":[["k",1]]}"#).unwrap();
        let GatewayMessage::Usage { circuits, .. } = &old else {
            panic!("usage");
        };
        assert!(circuits.is_empty());
        assert!(
            !String::from_utf8(gateway_frame(&old))
                .unwrap()
                .contains("circuits")
        );
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut buffer = LineBuffer::default();
        assert!(buffer.push(b"{\"a\":1}\n{\"b\"", 100).unwrap().len() == 1);
        let lines = buffer.push(b":2}\n\n", 100).unwrap();
        assert_eq!(lines, vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(buffer.push(&[b'x'; 101], 100), Err(LineTooLong(100)));
    }

    #[test]
    fn subscribe_paths() {
        assert_eq!(
            parse_subscribe_path(&subscribe_path("team-a", "gw")),
            Some(("team-a", "gw"))
        );
        assert_eq!(parse_subscribe_path("/v1/gateways/a/b/c/subscribe"), None);
        assert_eq!(parse_subscribe_path("/v1/gateways//gw/subscribe"), None);
        assert_eq!(parse_subscribe_path("/v1/gateways/a/gw"), None);
    }
}
