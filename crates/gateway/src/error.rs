//! Errors the gateway itself raises, with a stable OpenAI `type`/`code`.
//! Rendered as the OpenAI error object (`{"error": {"message", "type",
//! "param", "code"}}`) here, and in other client shapes by [`crate::dialect`].

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// An error the client sees. `kind` and `code` are stable API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// `Retry-After` in seconds, for a 429 that knows when to come back.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_s: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            format!("We could not parse the JSON body of your request: {detail}"),
        )
    }

    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message,
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
    }

    /// The model's route does not serve this endpoint (a chat model asked
    /// for embeddings, or the reverse).
    pub fn endpoint_not_served(model: &str, path: &str, served: &[&str]) -> Self {
        Self::invalid_request(
            "unsupported_endpoint",
            format!(
                "The model `{model}` is not served on {path}; it is served on {}.",
                served.join(", ")
            ),
        )
        .with_param("model")
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            format!("Unknown request URL: {path}"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not supported for {path}"),
        )
    }

    pub fn headers_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            "headers_too_large",
            format!("Request headers exceed the limit of {limit} bytes"),
        )
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("Request body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!(
                "The request body was not received within {} s",
                limit.as_secs()
            ),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "Content-Type must be application/json",
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "provider_concurrency_limit",
            message,
        )
    }

    /// A TokenBudget has no room for the request until `retry_after_s`.
    pub fn budget_exceeded(message: impl Into<String>, retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "budget_exceeded",
                message,
            )
        }
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream_error",
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "upstream_unavailable",
            message,
        )
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "upstream_timeout",
            message,
        )
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "not_ready",
            "The gateway has no configuration yet",
        )
    }

    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Body<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: &'a str,
        }
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        // Serializing borrowed strings into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// The same error as a provider-neutral one, for dialects other than
    /// OpenAI's to render.
    pub fn to_llm(&self) -> tollgate_llm::LlmError {
        let mut error = tollgate_llm::LlmError::new(
            tollgate_llm::ErrorKind::from_status(self.status.as_u16()),
            self.message.clone(),
        )
        .with_status(self.status.as_u16())
        .with_code(self.code);
        if let Some(param) = self.param {
            error = error.with_param(param);
        }
        error
    }

    /// `Retry-After` to send with this error, if any.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        if let Some(seconds) = self.retry_after_s {
            return Some(HeaderValue::from(seconds));
        }
        (self.status == StatusCode::TOO_MANY_REQUESTS).then(|| HeaderValue::from_static("1"))
    }

    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.body()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(value) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_openai_shape() {
        let body: serde_json::Value =
            serde_json::from_slice(&ApiError::model_not_found("gpt-9").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "The model `gpt-9` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"
            }})
        );
    }

    #[test]
    fn responses_carry_status_and_content_type() {
        let response: Response<Bytes> = ApiError::overloaded("busy").into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
