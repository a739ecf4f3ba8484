//! Results of read-only tool calls and resource reads, kept for a while
//! (`spec.cache` of the MCPServer): per caller unless the server's results
//! may be shared, never longer than the backend's own `ttlMs`, and
//! per caller whenever the backend says `cacheScope: private`. Pure apart
//! from the clock: entries in, entries out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Entries kept at most per replica; past it, expired ones are dropped and
/// new results are not stored until there is room.
const MAX_ENTRIES: usize = 10_000;
/// Largest result kept (bytes of JSON).
const MAX_RESULT_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct ResultCache {
    entries: Mutex<HashMap<[u8; 32], (Value, Instant)>>,
}

/// What a cached answer is keyed by: server, method and params (without
/// `_meta`), and the caller unless results are shared.
pub fn key(server: &str, caller: Option<&str>, method: &str, params: &Value) -> [u8; 32] {
    let mut params = params.clone();
    if let Some(object) = params.as_object_mut() {
        object.remove("_meta");
    }
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [server, caller.unwrap_or("*"), method] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(params.to_string().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(hasher.finish().as_ref());
    out
}

/// How long a result may be kept: the configured TTL, capped by the
/// backend's `ttlMs`; `None` for results that must not be kept (errors,
/// `isError`, too large).
pub fn keep_for(result: &Value, configured: Duration) -> Option<Duration> {
    if result.get("isError") == Some(&Value::Bool(true)) {
        return None;
    }
    if result.to_string().len() > MAX_RESULT_BYTES {
        return None;
    }
    let ttl = match result.get("ttlMs").and_then(Value::as_i64) {
        Some(ms) => configured.min(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        None => configured,
    };
    (!ttl.is_zero()).then_some(ttl)
}

/// Whether the backend marked the result private (never shared).
pub fn private(result: &Value) -> bool {
    result.get("cacheScope").and_then(Value::as_str) == Some("private")
}

impl ResultCache {
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Value> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(key) {
            Some((result, expires)) if *expires > now => Some(result.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: [u8; 32], result: Value, ttl: Duration, now: Instant) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(key, (result, now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_ignore_meta_and_separate_callers() {
        let a = key(
            "s",
            Some("ann"),
            "tools/call",
            &json!({"name": "x", "_meta": {"progressToken": 1}}),
        );
        let b = key(
            "s",
            Some("ann"),
            "tools/call",
            &json!({"name": "x", "_meta": {"progressToken": 2}}),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            key("s", Some("bob"), "tools/call", &json!({"name": "x"}))
        );
        assert_ne!(a, key("s", None, "tools/call", &json!({"name": "x"})));
        assert_ne!(
            a,
            key("s", Some("ann"), "tools/call", &json!({"name": "y"}))
        );
    }

    #[test]
    fn the_backend_ttl_caps_and_errors_are_not_kept() {
        let minute = Duration::from_secs(60);
        assert_eq!(keep_for(&json!({"content": []}), minute), Some(minute));
        assert_eq!(
            keep_for(&json!({"contents": [], "ttlMs": 5000}), minute),
            Some(Duration::from_secs(5))
        );
        assert_eq!(keep_for(&json!({"contents": [], "ttlMs": 0}), minute), None);
        assert_eq!(
            keep_for(&json!({"content": [], "isError": true}), minute),
            None
        );
        assert!(private(&json!({"cacheScope": "private"})));
        assert!(!private(&json!({"cacheScope": "public"})));
    }

    #[test]
    fn entries_expire() {
        let cache = ResultCache::default();
        let now = Instant::now();
        let k = key("s", None, "resources/read", &json!({"uri": "a"}));
        cache.put(k, json!({"contents": [1]}), Duration::from_secs(1), now);
        assert_eq!(cache.get(&k, now), Some(json!({"contents": [1]})));
        assert_eq!(cache.get(&k, now + Duration::from_secs(2)), None);
    }
}
