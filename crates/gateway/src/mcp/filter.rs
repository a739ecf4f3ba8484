//! Tool filtering of `tools/list` answers, JSON or SSE: a tool a caller
//! may not use (hidden by the MCPServer's filter, or not granted to the
//! caller) is absent from every list it sees, not only uncallable. Pure:
//! bytes in, bytes out.

use serde_json::Value;

/// The answer keeping only the tools `keep` accepts (it sees each tool
/// object): a JSON body, or an SSE stream
/// whose events carry JSON-RPC messages (only the response to `id` is
/// touched; notifications pass unchanged). `None` when the body is not
/// what the content type says, so the caller can refuse rather than pass
/// an unfiltered list.
pub fn filter_tools(
    body: &[u8],
    sse: bool,
    id: &Value,
    keep: &dyn Fn(&Value) -> bool,
) -> Option<Vec<u8>> {
    if !sse {
        let mut message: Value = serde_json::from_slice(body).ok()?;
        filter_message(&mut message, id, keep);
        return serde_json::to_vec(&message).ok();
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len());
    // Events end with a blank line; fields are `name: value` lines.
    for event in split_events(text) {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let parsed = (!data.is_empty())
            .then(|| serde_json::from_str::<Value>(&data.join("\n")).ok())
            .flatten();
        match parsed {
            Some(mut message) if is_response_to(&message, id) => {
                filter_message(&mut message, id, keep);
                for line in event.lines().filter(|l| !l.starts_with("data:")) {
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&serde_json::to_string(&message).ok()?);
                out.push_str("\n\n");
            }
            _ => {
                out.push_str(event);
                out.push_str("\n\n");
            }
        }
    }
    Some(out.into_bytes())
}

pub use tollgate_config::mcp_wire::response_in;
use tollgate_config::mcp_wire::split_events;

fn is_response_to(message: &Value, id: &Value) -> bool {
    message.get("id") == Some(id) && message.get("result").is_some()
}

fn filter_message(message: &mut Value, id: &Value, keep: &dyn Fn(&Value) -> bool) {
    if !is_response_to(message, id) {
        return;
    }
    if let Some(tools) = message
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    {
        tools.retain(|tool| keep(tool));
    }
}

/// A tool object's name and its (untrusted) `readOnlyHint`.
pub fn tool_of(tool: &Value) -> Option<(&str, bool)> {
    let name = tool.get("name").and_then(Value::as_str)?;
    let read_only = tool
        .get("annotations")
        .and_then(|a| a.get("readOnlyHint"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some((name, read_only))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_response_is_found_among_progress_events() {
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[]}}\n\n";
        assert_eq!(
            response_in(sse, true, &json!(2)),
            Some(json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}))
        );
        assert_eq!(response_in(sse, true, &json!(3)), None);
        let error = br#"{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"no"}}"#;
        assert!(response_in(error, false, &json!("a")).is_some());
        assert_eq!(response_in(b"not json", false, &json!("a")), None);
    }

    fn deny(globs: &'static [&'static str]) -> impl Fn(&Value) -> bool {
        move |tool: &Value| {
            tool_of(tool).is_some_and(|(name, _)| {
                !globs
                    .iter()
                    .any(|g| tollgate_config::snapshot::glob_matches(g, name))
            })
        }
    }

    fn names(message: &Value) -> Vec<&str> {
        message["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn json_lists_lose_hidden_tools() {
        let body = json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": [
            {"name": "read_file"}, {"name": "delete_file"}, {"name": "search"}],
            "nextCursor": "2"}});
        let out = filter_tools(
            &serde_json::to_vec(&body).unwrap(),
            false,
            &json!(7),
            &deny(&["delete_*"]),
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(names(&out), ["read_file", "search"]);
        assert_eq!(out["result"]["nextCursor"], "2", "the rest is kept");
    }

    #[test]
    fn sse_lists_are_filtered_and_notifications_pass() {
        let body = "event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":{\"tools\":[{\"name\":\"x\"},{\"name\":\"secret\"}]}}\n\n";
        let out = filter_tools(body.as_bytes(), true, &json!("a"), &deny(&["secret"])).unwrap();
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2, "{text}");
        assert!(events[0].contains("notifications/progress") && events[0].contains("id: 1"));
        assert!(events[1].starts_with("event: message\n"), "{text}");
        let data = events[1]
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        assert_eq!(names(&serde_json::from_str(data).unwrap()), ["x"]);
    }

    #[test]
    fn a_body_that_is_not_what_it_claims_is_refused() {
        assert!(filter_tools(b"not json", false, &json!(1), &deny(&[])).is_none());
        assert!(filter_tools(&[0xff, 0xfe], true, &json!(1), &deny(&[])).is_none());
    }
}
