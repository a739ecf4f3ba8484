//! OpenAI-compatible endpoints: chat completions, embeddings, models.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde::Deserialize;
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api_error::ApiError;
use crate::body::{MockBody, StreamBuilder};
use crate::config::Behavior;
use crate::plan::tool_calls;
use crate::request::Content;
use crate::server::{
    ModelObject, State, generation_time, json_response, pause, push_json, sse_response, unix_now,
};
use crate::text::{
    PromptCounter, Rng, completion_text, estimate_tokens, fragments, make_id, words,
};

const SYSTEM_FINGERPRINT: &str = "fp_tollgate_mock";
/// Bytes per streamed tool-argument fragment.
const ARGUMENT_FRAGMENT: usize = 8;
const DEFAULT_EMBEDDING_DIMENSIONS: u32 = 256;
const MAX_EMBEDDING_DIMENSIONS: u32 = 8192;
const MAX_EMBEDDING_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    /// Kept raw: its exact bytes seed the generated answer.
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(borrow, default)]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
struct Tool {
    #[serde(default)]
    function: Option<FunctionDef>,
}

#[derive(Deserialize)]
struct FunctionDef {
    name: String,
    #[serde(default)]
    parameters: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolChoice<'a> {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(#[serde(borrow)] Cow<'a, str>),
    Named {
        #[serde(borrow)]
        function: NamedFunction<'a>,
    },
    /// Newer forms (e.g. `allowed_tools`) behave like `"auto"`.
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct NamedFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// What the assistant answers with.
enum Reply {
    Text {
        seed: u64,
        tokens: u32,
        finish_reason: &'static str,
    },
    /// One call, or several with the `parallel_tools` override.
    ToolCalls(Vec<CallReply>),
    /// `echo=1`: the last user message, repeated.
    Echo(String),
}

struct CallReply {
    call_id: String,
    name: String,
    arguments: String,
}

impl Reply {
    fn completion_tokens(&self) -> u64 {
        match self {
            Self::Text { tokens, .. } => u64::from(*tokens),
            Self::Echo(text) => text.split_whitespace().count() as u64,
            Self::ToolCalls(calls) => calls
                .iter()
                .map(|c| estimate_tokens(c.arguments.len()).max(1))
                .sum(),
        }
    }
}

/// Fields repeated in every chunk of one completion.
struct ChatMeta<'a> {
    id: String,
    created: u64,
    model: &'a str,
    prompt_tokens: u64,
}

/// Chat completions; `deployment` (Azure) replaces the body's `model`.
pub(crate) async fn chat_completions(
    state: &State,
    headers: &HeaderMap,
    deployment: Option<&str>,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let req: ChatRequest<'_> = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let model = match deployment {
        Some(deployment) => deployment,
        None => req
            .model
            .as_deref()
            .ok_or_else(|| ApiError::missing("model"))?,
    };
    let raw_messages = req.messages.ok_or_else(|| ApiError::missing("messages"))?;
    let messages: Vec<ChatMessage<'_>> = serde_json::from_str(raw_messages.get())
        .map_err(|e| ApiError::invalid(format!("Invalid 'messages': {e}"), Some("messages")))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            Some("messages"),
        ));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "tollgate-mock only supports n=1",
            Some("n"),
        ));
    }

    let mut behavior = state.behavior(headers)?;
    if let Some(content) = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_ref())
    {
        for text in content.texts() {
            behavior.apply_directives(text)?;
        }
    }
    let mut prompt = PromptCounter::default();
    for message in &messages {
        prompt.message();
        for text in message.content.iter().flat_map(Content::texts) {
            prompt.text(text);
        }
    }
    let seed = state.content_seed(model, &[raw_messages.get().as_bytes()]);
    let tools = select_tools(&req, &messages)?;

    state.gate(&behavior, &body).await?;

    let mut rng = state.rng();
    let meta = ChatMeta {
        id: make_id("chatcmpl-", &mut rng),
        created: unix_now(),
        model,
        prompt_tokens: prompt.tokens(),
    };
    // A guard's LLM judge: the mock stands in for the remote classifier
    // with a few phrase rules of its own (see `judge_verdict`).
    let judged = messages
        .first()
        .filter(|m| m.role == "system")
        .and_then(|m| m.content.as_ref())
        .filter(|c| c.texts().any(|t| t.starts_with(JUDGE_MARKER)))
        .and_then(|_| messages.iter().rev().find(|m| m.role == "user"))
        .map(|m| {
            judge_verdict(
                &m.content
                    .iter()
                    .flat_map(Content::texts)
                    .collect::<String>(),
            )
        });
    let echo = judged.or_else(|| {
        behavior.echo.then(|| {
            let last_user = messages.iter().rev().find(|m| m.role == "user");
            crate::config::echo_text(
                last_user
                    .and_then(|m| m.content.as_ref())
                    .into_iter()
                    .flat_map(Content::texts),
            )
        })
    });
    let reply = match tools.is_empty() {
        _ if echo.is_some() => Reply::Echo(echo.unwrap_or_default()),
        false => tool_call_reply(&tools, seed, behavior.parallel_tools, &mut rng),
        true => {
            let cap = req.max_completion_tokens.or(req.max_tokens);
            let tokens = cap.map_or(behavior.output_tokens, |c| c.min(behavior.output_tokens));
            let finish_reason = if cap.is_some_and(|c| c < behavior.output_tokens) {
                "length"
            } else {
                "stop"
            };
            Reply::Text {
                seed,
                tokens,
                finish_reason,
            }
        }
    };

    if req.stream == Some(true) {
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        return Ok(sse_response(stream_chat(
            &meta,
            &reply,
            &behavior,
            include_usage,
        )));
    }
    pause(generation_time(&behavior, reply.completion_tokens())).await;
    Ok(json_response(
        &completion(&meta, &reply),
        behavior.disconnect_after,
    ))
}

/// The tools that may be called (first ones first), if the request offers
/// tools, allows calling them, and is not already answering a tool result.
/// Every format decides the same way, so one prompt calls a tool everywhere.
fn select_tools<'r>(
    req: &'r ChatRequest<'_>,
    messages: &[ChatMessage<'_>],
) -> Result<Vec<&'r FunctionDef>, ApiError> {
    let functions = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref());
    let answering_tool = messages.last().is_some_and(|m| m.role == "tool");
    match &req.tool_choice {
        _ if answering_tool => Ok(Vec::new()),
        Some(ToolChoice::Mode(mode)) if mode == "none" => Ok(Vec::new()),
        Some(ToolChoice::Named { function }) => {
            let found: Vec<_> = functions.filter(|f| f.name == function.name).collect();
            if found.is_empty() {
                return Err(ApiError::invalid(
                    format!("tool_choice names unknown function '{}'", function.name),
                    Some("tool_choice"),
                ));
            }
            Ok(found)
        }
        _ => Ok(functions.collect()),
    }
}

/// Arguments depend only on the request content; the call ids are random.
fn tool_call_reply(tools: &[&FunctionDef], seed: u64, count: u32, rng: &mut Rng) -> Reply {
    let candidates = tools.iter().map(|t| (t.name.as_str(), &t.parameters));
    Reply::ToolCalls(
        tool_calls(candidates, seed, count)
            .into_iter()
            .map(|call| CallReply {
                call_id: make_id("call_", rng),
                name: call.name,
                arguments: call.json,
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCallOut<'a>,
}

#[derive(Serialize)]
struct FunctionCallOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize, Default)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Default)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

fn completion<'a>(meta: &'a ChatMeta<'a>, reply: &'a Reply) -> Completion<'a> {
    let (message, finish_reason) = match reply {
        Reply::Text {
            seed,
            tokens,
            finish_reason,
        } => (
            AssistantMessage {
                role: "assistant",
                content: Some(completion_text(*seed, *tokens as usize)),
                refusal: None,
                tool_calls: None,
            },
            *finish_reason,
        ),
        Reply::Echo(text) => (
            AssistantMessage {
                role: "assistant",
                content: Some(text.clone()),
                refusal: None,
                tool_calls: None,
            },
            "stop",
        ),
        Reply::ToolCalls(calls) => (
            AssistantMessage {
                role: "assistant",
                content: None,
                refusal: None,
                tool_calls: Some(
                    calls
                        .iter()
                        .map(|c| ToolCallOut {
                            id: &c.call_id,
                            kind: "function",
                            function: FunctionCallOut {
                                name: &c.name,
                                arguments: &c.arguments,
                            },
                        })
                        .collect(),
                ),
            },
            "tool_calls",
        ),
    };
    Completion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: [Choice {
            index: 0,
            message,
            logprobs: None,
            finish_reason,
        }],
        usage: Usage::new(meta.prompt_tokens, reply.completion_tokens()),
        system_fingerprint: SYSTEM_FINGERPRINT,
    }
}

/// Renders the whole SSE stream up front; the body releases it chunk by
/// chunk: ttft before the first chunk, `token_delay` between tokens.
fn stream_chat(
    meta: &ChatMeta<'_>,
    reply: &Reply,
    behavior: &Behavior,
    include_usage: bool,
) -> MockBody {
    // `data: {...,"choices":[` shared by every chunk.
    let mut prefix = Vec::with_capacity(192);
    prefix.extend_from_slice(b"data: {\"id\":");
    push_json(&mut prefix, &meta.id);
    prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
    push_json(&mut prefix, &meta.created);
    prefix.extend_from_slice(b",\"model\":");
    push_json(&mut prefix, meta.model);
    prefix.extend_from_slice(b",\"system_fingerprint\":");
    push_json(&mut prefix, SYSTEM_FINGERPRINT);
    prefix.extend_from_slice(b",\"choices\":[");

    let pieces = match reply {
        Reply::Text { tokens, .. } => *tokens as usize,
        Reply::Echo(text) => text.split_whitespace().count(),
        Reply::ToolCalls(calls) => calls
            .iter()
            .map(|c| c.arguments.len().div_ceil(ARGUMENT_FRAGMENT) + 1)
            .sum(),
    };
    let mut out = StreamBuilder::with_capacity((prefix.len() + 96) * (pieces + 4), pieces + 4);
    let chunk = |out: &mut StreamBuilder,
                 delta: &dyn Fn(&mut Vec<u8>),
                 finish: Option<&str>,
                 delay: Duration| {
        let buf = out.buf();
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(b"{\"index\":0,\"delta\":");
        delta(buf);
        buf.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(reason) => push_json(buf, reason),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b"}]");
        if include_usage {
            buf.extend_from_slice(b",\"usage\":null");
        }
        buf.extend_from_slice(b"}\n\n");
        out.end_frame(delay);
    };
    // The first piece follows the opening chunk immediately; the ttft wait
    // is before the opening chunk so "first byte" and "first token" agree.
    let gap = |i: usize| {
        if i == 0 {
            Duration::ZERO
        } else {
            behavior.token_delay
        }
    };

    let finish_reason = match reply {
        Reply::Text {
            seed,
            tokens,
            finish_reason,
        } => {
            chunk(
                &mut out,
                &|b| b.extend_from_slice(br#"{"role":"assistant","content":""}"#),
                None,
                behavior.ttft,
            );
            for (i, word) in words(*seed, *tokens as usize).enumerate() {
                let delta = |b: &mut Vec<u8>| {
                    // Words are plain ASCII letters: no JSON escaping needed.
                    b.extend_from_slice(b"{\"content\":\"");
                    if i > 0 {
                        b.push(b' ');
                    }
                    b.extend_from_slice(word.as_bytes());
                    b.extend_from_slice(b"\"}");
                };
                chunk(&mut out, &delta, None, gap(i));
            }
            *finish_reason
        }
        Reply::Echo(text) => {
            chunk(
                &mut out,
                &|b| b.extend_from_slice(br#"{"role":"assistant","content":""}"#),
                None,
                behavior.ttft,
            );
            for (i, piece) in crate::plan::pieces(text).into_iter().enumerate() {
                let delta = |b: &mut Vec<u8>| {
                    b.extend_from_slice(b"{\"content\":");
                    push_json(b, piece);
                    b.push(b'}');
                };
                chunk(&mut out, &delta, None, gap(i));
            }
            "stop"
        }
        Reply::ToolCalls(calls) => {
            for (index, call) in calls.iter().enumerate() {
                // The first call's chunk opens the assistant message.
                let opening = |b: &mut Vec<u8>| {
                    b.extend_from_slice(if index == 0 {
                        br#"{"role":"assistant","content":null,"tool_calls":[{"index":"#
                    } else {
                        br#"{"tool_calls":[{"index":"#
                    });
                    push_json(b, &index);
                    b.extend_from_slice(br#","id":"#);
                    push_json(b, &call.call_id);
                    b.extend_from_slice(br#","type":"function","function":{"name":"#);
                    push_json(b, &call.name);
                    b.extend_from_slice(if index == 0 {
                        br#","arguments":""}}],"refusal":null}"#
                    } else {
                        br#","arguments":""}}]}"#
                    });
                };
                let delay = if index == 0 {
                    behavior.ttft
                } else {
                    behavior.token_delay
                };
                chunk(&mut out, &opening, None, delay);
                for (i, fragment) in fragments(&call.arguments, ARGUMENT_FRAGMENT).enumerate() {
                    let delta = |b: &mut Vec<u8>| {
                        b.extend_from_slice(br#"{"tool_calls":[{"index":"#);
                        push_json(b, &index);
                        b.extend_from_slice(br#","function":{"arguments":"#);
                        push_json(b, fragment);
                        b.extend_from_slice(b"}}]}");
                    };
                    chunk(&mut out, &delta, None, gap(i));
                }
            }
            "tool_calls"
        }
    };
    chunk(
        &mut out,
        &|b| b.extend_from_slice(b"{}"),
        Some(finish_reason),
        Duration::ZERO,
    );

    if include_usage {
        let buf = out.buf();
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(b"],\"usage\":");
        push_json(
            buf,
            &Usage::new(meta.prompt_tokens, reply.completion_tokens()),
        );
        buf.extend_from_slice(b"}\n\n");
        out.end_frame(Duration::ZERO);
    }
    out.buf().extend_from_slice(b"data: [DONE]\n\n");
    out.end_frame(Duration::ZERO);
    out.finish(behavior.disconnect_after)
}

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<EmbeddingInput<'a>>,
    #[serde(borrow, default)]
    encoding_format: Option<Cow<'a, str>>,
    #[serde(default)]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Texts(#[serde(borrow)] Vec<Cow<'a, str>>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// One input to embed: text, or pre-tokenised ids.
enum EmbeddingItem<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

impl EmbeddingInput<'_> {
    fn items(&self) -> Vec<EmbeddingItem<'_>> {
        match self {
            Self::Text(text) => vec![EmbeddingItem::Text(text)],
            Self::Texts(texts) => texts.iter().map(|t| EmbeddingItem::Text(t)).collect(),
            Self::Tokens(tokens) => vec![EmbeddingItem::Tokens(tokens)],
            Self::TokenLists(lists) => lists.iter().map(|l| EmbeddingItem::Tokens(l)).collect(),
        }
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Embeddings; `deployment` (Azure) replaces the body's `model`.
pub(crate) async fn embeddings(
    state: &State,
    headers: &HeaderMap,
    deployment: Option<&str>,
    body: Bytes,
) -> Result<Response<MockBody>, ApiError> {
    let req: EmbeddingsRequest<'_> =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let model = match deployment {
        Some(deployment) => deployment,
        None => req
            .model
            .as_deref()
            .ok_or_else(|| ApiError::missing("model"))?,
    };
    let input = req
        .input
        .as_ref()
        .ok_or_else(|| ApiError::missing("input"))?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("Invalid encoding_format '{other}': expected 'float' or 'base64'"),
                Some("encoding_format"),
            ));
        }
    };
    let dimensions = req.dimensions.unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS);
    if !(1..=MAX_EMBEDDING_DIMENSIONS).contains(&dimensions) {
        return Err(ApiError::invalid(
            format!("dimensions must be within 1..={MAX_EMBEDDING_DIMENSIONS}"),
            Some("dimensions"),
        ));
    }
    let items = input.items();
    let empty = |item: &EmbeddingItem<'_>| match item {
        EmbeddingItem::Text(text) => text.is_empty(),
        EmbeddingItem::Tokens(tokens) => tokens.is_empty(),
    };
    if items.is_empty() || items.len() > MAX_EMBEDDING_INPUTS || items.iter().any(empty) {
        return Err(ApiError::invalid(
            format!(
                "'input' must be a non-empty string or an array of 1..={MAX_EMBEDDING_INPUTS} non-empty inputs"
            ),
            Some("input"),
        ));
    }

    let behavior = state.behavior(headers)?;
    state.gate(&behavior, &body).await?;

    let mut prompt_tokens = 0;
    let mut token_bytes = Vec::new();
    let data = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let seed = match item {
                EmbeddingItem::Text(text) => {
                    prompt_tokens += estimate_tokens(text.chars().count()).max(1);
                    state.content_seed(model, &[text.as_bytes()])
                }
                EmbeddingItem::Tokens(tokens) => {
                    prompt_tokens += tokens.len() as u64;
                    token_bytes.clear();
                    token_bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
                    state.content_seed(model, &[b"tokens", &token_bytes])
                }
            };
            let vector = unit_vector(seed, dimensions as usize);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValue::Float(vector)
            };
            EmbeddingObject {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();

    pause(behavior.ttft).await;
    Ok(json_response(
        &EmbeddingList {
            object: "list",
            data,
            model,
            usage: EmbeddingUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        },
        behavior.disconnect_after,
    ))
}

/// A deterministic vector of length one.
pub(crate) fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut vector: Vec<f64> = (0..dimensions)
        .map(|_| rng.next_f64() * 2.0 - 1.0)
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector.into_iter().map(|x| x as f32).collect()
}

/// `GET /v1/models/{id}`.
pub(crate) fn model(state: &State, id: &str) -> Result<Response<MockBody>, ApiError> {
    if state.config.models.iter().any(|m| m == id) {
        return Ok(json_response(&ModelObject::new(id), None));
    }
    let mut err = ApiError::new(
        StatusCode::NOT_FOUND,
        format!("The model '{id}' does not exist"),
    );
    err.param = Some(Cow::Borrowed("model"));
    err.code = Some("model_not_found");
    Err(err)
}

/// How a guard's judge request starts (the gateway's `judge::INSTRUCTIONS`).
const JUDGE_MARKER: &str = "You are a prompt-injection classifier";

/// The stand-in judge's verdict on `text`: injection when it contains one
/// of a few override phrases. Deterministic, and deliberately different
/// from the gateway's own heuristics.
fn judge_verdict(text: &str) -> String {
    const PHRASES: [&str; 10] = [
        "ignore all",
        "ignore previous",
        "ignore your",
        "disregard",
        "system prompt",
        "you are now",
        "developer mode",
        "jailbreak",
        "new instructions",
        "forget everything",
    ];
    let lower = text.to_lowercase();
    let hit = PHRASES.iter().any(|p| lower.contains(p));
    format!(
        "{{\"injection\": {hit}, \"confidence\": {}}}",
        if hit { "0.9" } else { "0.1" }
    )
}

/// `POST /v1/moderations`: the OpenAI moderation API's shape, with a
/// stand-in classifier: a category is flagged when the input contains one
/// of its phrases (deterministic; a real provider's model cannot run here).
pub(crate) fn moderations(body: Bytes) -> Result<Response<MockBody>, ApiError> {
    const CATEGORIES: [(&str, &[&str]); 5] = [
        ("violence", &["kill", "murder", "stab", "shoot"]),
        ("hate", &["subhuman", "vermin"]),
        ("harassment", &["worthless idiot", "pathetic loser"]),
        ("self-harm", &["hurt myself", "end my life"]),
        ("illicit", &["make meth", "build a bomb"]),
    ];
    let request: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(&e))?;
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(text) => Some(text.clone()),
                other => other
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
            .collect(),
        _ => return Err(ApiError::missing("input")),
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let lower = text.to_lowercase();
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut flagged = false;
            for (category, phrases) in CATEGORIES {
                let hit = phrases.iter().any(|p| lower.contains(p));
                flagged |= hit;
                categories.insert(category.into(), Value::Bool(hit));
                scores.insert(category.into(), serde_json::json!(if hit { 0.93 } else { 0.002 }));
            }
            serde_json::json!({"flagged": flagged, "categories": categories, "category_scores": scores})
        })
        .collect();
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest");
    Ok(json_response(
        &serde_json::json!({"id": "modr-mock", "model": model, "results": results}),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_vectors_are_normalised_and_deterministic() {
        let v = unit_vector(5, 256);
        let norm: f64 = v
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(v, unit_vector(5, 256));
        assert_ne!(v, unit_vector(6, 256));
    }
}
