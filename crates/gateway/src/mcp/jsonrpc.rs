//! The JSON-RPC side of MCP: what one POSTed message is, which protocol
//! revision it speaks, whether its mirrored headers (2026-07-28) match it,
//! and error bodies. Pure: no IO.

use base64::Engine;
use http::HeaderMap;
use serde_json::{Value, json};

/// The revision without sessions or handshake.
pub const MODERN: &str = "2026-07-28";
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: a mirrored header is missing or differs from the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// One client message, as much as the gateway needs to know of it.
#[derive(Debug, PartialEq)]
pub struct Message {
    /// `None` for a notification (or a response, which has no method).
    pub id: Option<Value>,
    /// `None` for a response to a server request.
    pub method: Option<String>,
    pub params: Value,
}

impl Message {
    pub fn parse(body: &[u8]) -> Result<Self, (i64, &'static str)> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| (PARSE_ERROR, "Parse error"))?;
        let Value::Object(mut object) = value else {
            // Batches are not part of Streamable HTTP since 2025-06-18.
            return Err((
                INVALID_REQUEST,
                "Invalid Request: one JSON-RPC message object per POST",
            ));
        };
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\""));
        }
        let id = object.remove("id").filter(|id| !id.is_null());
        if id
            .as_ref()
            .is_some_and(|id| !(id.is_string() || id.is_i64() || id.is_u64()))
        {
            return Err((
                INVALID_REQUEST,
                "Invalid Request: id must be a string or an integer",
            ));
        }
        let method = match object.remove("method") {
            None => None,
            Some(Value::String(method)) => Some(method),
            Some(_) => return Err((INVALID_REQUEST, "Invalid Request: method must be a string")),
        };
        if method.is_none() && id.is_none() {
            return Err((
                INVALID_REQUEST,
                "Invalid Request: neither a request, a notification nor a response",
            ));
        }
        Ok(Self {
            id,
            method,
            params: object.remove("params").unwrap_or(Value::Null),
        })
    }

    pub fn is_request(&self) -> bool {
        self.id.is_some() && self.method.is_some()
    }

    /// The revision named in `_meta` (2026-07-28 and later), if any.
    pub fn meta_version(&self) -> Option<&str> {
        self.params
            .get("_meta")
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str)
    }

    /// `params.name` of tools/call and prompts/get.
    pub fn name(&self) -> Option<&str> {
        self.params.get("name").and_then(Value::as_str)
    }

    /// What `Mcp-Name` must mirror, for the methods that have one.
    pub fn mirrored_name(&self) -> Option<&str> {
        match self.method.as_deref()? {
            "tools/call" | "prompts/get" => self.name(),
            "resources/read" => self.params.get("uri").and_then(Value::as_str),
            _ => None,
        }
    }

    /// 2026-07-28 requires `MCP-Protocol-Version`, `Mcp-Method` and (for
    /// calls, gets and reads) `Mcp-Name` to equal the body. The gateway
    /// routes and authorises by the body, and backends may route by the
    /// headers: a request where the two differ is refused before either
    /// acts on it. `Err` names the first mismatch.
    pub fn check_mirrored_headers(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(version) = self.meta_version() else {
            return Ok(());
        };
        let header = |name: &str| -> Result<Option<String>, String> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| format!("{name} header is not ASCII"))
                        .and_then(decode_header_value)
                })
                .transpose()
        };
        let expect = |name: &str, body: Option<&str>| -> Result<(), String> {
            let Some(body) = body else { return Ok(()) };
            match header(name)? {
                Some(value) if value == body => Ok(()),
                Some(value) => Err(format!(
                    "{name} header value {value:?} does not match body value {body:?}"
                )),
                None => Err(format!("{name} header is required")),
            }
        };
        expect("mcp-protocol-version", Some(version))?;
        if self.is_request() {
            expect("mcp-method", self.method.as_deref())?;
        }
        expect("mcp-name", self.mirrored_name())
    }
}

/// A header value as 2026-07-28 encodes it: plain, or `=?base64?…?=` for
/// values that are not plain ASCII.
fn decode_header_value(raw: &str) -> Result<String, String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        None => Ok(raw.to_string()),
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| format!("header value {raw:?} is not valid base64 UTF-8")),
    }
}

/// A JSON-RPC error object with the request's id (`null` when unknown).
pub fn error_body(id: Option<&Value>, code: i64, message: &str) -> Vec<u8> {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let request = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(request.is_request());
        let note =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(!note.is_request() && note.id.is_none());
        let response = Message::parse(br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#).unwrap();
        assert!(response.method.is_none());
        for (bad, code) in [
            (&b"{"[..], PARSE_ERROR),
            (b"[]", INVALID_REQUEST),
            (br#"{"id":1,"method":"x"}"#, INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
                INVALID_REQUEST,
            ),
            (br#"{"jsonrpc":"2.0","method":7}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0"}"#, INVALID_REQUEST),
        ] {
            assert_eq!(
                Message::parse(bad).unwrap_err().0,
                code,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn modern_requests_must_mirror_version_method_and_name() {
        let call = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9","arguments":{},
                "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        )
        .unwrap();
        assert_eq!(call.meta_version(), Some(MODERN));
        let good = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            // "café", base64-encoded since it is not ASCII.
            ("mcp-name", "=?base64?Y2Fmw6k=?="),
        ]);
        assert_eq!(call.check_mirrored_headers(&good), Ok(()));
        let wrong_name = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "cafe"),
        ]);
        let error = call.check_mirrored_headers(&wrong_name).unwrap_err();
        assert!(error.contains("mcp-name"), "{error}");
        let no_method = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert!(
            call.check_mirrored_headers(&no_method)
                .unwrap_err()
                .contains("mcp-method")
        );
        // Legacy messages carry no mirrored headers to check.
        let legacy = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
        )
        .unwrap();
        assert_eq!(legacy.check_mirrored_headers(&HeaderMap::new()), Ok(()));
    }
}
