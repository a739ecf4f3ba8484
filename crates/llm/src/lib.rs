//! LLM wire formats and the translation between them.
//!
//! Everything here is pure (bytes in, bytes out, no IO), so each direction is
//! tested with golden files and fuzzed without a network.
//!
//! The middle is [`canonical`]: OpenAI Chat Completions semantics, plus the
//! few things other providers need (thinking budgets and signatures, top_k),
//! with every field Tollgate does not model kept in `extra` maps so nothing
//! the client sent is lost on the way through. The gateway builds it only when
//! a request must be translated or a policy needs the messages; a request whose
//! client speaks its provider's format is passed through untouched.
//!
//! Each wire format keeps its two directions apart:
//! * a **dialect** is a client API: parse its requests into canonical, render
//!   canonical responses, stream chunks and errors back in its shape;
//! * a **provider format** is an upstream API: render canonical requests in
//!   its shape, parse its responses, stream events and errors into canonical.
//!
//! | Module | Dialect (client side) | Provider format (upstream side) |
//! | --- | --- | --- |
//! | [`openai`] | Chat Completions | Chat Completions (OpenAI, Azure, compatible servers) |
//! | [`responses`] | Responses API | — (OpenAI itself is passed through) |
//! | [`anthropic`] | Messages (+ count_tokens) | Messages (Anthropic) |
//! | [`gemini`] | — | generateContent / streamGenerateContent (Gemini API v1beta) |
//! | [`bedrock`] | — | Converse / ConverseStream (SigV4 signing, binary event stream) |

pub mod anthropic;
pub mod bedrock;
pub mod canonical;
pub mod error;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod sse;
pub mod stream;

pub use canonical::{ChatChunk, ChatRequest, ChatResponse, Usage};
pub use error::{ErrorKind, LlmError};
pub use stream::{ChunkSink, StreamDecoder, StreamEncoder, StreamItem};
