//! Per-provider credential checks, each failing with the status and wording
//! of the real provider so a gateway's header bugs surface in tests.

use std::borrow::Cow;

use http::{HeaderMap, StatusCode};

use crate::api_error::ApiError;

/// Compares secrets without an early exit on the first differing byte.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of `Authorization: Bearer <token>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// OpenAI: `Authorization: Bearer <key>`.
pub(crate) fn openai(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match bearer(headers) {
        Some(key) if same_secret(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(key) => {
            let mut err = ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    redact(key)
                ),
            );
            err.code = Some("invalid_api_key");
            Err(err)
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )),
    }
}

/// Azure OpenAI: `api-key: <key>`, or an Entra ID `Authorization: Bearer`.
pub(crate) fn azure(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let presented = header(headers, "api-key").or_else(|| bearer(headers));
    match presented {
        Some(key) if same_secret(key.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        )),
    }
}

/// Anthropic: `anthropic-version` is always required; `x-api-key` when configured.
pub(crate) fn anthropic(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    if header(headers, "anthropic-version").is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            "anthropic-version: header is required",
            None,
        ));
    }
    let Some(expected) = expected else {
        return Ok(());
    };
    match header(headers, "x-api-key") {
        Some(key) if same_secret(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid x-api-key")
            .with_kind("authentication_error")),
        None => Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "x-api-key header is required")
                .with_kind("authentication_error"),
        ),
    }
}

/// Gemini: `x-goog-api-key` or `?key=`. Like Google, a missing key is 403
/// PERMISSION_DENIED and a wrong one 400 INVALID_ARGUMENT/API_KEY_INVALID.
pub(crate) fn gemini(
    expected: Option<&str>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let from_query = query.and_then(|q| query_param(q, "key"));
    let presented: Option<Cow<'_, str>> = header(headers, "x-goog-api-key")
        .map(Cow::Borrowed)
        .or(from_query);
    match presented {
        Some(key) if same_secret(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => {
            let mut err =
                ApiError::invalid("API key not valid. Please pass a valid API key.", None);
            err.reason = Some("API_KEY_INVALID");
            Err(err)
        }
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        )),
    }
}

/// Shows only the end of a key, as providers do in error messages.
fn redact(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("****{tail}")
}

/// The decoded value of `name` in a query string (`+` is a space).
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` escapes (and `+`); malformed escapes are kept verbatim.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param("alt=sse&key=a%2Bb+c", "key").as_deref(),
            Some("a+b c")
        );
        assert_eq!(query_param("alt=sse", "key"), None);
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decode("x%3A0"), "x:0");
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
