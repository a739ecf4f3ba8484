//! Every client API against every provider format, in process, with the mock
//! checking each provider's authentication (SigV4 included): plain and
//! streamed text, tool calls, the Anthropic and Responses shapes.

mod common;

use common::{ALL_FORMATS, Harness, MOCK_AUTH, json_or_text_body, sse_events};
use serde_json::{Value, json};

const BACKENDS: &[&str] = &["chat", "claude", "gemini", "bedrock", "azure"];

fn weather_tool_openai() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn openai_chat_clients_reach_every_format() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    for model in BACKENDS {
        let (status, value) = json_or_text_body(
            h.post("/v1/chat/completions")
                .json(&json!({"model": model, "max_tokens": 40,
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{model}: {value}");
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str);
        assert!(content.is_some_and(|c| !c.is_empty()), "{model}: {value}");
        assert!(
            value["usage"]["completion_tokens"].as_u64().unwrap() > 0,
            "{model}: {value}"
        );

        // Streamed tool call: the argument deltas assemble into valid JSON.
        let streamed = sse_events(
            h.post("/v1/chat/completions")
                .json(
                    &json!({"model": model, "stream": true, "tools": weather_tool_openai(),
                    "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            streamed.last().unwrap().1,
            Value::String("[DONE]".into()),
            "{model}"
        );
        let mut name = String::new();
        let mut arguments = String::new();
        let mut finish = None;
        for (_, chunk) in &streamed {
            if let Some(calls) = chunk
                .pointer("/choices/0/delta/tool_calls")
                .and_then(Value::as_array)
            {
                for call in calls {
                    if let Some(n) = call.pointer("/function/name").and_then(Value::as_str) {
                        name.push_str(n);
                    }
                    if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str) {
                        arguments.push_str(a);
                    }
                }
            }
            if let Some(f) = chunk
                .pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
            {
                finish = Some(f.to_string());
            }
        }
        assert_eq!(name, "get_weather", "{model}: {streamed:?}");
        assert!(
            serde_json::from_str::<Value>(&arguments)
                .unwrap()
                .is_object(),
            "{model}: {arguments}"
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"), "{model}");
    }
}

#[tokio::test]
async fn anthropic_clients_reach_every_format() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let tools = json!([{"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    for model in BACKENDS {
        let (status, value) = json_or_text_body(
            h.post("/v1/messages")
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": model, "max_tokens": 200, "tools": tools,
                    "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{model}: {value}");
        assert_eq!(value["stop_reason"], "tool_use", "{model}: {value}");
        let call = value["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap_or_else(|| panic!("{model}: {value}"));
        assert_eq!(call["name"], "get_weather");
        assert!(call["input"].is_object());
        let id = call["id"].as_str().unwrap().to_string();

        // The tool result goes back; the model answers in text, streamed.
        let streamed = sse_events(
            h.post("/v1/messages")
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": model, "max_tokens": 200, "tools": tools, "stream": true,
                    "messages": [
                        {"role": "user", "content": "Weather in Paris?"},
                        {"role": "assistant", "content": [call]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny, 21C"}]}
                    ]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let names: Vec<&str> = streamed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {names:?}");
        assert_eq!(names.last(), Some(&"message_stop"), "{model}: {names:?}");
        let text: String = streamed
            .iter()
            .filter_map(|(_, v)| v.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert!(!text.is_empty(), "{model}: {names:?}");
    }
}

#[tokio::test]
async fn responses_clients_reach_every_format() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    for model in BACKENDS {
        let (status, value) = json_or_text_body(
            h.post("/v1/responses")
                .json(&json!({"model": model, "input": "Hello", "max_output_tokens": 50}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{model}: {value}");
        assert_eq!(value["object"], "response", "{model}: {value}");
        let text = value["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["type"] == "message")
            .flat_map(|item| item["content"].as_array().unwrap().clone())
            .filter_map(|part| part["text"].as_str().map(str::to_string))
            .collect::<String>();
        assert!(!text.is_empty(), "{model}: {value}");
    }
}

#[tokio::test]
async fn a_wrong_signature_is_the_gateways_fault_not_the_clients() {
    let h = Harness::start(ALL_FORMATS, MOCK_AUTH).await;
    let (status, value) = json_or_text_body(
        h.post("/v1/chat/completions")
            .json(&json!({"model": "bedrock-wrong-secret", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials"),
        "{value}"
    );
}
