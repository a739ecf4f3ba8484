//! How `/mcp` merges several servers into one: public names, pages,
//! capabilities, and the ids of server-to-client requests. Pure: no IO.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use tollgate_api::mcp::PrefixMode;
use tollgate_config::snapshot::mcp::Aggregation;

/// Between a server's prefix and a backend's name. Prefixes hold no `_`,
/// so the first `__` of a prefixed name ends its prefix.
pub const SEPARATOR: &str = "__";
/// Longest tool name MCP allows (2025-11-25 "Tool names").
pub const MAX_NAME_LEN: usize = 128;
/// Entries per page of a merged list.
pub const PAGE_SIZE: usize = 100;

/// What became of one backend name in the merged list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    Public(String),
    /// An earlier server (by path) already has the public name.
    Collides {
        with: usize,
    },
    /// Prefixing made it longer than MCP allows.
    TooLong,
}

/// Public names for every server's backend names, in the order given
/// (servers sorted by path, each backend's own order). The same input
/// always gives the same names, whoever asks: names never depend on what a
/// caller may see, so a call names the same tool on every replica.
pub fn name_entries(servers: &[(&Aggregation, Vec<&str>)]) -> Vec<Vec<Naming>> {
    let mut holders: HashMap<&str, usize> = HashMap::new();
    for (index, (_, names)) in servers.iter().enumerate() {
        for name in names {
            holders
                .entry(name)
                .and_modify(|first| {
                    if *first != index {
                        *first = usize::MAX;
                    }
                })
                .or_insert(index);
        }
    }
    let shared = |name: &str| holders.get(name) == Some(&usize::MAX);
    let mut taken: HashMap<String, usize> = HashMap::new();
    servers
        .iter()
        .enumerate()
        .map(|(index, (aggregation, names))| {
            names
                .iter()
                .map(|name| {
                    let prefixed = match aggregation.prefix_mode {
                        PrefixMode::Always => true,
                        PrefixMode::OnConflict => shared(name),
                        PrefixMode::Never => false,
                    };
                    let public = if prefixed {
                        format!("{}{SEPARATOR}{name}", aggregation.prefix)
                    } else {
                        (*name).to_string()
                    };
                    if public.len() > MAX_NAME_LEN {
                        return Naming::TooLong;
                    }
                    match taken.get(&public) {
                        Some(&with) => Naming::Collides { with },
                        None => {
                            taken.insert(public.clone(), index);
                            Naming::Public(public)
                        }
                    }
                })
                .collect()
        })
        .collect()
}

/// `(prefix, backend name)` of a prefixed public name.
pub fn split_prefixed(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
        .filter(|(prefix, rest)| !prefix.is_empty() && !rest.is_empty())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid cursor")]
pub struct BadCursor;

/// The page of `items` a client's cursor asks for, and the next cursor.
/// Cursors are opaque to clients; here they hold an offset into the
/// deterministic merged order.
pub fn page<T>(
    mut items: Vec<T>,
    cursor: Option<&str>,
    size: usize,
) -> Result<(Vec<T>, Option<String>), BadCursor> {
    let start = match cursor {
        None => 0,
        Some(cursor) => URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.strip_prefix("tg:")?.parse::<usize>().ok())
            .filter(|start| *start <= items.len())
            .ok_or(BadCursor)?,
    };
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| URL_SAFE_NO_PAD.encode(format!("tg:{end}")));
    items.truncate(end);
    Ok((items.split_off(start), next))
}

/// The id a backend's request to the client carries in `/mcp`: backends
/// choose ids independently, so the server's path goes in front.
pub fn outbound_id(path: &str, id: &Value) -> Value {
    Value::String(format!("{path}#{id}"))
}

/// The server path and original id of a client's answer to a forwarded
/// request.
pub fn inbound_id(id: &Value) -> Option<(&str, Value)> {
    let (path, original) = id.as_str()?.split_once('#')?;
    Some((path, serde_json::from_str(original).ok()?))
}

/// What the client declared it can do, which decides the server-to-client
/// requests it gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientCapabilities {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sampling: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elicitation: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub roots: bool,
}

impl ClientCapabilities {
    pub fn of(capabilities: Option<&Value>) -> Self {
        let has = |name: &str| capabilities.and_then(|c| c.get(name)).is_some();
        Self {
            sampling: has("sampling"),
            elicitation: has("elicitation"),
            roots: has("roots"),
        }
    }

    /// Whether a server-to-client request of `method` may reach the client.
    pub fn allow(&self, method: &str) -> bool {
        match method {
            "sampling/createMessage" => self.sampling,
            "elicitation/create" => self.elicitation,
            "roots/list" => self.roots,
            _ => true,
        }
    }
}

/// What `/mcp` says it can do: each feature some backend has, with
/// `listChanged` and `subscribe` when any backend offers them.
pub fn merge_capabilities(backends: &[&Value]) -> Value {
    let mut out = Map::new();
    for capabilities in backends {
        let Some(capabilities) = capabilities.as_object() else {
            continue;
        };
        for feature in ["tools", "resources", "prompts", "logging", "completions"] {
            let Some(theirs) = capabilities.get(feature) else {
                continue;
            };
            let entry = out
                .entry(feature.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Some(mine), Some(theirs)) = (entry.as_object_mut(), theirs.as_object()) {
                for flag in ["listChanged", "subscribe"] {
                    if theirs.get(flag) == Some(&Value::Bool(true)) {
                        mine.insert(flag.to_string(), Value::Bool(true));
                    }
                }
            }
        }
    }
    Value::Object(out)
}

/// One SSE event from a backend, made fit for the client of `/mcp`.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// The event to send (ending with its blank line).
    Send(String),
    /// A server-to-client request the client did not declare it handles.
    Refuse { method: String },
}

/// Rewrites one event (without its terminating blank line): a request to
/// the client gets an id naming its server; event ids go, since ids from
/// several backends cannot be told apart on one stream (the aggregated
/// endpoint does not offer resumption).
pub fn relay_event(event: &str, path: &str, client: ClientCapabilities) -> Relayed {
    let mut other = String::new();
    let mut data = Vec::new();
    for line in event.lines() {
        if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        } else if !(line.starts_with("id:") || line == "id") {
            other.push_str(line);
            other.push('\n');
        }
    }
    let mut message = (!data.is_empty())
        .then(|| serde_json::from_str::<Value>(&data.join("\n")).ok())
        .flatten();
    if let Some(message) = &mut message
        && let (Some(method), Some(id)) = (
            message.get("method").and_then(Value::as_str),
            message.get("id"),
        )
    {
        if !client.allow(method) {
            return Relayed::Refuse {
                method: method.to_string(),
            };
        }
        let id = outbound_id(path, id);
        message["id"] = id;
    }
    let mut out = other;
    match message {
        Some(message) => {
            out.push_str("data: ");
            out.push_str(&message.to_string());
            out.push('\n');
        }
        None => {
            for line in data {
                out.push_str("data: ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push('\n');
    Relayed::Send(out)
}

/// The `_meta` entry naming servers left out of a merged list.
pub const UNAVAILABLE_META: &str = "dev.tollgate/unavailable";

/// A merged list's result: the page, the next cursor, and the servers that
/// could not list (never a silently shorter list).
pub fn list_result(
    field: &str,
    items: Vec<Value>,
    next: Option<String>,
    unavailable: &[(String, String)],
) -> Value {
    let mut result = Map::new();
    result.insert(field.to_string(), Value::Array(items));
    if let Some(next) = next {
        result.insert("nextCursor".into(), Value::String(next));
    }
    if !unavailable.is_empty() {
        let servers: Vec<Value> = unavailable
            .iter()
            .map(|(server, error)| json!({"server": server, "error": error}))
            .collect();
        result.insert("_meta".into(), json!({ UNAVAILABLE_META: servers }));
    }
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(prefix: &str, mode: PrefixMode) -> Aggregation {
        Aggregation {
            prefix: prefix.into(),
            prefix_mode: mode,
            fail_lists: false,
        }
    }

    #[test]
    fn always_prefixes_every_name() {
        let a = agg("docs", PrefixMode::Always);
        let b = agg("tickets", PrefixMode::Always);
        let names = name_entries(&[(&a, vec!["search", "read"]), (&b, vec!["search"])]);
        assert_eq!(
            names,
            vec![
                vec![
                    Naming::Public("docs__search".into()),
                    Naming::Public("docs__read".into())
                ],
                vec![Naming::Public("tickets__search".into())],
            ]
        );
    }

    #[test]
    fn on_conflict_prefixes_only_shared_names() {
        let a = agg("docs", PrefixMode::OnConflict);
        let b = agg("tickets", PrefixMode::OnConflict);
        let names = name_entries(&[(&a, vec!["search", "read"]), (&b, vec!["search", "open"])]);
        assert_eq!(
            names,
            vec![
                vec![
                    Naming::Public("docs__search".into()),
                    Naming::Public("read".into())
                ],
                vec![
                    Naming::Public("tickets__search".into()),
                    Naming::Public("open".into())
                ],
            ]
        );
    }

    #[test]
    fn never_keeps_names_and_the_later_server_loses_a_collision() {
        let a = agg("docs", PrefixMode::Never);
        let b = agg("tickets", PrefixMode::Never);
        let c = agg("wiki", PrefixMode::OnConflict);
        let names = name_entries(&[
            (&a, vec!["search"]),
            (&b, vec!["search", "open"]),
            (&c, vec!["search"]),
        ]);
        assert_eq!(names[0], vec![Naming::Public("search".into())]);
        assert_eq!(
            names[1],
            vec![Naming::Collides { with: 0 }, Naming::Public("open".into())]
        );
        assert_eq!(names[2], vec![Naming::Public("wiki__search".into())]);
    }

    #[test]
    fn a_name_too_long_once_prefixed_is_left_out() {
        let a = agg("docs", PrefixMode::Always);
        let long = "x".repeat(MAX_NAME_LEN - 5);
        let names = name_entries(&[(&a, vec![long.as_str(), "ok"])]);
        assert_eq!(
            names[0],
            vec![Naming::TooLong, Naming::Public("docs__ok".into())]
        );
    }

    #[test]
    fn a_prefixed_name_splits_at_the_first_separator() {
        assert_eq!(
            split_prefixed("docs__read__all"),
            Some(("docs", "read__all"))
        );
        assert_eq!(split_prefixed("plain"), None);
        assert_eq!(split_prefixed("__x"), None);
    }

    #[test]
    fn pages_walk_the_list_with_opaque_cursors() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = page(items.clone(), None, 2).unwrap();
        assert_eq!(first, [0, 1]);
        let (second, next) = page(items.clone(), next.as_deref(), 2).unwrap();
        assert_eq!(second, [2, 3]);
        let (last, next) = page(items.clone(), next.as_deref(), 2).unwrap();
        assert_eq!((last, next), (vec![4], None));
        assert_eq!(page(items.clone(), Some("garbage"), 2), Err(BadCursor));
        let beyond = URL_SAFE_NO_PAD.encode("tg:9");
        assert_eq!(page(items, Some(&beyond), 2), Err(BadCursor));
    }

    #[test]
    fn request_ids_carry_their_server_and_come_back_intact() {
        for id in [json!(0), json!("abc#1"), json!(u64::MAX)] {
            let out = outbound_id("docs", &id);
            assert_eq!(inbound_id(&out), Some(("docs", id)));
        }
        assert_eq!(inbound_id(&json!(3)), None);
        assert_eq!(inbound_id(&json!("no-separator")), None);
    }

    #[test]
    fn events_get_server_ids_and_lose_event_ids() {
        let client = ClientCapabilities {
            sampling: true,
            ..ClientCapabilities::default()
        };
        let event = "id: 7\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"sampling/createMessage\",\"params\":{}}";
        let Relayed::Send(out) = relay_event(event, "docs", client) else {
            panic!("sampling was declared");
        };
        assert!(!out.contains("id: 7"), "{out}");
        assert!(out.starts_with("event: message\n"), "{out}");
        let data: Value =
            serde_json::from_str(out.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())
                .unwrap();
        assert_eq!(data["id"], json!("docs#4"));
        assert!(out.ends_with("\n\n"));

        let notification = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}";
        let Relayed::Send(out) = relay_event(notification, "docs", client) else {
            panic!("notifications pass");
        };
        assert!(out.contains("\"progress\":1"));

        let elicit =
            "data: {\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"elicitation/create\",\"params\":{}}";
        assert_eq!(
            relay_event(elicit, "docs", client),
            Relayed::Refuse {
                method: "elicitation/create".into()
            }
        );
    }

    #[test]
    fn capabilities_merge_to_what_any_backend_has() {
        let a = json!({"tools": {"listChanged": true}, "logging": {}});
        let b = json!({"tools": {}, "resources": {"subscribe": true}, "experimental": {"x": {}}});
        assert_eq!(
            merge_capabilities(&[&a, &b]),
            json!({"tools": {"listChanged": true}, "logging": {}, "resources": {"subscribe": true}})
        );
    }

    #[test]
    fn client_capabilities_gate_server_requests() {
        let caps = ClientCapabilities::of(Some(&json!({"roots": {"listChanged": true}})));
        assert!(caps.allow("roots/list"));
        assert!(!caps.allow("sampling/createMessage"));
        assert!(caps.allow("ping"));
    }

    #[test]
    fn unavailable_servers_are_named_in_the_result() {
        let result = list_result(
            "tools",
            vec![json!({"name": "a"})],
            None,
            &[("docs".into(), "timed out".into())],
        );
        assert_eq!(
            result["_meta"][UNAVAILABLE_META],
            json!([{"server": "docs", "error": "timed out"}])
        );
        assert!(result.get("nextCursor").is_none());
    }
}
