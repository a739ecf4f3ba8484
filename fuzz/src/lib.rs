//! Helpers shared by the fuzz targets.

/// Splits `data` into pieces whose sizes (1..=64 bytes) come from `seed`,
/// so the fuzzer controls where network reads would have ended.
pub fn split(seed: u16, data: &[u8]) -> Vec<&[u8]> {
    // xorshift: cheap, deterministic, and any seed gives varied sizes.
    let mut state = u32::from(seed) | 1 << 16;
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state % 64) as usize + 1;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// The first two bytes as a split seed, and the rest.
pub fn seed_and_body(data: &[u8]) -> Option<(u16, &[u8])> {
    match data {
        [a, b, body @ ..] => Some((u16::from_le_bytes([*a, *b]), body)),
        _ => None,
    }
}

/// Panics unless `bytes` is one JSON value.
pub fn assert_json(what: &str, bytes: &[u8]) {
    if let Err(error) = serde_json::from_slice::<serde_json::Value>(bytes) {
        panic!(
            "{what} is not JSON ({error}): {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Panics unless every event of an SSE stream we produced carries JSON (or
/// the OpenAI `[DONE]` marker).
pub fn assert_sse_json(what: &str, bytes: &[u8]) {
    let mut parser = tollgate_llm::sse::Parser::default();
    let mut events = Vec::new();
    parser
        .push(bytes, &mut events)
        .expect("own stream too large");
    parser.finish(&mut events);
    for event in events {
        if event.data != "[DONE]" {
            assert_json(what, event.data.as_bytes());
        }
    }
}
