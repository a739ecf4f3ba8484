//! Deterministic generation: hashing, a tiny PRNG, the word list, token
//! estimates, ids and tool arguments derived from a JSON schema.

use serde_json::{Map, Value};

/// Words used for generated text. One word is one token. They are plain
/// lowercase ASCII so they can be written into JSON without escaping.
pub(crate) const WORDS: [&str; 64] = [
    "the",
    "gateway",
    "routes",
    "every",
    "request",
    "to",
    "a",
    "model",
    "and",
    "tokens",
    "flow",
    "back",
    "through",
    "stream",
    "while",
    "budget",
    "limits",
    "keep",
    "costs",
    "under",
    "control",
    "latency",
    "stays",
    "low",
    "because",
    "connections",
    "are",
    "reused",
    "across",
    "many",
    "clients",
    "so",
    "throughput",
    "grows",
    "with",
    "cores",
    "each",
    "provider",
    "answers",
    "in",
    "its",
    "own",
    "format",
    "which",
    "is",
    "translated",
    "for",
    "caller",
    "retries",
    "happen",
    "when",
    "upstream",
    "fails",
    "quickly",
    "safely",
    "fairly",
    "mock",
    "data",
    "text",
    "quiet",
    "bright",
    "river",
    "stone",
    "cloud",
];

/// A word-at-a-time multiplicative hash (FxHash-style), finished with a
/// SplitMix64 round. Stable across builds and platforms, unlike `std`'s
/// `DefaultHasher`, so generated outputs never change; fast enough to hash
/// large prompts on every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StableHasher(u64);

const HASH_K: u64 = 0x517c_c1b7_2722_0a95;

impl StableHasher {
    pub(crate) fn new(seed: u64) -> Self {
        Self(mix64(seed))
    }

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(HASH_K);
    }

    pub(crate) fn write(mut self, bytes: &[u8]) -> Self {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            self.add(u64::from_le_bytes(le));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut le = [0u8; 8];
            le[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(le));
        }
        // The length separates fields, so ("ab","c") and ("a","bc") differ.
        self.add(bytes.len() as u64);
        self
    }

    pub(crate) fn finish(self) -> u64 {
        mix64(self.0)
    }
}

/// SplitMix64 finaliser: a cheap, well-distributed 64-bit mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 generator: deterministic for a seed, no allocation, no locking.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        // `mix64` adds the increment itself, so this is standard SplitMix64.
        let z = self.0;
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(z)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        // Modulo bias is irrelevant for word picking.
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len())]
    }
}

/// The `n` words of a completion, derived from `seed`.
pub(crate) fn words(seed: u64, n: usize) -> impl Iterator<Item = &'static str> {
    let mut rng = Rng::new(seed);
    (0..n).map(move |_| rng.word())
}

/// The completion text for `words(seed, n)`: words joined by single spaces.
pub(crate) fn completion_text(seed: u64, n: usize) -> String {
    let mut out = String::with_capacity(n * 8);
    for (i, w) in words(seed, n).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Rough token count of a text: one token per four characters, rounded up.
pub(crate) fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// Flat prompt cost of one image or file, like Gemini's 258 per image.
pub(crate) const MEDIA_TOKENS: u64 = 258;

/// Sums character counts and message counts into a prompt-token estimate.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PromptCounter {
    chars: usize,
    messages: u64,
    fixed: u64,
}

impl PromptCounter {
    pub(crate) fn text(&mut self, text: &str) {
        self.chars += text.chars().count();
    }

    pub(crate) fn message(&mut self) {
        self.messages += 1;
    }

    /// A non-text input (image, document) billed at a flat token cost.
    pub(crate) fn media(&mut self) {
        self.fixed += MEDIA_TOKENS;
    }

    /// `ceil(chars / 4) + 3` per message, plus flat media costs.
    pub(crate) fn tokens(&self) -> u64 {
        estimate_tokens(self.chars) + 3 * self.messages + self.fixed
    }
}

const ID_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `prefix` followed by 24 base62 characters, like provider ids.
pub(crate) fn make_id(prefix: &str, rng: &mut Rng) -> String {
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    // 8 characters per draw: 62^8 < 2^64, so every character is uniform enough.
    for _ in 0..3 {
        let mut bits = rng.next_u64();
        for _ in 0..8 {
            id.push(char::from(ID_ALPHABET[(bits % 62) as usize]));
            bits /= 62;
        }
    }
    id
}

/// Nesting limit for schema-driven argument generation (schemas can recurse).
const MAX_SCHEMA_DEPTH: usize = 6;

/// Builds a JSON object that satisfies a tool's JSON schema well enough for
/// clients: every declared property (so every required one) gets a value,
/// strings get a word (or the first `enum` value), numbers 42, booleans true.
pub(crate) fn arguments_for_schema(schema: &Value, rng: &mut Rng) -> Value {
    match value_for_schema(schema, rng, 0) {
        object @ Value::Object(_) => object,
        // Tool arguments must be an object even for odd schemas.
        _ => Value::Object(Map::new()),
    }
}

fn value_for_schema(schema: &Value, rng: &mut Rng, depth: usize) -> Value {
    let Some(schema) = schema.as_object() else {
        return Value::String(rng.word().to_owned());
    };
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // `["string", "null"]`: use the first non-null type.
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.contains_key("properties") => "object",
        _ => {
            // anyOf/oneOf: follow the first alternative.
            let first_alt = ["anyOf", "oneOf"].iter().find_map(|k| {
                schema
                    .get(*k)
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
            });
            return match first_alt {
                Some(alt) if depth < MAX_SCHEMA_DEPTH => value_for_schema(alt, rng, depth + 1),
                _ => Value::String(rng.word().to_owned()),
            };
        }
    };
    match kind {
        "string" => Value::String(rng.word().to_owned()),
        "integer" | "number" => Value::from(42),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        "array" if depth < MAX_SCHEMA_DEPTH => {
            let item = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(vec![value_for_schema(item, rng, depth + 1)])
        }
        "array" => Value::Array(Vec::new()),
        "object" => {
            let mut out = Map::new();
            if depth >= MAX_SCHEMA_DEPTH {
                return Value::Object(out);
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    out.insert(name.clone(), value_for_schema(prop, rng, depth + 1));
                }
            }
            // Required names without a property schema still get a value.
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !out.contains_key(name) {
                        out.insert(name.to_owned(), Value::String(rng.word().to_owned()));
                    }
                }
            }
            Value::Object(out)
        }
        _ => Value::String(rng.word().to_owned()),
    }
}

/// Splits `s` into pieces of about `size` bytes on char boundaries, the way
/// providers stream tool arguments in fragments.
pub(crate) fn fragments(s: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_need_no_json_escaping() {
        for w in WORDS {
            assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w}");
        }
    }

    #[test]
    fn hashing_is_stable_and_separates_fields() {
        let a = StableHasher::new(1).write(b"ab").write(b"c").finish();
        let b = StableHasher::new(1).write(b"a").write(b"bc").finish();
        assert_ne!(a, b);
        assert_eq!(a, StableHasher::new(1).write(b"ab").write(b"c").finish());
        assert_ne!(a, StableHasher::new(2).write(b"ab").write(b"c").finish());
        let h = |b: &[u8]| StableHasher::new(0).write(b).finish();
        assert_ne!(h(b"a"), h(b"a\0"));
        assert_ne!(h(b"0123456789abcdef"), h(b"0123456789abcdeg"));
    }

    #[test]
    fn completion_text_is_deterministic() {
        assert_eq!(completion_text(7, 10), completion_text(7, 10));
        assert_ne!(completion_text(7, 10), completion_text(8, 10));
        assert_eq!(completion_text(7, 10).split(' ').count(), 10);
        assert_eq!(completion_text(7, 0), "");
    }

    #[test]
    fn schema_arguments_cover_properties() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "detailed": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "nested": {"type": "object", "properties": {"x": {"type": "number"}}},
                "maybe": {"type": ["string", "null"]}
            },
            "required": ["city", "extra"]
        });
        let args = arguments_for_schema(&schema, &mut Rng::new(1));
        assert!(args["city"].is_string());
        assert_eq!(args["unit"], "celsius");
        assert_eq!(args["days"], 42);
        assert_eq!(args["detailed"], true);
        assert!(args["tags"][0].is_string());
        assert_eq!(args["nested"]["x"], 42);
        assert!(args["maybe"].is_string());
        assert!(args["extra"].is_string());
        assert_eq!(args, arguments_for_schema(&schema, &mut Rng::new(1)));
        assert_eq!(
            arguments_for_schema(&json!(null), &mut Rng::new(1)),
            json!({})
        );
    }

    #[test]
    fn fragments_respect_char_boundaries() {
        let s = "{\"a\":\"héllo wörld\"}";
        let parts: Vec<&str> = fragments(s, 4).collect();
        assert_eq!(parts.concat(), s);
        assert!(parts.len() > 2);
        assert_eq!(fragments("", 4).count(), 0);
    }

    #[test]
    fn ids_have_prefix_and_length() {
        let id = make_id("chatcmpl-", &mut Rng::new(3));
        assert!(id.starts_with("chatcmpl-"));
        assert_eq!(id.len(), "chatcmpl-".len() + 24);
        assert!(
            id["chatcmpl-".len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
    }
}
