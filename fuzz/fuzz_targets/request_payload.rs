//! A client's request body: the gateway's top-level payload handling for
//! every endpoint, the upstream body it builds, and the canonical parse a
//! translated request goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_fuzz::assert_json;
use tollgate_gateway::dialect::Endpoint;
use tollgate_gateway::llm::ingress::Inbound;
use tollgate_gateway::payload::Payload;

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::ChatCompletions,
    Endpoint::Responses,
    Endpoint::Embeddings,
    Endpoint::Messages,
    Endpoint::CountTokens,
];

fuzz_target!(|data: &[u8]| {
    for endpoint in ENDPOINTS {
        payload(data, endpoint);
        canonical(data, endpoint);
    }
});

fn payload(data: &[u8], endpoint: Endpoint) {
    let Ok(payload) = Payload::parse(data, endpoint) else {
        return;
    };
    assert!(!payload.model.is_empty());
    assert!(!payload.stream || endpoint.can_stream());
    let Ok(upstream) = payload.to_upstream("upstream-model") else {
        return;
    };
    // The gateway accepts its own upstream body again, with the model
    // replaced and the same meaning.
    let again = Payload::parse(&upstream, endpoint).expect("upstream body no longer parses");
    assert_eq!(again.model, "upstream-model");
    assert_eq!(again.stream, payload.stream);
    let forced = payload.stream && endpoint == Endpoint::ChatCompletions;
    assert_eq!(
        again.client_wants_usage,
        forced || payload.client_wants_usage
    );
    // Fields other than `model` and `stream_options` pass through verbatim,
    // so the body is strict JSON when the client's was (a lone surrogate
    // escape such as "\ud800" is JSON grammar, but serde_json's `Value`
    // refuses it, and the provider decides).
    if serde_json::from_slice::<Value>(data).is_ok() {
        let value: Value = serde_json::from_slice(&upstream).expect("upstream body is not JSON");
        assert_eq!(value["model"], "upstream-model");
        if forced {
            assert_eq!(value["stream_options"]["include_usage"], true);
        }
    }
}

fn canonical(data: &[u8], endpoint: Endpoint) {
    let Ok(inbound) = Inbound::parse(data, endpoint) else {
        return;
    };
    let Ok(canonical) = inbound.canonical() else {
        return;
    };
    // The cached parse is the same parse.
    assert!(inbound.canonical().is_ok());
    let request = &canonical.request;
    // Every provider format renders it as JSON, or refuses cleanly.
    assert_json(
        "OpenAI body",
        &tollgate_llm::openai::request_body(request, "m"),
    );
    if let Ok(body) = tollgate_llm::anthropic::provider::request_body(request, "m") {
        assert_json("Anthropic body", &body);
    }
    if let Ok(body) = tollgate_llm::gemini::request_body(request, "m") {
        assert_json("Gemini body", &body);
    }
    if let Ok(body) = tollgate_llm::bedrock::request_body(request) {
        assert_json("Bedrock body", &body);
    }
}
