//! AWS Bedrock Runtime Converse / ConverseStream as a provider format.
//!
//! * [`converse`]: canonical request → Converse JSON and path, Converse
//!   response and error bodies → canonical.
//! * [`stream`]: the binary `application/vnd.amazon.eventstream` body of
//!   ConverseStream → canonical chunks (framing and CRCs by
//!   `aws-smithy-eventstream`).
//! * [`sigv4`]: request signing (by `aws-sigv4`), since Bedrock takes no API key.
//!
//! What does not cross, on purpose (Converse has no field for it):
//! * `logprobs`, `top_logprobs`, `seed`, `frequency_penalty`,
//!   `presence_penalty`, `logit_bias`, `service_tier`, `metadata`, `user`,
//!   `parallel_tool_calls`, `stream_options` (Bedrock always reports usage);
//! * `response_format: json_object` (only `json_schema` has a Converse form:
//!   `outputConfig.textFormat`);
//! * `n > 1` is rejected rather than dropped: Converse returns one choice and a
//!   client asking for several would silently get fewer;
//! * `reasoning_content` on an assistant turn without [`Thinking`] blocks:
//!   Bedrock needs the signature to accept reasoning back, so bare text is
//!   not sent;
//! * response blocks other than text, toolUse and reasoningContent
//!   (citations, guardContent, images), `metrics`, `trace`,
//!   `additionalModelResponseFields` (except a matched `stop_sequence`);
//! * streamed `redactedContent` deltas (the canonical delta has no place for
//!   them; non-streamed ones are kept in [`Thinking::redacted_data`]).
//!
//! Bedrock-only request fields a client sends in `extra` (`guardrailConfig`,
//! `additionalModelRequestFields`, `additionalModelResponseFieldPaths`,
//! `requestMetadata`, `performanceConfig`, `promptVariables`, `serviceTier`)
//! are passed through as is.
//!
//! [`Thinking`]: crate::canonical::Thinking
//! [`Thinking::redacted_data`]: crate::canonical::Thinking

pub mod converse;
pub mod sigv4;
pub mod stream;

use serde::Deserialize;

use crate::canonical::{CompletionTokensDetails, NativeStop, PromptTokensDetails, Usage, finish};

pub use converse::{parse_error, parse_response, request_body, request_path};
pub use sigv4::{AwsCredentials, sign};
pub use stream::{ConverseStreamDecoder, encode_event, encode_exception};

/// Bedrock `TokenUsage`. `inputTokens` excludes cache reads and writes, which
/// are counted apart (as Anthropic does).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

impl WireUsage {
    /// Canonical usage: `prompt_tokens` includes cache reads and writes, as
    /// OpenAI's does, so cost accounting sees every input token.
    pub(crate) fn to_canonical(self) -> Usage {
        let prompt = self
            .input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_write_input_tokens);
        let details = (self.cache_read_input_tokens > 0 || self.cache_write_input_tokens > 0)
            .then_some(PromptTokensDetails {
                cached_tokens: self.cache_read_input_tokens,
                cache_creation_tokens: self.cache_write_input_tokens,
            });
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt.saturating_add(self.output_tokens),
            prompt_tokens_details: details,
            completion_tokens_details: None::<CompletionTokensDetails>,
        }
    }
}

/// Bedrock `stopReason` → OpenAI `finish_reason`, and the native reason when
/// OpenAI's word loses detail (a dialect that can say it, e.g. Anthropic's
/// `stop_sequence`, gets it back).
pub(crate) fn map_stop_reason(
    reason: &str,
    stop_sequence: Option<String>,
) -> (&'static str, Option<NativeStop>) {
    let finish = match reason {
        "end_turn" | "stop_sequence" => finish::STOP,
        "tool_use" => finish::TOOL_CALLS,
        "max_tokens" | "model_context_window_exceeded" => finish::LENGTH,
        "guardrail_intervened" | "content_filtered" => finish::CONTENT_FILTER,
        _ => finish::STOP,
    };
    let native = match reason {
        "end_turn" | "tool_use" | "max_tokens" => None,
        _ => Some(NativeStop {
            reason: reason.to_string(),
            stop_sequence,
        }),
    };
    (finish, native)
}
