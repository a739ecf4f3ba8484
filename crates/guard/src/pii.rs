//! PII and secret recognizers: a pattern per kind finds candidates, a
//! validator (checksum, structure, entropy) keeps the real ones, and
//! overlapping findings are resolved by kind priority.
//!
//! Patterns use ASCII word boundaries and no captures, so the regex engine
//! stays on its DFA whatever the text's script; kinds whose anchor byte (`@`,
//! `:`, a digit, `-----BEGIN`) is absent are not scanned at all.

use std::net::Ipv6Addr;

use regex::Regex;

use crate::validate;

/// What a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    CreditCard,
    UsSsn,
    Iban,
    IpAddress,
    /// API keys, tokens, JWTs, private keys.
    Secret,
    /// A policy's own rule, by its index (see [`crate::Rules::label`]).
    Custom(u8),
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Email,
        Kind::Phone,
        Kind::CreditCard,
        Kind::UsSsn,
        Kind::Iban,
        Kind::IpAddress,
        Kind::Secret,
    ];

    /// The name used in configuration, placeholders and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::CreditCard => "CREDIT_CARD",
            Kind::UsSsn => "US_SSN",
            Kind::Iban => "IBAN",
            Kind::IpAddress => "IP_ADDRESS",
            Kind::Secret => "SECRET",
            Kind::Custom(_) => "CUSTOM",
        }
    }

    /// Position in [`Kind::ALL`]; `None` for custom rules.
    pub fn builtin_index(self) -> Option<usize> {
        Kind::ALL.iter().position(|k| *k == self)
    }

    /// Which finding wins when two overlap: the more specific, validated
    /// kinds first (a card number also looks like a phone number).
    fn priority(self) -> u8 {
        match self {
            // A policy's own rule says what the text is.
            Kind::Custom(_) | Kind::Secret => 0,
            // An IBAN's checksum covers all of it; a card number may be
            // found inside one.
            Kind::Iban => 1,
            Kind::CreditCard => 2,
            Kind::UsSsn => 3,
            Kind::Email => 4,
            Kind::IpAddress => 5,
            Kind::Phone => 6,
        }
    }
}

/// One recognized value: its kind and byte range in the scanned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// Minimum Shannon entropy (bits per character) of a value assigned to a
/// key-like name before it counts as a secret: above English words and
/// repeated characters, below random base64.
const SECRET_ENTROPY: f64 = 3.0;

/// The compiled recognizers; build once, share (scanning takes `&self`).
pub struct Recognizers {
    email: Regex,
    phone: Regex,
    card: Regex,
    ssn: Regex,
    iban: Regex,
    ipv4: Regex,
    ipv6: Regex,
    secret_prefixed: Regex,
    secret_assigned: Regex,
    private_key_begin: Regex,
    private_key_end: Regex,
}

/// Longest PEM private key block recognized (a 4096-bit RSA key is ~3.3 KB).
const MAX_PRIVATE_KEY: usize = 16 * 1024;

impl Default for Recognizers {
    fn default() -> Self {
        Self::new()
    }
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants, compiled and tested here: a failure is a
    // programming error caught by every test run.
    Regex::new(pattern).unwrap_or_else(|e| panic!("recognizer pattern {pattern:?}: {e}"))
}

impl Recognizers {
    pub fn new() -> Self {
        Self {
            email: regex(
                r"(?-u:\b)[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)*\.[A-Za-z]{2,24}(?-u:\b)",
            ),
            // International (+country) or North American, with the usual
            // separators; the digit count is checked after.
            phone: regex(concat!(
                // +CC, an optional trunk `(0)`, then groups.
                r"\+[1-9][0-9]{0,2}(?: ?\(0\))?(?:[ .-]?\(?[0-9]{1,4}\)?)(?:[ .-]?[0-9]{2,8}){1,5}",
                // North American `(415) 555-0132`, `415-555-0132`.
                r"|\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}",
                r"|(?-u:\b)[0-9]{3}[.-][0-9]{3}[.-][0-9]{4}(?-u:\b)",
                // National with a trunk 0: `030 624076`, `(0121) 496 0002`,
                // `04 99 37 05 65`, `0753-754751`.
                r"|\(0[0-9]{1,4}\)[ -]?[0-9]{2,8}(?:[ .-][0-9]{2,8}){0,3}",
                r"|(?-u:\b)0[0-9]{1,4}(?:[ .-][0-9]{2,8}){1,4}(?-u:\b)",
                // The same written without separators: `0536833801`.
                r"|(?-u:\b)0[1-9][0-9]{7,10}(?-u:\b)",
                // Brazilian `98 7500-4743`.
                r"|(?-u:\b)[1-9][0-9] 9?[0-9]{4}-[0-9]{4}(?-u:\b)",
            )),
            card: regex(r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"),
            ssn: regex(r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)"),
            iban: regex(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)"),
            ipv4: regex(r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)"),
            ipv6: regex(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*:[0-9A-Fa-f.:]*"),
            secret_prefixed: regex(concat!(
                r"(?-u:\b)(?:",
                r"sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{20,}",
                r"|sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}",
                r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{30,}",
                r"|github_pat_[A-Za-z0-9_]{22,}",
                r"|xox[abprs]-[A-Za-z0-9-]{10,}",
                r"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
                r"|AIza[0-9A-Za-z_-]{35}",
                r"|glpat-[A-Za-z0-9_-]{20,}",
                r"|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}",
                r")",
            )),
            secret_assigned: regex(concat!(
                r"(?i:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key|auth|credential)",
                r"[A-Za-z0-9_-]{0,20}[\x22']?[ \t]*[:=][ \t]*[\x22']?",
                r"[A-Za-z0-9_+/=.-]{16,256}",
            )),
            private_key_begin: regex(r"-----BEGIN[A-Z ]{0,24} PRIVATE KEY-----"),
            private_key_end: regex(r"-----END[A-Z ]{0,24} PRIVATE KEY-----"),
        }
    }

    /// Every finding in `text`, ordered by start, none overlapping.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        let bytes = text.as_bytes();
        let has_digit = bytes.iter().any(u8::is_ascii_digit);
        if memchr::memchr(b'@', bytes).is_some() {
            self.emails(text, &mut found);
        }
        if has_digit {
            self.cards(text, &mut found);
            self.ssns(text, &mut found);
            self.ibans(text, &mut found);
            self.ipv4s(text, &mut found);
            self.phones(text, &mut found);
        }
        if memchr::memchr(b':', bytes).is_some() {
            self.ipv6s(text, &mut found);
        }
        self.secrets(text, &mut found);
        resolve(found)
    }

    fn emails(&self, text: &str, found: &mut Vec<Finding>) {
        for m in self.email.find_iter(text) {
            found.push(finding(Kind::Email, m.start(), m.end()));
        }
    }

    fn cards(&self, text: &str, found: &mut Vec<Finding>) {
        for m in self.card.find_iter(text) {
            let raw = m.as_str().as_bytes();
            if !consistent_separators(raw) || continues_as_number(text, m.start(), m.end()) {
                continue;
            }
            let digits: Vec<u8> = raw.iter().copied().filter(u8::is_ascii_digit).collect();
            if validate::card_network(&digits) && validate::luhn(&digits) {
                found.push(finding(Kind::CreditCard, m.start(), m.end()));
            }
        }
    }

    fn ssns(&self, text: &str, found: &mut Vec<Finding>) {
        for m in self.ssn.find_iter(text) {
            let raw = m.as_str().as_bytes();
            // Both separators the same: `123-45-6789` or `123 45 6789`.
            if raw[3] != raw[6] || !not_in_number(text, m.start(), m.end()) {
                continue;
            }
            let mut digits = [0u8; 9];
            for (slot, d) in digits
                .iter_mut()
                .zip(raw.iter().filter(|b| b.is_ascii_digit()))
            {
                *slot = *d;
            }
            if validate::ssn(&digits) {
                found.push(finding(Kind::UsSsn, m.start(), m.end()));
            }
        }
    }

    fn ibans(&self, text: &str, found: &mut Vec<Finding>) {
        for m in self.iban.find_iter(text) {
            // The pattern may run on into a following upper-case word:
            // drop trailing space-separated groups until the rest checks.
            let mut candidate = m.as_str();
            loop {
                let compact: Vec<u8> = candidate.bytes().filter(|b| *b != b' ').collect();
                if validate::iban(&compact) {
                    found.push(finding(Kind::Iban, m.start(), m.start() + candidate.len()));
                    break;
                }
                match candidate.rfind(' ') {
                    Some(cut) if cut >= 15 => candidate = &candidate[..cut],
                    _ => break,
                }
            }
        }
    }

    fn ipv4s(&self, text: &str, found: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for m in self.ipv4.find_iter(text) {
            // Part of a longer dotted number (a version `1.2.3.4.5`, or
            // `v1.2.3.4` which the boundary already excludes) is not an address.
            let before = m.start().checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(m.end()).copied();
            let dotted_on = |b: Option<u8>, next: Option<u8>| {
                b == Some(b'.') && next.is_some_and(|n| n.is_ascii_digit())
            };
            if dotted_on(after, bytes.get(m.end() + 1).copied())
                || dotted_on(before, m.start().checked_sub(2).map(|i| bytes[i]))
            {
                continue;
            }
            if after_version_word(&text[..m.start()]) {
                continue;
            }
            let valid = m.as_str().split('.').all(|octet| {
                octet.parse::<u16>().is_ok_and(|v| v <= 255)
                    && !(octet.len() > 1 && octet.starts_with('0'))
            });
            if valid {
                found.push(finding(Kind::IpAddress, m.start(), m.end()));
            }
        }
    }

    fn ipv6s(&self, text: &str, found: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for m in self.ipv6.find_iter(text) {
            let start = m.start();
            // Inside a longer token (a hash, a URL scheme) it is not one.
            let glued = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
            if glued(start.checked_sub(1).and_then(|i| bytes.get(i))) {
                continue;
            }
            // Sentence punctuation may follow; a trailing `::` may belong.
            let mut candidate = m.as_str();
            loop {
                let end = start + candidate.len();
                if candidate.matches(':').count() >= 2
                    && !glued(bytes.get(end))
                    && candidate.parse::<Ipv6Addr>().is_ok()
                {
                    found.push(finding(Kind::IpAddress, start, end));
                    break;
                }
                match candidate.strip_suffix(['.', ':']) {
                    Some(shorter) => candidate = shorter,
                    None => break,
                }
            }
        }
    }

    fn phones(&self, text: &str, found: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        for m in self.phone.find_iter(text) {
            let raw = m.as_str();
            let digits = raw.bytes().filter(u8::is_ascii_digit).count();
            let plausible = if raw.starts_with('+') {
                (8..=15).contains(&digits)
            } else if raw.trim_start_matches('(').starts_with('0') {
                // A trunk 0 and an area code: national numbers of 9 to 12
                // digits, whose groups are not a date (`01.02.2024`) nor
                // an (invalid) SSN's `000-12-3456`.
                (9..=12).contains(&digits) && !date_like(raw) && !ssn_shaped(raw)
            } else {
                (10..=11).contains(&digits)
            };
            let glued = bytes.get(m.end()).is_some_and(u8::is_ascii_alphanumeric)
                || m.start()
                    .checked_sub(1)
                    .and_then(|i| bytes.get(i))
                    .is_some_and(u8::is_ascii_alphanumeric);
            if plausible && !glued {
                found.push(finding(Kind::Phone, m.start(), m.end()));
            }
        }
    }

    fn secrets(&self, text: &str, found: &mut Vec<Finding>) {
        for m in self.secret_prefixed.find_iter(text) {
            found.push(finding(Kind::Secret, m.start(), m.end()));
        }
        if memchr::memmem::find(text.as_bytes(), b"-----BEGIN").is_some() {
            for begin in self.private_key_begin.find_iter(text) {
                let limit =
                    text.floor_char_boundary((begin.start() + MAX_PRIVATE_KEY).min(text.len()));
                if let Some(end) = self.private_key_end.find(&text[begin.end()..limit]) {
                    found.push(finding(
                        Kind::Secret,
                        begin.start(),
                        begin.end() + end.end(),
                    ));
                }
            }
        }
        for m in self.secret_assigned.find_iter(text) {
            // The value starts after the last separator and quote.
            let matched = m.as_str();
            let value_at = matched
                .rfind([':', '=', '"', '\'', ' ', '\t'])
                .map_or(0, |i| i + 1);
            let value = &matched[value_at..];
            let has_digit = value.bytes().any(|b| b.is_ascii_digit());
            let has_letter = value.bytes().any(|b| b.is_ascii_alphabetic());
            if has_digit && has_letter && validate::entropy(value.as_bytes()) >= SECRET_ENTROPY {
                found.push(finding(Kind::Secret, m.start() + value_at, m.end()));
            }
        }
    }
}

fn finding(kind: Kind, start: usize, end: usize) -> Finding {
    Finding { kind, start, end }
}

/// True when the digits go on past the match in another group
/// (`… 3874 1431`): part of a longer number, such as an account.
fn continues_as_number(text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let sep_digit = |sep: Option<&u8>, digit: Option<&u8>| {
        sep.is_some_and(|b| matches!(b, b' ' | b'-')) && digit.is_some_and(u8::is_ascii_digit)
    };
    sep_digit(bytes.get(end), bytes.get(end + 1))
        || start >= 2 && sep_digit(bytes.get(start - 1), bytes.get(start - 2))
}

/// True when the text before a dotted number ends with a word that makes
/// it a version (`version 10.14.9.6`, `v 1.2.3.4`, `build 2.0.1.7`).
fn after_version_word(before: &str) -> bool {
    let word = before
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ["version", "ver", "v", "release", "build", "firmware"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

/// `ddd-dd-dddd`: the shape of an SSN, valid or not.
fn ssn_shaped(raw: &str) -> bool {
    let groups: Vec<usize> = raw.split(['-', ' ']).map(str::len).collect();
    groups == [3, 2, 4]
}

/// Three groups that read as a date (`01.02.2024`, `31-12-99`).
fn date_like(raw: &str) -> bool {
    let groups: Vec<&str> = raw.split(['.', '-', '/', ' ']).collect();
    groups.len() == 3
        && groups[0].len() <= 2
        && groups[1].len() <= 2
        && matches!(groups[2].len(), 2 | 4)
}

/// A card number's groups are separated all by spaces, all by dashes, or
/// not at all.
fn consistent_separators(raw: &[u8]) -> bool {
    let spaces = raw.contains(&b' ');
    let dashes = raw.contains(&b'-');
    !(spaces && dashes)
}

/// True when the match is not glued to further digits or dashes (part of a
/// longer number such as `123-45-6789-01`).
fn not_in_number(text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let joins = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_digit() || *b == b'-');
    !joins(start.checked_sub(1).and_then(|i| bytes.get(i))) && !joins(bytes.get(end))
}

/// Sorted by start, overlaps settled: of two overlapping findings the one of
/// higher priority stays (at equal priority, the longer).
pub(crate) fn resolve(mut found: Vec<Finding>) -> Vec<Finding> {
    if found.len() < 2 {
        return found;
    }
    found.sort_by_key(|f| {
        (
            f.kind.priority(),
            std::cmp::Reverse(f.end - f.start),
            f.start,
        )
    });
    let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        if !kept.iter().any(|k| k.start < f.end && f.start < k.end) {
            kept.push(f);
        }
    }
    kept.sort_by_key(|f| f.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        Recognizers::new()
            .scan(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn each_kind_in_a_sentence() {
        let text = "Mail ann.lee+x@mail.example.org or call +44 20 7946 0958; card 4111 1111 1111 1111, \
                    SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, host 10.0.12.7 and fe80::1ff:fe23:4567:890a.";
        assert_eq!(
            kinds(text),
            [
                (Kind::Email, "ann.lee+x@mail.example.org"),
                (Kind::Phone, "+44 20 7946 0958"),
                (Kind::CreditCard, "4111 1111 1111 1111"),
                (Kind::UsSsn, "123-45-6789"),
                (Kind::Iban, "GB82 WEST 1234 5698 7654 32"),
                (Kind::IpAddress, "10.0.12.7"),
                (Kind::IpAddress, "fe80::1ff:fe23:4567:890a"),
            ]
        );
    }

    #[test]
    fn look_alikes_are_not_findings() {
        for text in [
            "order 4111 1111 1111 1112 shipped",
            "SSN 000-12-3456 is invalid",
            "IBAN GB82 WEST 1234 5698 7654 33 has a bad check digit",
            "release v1.2.3.4 and 1.2.3.4.5 and 300.1.1.1",
            "meet at 12:30:45 on 2024-05-06",
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
            "id 123e4567-e89b-12d3-a456-426614174000",
            "@mention me",
            "ticket 555-0132",
            "token: aaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(kinds(text), [], "{text}");
        }
    }

    #[test]
    fn secrets_of_the_common_providers() {
        for secret in [
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
            "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z5678",
            "xoxb-1234567890-abcdefghij",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ] {
            let text = format!("use {secret} here");
            assert_eq!(kinds(&text), [(Kind::Secret, secret)], "{secret}");
        }
        let text = "config: api_key = \"Zq8Lr2Vx9Kp4Tm7Bw3Nc\"";
        assert_eq!(kinds(text), [(Kind::Secret, "Zq8Lr2Vx9Kp4Tm7Bw3Nc")]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L7VLPHCgcBIjwnQ\n-----END RSA PRIVATE KEY-----";
        assert_eq!(kinds(&format!("key:\n{pem}\n")), [(Kind::Secret, pem)]);
    }

    #[test]
    fn a_card_is_not_also_a_phone_number() {
        assert_eq!(
            kinds("pay with 5555-5555-5555-4444 today"),
            [(Kind::CreditCard, "5555-5555-5555-4444")]
        );
    }

    #[test]
    fn non_ascii_text_is_scanned_at_byte_offsets() {
        let text = "Grüße an jörg@example.de — ☎ +49 30 1234567";
        assert_eq!(
            kinds(text),
            [
                (Kind::Email, "jörg@example.de"),
                (Kind::Phone, "+49 30 1234567")
            ]
        );
    }
}
