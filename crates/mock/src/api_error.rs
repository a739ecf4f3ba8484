//! Error responses in each provider's own shape.

use std::borrow::Cow;

use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::MockBody;
use crate::config::OverrideError;

/// Which provider's error shape to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    /// OpenAI fields, but `code` always set (Azure puts the status there).
    Azure,
    Anthropic,
    /// `{"error":{"code","message","status"}}` (google.rpc.Status).
    Gemini,
    /// `{"message"}` plus the `x-amzn-ErrorType` header.
    Bedrock,
}

/// An error answer: validation failures, injected errors, routing errors.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: Cow<'static, str>,
    pub param: Option<Cow<'static, str>>,
    pub code: Option<&'static str>,
    /// Provider-specific error type overriding the one derived from the
    /// status: Anthropic `type`, Gemini `status`, Bedrock exception name.
    pub kind: Option<&'static str>,
    /// Gemini `ErrorInfo.reason` (e.g. `API_KEY_INVALID`).
    pub reason: Option<&'static str>,
    allow: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
            kind: None,
            reason: None,
            allow: None,
        }
    }

    /// Sets the provider-specific error type.
    pub(crate) fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    /// 400 `invalid_request_error`, optionally naming the offending parameter.
    pub(crate) fn invalid(
        message: impl Into<Cow<'static, str>>,
        param: Option<&'static str>,
    ) -> Self {
        Self {
            param: param.map(Cow::Borrowed),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub(crate) fn missing(param: &'static str) -> Self {
        Self::invalid(format!("{param}: Field required"), Some(param))
    }

    pub(crate) fn bad_json(err: &serde_json::Error) -> Self {
        let message = if err.is_syntax() || err.is_eof() {
            format!("We could not parse the JSON body of your request. ({err})")
        } else {
            format!("Invalid request body: {err}")
        };
        Self::invalid(message, None)
    }

    pub(crate) fn not_found(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({method} {path})"),
        )
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Method not allowed; use {allow}"),
            )
        }
    }

    /// A request longer than `--context-window`, refused as OpenAI words it.
    pub(crate) fn context_length(window: u64, tokens: u64) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            param: Some(Cow::Borrowed("messages")),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
                ),
            )
        }
    }

    /// An error injected by `--error-rate` or a `status` override.
    pub(crate) fn injected(status: StatusCode) -> Self {
        let message = match status.as_u16() {
            429 => "Rate limit reached for requests (injected by tollgate-mock).",
            500 => {
                "The server had an error while processing your request (injected by tollgate-mock)."
            }
            503 | 529 => {
                "The service is temporarily overloaded, please try again later (injected by tollgate-mock)."
            }
            _ => "Injected error from tollgate-mock.",
        };
        let code = match status.as_u16() {
            429 => Some("rate_limit_exceeded"),
            401 => Some("invalid_api_key"),
            _ => None,
        };
        Self {
            code,
            ..Self::new(status, message)
        }
    }

    pub(crate) fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            429 => "requests",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub(crate) fn gemini_status(&self) -> &'static str {
        if let Some(kind) = self.kind {
            return kind;
        }
        match self.status.as_u16() {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            405 | 501 => "UNIMPLEMENTED",
            409 => "ABORTED",
            429 => "RESOURCE_EXHAUSTED",
            499 => "CANCELLED",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            500..=599 => "INTERNAL",
            _ => "INVALID_ARGUMENT",
        }
    }

    pub(crate) fn bedrock_type(&self) -> &'static str {
        if let Some(kind) = self.kind {
            return kind;
        }
        match self.status.as_u16() {
            403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            408 => "ModelTimeoutException",
            424 => "ModelErrorException",
            429 => "ThrottlingException",
            503 | 529 => "ServiceUnavailableException",
            500..=599 => "InternalServerException",
            _ => "ValidationException",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        if let Some(kind) = self.kind {
            return kind;
        }
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    pub(crate) fn into_response(self, flavor: Flavor) -> Response<MockBody> {
        let body = match flavor {
            Flavor::OpenAi => serde_json::to_vec(&OpenAiEnvelope {
                error: OpenAiError {
                    message: &self.message,
                    kind: self.openai_type(),
                    param: self.param.as_deref(),
                    code: self.code,
                },
            }),
            Flavor::Azure => {
                let status = self.status.as_u16().to_string();
                serde_json::to_vec(&AzureEnvelope {
                    error: AzureError {
                        code: self.code.unwrap_or(&status),
                        message: &self.message,
                        kind: self.openai_type(),
                        param: self.param.as_deref(),
                    },
                })
            }
            Flavor::Gemini => serde_json::to_vec(&GeminiEnvelope {
                error: GeminiError {
                    code: self.status.as_u16(),
                    message: &self.message,
                    status: self.gemini_status(),
                    details: self
                        .reason
                        .map(|reason| {
                            vec![ErrorInfo {
                                kind: "type.googleapis.com/google.rpc.ErrorInfo",
                                reason,
                                domain: "googleapis.com",
                            }]
                        })
                        .unwrap_or_default(),
                },
            }),
            Flavor::Bedrock => serde_json::to_vec(&BedrockError {
                message: &self.message,
            }),
            Flavor::Anthropic => serde_json::to_vec(&AnthropicEnvelope {
                kind: "error",
                error: AnthropicError {
                    kind: self.anthropic_type(),
                    message: &self.message,
                },
            }),
        };
        // Serialising these plain structs cannot fail; fall back to an empty body anyway.
        let mut response = Response::new(MockBody::full(body.unwrap_or_default()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if flavor == Flavor::Bedrock {
            headers.insert(
                "x-amzn-errortype",
                HeaderValue::from_static(self.bedrock_type()),
            );
        }
        response
    }
}

impl From<OverrideError> for ApiError {
    fn from(err: OverrideError) -> Self {
        Self::invalid(err.to_string(), None)
    }
}

#[derive(Serialize)]
struct OpenAiEnvelope<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

#[derive(Serialize)]
struct AnthropicEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct AzureEnvelope<'a> {
    error: AzureError<'a>,
}

#[derive(Serialize)]
struct AzureError<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
}

#[derive(Serialize)]
struct GeminiEnvelope<'a> {
    error: GeminiError<'a>,
}

#[derive(Serialize)]
struct GeminiError<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<ErrorInfo>,
}

#[derive(Serialize)]
struct ErrorInfo {
    #[serde(rename = "@type")]
    kind: &'static str,
    reason: &'static str,
    domain: &'static str,
}

#[derive(Serialize)]
struct BedrockError<'a> {
    message: &'a str,
}
