//! Streams in the middle: a provider's stream is decoded into canonical
//! chunks, and canonical chunks are encoded into the client's stream events.
//! Both sides are state machines fed one network read at a time.

use bytes::BytesMut;

use crate::canonical::{ChatChunk, Usage};
use crate::error::LlmError;

/// What a provider stream yields, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    Chunk(ChatChunk),
    /// The provider reported an error inside the stream (Anthropic `event:
    /// error`, a Bedrock exception frame, an OpenAI `{"error":..}` event).
    Error(LlmError),
    /// The provider ended the stream cleanly (`[DONE]`, `message_stop`, ...).
    Done,
}

/// Where decoded items go; a `Vec` is the usual one.
pub type ChunkSink = Vec<StreamItem>;

/// A provider's stream bytes → canonical items.
pub trait StreamDecoder: Send + Sync {
    /// Feeds one read. Complete events are decoded into `out`; a partial one
    /// is held until the next read. An error means the stream is unusable.
    fn push(&mut self, bytes: &[u8], out: &mut ChunkSink) -> Result<(), LlmError>;

    /// The provider closed the body. A stream that ended without its final
    /// event is an error (`Truncated`): the client must not mistake a cut-off
    /// answer for a complete one.
    fn finish(&mut self, out: &mut ChunkSink) -> Result<(), LlmError>;
}

/// Canonical items → the client's stream bytes (SSE events in its dialect).
pub trait StreamEncoder: Send + Sync {
    /// Appends the events for one chunk.
    fn chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut);

    /// The stream ended cleanly: closing events (and usage, when the
    /// dialect reports it at the end).
    fn done(&mut self, out: &mut BytesMut);

    /// The stream failed after it started: an error event in the dialect's
    /// shape, after which the body ends.
    fn error(&mut self, error: &LlmError, out: &mut BytesMut);

    /// The usage seen so far (for accounting), whatever the dialect renders.
    fn usage(&self) -> Option<Usage>;
}
