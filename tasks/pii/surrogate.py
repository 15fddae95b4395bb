"""The ``surrogate`` operator: a realistic fake of the same type instead of a placeholder.

Deterministic: every fake is drawn from a generator seeded by (record id, entity type, value),
so the same value gets the same fake everywhere in a record and on every run (artifacts are
reproducible); a name's words are faked one by one, so "Amara Okafor" and a later "Amara" in the
same record stay the same person. Fakes use reserved ranges where there are some (example.com,
192.0.2.0/24, 2001:db8::/32) and small name lists from several cultures (no dependency).
"""

from __future__ import annotations

import hashlib
import random
import re

FIRST = [
    "James", "Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas", "Mia", "Mateo", "Sofia", "Hugo",
    "Chloe", "Felix", "Hannah", "Jonas", "Lea", "Wei", "Mei", "Hiroshi", "Yuki", "Min-jun",
    "Ji-woo", "Arjun", "Priya", "Rahul", "Ananya", "Omar", "Layla", "Yusuf", "Amina", "Kwame",
    "Ama", "Chidi", "Ngozi", "Diego", "Valentina", "Joao", "Beatriz", "Ivan", "Olga", "Mehmet",
    "Elif", "Tomas", "Ingrid", "Nils", "Aino", "Santiago", "Lucia", "Tariq", "Fatima",
]  # fmt: skip
LAST = [
    "Carter", "Bennett", "Hughes", "Fischer", "Weber", "Moreau", "Laurent", "Rossi", "Bianchi",
    "Garcia", "Lopez", "Silva", "Santos", "Chen", "Wang", "Tanaka", "Sato", "Kim", "Park",
    "Sharma", "Iyer", "Patel", "Haddad", "Rahman", "Mensah", "Okonkwo", "Adeyemi", "Novak",
    "Ivanova", "Yilmaz", "Kaya", "Lindqvist", "Virtanen", "Jansen", "de Vries", "Nguyen",
    "Tran", "Kowalski", "Horvat", "Costa", "Murphy", "Walsh", "Dubois", "Schneider", "Ortiz",
]  # fmt: skip
STREETS = [
    "Maple",
    "Oak",
    "Cedar",
    "Willow",
    "Harbor",
    "Lakeview",
    "Hillcrest",
    "Orchard",
    "Mill",
    "Station",
]
SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Drive", "Court"]
CITIES = ["Riverton", "Fairview", "Lakewood", "Brookfield", "Ashford", "Milltown"]


def _rng(key: str, entity: str, value: str) -> random.Random:
    digest = hashlib.sha256(f"{key}\x00{entity}\x00{value}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _shape(value: str, rng: random.Random) -> str:
    """Same shape: each digit -> a digit, each letter -> a letter of the same case."""
    out = []
    for i, c in enumerate(value):
        if c.isdigit():
            out.append(str(rng.randint(1 if i == 0 else 0, 9)))
        elif c.isalpha() and c.isascii():
            a = rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
            out.append(a if c.isupper() else a.lower())
        else:
            out.append(c)
    return "".join(out)


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            n -= 9 if n > 9 else 0
        total += n
    return str((10 - total % 10) % 10)


def fake_name(key: str, value: str) -> str:
    words = value.split()
    out = []
    for i, w in enumerate(words):
        if w.rstrip(".") in {"Mr", "Mrs", "Ms", "Dr", "Prof", "Miss"}:
            out.append(w)
            continue
        pool = FIRST if i == 0 and len(words) > 1 else LAST if len(words) > 1 else FIRST
        fake = _rng(key, "PERSON-word", w.strip(".,'’").lower()).choice(pool)
        if w.isupper() and len(w) > 1:
            fake = fake.upper()
        out.append(fake)
    return " ".join(out)


def fake(entity: str, value: str, key: str) -> str:
    """A fake of ``entity`` for ``value`` in the record ``key`` (deterministic)."""
    rng = _rng(key, entity, value)
    if entity == "PERSON":
        return fake_name(key, value)
    if entity == "EMAIL_ADDRESS":
        return f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower().replace(' ', '')}@example.{rng.choice(['com', 'org', 'net'])}"
    if entity == "USER_HANDLE":
        return f"@{rng.choice(FIRST).lower()}_{rng.randint(10, 999)}"
    if entity == "IP_ADDRESS":
        if ":" in value:
            return f"2001:db8::{rng.randint(1, 0xFFFF):x}"
        return f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randint(1, 254)}"
    if entity == "URL":
        return f"https://example.com/users/{rng.choice(FIRST).lower()}{rng.randint(1, 99)}"
    if entity == "STREET_ADDRESS":
        return f"{rng.randint(1, 999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}, {rng.choice(CITIES)}"
    if entity == "CREDIT_CARD":
        body = _shape(value, rng)
        digits = re.sub(r"\D", "", body)
        if len(digits) >= 12:  # keep it card-shaped and Luhn-valid, as a real one would be
            fixed = digits[:-1] + _luhn_digit(digits[:-1])
            it = iter(fixed)
            body = "".join(next(it) if c.isdigit() else c for c in body)
        return body
    if entity == "IBAN_CODE":
        return value[:2] + _shape(value[2:], rng)
    return _shape(value, rng)  # phones, SSNs, licence/passport numbers, dates: same format
