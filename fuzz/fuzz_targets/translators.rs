//! tollgate-llm's translators on outside bytes: client request bodies in
//! each dialect, provider response and error bodies, and provider streams
//! (SSE and Bedrock's binary event stream) cut at fuzzer-chosen points.
//! The first byte picks the format, the next two where reads end.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{assert_json, assert_sse_json, seed_and_body, split};
use tollgate_llm::responses::ResponsesEcho;
use tollgate_llm::{
    ChatRequest, ChatResponse, LlmError, StreamDecoder, StreamEncoder, StreamItem, anthropic,
    bedrock, gemini, openai, responses,
};

const MODEL: &str = "anthropic.claude-sonnet-4-v1:0";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((seed, body)) = seed_and_body(rest) else {
        return;
    };
    match selector % 12 {
        0 => request(openai::parse_request(body), true),
        1 => request(anthropic::dialect::parse_request(body), false),
        2 => request(anthropic::dialect::parse_count_tokens(body), false),
        3 => request(responses::parse_request(body), false),
        4 => response(openai::parse_response(body)),
        5 => response(anthropic::provider::parse_response(body)),
        6 => response(gemini::parse_response(body, MODEL)),
        7 => response(bedrock::parse_response(body, MODEL)),
        8 => errors(seed, body),
        9 => stream(seed, body, openai::ChatStreamDecoder::default),
        10 => stream(seed, body, anthropic::provider::MessagesStreamDecoder::new),
        _ => {
            if seed & 1 == 0 {
                stream(seed, body, || gemini::GeminiStreamDecoder::new(MODEL))
            } else {
                stream(seed, body, || bedrock::ConverseStreamDecoder::new(MODEL))
            }
        }
    }
});

/// A client request that parsed renders as JSON in every provider format
/// (or is refused cleanly); OpenAI's own rendering parses again.
fn request(parsed: Result<ChatRequest, LlmError>, openai_in: bool) {
    let Ok(request) = parsed else {
        return;
    };
    let body = openai::request_body(&request, "m");
    assert_json("OpenAI body", &body);
    if openai_in {
        openai::parse_request(&body).expect("OpenAI body rendered from OpenAI does not parse");
    }
    if let Ok(body) = anthropic::provider::request_body(&request, "m") {
        assert_json("Anthropic body", &body);
    }
    if let Ok(body) = gemini::request_body(&request, "m") {
        assert_json("Gemini body", &body);
    }
    if let Ok(body) = bedrock::request_body(&request) {
        assert_json("Bedrock body", &body);
    }
}

/// A provider response that parsed renders as JSON for every client.
fn response(parsed: Result<ChatResponse, LlmError>) {
    let Ok(response) = parsed else {
        return;
    };
    assert_json("OpenAI response", &openai::render_response(&response));
    assert_json(
        "Anthropic response",
        &anthropic::dialect::render_response(&response),
    );
    assert_json(
        "Responses response",
        &responses::render_response(&response, &ResponsesEcho::default()),
    );
}

/// Provider error bodies (with an error status) become errors with an
/// error status, rendered as JSON in every dialect.
fn errors(seed: u16, body: &[u8]) {
    let status = 400 + seed % 200;
    let bedrock_type = std::str::from_utf8(body.get(..8).unwrap_or_default()).ok();
    for error in [
        openai::parse_error(status, body),
        anthropic::provider::parse_error(status, body),
        gemini::parse_error(status, body),
        bedrock::parse_error(status, bedrock_type, body),
    ] {
        assert!(
            (400..=599).contains(&error.status),
            "status {} from {status}",
            error.status
        );
        check_error(&error);
    }
}

/// Any error, including one a stream reported, renders as JSON for every
/// client. (Its status is not checked: a stream error's comes from the
/// provider's payload, and the gateway maps an invalid one to 502.)
fn check_error(error: &LlmError) {
    assert_json("OpenAI error", &openai::render_error(error));
    assert_json("Anthropic error", &anthropic::dialect::render_error(error));
    assert_json("Responses error", &responses::render_error(error));
}

/// Items decoded from `pieces`, and the error that ended decoding, if any.
fn decode<D: StreamDecoder>(
    mut decoder: D,
    pieces: &[&[u8]],
) -> (Vec<StreamItem>, Option<LlmError>) {
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(error) = decoder.push(piece, &mut out) {
            return (out, Some(error));
        }
    }
    let ending = decoder.finish(&mut out).err();
    (out, ending)
}

/// A provider stream decodes the same however it was cut into reads, and
/// what it decodes to encodes as JSON events in every client dialect.
fn stream<D: StreamDecoder>(seed: u16, body: &[u8], new: impl Fn() -> D) {
    let whole = decode(new(), &[body]);
    assert_eq!(
        whole,
        decode(new(), &split(seed, body)),
        "depends on read boundaries"
    );
    let (items, ending) = whole;
    if let Some(error) = &ending {
        check_error(error);
    }
    let encoders: Vec<(&str, Box<dyn StreamEncoder>)> = vec![
        (
            "OpenAI",
            Box::new(openai::ChatStreamEncoder::new(seed & 2 == 0)),
        ),
        (
            "Anthropic",
            Box::new(anthropic::dialect::MessagesStreamEncoder::new()),
        ),
        (
            "Responses",
            Box::new(responses::ResponsesStreamEncoder::new(
                ResponsesEcho::default(),
            )),
        ),
    ];
    for (name, mut encoder) in encoders {
        let mut out = BytesMut::new();
        for item in &items {
            match item {
                StreamItem::Chunk(chunk) => encoder.chunk(chunk, &mut out),
                StreamItem::Error(error) => {
                    check_error(error);
                    encoder.error(error, &mut out);
                }
                StreamItem::Done => encoder.done(&mut out),
            }
        }
        if let Some(error) = &ending {
            encoder.error(error, &mut out);
        }
        let _ = encoder.usage();
        assert_sse_json(name, &out);
    }
}
