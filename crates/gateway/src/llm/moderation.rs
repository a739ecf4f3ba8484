//! A guard policy's moderation provider (`input.moderation`,
//! `output.moderation`): one call in the OpenAI moderation API's shape
//! (`POST {base}/moderations`) to a ModelProvider of the snapshot. Which
//! results count is pure ([`flagged_categories`]); [`ask`] is the IO.

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_config::guard::Moderation;

use crate::runtime::Runtime;

/// Longest text sent for moderation per call; the rest is not moderated.
pub const MAX_MODERATED: usize = 32 * 1024;
const MAX_ANSWER: usize = 256 * 1024;

/// The categories of a moderation answer that count for `wanted` (empty:
/// every flagged category), over all its results, sorted and unique.
/// `None` when the answer is not a moderation result.
pub fn flagged_categories(answer: &Value, wanted: &[String]) -> Option<Vec<String>> {
    let results = answer.get("results")?.as_array()?;
    let mut found = Vec::new();
    for result in results {
        let categories = result.get("categories")?.as_object()?;
        let flagged = result
            .get("flagged")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for (category, on) in categories {
            let counts = if wanted.is_empty() {
                flagged && on.as_bool() == Some(true)
            } else {
                on.as_bool() == Some(true) && wanted.iter().any(|w| w == category)
            };
            if counts && !found.contains(category) {
                found.push(category.clone());
            }
        }
    }
    found.sort();
    Some(found)
}

/// Asks `moderation` about `text`: the categories that count, or why
/// there is no answer.
pub async fn ask(
    runtime: &Runtime,
    moderation: &Moderation,
    text: &str,
) -> Result<Vec<String>, String> {
    let upstream = runtime.upstream_named(&moderation.provider)?;
    let text = &text[..text.floor_char_boundary(MAX_MODERATED)];
    let body = json!({"model": moderation.model, "input": text}).to_string();
    let request = upstream
        .moderation_request(Bytes::from(body))
        .map_err(|e| e.to_string())?;
    let collected =
        super::judge::exchange(upstream, request, moderation.timeout_ms, MAX_ANSWER).await?;
    let answer: Value = serde_json::from_slice(&collected).map_err(|e| e.to_string())?;
    flagged_categories(&answer, &moderation.categories)
        .ok_or_else(|| "answered no moderation result".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagged_categories_follow_the_policy() {
        let answer = json!({"results": [
            {"flagged": true, "categories": {"violence": true, "hate": false, "harassment": true}},
            {"flagged": false, "categories": {"self-harm": true}}
        ]});
        assert_eq!(
            flagged_categories(&answer, &[]),
            Some(vec!["harassment".to_string(), "violence".to_string()])
        );
        assert_eq!(
            flagged_categories(&answer, &["self-harm".to_string(), "hate".to_string()]),
            Some(vec!["self-harm".to_string()])
        );
        assert_eq!(flagged_categories(&json!({"error": "x"}), &[]), None);
    }
}
