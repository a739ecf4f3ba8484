//! Token counting where the provider offers none the gateway can call
//! (`/v1/messages/count_tokens` in front of OpenAI-, Gemini- or
//! Bedrock-format providers).
//!
//! The figure is an estimate, documented as such: about four characters of
//! English per token (OpenAI's and Anthropic's published rule of thumb), plus
//! a few tokens of framing per message and tool, and a fixed charge per image.
//! It is meant for sizing and budgeting, not billing; exact tokenizers per
//! model family come with budgets.

use bytes::Bytes;
use http::{Response, StatusCode};
use tollgate_llm::ChatRequest;
use tollgate_llm::canonical::{Content, ContentPart};

use super::ingress::Inbound;
use super::{Answer, Failure};
use crate::http::{full, with_type};

/// Framing tokens per message (role, separators).
const PER_MESSAGE: u64 = 4;
/// Framing tokens per tool definition.
const PER_TOOL: u64 = 8;
/// Tokens charged per image, whatever its size.
const PER_IMAGE: u64 = 1_000;

/// Estimated input tokens of `request`.
pub fn estimate(request: &ChatRequest) -> u64 {
    let mut chars: u64 = 0;
    let mut fixed: u64 = 0;
    for message in &request.messages {
        fixed += PER_MESSAGE;
        match &message.content {
            Some(Content::Text(text)) => chars += text.chars().count() as u64,
            Some(Content::Parts(parts)) => {
                for part in parts {
                    match part {
                        ContentPart::Text { text, .. } => chars += text.chars().count() as u64,
                        ContentPart::ImageUrl { .. } => fixed += PER_IMAGE,
                        other => {
                            chars += serde_json::to_string(other).map_or(0, |s| s.len() as u64)
                        }
                    }
                }
            }
            None => {}
        }
        for call in message.tool_calls.iter().flatten() {
            chars += (call.function.name.len() + call.function.arguments.len()) as u64;
        }
        for thinking in &message.thinking {
            chars += thinking.text.chars().count() as u64;
        }
    }
    for tool in request.tools.iter().flatten() {
        fixed += PER_TOOL;
        chars += serde_json::to_string(tool).map_or(0, |s| s.len() as u64);
    }
    fixed + chars.div_ceil(4)
}

/// Answers `count_tokens` with the estimate.
pub fn count_locally(inbound: &Inbound<'_>) -> Result<Answer, Failure> {
    let tokens = estimate(&inbound.canonical()?.request);
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

    #[test]
    fn longer_prompts_count_more_and_images_count_fixed() {
        let short = ChatRequest {
            messages: vec![Message::new(Role::User, "Hello there")],
            ..ChatRequest::default()
        };
        let long = ChatRequest {
            messages: vec![Message::new(Role::User, "Hello there ".repeat(100))],
            ..ChatRequest::default()
        };
        assert_eq!(estimate(&short), PER_MESSAGE + 3);
        assert!(
            estimate(&long) > 250 && estimate(&long) < 350,
            "{}",
            estimate(&long)
        );
    }
}
