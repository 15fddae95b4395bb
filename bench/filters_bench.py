"""Ingest filters on real data: old defaults vs new, side by side.

    .venv/bin/python bench/filters_bench.py [--data ../shared/data]

Prints, for the filter chain before this change ("old": datatrove's Gopher rules and
LanguageFilter as they were wired, length in plain characters, no reply rules) and after it
("new": ``FilterChain.from_config`` with the current defaults):

- the kept share of trafilatura's evaluation pages (good articles, extracted with the stage's
  HTML path), by the quality rules and by the whole chain with ``languages: []``;
- the kept share of common_crawl_sample_697 (real web text, several languages) by the quality
  rules;
- the kept share of alpaca_en_demo.json (999 good English instruction rows) with
  ``languages: [en]``, and the reasons of what was dropped;
- per language of langid/sentences_12lang.tsv: the share labelled with the right language
  under ``languages: []``, and the share kept under ``languages: [en]``;
- how many planted bad records (built from alpaca rows: empty replies, repeated prompts, lorem
  ipsum, [insert ...], runaway repetition, broken code fences, truncated replies) are caught.

Takes about a minute on 2 CPU cores (most of it trafilatura).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.ingest.config import IngestConfig, SourceConfig  # noqa: E402
from tasks.ingest.filters import (  # noqa: E402
    BrokenUtf8Filter,
    EmptyFilter,
    FilterChain,
    RecordFilter,
    RefusalFilter,
    Rejection,
    TooLongFilter,
)
from tuneline.records import Record  # noqa: E402
from tuneline.shapes import parse_row  # noqa: E402

# ------------------------------------------------------------------ the old chain, as it was


class OldTooShort(RecordFilter):
    name = "too_short"

    def __init__(self, min_chars: int = 20):
        self.min_chars = min_chars

    def check(self, record: Record) -> Rejection | None:
        n = len(record.joined_text())
        return self.reject(chars=n) if n < self.min_chars else None


class OldLanguage(RecordFilter):
    """datatrove's LanguageFilter on the whole joined text, threshold 0.65, never 'unknown'."""

    name = "language"

    def __init__(self, languages: list[str], threshold: float = 0.65):
        from datatrove.pipeline.filters import LanguageFilter

        from tasks.ingest.filters.lid import LocalFT176LID

        self.dt = LanguageFilter(
            languages=languages or None, language_threshold=threshold, label_only=not languages
        )
        self.dt.model = LocalFT176LID(languages or None)

    def check(self, record: Record) -> Rejection | None:
        from datatrove.data import Document

        doc = Document(text=record.joined_text(), id=record.id)
        keep = self.dt.filter(doc)
        record.meta.update(lang=doc.metadata["language"], lang_score=doc.metadata["language_score"])
        return None if keep else self.reject(lang=doc.metadata["language"])


class OldGopher(RecordFilter):
    name = "quality"

    def __init__(self):
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

        self.rules = [GopherQualityFilter(), GopherRepetitionFilter()]

    def check(self, record: Record) -> Rejection | None:
        if record.kind != "text":
            return None
        from datatrove.data import Document

        doc = Document(text=record.joined_text(), id=record.id)
        for rule in self.rules:
            result = rule.filter(doc)
            if result is not True:
                return self.reject(rule=result[1] if isinstance(result, tuple) else rule.name)
        return None


def old_chain(languages: list[str], quality: bool = True) -> FilterChain:
    cfg = IngestConfig(sources=[SourceConfig(path="x")])
    filters = [
        BrokenUtf8Filter(),
        EmptyFilter(),
        OldTooShort(20),
        TooLongFilter(cfg.max_chars),
        RefusalFilter(cfg.refusal_phrases),
        OldLanguage(languages),
    ]
    return FilterChain(filters + ([OldGopher()] if quality else []))


def new_chain(languages: list[str], quality: bool = True, source_language=None) -> FilterChain:
    cfg = IngestConfig(
        sources=[SourceConfig(path="bench", language=source_language)],
        languages=languages,
        quality_filter=quality,
    )
    return FilterChain.from_config(cfg)


def only(chain: FilterChain, *names: str) -> FilterChain:
    return FilterChain([f for f in chain.filters if f.name in names])


# ----------------------------------------------------------------------------------- data


def pages(data: Path) -> list[Record]:
    from tasks.ingest.readers import extract_page

    out = []
    for i, f in enumerate(sorted((data / "web/trafilatura_eval_subset/html").glob("*.html"))):
        fields = extract_page(f.read_bytes())
        meta = {"source": "bench", "format": "html", "file": f.name, **fields.pop("meta", {})}
        out.append(Record(id=f"page{i}", meta=meta, **fields))
    return out


def crawl(data: Path) -> list[Record]:
    with gzip.open(data / "web/common_crawl_sample_697.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [
        Record(id=f"cc{i}", kind="text", text=r["text"], meta={"source": "bench", "format": "text"})
        for i, r in enumerate(rows)
    ]


def alpaca_rows(data: Path) -> list[dict]:
    return json.loads((data / "instruction/alpaca_en_demo.json").read_text())


def alpaca(rows: list[dict]) -> list[Record]:
    out = []
    for i, row in enumerate(rows):
        _, fields = parse_row(row, "alpaca", "text")
        meta = {"source": "bench", "format": "alpaca", **fields.pop("meta", {})}
        out.append(Record(id=f"a{i}", meta=meta, **fields))
    return out


def sentences(data: Path) -> list[tuple[str, Record]]:
    lines = (data / "langid/sentences_12lang.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [
        (lang, Record(id=f"s{i}", kind="text", text=t, meta={"source": "bench", "format": "text"}))
        for i, (lang, t) in enumerate(line.split("\t", 1) for line in lines)
    ]


def planted(rows: list[dict]) -> list[tuple[str, dict]]:
    """~60 bad rows made from good alpaca rows, labelled with the problem planted."""
    long_rows = [r for r in rows if len(r["output"].split()) >= 25 and "```" not in r["output"]]
    bad: list[tuple[str, dict]] = []
    for k, r in enumerate(long_rows[:9]):
        bad.append(("empty reply", {**r, "output": " " if k % 2 else ""}))
    for r in long_rows[10:19]:
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        bad.append(("repeated prompt", {**r, "output": prompt}))
    for k, r in enumerate(long_rows[20:29]):
        filler = (
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit."
            if k % 2
            else "[Insert a short answer about the topic here.]"
        )
        bad.append(("placeholder", {**r, "output": r["output"][:200] + " " + filler}))
    for k, r in enumerate(long_rows[30:39]):
        phrase = " ".join(r["output"].split()[: 6 + k % 3])
        bad.append(("runaway repetition", {**r, "output": r["output"] + (" " + phrase) * 15}))
    for r in long_rows[40:49]:
        bad.append(("broken fence", {**r, "output": r["output"] + "\n\n```python\nprint('hi')\n"}))
    for k, r in enumerate(long_rows[50:59]):
        ws = r["output"].split()
        cut = " ".join(ws[: len(ws) // 2])
        tail = [", and the", " of the", ", which"][k % 3]
        bad.append(("truncated reply", {**r, "output": cut.rstrip(".,;") + tail}))
    return bad


# ----------------------------------------------------------------------------------- runs


def kept(chain: FilterChain, records: list[Record]) -> tuple[int, Counter]:
    reasons: Counter = Counter()
    n = 0
    for r in records:
        v = chain.check(r.model_copy(deep=True))
        if v is None:
            n += 1
        else:
            reasons[
                f"{v.reason}:{v.detail.get('rule') or v.detail.get('lang') or ''}".rstrip(":")
            ] += 1
    return n, reasons


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.1f}%)" if d else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    data = ap.parse_args().data
    t0 = time.time()
    rows = []

    def row(what: str, old: str, new: str) -> None:
        rows.append((what, old, new))
        print(f"  {what:<58} {old:>22} {new:>22}", flush=True)

    print(f"  {'measure':<58} {'old defaults':>22} {'new defaults':>22}")

    web = [p for p in pages(data) if (p.text or "").strip()]
    o, orr = kept(only(old_chain([]), "quality"), web)
    n, nr = kept(only(new_chain([]), "language", "quality"), web)
    row(
        f"trafilatura eval pages kept by quality ({len(web)} extracted)",
        pct(o, len(web)),
        pct(n, len(web)),
    )
    lid = next(f for f in new_chain([]).filters if f.name == "language")
    en = [p for p in web if lid.identify(p.text or "")[0] == "en"]
    o, _ = kept(only(old_chain([]), "quality"), en)
    n, _ = kept(only(new_chain([]), "language", "quality"), en)
    row(f"  ... English pages only ({len(en)})", pct(o, len(en)), pct(n, len(en)))
    o2, _ = kept(old_chain([]), web)
    n2, _ = kept(new_chain([]), web)
    row("  ... by the whole chain, languages: []", pct(o2, len(web)), pct(n2, len(web)))

    cc = crawl(data)
    o, occ = kept(only(old_chain([]), "quality"), cc)
    n, ncc = kept(only(new_chain([]), "language", "quality"), cc)
    row(f"common_crawl_sample kept by quality ({len(cc)})", pct(o, len(cc)), pct(n, len(cc)))

    arows = alpaca_rows(data)
    al = alpaca(arows)
    o, oal = kept(old_chain(["en"]), al)
    n, nal = kept(new_chain(["en"]), al)
    row(f"alpaca_en_demo kept, languages: [en] ({len(al)})", pct(o, len(al)), pct(n, len(al)))
    n3, _ = kept(new_chain(["en"], source_language="en"), al)
    row("  ... new, with the source declared language: en", "-", pct(n3, len(al)))

    sents = sentences(data)
    langs = sorted({lang for lang, _ in sents}, key=lambda x: [lang for lang, _ in sents].index(x))
    oc, nc = old_chain([]), new_chain([])
    oe, ne = old_chain(["en"]), new_chain(["en"])
    for lang in langs:
        recs = [r for lg, r in sents if lg == lang]
        ol = nl = ok_o = ok_n = 0
        for r in recs:
            a, b = r.model_copy(deep=True), r.model_copy(deep=True)
            ok_o += oc.check(a) is None
            ok_n += nc.check(b) is None
            ol += a.meta.get("lang") == lang
            nl += b.meta.get("lang") == lang
        ke_o, _ = kept(oe, recs)
        ke_n, _ = kept(ne, recs)
        row(
            f"langid {lang}: kept+right label [] | kept [en]",
            f"{ok_o}:{ol} | {ke_o}",
            f"{ok_n}:{nl} | {ke_n}",
        )

    bad = planted(arows)
    bad_records = alpaca([r for _, r in bad])
    by_kind_o, by_kind_n = Counter(), Counter()
    oc, nc = old_chain(["en"]), new_chain(["en"])
    for (kind, _), rec in zip(bad, bad_records, strict=True):
        by_kind_o[kind] += oc.check(rec.model_copy(deep=True)) is not None
        by_kind_n[kind] += nc.check(rec.model_copy(deep=True)) is not None
    for kind in dict.fromkeys(k for k, _ in bad):
        total = sum(k == kind for k, _ in bad)
        row(f"planted {kind} caught", f"{by_kind_o[kind]}/{total}", f"{by_kind_n[kind]}/{total}")
    row(
        f"planted bad records caught (all {len(bad)})",
        pct(sum(by_kind_o.values()), len(bad)),
        pct(sum(by_kind_n.values()), len(bad)),
    )

    print("\nwhy dropped (old | new):")
    print("  trafilatura pages:", dict(orr.most_common()), "|", dict(nr.most_common()))
    print("  common crawl     :", dict(occ.most_common()), "|", dict(ncc.most_common()))
    print("  alpaca           :", dict(oal.most_common()), "|", dict(nal.most_common()))
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
