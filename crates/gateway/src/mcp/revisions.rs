//! Translation between MCP eras, for a client and a backend that do not
//! share one. "Modern" is 2026-07-28: no handshake, version, capabilities
//! and client info in every request's `_meta`, `resultType` on results.
//! "Legacy" is 2025-11-25 and earlier: `initialize`, then a session.
//! Without the gateway these pairs fail (the spec's compatibility matrix);
//! through it:
//!
//! * a modern client in front of a legacy-only backend: the gateway holds
//!   a legacy session with the backend for the caller (initialised with the
//!   client's info and capabilities), sends each request in it, and gives
//!   results the modern fields (`resultType`, `ttlMs`/`cacheScope` on
//!   cacheable results, `serverInfo`); `server/discover` is answered from
//!   the backend's `initialize` result.
//! * a legacy client in front of a modern-only backend: the gateway answers
//!   `initialize` from the backend's `server/discover`, seals the client's
//!   info and capabilities into the session id, and adds them to each
//!   request's `_meta`; results lose the modern-only fields.
//!
//! What cannot be translated is refused with a clear error, never dropped
//! silently: a modern `input_required` result to a legacy client (it would
//! have to become a server-to-client request on a stream the gateway does
//! not hold), and server-to-client requests from a legacy backend (the
//! gateway's session with it declares no sampling, elicitation or roots, so
//! a conforming server sends none). Pure: the IO is in `translate.rs`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::jsonrpc::{META_CAPABILITIES, META_VERSION, MODERN};

/// The legacy revision the gateway speaks to legacy backends.
pub const LEGACY: &str = "2025-11-25";
/// Legacy revisions a legacy client may negotiate when the gateway answers
/// `initialize` itself.
const LEGACY_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// Errors only a modern server sends (header mismatch, missing client
/// capability, unsupported version): a 400 carrying one is not a legacy
/// server refusing a request without a session.
const MODERN_ERRORS: [i64; 3] = [-32020, -32021, -32022];
/// Results modern clients may cache (`CacheableResult`).
const CACHEABLE: [&str; 5] = [
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];
/// Client capabilities whose requests the gateway cannot carry between
/// eras (modern has none: input comes by `input_required` instead).
const SERVER_REQUEST_CAPABILITIES: [&str; 3] = ["sampling", "elicitation", "roots"];

/// What the gateway knows of a backend's era.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Answers `initialize` and needs a session; refuses modern requests.
    Legacy,
    /// Answers modern requests and refuses `initialize`.
    Modern,
    /// Speaks both: nothing to translate.
    Both,
}

impl Era {
    /// The era a `server/discover` result shows (`None`: the backend
    /// could not discover, so it is legacy).
    pub fn of_discovery(result: Option<&Value>) -> Self {
        match result {
            Some(result) if is_modern_only_discovery(result) => Self::Modern,
            Some(result) if is_modern_discovery(result) => Self::Both,
            _ => Self::Legacy,
        }
    }
}

/// The code of the JSON-RPC error in `body`, if it is one.
pub fn error_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("error")?
        .get("code")?
        .as_i64()
}

/// Whether a backend's 400 to a modern request may mean it is legacy (the
/// spec's HTTP fallback rule: a 400 without a recognised modern error).
pub fn may_be_legacy_refusal(status: u16, body: &[u8]) -> bool {
    status == 400 && !error_code(body).is_some_and(|code| MODERN_ERRORS.contains(&code))
}

/// A `server/discover` result naming `2026-07-28`: the backend is modern.
pub fn is_modern_discovery(result: &Value) -> bool {
    result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|versions| versions.iter().any(|v| v == MODERN))
}

/// A `server/discover` result naming 2026-07-28 and no earlier revision:
/// the backend does not do the handshake, so its refusal of `initialize`
/// was not about that one request. (Revisions are dates: earlier sorts
/// first.)
pub fn is_modern_only_discovery(result: &Value) -> bool {
    is_modern_discovery(result)
        && result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|versions| {
                versions
                    .iter()
                    .filter_map(Value::as_str)
                    .all(|v| v >= MODERN)
            })
}

/// Methods 2026-07-28 removed: a modern server answers them 404 `-32601`.
const REMOVED_METHODS: [&str; 5] = [
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// What a modern server refuses a request for before acting on it, when
/// the gateway stands in for one: the status, the JSON-RPC error code,
/// message and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

/// A modern request's own fault, if it has one: `_meta` without the
/// revision or the client's capabilities (400, `-32602`), a revision the
/// gateway does not translate for (400, `-32022`, naming the ones it
/// does), or a method 2026-07-28 removed (404, `-32601`).
pub fn modern_fault(method: &str, params: &Value) -> Option<Fault> {
    let meta = params.get("_meta");
    let version = meta
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let capabilities = meta.and_then(|m| m.get(META_CAPABILITIES));
    let Some(version) = version.filter(|_| capabilities.is_some_and(Value::is_object)) else {
        return Some(Fault {
            status: 400,
            code: super::jsonrpc::INVALID_PARAMS,
            message: format!(
                "Invalid params: _meta must carry {META_VERSION} and {META_CAPABILITIES}"
            ),
            data: None,
        });
    };
    if version != MODERN {
        return Some(Fault {
            status: 400,
            code: UNSUPPORTED_VERSION,
            message: "Unsupported protocol version".into(),
            data: Some(json!({"supported": [MODERN], "requested": version})),
        });
    }
    REMOVED_METHODS.contains(&method).then(|| Fault {
        status: 404,
        code: METHOD_NOT_FOUND,
        message: format!("Method not found: {method} (not part of MCP 2026-07-28)"),
        data: None,
    })
}

pub const METHOD_NOT_FOUND: i64 = -32601;
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// What a modern request says of its client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientMeta {
    /// Capabilities, as declared.
    #[serde(default)]
    pub c: Value,
    /// `clientInfo`.
    #[serde(default)]
    pub i: Value,
}

impl ClientMeta {
    /// From a modern request's `_meta`.
    pub fn of_modern(params: &Value) -> Self {
        let meta = params.get("_meta");
        let get = |key: &str| meta.and_then(|m| m.get(key)).cloned();
        Self {
            c: get(META_CAPABILITIES).unwrap_or_else(|| json!({})),
            i: get(META_CLIENT_INFO).unwrap_or(Value::Null),
        }
    }

    /// From a legacy `initialize`'s params.
    pub fn of_initialize(params: &Value) -> Self {
        Self {
            c: params
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
            i: params.get("clientInfo").cloned().unwrap_or(Value::Null),
        }
    }

    fn client_info(&self) -> Value {
        if self.i.is_object() {
            self.i.clone()
        } else {
            json!({"name": "unknown", "version": "0"})
        }
    }

    /// The `initialize` params for the gateway's legacy session on the
    /// client's behalf: its info, and its capabilities minus those whose
    /// requests cannot cross eras.
    pub fn legacy_initialize(&self) -> Value {
        let mut capabilities = self.c.as_object().cloned().unwrap_or_default();
        for name in SERVER_REQUEST_CAPABILITIES {
            capabilities.remove(name);
        }
        capabilities.remove("extensions");
        json!({
            "protocolVersion": LEGACY,
            "capabilities": capabilities,
            "clientInfo": self.client_info(),
        })
    }

    /// The `_meta` entries a modern backend needs on every request.
    fn modern_meta(&self) -> [(&'static str, Value); 3] {
        let mut capabilities = self.c.as_object().cloned().unwrap_or_default();
        // A legacy client answers these by server-to-client requests, which
        // a modern server does not send.
        for name in SERVER_REQUEST_CAPABILITIES {
            capabilities.remove(name);
        }
        [
            (META_VERSION, json!(MODERN)),
            (META_CAPABILITIES, Value::Object(capabilities)),
            (META_CLIENT_INFO, self.client_info()),
        ]
    }
}

/// A legacy client's session with a modern backend, sealed into its
/// session id in place of a backend session id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyClientSession {
    /// The revision negotiated with the client.
    pub v: String,
    #[serde(flatten)]
    pub client: ClientMeta,
}

/// Marks sealed state that is a [`LegacyClientSession`]: a backend session
/// id is visible ASCII, so it cannot begin with a space.
const LEGACY_CLIENT_MARK: &str = " ";

impl LegacyClientSession {
    pub fn seal_text(&self) -> String {
        format!(
            "{LEGACY_CLIENT_MARK}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// The session in sealed state, if that is what it holds.
    pub fn from_sealed(text: &str) -> Option<Self> {
        serde_json::from_str(text.strip_prefix(LEGACY_CLIENT_MARK)?).ok()
    }
}

/// The legacy revision to agree with a client that asked for `requested`.
pub fn legacy_version(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|asked| LEGACY_VERSIONS.into_iter().find(|v| *v == asked))
        .unwrap_or(LEGACY)
}

/// The `initialize` result for a legacy client, from a modern backend's
/// `server/discover` result.
pub fn initialize_from_discovery(version: &str, discovered: &Value) -> Value {
    let mut capabilities = discovered
        .get("capabilities")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    capabilities.remove("extensions");
    let server_info = discovered
        .get("_meta")
        .and_then(|m| m.get(META_SERVER_INFO))
        .cloned()
        .unwrap_or_else(|| json!({"name": "unknown", "version": "0"}));
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": server_info,
    });
    if let Some(instructions) = discovered.get("instructions") {
        result["instructions"] = instructions.clone();
    }
    result
}

/// A `server/discover` result for a modern client, from a legacy backend's
/// `initialize` result. The gateway speaks both eras on the path. Change
/// notifications (`listChanged`, `subscribe`) are not offered: a modern
/// client would ask for them with `subscriptions/listen`, which the gateway
/// does not translate into a legacy session's stream.
pub fn discovery_from_initialize(initialized: &Value) -> Value {
    let mut capabilities = initialized
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    for feature in ["tools", "prompts", "resources"] {
        if let Some(feature) = capabilities.get_mut(feature).and_then(Value::as_object_mut) {
            feature.remove("listChanged");
            feature.remove("subscribe");
        }
    }
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": [MODERN, LEGACY],
        "capabilities": capabilities,
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(info) = initialized.get("serverInfo") {
        result["_meta"] = json!({ META_SERVER_INFO: info });
    }
    if let Some(instructions) = initialized.get("instructions") {
        result["instructions"] = instructions.clone();
    }
    result
}

/// A modern client's message as its legacy backend gets it: the modern
/// `_meta` entries removed (the backend learnt them at `initialize`).
pub fn to_legacy(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(meta) = message
        .get_mut("params")
        .and_then(|p| p.get_mut("_meta"))
        .and_then(Value::as_object_mut)
    {
        meta.retain(|key, _| !key.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty()
            && let Some(params) = message.get_mut("params").and_then(Value::as_object_mut)
        {
            params.remove("_meta");
        }
    }
    message
}

/// A legacy client's message as its modern backend gets it: the client's
/// version, capabilities and info in `_meta`.
pub fn to_modern(message: &Value, client: &ClientMeta) -> Value {
    let mut message = message.clone();
    let Some(object) = message.as_object_mut() else {
        return message;
    };
    let params = object
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()));
    if !params.is_object() {
        *params = Value::Object(Map::new());
    }
    if let Some(params) = params.as_object_mut() {
        let meta = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            for (key, value) in client.modern_meta() {
                meta.insert(key.to_string(), value);
            }
        }
    }
    message
}

/// A legacy backend's message as a modern client gets it. Results of
/// requests get `resultType`, the backend's `serverInfo`, and (when
/// cacheable) `ttlMs: 0` with `cacheScope: private`, since a legacy
/// server says nothing of freshness and its lists may vary by session.
/// Log notifications go only to requests that asked for them
/// (`keep_logs`); server-to-client requests become `None` (see the module
/// doc), as do other messages the client must not get.
pub fn modernize(
    mut message: Value,
    method: &str,
    server_info: Option<&Value>,
    keep_logs: bool,
) -> Option<Value> {
    match message.get("method").and_then(Value::as_str) {
        Some("notifications/message") if !keep_logs => return None,
        Some(_) if message.get("id").is_some() => return None,
        Some(_) => return Some(message),
        None => {}
    }
    if let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) {
        result
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        if CACHEABLE.contains(&method) {
            result.entry("ttlMs").or_insert_with(|| json!(0));
            result
                .entry("cacheScope")
                .or_insert_with(|| json!("private"));
        }
        if let Some(info) = server_info {
            let meta = result
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.entry(META_SERVER_INFO).or_insert_with(|| info.clone());
            }
        }
    }
    Some(message)
}

/// A modern backend's message as a legacy client gets it: results lose the
/// fields legacy revisions do not have; an `input_required` result becomes
/// an error saying why (the client cannot be asked for the input).
pub fn legacyize(mut message: Value) -> Value {
    let input_required = message
        .get("result")
        .and_then(|r| r.get("resultType"))
        .is_some_and(|t| t == "input_required");
    if input_required {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        return json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": super::jsonrpc::INTERNAL_ERROR,
            "message": "The MCP server needs more input from the client (input_required, MCP 2026-07-28); the gateway cannot ask a 2025-11-25 client for it. Connect with MCP 2026-07-28 to use this tool.",
        }});
    }
    if let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) {
        for key in ["resultType", "ttlMs", "cacheScope"] {
            result.remove(key);
        }
    }
    message
}

/// Whether a modern request asked for log notifications.
pub fn wants_logs(params: &Value) -> bool {
    params
        .get("_meta")
        .and_then(|m| m.get(META_LOG_LEVEL))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modern_call() -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": "hi"},
            "_meta": {META_VERSION: MODERN, "progressToken": "p1",
                META_CAPABILITIES: {"elicitation": {}, "extensions": {"x/y": {}}},
                META_CLIENT_INFO: {"name": "agent", "version": "2"}}}})
    }

    #[test]
    fn a_legacy_refusal_is_a_400_without_a_modern_error() {
        let modern = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"Unsupported protocol version"}}"#;
        let legacy = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Bad Request: Missing session ID"}}"#;
        assert!(!may_be_legacy_refusal(400, modern));
        assert!(may_be_legacy_refusal(400, legacy));
        assert!(may_be_legacy_refusal(400, b"Bad Request"));
        assert!(!may_be_legacy_refusal(404, legacy));
        assert!(is_modern_discovery(&json!({"supportedVersions": [MODERN]})));
        assert!(is_modern_only_discovery(
            &json!({"supportedVersions": [MODERN]})
        ));
        let both = json!({"supportedVersions": [MODERN, LEGACY]});
        assert_eq!(Era::of_discovery(Some(&both)), Era::Both);
        assert_eq!(
            Era::of_discovery(Some(&json!({"supportedVersions": [MODERN]}))),
            Era::Modern
        );
        assert_eq!(Era::of_discovery(None), Era::Legacy);
        assert!(!is_modern_only_discovery(
            &json!({"supportedVersions": [MODERN, LEGACY]})
        ));
        assert!(!is_modern_discovery(
            &json!({"supportedVersions": [LEGACY]})
        ));
    }

    #[test]
    fn a_modern_request_is_refused_as_a_modern_server_would() {
        let good = modern_call();
        assert_eq!(modern_fault("tools/call", &good["params"]), None);
        let fault = modern_fault("tools/list", &json!({})).unwrap();
        assert_eq!((fault.status, fault.code), (400, -32602));
        let no_capabilities = json!({"_meta": {META_VERSION: MODERN}});
        assert_eq!(
            modern_fault("tools/list", &no_capabilities).unwrap().code,
            -32602
        );
        let future = json!({"_meta": {META_VERSION: "v999.0.0", META_CAPABILITIES: {}}});
        let fault = modern_fault("server/discover", &future).unwrap();
        assert_eq!((fault.status, fault.code), (400, -32022));
        assert_eq!(
            fault.data,
            Some(json!({"supported": [MODERN], "requested": "v999.0.0"}))
        );
        let fault = modern_fault("ping", &good["params"]).unwrap();
        assert_eq!((fault.status, fault.code), (404, -32601));
    }

    #[test]
    fn a_modern_request_reaches_a_legacy_backend_without_modern_meta() {
        let client = ClientMeta::of_modern(&modern_call()["params"]);
        assert_eq!(client.i["name"], "agent");
        let initialize = client.legacy_initialize();
        assert_eq!(initialize["protocolVersion"], LEGACY);
        assert_eq!(initialize["clientInfo"]["name"], "agent");
        assert_eq!(
            initialize["capabilities"],
            json!({}),
            "no capability whose requests cannot cross eras"
        );
        let legacy = to_legacy(&modern_call());
        assert_eq!(
            legacy["params"]["_meta"],
            json!({"progressToken": "p1"}),
            "only the modern entries go"
        );
        assert_eq!(legacy["params"]["arguments"]["text"], "hi");
        let bare = to_legacy(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_VERSION: MODERN}}}));
        assert_eq!(bare["params"], json!({}));
    }

    #[test]
    fn legacy_answers_get_the_modern_fields() {
        let info = json!({"name": "old", "version": "1"});
        let list = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}});
        let out = modernize(list, "tools/list", Some(&info), false).unwrap();
        assert_eq!(out["result"]["resultType"], "complete");
        assert_eq!(out["result"]["ttlMs"], 0);
        assert_eq!(out["result"]["cacheScope"], "private");
        assert_eq!(out["result"]["_meta"][META_SERVER_INFO], info);
        let call = json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [], "_meta": {"k": 1}}});
        let out = modernize(call, "tools/call", Some(&info), false).unwrap();
        assert!(out["result"].get("ttlMs").is_none());
        assert_eq!(out["result"]["_meta"]["k"], 1);
        let error = json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "x"}});
        assert_eq!(
            modernize(error.clone(), "tools/call", None, false),
            Some(error)
        );
        let log = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {}});
        assert_eq!(modernize(log.clone(), "tools/call", None, false), None);
        assert!(modernize(log, "tools/call", None, true).is_some());
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}});
        assert!(modernize(progress, "tools/call", None, false).is_some());
        let ask = json!({"jsonrpc": "2.0", "id": 9, "method": "roots/list"});
        assert_eq!(modernize(ask, "tools/call", None, false), None);
    }

    #[test]
    fn a_legacy_client_is_initialised_from_discovery_and_sealed() {
        let discovered = json!({"resultType": "complete", "supportedVersions": [MODERN],
            "capabilities": {"tools": {"listChanged": true}, "extensions": {"a/b": {}}},
            "_meta": {META_SERVER_INFO: {"name": "new", "version": "3"}},
            "instructions": "Be nice.", "ttlMs": 1000, "cacheScope": "public"});
        let version = legacy_version(Some("2025-06-18"));
        assert_eq!(version, "2025-06-18");
        assert_eq!(legacy_version(Some("1999-01-01")), LEGACY);
        let result = initialize_from_discovery(version, &discovered);
        assert_eq!(
            result,
            json!({"protocolVersion": "2025-06-18",
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "new", "version": "3"},
                "instructions": "Be nice."})
        );
        let session = LegacyClientSession {
            v: version.into(),
            client: ClientMeta::of_initialize(&json!({
                "capabilities": {"roots": {}, "experimental": {}},
                "clientInfo": {"name": "old-client", "version": "1"}})),
        };
        let sealed = session.seal_text();
        assert_eq!(
            LegacyClientSession::from_sealed(&sealed),
            Some(session.clone())
        );
        assert_eq!(LegacyClientSession::from_sealed("backend-session-1"), None);
        let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"});
        let modern = to_modern(&call, &session.client);
        assert_eq!(modern["params"]["_meta"][META_VERSION], MODERN);
        assert_eq!(
            modern["params"]["_meta"][META_CAPABILITIES],
            json!({"experimental": {}})
        );
        assert_eq!(
            modern["params"]["_meta"][META_CLIENT_INFO]["name"],
            "old-client"
        );
    }

    #[test]
    fn modern_answers_lose_modern_fields_and_input_requests_become_errors() {
        let list = json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "complete",
            "tools": [], "ttlMs": 5, "cacheScope": "public"}});
        assert_eq!(
            legacyize(list),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})
        );
        let asks = json!({"jsonrpc": "2.0", "id": 2, "result": {"resultType": "input_required",
            "inputRequests": {"a": {"method": "elicitation/create"}}}});
        let out = legacyize(asks);
        assert_eq!(out["id"], 2);
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("input_required")
        );
        let discovered = discovery_from_initialize(&json!({"protocolVersion": LEGACY,
            "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}},
            "serverInfo": {"name": "old", "version": "1"}}));
        assert_eq!(
            discovered["capabilities"],
            json!({"tools": {}, "resources": {}}),
            "no change notifications a modern client could not get"
        );
        assert_eq!(discovered["supportedVersions"], json!([MODERN, LEGACY]));
        assert_eq!(discovered["_meta"][META_SERVER_INFO]["name"], "old");
        assert!(is_modern_discovery(&discovered));
    }
}
