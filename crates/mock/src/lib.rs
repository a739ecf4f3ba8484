//! `tollgate-mock`: a fast, deterministic stand-in for LLM providers.
//!
//! Speaks each provider's wire format, JSON and streams, over HTTP/1.1 and h2c:
//! - OpenAI: `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/models`;
//! - Azure OpenAI: `/openai/deployments/{d}/chat/completions|embeddings?api-version=`
//!   and `/openai/v1/chat/completions|embeddings`;
//! - Anthropic: `/v1/messages`, `/v1/messages/count_tokens`;
//! - Gemini: `/v1beta/models/{m}:generateContent|streamGenerateContent|countTokens|embedContent`;
//! - Bedrock Runtime: `/model/{id}/converse`, `/model/{id}/converse-stream`
//!   (AWS event-stream framing).
//!
//! Each checks credentials like the real provider when its key flag is set
//! (Bedrock: a recomputed SigV4 signature). Latency, errors and disconnects
//! are configurable server-wide (flags) and per request, through
//! `x-mock-<name>` headers or a `[mock key=value ...]` directive in the last
//! user message (directive > header > flag). Keys: `ttft_ms`,
//! `token_delay_ms`, `tokens`, `header_delay_ms`, `disconnect_after`,
//! `status`, `error_rate`, `error_status`, `parallel_tools` (tool calls made
//! at once), `stream_error_after` (in-band stream error after N events:
//! Anthropic/Responses `error` event, Gemini error element, Bedrock
//! exception frame; the chat stream ignores it), `fail_times` (only the
//! first N requests with the same body get the injected error: a transient
//! fault a retry gets past). `--context-window N` refuses longer requests
//! with OpenAI's `context_length_exceeded`. Errors come in each
//! provider's own shape. Offering tools makes every format call one (unless
//! the request answers a tool result or disables tools).

mod anthropic;
mod api_error;
mod auth;
mod bedrock;
mod body;
mod config;
mod gemini;
mod mcp;
mod openai;
mod plan;
mod request;
mod responses;
mod server;
mod sigv4;
mod text;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{AuthConfig, AwsCredentials, McpEra, MockArgs, MockConfig};
pub use server::serve;

/// Failures of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot announce listening address: {0}")]
    Announce(#[source] std::io::Error),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("MCP stdio server failed: {0}")]
    Stdio(#[source] std::io::Error),
}

/// Binds `args.listen`, prints `listening data=http://ADDR` on stdout, and
/// serves until SIGTERM or SIGINT, then drains in-flight requests. With
/// `--mcp-stdio`, serves the MCP server on stdin and stdout instead, until
/// stdin ends or a signal comes.
pub async fn run(args: MockArgs) -> Result<(), MockError> {
    if args.mcp_stdio {
        let shutdown = shutdown_signal().map_err(MockError::Signal)?;
        return tokio::select! {
            result = mcp::serve_stdio() => result.map_err(MockError::Stdio),
            () = shutdown => Ok(()),
        };
    }
    let config = Arc::new(args.config());
    let shutdown = shutdown_signal().map_err(MockError::Signal)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MockError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(MockError::Announce)?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening data=http://{addr}")
            .and_then(|()| stdout.flush())
            .map_err(MockError::Announce)?;
    }
    tracing::info!(%addr, "tollgate-mock listening");
    serve(listener, config, shutdown)
        .await
        .map_err(MockError::Serve)
}

/// Resolves on the first SIGTERM or SIGINT. Handlers are installed before
/// returning so a signal arriving right after startup is not missed.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::warn!(%err, "ctrl-c handler failed; shutting down");
            }
        })
    }
}
