//! Command-line flags, the server configuration, and per-request behaviour
//! overrides (`x-mock-*` headers and `[mock key=value ...]` directives).

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderMap;

/// Upper bound for any delay, so a typo cannot park a connection for hours.
const MAX_DELAY_MS: u64 = 600_000;
/// Upper bound for generated tokens; streams are rendered up front.
pub(crate) const MAX_OUTPUT_TOKENS: u32 = 100_000;

/// Flags of `tollgate mock`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on; port 0 picks a free port (the printed line shows it).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Time to first token in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=MAX_DELAY_MS))]
    pub ttft_ms: u64,

    /// Delay between streamed tokens in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=MAX_DELAY_MS))]
    pub token_delay_ms: u64,

    /// Tokens (words) generated per completion, before `max_tokens` caps it.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(..=i64::from(MAX_OUTPUT_TOKENS)))]
    pub output_tokens: u32,

    /// Fraction of requests (0.0-1.0) answered with `--error-status`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// Status code of errors injected by `--error-rate`.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(400..=599))]
    pub error_status: u16,

    /// Delay before sending response headers ("slow headers"), in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=MAX_DELAY_MS))]
    pub header_delay_ms: u64,

    /// Abort streamed responses after this many chunks (default: never).
    #[arg(long)]
    pub disconnect_after: Option<u32>,

    /// Refuse requests longer than this many tokens (a body's bytes / 4)
    /// with the provider's context-length error (default: no limit).
    #[arg(long)]
    pub context_window: Option<u64>,

    /// Model ids listed by GET /v1/models (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mock-chat,mock-embed,mock-claude,mock-gemini,mock-bedrock"
    )]
    pub models: Vec<String>,

    /// OpenAI key: when set, `Authorization: Bearer <key>` is required on /v1 OpenAI routes.
    #[arg(long, env = "MOCK_OPENAI_KEY")]
    pub openai_key: Option<String>,

    /// Azure OpenAI key: when set, `api-key: <key>` or `Authorization: Bearer <key>` is required.
    #[arg(long, env = "MOCK_AZURE_KEY")]
    pub azure_key: Option<String>,

    /// Anthropic key: when set, `x-api-key: <key>` is required on /v1/messages.
    #[arg(long, env = "MOCK_ANTHROPIC_KEY")]
    pub anthropic_key: Option<String>,

    /// MCP key: when set, `Authorization: Bearer <key>` is required on /mcp.
    #[arg(long, env = "MOCK_MCP_KEY")]
    pub mcp_key: Option<String>,

    /// Serve only the mock MCP server, over stdin and stdout (the MCP stdio
    /// transport: one JSON-RPC message per line) instead of HTTP; exit when
    /// stdin ends. Logs go to stderr.
    #[arg(long)]
    pub mcp_stdio: bool,

    /// Gemini key: when set, `x-goog-api-key` or `?key=` must carry it.
    #[arg(long, env = "MOCK_GEMINI_KEY")]
    pub gemini_key: Option<String>,

    /// Bedrock access key id: with the secret, SigV4 signatures are verified.
    #[arg(
        long,
        env = "MOCK_BEDROCK_ACCESS_KEY_ID",
        requires = "bedrock_secret_access_key"
    )]
    pub bedrock_access_key_id: Option<String>,

    /// Bedrock secret access key used to recompute SigV4 signatures.
    #[arg(
        long,
        env = "MOCK_BEDROCK_SECRET_ACCESS_KEY",
        requires = "bedrock_access_key_id"
    )]
    pub bedrock_secret_access_key: Option<String>,

    /// Bedrock session token: when set, `x-amz-security-token` must match it.
    #[arg(long, env = "MOCK_BEDROCK_SESSION_TOKEN")]
    pub bedrock_session_token: Option<String>,

    /// Region Bedrock signatures are scoped to.
    #[arg(long, default_value = "us-east-1")]
    pub bedrock_region: String,

    /// Seed: makes `--error-rate` draws deterministic per request body and
    /// varies generated text.
    #[arg(long)]
    pub seed: Option<u64>,

    /// How long to let in-flight requests finish after SIGTERM/SIGINT, in seconds.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// A JSON array of extra MCP tools listed after the built-in ones, read
    /// again on every `tools/list` (so a test can change the catalog while
    /// the mock runs); a missing file lists none.
    #[arg(long)]
    pub mcp_tools_file: Option<std::path::PathBuf>,

    /// Which MCP revisions the mock MCP server speaks: `both` (default),
    /// `legacy` (2025-11-25 and earlier only: `initialize` and sessions;
    /// modern requests are refused as a legacy server refuses them) or
    /// `modern` (2026-07-28 only: `initialize` is refused with 400).
    #[arg(long, value_enum, default_value_t = McpEra::Both)]
    pub mcp_era: McpEra,
}

/// Which MCP revisions the mock speaks (`--mcp-era`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum McpEra {
    #[default]
    Both,
    Legacy,
    Modern,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not within 0.0..=1.0"))
    }
}

impl MockArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> MockConfig {
        MockConfig {
            listen: self.listen,
            ttft: Duration::from_millis(self.ttft_ms),
            token_delay: Duration::from_millis(self.token_delay_ms),
            output_tokens: self.output_tokens,
            error_rate: self.error_rate,
            error_status: self.error_status,
            header_delay: Duration::from_millis(self.header_delay_ms),
            disconnect_after: self.disconnect_after,
            context_window: self.context_window,
            models: self
                .models
                .iter()
                .map(|m| m.trim())
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            seed: self.seed,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            mcp_tools_file: self.mcp_tools_file.clone(),
            mcp_era: self.mcp_era,
            auth: AuthConfig {
                openai_key: self.openai_key.clone(),
                azure_key: self.azure_key.clone(),
                anthropic_key: self.anthropic_key.clone(),
                mcp_key: self.mcp_key.clone(),
                gemini_key: self.gemini_key.clone(),
                bedrock: match (&self.bedrock_access_key_id, &self.bedrock_secret_access_key) {
                    (Some(id), Some(secret)) => Some(AwsCredentials {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: self.bedrock_session_token.clone(),
                    }),
                    _ => None,
                },
                bedrock_region: self.bedrock_region.clone(),
            },
        }
    }
}

/// Server-wide defaults; each request may override the behaviour fields.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    pub listen: SocketAddr,
    pub ttft: Duration,
    pub token_delay: Duration,
    pub output_tokens: u32,
    /// Probability in `0.0..=1.0` of answering with `error_status`.
    pub error_rate: f64,
    pub error_status: u16,
    pub header_delay: Duration,
    pub disconnect_after: Option<u32>,
    pub context_window: Option<u64>,
    pub models: Vec<String>,
    pub seed: Option<u64>,
    pub drain_timeout: Duration,
    pub mcp_tools_file: Option<std::path::PathBuf>,
    pub mcp_era: McpEra,
    pub auth: AuthConfig,
}

/// Credentials each provider's endpoints check; `None` accepts anything.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub openai_key: Option<String>,
    pub azure_key: Option<String>,
    pub anthropic_key: Option<String>,
    pub mcp_key: Option<String>,
    pub gemini_key: Option<String>,
    pub bedrock: Option<AwsCredentials>,
    pub bedrock_region: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            openai_key: None,
            azure_key: None,
            anthropic_key: None,
            mcp_key: None,
            gemini_key: None,
            bedrock: None,
            bedrock_region: "us-east-1".to_owned(),
        }
    }
}

/// The AWS identity Bedrock requests must be signed with.
#[derive(Clone, PartialEq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Keeps the secret out of logs.
impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            ttft: Duration::ZERO,
            token_delay: Duration::ZERO,
            output_tokens: 16,
            error_rate: 0.0,
            error_status: 500,
            header_delay: Duration::ZERO,
            disconnect_after: None,
            context_window: None,
            models: [
                "mock-chat",
                "mock-embed",
                "mock-claude",
                "mock-gemini",
                "mock-bedrock",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            seed: None,
            drain_timeout: Duration::from_secs(10),
            mcp_tools_file: None,
            mcp_era: McpEra::Both,
            auth: AuthConfig::default(),
        }
    }
}

/// A rejected override, reported to the client as a 400.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OverrideError {
    #[error("unknown mock override `{0}`")]
    UnknownKey(String),
    #[error("invalid value `{value}` for mock override `{key}`: {reason}")]
    InvalidValue {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("malformed mock directive entry `{0}` (expected key=value)")]
    Malformed(String),
}

/// The effective behaviour of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Behavior {
    pub ttft: Duration,
    pub token_delay: Duration,
    pub output_tokens: u32,
    pub header_delay: Duration,
    pub disconnect_after: Option<u32>,
    /// Forced status: 2xx forces success, 4xx/5xx forces that error.
    pub status: Option<u16>,
    pub error_rate: f64,
    pub error_status: u16,
    /// Tools called at once when the mock decides to call tools (parallel calls).
    pub parallel_tools: u32,
    /// Streams that support in-band errors (Anthropic and Responses `error`
    /// events, Gemini error elements, Bedrock exception frames) fail after
    /// this many events.
    pub stream_error_after: Option<u32>,
    /// Only the first this-many requests with the same body fail as
    /// `status` or `error_rate` say; later ones succeed (a transient fault
    /// a retry gets past).
    pub fail_times: Option<u32>,
    /// The answer repeats the last user message (directives removed), so a
    /// test sees what reached the provider: what a gateway rewrote in the
    /// prompt, and what it does to an answer containing given text.
    pub echo: bool,
}

/// Upper bound for `parallel_tools`.
const MAX_PARALLEL_TOOLS: u32 = 64;

#[derive(Debug, Clone, Copy)]
enum Key {
    TtftMs,
    TokenDelayMs,
    Tokens,
    HeaderDelayMs,
    DisconnectAfter,
    Status,
    ErrorRate,
    ErrorStatus,
    ParallelTools,
    StreamErrorAfter,
    FailTimes,
    Echo,
}

/// Accepted spellings; `-` and `_` are interchangeable (headers use dashes).
const KEYS: [(&str, Key); 13] = [
    ("ttft_ms", Key::TtftMs),
    ("token_delay_ms", Key::TokenDelayMs),
    ("tokens", Key::Tokens),
    ("output_tokens", Key::Tokens),
    ("header_delay_ms", Key::HeaderDelayMs),
    ("disconnect_after", Key::DisconnectAfter),
    ("status", Key::Status),
    ("error_status", Key::ErrorStatus),
    ("error_rate", Key::ErrorRate),
    ("parallel_tools", Key::ParallelTools),
    ("stream_error_after", Key::StreamErrorAfter),
    ("fail_times", Key::FailTimes),
    ("echo", Key::Echo),
];

fn lookup_key(raw: &str) -> Option<(&'static str, Key)> {
    KEYS.iter()
        .find(|(name, _)| {
            name.len() == raw.len()
                && name.bytes().zip(raw.bytes()).all(|(n, r)| {
                    let r = if r == b'-' {
                        b'_'
                    } else {
                        r.to_ascii_lowercase()
                    };
                    n == r
                })
        })
        .copied()
}

impl Behavior {
    pub(crate) fn from_config(config: &MockConfig) -> Self {
        Self {
            ttft: config.ttft,
            token_delay: config.token_delay,
            output_tokens: config.output_tokens,
            header_delay: config.header_delay,
            disconnect_after: config.disconnect_after,
            status: None,
            error_rate: config.error_rate,
            error_status: config.error_status,
            parallel_tools: 1,
            stream_error_after: None,
            fail_times: None,
            echo: false,
        }
    }

    /// Applies every `x-mock-<name>` request header.
    pub(crate) fn apply_headers(&mut self, headers: &HeaderMap) -> Result<(), OverrideError> {
        for (name, value) in headers {
            let Some(key) = name.as_str().strip_prefix("x-mock-") else {
                continue;
            };
            let value = value.to_str().map_err(|_| OverrideError::InvalidValue {
                key: "header",
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                reason: "not visible ASCII",
            })?;
            self.apply(key, value.trim())?;
        }
        Ok(())
    }

    /// Applies every `[mock key=value ...]` directive found in `text`, in order.
    pub(crate) fn apply_directives(&mut self, text: &str) -> Result<(), OverrideError> {
        const OPEN: &str = "[mock";
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            let after = &rest[start + OPEN.len()..];
            // `[mockingbird]` is prose, not a directive.
            if !after.starts_with(|c: char| c.is_whitespace() || c == ']') {
                rest = after;
                continue;
            }
            let Some(end) = after.find(']') else { break };
            for entry in after[..end].split_whitespace() {
                let (key, value) = entry
                    .split_once('=')
                    .ok_or_else(|| OverrideError::Malformed(entry.to_owned()))?;
                self.apply(key, value)?;
            }
            rest = &after[end + 1..];
        }
        Ok(())
    }

    fn apply(&mut self, raw_key: &str, value: &str) -> Result<(), OverrideError> {
        let (name, key) =
            lookup_key(raw_key).ok_or_else(|| OverrideError::UnknownKey(raw_key.to_owned()))?;
        let invalid = |reason| OverrideError::InvalidValue {
            key: name,
            value: value.to_owned(),
            reason,
        };
        let millis = || -> Result<Duration, OverrideError> {
            match value.parse::<u64>() {
                Ok(ms) if ms <= MAX_DELAY_MS => Ok(Duration::from_millis(ms)),
                _ => Err(invalid("expected milliseconds in 0..=600000")),
            }
        };
        match key {
            Key::TtftMs => self.ttft = millis()?,
            Key::TokenDelayMs => self.token_delay = millis()?,
            Key::HeaderDelayMs => self.header_delay = millis()?,
            Key::Tokens => {
                self.output_tokens = match value.parse::<u32>() {
                    Ok(n) if n <= MAX_OUTPUT_TOKENS => n,
                    _ => return Err(invalid("expected a token count in 0..=100000")),
                }
            }
            Key::DisconnectAfter => {
                self.disconnect_after = match value {
                    "off" | "none" | "never" => None,
                    _ => Some(
                        value
                            .parse()
                            .map_err(|_| invalid("expected a chunk count or `off`"))?,
                    ),
                }
            }
            Key::Status => {
                self.status = match value.parse::<u16>() {
                    Ok(s) if (200..=299).contains(&s) || (400..=599).contains(&s) => Some(s),
                    _ => return Err(invalid("expected 2xx (force success) or 400..=599")),
                }
            }
            Key::ErrorStatus => {
                self.error_status = match value.parse::<u16>() {
                    Ok(s) if (400..=599).contains(&s) => s,
                    _ => return Err(invalid("expected 400..=599")),
                }
            }
            Key::ParallelTools => {
                self.parallel_tools = match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_PARALLEL_TOOLS).contains(&n) => n,
                    _ => return Err(invalid("expected a tool count in 1..=64")),
                }
            }
            Key::StreamErrorAfter => {
                self.stream_error_after = match value {
                    "off" | "none" | "never" => None,
                    _ => Some(
                        value
                            .parse()
                            .map_err(|_| invalid("expected an event count or `off`"))?,
                    ),
                }
            }
            Key::FailTimes => {
                self.fail_times = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("expected a request count"))?,
                )
            }
            Key::ErrorRate => {
                self.error_rate = parse_rate(value).map_err(|_| invalid("expected 0.0..=1.0"))?
            }
            Key::Echo => {
                self.echo = match value {
                    "1" | "true" | "on" => true,
                    "0" | "false" | "off" => false,
                    _ => return Err(invalid("expected 1 or 0")),
                }
            }
        }
        Ok(())
    }
}

/// `texts` joined with `[mock ...]` directives removed and whitespace
/// trimmed: what an `echo=1` answer says.
pub(crate) fn echo_text<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for text in texts {
        let mut rest = text;
        while let Some(start) = rest.find("[mock") {
            let after = &rest[start + 5..];
            match after.find(']') {
                Some(end) if after.starts_with(|c: char| c.is_whitespace() || c == ']') => {
                    out.push_str(&rest[..start]);
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str(&rest[..start + 5]);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use http::HeaderValue;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockArgs,
    }

    #[test]
    fn defaults_match_between_flags_and_config() {
        let cli = Cli::try_parse_from(["mock"]).unwrap();
        assert_eq!(cli.args.config(), MockConfig::default());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "mock",
            "--listen",
            "127.0.0.1:0",
            "--ttft-ms",
            "5",
            "--error-rate",
            "0.5",
            "--error-status",
            "503",
            "--disconnect-after",
            "3",
            "--models",
            "a, b,c",
            "--seed",
            "9",
        ])
        .unwrap();
        let config = cli.args.config();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.ttft, Duration::from_millis(5));
        assert_eq!(config.error_rate, 0.5);
        assert_eq!(config.error_status, 503);
        assert_eq!(config.disconnect_after, Some(3));
        assert_eq!(config.models, ["a", "b", "c"]);
        assert_eq!(config.seed, Some(9));
        assert!(Cli::try_parse_from(["mock", "--error-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--error-status", "200"]).is_err());
    }

    #[test]
    fn auth_flags_parse() {
        let cli = Cli::try_parse_from([
            "mock",
            "--openai-key",
            "sk",
            "--gemini-key",
            "g",
            "--bedrock-access-key-id",
            "AKID",
            "--bedrock-secret-access-key",
            "secret",
            "--bedrock-region",
            "eu-west-1",
        ])
        .unwrap();
        let auth = cli.args.config().auth;
        assert_eq!(auth.openai_key.as_deref(), Some("sk"));
        assert_eq!(auth.gemini_key.as_deref(), Some("g"));
        assert_eq!(auth.bedrock_region, "eu-west-1");
        let creds = auth.bedrock.unwrap();
        assert_eq!(creds.access_key_id, "AKID");
        assert!(!format!("{creds:?}").contains("secret"));
        // A key id without its secret is refused.
        assert!(Cli::try_parse_from(["mock", "--bedrock-access-key-id", "AKID"]).is_err());
    }

    #[test]
    fn parallel_and_stream_error_keys() {
        let mut b = Behavior::from_config(&MockConfig::default());
        b.apply_directives("[mock parallel_tools=3 stream_error_after=2]")
            .unwrap();
        assert_eq!((b.parallel_tools, b.stream_error_after), (3, Some(2)));
        assert!(b.apply_directives("[mock parallel_tools=0]").is_err());
        b.apply_directives("[mock stream_error_after=off]").unwrap();
        assert_eq!(b.stream_error_after, None);
    }

    #[test]
    fn echo_text_drops_directives_only() {
        assert_eq!(
            echo_text([
                "card 4111 1111 [mock echo=1]  ok",
                " [mockingbird] <EMAIL_1>"
            ]),
            "card 4111 1111 ok [mockingbird] <EMAIL_1>"
        );
    }

    #[test]
    fn directive_overrides_headers() {
        let mut b = Behavior::from_config(&MockConfig::default());
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-ttft-ms", HeaderValue::from_static("100"));
        headers.insert("x-mock-tokens", HeaderValue::from_static("4"));
        headers.insert("x-other", HeaderValue::from_static("ignored"));
        b.apply_headers(&headers).unwrap();
        b.apply_directives("hi [mockingbird] [mock ttft_ms=200 status=503 disconnect_after=3] bye")
            .unwrap();
        assert_eq!(b.ttft, Duration::from_millis(200));
        assert_eq!(b.output_tokens, 4);
        assert_eq!(b.status, Some(503));
        assert_eq!(b.disconnect_after, Some(3));
        b.apply_directives("[mock disconnect_after=off]").unwrap();
        assert_eq!(b.disconnect_after, None);
    }

    #[test]
    fn bad_overrides_are_rejected() {
        let mut b = Behavior::from_config(&MockConfig::default());
        assert!(b.apply_directives("[mock ttft_ms=abc]").is_err());
        assert!(b.apply_directives("[mock bogus=1]").is_err());
        assert!(b.apply_directives("[mock status]").is_err());
        assert!(b.apply_directives("[mock status=302]").is_err());
        assert!(b.apply_directives("[mock tokens=100001]").is_err());
        // An unterminated directive is prose.
        assert!(b.apply_directives("[mock ttft_ms=abc").is_ok());
    }
}
