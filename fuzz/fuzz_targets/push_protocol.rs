//! The controller → gateway config push: the subscribe path, the line
//! splitter fed at fuzzer-chosen read boundaries, and each line's decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_config::push::{
    LineBuffer, Received, decode_server_line, parse_subscribe_path, snapshot_frame, subscribe_path,
};
use tollgate_fuzz::{seed_and_body, split};

fuzz_target!(|data: &[u8]| {
    let Some((seed, body)) = seed_and_body(data) else {
        return;
    };
    if let Ok(path) = std::str::from_utf8(body)
        && let Some((namespace, name)) = parse_subscribe_path(path)
    {
        assert_eq!(
            subscribe_path(namespace, name),
            path,
            "path does not round-trip"
        );
    }

    // Lines as a plain split on `\n` would give them (empty lines skipped,
    // an unterminated tail held back).
    let mut expected: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let tail = expected.pop().unwrap_or_default();
    expected.retain(|line| !line.is_empty());

    let mut lines = LineBuffer::default();
    let mut got = Vec::new();
    for piece in split(seed, body) {
        got.extend(lines.push(piece, usize::MAX).unwrap());
    }
    assert_eq!(got, expected, "lines depend on read boundaries");

    // A small limit fails exactly when the held tail outgrows it.
    let max_line = usize::from(seed % 512);
    let mut limited = LineBuffer::default();
    let result = limited.push(body, max_line);
    assert_eq!(result.is_err(), tail.len() > max_line);

    for line in got {
        decode(&line);
    }
});

fn decode(line: &[u8]) {
    let Ok(Received::Snapshot(snapshot)) = decode_server_line(line) else {
        return;
    };
    // A snapshot that was accepted is accepted again after re-framing.
    let frame = snapshot_frame(&snapshot).expect("accepted snapshot does not encode");
    let frame = frame.strip_suffix(b"\n").expect("frame without newline");
    match decode_server_line(frame) {
        Ok(Received::Snapshot(again)) => assert_eq!(again, snapshot),
        other => panic!("re-framed snapshot decodes as {other:?}"),
    }
}
