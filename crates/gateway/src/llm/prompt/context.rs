//! Prompt context sources: text fetched from a URL or read from an MCP
//! server's resource, capped, kept for `cacheFor` and shared by every
//! request and route that names the same source and cap; text from a
//! ConfigMap came with the configuration and is used as it is. The IO edge
//! of the prompt stage.
//!
//! At most one fetch of a source runs at a time: requests that need a copy
//! wait for it, requests that hold a stale copy are served it while the
//! fetch runs. A failed refresh keeps the last copy serving; a source that
//! has never been fetched is not tried again for [`FAILURE_BACKOFF`] after
//! a failure, so an unreachable one does not hold every request up for its
//! timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tollgate_config::egress::EgressPolicy;
use tollgate_config::snapshot::prompt::{ContextFrom, ContextSource};

use crate::metrics::ContextFetchLabels;
use crate::providers::http::Clients;
use crate::runtime::Gateway;

/// How long a failed first fetch is remembered (at most `cacheFor`).
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Why a source could not be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the answer's status is {0}")]
    Status(u16),
    #[error("the body is not UTF-8 text")]
    NotText,
    #[error("the resource has no text contents")]
    NoTextContents,
    #[error("{0}")]
    Failed(String),
}

impl FetchError {
    fn outcome(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Status(_) => "status",
            FetchError::NotText | FetchError::NoTextContents | FetchError::Failed(_) => "error",
        }
    }
}

/// A source's text, and whether it is a stale copy served because its
/// refresh failed.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub text: Arc<str>,
    pub stale: bool,
}

/// Context copies by origin and cap (a URL's origin includes whether it
/// may reach loopback, so a source that may not never gets a copy one that
/// may fetched). Kept across reloads, like key sets.
#[derive(Default)]
pub struct ContextCache {
    slots: Mutex<HashMap<(ContextFrom, u64), Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    /// Held while a fetch runs.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    copy: Option<(Arc<str>, Instant)>,
    /// The last fetch failed, when, and why.
    failure: Option<(Instant, FetchError)>,
}

enum Cached {
    Fresh(Arc<str>),
    Stale(Arc<str>),
    RecentFailure(FetchError),
    Nothing,
}

impl Slot {
    fn look(&self, cache_for: Duration) -> Cached {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (&state.copy, &state.failure) {
            (Some((text, at)), _) if at.elapsed() < cache_for => Cached::Fresh(text.clone()),
            (Some((text, _)), _) => Cached::Stale(text.clone()),
            (None, Some((at, error))) if at.elapsed() < FAILURE_BACKOFF.min(cache_for) => {
                Cached::RecentFailure(error.clone())
            }
            (None, _) => Cached::Nothing,
        }
    }
}

impl ContextCache {
    /// Forgets the sources no longer configured (a reload); requests still
    /// using one keep their copy.
    pub fn retain<'a>(&self, sources: impl IntoIterator<Item = &'a ContextSource>) {
        let keep: std::collections::HashSet<(&ContextFrom, u64)> = sources
            .into_iter()
            .map(|s| (&s.from, s.max_bytes))
            .collect();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|(from, max_bytes), _| keep.contains(&(from, *max_bytes)));
    }

    /// The text of `source`: a fresh copy, else fetched now (or a stale copy
    /// while another request fetches, or when the fetch fails).
    pub async fn get(
        &self,
        source: &ContextSource,
        label: &Arc<str>,
        gateway: &Gateway,
    ) -> Result<Fetched, FetchError> {
        if let ContextFrom::Text { text, .. } = &source.from {
            return Ok(Fetched {
                text: Arc::from(text.as_str()),
                stale: false,
            });
        }
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .entry((source.from.clone(), source.max_bytes))
                .or_default()
                .clone()
        };
        let cache_for = Duration::from_millis(source.cache_for_ms);
        let stale = match slot.look(cache_for) {
            Cached::Fresh(text) => return Ok(Fetched { text, stale: false }),
            Cached::RecentFailure(error) => return Err(error),
            Cached::Stale(text) => Some(text),
            Cached::Nothing => None,
        };
        let _fetching = match (&stale, slot.fetching.try_lock()) {
            (_, Ok(guard)) => guard,
            // Someone is refreshing: the stale copy serves meanwhile.
            (Some(text), Err(_)) => {
                return Ok(Fetched {
                    text: text.clone(),
                    stale: true,
                });
            }
            // Someone is fetching the first copy: wait for it and use it.
            (None, Err(_)) => {
                let guard = slot.fetching.lock().await;
                match slot.look(cache_for) {
                    Cached::Fresh(text) => return Ok(Fetched { text, stale: false }),
                    Cached::RecentFailure(error) => return Err(error),
                    Cached::Stale(_) | Cached::Nothing => guard,
                }
            }
        };
        let result = match &source.from {
            ContextFrom::Url {
                url,
                allow_loopback,
            } => fetch(url, *allow_loopback, source, &gateway.clients).await,
            ContextFrom::McpResource { server, uri } => {
                read_resource(gateway, server, uri, source).await
            }
            ContextFrom::Text { text, .. } => Ok(text.clone()),
        };
        gateway
            .metrics
            .prompt_context_fetches
            .get_or_create(&ContextFetchLabels {
                source: label.clone(),
                outcome: result.as_ref().map_or_else(FetchError::outcome, |_| "ok"),
            })
            .inc();
        let mut state = slot.state.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(text) => {
                let text: Arc<str> = Arc::from(text);
                state.copy = Some((text.clone(), Instant::now()));
                state.failure = None;
                Ok(Fetched { text, stale: false })
            }
            Err(error) => {
                tracing::warn!(source = %label, %error, "prompt context fetch failed");
                state.failure = Some((Instant::now(), error.clone()));
                match stale {
                    Some(text) => Ok(Fetched { text, stale: true }),
                    None => Err(error),
                }
            }
        }
    }
}

/// A source as metrics and messages name it: a URL without user info and
/// query (which may carry credentials), `configmap/NAMESPACE/NAME/KEY`,
/// or `mcp:NAMESPACE/NAME:URI`.
pub fn source_label(from: &ContextFrom) -> Arc<str> {
    match from {
        ContextFrom::Url { url, .. } => url_label(url),
        ContextFrom::Text { origin, .. } => Arc::from(origin.as_str()),
        ContextFrom::McpResource { server, uri } => {
            let uri = uri.split_once('?').map_or(uri.as_str(), |(path, _)| path);
            Arc::from(format!("mcp:{server}:{uri}"))
        }
    }
}

fn url_label(url: &str) -> Arc<str> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Arc::from("");
    };
    let host = uri.authority().map_or("", |a| {
        let a = a.as_str();
        a.rsplit_once('@').map_or(a, |(_, host)| host)
    });
    Arc::from(format!(
        "{}://{host}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.path()
    ))
}

/// One `resources/read` of `uri` on MCPServer `server` (as the current
/// configuration has it), within the source's timeout and cap: the text
/// contents joined with blank lines.
async fn read_resource(
    gateway: &Gateway,
    server: &str,
    uri: &str,
    source: &ContextSource,
) -> Result<String, FetchError> {
    let runtime = gateway
        .runtime()
        .ok_or_else(|| FetchError::Failed("the gateway has no configuration".into()))?;
    let server = runtime
        .snapshot
        .config
        .mcp_servers
        .iter()
        .find(|s| &*s.name == server)
        .ok_or_else(|| FetchError::Failed(format!("MCPServer {server} is not served")))?;
    let result = tokio::time::timeout(
        Duration::from_millis(source.timeout_ms),
        crate::mcp::read_resource(gateway, server, uri),
    )
    .await
    .map_err(|_| FetchError::Timeout(source.timeout_ms))?
    .map_err(FetchError::Failed)?;
    resource_text(&result, source.max_bytes)
}

/// The text contents of a `resources/read` result, joined with blank
/// lines, at most `max_bytes` in all.
fn resource_text(result: &serde_json::Value, max_bytes: u64) -> Result<String, FetchError> {
    let texts: Vec<&str> = result
        .get("contents")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|content| content.get("text")?.as_str())
        .collect();
    if texts.is_empty() {
        return Err(FetchError::NoTextContents);
    }
    let text = texts.join("\n\n");
    if text.len() as u64 > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    Ok(text)
}

/// One GET of `url`, within the source's timeout and cap.
async fn fetch(
    url: &str,
    allow_loopback: bool,
    source: &ContextSource,
    clients: &Clients,
) -> Result<String, FetchError> {
    let failed = |e: String| FetchError::Failed(e);
    // Cloud metadata never; loopback (the gateway's own ports) only when
    // the source says so.
    let policy = EgressPolicy {
        allow_loopback,
        allow_link_local: false,
    };
    let uri = crate::providers::http::reachable_uri(url, policy)
        .map_err(|why| failed(format!("{why} (allowLoopback allows loopback)")))?;
    let client = clients.pooled(source.timeout_ms, policy);
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, "text/plain, text/markdown, */*")
        .body(http_body_util::Full::new(Bytes::new()))
        .map_err(|e| failed(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_millis(source.timeout_ms);
    let response = crate::providers::http::send(client, request, deadline)
        .await
        .map_err(|e| match e {
            crate::providers::http::UpstreamError::Timeout => {
                FetchError::Timeout(source.timeout_ms)
            }
            other => failed(other.to_string()),
        })?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > source.max_bytes) {
        return Err(FetchError::TooLarge(source.max_bytes));
    }
    let limit = usize::try_from(source.max_bytes).unwrap_or(usize::MAX);
    let body = tokio::time::timeout_at(
        deadline,
        Limited::new(response.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| FetchError::Timeout(source.timeout_ms))?
    .map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            FetchError::TooLarge(source.max_bytes)
        } else {
            failed(crate::providers::http::error_chain(&*e))
        }
    })?
    .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| FetchError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_forgets_sources_no_longer_configured() {
        let url = |url: &str| ContextFrom::Url {
            url: url.into(),
            allow_loopback: false,
        };
        let mcp = ContextFrom::McpResource {
            server: "default/docs".into(),
            uri: "docs://a".into(),
        };
        let source = |from: ContextFrom, max_bytes| ContextSource {
            from,
            max_bytes,
            timeout_ms: 1,
            cache_for_ms: 1,
            role: tollgate_api::prompt::PromptRole::System,
            required: true,
        };
        let cache = ContextCache::default();
        for (from, max) in [
            (url("http://a/1"), 10),
            (url("http://a/1"), 20),
            (url("http://b/2"), 10),
            (mcp.clone(), 10),
        ] {
            cache
                .slots
                .lock()
                .unwrap()
                .insert((from, max), Arc::default());
        }
        cache.retain([&source(url("http://a/1"), 20), &source(mcp.clone(), 10)]);
        let slots = cache.slots.lock().unwrap();
        let mut kept: Vec<_> = slots
            .keys()
            .map(|(from, max)| (source_label(from), *max))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                (Arc::from("http://a/1"), 20),
                (Arc::from("mcp:default/docs:docs://a"), 10)
            ]
        );
    }

    #[test]
    fn labels_drop_credentials_and_queries() {
        let url = |url: &str| ContextFrom::Url {
            url: url.into(),
            allow_loopback: true,
        };
        assert_eq!(
            &*source_label(&url(
                "https://docs.example.com:8443/policy.txt?token=s3cret"
            )),
            "https://docs.example.com:8443/policy.txt"
        );
        assert_eq!(
            &*source_label(&url("http://127.0.0.1:8000/p")),
            "http://127.0.0.1:8000/p"
        );
        let mcp = ContextFrom::McpResource {
            server: "team/docs".into(),
            uri: "docs://handbook?token=x".into(),
        };
        assert_eq!(&*source_label(&mcp), "mcp:team/docs:docs://handbook");
    }

    #[test]
    fn resource_text_joins_text_contents_within_the_cap() {
        let result = serde_json::json!({"contents": [
            {"uri": "docs://a", "mimeType": "text/markdown", "text": "first"},
            {"uri": "docs://a.png", "mimeType": "image/png", "blob": "iVBORw0KGgo="},
            {"uri": "docs://b", "text": "second"}
        ]});
        assert_eq!(resource_text(&result, 100).unwrap(), "first\n\nsecond");
        assert_eq!(resource_text(&result, 10), Err(FetchError::TooLarge(10)));
        let binary = serde_json::json!({"contents": [{"uri": "x", "blob": "AAAA"}]});
        assert_eq!(resource_text(&binary, 100), Err(FetchError::NoTextContents));
        assert_eq!(
            resource_text(&serde_json::json!({}), 100),
            Err(FetchError::NoTextContents)
        );
    }
}
