#!/usr/bin/env python3
"""Regenerates fuzz/corpus/ seeds from the golden fixtures and examples.

Run from the repository root: python3 fuzz/seeds.py. Files are named by
content hash like libFuzzer's own, so rerunning is idempotent. The
push_protocol snapshot lines come from the manifest_loader target instead
(see fuzz/README.md), because a snapshot must carry its own SHA-256.
"""

import glob
import hashlib
import json
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "crates/llm/tests/golden")
CORPUS = os.path.join(ROOT, "fuzz/corpus")


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write(target, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def inputs(pattern):
    for path in sorted(glob.glob(os.path.join(GOLDEN, pattern))):
        with open(path, "rb") as f:
            yield path, f.read()


def golden_json(pattern):
    for _, data in inputs(pattern):
        yield json.loads(data)


def sse(chunks, done=True, crlf=False):
    nl = "\r\n" if crlf else "\n"
    text = "".join(f"data: {compact(c).decode()}{nl}{nl}" for c in chunks)
    if done:
        text += f"data: [DONE]{nl}{nl}"
    return text.encode()


def frame(type_header, kind, message_type, payload):
    """One AWS event-stream message, as Bedrock ConverseStream sends it."""
    headers = b""
    for name, value in (
        (type_header, kind),
        (":content-type", "application/json"),
        (":message-type", message_type),
    ):
        headers += bytes([len(name)]) + name.encode() + b"\x07"
        headers += struct.pack(">H", len(value)) + value.encode()
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_stream(frames):
    out = b""
    for f in frames:
        payload = compact(f["payload"])
        if "eventType" in f:
            out += frame(":event-type", f["eventType"], "event", payload)
        else:
            out += frame(":exception-type", f["exceptionType"], "exception", payload)
    return out


def openai_requests():
    for case in golden_json("gemini/request/*.in.json"):
        yield compact(case["request"])
    for case in golden_json("bedrock/request/*.in.json"):
        yield compact(case["request"])
    for case in golden_json("anthropic/provider_request/*.in.json"):
        yield compact(case)


def openai_streams():
    for case in golden_json("responses/stream/*.in.json"):
        chunks = [i["chunk"] for i in case.get("items", []) if "chunk" in i]
        yield sse(chunks)
    for case in golden_json("anthropic/dialect_stream/*.in.json"):
        chunks = [i["chunk"] for i in case if isinstance(i, dict) and "chunk" in i]
        yield sse(chunks)


def main():
    anthropic_requests = [d for _, d in inputs("anthropic/dialect_request/*.in.json")]
    count_tokens = [d for _, d in inputs("anthropic/dialect_count_tokens/*.in.json")]
    responses_requests = [d for _, d in inputs("responses/request/*.in.json")]
    openai = list(openai_requests())
    streams = list(openai_streams())

    # request_payload: raw client bodies for every endpoint.
    for body in openai + anthropic_requests + count_tokens + responses_requests:
        write("request_payload", body)
    write("request_payload", b'{"model":"emb","input":["a","b"]}')
    write(
        "request_payload",
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
        b'"stream":true,"stream_options":{"include_usage":false}}',
    )

    # sse_relay: two split-seed bytes, then an upstream stream.
    for i, stream in enumerate(streams):
        write("sse_relay", bytes([i, 0]) + stream)
    usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 7,
             "completion_tokens": 3, "total_tokens": 10}}
    write("sse_relay", b"\x05\x00" + sse([usage], crlf=True))
    write("sse_relay", b"\x09\x00: keep-alive\n\nevent: x\r\ndata: a\rdata: b\r\r")
    for _, data in inputs("anthropic/provider_stream/*.in.sse"):
        write("sse_relay", b"\x03\x01" + data)

    # translators: a selector byte (see the target), two split-seed bytes, input.
    def t(selector, data, seed=b"\x07\x00"):
        write("translators", bytes([selector]) + seed + data)

    for body in openai:
        t(0, body)
    for body in anthropic_requests:
        t(1, body)
    for body in count_tokens:
        t(2, body)
    for body in responses_requests:
        t(3, body)
    for _, body in inputs("anthropic/dialect_response/*.in.json"):
        t(4, body)
    for case in golden_json("responses/response/*.in.json"):
        t(4, compact(case["response"]))
    for _, body in inputs("anthropic/provider_response/*.in.json"):
        t(5, body)
    for _, body in inputs("gemini/response/*.in.json"):
        t(6, body)
    for _, body in inputs("bedrock/response/*.in.json"):
        t(7, body)
    for fmt in ("anthropic", "gemini", "bedrock"):
        for case in golden_json(f"{fmt}/errors/*.in.json"):
            body = case.get("body")
            t(8, body.encode() if isinstance(body, str) else compact(body))
    for stream in streams:
        t(9, stream)
    for _, data in inputs("anthropic/provider_stream/*.in.sse"):
        t(10, data)
    for _, data in inputs("gemini/stream/*.in.sse"):
        t(11, data, seed=b"\x06\x00")  # even seed: Gemini
    for case in golden_json("bedrock/stream/*.in.json"):
        t(11, bedrock_stream(case), seed=b"\x07\x00")  # odd seed: Bedrock

    # push_protocol: split-seed bytes, then controller lines.
    write("push_protocol", b"\x00\x01/v1/gateways/default/gw/subscribe")
    write("push_protocol", b'\x10\x00{"type":"heartbeat"}\n{"type":"heartbeat"}\n')
    write("push_protocol", b'\x11\x00{"type":"snapshot"}\n\n{"type":"snapshot","snapshot":{}}\n')

    # manifest_loader: the example manifests, and the compiler tests' base.
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/examples/*.yaml"))):
        with open(path, "rb") as f:
            write("manifest_loader", f.read())
    for source in ("crates/config/src/compile/mod.rs", "crates/config/src/push.rs"):
        with open(os.path.join(ROOT, source)) as f:
            text = f.read()
        start = text.find('r#"\napiVersion')
        if start >= 0:
            write("manifest_loader", text[start + 3 : text.find('"#', start)].encode())


if __name__ == "__main__":
    main()
