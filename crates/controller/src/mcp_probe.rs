//! What the controller learns by asking each MCPServer itself: whether it
//! answers, which revision it speaks, how many tools, resources and prompts
//! it has, and its tool catalog's hash. [`catalog_condition`] and
//! [`reachable_condition`] (pure) turn that into status; [`probe`] is the
//! IO edge, a short MCP session like any client's.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_api::mcp::ServerTransport;
use tollgate_config::mcp_catalog::{CatalogDiff, catalog_hash, tool_fingerprints};
use tollgate_config::snapshot::McpServer;

/// Condition types on MCPServer status beyond Accepted/ResolvedRefs/Programmed.
pub const REACHABLE: &str = "Reachable";
pub const CATALOG_CHANGED: &str = "CatalogChanged";

/// Longest a probe may take, all messages together.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most pages followed per list.
const MAX_PAGES: usize = 50;
/// Largest answer read.
const MAX_ANSWER: usize = 8 * 1024 * 1024;
const SESSION_REVISION: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

/// One probe's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `Err`: why the server could not be listed.
    pub outcome: Result<Catalog, String>,
    /// The catalog hash seen before this probe: the previous probe's, or
    /// (the first probe after a restart) the one status showed.
    pub previous_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub protocol_version: String,
    pub resources: usize,
    pub prompts: usize,
    /// Each tool's fingerprint by name.
    pub tools: BTreeMap<String, String>,
    pub hash: String,
}

/// `(ok, reason, message)` of a condition.
pub type ConditionState = (bool, &'static str, String);

/// `Reachable`: the last probe's outcome.
pub fn reachable_condition(probe: &Probe) -> ConditionState {
    match &probe.outcome {
        Ok(catalog) => (
            true,
            "Reachable",
            format!(
                "answered the controller with protocol {}: {} tools, {} resources, {} prompts",
                catalog.protocol_version,
                catalog.tools.len(),
                catalog.resources,
                catalog.prompts
            ),
        ),
        Err(error) => (false, "Unreachable", error.clone()),
    }
}

/// `CatalogChanged` for a server whose catalog now hashes to `hash`.
/// True once the hash differs from the one status showed before (or from
/// the approved one), and it stays true until an operator approves the
/// current hash in `spec.catalog.approvedHash`: a change must be seen,
/// not only logged. `previous` is the condition as it stands.
pub fn catalog_condition(
    hash: &str,
    last_seen: Option<&str>,
    approved: Option<&str>,
    require_approval: bool,
    previous: Option<(bool, &str)>,
) -> ConditionState {
    if let Some(approved) = approved {
        return if approved == hash {
            (
                false,
                "Approved",
                format!("the tool catalog is the approved one ({hash})"),
            )
        } else {
            (
                true,
                "NotApproved",
                format!(
                    "the tool catalog ({hash}) differs from the approved one ({approved}){}",
                    if require_approval {
                        "; gateways hold its tools back until it is approved"
                    } else {
                        ""
                    }
                ),
            )
        };
    }
    if require_approval {
        return (
            true,
            "AwaitingApproval",
            format!(
                "gateways serve no tools until spec.catalog.approvedHash is set to a reviewed catalog (now {hash})"
            ),
        );
    }
    match (previous, last_seen) {
        (Some((true, message)), _) => (true, "ToolsChanged", message.to_string()),
        (_, Some(seen)) if seen != hash => (
            true,
            "ToolsChanged",
            format!(
                "the tool catalog changed from {seen} to {hash}; review it and set spec.catalog.approvedHash to acknowledge"
            ),
        ),
        _ => (
            false,
            "Unchanged",
            format!("the tool catalog ({hash}) has not changed since it was first seen"),
        ),
    }
}

/// The Event text for a catalog that changed between two probes.
pub fn change_note(server: &str, before: &Catalog, after: &Catalog) -> String {
    let diff = CatalogDiff::between(&before.tools, &after.tools);
    format!(
        "the tool catalog of MCP server {server} changed ({} -> {}): {diff}",
        before.hash, after.hash
    )
}

/// Lists `server` as a client would: a session (or 2026-07-28 requests
/// when the server has no handshake), every page of tools, then resources
/// and prompts, then the session is ended.
pub async fn probe(server: &McpServer) -> Probe {
    if is_link_local(&server.url) {
        // Cloud metadata lives there; the gateway refuses it too.
        return Probe {
            outcome: Err("link-local addresses are not probed".into()),
            previous_hash: None,
        };
    }
    let outcome = match tokio::time::timeout(PROBE_TIMEOUT, list_any_endpoint(server)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "did not answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    };
    Probe {
        outcome,
        previous_hash: None,
    }
}

/// The catalog from the first of the server's endpoints (`url`, then its
/// failover URLs) that lists it: the server is reachable while one is.
async fn list_any_endpoint(server: &McpServer) -> Result<Catalog, String> {
    let mut failures = Vec::new();
    for endpoint in 0..server.endpoints() {
        let Some(url) = server.endpoint(endpoint) else {
            break;
        };
        if endpoint > 0 && is_link_local(url) {
            failures.push(format!("{url}: link-local addresses are not probed"));
            continue;
        }
        let listed = if server.transport == ServerTransport::Sse {
            list_legacy_catalog(server, url).await
        } else {
            list_catalog(server, url).await
        };
        match listed {
            Ok(catalog) => return Ok(catalog),
            Err(why) if server.endpoints() == 1 => failures.push(why),
            Err(why) => failures.push(format!("endpoint {url}: {why}")),
        }
    }
    Err(failures.join("; "))
}

/// A legacy HTTP+SSE server (`transport: SSE`) is listed through the same
/// bridge the gateway embeds, started for this one probe on 127.0.0.1:
/// the probe's client then speaks Streamable HTTP as for any server.
async fn list_legacy_catalog(server: &McpServer, url: &str) -> Result<Catalog, String> {
    let credential = server
        .credential
        .as_ref()
        .map(|c| (c.header.as_str(), c.value.0.as_str()));
    let upstream = tollgate_mcp_bridge::LegacyUpstream::with_credential(url, credential)
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for the legacy SSE bridge: {e}"))?;
    let bridge = tollgate_mcp_bridge::embed(
        listener,
        tollgate_mcp_bridge::Limits::default(),
        std::collections::HashMap::from([("probe".to_string(), upstream)]),
    )
    .map_err(|e| e.to_string())?;
    let listed = list_catalog(server, &bridge.url("probe")).await;
    bridge.shutdown().await;
    listed
}

fn is_link_local(url: &str) -> bool {
    let host = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()));
    match host.and_then(|h| h.parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V4(ip)) => ip.is_link_local(),
        Some(std::net::IpAddr::V6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        None => false,
    }
}

struct Session<'a> {
    server: &'a McpServer,
    /// The endpoint probed: `url` or one of the failover URLs.
    url: &'a str,
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    /// 2025-11-25 session id, if the server gave one.
    id: Option<String>,
    version: String,
}

impl Session<'_> {
    fn modern(&self) -> bool {
        self.version == MODERN
    }

    async fn request(&mut self, method: &str, mut params: Value) -> Result<Value, String> {
        if self.modern() {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "tollgate-controller", "version": env!("CARGO_PKG_VERSION")},
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        let id = json!(format!("probe-{method}"));
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut request = Request::post(self.url)
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(header::CONTENT_TYPE, "application/json");
        if method != "initialize" {
            request = request.header("mcp-protocol-version", &self.version);
        }
        if self.modern() {
            request = request.header("mcp-method", method);
        }
        if let Some(session) = &self.id {
            request = request.header("mcp-session-id", session);
        }
        if let Some(credential) = &self.server.credential {
            request = request.header(credential.header.as_str(), credential.value.0.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("cannot build a request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status();
        if method == "initialize"
            && let Some(session) = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
        {
            self.id = Some(session.to_string());
        }
        let sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{method}: unreadable answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{method}: HTTP {}", status.as_u16()));
        }
        let answer = tollgate_config::mcp_wire::response_in(&bytes, sse, &id)
            .ok_or_else(|| format!("{method}: the answer is not a JSON-RPC response"))?;
        match answer.get("error") {
            Some(error) => Err(format!(
                "{method}: error {}: {}",
                error.get("code").unwrap_or(&Value::Null),
                error.get("message").and_then(Value::as_str).unwrap_or("")
            )),
            None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Every page of a list.
    async fn list(&mut self, method: &str, field: &str) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let result = self.request(method, params).await?;
            let page = result
                .get(field)
                .and_then(Value::as_array)
                .ok_or_else(|| format!("{method}: the answer has no {field}"))?;
            items.extend(page.iter().cloned());
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(items),
            }
        }
        Err(format!("{method}: more than {MAX_PAGES} pages"))
    }

    async fn close(&self) {
        let Some(session) = &self.id else { return };
        let Ok(request) = Request::delete(self.url)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", &self.version)
            .body(Full::new(Bytes::new()))
        else {
            return;
        };
        let _ = self.client.request(request).await;
    }
}

async fn list_catalog(server: &McpServer, url: &str) -> Result<Catalog, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let mut session = Session {
        server,
        url,
        client: Client::builder(TokioExecutor::new()).build(connector),
        id: None,
        version: SESSION_REVISION.to_string(),
    };
    let initialized = session
        .request(
            "initialize",
            json!({"protocolVersion": SESSION_REVISION, "capabilities": {},
                   "clientInfo": {"name": "tollgate-controller", "version": env!("CARGO_PKG_VERSION")}}),
        )
        .await;
    match initialized {
        Ok(result) => {
            if let Some(version) = result.get("protocolVersion").and_then(Value::as_str) {
                session.version = version.to_string();
            }
            let _ = notify_initialized(&session).await;
        }
        Err(handshake_error) => {
            // A 2026-07-28-only server has no handshake.
            session.version = MODERN.to_string();
            session
                .request("server/discover", json!({}))
                .await
                .map_err(|_| handshake_error)?;
        }
    }
    let outcome = async {
        let tools = session.list("tools/list", "tools").await?;
        let resources = session
            .list("resources/list", "resources")
            .await
            .map_or(0, |r| r.len());
        let prompts = session
            .list("prompts/list", "prompts")
            .await
            .map_or(0, |p| p.len());
        let tools = tool_fingerprints(&tools);
        Ok(Catalog {
            protocol_version: session.version.clone(),
            resources,
            prompts,
            hash: catalog_hash(&tools),
            tools,
        })
    }
    .await;
    session.close().await;
    outcome
}

async fn notify_initialized(session: &Session<'_>) -> Result<(), String> {
    let mut request = Request::post(session.url)
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::CONTENT_TYPE, "application/json")
        .header("mcp-protocol-version", &session.version);
    if let Some(id) = &session.id {
        request = request.header("mcp-session-id", id);
    }
    if let Some(credential) = &session.server.credential {
        request = request.header(credential.header.as_str(), credential.value.0.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )))
        .map_err(|e| e.to_string())?;
    session
        .client
        .request(request)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaa";
    const B: &str = "sha256:bbbb";

    #[test]
    fn a_first_catalog_is_unchanged_and_a_new_hash_changes_it_until_approved() {
        let first = catalog_condition(A, None, None, false, None);
        assert_eq!((first.0, first.1), (false, "Unchanged"));
        let same = catalog_condition(A, Some(A), None, false, Some((false, &first.2)));
        assert_eq!((same.0, same.1), (false, "Unchanged"));
        let changed = catalog_condition(B, Some(A), None, false, Some((false, &same.2)));
        assert_eq!((changed.0, changed.1), (true, "ToolsChanged"));
        assert!(
            changed.2.contains(A) && changed.2.contains(B),
            "{}",
            changed.2
        );
        // Status now shows B; the condition stays until approved.
        let later = catalog_condition(B, Some(B), None, false, Some((true, &changed.2)));
        assert_eq!((later.0, later.1), (true, "ToolsChanged"));
        let approved = catalog_condition(B, Some(B), Some(B), false, Some((true, &later.2)));
        assert_eq!((approved.0, approved.1), (false, "Approved"));
        let drifted = catalog_condition(A, Some(B), Some(B), false, Some((false, &approved.2)));
        assert_eq!((drifted.0, drifted.1), (true, "NotApproved"));
    }

    #[test]
    fn required_approval_says_tools_are_held_back() {
        let waiting = catalog_condition(A, None, None, true, None);
        assert_eq!((waiting.0, waiting.1), (true, "AwaitingApproval"));
        let drifted = catalog_condition(A, Some(B), Some(B), true, None);
        assert!(drifted.2.contains("hold its tools back"), "{}", drifted.2);
    }

    #[test]
    fn the_change_note_names_the_tools() {
        let before = Catalog {
            protocol_version: SESSION_REVISION.into(),
            resources: 0,
            prompts: 0,
            tools: BTreeMap::from([("search".into(), "1".into()), ("drop".into(), "2".into())]),
            hash: A.into(),
        };
        let after = Catalog {
            tools: BTreeMap::from([("search".into(), "9".into())]),
            hash: B.into(),
            ..before.clone()
        };
        assert_eq!(
            change_note("default/docs", &before, &after),
            "the tool catalog of MCP server default/docs changed (sha256:aaaa -> sha256:bbbb): changed: search; removed: drop"
        );
    }

    #[test]
    fn link_local_hosts_are_not_probed() {
        assert!(is_link_local("http://169.254.169.254/latest"));
        assert!(is_link_local("http://[fe80::1]:80/mcp"));
        assert!(!is_link_local("http://127.0.0.1:9/mcp"));
        assert!(!is_link_local("https://mcp.example.com/mcp"));
    }

    #[tokio::test]
    async fn a_server_is_reachable_while_one_of_its_endpoints_lists() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = format!("http://{}/mcp", listener.local_addr().unwrap());
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(tollgate_mock::serve(
            listener,
            std::sync::Arc::new(tollgate_mock::MockConfig::default()),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        let server = |url: &str, failover: Vec<String>| McpServer {
            name: "default/notes".into(),
            path: "notes".into(),
            url: url.into(),
            failover_urls: failover,
            transport: Default::default(),
            credential: None,
            translate_revisions: false,
            timeout_ms: 5_000,
            tools: Default::default(),
            access: Vec::new(),
            rate_limits: Vec::new(),
            aggregation: None,
            catalog_gate: None,
            anomalies: None,
            redact: None,
            cache: None,
        };
        // Port 1 on loopback refuses connections.
        let dead = "http://127.0.0.1:1/mcp";
        let only_dead = probe(&server(dead, Vec::new())).await;
        assert!(only_dead.outcome.is_err());
        let failing_over = probe(&server(dead, vec![live.clone()])).await;
        let catalog = failing_over.outcome.expect("the failover endpoint lists");
        assert!(
            catalog.tools.contains_key("echo"),
            "{:?}",
            catalog.tools.keys()
        );
        let both_dead = probe(&server(dead, vec!["http://127.0.0.1:1/other".into()])).await;
        let why = both_dead.outcome.unwrap_err();
        assert!(why.contains("endpoint http://127.0.0.1:1/other"), "{why}");
        // A legacy HTTP+SSE server, listed through the bridge.
        let mut legacy = server(&live.replace("/mcp", "/sse"), Vec::new());
        legacy.transport = ServerTransport::Sse;
        let catalog = probe(&legacy).await.outcome.expect("the SSE server lists");
        assert!(
            catalog.tools.contains_key("add"),
            "{:?}",
            catalog.tools.keys()
        );
        legacy.url = "http://127.0.0.1:1/sse".into();
        assert!(probe(&legacy).await.outcome.is_err());
        let _ = stop.send(true);
    }

    #[test]
    fn reachability_reports_counts_or_the_error() {
        let down = Probe {
            outcome: Err("cannot reach".into()),
            previous_hash: None,
        };
        assert_eq!(
            reachable_condition(&down),
            (false, "Unreachable", "cannot reach".into())
        );
    }
}
