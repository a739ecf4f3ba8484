//! Stage `ingress`: read the client's body (size and time limits) and check
//! what the gateway needs before routing. The body stays raw bytes
//! ([`Payload`]); the canonical form is built only if a later stage asks.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tollgate_llm::LlmError;

use crate::dialect::{Canonical, Endpoint};
use crate::error::ApiError;
use crate::payload::Payload;

/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Oversized request bodies up to this size are read and discarded before
/// the 413; beyond it the connection is simply closed.
const MAX_DRAIN: u64 = 64 * 1024 * 1024;

/// A client request as the later stages see it.
pub struct Inbound<'a> {
    pub endpoint: Endpoint,
    pub payload: Payload<'a>,
    body: &'a [u8],
    canonical: OnceLock<Result<Canonical, LlmError>>,
    /// A guard policy applies: the request goes out from its canonical form
    /// (which the guard may have rewritten), never as the client's bytes.
    pub guarded: bool,
}

impl<'a> Inbound<'a> {
    pub fn parse(body: &'a [u8], endpoint: Endpoint) -> Result<Self, ApiError> {
        Ok(Self {
            endpoint,
            payload: Payload::parse(body, endpoint)?,
            body,
            canonical: OnceLock::new(),
            guarded: false,
        })
    }

    /// The canonical form to change (guards): the request is then sent
    /// from it.
    pub fn canonical_mut(&mut self) -> Result<&mut Canonical, LlmError> {
        self.canonical()?;
        self.guarded = true;
        match self.canonical.get_mut() {
            Some(Ok(canonical)) => Ok(canonical),
            Some(Err(error)) => Err(error.clone()),
            None => Err(LlmError::invalid_request("the request could not be read")),
        }
    }

    /// Size of the body in bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The request in canonical form, parsed on first use and kept.
    pub fn canonical(&self) -> Result<&Canonical, LlmError> {
        self.canonical
            .get_or_init(|| self.endpoint.parse(self.body))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Reads the request body up to `limit`. An oversized body is read on and
/// discarded (up to [`MAX_DRAIN`]) before answering 413, so the client gets the
/// error instead of a broken pipe mid-upload.
pub async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Trust a declared length for the first allocation only up to 64 KiB:
    // a client can declare much and send nothing.
    let initial = declared.filter(|n| *n <= limit).unwrap_or(0).min(64 * 1024);
    let mut buffer = bytes::BytesMut::with_capacity(initial as usize);
    let mut seen: u64 = 0;
    let mut too_large = declared.is_some_and(|n| n > limit);
    if too_large && declared.is_some_and(|n| n > MAX_DRAIN) {
        return Err(ApiError::too_large(limit));
    }
    let read_deadline = Instant::now() + BODY_READ_TIMEOUT;
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deadline = if too_large {
            drain_deadline
        } else {
            read_deadline
        };
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(frame) => frame,
            Err(_) if too_large => return Err(ApiError::too_large(limit)),
            Err(_) => return Err(ApiError::body_timeout(BODY_READ_TIMEOUT)),
        };
        match frame {
            None => break,
            Some(Err(error)) => {
                return Err(if too_large {
                    ApiError::too_large(limit)
                } else {
                    ApiError::invalid_request(
                        "body_read_failed",
                        format!("Could not read the request body: {error}"),
                    )
                });
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                seen += data.len() as u64;
                if seen > limit {
                    too_large = true;
                    buffer.clear();
                    if seen > MAX_DRAIN {
                        break;
                    }
                } else {
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
    if too_large {
        Err(ApiError::too_large(limit))
    } else {
        Ok(buffer.freeze())
    }
}
