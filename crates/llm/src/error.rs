//! One provider-neutral error. Providers' error bodies parse into it (the
//! original message kept); each dialect renders it in its client's shape.

/// What went wrong, in terms every API can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: the request is malformed or has a bad value.
    InvalidRequest,
    /// 401: the key is missing or wrong.
    Authentication,
    /// 403
    PermissionDenied,
    /// 404: unknown model or path.
    NotFound,
    /// 413
    RequestTooLarge,
    /// 429
    RateLimit,
    /// 500 and other server faults.
    Api,
    /// 502: the provider failed or answered something unusable.
    BadGateway,
    /// 503 / Anthropic 529: try again later.
    Overloaded,
    /// 504
    Timeout,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimit => 429,
            ErrorKind::Api => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Overloaded => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The kind an HTTP status means when the body says nothing better.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            502 => ErrorKind::BadGateway,
            503 | 529 => ErrorKind::Overloaded,
            504 | 408 => ErrorKind::Timeout,
            s if (400..500).contains(&s) => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        }
    }
}

/// An error to show a client, or one a provider reported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} ({status}): {message}")]
pub struct LlmError {
    pub kind: ErrorKind,
    /// The HTTP status to answer with (usually `kind.status()`).
    pub status: u16,
    pub message: String,
    /// The offending request field, when known (OpenAI `param`).
    pub param: Option<String>,
    /// A stable machine-readable code (OpenAI `code`), when known.
    pub code: Option<String>,
}

impl LlmError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: kind.status(),
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A request the translator cannot express for the target format.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// A provider body the translator cannot understand.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadGateway, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}
