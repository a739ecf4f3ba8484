//! JSON-RPC messages as the bridge sees them, pure: what a POST body or a
//! line from the server is, the id rewriting that keeps each session's
//! requests apart, and SSE framing.

use bytes::Bytes;
use serde_json::{Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined server error (the range JSON-RPC leaves to
/// servers): the bridge is at capacity, or the server process is gone.
pub const SERVER_ERROR: i64 = -32000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `method` and `id`: answered by a response with that id.
    Request,
    /// `method`, no `id`.
    Notification,
    /// `id` and `result` or `error`, no `method`.
    Response,
}

/// One JSON-RPC 2.0 message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub object: Map<String, Value>,
}

impl Message {
    /// Parses one message; batches and anything not JSON-RPC 2.0 are
    /// refused with the JSON-RPC code and message to answer.
    pub fn parse(bytes: &[u8]) -> Result<Message, (i64, &'static str)> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|_| (PARSE_ERROR, "Parse error"))?;
        let Value::Object(object) = value else {
            return Err(if value.is_array() {
                (
                    INVALID_REQUEST,
                    "Invalid Request: batches are not supported",
                )
            } else {
                (INVALID_REQUEST, "Invalid Request: not a JSON-RPC object")
            });
        };
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\""));
        }
        let id_ok = |id: &Value| id.is_string() || id.is_i64() || id.is_u64();
        let kind = match (object.get("method"), object.get("id")) {
            (Some(Value::String(_)), None) => Kind::Notification,
            (Some(Value::String(_)), Some(id)) if id_ok(id) => Kind::Request,
            (None, Some(id))
                if id_ok(id) && (object.contains_key("result") != object.contains_key("error")) =>
            {
                Kind::Response
            }
            _ => return Err((INVALID_REQUEST, "Invalid Request")),
        };
        Ok(Message { kind, object })
    }

    pub fn method(&self) -> Option<&str> {
        self.object.get("method").and_then(Value::as_str)
    }

    pub fn id(&self) -> Option<&Value> {
        self.object.get("id")
    }

    /// `params._meta.progressToken`, when the request asks for progress.
    pub fn progress_token(&self) -> Option<&Value> {
        self.object
            .get("params")?
            .get("_meta")?
            .get("progressToken")
    }

    /// The token a `notifications/progress` reports on.
    pub fn reported_progress(&self) -> Option<&Value> {
        if self.method() != Some("notifications/progress") {
            return None;
        }
        self.object.get("params")?.get("progressToken")
    }

    /// The request a `notifications/cancelled` cancels.
    pub fn cancelled_request(&self) -> Option<&Value> {
        if self.method() != Some("notifications/cancelled") {
            return None;
        }
        self.object.get("params")?.get("requestId")
    }

    /// Replaces `id` (requests and responses).
    pub fn set_id(&mut self, id: Value) {
        self.object.insert("id".into(), id);
    }

    /// Replaces `params.requestId` of a `notifications/cancelled`.
    pub fn set_cancelled_request(&mut self, id: Value) {
        if let Some(Value::Object(params)) = self.object.get_mut("params") {
            params.insert("requestId".into(), id);
        }
    }

    /// The `result.protocolVersion` of an `initialize` answer.
    pub fn negotiated_version(&self) -> Option<&str> {
        self.object.get("result")?.get("protocolVersion")?.as_str()
    }

    pub fn is_error(&self) -> bool {
        self.object.contains_key("error")
    }

    /// One line for the server's stdin: compact JSON (which never holds a
    /// raw newline) and `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&self.object).unwrap_or_default();
        line.push(b'\n');
        line
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.object).unwrap_or_default())
    }
}

/// A JSON-RPC error response (`id` null when the request's is unknown).
pub fn error(id: Option<&Value>, code: i64, message: &str) -> Bytes {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// One SSE event carrying a JSON-RPC message.
pub fn sse_event(json: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + 24);
    frame.extend_from_slice(b"event: message\ndata: ");
    frame.extend_from_slice(json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// An SSE comment: keeps a quiet stream (and every proxy on its way) alive.
pub const SSE_KEEPALIVE: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Message, (i64, &'static str)> {
        Message::parse(&serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn the_three_kinds_are_told_apart() {
        let request = parse(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})).unwrap();
        assert_eq!(request.kind, Kind::Request);
        let note = parse(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).unwrap();
        assert_eq!(note.kind, Kind::Notification);
        let answer = parse(json!({"jsonrpc": "2.0", "id": "a", "result": {}})).unwrap();
        assert_eq!(answer.kind, Kind::Response);
        let failed =
            parse(json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "x"}}));
        assert_eq!(failed.unwrap().kind, Kind::Response);
    }

    #[test]
    fn bad_input_gets_the_json_rpc_code() {
        assert_eq!(Message::parse(b"{nope").unwrap_err().0, PARSE_ERROR);
        assert_eq!(Message::parse(b"").unwrap_err().0, PARSE_ERROR);
        for bad in [
            json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
            json!("text"),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}),
            json!({"jsonrpc": "2.0", "method": 3}),
        ] {
            assert_eq!(parse(bad.clone()).unwrap_err().0, INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn ids_progress_and_cancellation_are_read_and_rewritten() {
        let mut request = parse(
            json!({"jsonrpc": "2.0", "id": "c-1", "method": "tools/call",
            "params": {"name": "slow", "_meta": {"progressToken": "p"}}}),
        )
        .unwrap();
        assert_eq!(request.progress_token(), Some(&json!("p")));
        request.set_id(json!(41));
        let line = request.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back["id"], 41);
        assert_eq!(back["params"]["name"], "slow");

        let progress = parse(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "p", "progress": 1}}))
        .unwrap();
        assert_eq!(progress.reported_progress(), Some(&json!("p")));
        let mut cancel = parse(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": "c-1"}}),
        )
        .unwrap();
        assert_eq!(cancel.cancelled_request(), Some(&json!("c-1")));
        cancel.set_cancelled_request(json!(41));
        assert_eq!(cancel.object["params"]["requestId"], 41);
    }

    #[test]
    fn text_with_newlines_stays_on_one_line() {
        let request = parse(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"arguments": {"text": "a\nb\r\nc"}}}))
        .unwrap();
        let line = request.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn frames() {
        assert_eq!(&sse_event(b"{}")[..], b"event: message\ndata: {}\n\n");
        let error: Value = serde_json::from_slice(&error(None, SERVER_ERROR, "busy")).unwrap();
        assert_eq!(
            error,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "busy"}})
        );
    }
}
