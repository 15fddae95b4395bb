"""The ``surrogate`` operator: a realistic fake of the same type instead of a placeholder.

One fake per value across the corpus: a fake is drawn from a generator seeded by an HMAC of
(entity type, normalised value) under ``$TUNELINE_PII_SALT``, not by the record, so the same
person is the same fake person in every record and on every run, and two records that were
near-duplicates before scrubbing stay near-duplicates after it (dedup runs after pii). What
that trades: the mapping is consistent, so a fake links the records that held one value; without
the salt nobody can recompute it, so set a secret salt in production (the built-in one is
public). A name's words are faked one by one, so "Amara Okafor" and a later "Amara" stay the
same person. Fakes use reserved ranges where there are some (example.com, 192.0.2.0/24,
2001:db8::/32) and small name lists from several cultures (no dependency).
"""

from __future__ import annotations

import hashlib
import hmac
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


TITLES = {"mr", "mrs", "ms", "mx", "dr", "prof", "miss", "sir", "dame"}


def normalised(value: str) -> str:
    """The form that decides a fake: case, surrounding blanks and runs of blanks do not."""
    return " ".join(value.split()).casefold()


def _rng(salt: str, entity: str, value: str) -> random.Random:
    msg = f"{entity}\x00{normalised(value)}".encode()
    digest = hmac.new(salt.encode(), msg, hashlib.sha256).digest()
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


def fake_name(salt: str, value: str) -> str:
    """A fake name of as many words; titles stay, each word is faked on its own."""
    words = value.split()
    titled = [w.rstrip(".").lower() in TITLES for w in words]
    names = sum(1 for t in titled if not t)
    out = []
    k = 0
    for w, title in zip(words, titled, strict=True):
        if title:
            out.append(w)
            continue
        pool = FIRST if k == 0 and names > 1 else LAST if names > 1 else FIRST
        k += 1
        fake = _rng(salt, "PERSON-word", w.strip(".,'’")).choice(pool)
        if w.isupper() and len(w) > 1:
            fake = fake.upper()
        elif w.islower():
            fake = fake.lower()
        out.append(fake)
    return " ".join(out)


def fake(entity: str, value: str, salt: str) -> str:
    """A fake of ``entity`` for ``value``, the same wherever the value occurs (for one salt)."""
    rng = _rng(salt, entity, value)
    if entity == "PERSON":
        return fake_name(salt, value)
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
