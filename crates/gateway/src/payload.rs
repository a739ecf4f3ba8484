//! The request body as the gateway sees it: top-level fields kept as raw
//! JSON, so prompts (often many kilobytes) are never parsed into a tree or
//! re-encoded; only `model`, `stream` and `stream_options` are read or changed.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::dialect::Endpoint;
use crate::error::ApiError;
use crate::llm::tokens::Tokenizer;

pub struct Payload<'a> {
    fields: BTreeMap<String, &'a RawValue>,
    /// Fields a stage rewrote (the guard, on embeddings input): sent
    /// instead of the client's.
    rewritten: BTreeMap<String, Box<RawValue>>,
    pub model: String,
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// Chat Completions streams report usage only when asked: the gateway
    /// always asks, to account tokens.
    force_usage: bool,
}

impl<'a> Payload<'a> {
    /// Whether the body has the top-level field `name`.
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The top-level field `name` as it will be sent.
    pub fn field(&self, name: &str) -> Option<&RawValue> {
        match self.rewritten.get(name) {
            Some(value) => Some(value),
            None => self.fields.get(name).copied(),
        }
    }

    /// Sends `value` as the top-level field `name` (which the body has).
    pub fn rewrite(&mut self, name: &str, value: Box<RawValue>) {
        if self.fields.contains_key(name) {
            self.rewritten.insert(name.to_string(), value);
        }
    }

    /// Parses the top level and checks what the gateway needs before routing;
    /// the provider validates the rest.
    pub fn parse(bytes: &'a [u8], endpoint: Endpoint) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(bytes).map_err(ApiError::invalid_json)?;
        let fields: BTreeMap<String, &'a RawValue> = match serde_json::from_str(text) {
            Ok(fields) => fields,
            Err(error) if error.is_data() => {
                return Err(ApiError::invalid_request(
                    "invalid_body",
                    "The request body must be a JSON object.",
                ));
            }
            Err(error) => return Err(ApiError::invalid_json(error)),
        };
        let model = match fields
            .get("model")
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
        {
            Some(Ok(Value::String(model))) if !model.is_empty() => model,
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "invalid_type",
                    "'model' must be a non-empty string.",
                )
                .with_param("model"));
            }
            None => {
                return Err(ApiError::invalid_request(
                    "missing_required_parameter",
                    "You must provide a model parameter.",
                )
                .with_param("model"));
            }
        };
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => {
                check_messages(fields.get("messages").copied())?
            }
            Endpoint::Responses => {}
            Endpoint::Embeddings => {
                if !fields.contains_key("input") {
                    return Err(ApiError::invalid_request(
                        "missing_required_parameter",
                        "Missing required parameter: 'input'.",
                    )
                    .with_param("input"));
                }
            }
        }
        let stream = match fields.get("stream").map(|raw| raw.get()) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "invalid_type",
                    "'stream' must be a boolean.",
                )
                .with_param("stream"));
            }
        };
        let client_wants_usage = fields
            .get("stream_options")
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
            .and_then(|options| options.get("include_usage").and_then(Value::as_bool))
            == Some(true);
        Ok(Self {
            fields,
            rewritten: BTreeMap::new(),
            model,
            stream: stream && endpoint.can_stream(),
            client_wants_usage,
            force_usage: endpoint == Endpoint::ChatCompletions,
        })
    }

    /// The body to send upstream: `model` replaced and, for streams,
    /// `stream_options.include_usage` forced on so usage can be accounted.
    pub fn to_upstream(&self, model: &str) -> Result<Bytes, ApiError> {
        let stream_options = if self.stream && self.force_usage {
            Some(self.stream_options_with_usage()?)
        } else {
            None
        };
        let encode = UpstreamBody {
            payload: self,
            model,
            stream_options: stream_options.as_deref(),
        };
        serde_json::to_vec(&encode)
            .map(Bytes::from)
            .map_err(ApiError::invalid_json)
    }

    /// Tokens of an embeddings request's `input`: text as `tokenizer`
    /// counts it, token arrays at their length.
    pub fn embedding_input_tokens(&self, tokenizer: Tokenizer) -> u64 {
        let Some(raw) = self.field("input") else {
            return 0;
        };
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => embedding_tokens(&value, tokenizer),
            Err(_) => raw.get().len().div_ceil(4) as u64,
        }
    }

    fn stream_options_with_usage(&self) -> Result<Box<RawValue>, ApiError> {
        let mut options = match self
            .fields
            .get("stream_options")
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
        {
            Some(Ok(Value::Object(options))) => options,
            Some(Ok(Value::Null)) | None => Map::new(),
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "invalid_type",
                    "'stream_options' must be an object.",
                )
                .with_param("stream_options"));
            }
        };
        options.insert("include_usage".into(), Value::Bool(true));
        serde_json::value::to_raw_value(&options).map_err(ApiError::invalid_json)
    }
}

fn embedding_tokens(value: &Value, tokenizer: Tokenizer) -> u64 {
    match value {
        Value::String(text) => tokenizer.count(text),
        // A list of strings, or one token array, or a list of token arrays.
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                other => embedding_tokens(other, tokenizer),
            })
            .sum(),
        _ => 0,
    }
}

/// `messages` must be a non-empty array; its elements are left to the provider.
fn check_messages(messages: Option<&RawValue>) -> Result<(), ApiError> {
    let Some(messages) = messages else {
        return Err(ApiError::invalid_request(
            "missing_required_parameter",
            "Missing required parameter: 'messages'.",
        )
        .with_param("messages"));
    };
    let inner = messages.get().strip_prefix('[').map(str::trim_start);
    match inner {
        None => Err(
            ApiError::invalid_request("invalid_type", "'messages' must be an array.")
                .with_param("messages"),
        ),
        Some(rest) if rest.starts_with(']') => Err(ApiError::invalid_request(
            "empty_array",
            "'messages' must contain at least one message.",
        )
        .with_param("messages")),
        Some(_) => Ok(()),
    }
}

struct UpstreamBody<'p, 'a> {
    payload: &'p Payload<'a>,
    model: &'p str,
    stream_options: Option<&'p RawValue>,
}

impl Serialize for UpstreamBody<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = &self.payload.fields;
        let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
        map.serialize_entry("model", self.model)?;
        if let Some(options) = self.stream_options {
            map.serialize_entry("stream_options", options)?;
        }
        for (key, value) in fields {
            let replaced =
                key == "model" || (key == "stream_options" && self.stream_options.is_some());
            if replaced {
                continue;
            }
            match self.payload.rewritten.get(key) {
                Some(value) => map.serialize_entry(key, value)?,
                None => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, endpoint: Endpoint) -> Result<Payload<'_>, ApiError> {
        Payload::parse(json.as_bytes(), endpoint)
    }

    fn upstream(json: &str, model: &str) -> Value {
        let payload = parse(json, Endpoint::ChatCompletions).unwrap();
        serde_json::from_slice(&payload.to_upstream(model).unwrap()).unwrap()
    }

    #[test]
    fn rewrites_only_the_model_and_keeps_everything_else_verbatim() {
        let body = r#"{"model":"chat","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.25,"tools":[{"type":"function"}]}"#;
        let out = upstream(body, "gpt-4o-mini");
        let mut expected: Value = serde_json::from_str(body).unwrap();
        expected["model"] = "gpt-4o-mini".into();
        assert_eq!(out, expected);
    }

    #[test]
    fn streams_always_ask_for_usage_and_remember_whether_the_client_did() {
        let payload = parse(
            r#"{"model":"m","messages":[{}],"stream":true}"#,
            Endpoint::ChatCompletions,
        )
        .unwrap();
        assert!(payload.stream && !payload.client_wants_usage);
        let out = upstream(r#"{"model":"m","messages":[{}],"stream":true}"#, "u");
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"include_usage": true})
        );

        let body = r#"{"model":"m","messages":[{}],"stream":true,"stream_options":{"include_usage":true,"other":1}}"#;
        assert!(
            parse(body, Endpoint::ChatCompletions)
                .unwrap()
                .client_wants_usage
        );
        assert_eq!(
            upstream(body, "u")["stream_options"],
            serde_json::json!({"include_usage": true, "other": 1})
        );

        let plain = upstream(r#"{"model":"m","messages":[{}]}"#, "u");
        assert!(
            plain.get("stream_options").is_none(),
            "non-streams are not touched"
        );
    }

    #[test]
    fn checks_name_the_parameter() {
        let err = |json: &str, endpoint| parse(json, endpoint).err().unwrap();
        assert_eq!(
            err(r#"{"messages":[{}]}"#, Endpoint::ChatCompletions).param,
            Some("model")
        );
        assert_eq!(
            err(r#"{"model":5,"messages":[{}]}"#, Endpoint::ChatCompletions).param,
            Some("model")
        );
        assert_eq!(
            err(r#"{"model":"m"}"#, Endpoint::ChatCompletions).param,
            Some("messages")
        );
        assert_eq!(
            err(r#"{"model":"m","messages":[ ]}"#, Endpoint::ChatCompletions).code,
            "empty_array"
        );
        assert_eq!(
            err(r#"{"model":"m","messages":{}}"#, Endpoint::ChatCompletions).code,
            "invalid_type"
        );
        assert_eq!(
            err(r#"{"model":"m"}"#, Endpoint::Embeddings).param,
            Some("input")
        );
        assert_eq!(
            err(
                r#"{"model":"m","messages":[{}],"stream":"yes"}"#,
                Endpoint::ChatCompletions
            )
            .param,
            Some("stream")
        );
        assert!(parse(r#"{"model":"m","input":"x"}"#, Endpoint::Embeddings).is_ok());
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(
            parse("[1]", Endpoint::ChatCompletions).err().unwrap().code,
            "invalid_body"
        );
        assert_eq!(
            parse("{oops", Endpoint::ChatCompletions)
                .err()
                .unwrap()
                .code,
            "invalid_json"
        );
        assert_eq!(
            Payload::parse(b"\xff", Endpoint::ChatCompletions)
                .err()
                .unwrap()
                .code,
            "invalid_json"
        );
    }
}
