//! The wire side of MCP answers that both the gateway and the controller
//! read: JSON or SSE bodies carrying JSON-RPC messages. Pure: no IO.

use serde_json::Value;

/// The JSON-RPC response (result or error) to `id` in an answer, JSON or
/// SSE; other events (progress, logs) are skipped.
pub fn response_in(body: &[u8], sse: bool, id: &Value) -> Option<Value> {
    let is_answer = |m: &Value| {
        m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some())
    };
    if !sse {
        return serde_json::from_slice::<Value>(body).ok().filter(is_answer);
    }
    let text = std::str::from_utf8(body).ok()?;
    split_events(text).find_map(|event| {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        serde_json::from_str::<Value>(&data.join("\n"))
            .ok()
            .filter(is_answer)
    })
}

/// The events of an SSE body (blank-line separated, LF or CRLF).
pub fn split_events(text: &str) -> impl Iterator<Item = &str> {
    let normalized_end = text.trim_end_matches(['\r', '\n']);
    normalized_end
        .split("\n\n")
        .flat_map(|chunk| chunk.split("\r\n\r\n"))
        .filter(|event| !event.trim().is_empty())
}
