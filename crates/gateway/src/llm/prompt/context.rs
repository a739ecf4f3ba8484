//! Prompt context sources: text fetched from a URL, capped, kept for
//! `cacheFor` and shared by every request and route that names the same
//! URL and cap. The IO edge of the prompt stage.
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
use tollgate_config::snapshot::prompt::ContextSource;

use crate::metrics::{ContextFetchLabels, Metrics};
use crate::providers::http::Clients;

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
    #[error("{0}")]
    Failed(String),
}

impl FetchError {
    fn outcome(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Status(_) => "status",
            FetchError::NotText | FetchError::Failed(_) => "error",
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

/// Context copies by (URL, cap, loopback allowed): a source that may not
/// reach loopback never gets a copy one that may fetched. Kept across
/// reloads, like key sets.
#[derive(Default)]
pub struct ContextCache {
    slots: Mutex<HashMap<(String, u64, bool), Arc<Slot>>>,
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
        let keep: std::collections::HashSet<(&str, u64, bool)> = sources
            .into_iter()
            .map(|s| (s.url.as_str(), s.max_bytes, s.allow_loopback))
            .collect();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|(url, max_bytes, loopback), _| {
            keep.contains(&(url.as_str(), *max_bytes, *loopback))
        });
    }

    /// The text of `source`: a fresh copy, else fetched now (or a stale copy
    /// while another request fetches, or when the fetch fails).
    pub async fn get(
        &self,
        source: &ContextSource,
        label: &Arc<str>,
        clients: &Clients,
        metrics: &Metrics,
    ) -> Result<Fetched, FetchError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .entry((source.url.clone(), source.max_bytes, source.allow_loopback))
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
        let result = fetch(source, clients).await;
        metrics
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

/// The URL as metrics and messages name it: without user info and query,
/// which may carry credentials.
pub fn source_label(url: &str) -> Arc<str> {
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

/// One GET of `source`, within its timeout and cap.
async fn fetch(source: &ContextSource, clients: &Clients) -> Result<String, FetchError> {
    let failed = |e: String| FetchError::Failed(e);
    // Cloud metadata never; loopback (the gateway's own ports) only when
    // the source says so.
    let policy = EgressPolicy {
        allow_loopback: source.allow_loopback,
        allow_link_local: false,
    };
    let uri = crate::providers::http::reachable_uri(&source.url, policy)
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
        let source = |url: &str, max_bytes| ContextSource {
            url: url.into(),
            max_bytes,
            timeout_ms: 1,
            cache_for_ms: 1,
            role: tollgate_api::prompt::PromptRole::System,
            required: true,
            allow_loopback: false,
        };
        let cache = ContextCache::default();
        for (url, max) in [("http://a/1", 10), ("http://a/1", 20), ("http://b/2", 10)] {
            cache
                .slots
                .lock()
                .unwrap()
                .insert((url.to_string(), max, false), Arc::default());
        }
        cache.retain([&source("http://a/1", 20)]);
        let slots = cache.slots.lock().unwrap();
        assert_eq!(
            slots.keys().collect::<Vec<_>>(),
            [&("http://a/1".to_string(), 20, false)]
        );
    }

    #[test]
    fn labels_drop_credentials_and_queries() {
        assert_eq!(
            &*source_label("https://docs.example.com:8443/policy.txt?token=s3cret"),
            "https://docs.example.com:8443/policy.txt"
        );
        assert_eq!(
            &*source_label("http://127.0.0.1:8000/p"),
            "http://127.0.0.1:8000/p"
        );
    }
}
