//! Compiled MCPServers: where a gateway forwards `/mcp/{path}`, with what
//! credential, and which tools it serves as reads or writes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_api::mcp::ToolAccess;

use super::{Credential, glob_matches};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    /// `namespace/name` of the MCPServer.
    pub name: Arc<str>,
    /// The segment after `/mcp/`.
    pub path: String,
    /// The backend's MCP endpoint.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<McpCredential>,
    pub timeout_ms: u64,
    #[serde(default)]
    pub tools: ToolFilter,
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
