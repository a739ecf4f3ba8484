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
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tollgate_llm::stream::{StreamDecoder, StreamEncoder, StreamItem};
use tollgate_llm::{LlmError, Usage};

use crate::context::RequestContext;
use crate::dialect::Endpoint;
use crate::http::BoxError;
use crate::llm::guard::{ModerationCall, StreamGuard};
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
        if let Some(audit) = &mut context.audit {
            audit.response_bytes(&bytes);
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
    #[error("the stream was ended: it outgrew the output its budget had reserved ({0} tokens)")]
    BudgetExceeded(u64),
    #[error("provider stream timed out")]
    Timeout,
    #[error("provider sent an unusable stream: {0}")]
    Invalid(String),
    /// The provider reported an error before anything reached the client.
    #[error("{}", .0.message)]
    Provider(LlmError),
}

impl StreamError {
    pub fn reason(&self) -> &'static str {
        match self {
            StreamError::Upstream(_) => "broken_stream",
            StreamError::Truncated => "truncated_stream",
            StreamError::BudgetExceeded(_) => "budget_exceeded",
            StreamError::Timeout => "stream_timeout",
            StreamError::Invalid(_) => "invalid_stream",
            StreamError::Provider(_) => "provider_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            StreamError::Timeout => 504,
            StreamError::BudgetExceeded(_) => 429,
            StreamError::Provider(error) => error.status,
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
    output_chars: u64,
    finished: bool,
    failed: Option<LlmError>,
}

impl Observer {
    pub fn new(decoder: Box<dyn StreamDecoder>) -> Self {
        Self {
            decoder,
            items: Vec::new(),
            usage: None,
            output_chars: 0,
            finished: false,
            failed: None,
        }
    }

    fn absorb(&mut self) {
        for item in self.items.drain(..) {
            match item {
                StreamItem::Chunk(chunk) => {
                    self.output_chars += crate::sse::generated_chars(&chunk);
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
    output_chars: u64,
    /// The provider's final event was seen.
    done_seen: bool,
    /// The client's final event went out (after what moderation held).
    finished: bool,
    failed: Option<LlmError>,
    /// The route's guard on the answer (guarded routes only).
    pub guard: Option<Box<StreamGuard>>,
}

impl Translator {
    pub fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        Self {
            decoder,
            encoder,
            items: Vec::new(),
            output_chars: 0,
            done_seen: false,
            finished: false,
            failed: None,
            guard: None,
        }
    }

    fn encode(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        let mut released = Vec::new();
        let mut items = std::mem::take(&mut self.items);
        for item in items.drain(..) {
            if self.done_seen || self.failed.is_some() {
                continue;
            }
            match item {
                StreamItem::Chunk(chunk) => match &mut self.guard {
                    Some(guard) => guard.push(chunk, &mut released),
                    None => released.push(chunk),
                },
                StreamItem::Done => {
                    if let Some(guard) = &mut self.guard {
                        guard.end(&mut released);
                    }
                    self.done_seen = true;
                }
                StreamItem::Error(error) => {
                    self.write(&mut released, &mut out);
                    // The provider's own error, told in the client's format
                    // (text still held for moderation never goes out).
                    self.encoder.error(&error, &mut out);
                    self.failed = Some(error);
                }
            }
        }
        self.items = items;
        self.write(&mut released, &mut out);
        (!out.is_empty()).then(|| out.freeze())
    }

    /// Encodes `chunks`, then the final event once it is seen and nothing
    /// is held for moderation.
    fn write(&mut self, chunks: &mut Vec<tollgate_llm::ChatChunk>, out: &mut BytesMut) {
        if self.failed.is_some() {
            return;
        }
        for chunk in chunks.drain(..) {
            self.output_chars += crate::sse::generated_chars(&chunk);
            self.encoder.chunk(&chunk, out);
        }
        if self.done_seen && !self.finished && !self.guard.as_ref().is_some_and(|g| g.holding()) {
            self.encoder.done(out);
            self.finished = true;
        }
    }

    /// The next moderation call of the stream's guard, if one is due.
    fn moderation_call(&mut self) -> Option<ModerationCall> {
        if self.finished || self.failed.is_some() {
            return None;
        }
        self.guard.as_mut()?.next_call()
    }

    /// A moderation call answered: what it releases, encoded.
    fn moderated(&mut self, verdict: Result<Vec<String>, String>) -> Option<Bytes> {
        if self.finished || self.failed.is_some() {
            return None;
        }
        let mut released = Vec::new();
        if let Some(guard) = &mut self.guard {
            guard.answered(verdict, &mut released);
        }
        let mut out = BytesMut::new();
        self.write(&mut released, &mut out);
        (!out.is_empty()).then(|| out.freeze())
    }

    /// Text is held for moderation (the stream's end waits for it).
    fn holding(&self) -> bool {
        self.failed.is_none() && self.guard.as_ref().is_some_and(|g| g.holding())
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
                    Ok(()) if translator.done_seen || translator.failed.is_some() => Ok(()),
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
            Transcoder::Translate(translator) => {
                translator.done_seen || translator.failed.is_some()
            }
        }
    }

    /// The next moderation call a guarded stream needs (translated streams
    /// only: guarded routes always translate).
    fn moderation_call(&mut self) -> Option<ModerationCall> {
        match self {
            Transcoder::Translate(translator) => translator.moderation_call(),
            _ => None,
        }
    }

    fn moderated(&mut self, verdict: Result<Vec<String>, String>) -> Option<Bytes> {
        match self {
            Transcoder::Translate(translator) => translator.moderated(verdict),
            _ => None,
        }
    }

    fn holding(&self) -> bool {
        matches!(self, Transcoder::Translate(translator) if translator.holding())
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

    /// Characters of generated text so far (counted only where decoded).
    fn output_chars(&self) -> u64 {
        match self {
            Transcoder::OpenAiChat(relay) => relay.output_chars(),
            Transcoder::Observe(observer) => observer.output_chars,
            Transcoder::Translate(translator) => translator.output_chars,
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Transcoder::OpenAiChat(relay) => relay.usage(),
            Transcoder::Observe(observer) => observer.usage,
            Transcoder::Translate(translator) => translator.encoder.usage(),
        }
    }

    /// A failure after the stream started, as an event in the client's
    /// format: the client's SDK raises it as an error.
    fn error_event(&mut self, endpoint: Endpoint, error: &StreamError) -> Option<Bytes> {
        let error = LlmError::new(
            tollgate_llm::ErrorKind::from_status(error.status()),
            error.to_string(),
        )
        .with_code(error.reason());
        match self {
            Transcoder::Translate(translator) => {
                if translator.finished || translator.failed.is_some() {
                    return None;
                }
                let mut out = BytesMut::new();
                translator.encoder.error(&error, &mut out);
                translator.failed = Some(error);
                Some(out.freeze())
            }
            _ => Some(endpoint.stream_error_event(&error)),
        }
    }
}

/// What the relay needs to start.
pub struct StreamSetup {
    pub transcoder: Transcoder,
    /// Until the first chunk: the request deadline.
    pub first_chunk_deadline: Instant,
    pub idle: Option<Duration>,
    pub stream_deadline: Instant,
    pub permit: Option<Permit>,
    /// Counts the stream in flight to its provider until it ends.
    pub flight: crate::providers::Flight,
    /// How long a client may leave output unread before the stream is ended.
    pub write_timeout: Duration,
    /// Output tokens after which a budget ends the stream.
    pub output_allowance: Option<u64>,
}

/// The provider's stream, transcoded, with its deadlines: first chunk, idle
/// gap, whole stream, and a short grace after the final event.
pub struct Relay {
    upstream: Incoming,
    transcoder: Transcoder,
    endpoint: Endpoint,
    timer: Pin<Box<Sleep>>,
    idle: Option<Duration>,
    stream_deadline: Instant,
    /// The verdict on a stream whose tail was just handed out.
    after_tail: Option<Result<(), StreamError>>,
    /// Generated characters after which the stream is ended (budget).
    allowance_chars: Option<u64>,
    allowance_tokens: u64,
    /// The guard's moderation call in flight (moderated streams only).
    moderating: Option<ModerationCall>,
    /// The provider is done but moderation still holds text: how the
    /// stream ends once it is out.
    ended: Option<Result<(), StreamError>>,
}

/// One step of a relay.
enum Step {
    Data(Bytes),
    /// The stream ended at its final event.
    End,
    Fail(StreamError),
}

impl Relay {
    pub fn new(upstream: Incoming, setup: &mut StreamSetup, endpoint: Endpoint) -> Self {
        let transcoder = std::mem::replace(
            &mut setup.transcoder,
            Transcoder::OpenAiChat(SseRelay::new(false)),
        );
        Self {
            upstream,
            transcoder,
            endpoint,
            timer: Box::pin(tokio::time::sleep_until(setup.first_chunk_deadline)),
            idle: setup.idle,
            stream_deadline: setup.stream_deadline,
            after_tail: None,
            // The same four characters a token the estimate uses.
            allowance_chars: setup.output_allowance.map(|t| t.saturating_mul(4)),
            allowance_tokens: setup.output_allowance.unwrap_or(0),
            moderating: None,
            ended: None,
        }
    }

    /// Output for the client; past the budget, this read's whole events go
    /// out, then the stream ends with an error event.
    fn data(&mut self, out: Bytes) -> Step {
        if self
            .allowance_chars
            .is_some_and(|max| self.transcoder.output_chars() > max)
            && !self.transcoder.finished()
        {
            self.after_tail = Some(Err(StreamError::BudgetExceeded(self.allowance_tokens)));
        }
        Step::Data(out)
    }

    /// Starts the guard's next moderation call when one is due.
    fn moderate(&mut self) {
        if self.moderating.is_none() {
            self.moderating = self.transcoder.moderation_call();
        }
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

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        match self.after_tail.take() {
            Some(Ok(())) => return Poll::Ready(Step::End),
            Some(Err(error)) => return Poll::Ready(Step::Fail(error)),
            None => {}
        }
        loop {
            // A moderation verdict releases held text (or ends the answer);
            // the provider is read on meanwhile, so the call overlaps with
            // generation.
            if let Some(call) = &mut self.moderating
                && let Poll::Ready(verdict) = call.as_mut().poll(cx)
            {
                self.moderating = None;
                let out = self.transcoder.moderated(verdict);
                self.moderate();
                if let Some(out) = out {
                    return Poll::Ready(self.data(out));
                }
                continue;
            }
            if self.ended.is_some() {
                if self.moderating.is_some() && self.transcoder.holding() {
                    // The call's waker brings us back; it has its timeout.
                    return Poll::Pending;
                }
                self.moderating = None;
                return Poll::Ready(match self.ended.take() {
                    Some(Err(error)) => Step::Fail(error),
                    _ => Step::End,
                });
            }
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let pushed = self.transcoder.push(data);
                    self.rearm_timer();
                    self.moderate();
                    match pushed {
                        Ok(Some(out)) => return Poll::Ready(self.data(out)),
                        Ok(None) => {}
                        Err(error) => return Poll::Ready(Step::Fail(error)),
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Step::Fail(StreamError::Upstream(error.to_string())));
                }
                Poll::Ready(None) => {
                    let (rest, verdict) = self.transcoder.finish();
                    self.moderate();
                    if verdict.is_ok() && self.transcoder.holding() {
                        // A complete answer whose end moderation still holds.
                        self.ended = Some(verdict);
                        match rest {
                            Some(rest) => return Poll::Ready(Step::Data(rest)),
                            None => continue,
                        }
                    }
                    return Poll::Ready(match (rest, verdict) {
                        // The tail first; the verdict is the next step.
                        (Some(rest), verdict) => {
                            self.after_tail = Some(verdict);
                            Step::Data(rest)
                        }
                        (None, Ok(())) => Step::End,
                        (None, Err(error)) => Step::Fail(error),
                    });
                }
                Poll::Pending => {
                    if self.timer.as_mut().poll(cx).is_ready() {
                        if self.transcoder.finished() {
                            // Complete answer; the provider just never closed.
                            if self.transcoder.holding() {
                                self.ended = Some(Ok(()));
                                continue;
                            }
                            return Poll::Ready(Step::End);
                        }
                        return Poll::Ready(Step::Fail(StreamError::Timeout));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    async fn step(&mut self) -> Step {
        std::future::poll_fn(|cx| self.poll_step(cx)).await
    }

    /// Waits for the first bytes for the client. A stream that fails or ends
    /// before any is refused whole, so the client gets a proper error status
    /// instead of a 200 with nothing in it.
    pub async fn first_output(&mut self) -> Result<Bytes, StreamError> {
        match self.step().await {
            Step::Data(bytes) => match &self.transcoder {
                // A translated stream whose first news is the provider's error.
                Transcoder::Translate(translator) if translator.failed.is_some() => {
                    Err(StreamError::Provider(
                        translator
                            .failed
                            .clone()
                            .unwrap_or_else(|| LlmError::bad_gateway("provider stream failed")),
                    ))
                }
                _ => Ok(bytes),
            },
            Step::End => Err(StreamError::Truncated),
            Step::Fail(error) => Err(error),
        }
    }
}

type FramePoll = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// What the pump hands the response body.
enum Piece {
    Data(Bytes),
    /// End the body with this error (after what was sent before it).
    Fail(StreamError),
}

/// Starts relaying: a task on this worker thread pumps the provider's stream
/// to the client's body through a one-slot channel, so the task notices a
/// client that stopped reading (the slot stays full) and ends the stream
/// after `write_timeout`, freeing the provider slot; the request settles in
/// the task however the stream ends.
pub fn start(
    mut relay: Relay,
    first: Bytes,
    mut context: RequestContext,
    setup: StreamSetup,
) -> RelayBody {
    let (sender, receiver) = mpsc::channel(1);
    let first = Output::emit(&mut context, first, true);
    tokio::spawn(async move {
        let permit = setup.permit;
        let write_timeout = setup.write_timeout;
        let outcome = pump(&mut relay, &mut context, &sender, write_timeout).await;
        // The provider slot is free as soon as the provider is done.
        drop(permit);
        context.usage = relay.transcoder.usage();
        if let (Transcoder::Translate(translator), Some(state)) =
            (&relay.transcoder, &mut context.guard)
            && let Some(guard) = &translator.guard
        {
            guard.settle_into(state);
        }
        match outcome {
            Outcome::Complete => context.settle(relay.transcoder.final_status()),
            Outcome::Failed(error) => {
                context.attempt_failed(error.reason());
                context.count_stream_failure(error.reason());
                context.settle(error.status());
                // The client's error event, then a broken body: a client
                // never mistakes a cut-off answer for a complete one.
                let event = relay.transcoder.error_event(relay.endpoint, &error);
                let deliver = async {
                    if let Some(event) = event {
                        sender.send(Piece::Data(event)).await?;
                    }
                    sender.send(Piece::Fail(error)).await
                };
                let _ = tokio::time::timeout(write_timeout, deliver).await;
            }
            Outcome::ClientStalled => {
                context.count_stream_failure("client_stalled");
                context.settle(CLIENT_STALLED);
            }
            Outcome::ClientGone => context.settle(crate::context::CLIENT_CLOSED),
        }
    });
    RelayBody {
        first: Some(first),
        receiver,
        failing: None,
        done: false,
    }
}

enum Outcome {
    Complete,
    Failed(StreamError),
    ClientStalled,
    ClientGone,
}

/// Status recorded for a stream ended because its client stopped reading.
pub const CLIENT_STALLED: u16 = 408;

async fn pump(
    relay: &mut Relay,
    context: &mut RequestContext,
    sender: &mpsc::Sender<Piece>,
    write_timeout: Duration,
) -> Outcome {
    loop {
        let bytes = match relay.step().await {
            Step::Data(bytes) => bytes,
            Step::End => return Outcome::Complete,
            Step::Fail(error) => return Outcome::Failed(error),
        };
        let piece = Piece::Data(Output::emit(context, bytes, true));
        // The slot is usually free: no timer on the common path.
        let piece = match sender.try_send(piece) {
            Ok(()) => continue,
            Err(mpsc::error::TrySendError::Closed(_)) => return Outcome::ClientGone,
            Err(mpsc::error::TrySendError::Full(piece)) => piece,
        };
        match tokio::time::timeout(write_timeout, sender.send(piece)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Outcome::ClientGone,
            Err(_) => return Outcome::ClientStalled,
        }
    }
}

/// The client's response body: the first bytes, then what the pump sends.
pub struct RelayBody {
    first: Option<Bytes>,
    receiver: mpsc::Receiver<Piece>,
    /// The error to end with, after one yield so hyper flushes what came
    /// before it (it drops unflushed data on error).
    failing: Option<StreamError>,
    done: bool,
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> FramePoll {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(error) = this.failing.take() {
            this.done = true;
            return Poll::Ready(Some(Err(Box::new(error))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.receiver.poll_recv(cx) {
            Poll::Ready(Some(Piece::Data(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Piece::Fail(error))) => {
                this.failing = Some(error);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
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
