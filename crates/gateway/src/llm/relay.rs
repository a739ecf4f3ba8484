//! Stage `relay`: the provider's answer to the client, buffered or streamed.
//!
//! Every byte of an answer passes [`Output::emit`], the one output hook:
//! usage capture and first-byte timing live there, and output guards and
//! cache stores will too. A buffered body is delivered as one emit.
//!
//! A stream is transcoded one network read at a time by a [`Transcoder`]:
//! * `OpenAiChat`: OpenAI client and provider: complete events forwarded as
//!   read (zero-copy), usage read from the final chunk;
//! * `Observe`: same format, other APIs (Anthropic, Responses): bytes
//!   forwarded as read while the events are decoded alongside, for usage and
//!   to know the stream ended properly;
//! * `Translate`: provider events → canonical chunks → client events.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::{Instant, Sleep};
use tollgate_llm::stream::{StreamDecoder, StreamEncoder, StreamItem};
use tollgate_llm::{LlmError, Usage};

use crate::context::RequestContext;
use crate::http::BoxError;
use crate::providers::fair::Permit;
use crate::sse::SseRelay;

/// Grace after the provider's final event for it to end the body.
const AFTER_DONE_GRACE: Duration = Duration::from_secs(1);

/// The output hook: everything sent to the client goes through here.
pub struct Output;

impl Output {
    /// Records what leaving `bytes` means for the request (first output
    /// time, for streams the time to first token) and hands them on.
    pub fn emit(context: &mut RequestContext, bytes: Bytes, streamed: bool) -> Bytes {
        if streamed && !bytes.is_empty() {
            context.output_started();
        }
        bytes
    }
}

/// Why a stream failed after it started.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("provider stream failed: {0}")]
    Upstream(String),
    #[error("provider stream ended before its final event")]
    Truncated,
    #[error("provider stream timed out")]
    Timeout,
    #[error("provider sent an unusable stream: {0}")]
    Invalid(String),
}

impl StreamError {
    fn reason(&self) -> &'static str {
        match self {
            StreamError::Upstream(_) => "broken_stream",
            StreamError::Truncated => "truncated_stream",
            StreamError::Timeout => "stream_timeout",
            StreamError::Invalid(_) => "invalid_stream",
        }
    }

    fn status(&self) -> u16 {
        match self {
            StreamError::Timeout => 504,
            _ => 502,
        }
    }
}

pub enum Transcoder {
    OpenAiChat(SseRelay),
    Observe(Observer),
    Translate(Box<Translator>),
}

/// Decodes a passed-through stream alongside, without changing a byte.
pub struct Observer {
    decoder: Box<dyn StreamDecoder>,
    items: Vec<StreamItem>,
    usage: Option<Usage>,
    finished: bool,
    failed: Option<LlmError>,
}

impl Observer {
    pub fn new(decoder: Box<dyn StreamDecoder>) -> Self {
        Self {
            decoder,
            items: Vec::new(),
            usage: None,
            finished: false,
            failed: None,
        }
    }

    fn absorb(&mut self) {
        for item in self.items.drain(..) {
            match item {
                StreamItem::Chunk(chunk) => {
                    if let Some(usage) = chunk.usage {
                        self.usage = Some(usage);
                    }
                }
                StreamItem::Error(error) => self.failed = Some(error),
                StreamItem::Done => self.finished = true,
            }
        }
    }
}

pub struct Translator {
    pub decoder: Box<dyn StreamDecoder>,
    pub encoder: Box<dyn StreamEncoder>,
    items: Vec<StreamItem>,
    finished: bool,
    failed: Option<LlmError>,
}

impl Translator {
    pub fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        Self {
            decoder,
            encoder,
            items: Vec::new(),
            finished: false,
            failed: None,
        }
    }

    fn encode(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        for item in self.items.drain(..) {
            if self.finished || self.failed.is_some() {
                continue;
            }
            match item {
                StreamItem::Chunk(chunk) => self.encoder.chunk(&chunk, &mut out),
                StreamItem::Done => {
                    self.encoder.done(&mut out);
                    self.finished = true;
                }
                StreamItem::Error(error) => {
                    // The provider's own error, told in the client's format.
                    self.encoder.error(&error, &mut out);
                    self.failed = Some(error);
                }
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

impl Transcoder {
    /// Feeds one read; returns what to forward now.
    fn push(&mut self, data: Bytes) -> Result<Option<Bytes>, StreamError> {
        match self {
            Transcoder::OpenAiChat(relay) => relay
                .push(data)
                .map_err(|e| StreamError::Invalid(e.to_string())),
            Transcoder::Observe(observer) => {
                observer
                    .decoder
                    .push(&data, &mut observer.items)
                    .map_err(|e| StreamError::Invalid(e.message))?;
                observer.absorb();
                Ok(Some(data))
            }
            Transcoder::Translate(translator) => {
                translator
                    .decoder
                    .push(&data, &mut translator.items)
                    .map_err(|e| StreamError::Invalid(e.message))?;
                Ok(translator.encode())
            }
        }
    }

    /// The provider ended the body: the rest, or why the stream is incomplete.
    fn finish(&mut self) -> (Option<Bytes>, Result<(), StreamError>) {
        match self {
            Transcoder::OpenAiChat(relay) => {
                let rest = relay.finish();
                let verdict = if relay.finished() {
                    Ok(())
                } else {
                    Err(StreamError::Truncated)
                };
                (rest, verdict)
            }
            Transcoder::Observe(observer) => {
                let verdict = observer.decoder.finish(&mut observer.items);
                observer.absorb();
                let verdict = match verdict {
                    Ok(()) if observer.finished || observer.failed.is_some() => Ok(()),
                    _ => Err(StreamError::Truncated),
                };
                (None, verdict)
            }
            Transcoder::Translate(translator) => {
                let verdict = translator.decoder.finish(&mut translator.items);
                let rest = translator.encode();
                let verdict = match verdict {
                    Ok(()) if translator.finished || translator.failed.is_some() => Ok(()),
                    _ => Err(StreamError::Truncated),
                };
                (rest, verdict)
            }
        }
    }

    /// The provider's final event has been seen.
    fn finished(&self) -> bool {
        match self {
            Transcoder::OpenAiChat(relay) => relay.finished(),
            Transcoder::Observe(observer) => observer.finished || observer.failed.is_some(),
            Transcoder::Translate(translator) => translator.finished || translator.failed.is_some(),
        }
    }

    /// The status to settle a stream that ended at its final event with.
    fn final_status(&self) -> u16 {
        let failed = match self {
            Transcoder::OpenAiChat(_) => None,
            Transcoder::Observe(observer) => observer.failed.as_ref(),
            Transcoder::Translate(translator) => translator.failed.as_ref(),
        };
        failed.map_or(200, |e| e.status)
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Transcoder::OpenAiChat(relay) => relay.usage(),
            Transcoder::Observe(observer) => observer.usage,
            Transcoder::Translate(translator) => translator.encoder.usage(),
        }
    }

    /// A failure after the stream started, as an event in the client's
    /// format where the gateway writes the events itself.
    fn error_event(&mut self, error: &StreamError) -> Option<Bytes> {
        let Transcoder::Translate(translator) = self else {
            return None;
        };
        if translator.finished || translator.failed.is_some() {
            return None;
        }
        let error = LlmError::new(
            tollgate_llm::ErrorKind::from_status(error.status()),
            error.to_string(),
        );
        let mut out = BytesMut::new();
        translator.encoder.error(&error, &mut out);
        translator.failed = Some(error);
        Some(out.freeze())
    }
}

/// Streams the provider's answer to the client with deadlines, and settles
/// the request when the stream ends however it ends.
pub struct RelayBody {
    upstream: Incoming,
    transcoder: Transcoder,
    /// The next deadline: first chunk, then idle gap, capped by `stream_deadline`.
    timer: Pin<Box<Sleep>>,
    idle: Option<Duration>,
    /// The provider's request timeout bounds the whole stream.
    stream_deadline: Instant,
    context: RequestContext,
    state: RelayState,
    _permit: Option<Permit>,
}

/// What the relay needs to start.
pub struct StreamSetup {
    pub transcoder: Transcoder,
    /// Until the first chunk: the request deadline.
    pub first_chunk_deadline: Instant,
    pub idle: Option<Duration>,
    pub stream_deadline: Instant,
    pub permit: Option<Permit>,
}

#[derive(Debug)]
enum RelayState {
    Streaming,
    /// The tail went out; the verdict on the stream comes now.
    Flushing(Verdict),
    /// The stream has failed; the error is returned after one yield so hyper
    /// flushes what was already forwarded (it drops unflushed data on error).
    Failing(StreamError),
    /// The body ends on the next poll.
    Ended,
}

#[derive(Debug)]
enum Verdict {
    End,
    Fail(StreamError),
}

type FramePoll = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl RelayBody {
    pub fn new(upstream: Incoming, setup: StreamSetup, context: RequestContext) -> Self {
        Self {
            upstream,
            transcoder: setup.transcoder,
            timer: Box::pin(tokio::time::sleep_until(setup.first_chunk_deadline)),
            idle: setup.idle,
            stream_deadline: setup.stream_deadline,
            context,
            state: RelayState::Streaming,
            _permit: setup.permit,
        }
    }

    fn settle(&mut self, status: u16) {
        self.context.usage = self.transcoder.usage();
        self.context.settle(status);
    }

    /// Ends the body with an error (after an error event in the client's
    /// format where there is one), so the client never mistakes a cut-off
    /// answer for a complete one.
    fn abort(&mut self, cx: &mut Context<'_>, error: StreamError) -> FramePoll {
        self.context.attempt_failed(error.reason());
        self.settle(error.status());
        if let Some(event) = self.transcoder.error_event(&error) {
            let event = Output::emit(&mut self.context, event, true);
            self.state = RelayState::Failing(error);
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        self.state = RelayState::Failing(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn forward(&mut self, bytes: Bytes) -> FramePoll {
        let bytes = Output::emit(&mut self.context, bytes, true);
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    /// After data: the idle deadline restarts (or the whole-stream one
    /// applies); after the final event only a short grace remains.
    fn rearm_timer(&mut self) {
        let now = Instant::now();
        let mut next = self.stream_deadline;
        if let Some(idle) = self.idle {
            next = next.min(now + idle);
        }
        if self.transcoder.finished() {
            next = next.min(now + AFTER_DONE_GRACE);
        }
        self.timer.as_mut().reset(next);
    }

    fn end_cleanly(&mut self) {
        let status = self.transcoder.final_status();
        self.settle(status);
        self.state = RelayState::Ended;
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> FramePoll {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, RelayState::Streaming) {
                RelayState::Streaming => {}
                RelayState::Flushing(Verdict::End) => {
                    this.end_cleanly();
                    return Poll::Ready(None);
                }
                RelayState::Flushing(Verdict::Fail(error)) => return this.abort(cx, error),
                RelayState::Failing(error) => {
                    this.state = RelayState::Ended;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
                RelayState::Ended => {
                    this.state = RelayState::Ended;
                    return Poll::Ready(None);
                }
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let pushed = this.transcoder.push(data);
                    this.rearm_timer();
                    match pushed {
                        Ok(Some(out)) => return this.forward(out),
                        Ok(None) => {}
                        Err(error) => return this.abort(cx, error),
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return this.abort(cx, StreamError::Upstream(error.to_string()));
                }
                Poll::Ready(None) => {
                    let (rest, verdict) = this.transcoder.finish();
                    let verdict = match verdict {
                        Ok(()) => Verdict::End,
                        Err(error) => Verdict::Fail(error),
                    };
                    match (rest, verdict) {
                        (Some(rest), verdict) => {
                            // Forward the tail now; the verdict comes on the next poll.
                            this.state = RelayState::Flushing(verdict);
                            return this.forward(rest);
                        }
                        (None, Verdict::End) => {
                            this.end_cleanly();
                            return Poll::Ready(None);
                        }
                        (None, Verdict::Fail(error)) => return this.abort(cx, error),
                    }
                }
                Poll::Pending => {
                    if this.timer.as_mut().poll(cx).is_ready() {
                        if this.transcoder.finished() {
                            // Complete answer; the provider just never closed.
                            this.end_cleanly();
                            return Poll::Ready(None);
                        }
                        return this.abort(cx, StreamError::Timeout);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Usage of an OpenAI Responses object (`usage.input_tokens`, ...), as
/// canonical usage.
pub fn responses_usage(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: Option<ResponsesUsage>,
    }
    serde_json::from_slice::<WithUsage>(body)
        .ok()?
        .usage
        .map(ResponsesUsage::canonical)
}

#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    output_tokens_details: Option<ReasoningDetails>,
}

#[derive(Deserialize)]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct ReasoningDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl ResponsesUsage {
    fn canonical(self) -> Usage {
        let mut usage = Usage::new(self.input_tokens, self.output_tokens);
        if let Some(details) = self.input_tokens_details {
            usage.prompt_tokens_details = Some(tollgate_llm::canonical::PromptTokensDetails {
                cached_tokens: details.cached_tokens,
                cache_creation_tokens: 0,
            });
        }
        if let Some(details) = self.output_tokens_details {
            usage.completion_tokens_details =
                Some(tollgate_llm::canonical::CompletionTokensDetails {
                    reasoning_tokens: details.reasoning_tokens,
                });
        }
        usage
    }
}

/// Watches a passed-through Responses stream: usage from the final
/// `response.completed` / `response.incomplete` event, which also marks the
/// end; `response.failed` and `error` events are stream errors.
#[derive(Default)]
pub struct ResponsesObserver {
    parser: tollgate_llm::sse::Parser,
    events: Vec<tollgate_llm::sse::Event>,
}

impl StreamDecoder for ResponsesObserver {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<StreamItem>) -> Result<(), LlmError> {
        self.parser.push(bytes, &mut self.events)?;
        self.drain(out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamItem>) -> Result<(), LlmError> {
        self.parser.finish(&mut self.events);
        self.drain(out);
        Ok(())
    }
}

impl ResponsesObserver {
    fn drain(&mut self, out: &mut Vec<StreamItem>) {
        #[derive(Deserialize)]
        struct Event {
            #[serde(rename = "type", default)]
            kind: String,
            #[serde(default)]
            response: Option<serde_json::Value>,
            #[serde(default)]
            message: Option<String>,
        }
        for event in self.events.drain(..) {
            let Ok(parsed) = serde_json::from_str::<Event>(&event.data) else {
                continue;
            };
            match parsed.kind.as_str() {
                "response.completed" | "response.incomplete" => {
                    let usage = parsed
                        .response
                        .and_then(|r| serde_json::to_vec(&r).ok())
                        .and_then(|body| responses_usage(&body));
                    out.push(StreamItem::Chunk(tollgate_llm::ChatChunk {
                        usage,
                        ..Default::default()
                    }));
                    out.push(StreamItem::Done);
                }
                "response.failed" | "error" => out.push(StreamItem::Error(LlmError::bad_gateway(
                    parsed
                        .message
                        .unwrap_or_else(|| "the provider's response failed".into()),
                ))),
                _ => {}
            }
        }
    }
}
