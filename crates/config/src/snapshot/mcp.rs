//! Compiled MCPServers: where a gateway forwards `/mcp/{path}`, with what
//! credential, and which tools it serves as reads or writes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_api::mcp::{PrefixMode, ServerTransport, ToolAccess};

use super::budget::Subject;
use super::{Credential, Principal, glob_matches};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    /// `namespace/name` of the MCPServer.
    pub name: Arc<str>,
    /// The segment after `/mcp/`.
    pub path: String,
    /// The backend's MCP endpoint.
    pub url: String,
    /// Its other replicas' endpoints, tried in order after `url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_urls: Vec<String>,
    /// How `url` and `failover_urls` speak MCP: an `Sse` (legacy HTTP+SSE)
    /// server is reached through the gateway's embedded bridge.
    #[serde(default, skip_serializing_if = "ServerTransport::is_streamable_http")]
    pub transport: ServerTransport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<McpCredential>,
    /// Translate between MCP revision families on `/mcp/{path}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translate_revisions: bool,
    pub timeout_ms: u64,
    #[serde(default)]
    pub tools: ToolFilter,
    /// Empty: everyone may use every served tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<Grant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<McpRateLimit>,
    /// Its part in `/mcp`; `None`: not aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    /// Set when the tool catalog must be approved before it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_gate: Option<CatalogGate>,
    /// Agent-behaviour anomaly detection on tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<AgentPolicy>,
    /// Argument redaction before calls leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact: Option<Redaction>,
    /// Results of read-only calls and reads kept for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicy {
    pub ttl_ms: u64,
    /// Tool globs; empty: every read tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    pub shared: bool,
}

impl CachePolicy {
    pub fn covers(&self, tool: &str) -> bool {
        self.tools.is_empty() || self.tools.iter().any(|g| glob_matches(g, tool))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redaction {
    /// Paths split at dots; `*` matches any key or index.
    pub paths: Vec<Vec<String>>,
    pub pii: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPolicy {
    pub interval_ms: u64,
    pub warmup_intervals: u32,
    pub burst_factor: u32,
    /// Write share (0..1) over the baseline share that is a shift.
    pub write_shift: f64,
    pub new_tools: bool,
    pub cooldown_ms: u64,
    pub action: tollgate_api::mcp::AnomalyAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<super::budget::Webhook>,
    /// Agents held back at or before this time (Unix ms) are released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at_ms: Option<i64>,
}

/// Tools are served only while the backend's catalog hash is `approved`
/// (none approved yet: nothing is served).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogGate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
}

/// How a server joins the aggregated endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregation {
    /// Names are `{prefix}__{name}` when prefixed.
    pub prefix: String,
    pub prefix_mode: PrefixMode,
    /// Fail the whole list when this server cannot list (else omit it).
    pub fail_lists: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpRateLimit {
    /// Tool globs of the calls it counts; empty: every message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    pub bucket: super::budget::Bucket,
    /// One bucket per principal, else one for the server.
    pub per_caller: bool,
}

impl McpRateLimit {
    /// Whether this limit counts a message (`tool`: the tool of a call).
    pub fn counts(&self, tool: Option<&str>) -> bool {
        self.tools.is_empty() || tool.is_some_and(|t| self.tools.iter().any(|g| glob_matches(g, t)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub subject: Subject,
    /// Tool globs; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Write tools too, not only reads.
    pub write: bool,
}

impl McpServer {
    /// How many endpoints the server has: `url` and its failover URLs.
    pub fn endpoints(&self) -> usize {
        1 + self.failover_urls.len()
    }

    /// Endpoint `replica` (0 is `url`), if there is one.
    pub fn endpoint(&self, replica: usize) -> Option<&str> {
        match replica {
            0 => Some(&self.url),
            n => self.failover_urls.get(n - 1).map(String::as_str),
        }
    }

    /// Whether lists from this server need rewriting for some caller.
    pub fn filters_lists(&self) -> bool {
        self.tools.filters() || !self.access.is_empty() || self.catalog_gate.is_some()
    }

    /// Whether `principal` may see and call `tool`, which is a read or a
    /// write as `access` says.
    pub fn may_use(&self, principal: Option<&Principal>, tool: &str, access: ToolAccess) -> bool {
        if !self.tools.serves(tool) {
            return false;
        }
        self.access.is_empty()
            || self.access.iter().any(|grant| {
                grant.subject.matches(principal)
                    && (grant.tools.is_empty() || grant.tools.iter().any(|g| glob_matches(g, tool)))
                    && (grant.write || access == ToolAccess::Read)
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpCredential {
    /// Lowercase header name.
    pub header: String,
    /// The whole header value (`Bearer …` for `authorization`).
    pub value: Credential,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ToolFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// (glob, access), first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<(String, ToolAccess)>,
}

impl ToolFilter {
    /// Whether any tool may be hidden (lists then need filtering).
    pub fn filters(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// Whether the gateway serves tool `name` at all.
    pub fn serves(&self, name: &str) -> bool {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|g| glob_matches(g, name));
        allowed && !self.deny.iter().any(|g| glob_matches(g, name))
    }

    /// Whether an operator's rule classifies `name` (no backend hint needed).
    pub fn classifies(&self, name: &str) -> bool {
        self.access.iter().any(|(glob, _)| glob_matches(glob, name))
    }

    /// Read or write: the operator's rule, else the backend's (untrusted)
    /// `readOnlyHint`, else write.
    pub fn access(&self, name: &str, read_only_hint: bool) -> ToolAccess {
        self.access
            .iter()
            .find(|(glob, _)| glob_matches(glob, name))
            .map(|(_, access)| *access)
            .unwrap_or(if read_only_hint {
                ToolAccess::Read
            } else {
                ToolAccess::Write
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_give_read_or_write_to_their_subjects_only() {
        let server = McpServer {
            name: "default/tools".into(),
            path: "tools".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            failover_urls: vec!["http://127.0.0.1:2/mcp".into()],
            transport: Default::default(),
            credential: None,
            translate_revisions: false,
            timeout_ms: 1,
            tools: ToolFilter {
                deny: vec!["drop_*".into()],
                ..ToolFilter::default()
            },
            access: vec![
                Grant {
                    subject: Subject {
                        team: Some("support".into()),
                        ..Subject::default()
                    },
                    tools: vec![],
                    write: false,
                },
                Grant {
                    subject: Subject {
                        user: Some("ops".into()),
                        ..Subject::default()
                    },
                    tools: vec!["write_*".into()],
                    write: true,
                },
            ],
            rate_limits: vec![],
            aggregation: None,
            catalog_gate: None,
            anomalies: None,
            redact: None,
            cache: None,
        };
        let support = Principal {
            user: "sam".into(),
            team: Some("support".into()),
            ..Principal::default()
        };
        let ops = Principal {
            user: "ops".into(),
            ..Principal::default()
        };
        let stranger = Principal {
            user: "x".into(),
            ..Principal::default()
        };
        assert!(server.may_use(Some(&support), "search", ToolAccess::Read));
        assert!(!server.may_use(Some(&support), "write_note", ToolAccess::Write));
        assert!(server.may_use(Some(&ops), "write_note", ToolAccess::Write));
        assert!(
            !server.may_use(Some(&ops), "search", ToolAccess::Read),
            "ops is granted write_* only"
        );
        assert!(!server.may_use(Some(&stranger), "search", ToolAccess::Read));
        assert!(!server.may_use(None, "search", ToolAccess::Read));
        assert!(
            !server.may_use(Some(&support), "drop_table", ToolAccess::Read),
            "the filter wins"
        );
        assert_eq!(server.endpoints(), 2);
        assert_eq!(server.endpoint(1), Some("http://127.0.0.1:2/mcp"));
        assert_eq!(server.endpoint(2), None);
        let open = McpServer {
            access: vec![],
            ..server
        };
        assert!(open.may_use(Some(&stranger), "write_note", ToolAccess::Write));
        assert!(open.filters_lists(), "the deny filter still rewrites lists");
    }

    #[test]
    fn deny_beats_allow_and_operator_rules_beat_hints() {
        let filter = ToolFilter {
            allow: vec!["read_*".into(), "search".into()],
            deny: vec!["read_secrets".into()],
            access: vec![("search".into(), ToolAccess::Write)],
        };
        assert!(filter.serves("read_file"));
        assert!(!filter.serves("read_secrets"));
        assert!(!filter.serves("delete_file"));
        assert_eq!(filter.access("search", true), ToolAccess::Write);
        assert_eq!(filter.access("read_file", true), ToolAccess::Read);
        assert_eq!(filter.access("read_file", false), ToolAccess::Write);
        assert!(ToolFilter::default().serves("anything"));
    }
}
