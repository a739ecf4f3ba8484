//! Checksums and structural rules that turn a pattern match into a finding:
//! Luhn for payment cards, ISO 13616 mod-97 for IBANs, the SSA's rules for
//! US social security numbers, and Shannon entropy for generic secrets.

/// True when `digits` (ASCII digits only) pass the Luhn check.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (position, &d) in digits.iter().rev().enumerate() {
        let mut value = u32::from(d - b'0');
        if position % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// True when `digits` start like a card of a known network, with that
/// network's length: Visa, Mastercard, American Express, Discover, JCB,
/// Diners Club, UnionPay.
pub fn card_network(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits[..n.min(len)]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    match digits.first() {
        Some(b'4') => matches!(len, 13 | 16 | 19),
        Some(b'5') => (51..=55).contains(&prefix(2)) && len == 16,
        Some(b'2') => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(b'3') => match prefix(2) {
            34 | 37 => len == 15,
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len),
            36 | 38 | 39 | 30 => (14..=19).contains(&len),
            _ => false,
        },
        Some(b'6') => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                && (16..=19).contains(&len)
                || prefix(2) == 62 && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// True for a US SSN that could have been issued: area not 000, 666 or
/// 900-999; group not 00; serial not 0000. `digits` are its nine digits.
pub fn ssn(digits: &[u8; 9]) -> bool {
    let number = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (area, group, serial) = (number(0..3), number(3..5), number(5..9));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// The IBAN length of each country that issues them (SWIFT's registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// True when `compact` (no spaces, upper case) is a well-formed IBAN: a
/// registered country, its length, and the mod-97 check equal to 1.
pub fn iban(compact: &[u8]) -> bool {
    let Some(country) = compact.get(..2) else {
        return false;
    };
    let length = IBAN_LENGTHS
        .iter()
        .find(|(code, _)| &code[..] == country)
        .map(|(_, length)| *length);
    if length != Some(compact.len()) {
        return false;
    }
    // The check runs over the number with its first four characters moved
    // to the end, letters as 10..35, digit by digit modulo 97.
    let mut remainder = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let value = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// Shannon entropy of `text` in bits per byte.
pub fn entropy(text: &[u8]) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in text {
        counts[usize::from(b)] += 1;
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_refuses_one_digit_off() {
        for card in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
        ] {
            assert!(luhn(card.as_bytes()), "{card}");
            assert!(card_network(card.as_bytes()), "{card}");
        }
        assert!(!luhn(b"4111111111111112"));
        assert!(!card_network(b"9111111111111111"), "no such network");
        assert!(
            !card_network(b"41111111111111"),
            "Visa has no 14-digit cards"
        );
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(b"123456789"));
        assert!(!ssn(b"000123456"));
        assert!(!ssn(b"666123456"));
        assert!(!ssn(b"912345678"));
        assert!(!ssn(b"123004567"));
        assert!(!ssn(b"123450000"));
    }

    #[test]
    fn iban_checksums_and_lengths() {
        assert!(iban(b"GB82WEST12345698765432"));
        assert!(iban(b"DE89370400440532013000"));
        assert!(iban(b"FR1420041010050500013M02606"));
        assert!(!iban(b"GB82WEST12345698765433"), "checksum");
        assert!(!iban(b"GB82WEST1234569876543"), "length");
        assert!(!iban(b"ZZ82WEST12345698765432"), "country");
    }

    #[test]
    fn entropy_separates_random_from_repetitive() {
        assert!(entropy(b"aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy(b"Zq8Lr2Vx9Kp4Tm7B") > 3.5);
    }
}
