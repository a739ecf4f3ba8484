//! The OpenAI SSE relay (passthrough streams) and tollgate-llm's SSE parser
//! (translated streams), fed upstream bytes cut at fuzzer-chosen points.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{seed_and_body, split};
use tollgate_gateway::sse::SseRelay;
use tollgate_llm::sse::{Event, Parser, write_event};

fuzz_target!(|data: &[u8]| {
    let Some((seed, body)) = seed_and_body(data) else {
        return;
    };
    let pieces = split(seed, body);
    relay(body, &pieces);
    parser(body, &pieces);
});

struct Relayed {
    out: Vec<u8>,
    usage: Option<tollgate_gateway::sse::Usage>,
    finished: bool,
}

fn run_relay(strip: bool, pieces: &[&[u8]]) -> Relayed {
    let mut relay = SseRelay::new(strip);
    let mut out = Vec::new();
    for piece in pieces {
        // The fuzzer's inputs stay far below MAX_PENDING_EVENT.
        if let Some(bytes) = relay.push(Bytes::copy_from_slice(piece)).unwrap() {
            out.extend_from_slice(&bytes);
        }
    }
    if let Some(bytes) = relay.finish() {
        out.extend_from_slice(&bytes);
    }
    Relayed {
        out,
        usage: relay.usage(),
        finished: relay.finished(),
    }
}

fn relay(body: &[u8], pieces: &[&[u8]]) {
    let whole = run_relay(false, &[body]);
    let cut = run_relay(false, pieces);
    // Without stripping the relay forwards every byte, in order, unchanged.
    assert_eq!(whole.out, body, "relay changed the stream");
    assert_eq!(cut.out, body, "relay changed the stream when cut");
    // What it learns must not depend on where reads ended.
    assert_eq!(whole.usage, cut.usage, "usage depends on read boundaries");
    assert_eq!(
        whole.finished, cut.finished,
        "[DONE] depends on read boundaries"
    );

    let stripped = run_relay(true, pieces);
    // Stripping only drops events: never adds bytes, learns the same things.
    assert!(
        stripped.out.len() <= body.len(),
        "stripping grew the stream"
    );
    assert_eq!(stripped.usage, whole.usage);
    assert_eq!(stripped.finished, whole.finished);
    if whole.usage.is_none() {
        assert_eq!(stripped.out, body, "stripped without a usage chunk");
    }
}

fn parse(pieces: &[&[u8]]) -> Vec<Event> {
    let mut parser = Parser::default();
    let mut events = Vec::new();
    for piece in pieces {
        parser.push(piece, &mut events).unwrap();
    }
    parser.finish(&mut events);
    events
}

fn parser(body: &[u8], pieces: &[&[u8]]) {
    let whole = parse(&[body]);
    assert_eq!(whole, parse(pieces), "events depend on read boundaries");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, parse(&bytes), "events differ byte by byte");
    // Re-encoding an event with the writer gives back the same event
    // (`write_event` takes single-line data only).
    for event in whole.iter().filter(|e| !e.data.contains('\n')) {
        let mut out = BytesMut::new();
        let name = (!event.event.is_empty()).then_some(event.event.as_str());
        write_event(&mut out, name, event.data.as_bytes());
        assert_eq!(
            parse(&[&out]),
            vec![event.clone()],
            "event does not round-trip"
        );
    }
}
