//! Providers behind one interface, dispatched on `ModelProvider.spec.type`:
//! where a request goes (URL), how it is authenticated (bearer, API-key
//! header, AWS SigV4), whether it passes through or is translated, and how
//! the provider's answers and errors read back.
//!
//! A request whose client API the provider speaks natively (an OpenAI client
//! to an OpenAI-format provider, an Anthropic client to Anthropic) is passed
//! through with only the model rewritten: its messages are never parsed.
//! Anything else is translated through the canonical model in `tollgate-llm`.

pub mod fair;
pub mod health;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ::http::header::{ACCEPT, CONTENT_TYPE, HOST};
use ::http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use serde::de::IgnoredAny;
use tollgate_api::ProviderType;
use tollgate_config::snapshot::{AzureAuth, Principal, Provider};
use tollgate_llm::bedrock::sigv4::AwsCredentials;
use tollgate_llm::stream::StreamDecoder;
use tollgate_llm::{ChatRequest, ChatResponse, LlmError, Usage};

use self::fair::{FairLimiter, Permit, Refusal};
use self::http::{Clients, HttpClient, PermitRegistry, UpstreamError};
use crate::dialect::Endpoint;
use crate::error::ApiError;
use crate::metrics::{FairShareLabels, Metrics, ProviderLabels};

/// `anthropic-version` sent when neither the client nor the provider names one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Azure OpenAI `api-version` when the provider names none.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// The wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's API; `responses` says whether `/responses` exists too (OpenAI
    /// and the mock: yes; compatible servers: not assumed).
    OpenAi {
        responses: bool,
    },
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
}

impl Wire {
    pub fn of(provider_type: ProviderType) -> Self {
        match provider_type {
            ProviderType::OpenAI | ProviderType::Mock => Wire::OpenAi { responses: true },
            ProviderType::OpenAICompatible => Wire::OpenAi { responses: false },
            ProviderType::AzureOpenAI => Wire::Azure,
            ProviderType::Anthropic => Wire::Anthropic,
            ProviderType::Gemini => Wire::Gemini,
            ProviderType::Bedrock => Wire::Bedrock,
        }
    }
}

/// How one request reaches one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Same format on both sides: the body is forwarded with the model rewritten.
    Passthrough,
    /// Different formats: client → canonical → provider, and back.
    Translate,
    /// Answered by the gateway itself (token counting for providers that
    /// have no counting endpoint).
    Local,
}

#[derive(Clone)]
enum Auth {
    None,
    /// `Authorization: Bearer <key>`.
    Bearer(HeaderValue),
    /// A key in its own header (`api-key`, `x-api-key`, `x-goog-api-key`).
    Header(HeaderName, HeaderValue),
    /// AWS Signature Version 4 over each request.
    SigV4 {
        credentials: AwsCredentials,
        region: String,
    },
}

/// One provider of the running snapshot, ready to call.
pub struct Upstream {
    pub config: Provider,
    pub wire: Wire,
    clients: Clients,
    auth: Auth,
    /// `None` without `maxConcurrentRequests`: the uncapped path takes no lock.
    permits: Option<Arc<FairLimiter>>,
    /// Pre-parsed passthrough URLs of the OpenAI format (the hot path).
    chat_url: Option<Uri>,
    embeddings_url: Option<Uri>,
    /// This replica's requests in flight to the provider (balancing).
    in_flight: Arc<AtomicU32>,
}

/// One request in flight to a provider; dropping it ends it.
pub struct Flight(Arc<AtomicU32>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Requests of this replica the provider is answering now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_flight(&self) -> Flight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Flight(self.in_flight.clone())
    }

    pub fn new(
        config: Provider,
        clients: &Clients,
        permits: &PermitRegistry,
    ) -> Result<Self, UpstreamError> {
        let wire = Wire::of(config.provider_type);
        let auth = auth_for(&config, wire)?;
        let (chat_url, embeddings_url) = match wire {
            Wire::OpenAi { .. } => (
                Some(parse_uri(format!("{}/chat/completions", config.base_url))?),
                Some(parse_uri(format!("{}/embeddings", config.base_url))?),
            ),
            _ => {
                // Checked once here so a bad base URL is refused at load.
                parse_uri(config.base_url.clone())?;
                (None, None)
            }
        };
        Ok(Self {
            wire,
            clients: clients.clone(),
            auth,
            permits: permits.get(
                &config.name,
                config.max_concurrent_requests,
                config.fairness.max_share,
            ),
            chat_url,
            embeddings_url,
            in_flight: permits.in_flight(&config.name),
            config,
        })
    }

    /// A concurrency slot for `principal` (`Ok(None)`: the provider has no
    /// cap). `may_wait`: a caller under its fair share may queue up to the
    /// provider's `maxQueueWait`, bounded by `deadline`. Fairness refusals
    /// and queue waits are counted in `metrics`.
    pub async fn acquire(
        &self,
        principal: &Option<Arc<Principal>>,
        may_wait: bool,
        deadline: tokio::time::Instant,
        metrics: &Metrics,
    ) -> Result<Option<Permit>, Refusal> {
        let Some(limiter) = &self.permits else {
            return Ok(None);
        };
        let wait = if may_wait {
            Duration::from_millis(self.config.fairness.max_queue_wait_ms)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()))
        } else {
            Duration::ZERO
        };
        let acquired = limiter.acquire(principal.clone(), wait).await;
        if let Some(queued) = acquired.queued {
            metrics
                .fair_queue_wait
                .get_or_create(&ProviderLabels {
                    provider: self.config.name.clone(),
                })
                .observe(queued.as_secs_f64());
        }
        let refusal = match acquired.result {
            Ok(permit) => return Ok(Some(permit)),
            Err(refusal) => refusal,
        };
        let reason = match refusal {
            Refusal::Full => return Err(refusal),
            Refusal::MaxShare => "max_share",
            Refusal::QueueTimeout => "queue_timeout",
        };
        metrics
            .fair_share_rejections
            .get_or_create(&FairShareLabels {
                provider: self.config.name.clone(),
                reason,
            })
            .inc();
        Err(refusal)
    }

    /// This thread's pooled client for this provider.
    pub fn client(&self) -> HttpClient {
        self.clients
            .pooled(self.config.connect_timeout_ms, self.config.network)
    }

    /// How a request to `endpoint` reaches this provider.
    pub fn plan(&self, endpoint: Endpoint) -> Result<Plan, ApiError> {
        use Endpoint::*;
        Ok(match (self.wire, endpoint) {
            (Wire::OpenAi { .. }, ChatCompletions | Embeddings) => Plan::Passthrough,
            (Wire::OpenAi { responses: true }, Responses) => Plan::Passthrough,
            (Wire::Azure, ChatCompletions | Embeddings) => Plan::Passthrough,
            (Wire::Anthropic, Messages | CountTokens) => Plan::Passthrough,
            (_, Embeddings) => {
                return Err(ApiError::invalid_request(
                    "unsupported_endpoint",
                    format!(
                        "provider {} ({}) serves no embeddings through Tollgate",
                        self.config.name,
                        self.config.provider_type.as_str()
                    ),
                ));
            }
            (_, CountTokens) => Plan::Local,
            _ => Plan::Translate,
        })
    }

    /// The HTTP request for one attempt: URL, authentication and headers for
    /// `body`, which is already in this provider's format.
    pub fn request(
        &self,
        endpoint: Endpoint,
        plan: Plan,
        model: &str,
        stream: bool,
        body: Bytes,
        client_headers: &HeaderMap,
    ) -> Result<Request<Full<Bytes>>, ApiError> {
        let uri = self.url(endpoint, plan, model, stream)?;
        let mut builder = Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if self.wire == Wire::Anthropic {
            // A client speaking Anthropic chooses its API version and betas.
            let passthrough = plan == Plan::Passthrough;
            let version = client_headers
                .get("anthropic-version")
                .filter(|_| passthrough)
                .cloned()
                .or_else(|| {
                    let configured = self.config.api_version.as_deref();
                    HeaderValue::from_str(configured.unwrap_or(DEFAULT_ANTHROPIC_VERSION)).ok()
                });
            if let Some(version) = version {
                builder = builder.header("anthropic-version", version);
            }
            if passthrough {
                for beta in client_headers.get_all("anthropic-beta") {
                    builder = builder.header("anthropic-beta", beta.clone());
                }
            }
        }
        let request = builder
            .body(Full::new(body.clone()))
            .map_err(|e| ApiError::bad_gateway(format!("cannot build provider request: {e}")))?;
        self.authorized(request, &body)
    }

    /// `POST {base}/moderations` (the OpenAI moderation API) with `body`.
    pub fn moderation_request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, ApiError> {
        if !matches!(self.wire, Wire::OpenAi { .. }) {
            return Err(ApiError::bad_gateway(format!(
                "provider {} does not speak the OpenAI moderation API",
                self.config.name
            )));
        }
        let uri = format!("{}/moderations", self.config.base_url)
            .parse::<Uri>()
            .map_err(|_| bad_url())?;
        let request = Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| ApiError::bad_gateway(format!("cannot build provider request: {e}")))?;
        self.authorized(request, &body)
    }

    /// `request` with this provider's credentials: a header, or a SigV4
    /// signature over `body`.
    fn authorized(
        &self,
        mut request: Request<Full<Bytes>>,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, ApiError> {
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(value) => {
                request
                    .headers_mut()
                    .insert(::http::header::AUTHORIZATION, value.clone());
            }
            Auth::Header(name, value) => {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            Auth::SigV4 {
                credentials,
                region,
            } => {
                // Only signing needs the URI again; the common path moves it.
                let uri = request.uri().clone();
                let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                let signed_headers = [
                    ("host".to_string(), host.to_string()),
                    ("content-type".to_string(), "application/json".to_string()),
                ];
                let added = tollgate_llm::bedrock::sigv4::sign(
                    "POST",
                    &uri.to_string(),
                    &signed_headers,
                    body,
                    credentials,
                    region,
                    "bedrock",
                    std::time::SystemTime::now(),
                )
                .map_err(|e| {
                    ApiError::bad_gateway(format!("cannot sign the request: {}", e.message))
                })?;
                if let Ok(value) = HeaderValue::from_str(host) {
                    request.headers_mut().insert(HOST, value);
                }
                for (name, value) in added {
                    let (Ok(name), Ok(mut value)) =
                        (HeaderName::try_from(name), HeaderValue::from_str(&value))
                    else {
                        return Err(ApiError::bad_gateway("signing produced an invalid header"));
                    };
                    value.set_sensitive(true);
                    request.headers_mut().insert(name, value);
                }
            }
        }
        Ok(request)
    }

    fn url(
        &self,
        endpoint: Endpoint,
        plan: Plan,
        model: &str,
        stream: bool,
    ) -> Result<Uri, ApiError> {
        let base = &self.config.base_url;
        let text = match self.wire {
            Wire::OpenAi { .. } => match (plan, endpoint) {
                (Plan::Passthrough, Endpoint::Embeddings) => {
                    return self.embeddings_url.clone().ok_or_else(bad_url);
                }
                (Plan::Passthrough, Endpoint::Responses) => format!("{base}/responses"),
                _ => return self.chat_url.clone().ok_or_else(bad_url),
            },
            Wire::Azure => {
                let operation = if endpoint == Endpoint::Embeddings && plan == Plan::Passthrough {
                    "embeddings"
                } else {
                    "chat/completions"
                };
                let version = self
                    .config
                    .api_version
                    .as_deref()
                    .unwrap_or(DEFAULT_AZURE_API_VERSION);
                format!(
                    "{base}/openai/deployments/{}/{operation}?api-version={}",
                    percent_encode(model),
                    percent_encode(version)
                )
            }
            Wire::Anthropic => match endpoint {
                Endpoint::CountTokens => format!("{base}/messages/count_tokens"),
                _ => format!("{base}/messages"),
            },
            Wire::Gemini => format!(
                "{base}{}",
                tollgate_llm::gemini::request_path(model, stream)
            ),
            Wire::Bedrock => format!(
                "{base}{}",
                tollgate_llm::bedrock::converse::request_path(model, stream)
            ),
        };
        text.parse::<Uri>().map_err(|_| bad_url())
    }

    /// A canonical request in this provider's format.
    pub fn translate_request(
        &self,
        request: &ChatRequest,
        model: &str,
    ) -> Result<Vec<u8>, LlmError> {
        match self.wire {
            Wire::OpenAi { .. } | Wire::Azure => {
                Ok(tollgate_llm::openai::request_body(request, model))
            }
            Wire::Anthropic => tollgate_llm::anthropic::provider::request_body(request, model),
            Wire::Gemini => tollgate_llm::gemini::request_body(request, model),
            Wire::Bedrock => tollgate_llm::bedrock::converse::request_body(request),
        }
    }

    /// A count_tokens body in this provider's format, from the canonical
    /// request (a guarded one): only Anthropic counts remotely.
    pub fn translate_count_tokens(
        &self,
        request: &ChatRequest,
        model: &str,
    ) -> Result<Vec<u8>, LlmError> {
        match self.wire {
            Wire::Anthropic => tollgate_llm::anthropic::provider::count_tokens_body(request, model),
            _ => self.translate_request(request, model),
        }
    }

    /// A provider's full response in canonical form.
    pub fn translate_response(&self, body: &[u8], model: &str) -> Result<ChatResponse, LlmError> {
        match self.wire {
            Wire::OpenAi { .. } | Wire::Azure => tollgate_llm::openai::parse_response(body),
            Wire::Anthropic => tollgate_llm::anthropic::provider::parse_response(body),
            Wire::Gemini => tollgate_llm::gemini::parse_response(body, model),
            Wire::Bedrock => tollgate_llm::bedrock::converse::parse_response(body, model),
        }
    }

    /// The decoder for this provider's stream format; `headers` are the
    /// stream response's (Bedrock's request id names the stream).
    pub fn stream_decoder(&self, model: &str, headers: &HeaderMap) -> Box<dyn StreamDecoder> {
        match self.wire {
            Wire::OpenAi { .. } | Wire::Azure => {
                Box::<tollgate_llm::openai::ChatStreamDecoder>::default()
            }
            Wire::Anthropic => {
                Box::<tollgate_llm::anthropic::provider::MessagesStreamDecoder>::default()
            }
            Wire::Gemini => Box::new(tollgate_llm::gemini::GeminiStreamDecoder::new(model)),
            Wire::Bedrock => {
                let decoder = tollgate_llm::bedrock::stream::ConverseStreamDecoder::new(model);
                match headers
                    .get("x-amzn-requestid")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(id) => Box::new(decoder.with_id(id)),
                    None => Box::new(decoder),
                }
            }
        }
    }

    /// A provider's error answer, original message kept.
    pub fn translate_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> LlmError {
        match self.wire {
            Wire::OpenAi { .. } | Wire::Azure => tollgate_llm::openai::parse_error(status, body),
            Wire::Anthropic => tollgate_llm::anthropic::provider::parse_error(status, body),
            Wire::Gemini => tollgate_llm::gemini::parse_error(status, body),
            Wire::Bedrock => {
                let error_type = headers
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok());
                tollgate_llm::bedrock::converse::parse_error(status, error_type, body)
            }
        }
    }

    /// Usage of a passed-through full response, read without translating it.
    ///
    /// `Err` when the body is not JSON at all: a broken answer, which another
    /// backend may replace. Usually free: the usage parse reads the whole
    /// document, so only a body without readable usage is parsed again.
    pub fn passthrough_usage(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Option<Usage>, InvalidBody> {
        let usage = match endpoint {
            Endpoint::Messages => tollgate_llm::anthropic::provider::parse_response(body)
                .ok()
                .and_then(|r| r.usage),
            Endpoint::Responses => crate::llm::relay::responses_usage(body),
            Endpoint::CountTokens => None,
            Endpoint::ChatCompletions | Endpoint::Embeddings => crate::sse::usage_of_body(body),
        };
        if usage.is_none() && serde_json::from_slice::<IgnoredAny>(body).is_err() {
            return Err(InvalidBody);
        }
        Ok(usage)
    }

    /// Whether a 200 to a stream request is a stream in this provider's
    /// framing (a server that answers with one JSON document instead, or
    /// with something else, has not streamed). No `content-type`: trusted.
    pub fn is_stream_answer(&self, headers: &HeaderMap) -> bool {
        let expected: &[u8] = if self.wire == Wire::Bedrock {
            b"application/vnd.amazon.eventstream"
        } else {
            b"text/event-stream"
        };
        headers.get(CONTENT_TYPE).is_none_or(|value| {
            value
                .as_bytes()
                .get(..expected.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(expected))
        })
    }
}

/// A success body that is not the JSON document the API promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBody;

fn auth_for(config: &Provider, wire: Wire) -> Result<Auth, UpstreamError> {
    let header = |value: &str| {
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            UpstreamError::BadUrl("invalid characters in the provider credential".into())
        })?;
        value.set_sensitive(true);
        Ok::<_, UpstreamError>(value)
    };
    if wire == Wire::Bedrock {
        let Some(aws) = &config.aws else {
            return Ok(Auth::None);
        };
        return Ok(Auth::SigV4 {
            credentials: AwsCredentials {
                access_key_id: aws.access_key_id.0.clone(),
                secret_access_key: aws.secret_access_key.0.clone(),
                session_token: aws.session_token.as_ref().map(|t| t.0.clone()),
            },
            region: config.region.clone().unwrap_or_else(|| "us-east-1".into()),
        });
    }
    let Some(key) = &config.api_key else {
        return Ok(Auth::None);
    };
    Ok(match wire {
        Wire::Azure if config.azure_auth != Some(AzureAuth::EntraId) => {
            Auth::Header(HeaderName::from_static("api-key"), header(&key.0)?)
        }
        Wire::Anthropic => Auth::Header(HeaderName::from_static("x-api-key"), header(&key.0)?),
        Wire::Gemini => Auth::Header(HeaderName::from_static("x-goog-api-key"), header(&key.0)?),
        _ => Auth::Bearer(header(&format!("Bearer {}", key.0))?),
    })
}

fn parse_uri(text: String) -> Result<Uri, UpstreamError> {
    text.parse::<Uri>().map_err(|_| UpstreamError::BadUrl(text))
}

fn bad_url() -> ApiError {
    ApiError::bad_gateway("the provider URL is invalid")
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a model
/// or deployment name can never change the path.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
