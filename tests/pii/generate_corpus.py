#!/usr/bin/env python3
"""Generate the labelled PII evaluation corpus (JSON Lines).

    generate_corpus.py --seed 7 --count 2400 --out corpus.jsonl

Each line: {"id": n, "text": str, "spans": [{"start", "end", "type", "subtype"}],
"negatives": [{"start", "end", "kind"}]}. Offsets are Python str (code point)
offsets, end exclusive, and text[start:end] is exactly the entity value.
"subtype" (e.g. "aws_access_key", "intl_GB", "amex") and "negatives" (hard
negatives: look-alikes that are NOT entities) are extra, for diagnosis only;
score.py matches on start/end/type alone.

Entity types: EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, SECRET.
All values are fake: random characters of the right alphabet and length,
valid checksums where the format has one (Luhn, IBAN mod-97), phone numbers
valid per the numbering plan (checked with `phonenumbers`).

Deterministic for a given --seed and the pinned versions in requirements.txt:
every random choice comes from Faker.seed(seed) or random.Random(seed).
"""
from __future__ import annotations

import argparse
import base64
import collections
import datetime
import ipaddress
import json
import random
import re
import string
import sys
import uuid

import phonenumbers
from faker import Faker

TYPES = ["EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "SECRET"]
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_CA", "pt_BR", "en_IN"]
# it_IT's city() draws from a set, so its output follows PYTHONHASHSEED: left out.
CITY_LOCALES = [loc for loc in LOCALES if loc != "it_IT"]
# Faker locale -> phonenumbers region, for validating Faker's own phone numbers.
LOCALE_REGION = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES",
                 "it_IT": "IT", "nl_NL": "NL", "en_CA": "CA", "pt_BR": "BR", "en_IN": "IN"}

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"


class Gen:
    """All value generators, sharing one seeded RNG and seeded Faker instances."""

    def __init__(self, seed: int):
        Faker.seed(seed)  # seeds the random instance shared by all Faker generators
        self.rng = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in LOCALES}
        self.en = self.fakers["en_US"]

    # ---- small helpers -------------------------------------------------
    def rand(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def digits(self, n: int) -> str:
        return self.rand(string.digits, n)

    def moment(self) -> datetime.datetime:
        # Fixed window, not Faker's "-5y".."now": those move with the clock and
        # would make the corpus differ from day to day.
        return datetime.datetime(2020, 1, 1) + datetime.timedelta(seconds=self.rng.randrange(6 * 365 * 86400))

    def faker(self) -> Faker:
        return self.fakers[self.rng.choice(LOCALES)]

    # ---- EMAIL -----------------------------------------------------------
    def email(self):
        f = self.faker()
        r = self.rng.random()
        if r < 0.3:
            v = f.email(safe=False)
        elif r < 0.5:
            v = f.company_email()
        elif r < 0.7:
            v = f.free_email()
        else:
            # first.last+tag@sub.domain, the shapes real corporate addresses take
            user = f.user_name()
            if self.rng.random() < 0.4:
                user += "+" + self.rng.choice(["billing", "dev", "news", "test", "2024"])
            dom = f.domain_name()
            if self.rng.random() < 0.3:
                dom = self.rng.choice(["mail", "eu", "corp", "support"]) + "." + dom
            v = f"{user}@{dom}"
        return v, "email"

    # ---- PHONE -----------------------------------------------------------
    US_AREAS = ["212", "213", "312", "303", "305", "404", "415", "503", "512", "617",
                "646", "702", "718", "818", "917", "206", "416", "604", "514", "972"]

    def _own_phone(self):
        """(formatted, region, subtype) from hand-written national numbering plans."""
        d, c = self.digits, self.rng.choice
        country = c(["US", "US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "JP", "BR"])
        if country == "US":
            a = c(self.US_AREAS)
            e = str(self.rng.randint(2, 9)) + d(2)
            l = d(4)
            fmt = c(["+1 ({a}) {e}-{l}", "+1 {a} {e} {l}", "+1-{a}-{e}-{l}", "+1{a}{e}{l}",
                     "({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "1-{a}-{e}-{l}"])
            s = fmt.format(a=a, e=e, l=l)
            return s, "US", ("intl_US" if s.startswith("+") else "national_US")
        if country == "GB":
            kind = c(["london", "mobile", "manchester"])
            if kind == "london":
                n1, n2 = "20", c("378") + d(3) + " " + d(4)
            elif kind == "mobile":
                n1, n2 = "7" + c("4789") + d(2), d(6)
            else:
                n1, n2 = "161", d(3) + " " + d(4)
            s = c(["+44 {a} {b}", "+44 (0){a} {b}", "0{a} {b}"]).format(a=n1, b=n2)
            return s, "GB", ("intl_GB" if s.startswith("+") else "national_GB")
        if country == "DE":
            kind = c(["berlin", "munich", "mobile"])
            if kind == "berlin":
                a, b = "30", d(self.rng.randint(6, 8))
            elif kind == "munich":
                a, b = "89", d(self.rng.randint(7, 8))
            else:
                a, b = c(["151", "160", "170", "171", "176"]), d(8 if self.rng.random() < 0.5 else 7)
            s = c(["+49 {a} {b}", "+49-{a}-{b}", "+49 (0){a} {b}", "0{a} {b}"]).format(a=a, b=b)
            return s, "DE", ("intl_DE" if s.startswith("+") else "national_DE")
        if country == "FR":
            first = c("123456679")
            pairs = [d(2) for _ in range(4)]
            if self.rng.random() < 0.6:
                s = f"+33 {first} " + " ".join(pairs)
            else:
                sep = c([" ", "."])
                s = f"0{first}{sep}" + sep.join(pairs)
            return s, "FR", ("intl_FR" if s.startswith("+") else "national_FR")
        if country == "ES":
            s = c(["+34 91{x} {y} {z}", "+34 6{x}{w} {y} {z}"]).format(x=d(1), w=d(1), y=d(3), z=d(3))
            return s, "ES", "intl_ES"
        if country == "IT":
            s = c(["+39 06 {a} {b}", "+39 3{m} {c3} {b}"]).format(a=d(4), b=d(4), m=c("2345689") + d(1), c3=d(3))
            return s, "IT", "intl_IT"
        if country == "NL":
            s = c(["+31 20 {a} {b}", "+31 6 {c8}"]).format(a=d(3), b=d(4), c8=d(8))
            return s, "NL", "intl_NL"
        if country == "IN":
            s = "+91 " + c("6789") + d(4) + " " + d(5)
            return s, "IN", "intl_IN"
        if country == "AU":
            s = c(["+61 2 {a} {b}", "+61 4{x} {y} {z}"]).format(a="9" + d(3), b=d(4), x=d(2), y=d(3), z=d(3))
            return s, "AU", "intl_AU"
        if country == "JP":
            s = c(["+81 3-{a}-{b}", "+81 90-{a}-{b}"]).format(a=d(4), b=d(4))
            return s, "JP", "intl_JP"
        s = "+55 " + c(["11", "21", "31"]) + " 9" + d(4) + "-" + d(4)
        return s, "BR", "intl_BR"

    PHONE_SHAPE = re.compile(r"^\+?[\d(][\d ().-]*\d$")

    def phone(self):
        # Faker's own locale formats first (about 40%), kept only if they are
        # plain (no "x123" extension) and valid numbers; else our own formats.
        for _ in range(60):  # bounded: a valid number comes within a few draws
            if self.rng.random() < 0.4:
                loc = self.rng.choice(LOCALES)
                s = self.fakers[loc].phone_number()
                region = LOCALE_REGION[loc]
                sub = ("intl_" if s.startswith("+") else "national_") + region
                if not self.PHONE_SHAPE.match(s):
                    continue
            else:
                s, region, sub = self._own_phone()
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(s, region)):
                    return s, sub
            except phonenumbers.NumberParseException:
                pass
        raise RuntimeError("no valid phone number in 60 draws")

    # ---- CREDIT_CARD -----------------------------------------------------
    @staticmethod
    def luhn_digit(body: str) -> str:
        total = 0
        for i, ch in enumerate(reversed(body)):
            n = int(ch)
            if i % 2 == 0:  # these positions get doubled once the check digit is appended
                n *= 2
                if n > 9:
                    n -= 9
            total += n
        return str((10 - total % 10) % 10)

    def _card_digits(self):
        brand = self.rng.choice(["visa", "visa", "mastercard", "mastercard", "amex", "discover"])
        if brand == "visa":
            prefix, n = "4", 16
        elif brand == "mastercard":
            prefix, n = (str(self.rng.randint(51, 55)) if self.rng.random() < 0.7
                         else str(self.rng.randint(2221, 2720))), 16
        elif brand == "amex":
            prefix, n = self.rng.choice(["34", "37"]), 15
        else:
            prefix, n = self.rng.choice(["6011", "65", str(self.rng.randint(644, 649))]), 16
        body = prefix + self.digits(n - 1 - len(prefix))
        return body + self.luhn_digit(body), brand

    def _format_card(self, num: str) -> str:
        sep = self.rng.choice([" ", " ", "-", ""])
        groups = [num[:4], num[4:10], num[10:]] if len(num) == 15 else [num[i:i + 4] for i in range(0, 16, 4)]
        return sep.join(groups)

    def card(self):
        num, brand = self._card_digits()
        return self._format_card(num), brand

    def bad_card(self):
        num, _ = self._card_digits()
        wrong = str((int(num[-1]) + self.rng.randint(1, 9)) % 10)  # any other digit fails Luhn
        return self._format_card(num[:-1] + wrong)

    # ---- US_SSN ----------------------------------------------------------
    def ssn(self):
        while True:  # rejection is rare (a handful of excluded values), so this ends
            area = self.rng.randint(1, 899)
            if area == 666:
                continue
            v = f"{area:03d}-{self.rng.randint(1, 99):02d}-{self.rng.randint(1, 9999):04d}"
            # Values that validators treat as samples, not real SSNs.
            if v in ("123-45-6789", "078-05-1120", "219-09-9999") or len(set(v.replace("-", ""))) == 1:
                continue
            break
        if self.rng.random() < 0.15:
            return v.replace("-", " "), "spaces"
        return v, "dashes"

    def bad_ssn(self):
        a, g, s = f"{self.rng.randint(1, 899):03d}", f"{self.rng.randint(1, 99):02d}", f"{self.rng.randint(1, 9999):04d}"
        which = self.rng.choice(["000", "666", "9xx", "group00", "serial0000"])
        if which == "000":
            a = "000"
        elif which == "666":
            a = "666"
        elif which == "9xx":
            a = "9" + self.digits(2)
        elif which == "group00":
            g = "00"
        else:
            s = "0000"
        return f"{a}-{g}-{s}"

    # ---- IBAN ------------------------------------------------------------
    # country -> BBAN layout: (count, class) with n=digit, a=upper letter, c=upper alnum
    IBAN_LAYOUT = {
        "DE": [(18, "n")], "GB": [(4, "a"), (14, "n")], "FR": [(23, "n")], "ES": [(20, "n")],
        "IT": [(1, "a"), (10, "n"), (12, "c")], "NL": [(4, "a"), (10, "n")], "BE": [(12, "n")],
        "CH": [(17, "n")], "AT": [(16, "n")], "PL": [(24, "n")], "IE": [(4, "a"), (14, "n")],
        "PT": [(21, "n")], "SE": [(20, "n")], "DK": [(14, "n")], "NO": [(11, "n")],
    }

    @staticmethod
    def iban_check(country: str, bban: str) -> str:
        rearranged = bban + country + "00"
        numeric = "".join(str(int(ch, 36)) for ch in rearranged)
        return f"{98 - int(numeric) % 97:02d}"

    def _iban_parts(self):
        country = self.rng.choice(list(self.IBAN_LAYOUT))
        classes = {"n": string.digits, "a": string.ascii_uppercase, "c": UPPER_DIGITS}
        bban = "".join(self.rand(classes[k], n) for n, k in self.IBAN_LAYOUT[country])
        return country, bban

    def _format_iban(self, compact: str) -> str:
        if self.rng.random() < 0.6:
            return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
        return compact

    def iban(self):
        country, bban = self._iban_parts()
        return self._format_iban(country + self.iban_check(country, bban) + bban), country

    def bad_iban(self):
        country, bban = self._iban_parts()
        good = int(self.iban_check(country, bban))
        wrong = (good + self.rng.randint(1, 90) - 2) % 97 + 2  # 2..98, never the right one
        if wrong == good:
            wrong = 2 if good != 2 else 3
        return self._format_iban(f"{country}{wrong:02d}{bban}")

    # ---- IP_ADDRESS ------------------------------------------------------
    def ipv4(self):
        r = self.rng.random()
        o = lambda: self.rng.randint(0, 255)  # noqa: E731
        if r < 0.2:
            v = f"10.{o()}.{o()}.{self.rng.randint(1, 254)}"
        elif r < 0.4:
            v = f"192.168.{o()}.{self.rng.randint(1, 254)}"
        elif r < 0.5:
            v = f"172.{self.rng.randint(16, 31)}.{o()}.{self.rng.randint(1, 254)}"
        else:
            first = self.rng.choice([n for n in range(1, 224) if n not in (10, 127)])
            v = f"{first}.{o()}.{o()}.{self.rng.randint(1, 254)}"
        return v, "ipv4"

    def ipv6(self):
        r = self.rng.random()
        hextets = [self.rng.randint(0, 0xFFFF) for _ in range(8)]
        if r < 0.25:
            hextets[:2] = [0x2001, 0x0DB8]
        elif r < 0.4:
            hextets[:4] = [0xFE80, 0, 0, 0]
        if self.rng.random() < 0.6:  # a run of zero groups, so "::" compression happens
            start = self.rng.randint(2, 5)
            for i in range(start, min(8, start + self.rng.randint(2, 4))):
                hextets[i] = 0
        addr = ipaddress.IPv6Address(int("".join(f"{h:04x}" for h in hextets), 16))
        if self.rng.random() < 0.12:
            return addr.exploded, "ipv6_full"
        return addr.compressed, ("ipv6_compressed" if "::" in addr.compressed else "ipv6")

    def ip(self):
        return self.ipv4() if self.rng.random() < 0.6 else self.ipv6()

    def bad_ip(self):
        r = self.rng.random()
        if r < 0.5:
            parts = [self.rng.randint(0, 255) for _ in range(4)]
            parts[self.rng.randrange(4)] = self.rng.randint(256, 999)
            return ".".join(map(str, parts))
        if r < 0.75:
            return ".".join(str(self.rng.randint(1, 255)) for _ in range(3))
        return ".".join(str(self.rng.randint(1, 255)) for _ in range(5))

    # ---- SECRET ----------------------------------------------------------
    @staticmethod
    def b64url(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def jwt(self):
        header = {"alg": self.rng.choice(["HS256", "RS256"]), "typ": "JWT"}
        payload = {"sub": self.digits(10), "name": self.en.name(), "iat": self.rng.randint(1_600_000_000, 1_760_000_000)}
        if self.rng.random() < 0.5:
            payload["role"] = self.rng.choice(["admin", "user", "service"])
        sig = bytes(self.rng.getrandbits(8) for _ in range(32 if header["alg"] == "HS256" else 64))
        enc = lambda obj: self.b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
        return f"{enc(header)}.{enc(payload)}.{self.b64url(sig)}"

    def pem(self):
        label = self.rng.choice(["RSA PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
        raw = bytes(self.rng.getrandbits(8) for _ in range(48 * self.rng.randint(4, 9)))
        b64 = base64.b64encode(raw).decode()
        body = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----", "pem_" + label.split()[0].lower()

    def key(self, kind: str | None = None):
        """A provider-format API key; kind picks one, None picks at random."""
        kind = kind or self.rng.choice(["openai", "openai_proj", "anthropic", "aws", "github", "github_pat",
                                        "slack", "stripe", "google", "jwt"])
        r = self.rand
        if kind == "openai":
            v = "sk-" + r(ALNUM, 48)
        elif kind == "openai_proj":
            v = "sk-proj-" + r(URLSAFE, 74) + "T3BlbkFJ" + r(URLSAFE, 74)
        elif kind == "anthropic":
            v = "sk-ant-api03-" + r(URLSAFE, 93) + "AA"
        elif kind == "aws":
            v = "AKIA" + r(string.ascii_uppercase + "234567", 16)
        elif kind == "github":
            v = "ghp_" + r(ALNUM, 36)
        elif kind == "github_pat":
            v = "github_pat_" + r(ALNUM, 22) + "_" + r(ALNUM, 59)
        elif kind == "slack":
            v = f"xoxb-{self.digits(self.rng.randint(10, 13))}-{self.digits(self.rng.randint(10, 13))}-{r(ALNUM, 24)}"
        elif kind == "stripe":
            v = "sk_live_" + r(ALNUM, self.rng.choice([24, 99]))
        elif kind == "google":
            v = "AIza" + r(URLSAFE, 35)
        elif kind == "jwt":
            v = self.jwt()
        else:
            raise ValueError(kind)
        return v, kind

    def token(self, kind: str | None = None):
        """Generic high-entropy secret (appears only after a key name like api_key=)."""
        kind = kind or self.rng.choice(["base62", "base62", "hex", "base64"])
        if kind == "base62":
            return self.rand(ALNUM, self.rng.randint(32, 48)), "generic_base62"
        if kind == "hex":
            return self.rand(HEX, self.rng.choice([32, 64])), "generic_hex"
        # 40 chars of base64 alphabet, the shape of an AWS secret access key
        return self.rand(ALNUM + "+/", 40), "generic_base64"

    def placeholder(self):
        return self.rng.choice(["YOUR_API_KEY", "<your-api-key>", "sk-...", "xxxxxxxxxxxxxxxx", "${OPENAI_API_KEY}",
                                "********", "<redacted>", "REPLACE_ME", "sk-xxxx", "{{ secrets.API_TOKEN }}"])

    # ---- hard-negative look-alikes ----------------------------------------
    def order(self):
        c = self.rng.choice
        return c([f"ORD-{self.digits(8)}", f"#{self.digits(7)}", f"A-{self.rng.randint(2019, 2026)}-{self.digits(6)}",
                  f"PO-{self.digits(6)}", f"{self.digits(3)}-{self.digits(7)}-{self.digits(7)}"])

    def tracking(self):
        c = self.rng.choice
        return c(["1Z" + self.rand(UPPER_DIGITS, 6) + self.digits(10),
                  " ".join(self.digits(4) for _ in range(3)),
                  "9400 " + " ".join(self.digits(4) for _ in range(4)) + " " + self.digits(2),
                  "JD" + self.digits(18)])

    def ticket(self):
        return self.rng.choice([f"INC{self.digits(7)}", f"{self.rng.choice(['OPS', 'SUP', 'HR', 'PAY'])}-{self.rng.randint(100, 9999)}"])

    def date(self):
        d = self.moment().date()
        fmt = self.rng.choice(["%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y", "%d %b %Y"])
        return d.strftime(fmt)

    def time(self):
        h, m, s = self.rng.randint(0, 23), self.rng.randint(0, 59), self.rng.randint(0, 59)
        return self.rng.choice([f"{h:02d}:{m:02d}", f"{h:02d}:{m:02d}:{s:02d}", f"{(h % 12) or 12}:{m:02d} {'AM' if h < 12 else 'PM'}"])

    def timestamp(self):
        d = self.moment()
        return self.rng.choice([d.strftime("%Y-%m-%dT%H:%M:%SZ"), d.strftime("%Y-%m-%d %H:%M:%S,") + self.digits(3)])

    def version4(self):
        parts = ".".join(str(self.rng.randint(0, 30)) for _ in range(4))
        return self.rng.choice(["v" + parts, "v" + parts, "version " + parts])

    def isbn(self):
        if self.rng.random() < 0.7:
            body = "978" + self.digits(9)
            check = (10 - sum(int(ch) * (1 if i % 2 == 0 else 3) for i, ch in enumerate(body)) % 10) % 10
            full = body + str(check)
            return self.rng.choice([f"{full[:3]}-{full[3]}-{full[4:6]}-{full[6:12]}-{full[12]}", full])
        body = self.digits(9)
        check = sum((10 - i) * int(ch) for i, ch in enumerate(body)) % 11
        check = "X" if (11 - check) % 11 == 10 else str((11 - check) % 11)
        return f"{body[0]}-{body[1:4]}-{body[4:9]}-{check}"

    def uuid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sha(self):
        return self.rand(HEX, 40)

    def sha_short(self):
        for _ in range(20):  # an all-digit short SHA reads as a plain number; redraw
            v = self.rand(HEX, self.rng.randint(7, 10))
            if not v.isdigit():
                return v
        return "a" + v[1:]

    def shorthex(self):
        return self.rng.choice(["#" + self.rand(HEX, 6), "0x" + self.rand("0123456789ABCDEF", 4), "0x" + self.rand(HEX, 8)])

    def shortnum(self):
        return self.rng.choice([self.digits(4), self.digits(5), f"{self.digits(2)}-{self.digits(3)}", f"{self.digits(3)}-{self.digits(2)}"])

    def mention(self):
        c = self.rng.choice
        return c(["@" + self.en.user_name(), "@" + self.en.first_name().lower(), "@team-" + c(["infra", "billing", "sre", "ml"]),
                  "@types/node", "@app.route", "@" + c(["here", "channel", "oncall"])])

    def checksum(self):
        return self.rand(HEX, 64)

    def sepa_creditor(self):
        return f"{self.rng.choice(['DE', 'NL', 'FR'])}{self.digits(2)}ZZZ{self.digits(11)}"


# Slot name -> (generator method, label). Label "ENT:<TYPE>" is a gold span,
# "NEG" a recorded hard negative, None plain filler.
ENTITY_SLOTS = {
    "EMAIL": ("email", "EMAIL"), "PHONE": ("phone", "PHONE"), "CARD": ("card", "CREDIT_CARD"),
    "SSN": ("ssn", "US_SSN"), "IBAN": ("iban", "IBAN"), "IP": ("ip", "IP_ADDRESS"),
    "IPV4": ("ipv4", "IP_ADDRESS"), "IPV6": ("ipv6", "IP_ADDRESS"), "KEY": ("key", "SECRET"),
    "PEM": ("pem", "SECRET"), "TOKEN": ("token", "SECRET"),
}
NEG_SLOTS = {"luhn_fail": "bad_card", "order": "order", "tracking": "tracking", "ticket": "ticket", "date": "date",
             "time": "time", "timestamp": "timestamp", "version4": "version4", "isbn": "isbn", "uuid": "uuid",
             "sha": "sha", "sha_short": "sha_short", "shorthex": "shorthex", "shortnum": "shortnum",
             "bad_ssn": "bad_ssn", "bad_iban": "bad_iban", "mention": "mention", "bad_ip": "bad_ip",
             "placeholder": "placeholder", "checksum": "checksum", "sepa_creditor": "sepa_creditor"}
TOKEN_CONTEXTS = ["api_key=", "api_key: ", "token: ", "token=", "access_token=", "client_secret: ",
                  "SECRET_KEY=", "auth_token = ", "apiKey: ", "password: "]


def filler(g: Gen, name: str) -> str:
    """Plain unlabelled values: names, places, amounts, small numbers."""
    f, r = g.faker(), g.rng
    table = {
        "name": lambda: f.name(), "name2": lambda: f.name(), "first": lambda: f.first_name(),
        "company": lambda: g.en.company(), "city": lambda: g.fakers[r.choice(CITY_LOCALES)].city(), "street": lambda: g.en.street_address(),
        "job": lambda: g.en.job(), "amount": lambda: r.choice(["$", "EUR ", "£", "€"]) + f"{r.randint(5, 9999)}.{r.randint(0, 99):02d}",
        "num": lambda: str(r.randint(2, 400)), "port": lambda: str(r.choice([22, 80, 443, 3000, 5432, 6379, 8080, 8443, r.randint(1024, 65535)])),
        "pid": lambda: str(r.randint(1000, 99999)), "user": lambda: g.en.user_name(), "repo": lambda: r.choice(["api", "infra", "web", "gateway", "tools"]),
        "domain": lambda: g.en.domain_name(), "version": lambda: f"{r.randint(0, 4)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
        "exp": lambda: f"{r.randint(1, 12):02d}/{r.randint(26, 31)}", "cvv": lambda: g.digits(3), "bic": lambda: g.en.swift(),
        "bytes": lambda: str(r.randint(200, 99999)), "product": lambda: r.choice(["Pro plan", "Team plan", "the annual license", "API credits"]),
        "clf_date": lambda: g.moment().strftime("%d/%b/%Y:%H:%M:%S +0000"),
    }
    return table[name]()


def slot_pieces(g: Gen, slot: str):
    """Pieces (text, label) for one template slot; label None, ("ENT", type, sub) or ("NEG", kind)."""
    if slot in ENTITY_SLOTS:
        meth, typ = ENTITY_SLOTS[slot]
        value, sub = getattr(g, meth)()
        return [(value, ("ENT", typ, sub))]
    if slot.startswith("KEY_"):
        value, sub = g.key(slot[4:].lower())
        return [(value, ("ENT", "SECRET", sub))]
    if slot == "TOKEN_CTX":  # "api_key=" + token: only the token is the secret
        value, sub = g.token()
        return [(g.rng.choice(TOKEN_CONTEXTS), None), (value, ("ENT", "SECRET", sub))]
    if slot == "TOKEN_AWS_SECRET":
        value, sub = g.token("base64")
        return [(value, ("ENT", "SECRET", sub))]
    if slot.startswith("N:"):
        kind = slot[2:]
        return [(getattr(g, NEG_SLOTS[kind])(), ("NEG", kind))]
    return [(filler(g, slot), None)]


# ---- templates --------------------------------------------------------------
# {SLOT}: EMAIL PHONE CARD SSN IBAN IP IPV4 IPV6 KEY KEY_<kind> PEM TOKEN TOKEN_CTX
# TOKEN_AWS_SECRET are labelled; {N:kind} are hard negatives; lowercase are fillers.
POSITIVE_TEMPLATES = [
    # support tickets / chat
    "Hi, I can't log in to my account. My email is {EMAIL} and my phone is {PHONE}. Can you reset my password?",
    "Customer {name} called from {PHONE} about order {N:order}; please follow up at {EMAIL}.",
    "Ticket {N:ticket}: user reports the card {CARD} was charged twice on {N:date}.",
    "Please update the billing contact for {company} to {EMAIL}, cc {EMAIL}.",
    "Summarize this support thread: '{name} ({EMAIL}) says the refund to IBAN {IBAN} never arrived.'",
    "My SSN is {SSN}, why does the portal say it's invalid?",
    "Can you call me back at {PHONE}? Anytime after {N:time} works.",
    "Support chat transcript:\nAgent: Can I get the card number?\nCustomer: sure, it's {CARD}, exp {exp}.",
    "Lost my wallet. Please block card {CARD} and call me at {PHONE}.",
    "Hey, it's {first} again - still waiting on ticket {N:ticket}. Reach me on {PHONE} or {EMAIL}.",
    # HR
    "New hire paperwork for {name}: SSN {SSN}, start date {N:date}, personal email {EMAIL}.",
    "Payroll: please deposit {name}'s salary to {IBAN} starting next month.",
    "Employee record\nName: {name}\nSSN: {SSN}\nPhone: {PHONE}\nEmail: {EMAIL}",
    "Draft a polite reminder to {first} asking for the W-4; the SSN on file ({SSN}) looks mistyped.",
    "Emergency contact for {name} is {name2} at {PHONE}.",
    "Background check request: candidate {name}, SSN {SSN}, DOB {N:date}.",
    "Please correct my tax form, my social security number is {SSN} not the one printed.",
    # payments
    "Charge failed for card {CARD} exp {exp} cvv {cvv}. Retry?",
    "Refund {amount} to card number {CARD}.",
    "Wire transfer of {amount} to {company}, IBAN {IBAN}, BIC {bic}, reference {N:order}.",
    "SEPA mandate: debtor {name}, account {IBAN}, creditor ID {N:sepa_creditor}.",
    "I paid with {CARD} but the receipt shows {amount}.",
    "Please split the invoice: {amount} on {CARD} and the rest by bank transfer to {IBAN}.",
    "Classify this transaction: {N:date} {amount} card {CARD} merchant {company}.",
    "My IBAN is {IBAN} and the reference is {N:order}.",
    "Is {IBAN} a valid IBAN? My bank rejects it.",
    "Our supplier changed banks: old account {IBAN}, new account {IBAN}.",
    # logs
    "{N:timestamp} INFO auth: login succeeded for {EMAIL} from {IP}",
    "{N:timestamp} WARN ratelimit: client {IP} exceeded 100 req/min (request_id={N:uuid})",
    "[{N:timestamp}] sshd[{pid}]: Failed password for root from {IPV4} port {port} ssh2",
    "{IP} - - [{clf_date}] \"GET /api/v1/users HTTP/1.1\" 200 {bytes}",
    "nginx: upstream timed out while connecting to upstream, client: {IP}, server: api.{domain}, upstream: \"http://{IPV4}:{port}/\"",
    "{N:timestamp} ERROR payment-svc: declined card={CARD} user={EMAIL} build={N:sha_short}",
    "kernel: eth0: link up, inet6 {IPV6}/64 scope global",
    "{N:timestamp} DEBUG request headers: Authorization: Bearer {KEY_JWT}",
    "WARN secret scanner: leaked credential in commit {N:sha}: {KEY}",
    "audit: user {EMAIL} changed payout account to {IBAN} from {IP}",
    # code
    "Why does this fail?\n```python\nimport openai\nclient = openai.OpenAI(api_key=\"{KEY_OPENAI_PROJ}\")\n```",
    "```js\nconst stripe = require('stripe')('{KEY_STRIPE}');\n```\nI get 'invalid api key', what's wrong?",
    "Here's my boto3 setup:\n```python\nsession = boto3.Session(aws_access_key_id=\"{KEY_AWS}\", aws_secret_access_key=\"{TOKEN_AWS_SECRET}\")\n```",
    "curl https://api.anthropic.com/v1/messages -H \"x-api-key: {KEY_ANTHROPIC}\" -H \"content-type: application/json\"",
    "git clone https://{user}:{KEY_GITHUB}@github.com/{user}/{repo}.git fails with 403, why?",
    "Fix this test:\n```go\nconst testIP = \"{IP}\"\n```",
    "SQL: INSERT INTO users (email, phone, ssn) VALUES ('{EMAIL}', '{PHONE}', '{SSN}');",
    "const cfg = { slackToken: '{KEY_SLACK}', channel: '#ops' };",
    "requests.get(url, headers={\"Authorization\": \"Bearer {KEY}\"}) returns 401",
    "My key {KEY_GOOGLE} works in Postman but not in the Maps SDK, any idea?",
    "Can you explain what's inside this JWT? {KEY_JWT}",
    "Rotate this now, I pasted it in Slack by accident: {KEY}",
    "Review this snippet:\n```python\nheaders = {\"Authorization\": f\"token {KEY_GITHUB_PAT}\"}\nrequests.post(API, headers=headers)\n```",
    "client = Anthropic(api_key=\"{KEY_ANTHROPIC}\")  # TODO move to env",
    "ANTHROPIC_API_KEY={KEY_ANTHROPIC} OPENAI_API_KEY={KEY_OPENAI} python app.py",
    # config files
    ".env file:\nDATABASE_HOST={IPV4}\nOPENAI_API_KEY={KEY_OPENAI}\nADMIN_EMAIL={EMAIL}",
    "config.yaml:\n```yaml\nserver:\n  bind: {IP}\n  port: {port}\nauth:\n  {TOKEN_CTX}\n```",
    "~/.aws/credentials\n[default]\naws_access_key_id = {KEY_AWS}\naws_secret_access_key = {TOKEN_AWS_SECRET}",
    "Here is the deploy key, please add it to the server:\n{PEM}",
    "Why does ssh say 'invalid format' for this key?\n```\n{PEM}\n```",
    "Can you convert this to PKCS#8? {PEM}",
    "Found in the repo under deploy/id_rsa, is it safe to delete?\n\n{PEM}\n\nIt was committed by {name} on {N:date}.",
    "settings.py has SECRET_KEY = '{TOKEN}' and DEBUG = True, is that ok for prod?",
    "docker run -e GITHUB_TOKEN={KEY_GITHUB} -p {port}:{port} myimage:{version}",
    "terraform.tfvars:\nallowed_cidr = \"{IPV4}/32\"\nalert_email = \"{EMAIL}\"",
    "In /etc/hosts I have {IP} db.internal - why doesn't it resolve?",
    "kubectl create secret generic api --from-literal={TOKEN_CTX}",
    "ssh -i key.pem ubuntu@{IPV4} hangs after 'debug1: Connecting to {IPV4} port 22'",
    "ci.yml:\n  env:\n    DEPLOY_HOST: {IP}\n    {TOKEN_CTX}",
    "Our app reads the {TOKEN_CTX} line from config.ini but ignores the rest.",
    "Please check this settings dump: {TOKEN_CTX}, region=eu-west-1, retries={num}",
    "stripe listen --api-key {KEY_STRIPE} --forward-to localhost:{port}/webhook",
    # emails
    "Subject: Updated bank details\n\nHi {first},\nplease use our new account {IBAN} for all future invoices.\n\nBest,\n{name}\n{PHONE}",
    "From: {EMAIL}\nTo: {EMAIL}\nSubject: quick question\n\nCall me on {PHONE} when you get a chance.",
    "Forwarding a signature: {name} | {job} | {company} | m: {PHONE} | {EMAIL}",
    "Dear team, my new number is {PHONE}; the old one - {PHONE} - is disconnected.",
    # LLM prompts
    "Translate to German: 'Please send the invoice to {EMAIL} and call {PHONE} if anything is unclear.'",
    "Extract all contact info from this text and return JSON: {name}, {street}, {city}. Tel {PHONE}. Mail {EMAIL}.",
    "Write a regex that matches addresses like {IPV6} but not {N:version4}.",
    "Validate this SSN for me: {SSN}",
    "Our firewall blocks {IPV4} and {IPV6}; which rule is responsible?",
    "Generate a test fixture with name {name}, email {EMAIL}, ssn {SSN}, card {CARD}.",
    "The VPN gives me {IP} but the allowlist has {IP}.",
    "Please mask the PII in: '{name}, SSN {SSN}, lives at {street}, {city}.'",
    "Why is {IPV6} shown instead of my IPv4 {IPV4} on whatismyip?",
    "Check if this credit card number passes Luhn: {CARD}",
]

NEGATIVE_TEMPLATES = [
    "Order {N:order} shipped on {N:date}; tracking number {N:tracking}.",
    "We upgraded the agent to {N:version4} last night, no issues so far.",
    "The ISBN of the book is {N:isbn}, published {N:date}.",
    "Request {N:uuid} failed after {num} retries at {N:time}.",
    "Reverted commit {N:sha} (was {N:sha_short}) because it broke the build.",
    "Set the background to {N:shorthex} and the border to {N:shorthex}.",
    "Thanks {N:mention}, can you review PR #{num}? cc {N:mention}",
    "The card number {N:luhn_fail} was rejected as invalid by the checkout form.",
    "Form validation says SSN {N:bad_ssn} is not a valid number.",
    "Test fixture for the validator: IBAN {N:bad_iban} (bad checksum) should be rejected.",
    "Dial extension {N:shortnum} for the front desk, or use PIN {N:shortnum}.",
    "Build {N:version4} is rolling out to 10% of users on {N:date}.",
    "Checksum (sha256): {N:checksum}",
    "Set {N:placeholder} as api_key in your .env before running the example.",
    "Meeting moved to {N:date} at {N:time}, room {N:shortnum}.",
    "Invoice {N:order} for {amount} is due {N:date}.",
    "The address {N:bad_ip} is not a valid IPv4 address, right?",
    "Parser test cases: '{N:bad_ip}' and '{N:bad_ip}' must both be rejected.",
    "Python {version} vs {N:version4}: which one should I pin?",
    "Customer {name} from {city} asked about order {N:order}, delivery window {N:time}-{N:time}.",
    "Use the {N:mention} decorator and pin {N:mention} to {version}.",
    "Docker image digest sha256:{N:checksum} was pushed at {N:timestamp}.",
    "Ticket {N:ticket}: printer on floor {num} is jammed again.",
    "Write a SQL query that counts orders placed between {N:date} and {N:date}.",
    "Reference number {N:luhn_fail} does not match any payment.",
    "{N:timestamp} INFO deploy: rolled out {N:version4} (commit {N:sha_short}) to {num} pods",
    "The tracking ID {N:tracking} shows 'in transit' since {N:date}.",
    "Our SEPA creditor identifier is {N:sepa_creditor}; mandates reference it.",
    "Why does the old account number {N:bad_iban} fail validation?",
    "Ping {N:mention} about ticket {N:ticket} before {N:time}.",
    "Example .env:\nOPENAI_API_KEY={N:placeholder}\nLOG_LEVEL=debug",
    "Migration {N:uuid} applied in {num} ms at {N:timestamp}.",
    "The number {N:bad_ssn} in row {num} looks like an SSN but is not valid.",
    "Book {N:isbn} and order {N:order} arrived in the same box.",
    "I typed {N:luhn_fail} into the form by mistake, it is our customer number.",
]


def render(g: Gen, template: str):
    text, spans, negs = [], [], []
    pos = 0
    for part in re.split(r"(\{[A-Za-z0-9_:]+\})", template):
        if not part:
            continue
        pieces = slot_pieces(g, part[1:-1]) if re.fullmatch(r"\{[A-Za-z0-9_:]+\}", part) else [(part, None)]
        for value, label in pieces:
            end = pos + len(value)
            if label and label[0] == "ENT":
                spans.append({"start": pos, "end": end, "type": label[1], "subtype": label[2]})
            elif label and label[0] == "NEG":
                negs.append({"start": pos, "end": end, "kind": label[1]})
            text.append(value)
            pos = end
    return "".join(text), spans, negs


def luhn_ok(digits: str) -> bool:
    return Gen.luhn_digit(digits[:-1]) == digits[-1]


def iban_ok(v: str) -> bool:
    v = v.replace(" ", "")
    return int("".join(str(int(ch, 36)) for ch in v[4:] + v[:4])) % 97 == 1


def ip_ok(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


def ssn_ok(v: str) -> bool:
    a, g, s = re.split(r"[- ]", v)
    return a not in ("000", "666") and a[0] != "9" and g != "00" and s != "0000"


def check_row(row: dict) -> None:
    """Re-validate every label independently of how it was generated."""
    text = row["text"]
    spans = sorted(row["spans"], key=lambda s: s["start"])
    for a, b in zip(spans, spans[1:]):
        assert a["end"] <= b["start"], f"overlapping gold spans in {row['id']}"
    for sp in spans:
        v = text[sp["start"]:sp["end"]]
        assert v and v == v.strip(), (row["id"], v)
        t = sp["type"]
        ok = {"EMAIL": lambda: re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", v),
              "PHONE": lambda: phonenumbers.is_valid_number(phonenumbers.parse(v, sp["subtype"][-2:])),
              "CREDIT_CARD": lambda: luhn_ok(re.sub(r"[ -]", "", v)),
              "US_SSN": lambda: ssn_ok(v), "IBAN": lambda: iban_ok(v), "IP_ADDRESS": lambda: ip_ok(v),
              "SECRET": lambda: len(v) >= 20}[t]()
        assert ok, (row["id"], t, v)
    invalid = {"luhn_fail": lambda v: not luhn_ok(re.sub(r"[ -]", "", v)), "bad_iban": lambda v: not iban_ok(v),
               "bad_ip": lambda v: not ip_ok(v), "bad_ssn": lambda v: not ssn_ok(v)}
    for n in row["negatives"]:
        v = text[n["start"]:n["end"]]
        assert invalid.get(n["kind"], lambda _: True)(v), (row["id"], n["kind"], v)


def template_types(template: str) -> set[str]:
    out = set()
    for slot in re.findall(r"\{([A-Za-z0-9_:]+)\}", template):
        if slot in ENTITY_SLOTS:
            out.add(ENTITY_SLOTS[slot][1])
        elif slot.startswith(("KEY_", "TOKEN")):
            out.add("SECRET")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--count", type=int, default=2400)
    ap.add_argument("--negative-share", type=float, default=0.25, help="share of sentences with no entity")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    g = Gen(args.seed)
    by_type = {t: [tpl for tpl in POSITIVE_TEMPLATES if t in template_types(tpl)] for t in TYPES}
    for t, tpls in by_type.items():
        assert tpls, f"no template for {t}"
    assert all(template_types(t) for t in POSITIVE_TEMPLATES)
    assert not any(template_types(t) for t in NEGATIVE_TEMPLATES)

    negative_ids = set(g.rng.sample(range(args.count), round(args.count * args.negative_share)))
    counts = collections.Counter()
    subtypes = collections.Counter()
    neg_kinds = collections.Counter()
    nbytes = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for i in range(args.count):
            if i in negative_ids:
                tpl = g.rng.choice(NEGATIVE_TEMPLATES)
            else:
                # Balance types: draw a template that has the rarest type so far.
                low = min(counts[t] for t in TYPES)
                rare = g.rng.choice([t for t in TYPES if counts[t] == low])
                tpl = g.rng.choice(by_type[rare])
            text, spans, negs = render(g, tpl)
            check_row({"id": i, "text": text, "spans": spans, "negatives": negs})
            for s in spans:
                counts[s["type"]] += 1
                subtypes[(s["type"], s["subtype"])] += 1
            for n in negs:
                neg_kinds[n["kind"]] += 1
            nbytes += len(text.encode("utf-8"))
            out.write(json.dumps({"id": i, "text": text, "spans": spans, "negatives": negs}, ensure_ascii=False) + "\n")

    print(f"wrote {args.count} sentences ({len(negative_ids)} without entities), {nbytes} UTF-8 bytes of text, to {args.out}", file=sys.stderr)
    print("positives per type: " + ", ".join(f"{t}={counts[t]}" for t in TYPES), file=sys.stderr)
    print("subtypes: " + ", ".join(f"{t}/{s}={n}" for (t, s), n in sorted(subtypes.items())), file=sys.stderr)
    print(f"hard negatives ({sum(neg_kinds.values())}): " + ", ".join(f"{k}={n}" for k, n in sorted(neg_kinds.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
