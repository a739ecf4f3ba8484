//! Round trips through canonical: an Anthropic request parsed by the dialect
//! and rendered by the provider means the same thing; an upstream stream
//! decoded and re-encoded is a valid event sequence carrying the same
//! message; an upstream response parsed and rendered back is the same
//! message.

mod common;

use std::path::Path;

use bytes::BytesMut;
use common::*;
use serde_json::{Map, Value, json};
use tollgate_llm::anthropic::{dialect, provider};
use tollgate_llm::{StreamDecoder, StreamEncoder, StreamItem};

fn inputs(direction: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/anthropic")
        .join(direction);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(&format!(".in.{ext}")))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_str().unwrap().to_string(), bytes)
        })
        .collect()
}

/// Drops what only restates a default, so equal meanings compare equal.
fn normalize_request(mut value: Value) -> Value {
    if let Some(choice) = value.get_mut("tool_choice").and_then(Value::as_object_mut)
        && choice.get("disable_parallel_tool_use") == Some(&Value::Bool(false))
    {
        choice.remove("disable_parallel_tool_use");
    }
    value
}

#[test]
fn anthropic_request_survives_canonical() {
    let mut checked = 0;
    for (name, body) in inputs("dialect_request", "json") {
        let Ok(request) = dialect::parse_request(&body) else {
            continue;
        };
        let original: Value = serde_json::from_slice(&body).unwrap();
        let model = original["model"].as_str().unwrap();
        let again: Value =
            serde_json::from_slice(&provider::request_body(&request, model).unwrap()).unwrap();
        assert_eq!(
            normalize_request(again),
            normalize_request(original),
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} requests checked");
}

#[test]
fn canonical_request_survives_anthropic() {
    // OpenAI-side requests that Anthropic can express fully: provider then
    // dialect gives back the same canonical request (modulo the model and
    // the max_tokens name).
    for name in [
        "openai_basic",
        "tools_parallel_results",
        "thinking_effort_history",
    ] {
        let (_, body) = inputs("provider_request", "json")
            .into_iter()
            .find(|(n, _)| n.starts_with(name))
            .unwrap();
        let request = request_from_json(serde_json::from_slice(&body).unwrap());
        let wire = provider::request_body(&request, "claude").unwrap();
        let back = dialect::parse_request(&wire).unwrap();
        assert_eq!(back.messages.len(), request.messages.len(), "{name}");
        for (a, b) in back.messages.iter().zip(&request.messages) {
            assert_eq!(a.role, b.role, "{name}");
            assert_eq!(a.tool_call_id, b.tool_call_id, "{name}");
            assert_eq!(a.thinking, b.thinking, "{name}");
            assert_eq!(
                a.content.as_ref().map(|c| c.text()),
                b.content.as_ref().map(|c| c.text()),
                "{name}"
            );
            let calls = |m: &tollgate_llm::canonical::Message| {
                m.tool_calls.as_ref().map(|calls| {
                    calls
                        .iter()
                        .map(|c| {
                            let args: Value =
                                serde_json::from_str(&c.function.arguments).unwrap_or(json!({}));
                            (c.id.clone(), c.function.name.clone(), args)
                        })
                        .collect::<Vec<_>>()
                })
            };
            assert_eq!(calls(a), calls(b), "{name}");
        }
        assert_eq!(back.stream, request.stream);
        assert_eq!(back.temperature, request.temperature);
        assert_eq!(back.user, request.user);
        assert_eq!(
            back.stop.as_ref().map(|s| s.to_vec()),
            request.stop.as_ref().map(|s| s.to_vec())
        );
        assert_eq!(back.max_output_tokens(), request.max_output_tokens());
    }
}

/// What an SDK's accumulator would build from an event sequence.
fn accumulate(events: &[Value]) -> Value {
    let mut blocks: Vec<Map<String, Value>> = Vec::new();
    let mut json_buffers: Vec<String> = Vec::new();
    let mut end = json!(null);
    let mut input_tokens = json!(null);
    for event in events {
        let data = &event["data"];
        match data["type"].as_str().unwrap() {
            "message_start" => input_tokens = data["message"]["usage"]["input_tokens"].clone(),
            "content_block_start" => {
                blocks.push(data["content_block"].as_object().unwrap().clone());
                json_buffers.push(String::new());
            }
            "content_block_delta" => {
                let i = data["index"].as_u64().unwrap() as usize;
                let delta = &data["delta"];
                let block = &mut blocks[i];
                let append = |block: &mut Map<String, Value>, key: &str, text: &str| {
                    let old = block.get(key).and_then(Value::as_str).unwrap_or("");
                    block.insert(key.into(), format!("{old}{text}").into());
                };
                match delta["type"].as_str().unwrap() {
                    "text_delta" => append(block, "text", delta["text"].as_str().unwrap()),
                    "thinking_delta" => {
                        append(block, "thinking", delta["thinking"].as_str().unwrap())
                    }
                    "signature_delta" => {
                        append(block, "signature", delta["signature"].as_str().unwrap())
                    }
                    "input_json_delta" => {
                        json_buffers[i].push_str(delta["partial_json"].as_str().unwrap())
                    }
                    other => panic!("{other}"),
                }
            }
            "content_block_stop" => {
                let i = data["index"].as_u64().unwrap() as usize;
                if !json_buffers[i].is_empty() {
                    blocks[i].insert(
                        "input".into(),
                        serde_json::from_str(&json_buffers[i]).unwrap(),
                    );
                }
            }
            "message_delta" => {
                end = json!({
                    "stop_reason": data["delta"]["stop_reason"],
                    "stop_sequence": data["delta"]["stop_sequence"],
                    "output_tokens": data["usage"]["output_tokens"],
                    "input_tokens": data["usage"].get("input_tokens").cloned().unwrap_or(input_tokens.clone()),
                });
            }
            "error" => end = json!({"error": data["error"]}),
            _ => {}
        }
    }
    json!({"content": blocks, "end": end})
}

#[test]
fn decoded_stream_reencodes_to_the_same_message() {
    let mut checked = 0;
    for (name, body) in inputs("provider_stream", "sse") {
        let mut decoder = provider::MessagesStreamDecoder::new();
        let mut items = Vec::new();
        decoder.push(&body, &mut items).unwrap();
        let finished = decoder.finish(&mut items);

        let mut encoder = dialect::MessagesStreamEncoder::new();
        let mut out = BytesMut::new();
        for item in &items {
            match item {
                StreamItem::Chunk(chunk) => encoder.chunk(chunk, &mut out),
                StreamItem::Error(error) => encoder.error(error, &mut out),
                StreamItem::Done => encoder.done(&mut out),
            }
        }
        if let Err(error) = finished {
            encoder.error(&error, &mut out);
        }
        let events = sse_events(&out);
        assert_valid_sequence(&events);

        let mut original = accumulate(&sse_events(
            &body
                .iter()
                .copied()
                .filter(|&b| b != b'\r')
                .collect::<Vec<_>>(),
        ));
        // Redacted thinking has no chunk slot (documented), and a truncated
        // stream ends in the gateway's own error.
        if let Some(blocks) = original["content"].as_array_mut() {
            blocks.retain(|b| b["type"] != "redacted_thinking");
        }
        let again = accumulate(&events);
        assert_eq!(again["content"], original["content"], "{name}");
        if name.starts_with("truncated") {
            assert_eq!(again["end"]["error"]["type"], "api_error", "{name}");
        } else {
            assert_eq!(again["end"], original["end"], "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 5);
}

#[test]
fn upstream_response_survives_canonical() {
    for (name, body) in inputs("provider_response", "json") {
        let Ok(response) = provider::parse_response(&body) else {
            continue;
        };
        let mut original: Value = serde_json::from_slice(&body).unwrap();
        let again: Value = serde_json::from_slice(&dialect::render_response(&response)).unwrap();
        // Server-tool blocks and citations are dropped (documented); usage
        // always carries both cache counts.
        let content = original["content"].as_array_mut().unwrap();
        content.retain(|b| {
            !b["type"].as_str().unwrap().contains("tool_result") && b["type"] != "server_tool_use"
        });
        for block in content.iter_mut() {
            block.as_object_mut().unwrap().remove("citations");
        }
        let usage = original["usage"].as_object_mut().unwrap();
        usage.retain(|k, _| k != "service_tier");
        for key in ["cache_creation_input_tokens", "cache_read_input_tokens"] {
            usage.entry(key).or_insert(json!(0));
        }
        assert_eq!(again, original, "{name}");
    }
}

#[test]
fn every_split_of_every_stream_decodes_the_same() {
    // The golden runner splits once at every boundary; here: three pieces.
    for (name, body) in inputs("provider_stream", "sse") {
        let decode = |pieces: &[&[u8]]| {
            let mut decoder = provider::MessagesStreamDecoder::new();
            let mut items = Vec::new();
            for piece in pieces {
                decoder.push(piece, &mut items).unwrap();
            }
            let finished = decoder.finish(&mut items).is_ok();
            (items, finished)
        };
        let whole = decode(&[&body]);
        let step = (body.len() / 40).max(1);
        for a in (1..body.len()).step_by(step) {
            for b in (a..body.len()).step_by(step * 3) {
                assert_eq!(
                    decode(&[&body[..a], &body[a..b], &body[b..]]),
                    whole,
                    "{name} {a} {b}"
                );
            }
        }
    }
}
