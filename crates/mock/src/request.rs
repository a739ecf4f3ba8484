//! Request shapes shared by both providers. Strings borrow from the request
//! body where possible to keep the hot path allocation-light.

use std::borrow::Cow;

use serde::Deserialize;

/// Message content: a plain string or a list of typed parts/blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

/// A content part (OpenAI) or block (Anthropic); only the fields the mock
/// reads are kept.
#[derive(Debug, Deserialize)]
pub(crate) struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
}

impl Content<'_> {
    /// The text pieces of this content, in order.
    pub(crate) fn texts(&self) -> impl Iterator<Item = &str> {
        let (single, parts) = match self {
            Self::Text(text) => (Some(text.as_ref()), &[][..]),
            Self::Parts(parts) => (None, parts.as_slice()),
        };
        single
            .into_iter()
            .chain(parts.iter().filter_map(|p| p.text.as_deref()))
    }

    /// Whether any block has the given `type` (e.g. Anthropic `tool_result`).
    pub(crate) fn has_part(&self, kind: &str) -> bool {
        match self {
            Self::Text(_) => false,
            Self::Parts(parts) => parts.iter().any(|p| p.kind.as_deref() == Some(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_of_string_and_parts() {
        let text: Content = serde_json::from_str(r#""hello""#).unwrap();
        assert_eq!(text.texts().collect::<Vec<_>>(), ["hello"]);
        let parts: Content = serde_json::from_str(
            r#"[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b\n"}]"#,
        )
        .unwrap();
        assert_eq!(parts.texts().collect::<Vec<_>>(), ["a", "b\n"]);
        assert!(parts.has_part("image_url"));
        assert!(!parts.has_part("tool_result"));
    }
}
