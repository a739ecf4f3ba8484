//! Client APIs ("dialects"): which endpoint a request came to, and how to
//! answer in its shape. The wire formats themselves live in `tollgate-llm`;
//! this is the gateway's dispatch over them.
//!
//! | Endpoint | Path | Errors |
//! | --- | --- | --- |
//! | `ChatCompletions` | `POST /v1/chat/completions` | OpenAI error object |
//! | `Responses` | `POST /v1/responses` | OpenAI error object |
//! | `Embeddings` | `POST /v1/embeddings` | OpenAI error object |
//! | `Messages` | `POST /v1/messages` | Anthropic error object |
//! | `CountTokens` | `POST /v1/messages/count_tokens` | Anthropic error object |

use bytes::BytesMut;
use http::{HeaderValue, Response, StatusCode, header};
use tollgate_api::RouteEndpoint;
use tollgate_llm::stream::StreamEncoder;
use tollgate_llm::{ChatRequest, ChatResponse, ErrorKind, LlmError};

use crate::error::ApiError;
use crate::http::{ResponseBody, json};

/// A client request in canonical form, plus what its dialect needs to
/// render the answer (the Responses API echoes request parameters).
#[derive(Clone, Debug)]
pub struct Canonical {
    pub request: ChatRequest,
    pub echo: Option<tollgate_llm::responses::ResponsesEcho>,
}

/// Which client API a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
}

impl Endpoint {
    /// The endpoint served at `path`, if any.
    pub fn of_path(path: &str) -> Option<Self> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/responses" => Endpoint::Responses,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            _ => return None,
        })
    }

    /// The route endpoint that covers this one (`count_tokens` goes with
    /// messages).
    pub fn served_as(self) -> RouteEndpoint {
        match self {
            Endpoint::ChatCompletions => RouteEndpoint::ChatCompletions,
            Endpoint::Responses => RouteEndpoint::Responses,
            Endpoint::Embeddings => RouteEndpoint::Embeddings,
            Endpoint::Messages | Endpoint::CountTokens => RouteEndpoint::Messages,
        }
    }

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
        }
    }

    pub fn is_anthropic(self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::CountTokens)
    }

    /// Whether the endpoint can stream at all.
    pub fn can_stream(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages
        )
    }

    /// A gateway error in this endpoint's shape.
    pub fn error(self, error: &ApiError) -> Response<ResponseBody> {
        if !self.is_anthropic() {
            return error
                .clone()
                .into_response::<bytes::Bytes>()
                .map(crate::http::full);
        }
        let mut response = self.llm_error(&error.to_llm());
        if let Some(value) = error.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }

    /// A translated (provider or translation) error in this endpoint's shape.
    pub fn llm_error(self, error: &LlmError) -> Response<ResponseBody> {
        let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = if self.is_anthropic() {
            tollgate_llm::anthropic::dialect::render_error(error)
        } else {
            tollgate_llm::openai::render_error(error)
        };
        let mut response = json(status, body);
        if error.kind == ErrorKind::RateLimit {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// The client's body in canonical form (translation only).
    pub fn parse(self, body: &[u8]) -> Result<Canonical, LlmError> {
        let request = match self {
            Endpoint::ChatCompletions => tollgate_llm::openai::parse_request(body)?,
            Endpoint::Responses => {
                let (request, echo) = tollgate_llm::responses::parse_request_with_echo(body)?;
                return Ok(Canonical {
                    request,
                    echo: Some(echo),
                });
            }
            Endpoint::Messages => tollgate_llm::anthropic::dialect::parse_request(body)?,
            Endpoint::CountTokens => tollgate_llm::anthropic::dialect::parse_count_tokens(body)?,
            Endpoint::Embeddings => {
                return Err(LlmError::invalid_request(
                    "embeddings cannot be translated between provider formats",
                ));
            }
        };
        Ok(Canonical {
            request,
            echo: None,
        })
    }

    /// A canonical response rendered for this client.
    pub fn render(self, response: &ChatResponse, canonical: &Canonical) -> Vec<u8> {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => {
                tollgate_llm::anthropic::dialect::render_response(response)
            }
            Endpoint::Responses => tollgate_llm::responses::render_response(
                response,
                &canonical.echo.clone().unwrap_or_default(),
            ),
            Endpoint::ChatCompletions | Endpoint::Embeddings => {
                tollgate_llm::openai::render_response(response)
            }
        }
    }

    /// The encoder turning canonical chunks into this client's stream.
    pub fn stream_encoder(self, canonical: &Canonical) -> Box<dyn StreamEncoder> {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => {
                Box::new(tollgate_llm::anthropic::dialect::MessagesStreamEncoder::new())
            }
            Endpoint::Responses => Box::new(tollgate_llm::responses::ResponsesStreamEncoder::new(
                canonical.echo.clone().unwrap_or_default(),
            )),
            Endpoint::ChatCompletions | Endpoint::Embeddings => {
                let include_usage = canonical
                    .request
                    .stream_options
                    .as_ref()
                    .and_then(|o| o.include_usage)
                    == Some(true);
                Box::new(tollgate_llm::openai::ChatStreamEncoder::new(include_usage))
            }
        }
    }
}

impl Endpoint {
    /// An error event in this client's stream format, for a passed-through
    /// stream that fails after it started (translated streams use their
    /// encoder): OpenAI Chat `data: {"error":...}`, Anthropic `event: error`,
    /// Responses `event: error`. Each is what the client's SDK raises.
    pub fn stream_error_event(self, error: &LlmError) -> bytes::Bytes {
        let mut out = BytesMut::new();
        match self {
            Endpoint::Messages | Endpoint::CountTokens => {
                let body = tollgate_llm::anthropic::dialect::render_error(error);
                tollgate_llm::sse::write_event(&mut out, Some("error"), &body);
            }
            Endpoint::Responses => {
                let inner: serde_json::Value =
                    serde_json::from_slice(&tollgate_llm::openai::render_error(error))
                        .ok()
                        .and_then(|v: serde_json::Value| v.get("error").cloned())
                        .unwrap_or_default();
                let event = serde_json::json!({
                    "type": "error",
                    "code": error.code,
                    "message": error.message,
                    "param": error.param,
                    "sequence_number": 0,
                    "error": inner,
                });
                tollgate_llm::sse::write_json(&mut out, Some("error"), &event);
            }
            Endpoint::ChatCompletions | Endpoint::Embeddings => {
                let body = tollgate_llm::openai::render_error(error);
                tollgate_llm::sse::write_event(&mut out, None, &body);
            }
        }
        out.freeze()
    }
}
