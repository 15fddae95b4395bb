"""The residual check: an independent second pass over scrubbed text, counting what is left.

It shares nothing with Presidio: plain regexes with the validators the formats define (Luhn,
issuer prefix and length for cards, ISO 13616 mod-97 for IBANs, the SSA's rules for SSNs, ``ipaddress`` for IPs, an email
regex with a dotted alphabetic TLD). Values the surrogate operator wrote are not counted, and
reserved example domains/addresses are ignored (they are what documentation uses).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,24}\b")
# A card number as cards print it: 13-19 digits in one run, 4-4-4-4(-3) groups or Amex's 4-6-5,
# one separator (blank, dash or dot: "4111.1111.1111.1111") throughout. Not inside a longer
# number, a DOI or an id ("10.1080/106293...").
CARD = re.compile(
    r"(?<![\d./:-])(?:\d{13,19}|\d{4}([ .-])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ .-])\d{6}\2\d{5})(?![\d/:-]|\.\d)"
)
# Issuer prefixes and lengths (ISO/IEC 7812 as the networks publish them): a Luhn-valid number
# outside these is an ISBN, a library bar code or a sum, not a card (1 in 10 numbers pass Luhn).
CARD_BRANDS: list[tuple[str, tuple[int, ...]]] = [
    (r"4", (13, 16, 19)),  # Visa
    (r"5[1-5]|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)", (16,)),  # Mastercard
    (r"3[47]", (15,)),  # American Express
    (r"6(?:011|5|4[4-9])", (16, 17, 18, 19)),  # Discover
    (r"35(?:2[89]|[3-8]\d)", (16, 17, 18, 19)),  # JCB
    (r"3(?:0[0-5]|[689])", (14, 15, 16, 17, 18, 19)),  # Diners Club
    (r"62", (16, 17, 18, 19)),  # UnionPay
]
_BRANDS = [(re.compile(p), n) for p, n in CARD_BRANDS]
MATH_NEAR = re.compile(
    r"[=+*×÷^]|\d\s*/\s*\d|\b(?:sum|result|solution|answer|calculat\w*|add|plus|minus|equals?|total|product)\b",
    re.I,
)
SENTENCE_BREAK = re.compile(r"[.!?](?=\s)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
SSN = re.compile(r"(?<![\d-])(\d{3})[- ](\d{2})[- ](\d{4})(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}(?::|[0-9A-Fa-f]{1,4})(?![\w:])|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:?){0,6}(?![\w:])"
)
RESERVED_EMAIL = re.compile(r"@(?:[\w-]+\.)*example\.(?:com|org|net)$", re.I)


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return total % 10 == 0


def card_ok(text: str, start: int, end: int) -> bool:
    """A card number: Luhn-valid, an issuer's prefix and length, and no arithmetic around it."""
    number = text[start:end]
    digits = "".join(c for c in number if c.isdigit())
    if not luhn_ok(digits):
        return False
    if not any(rx.match(digits) and len(digits) in lengths for rx, lengths in _BRANDS):
        return False
    # the 40 characters before, within the sentence (a URL or a date in the sentence before
    # is no arithmetic), and the 5 after
    before = text[max(0, start - 40) : start]
    breaks = list(SENTENCE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end() :]
    return not MATH_NEAR.search(before + " " + text[end : end + 5])


def iban_ok(value: str) -> bool:
    v = value.replace(" ", "")
    if not 15 <= len(v) <= 34:
        return False
    moved = v[4:] + v[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    a = int(area)
    return (
        a != 0
        and a != 666
        and a < 900
        and group != "00"
        and serial != "0000"
        and area + group + serial not in {"123456789", "078051120"}
    )


def ip_ok(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    # documentation ranges (what the surrogate writes), unspecified and loopback are not PII
    if ip.version == 4:
        doc = any(
            ip in ipaddress.ip_network(n)
            for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
        )
    else:
        doc = ip in ipaddress.ip_network("2001:db8::/32")
    return not (doc or ip.is_unspecified or ip.is_loopback)


def residual_spans(
    text: str, ignore: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, int, int]]:
    """(type, start, end) of each validated PII value in ``text``; values in ``ignore`` are
    skipped. Overlapping finds keep the first type (an email's digits are not a card)."""
    found: list[tuple[str, int, int]] = []

    def add(kind: str, m: re.Match) -> None:
        s, e = m.span()
        if not any(a < e and s < b for _, a, b in found):
            found.append((kind, s, e))

    for m in EMAIL.finditer(text):
        v = m.group()
        if v not in ignore and not RESERVED_EMAIL.search(v):
            add("EMAIL_ADDRESS", m)
    for m in CARD.finditer(text):
        if m.group() not in ignore and card_ok(text, m.start(), m.end()):
            add("CREDIT_CARD", m)
    for m in IBAN.finditer(text):
        if m.group() not in ignore and iban_ok(m.group()):
            add("IBAN_CODE", m)
    for m in SSN.finditer(text):
        if m.group() not in ignore and ssn_ok(*m.groups()):
            add("US_SSN", m)
    for rx in (IPV4, IPV6):
        for m in rx.finditer(text):
            if m.group() not in ignore and ip_ok(m.group()):
                add("IP_ADDRESS", m)
    return sorted(found, key=lambda f: f[1])


def residual(text: str, ignore: set[str] | frozenset[str] = frozenset()) -> Counter[str]:
    """Counts validated PII values left in ``text`` by type; values in ``ignore`` are skipped."""
    return Counter(kind for kind, _, _ in residual_spans(text, ignore))
