//! Token counting: the prompt side of a budget's estimate, and
//! `/v1/messages/count_tokens` in front of providers that offer no such call
//! (OpenAI-, Gemini- or Bedrock-format).
//!
//! OpenAI models are counted exactly with their published BPE vocabularies
//! (`o200k_base` for GPT-4o, GPT-4.1, GPT-5, the o-series and gpt-oss;
//! `cl100k_base` for GPT-4, GPT-3.5 and the v3 embeddings), through a
//! tiktoken-compatible encoder, plus the per-message framing of OpenAI's own
//! counting recipe (3 tokens a message, 1 for a name, 3 to prime the reply).
//! Other families publish no tokenizer the gateway can use (Claude, Gemini)
//! or vary by deployment (self-hosted models): for them the figure is an
//! approximation, documented as such: four characters of text a token
//! (OpenAI's and Anthropic's published rule of thumb) and 4 tokens of framing
//! a message. Images count a fixed 1,000 tokens either way, tools their JSON.

use bytes::Bytes;
use http::{Response, StatusCode};
use tollgate_api::ProviderType;
use tollgate_llm::ChatRequest;
use tollgate_llm::canonical::{Content, ContentPart};

use super::ingress::Inbound;
use super::{Answer, Failure};
use crate::http::{full, with_type};

/// Framing tokens per tool definition.
const PER_TOOL: u64 = 8;
/// Tokens charged per image, whatever its size.
const PER_IMAGE: u64 = 1_000;

/// How a model's text becomes tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    O200k,
    Cl100k,
    /// Four characters a token.
    Approximate,
}

impl Tokenizer {
    /// The tokenizer of `model` as sent to a provider of type `provider`.
    /// OpenAI and Azure deployments of unknown name count as current OpenAI
    /// models (o200k); elsewhere a recognised OpenAI model name (a vLLM
    /// serving gpt-oss) still gets its vocabulary.
    pub fn for_model(provider: ProviderType, model: &str) -> Self {
        let model = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let starts = |prefixes: &[&str]| prefixes.iter().any(|p| model.starts_with(p));
        if starts(&[
            "gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-oss", "chatgpt-", "o1", "o3", "o4",
            "codex-",
        ]) {
            return Self::O200k;
        }
        if starts(&[
            "gpt-4",
            "gpt-3.5",
            "gpt-35",
            "text-embedding-3",
            "text-embedding-ada-002",
        ]) {
            return Self::Cl100k;
        }
        match provider {
            ProviderType::OpenAI | ProviderType::AzureOpenAI => Self::O200k,
            _ => Self::Approximate,
        }
    }

    /// Tokens of plain text.
    pub fn count(self, text: &str) -> u64 {
        match self {
            Self::O200k => bpe_openai::o200k_base().count(text) as u64,
            Self::Cl100k => bpe_openai::cl100k_base().count(text) as u64,
            Self::Approximate => (text.chars().count() as u64).div_ceil(4),
        }
    }

    /// Loads the vocabulary now (tens of milliseconds) rather than on the
    /// first request that needs it.
    pub fn load(self) {
        let _ = self.count("warm");
    }

    fn per_message(self) -> u64 {
        match self {
            Self::O200k | Self::Cl100k => 3,
            Self::Approximate => 4,
        }
    }

    fn reply_priming(self) -> u64 {
        match self {
            Self::O200k | Self::Cl100k => 3,
            Self::Approximate => 0,
        }
    }
}

/// Input tokens of `request` as `tokenizer` counts them.
pub fn estimate(request: &ChatRequest, tokenizer: Tokenizer) -> u64 {
    let count = |text: &str| tokenizer.count(text);
    let mut tokens = tokenizer.reply_priming();
    for message in &request.messages {
        tokens += tokenizer.per_message() + count(message.role.as_str());
        if let Some(name) = &message.name {
            tokens += 1 + count(name);
        }
        match &message.content {
            Some(Content::Text(text)) => tokens += count(text),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    tokens += match part {
                        ContentPart::Text { text, .. } => count(text),
                        ContentPart::ImageUrl { .. } => PER_IMAGE,
                        other => json_tokens(tokenizer, other),
                    };
                }
            }
            None => {}
        }
        for call in message.tool_calls.iter().flatten() {
            tokens += count(&call.function.name) + count(&call.function.arguments);
        }
        for thinking in &message.thinking {
            tokens += count(&thinking.text);
        }
    }
    for tool in request.tools.iter().flatten() {
        tokens += PER_TOOL + json_tokens(tokenizer, tool);
    }
    tokens
}

/// Tokens of a value's JSON (tool definitions, non-text parts). The
/// canonical types always serialize.
fn json_tokens<T: serde::Serialize>(tokenizer: Tokenizer, value: &T) -> u64 {
    tokenizer.count(&serde_json::to_string(value).unwrap_or_default())
}

/// Answers `count_tokens` with the estimate.
pub fn count_locally(inbound: &Inbound<'_>, tokenizer: Tokenizer) -> Result<Answer, Failure> {
    let tokens = estimate(&inbound.canonical()?.request, tokenizer);
    let body = Bytes::from(tollgate_llm::anthropic::dialect::render_count_tokens(
        tokens,
    ));
    let response: Response<_> = with_type(StatusCode::OK, full(body), "application/json");
    Ok(Answer::Full(response, 200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_llm::canonical::{Message, Role};

    fn chat(text: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::new(Role::User, text)],
            ..ChatRequest::default()
        }
    }

    #[test]
    fn openai_models_get_their_vocabulary() {
        use ProviderType::*;
        use Tokenizer::*;
        let cases = [
            (OpenAI, "gpt-4o-mini", O200k),
            (OpenAI, "o3-mini", O200k),
            (OpenAI, "gpt-5", O200k),
            (OpenAI, "gpt-4-turbo", Cl100k),
            (OpenAI, "text-embedding-3-small", Cl100k),
            (AzureOpenAI, "prod-chat", O200k),
            (OpenAICompatible, "openai/gpt-oss-20b", O200k),
            (Anthropic, "claude-sonnet-4-5", Approximate),
            (OpenAICompatible, "llama-3.1-8b", Approximate),
        ];
        for (provider, model, expected) in cases {
            assert_eq!(Tokenizer::for_model(provider, model), expected, "{model}");
        }
    }

    #[test]
    fn counts_match_tiktoken() {
        // Reference counts from OpenAI's tiktoken 0.14 (`encoding.encode`);
        // tests/python/test_tokenizer.py checks many more against it.
        assert_eq!(Tokenizer::Cl100k.count("tiktoken is great!"), 6);
        assert_eq!(Tokenizer::O200k.count("tiktoken is great!"), 6);
        assert_eq!(Tokenizer::Cl100k.count(""), 0);
    }

    #[test]
    fn chat_framing_follows_openais_recipe() {
        // 3 to prime the reply, 3 for the message, 1 for "user", then the text.
        let text = "Hello there";
        assert_eq!(
            estimate(&chat(text), Tokenizer::O200k),
            7 + Tokenizer::O200k.count(text)
        );
        let mut named = chat(text);
        named.messages[0].name = Some("ann".into());
        assert_eq!(
            estimate(&named, Tokenizer::O200k),
            estimate(&chat(text), Tokenizer::O200k) + 1 + Tokenizer::O200k.count("ann")
        );
    }

    #[test]
    fn the_approximation_is_four_characters_a_token_and_images_count_fixed() {
        // 4 framing + 1 role + ceil(11 / 4).
        assert_eq!(estimate(&chat("Hello there"), Tokenizer::Approximate), 8);
        let long = estimate(&chat(&"Hello there ".repeat(100)), Tokenizer::Approximate);
        assert_eq!(long, 5 + 300);
        let mut image = chat("");
        image.messages[0].content = Some(Content::Parts(vec![ContentPart::ImageUrl {
            image_url: serde_json::from_value(
                serde_json::json!({"url": "https://example.invalid/a.png"}),
            )
            .unwrap(),
        }]));
        assert_eq!(estimate(&image, Tokenizer::Approximate), 5 + PER_IMAGE);
    }
}
