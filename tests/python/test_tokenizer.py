"""Prompt token counts for OpenAI models match OpenAI's own tokenizer.

The gateway counts prompts (for budget reservations, and for
`/v1/messages/count_tokens` in front of OpenAI-format providers) with the
model's BPE vocabulary. Here the official `tiktoken` package counts the same
messages with OpenAI's recipe (3 tokens a message plus its role and content,
3 to prime the reply) and the two must agree exactly, across scripts, code,
numbers and whitespace.

tiktoken normally downloads its vocabularies; this machine has no route to
OpenAI's blob store, so they are taken from the crate the gateway is built
with (the `.tiktoken` files it embeds) and placed in tiktoken's cache under
the names tiktoken looks for. tiktoken checks each file against the SHA-256
it expects, so a wrong file fails the test rather than agreeing with itself.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
from pathlib import Path

import pytest

ENCODINGS = ("o200k_base", "cl100k_base")

TEXTS = [
    "Hello there.",
    "tiktoken is great!",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "I'LL be there; they've said it's fine, we'd go.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\n",
    '{"user": {"id": 12345, "roles": ["admin", "ops"], "ratio": 0.125}}',
    "Revenue grew 3.5% to $1,234,567.89 in Q3 2026 (vs. 987654321 units).",
    "你好，世界！今天的天气怎么样？我们去公园散步吧。",
    "日本語のテキストも正しく数えられますか？カタカナとひらがな。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "Emoji 🚀🔥👍🏽 and combining é (e\u0301) and ﬁ ligature.",
    "   leading spaces, trailing spaces   \t\ttabs\n\n\nnewlines \r\n windows   ",
    "https://example.com/path?query=a&b=c#frag user@example.org",
    "ALLCAPS camelCaseWords snake_case_words kebab-case-words",
    "",
]


def _tiktoken_with_local_vocabularies(tmp: Path):
    cargo_home = Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo")
    found = sorted(glob.glob(str(cargo_home / "registry/src/*/bpe-openai-*/data")))
    assert found, f"bpe-openai's vocabularies not found under {cargo_home}: build the gateway first"
    cache = tmp / "tiktoken-cache"
    cache.mkdir()
    for name in ENCODINGS:
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        data = gzip.open(Path(found[-1]) / f"{name}.tiktoken.gz").read()
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    import tiktoken

    return tiktoken


@pytest.fixture(scope="module")
def o200k(tmp_path_factory):
    tiktoken = _tiktoken_with_local_vocabularies(tmp_path_factory.mktemp("tiktoken"))
    return tiktoken.get_encoding("o200k_base")


def openai_recipe(encoding, messages) -> int:
    """OpenAI's counting recipe for chat messages (gpt-4o and later)."""
    tokens = 3
    for message in messages:
        tokens += 3
        for value in message.values():
            tokens += len(encoding.encode(value))
    return tokens


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_count_tokens_matches_tiktoken(formats_gateway, o200k, text):
    system = "You are a careful assistant. Réponds en français si besoin."
    with formats_gateway.anthropic() as claude:
        counted = claude.messages.count_tokens(
            model="openai",
            system=system,
            messages=[{"role": "user", "content": text}],
        )
    expected = openai_recipe(
        o200k, [{"role": "system", "content": system}, {"role": "user", "content": text}]
    )
    assert counted.input_tokens == expected, (text, counted.input_tokens, expected)


def test_the_vocabulary_is_not_the_approximation(o200k):
    """Guards the test itself: for CJK text the exact count is far from the
    four-characters-a-token approximation, so agreement above means exact."""
    text = TEXTS[7]
    assert abs(len(o200k.encode(text)) - len(text) / 4) > 5
