"""pii_bench.py — recall, precision, residual and damage of the pii stage, next to plain Presidio.

First the labelled sets written by others (../shared/data/pii; bench/pii_labelled.py says
how they are read, mapped and scored): per type, tuneline's recall, verbatim residual and
precision beside plain Presidio's (AnalyzerEngine defaults, score threshold 0.35, one text at a
time, same spaCy model). The defaults are chosen on these. Then two sets this project builds
from public text in ../shared/data (never the project's data/sample/):

* planted: alpaca_en_demo.json answers with realistic PII planted at known spans (several
  templates and formats per type, names from several cultures, some in chat turns and some in
  HTML snippets); every planted value is known with its type.
* clean: alpaca_en_demo.json records with no '@', URL or long digit run (no real PII; book
  authors, characters and imperative verbs stay in), plus arithmetic / word-problem text.

Prints per type: recall (planted value >= 90% covered by a detection), verbatim residual
(planted value still in the output as-is), precision (detections of that type that overlap a
planted value), then the share of non-PII characters changed on both sets and records/s, for
tuneline's scrubber (workers 1 and ``--workers``) and plain Presidio (AnalyzerEngine defaults
+ AnonymizerEngine, one document at a time, same spaCy model, the offline email recognizer).

    .venv/bin/python bench/pii_bench.py --n 300        # ~5-7 min on 2 cores
    .venv/bin/python bench/pii_bench.py --labelled-only  # ~2 min
"""

from __future__ import annotations

import argparse
import gzip  # noqa: F401
import json
import logging
import random
import string
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks.pii.recognizers import merge_spans as merge  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

NAMES = [
    "Amara Okafor", "Nguyen Thi Lan", "Siddharth Venkataraman", "Zhang Wei", "Sakura Yamamoto",
    "Oluwaseun Adebayo", "María José Fernández", "Björn Andersson", "Aleksandra Nowak",
    "Mohammed Al-Farsi", "Fatoumata Diallo", "Hyun-woo Cho", "Giulia Romano", "Connor O'Brien",
    "Anneke van der Berg", "Rashid Khan", "Emily Johnson", "Michael Thompson", "Camille Lefèvre",
    "Dmitri Sokolov", "Aroha Ngata", "Kofi Boateng", "Leilani Kealoha", "Javier Morales",
    "Ayşe Demir", "Tomasz Wiśniewski", "Ingrid Halvorsen", "Rohan Mehta", "Chen Jing", "Laura Schmidt",
]  # fmt: skip
PERSON_T = [
    "Please forward this to {v}.", "My name is {v} and I need help with my order.", "Dear {v},",
    "Thanks,\n{v}", "Best regards,\n{v}", "{v} called yesterday about the refund.",
    "I spoke with {v} from accounting this morning.", "Hi {v}, thanks for getting back to me.",
    "Ask {v} at the front desk.", "The report was reviewed by our colleague {v} last week.",
]  # fmt: skip
EMAIL_T = [
    "You can reach me at {v}.",
    "Send the file to {v} before Friday.",
    "Contact: {v}",
    "My email is {v}",
]
PHONE_T = [
    "Call me at {v}.", "My phone number is {v}.", "I'm available at {v} after 5pm.",
    "Reach the office on {v} or drop by.", "Mobile: {v}", "Text {v} when you arrive.",
]  # fmt: skip
CARD_T = ["My card number is {v}.", "Charge it to {v} please.", "Card: {v}, exp 04/27"]
IBAN_T = ["Please transfer the deposit to {v}.", "IBAN: {v}", "My account is {v}, thanks."]
SSN_T = ["SSN: {v}", "My social security number is {v}.", "Employee {v} has been enrolled."]
IP_T = ["The server at {v} refused the connection.", "Logins came from {v} last night.", "ip={v}"]
ADDR_T = ["Ship it to {v}.", "I live at {v}.", "Address: {v}", "We moved to {v} in March."]
URL_T = ["My profile: {v}", "See my work at {v}", "Find me on {v} anytime."]
DOB_T = ["I was born on {v}.", "DOB: {v}", "Date of birth: {v}", "My birthday is {v}."]
DL_T = ["My driver's license number is {v}.", "Driver's licence: {v}", "DL # {v}"]
PP_T = ["My passport number is {v}.", "Passport No. {v}", "passport: {v}"]
# Held out: names with none of the cue words tuneline's name patterns look for (NER only).
PERSON_NOCUE_T = [
    "Yesterday {v} and I went to the bank together.",
    "The meeting ran late because {v} had more questions.",
    "We should invite {v} to the launch next month.",
    "According to {v}, the shipment is delayed again.",
]
HANDLE_T = ["Ping me @{v} on there.", "thanks @{v}!", "Follow @{v} for updates."]


def luhn(prefix: str, length: int, rng) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            n -= 9 if n > 9 else 0
        total += n
    return body + str((10 - total % 10) % 10)


def iban(rng) -> str:
    country, bban = rng.choice(
        [
            ("DE", "".join(rng.choice(string.digits) for _ in range(18))),
            ("GB", "NWBK" + "".join(rng.choice(string.digits) for _ in range(14))),
            ("NL", "ABNA" + "".join(rng.choice(string.digits) for _ in range(10))),
            ("ES", "".join(rng.choice(string.digits) for _ in range(20))),
        ]
    )
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    raw = f"{country}{98 - num % 97:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.6 else raw


def phone(rng) -> str:
    d = lambda k: "".join(rng.choice(string.digits) for _ in range(k))  # noqa: E731
    area = rng.choice(["212", "415", "646", "312", "617", "303", "206", "512"])
    ex = str(rng.randint(201, 989))
    return rng.choice(
        [
            f"{area}-{ex}-{d(4)}", f"({area}) {ex}-{d(4)}", f"+1 {area} {ex} {d(4)}",
            f"{area}.{ex}.{d(4)}", f"+44 20 79{d(2)} {d(4)}", f"020 79{d(2)} {d(4)}",
            f"+49 30 {rng.randint(2, 9)}{d(7)}", f"+33 1 4{d(1)} {d(2)} {d(2)} {d(2)}",
            f"+91 98{d(3)} {d(5)}", f"+61 2 9{d(3)} {d(4)}",
        ]
    )  # fmt: skip


def card(rng) -> str:
    kind = rng.choice(["visa", "mc", "amex"])
    num = (
        luhn("4", 16, rng)
        if kind == "visa"
        else luhn(rng.choice(["51", "53", "55"]), 16, rng)
        if kind == "mc"
        else luhn(rng.choice(["34", "37"]), 15, rng)
    )
    sep = rng.choice([" ", "-", ""])
    if kind == "amex":
        return sep.join([num[:4], num[4:10], num[10:]])
    return sep.join(num[i : i + 4] for i in range(0, 16, 4))


def ssn(rng) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    sep = "-" if rng.random() < 0.8 else " "
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def ip(rng) -> str:
    if rng.random() < 0.7:
        return f"{rng.choice([23, 45, 81, 93, 104, 151, 185, 212])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    return ":".join(groups) if rng.random() < 0.5 else f"2a02:{groups[1]}:{groups[2]}::{groups[3]}"


STREETS = [
    "Maple",
    "Elm",
    "Pine",
    "Birch",
    "Chestnut",
    "Sunset",
    "Highland",
    "Riverside",
    "Park",
    "Washington",
]
SUFF = [
    "Street",
    "St.",
    "Avenue",
    "Ave",
    "Road",
    "Rd",
    "Boulevard",
    "Lane",
    "Drive",
    "Court",
    "Way",
    "Place",
]
CITIES = [
    ("Springfield", "IL"),
    ("Portland", "OR"),
    ("Austin", "TX"),
    ("Denver", "CO"),
    ("Columbus", "OH"),
]


def address(rng) -> str:
    n = rng.randint(1, 9999)
    kind = rng.random()
    if kind < 0.6:
        city, st = rng.choice(CITIES)
        unit = rng.choice(
            ["", f", Apt {rng.randint(1, 40)}{rng.choice('AB')}", f" Suite {rng.randint(100, 900)}"]
        )
        tail = rng.choice(["", f", {city}, {st} {rng.randint(10000, 99999)}", f", {city}"])
        return f"{n} {rng.choice(STREETS)} {rng.choice(SUFF)}{unit}{tail}"
    if kind < 0.75:
        return f"{rng.randint(1, 300)}{rng.choice(['', 'B'])} {rng.choice(['Baker', 'Kings', 'Church', 'Station'])} {rng.choice(['Street', 'Road', 'Lane'])}, London NW1 {rng.randint(1, 9)}XE"
    if kind < 0.9:
        return f"{rng.choice(['Linden', 'Haupt', 'Schiller', 'Goethe'])}straße {rng.randint(1, 120)}, {rng.randint(10000, 99999)} Berlin"
    return f"{rng.randint(1, 90)} rue {rng.choice(['des Lilas', 'de la Paix', 'Victor Hugo'])}, {rng.randint(10000, 99999)} Lyon"


def handle(rng) -> str:
    first = rng.choice(NAMES).split()[0].lower()
    first = "".join(c for c in first if c.isascii() and c.isalnum())
    return f"{first}{rng.choice(['_', '.', ''])}{rng.choice(['dev', 'x', str(rng.randint(1, 99)), 'writes'])}"


def url(rng) -> str:
    h = handle(rng).replace(".", "")
    slug = rng.choice(NAMES).lower().replace(" ", "-").encode("ascii", "ignore").decode()
    return rng.choice(
        [f"https://www.linkedin.com/in/{slug}-{rng.randint(10, 999)}", f"https://github.com/{h}", f"https://www.cs.example.edu/~{h}/",
         f"https://twitter.com/{h}", f"https://www.facebook.com/{slug}", f"https://medium.com/@{h}", f"https://forum.example.org/users/{h}"]
    )  # fmt: skip


def dob(rng) -> str:
    y, m, d = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
    months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    return rng.choice(
        [
            f"{m:02d}/{d:02d}/{y}",
            f"{y}-{m:02d}-{d:02d}",
            f"{months[m - 1]} {d}, {y}",
            f"{d} {months[m - 1]} {y}",
            f"{d:02d}.{m:02d}.{y}",
        ]
    )


def dl(rng) -> str:
    d = lambda k: "".join(rng.choice(string.digits) for _ in range(k))  # noqa: E731
    return rng.choice(
        [
            f"{rng.choice(string.ascii_uppercase)}{d(7)}",
            f"{rng.choice(string.ascii_uppercase)}{d(3)}-{d(4)}-{d(4)}",
            f"{d(9)}",
            f"{rng.choice(string.ascii_uppercase)}{d(12)}",
        ]
    )


def passport(rng) -> str:
    d = lambda k: "".join(rng.choice(string.digits) for _ in range(k))  # noqa: E731
    return rng.choice(
        [d(9), f"{rng.choice(string.ascii_uppercase)}{d(8)}", f"{rng.choice('CXP')}{d(7)}"]
    )


GENERATORS = {
    "PERSON": (lambda rng: rng.choice(NAMES), PERSON_T),
    "EMAIL_ADDRESS": (lambda rng: f"{handle(rng).replace('_', '.')}@{rng.choice(['gmail.com', 'outlook.com', 'acme-corp.de', 'uni-hamburg.de', 'yahoo.co.uk'])}", EMAIL_T),
    "PHONE_NUMBER": (phone, PHONE_T),
    "CREDIT_CARD": (card, CARD_T),
    "IBAN_CODE": (iban, IBAN_T),
    "US_SSN": (ssn, SSN_T),
    "IP_ADDRESS": (ip, IP_T),
    "STREET_ADDRESS": (address, ADDR_T),
    "URL": (url, URL_T),
    "DATE_OF_BIRTH": (dob, DOB_T),
    "US_DRIVER_LICENSE": (dl, DL_T),
    "US_PASSPORT": (passport, PP_T),
    "USER_HANDLE": (handle, HANDLE_T),
    "PERSON (no cue word)": (lambda rng: rng.choice(NAMES), PERSON_NOCUE_T),
}  # fmt: skip


def alpaca() -> list[dict]:
    return json.loads((DATA / "instruction" / "alpaca_en_demo.json").read_text())


def planted_set(n: int, rng) -> tuple[list, list[list[tuple[str, str]]]]:
    """n records (list of strings each) and, per string, the planted (type, value) pairs."""
    from tuneline.records import Message, Record

    src = [r["output"] for r in alpaca() if 200 < len(r["output"]) < 1200]
    types = list(GENERATORS)
    records, truth = [], []
    for i in range(n):
        base = rng.choice(src)
        pii_sents, planted = [], []
        for k in range(3):
            t = types[(i * 3 + k) % len(types)]
            gen, templates = GENERATORS[t]
            v = gen(rng)
            pii_sents.append(rng.choice(templates).format(v=v))
            planted.append((t, v))
        form = i % 3
        if form == 0:  # plain text: PII sentences around the background
            text = f"{pii_sents[0]} {base}\n\n{pii_sents[1]} {pii_sents[2]}"
            records.append(Record(id=f"p{i}", kind="text", text=text))
            truth.append([planted])
        elif form == 1:  # chat turns
            user = f"{pii_sents[0]} {pii_sents[1]}"
            assistant = f"{base}\n\n{pii_sents[2]}"
            records.append(
                Record(
                    id=f"p{i}",
                    kind="chat",
                    messages=[
                        Message(role="user", content=user),
                        Message(role="assistant", content=assistant),
                    ],
                )
            )
            truth.append([planted[:2], planted[2:]])
        else:  # HTML snippet
            t0, v0 = planted[0]
            extra = (
                f'<a href="mailto:{v0}">{v0}</a>'
                if t0 == "EMAIL_ADDRESS"
                else f"<b>{pii_sents[0]}</b>"
            )
            text = f'<div class="post"><p>{base}</p>\n<p>{extra}</p><ul><li>{pii_sents[1]}</li><li>{pii_sents[2]}</li></ul></div>'
            records.append(Record(id=f"p{i}", kind="text", text=text))
            truth.append([planted])
    return records, truth


WORD_PROBLEMS = [
    "A warehouse had {a} boxes in May and {b} in June. How many more boxes were there in May? Compute {a}-{b}.",
    "The answer is {a} - {b} = {c}.",
    "A laptop has a 200 GB drive and 16 GB of RAM; the backup needs {a} MB.",
    "The population grew from {a} to {b} between 1990 and 2020, a change of {c} people.",
    "Solve for x: 3x + {b} = {a}.",
    "If a train leaves at 3:45 pm and travels {a} km at 80 km/h, when does it arrive?",
    "Order #{a}-{b} was shipped on 12/03/2021 and delivered on 15/03/2021.",
    "Version 2.4.1 fixed issue {a}; build {a}{b} passed all tests.",
    "Edit this sentence to make it clearer: The results was good.",
    "Rewrite the paragraph below. Make it shorter.",
]  # fmt: skip


def clean_set(n: int, rng) -> list:
    import re

    from tuneline.records import Record

    ok = [
        r
        for r in alpaca()
        if not re.search(r"@|https?://|www\.|\d{6,}", r["instruction"] + r["input"] + r["output"])
    ]
    rng.shuffle(ok)
    out = []
    for i in range(n):
        if i % 4 == 3:
            a, b = rng.randint(10000, 99999), rng.randint(1000, 9999)
            text = rng.choice(WORD_PROBLEMS).format(a=a, b=b, c=a - b)
        else:
            r = ok[i % len(ok)]
            text = "\n\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x)
        out.append(Record(id=f"c{i}", kind="text", text=text))
    return out


def covered(spans, s, e) -> int:
    return sum(max(0, min(e, b) - max(s, a)) for a, b in merge(spans))


def evaluate(name, detect, anonymize, planted, truth, clean):
    """detect(texts) -> per text a list of (type, start, end); anonymize(texts) -> texts."""
    found, total, verbatim = Counter(), Counter(), Counter()
    det, tp = Counter(), Counter()
    nonpii_chars = nonpii_changed = 0
    texts = [s for r in planted for s in r.strings()]
    t_truth = [pairs for tr in truth for pairs in tr]
    dets = detect(texts)
    outs = anonymize(texts)
    for text, pairs, d, out in zip(texts, t_truth, dets, outs, strict=True):
        pspans = []
        for t, v in pairs:
            start = 0
            occ = []
            while (j := text.find(v, start)) >= 0:
                occ.append((j, j + len(v)))
                start = j + 1
            pspans += occ
            total[t] += 1
            if occ and all(
                covered([(a, b) for _, a, b in d], s, e) >= 0.9 * (e - s) for s, e in occ
            ):
                found[t] += 1
            if v in out:
                verbatim[t] += 1
        for t, a, b in d:
            det[t] += 1
            tp[t] += covered(pspans, a, b) > 0
        mask = [False] * len(text)
        for a, b in pspans:
            mask[a:b] = [True] * (b - a)
        dspans = merge([(a, b) for _, a, b in d])
        nonpii_chars += mask.count(False)
        nonpii_changed += sum(1 for a, b in dspans for k in range(a, b) if not mask[k])
    ctexts = [s for r in clean for s in r.strings()]
    cd = detect(ctexts)
    cchars = sum(len(t) for t in ctexts)
    cchanged = sum(b - a for d in cd for a, b in merge([(a, b) for _, a, b in d]))
    crec = sum(1 for d in cd if d)
    cby = Counter(t for d in cd for t, _, _ in d)
    return dict(
        name=name, found=found, total=total, verbatim=verbatim, det=det, tp=tp,
        nonpii_changed=nonpii_changed / max(1, nonpii_chars), clean_changed=cchanged / max(1, cchars),
        clean_records_touched=crec / max(1, len(ctexts)), clean_by_type=cby,
    )  # fmt: skip


def labelled(scrubber, plain, anon, args) -> None:
    """The labelled sets (bench/pii_labelled.py): tuneline's stage defaults (operators set to
    replace, so spans can be scored) beside plain Presidio, per type, and records/s of each."""
    import pii_labelled as L
    from presidio_analyzer import RecognizerResult

    from tasks import pii
    from tasks.pii.config import PIIConfig
    from tasks.pii.corpus import NameIndex

    replace = pii.Scrubber(PIIConfig(operator="replace", operators={}))
    sets = [
        ("presidio_generated_large (all)", L.presidio_large("all")),
        ("presidio_generated_large (dev half: defaults chosen looking at it)", L.presidio_large("dev")),
        ("presidio_generated_large (held-out half: other templates)", L.presidio_large("held-out")),
        ("pii_syn_nano_en", L.nano()),
    ]  # fmt: skip
    for title, exs in sets:
        texts = [e.text for e in exs]
        keys = [str(i) for i in range(len(texts))]
        t0 = time.time()
        found = replace.detect_batch(texts, keys)
        outs = [replace.apply(t, r)[0] for t, r in zip(texts, found, strict=True)]
        t_secs = time.time() - t0
        # The stage's merge: names found in one text are scrubbed in every text (corpus.py)
        index = NameIndex(replace.travelling(texts, found))
        merged = [
            r + [RecognizerResult("PERSON", a, b, 1.0) for a, b in index.find(t)
                 if not any(x.start < b and a < x.end for x in r)]
            for t, r in zip(texts, found, strict=True)
        ]  # fmt: skip
        m_outs = [replace.apply(t, r)[0] for t, r in zip(texts, merged, strict=True)]
        t0 = time.time()
        presults = [plain.analyze(t, language="en") for t in texts]
        pouts = [anon.anonymize(text=t, analyzer_results=r).text for t, r in zip(texts, presults, strict=True)]
        p_secs = time.time() - t0
        tl = L.score("tuneline, per text", exs, [[(r.entity_type, r.start, r.end) for r in rs] for rs in found], outs)
        tm = L.score("tuneline, with the merge's names", exs, [[(r.entity_type, r.start, r.end) for r in rs] for rs in merged], m_outs)
        pl = L.score("plain", exs, [[(r.entity_type, r.start, r.end) for r in rs] for rs in presults], pouts)
        types = sorted({g.type for e in exs for g in e.gold}, key=lambda t: (t not in L.TARGETED, -tl.total[t]))

        def f(x):
            return "-" if x is None else f"{x:.2f}"

        print(f"\n### {title}: {len(exs)} texts, {sum(len(e.gold) for e in exs)} labelled spans\n")
        print("| type (ours) | spans | recall tuneline / Presidio | verbatim residual tuneline / Presidio | precision tuneline / Presidio | recall, residual with the merge's names |")
        print("|---|---:|---|---|---|---|")
        for t in types:
            mark = "" if t in L.TARGETED else " (not targeted)"
            print(f"| {t}{mark} | {tl.total[t]} | {f(tl.recall(t))} / {f(pl.recall(t))} | {f(tl.residual(t))} / {f(pl.residual(t))} | {f(tl.precision(t))} / {f(pl.precision(t))} | {f(tm.recall(t))}, {f(tm.residual(t))} |")
        tg = [t for t in types if t in L.TARGETED]
        for sc, secs in ((tl, t_secs), (tm, t_secs), (pl, p_secs)):
            r, left = sc.over(tg)
            print(f"\n{sc.name}: targeted types recall {r:.3f}, verbatim residual {left:.3f}, precision "
                  f"{f(sc.precision())} (all detections {sum(sc.detections.values())}), non-PII characters "
                  f"changed {sc.nonpii_changed / max(1, sc.nonpii_chars):.2%}, {len(texts) / secs:.1f} texts/s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=300, help="planted records and clean records (each)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--speed-reps",
        type=int,
        default=4,
        help="tuneline's speed runs scrub the records this many times (amortizes worker start-up)",
    )
    ap.add_argument(
        "--plain-n",
        type=int,
        default=None,
        help="records for plain Presidio's speed (default: all)",
    )
    ap.add_argument("--skip-labelled", action="store_true", help="planted and clean sets only")
    ap.add_argument("--labelled-only", action="store_true", help="the labelled sets only")
    args = ap.parse_args()
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    planted, truth = planted_set(args.n, rng)
    clean = clean_set(args.n, rng)
    chars = sum(len(r.joined_text()) for r in planted + clean) / len(planted + clean)
    print(
        f"sets: {len(planted)} planted records ({sum(len(p) for tr in truth for p in tr)} values), {len(clean)} clean; mean {chars:.0f} chars/record"
    )

    from tasks import pii
    from tasks.pii.config import PIIConfig

    pcfg = PIIConfig()
    scrubber = pii.Scrubber(pcfg)

    def t_detect(texts):
        arts = scrubber._artifacts(texts)
        return [
            [(r.entity_type, r.start, r.end) for r in scrubber._analyze(t, a)]
            if a is not None
            else []
            for t, a in zip(texts, arts, strict=True)
        ]

    def t_anon(texts):
        return [o[0] for o in scrubber.scrub_batch(texts, ["k"] * len(texts))]

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    conf = dict(NlpEngineProvider().nlp_configuration)
    conf["models"] = [{"lang_code": "en", "model_name": pcfg.spacy_model}]
    plain = AnalyzerEngine(
        nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine(),
        supported_languages=["en"],
        default_score_threshold=0.35,
    )
    plain.registry.remove_recognizer("EmailRecognizer")
    plain.registry.add_recognizer(pii._offline_email_recognizer())  # the stock one goes online
    anon = AnonymizerEngine()

    def p_detect(texts):
        return [
            [(r.entity_type, r.start, r.end) for r in plain.analyze(t, language="en")]
            for t in texts
        ]

    def p_anon(texts):
        return [
            anon.anonymize(text=t, analyzer_results=plain.analyze(t, language="en")).text
            for t in texts
        ]

    if not args.skip_labelled:
        labelled(scrubber, plain, anon, args)
    if args.labelled_only:
        return
    results = [
        evaluate("tuneline", t_detect, t_anon, planted, truth, clean),
        evaluate("plain Presidio", p_detect, p_anon, planted, truth, clean),
    ]

    # speed: whole records, as the stage sees them
    allrec = planted + clean
    speeds = {}
    reps = [
        r.model_copy(update={"id": f"{r.id}-{k}"}) for k in range(args.speed_reps) for r in allrec
    ]
    import tempfile

    from tuneline import executors
    from tuneline.records import dump_jsonl_gz
    from tuneline.sections import RunConfig

    pii.MIN_PARALLEL = 0  # measure the workers even on a set this small
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "00000.jsonl.gz"
        with open(shard, "wb") as fh:
            dump_jsonl_gz((r.model_dump(mode="json", exclude_none=True) for r in reps), fh)
        for w in (1, args.workers):
            t0 = time.time()
            # The stage's own path: run.workers ranks on DataTrove's local executor.
            with executors.using(RunConfig(workers=w)):
                n = sum(1 for _ in pii.scrub_shards(pcfg, [shard], len(reps), pii.Totals()))
            speeds[f"tuneline, workers={w} ({n} records, incl. worker start)"] = n / (time.time() - t0)
    sub = allrec[: args.plain_n] if args.plain_n else allrec
    t0 = time.time()
    for r in sub:
        for s in r.strings():
            res = plain.analyze(s, language="en")
            anon.anonymize(text=s, analyzer_results=res)
    speeds["plain Presidio (one doc at a time)"] = len(sub) / (time.time() - t0)

    tl, pl = results
    print(
        "\n| type | n | recall tuneline | recall Presidio | verbatim left tuneline | verbatim left Presidio | precision tuneline | precision Presidio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in GENERATORS:
        n = tl["total"][t]

        def prec(r, t=t):
            return f"{r['tp'][t] / r['det'][t]:.2f} ({r['det'][t]})" if r["det"][t] else "-"

        print(
            f"| {t} | {n} | {tl['found'][t] / n:.2f} | {pl['found'][t] / n:.2f} | {tl['verbatim'][t] / n:.2f} | {pl['verbatim'][t] / n:.2f} | {prec(tl)} | {prec(pl)} |"
        )
    for r in results:
        allv = sum(r["total"].values())
        other = {t: r["det"][t] for t in r["det"] if t not in GENERATORS}
        print(f"\n{r['name']}: recall {sum(r['found'].values()) / allv:.3f}, verbatim residual {sum(r['verbatim'].values()) / allv:.3f} overall; "
              f"non-PII chars changed: planted set {r['nonpii_changed']:.2%}, clean set {r['clean_changed']:.2%}; "
              f"clean strings touched {r['clean_records_touched']:.1%} {dict(r['clean_by_type'].most_common())}; other detections {other}")  # fmt: skip
    print()
    base = speeds["plain Presidio (one doc at a time)"]
    for k, v in speeds.items():
        print(f"{k}: {v:.1f} records/s ({v / base:.1f}x plain)")


if __name__ == "__main__":
    main()
