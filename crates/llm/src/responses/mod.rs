//! The OpenAI Responses API (`POST /v1/responses`) as a client dialect: a
//! client using `client.responses.create(...)` (plain or `stream=True`) is
//! translated to canonical, served by any provider, and answered with a
//! Responses object or Responses stream events. (When the provider is OpenAI
//! itself the gateway passes `/v1/responses` through untouched instead.)
//!
//! The wire types below follow the OpenAI API reference (and the `openai`
//! SDK's `types/responses`); the translation is in [`dialect`].
//!
//! # Not supported, and why
//!
//! The gateway translates each request on its own and stores nothing, so
//! everything that needs OpenAI's server-side state is refused with an
//! `invalid_request_error` naming the parameter (silently dropping it would
//! answer a different question than the one asked):
//! * `previous_response_id`, `conversation`, `store: true`, `prompt`
//!   (stored prompt templates) and `input` items of type `item_reference`:
//!   send the whole conversation in `input` instead;
//! * `background: true` (needs a stored response to poll);
//! * `file_id` on `input_image` / `input_file`, and `file_url` (no file store;
//!   send `image_url` or `file_data`);
//! * built-in tools (`web_search`, `file_search`, `code_interpreter`,
//!   `computer_use_preview`, `image_generation`, `mcp`, `local_shell`,
//!   `shell`, `apply_patch`, freeform `custom` tools), their `input` items and
//!   `tool_choice` values, and `tool_choice: {"type":"allowed_tools"}`: they
//!   run on OpenAI's servers, and other providers have no equivalent.
//!
//! Accepted but not forwarded (no canonical equivalent, and an OpenAI Chat
//! upstream would reject them): `include`, `truncation`, `max_tool_calls`,
//! `top_logprobs`, `reasoning.summary`, `stream_options`. Reasoning is always
//! returned as summary text, with the provider's signature (when it has one)
//! in `encrypted_content`, whether or not `include` asked for it.
//!
//! # Reasoning round trips
//!
//! A provider thinking block becomes a `reasoning` output item: its text in
//! `summary`, its signature in `encrypted_content`; a redacted block (no
//! text) carries its encrypted data in `encrypted_content`. Sent back as an
//! `input` item, it becomes the same `Message::thinking` block again, which is
//! what Anthropic and Bedrock need for tool use with thinking. A real OpenAI
//! `encrypted_content` means nothing to other providers and is read the same
//! way (as a redacted block when there is no summary).
//!
//! # Streams
//!
//! Events are `event: <type>` + `data: {..., "sequence_number"}`, in the
//! order the API documents. A `length` or `content_filter` finish ends with
//! `response.incomplete` (as OpenAI does; the SDK's `responses.stream()`
//! helper only accepts `response.completed` for `get_final_response`, a
//! limit it has with OpenAI too). A failure after the first chunk sends
//! `response.failed` (what was produced so far, `status: failed`, `error`),
//! then an `error` event, which carries the OpenAI error object under a
//! top-level `error` key as well as the documented `code`/`message`/`param`:
//! the SDK raises `APIError` only for an event shaped like that.

pub mod dialect;

pub use dialect::{
    ResponsesEcho, ResponsesStreamEncoder, parse_request, parse_request_with_echo, render_error,
    render_response,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::Extra;

// ---------------------------------------------------------------------------
// Request.

/// `POST /v1/responses` body, as far as the translation reads it.
#[derive(Clone, Debug, Deserialize)]
pub struct CreateRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Input>,
    /// A string, or (newer API) a list of input items.
    #[serde(default)]
    pub instructions: Option<Input>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub reasoning: Option<ReasoningConfig>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,

    // Refused when set: they need server-side state.
    #[serde(default)]
    pub previous_response_id: Option<Value>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub prompt: Option<Value>,

    // Accepted, echoed where the response has them, not forwarded.
    #[serde(default)]
    pub include: Option<Value>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub max_tool_calls: Option<Value>,
    #[serde(default)]
    pub top_logprobs: Option<Value>,
    #[serde(default)]
    pub stream_options: Option<Value>,

    /// Everything else (`service_tier`, `safety_identifier`,
    /// `prompt_cache_key`, future fields): kept in the canonical `extra`.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input` (and list-form `instructions`): a string is one user message.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    /// Items are read one by one so an error can name `input[i]`.
    Items(Vec<Value>),
}

/// `text`: the output format (and GPT-5 `verbosity`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `text.format`: `{"type":"text"}`, `{"type":"json_object"}` or the
/// flattened `{"type":"json_schema","name","schema","strict","description"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `reasoning`: only `effort` is translated.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ReasoningConfig {
    #[serde(default)]
    pub effort: Option<String>,
    #[serde(default)]
    pub summary: Option<Value>,
    /// Deprecated spelling of `summary`.
    #[serde(default)]
    pub generate_summary: Option<Value>,
}

/// `{"type":"function","name","description","parameters","strict"}`: the
/// Responses tool shape, flatter than Chat's.
#[derive(Clone, Debug, Deserialize)]
pub struct FunctionTool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// A `message` input item (`type` may be omitted: the SDK's "easy" form).
#[derive(Clone, Debug, Deserialize)]
pub struct MessageItem {
    pub role: String,
    pub content: MessageContent,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    /// Parts are read one by one so an error can name the part.
    Parts(Vec<Value>),
}

/// A `function_call` input item: a call the model made in an earlier turn.
#[derive(Clone, Debug, Deserialize)]
pub struct FunctionCallItem {
    pub call_id: String,
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// A `function_call_output` input item: the client's result for a call.
#[derive(Clone, Debug, Deserialize)]
pub struct FunctionCallOutputItem {
    pub call_id: String,
    pub output: MessageContent,
}

/// A `reasoning` input item, as an earlier response returned it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ReasoningItem {
    #[serde(default)]
    pub summary: Vec<TextPart>,
    #[serde(default)]
    pub content: Option<Vec<TextPart>>,
    #[serde(default)]
    pub encrypted_content: Option<String>,
}

/// `summary_text` / `reasoning_text`: only the text is read.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TextPart {
    #[serde(default)]
    pub text: String,
}

// ---------------------------------------------------------------------------
// Response.

/// The `response` object (non-streamed body, and inside lifecycle events).
/// Every field the SDK's `Response` model requires is always present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: String,
    pub background: bool,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<Value>,
    pub max_output_tokens: Option<u64>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Value,
    pub store: bool,
    pub temperature: Option<f64>,
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_p: Option<f64>,
    pub truncation: String,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
    pub metadata: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        role: String,
        status: String,
        content: Vec<OutputContent>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: String,
    },
    Reasoning {
        id: String,
        summary: Vec<SummaryPart>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
        status: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText {
        text: String,
        annotations: Vec<Value>,
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SummaryPart {
    SummaryText { text: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    /// Written to the prompt cache (Anthropic cache creation); the current
    /// SDK's `ResponseUsage` requires it.
    pub cache_write_tokens: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

// ---------------------------------------------------------------------------
// Stream events. Each is sent as `event: <type>` with the JSON (plus
// `sequence_number`) as data.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created { response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<ResponseObject> },
    #[serde(rename = "response.completed")]
    Completed { response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputContent,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputContent,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
    },
    #[serde(rename = "response.refusal.done")]
    RefusalDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        refusal: String,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.reasoning_summary_part.added")]
    ReasoningSummaryPartAdded {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        part: SummaryPart,
    },
    #[serde(rename = "response.reasoning_summary_part.done")]
    ReasoningSummaryPartDone {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        part: SummaryPart,
    },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    ReasoningSummaryTextDelta {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        delta: String,
    },
    #[serde(rename = "response.reasoning_summary_text.done")]
    ReasoningSummaryTextDone {
        item_id: String,
        output_index: usize,
        summary_index: usize,
        text: String,
    },
    /// The spec's `ResponseErrorEvent` (`code`, `message`, `param`), plus the
    /// OpenAI error object under `error`: the SDK raises `APIError` only for
    /// an event whose data has a top-level `error`.
    #[serde(rename = "error")]
    Error {
        code: Option<String>,
        message: String,
        param: Option<String>,
        error: Value,
    },
}
