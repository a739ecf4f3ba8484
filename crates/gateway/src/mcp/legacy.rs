//! MCPServers whose `transport` is `SSE` (the legacy HTTP+SSE transport of
//! MCP 2024-11-05): the gateway reaches them through a `tollgate
//! mcp-bridge` embedded in this process, on 127.0.0.1, which speaks
//! Streamable HTTP on one side and holds one SSE connection to the server
//! per session on the other. Every gateway feature (policy, aggregation,
//! cache, audit) applies unchanged: only the URL a message is sent to
//! differs ([`LegacyBridge::url`]).
//!
//! The bridge starts at the first message for such a server and its
//! upstreams follow every configuration reload ([`LegacyBridge::update`]).
//! Each endpoint (`url` and `failoverUrls`) is one upstream, with the
//! server's credential as a header the bridge sends with every request.
//! Bridge paths start with a secret of this process, so another local
//! process cannot use the bridge (and its credentials) by guessing paths.
//!
//! The bridge's sessions live in this replica: a client whose session
//! reaches another replica is told it ended (404) and starts a new one
//! there.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tollgate_api::mcp::ServerTransport;
use tollgate_config::snapshot::McpServer;
use tollgate_mcp_bridge::{EmbeddedBridge, LegacyUpstream, Limits};

/// Most SSE connections (sessions) the embedded bridge holds at once.
const MAX_SESSIONS: u32 = 1024;

#[derive(Default)]
pub struct LegacyBridge {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every legacy endpoint of the current configuration, by bridge key.
    upstreams: HashMap<String, LegacyUpstream>,
    bridge: Option<EmbeddedBridge>,
    /// Starts the keys: random, made with the bridge.
    secret: String,
}

impl LegacyBridge {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the legacy servers of a new configuration: a running bridge
    /// gets them at once (sessions of a changed or removed endpoint end).
    /// Costs nothing while no server is `SSE` and no bridge runs.
    pub fn update(&self, servers: &[McpServer]) {
        let legacy: Vec<&McpServer> = servers
            .iter()
            .filter(|s| s.transport == ServerTransport::Sse)
            .collect();
        let mut state = self.state();
        if legacy.is_empty() && state.upstreams.is_empty() {
            return;
        }
        state.upstreams = legacy
            .into_iter()
            .flat_map(|server| {
                (0..server.endpoints()).filter_map(move |endpoint| {
                    let upstream = upstream(server, endpoint)?;
                    Some((key(&server.name, endpoint), upstream))
                })
            })
            .collect();
        if let Some(bridge) = &state.bridge {
            bridge.set_upstreams(prefixed(&state.secret, &state.upstreams));
        }
    }

    /// The bridge's URL for `endpoint` of `server`, starting the bridge on
    /// first use. Must be called inside the Tokio runtime.
    pub fn url(&self, server: &McpServer, endpoint: usize) -> Result<String, String> {
        let mut state = self.state();
        let key = key(&server.name, endpoint);
        if !state.upstreams.contains_key(&key) {
            return Err(format!(
                "{} has no usable legacy SSE endpoint {endpoint}",
                server.name
            ));
        }
        if state.bridge.is_none() {
            let secret = format!("{:032x}", rand::random::<u128>());
            let bridge = start(prefixed(&secret, &state.upstreams))?;
            state.secret = secret;
            state.bridge = Some(bridge);
        }
        let State { bridge, secret, .. } = &*state;
        let bridge = bridge
            .as_ref()
            .ok_or_else(|| "the legacy SSE bridge is not running".to_string())?;
        Ok(bridge.url(&format!("{secret}/{key}")))
    }
}

fn start(upstreams: HashMap<String, LegacyUpstream>) -> Result<EmbeddedBridge, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| format!("cannot listen for the legacy SSE bridge: {e}"))?;
    let limits = Limits {
        max_sessions: MAX_SESSIONS,
        ..Limits::default()
    };
    tollgate_mcp_bridge::embed(listener, limits, upstreams).map_err(|e| e.to_string())
}

fn is_link_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        _ => false,
    }
}

fn key(server: &str, endpoint: usize) -> String {
    format!("{server}/{endpoint}")
}

fn prefixed(
    secret: &str,
    upstreams: &HashMap<String, LegacyUpstream>,
) -> HashMap<String, LegacyUpstream> {
    upstreams
        .iter()
        .map(|(key, upstream)| (format!("{secret}/{key}"), upstream.clone()))
        .collect()
}

/// Endpoint `endpoint` of `server` as a bridge upstream, with the server's
/// credential; `None` (logged) when its URL or credential is unusable.
fn upstream(server: &McpServer, endpoint: usize) -> Option<LegacyUpstream> {
    let url = server.endpoint(endpoint)?;
    let credential = server
        .credential
        .as_ref()
        .map(|c| (c.header.as_str(), c.value.0.as_str()));
    match LegacyUpstream::with_credential(url, credential) {
        // Cloud metadata lives there: refused, as for any MCP backend.
        Ok(upstream) if is_link_local(&upstream.url) => {
            tracing::warn!(server = %server.name, "a legacy SSE URL on a link-local address; not bridged");
            None
        }
        Ok(upstream) => Some(upstream),
        Err(error) => {
            tracing::warn!(server = %server.name, %error, "unusable legacy SSE URL");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_hosts_are_not_bridged() {
        let url = |text: &str| url::Url::parse(text).unwrap();
        assert!(is_link_local(&url("http://169.254.169.254/sse")));
        assert!(is_link_local(&url("http://[fe80::1]/sse")));
        assert!(!is_link_local(&url("http://127.0.0.1:9/sse")));
        assert!(!is_link_local(&url("https://mcp.example/sse")));
    }
}
