"""augment: synthetic chat data from a teacher LLM, with Distilabel.

A small curated set teaches a model its format but rarely covers every kind of request, so
this stage lets a stronger "teacher" model widen it. Every input record passes through
unchanged; with a teacher configured, up to ``augment.num_seeds`` chat records (the ones with the
smallest ids: a fixed sample that mixes sources) seed a Distilabel pipeline:

- ``mode=generate``: ``SelfInstruct`` asks the teacher for new user instructions in the spirit
  of each seed, and ``TextGeneration`` has it answer them: each usable pair becomes a new chat
  record with ``meta = {"source": "augment", "teacher", "seed_id", "mode"}``.
- ``mode=improve``: ``TextGeneration`` asks the teacher to rewrite the final assistant reply of
  each seed; the rewrite becomes a new record (``meta.improves`` = the original's id) next to
  the original.

The teacher is Distilabel's ``TransformersLLM`` (a local path or hub id; remote code never runs)
or ``OpenAILLM`` (any OpenAI-compatible endpoint). Teacher output that is missing
(``no_output``), ``empty``, ``too_short``, has ``no_letters``, is ``garbled`` (broken bytes,
control characters) or is a ``heading`` rather than an instruction is rejected as
``teacher_output_invalid`` with that ``problem`` and the seed it came from, so the report's
counts add up: ``candidates = generated + rejected``.

The API key is read at run time from the environment variable named by
``teacher.api_key_env`` (or a Prefect Secret block, ``teacher.api_key_secret``). It lives only
in memory: it is never written to the config, the report, the manifest or any artifact file,
and Distilabel's own cache (which holds its pipeline dump and logs) lives in a temporary
directory that is deleted after the run; our content-addressed store is the cache.

The package: ``config`` (the section), ``seeds`` (pass-through and seed choice),
``pipelines`` (the Distilabel pipelines), ``validate`` (judging teacher output),
``distilabel_compat`` (every workaround that reaches into Distilabel's internals); the teacher
client itself is shared, in ``tuneline.teacher``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tasks.augment.config import AugmentConfig, TeacherConfig
from tasks.augment.pipelines import ask_teacher
from tasks.augment.seeds import pass_through, pass_through_and_pick_seeds
from tasks.augment.validate import judge_generate, judge_improve
from tuneline import progress
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import RefusedSecret, TransientError, mentions_auth_failure
from tuneline.records import Record
from tuneline.stage import Stage
from tuneline.teacher import TeacherClient, check_key_is_set

__all__ = ["STAGE", "AugmentConfig", "TeacherConfig", "run", "summary"]


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Passes records through and, with a teacher, adds its generations.

    Args:
        inputs: the dedup artifact.
        cfg: ``cfg.augment`` decides teacher, mode and sizes.
        out: receives originals, new records, rejected teacher output and the report.
    """
    a = cfg.augment
    counts: Counter = Counter()
    if a.teacher is None:
        pass_through(inputs[0], out, counts)
        out.report.update(
            records_in=counts["records_in"],
            teacher=None,
            generated=0,
            note="no teacher configured: records passed through",
        )
        return

    t = a.teacher
    teacher = TeacherClient.connect(t, where="augment.teacher")  # a missing key: before any work
    teacher.check_access()  # a refused key fails here, once, not in every Distilabel batch
    seeds = pass_through_and_pick_seeds(inputs[0], out, a.num_seeds, counts)
    warnings: list[str] = []
    made: list[Record] = []
    problems: Counter = Counter()
    if seeds:
        progress.logger().info(
            "augment: %s with %s teacher %s on %d seeds", a.mode, t.kind, t.model, len(seeds)
        )
        rows, warnings = ask_teacher(seeds, a, teacher)
        if not _any_output(rows):
            # Nothing at all came back: the teacher is down or refuses us. Failing (and
            # retrying, unless it refused the key) beats caching an artifact that silently
            # lacks all its synthetic data.
            if any(mentions_auth_failure(w) for w in warnings):
                raise teacher.refused(RefusedSecret("HTTP 401/403 in Distilabel's warnings"))
            detail = "; ".join(_scrub(warnings, teacher)[:3]) or "no warnings were logged"
            raise TransientError(
                f"teacher {t.model} ({t.kind}, {teacher.info()['base_url'] or 'local'}) returned no output for "
                f"any of {len(seeds)} seeds; check that it is reachable and the key is valid. Distilabel said: {detail}"
            )
        judge = judge_generate if a.mode == "generate" else judge_improve
        made = judge(seeds, rows, a, out, t.model, problems)
        out.write_all(made)

    out.report.update(
        records_in=counts["records_in"],
        teacher=teacher.info(),
        mode=a.mode,
        seeds=len(seeds),
        seed_ids=[s.id for s in seeds],
        generated=len(made),
        candidates=len(made) + sum(problems.values()),
        invalid_by_problem=dict(sorted(problems.items())),
        teacher_warnings=_scrub(warnings, teacher)[:5],
        examples=[
            {"seed_id": r.meta["seed_id"], "messages": [m.model_dump() for m in r.messages]}
            for r in made[:3]
        ],
    )
    if not seeds:
        out.report["note"] = "no chat record ending on an assistant reply to seed the teacher"


def _any_output(rows: dict) -> bool:
    """Whether any teacher call in ``rows`` gave something back (even something unusable)."""
    outputs = [r.get("instructions") for r in rows.get("instructions", [])] + [
        r.get("generation") for r in rows["responses"]
    ]
    return any(o is not None for o in outputs)


def _scrub(messages: list[str], teacher: TeacherClient) -> list[str]:
    """Warnings safe to report: the key cut out, should any library have echoed it."""
    return [_short(teacher.redact(m), 300) for m in messages]


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def summary(report: dict[str, Any]) -> str:
    """What the teacher made, what was rejected and why, with a few examples."""
    t = report["teacher"]
    if t is None:
        return f"### augment\n\nNo teacher configured: {report['records_in']} records passed through unchanged.\n"
    problems = ", ".join(f"{k}: {v}" for k, v in report["invalid_by_problem"].items()) or "none"
    lines = [
        f"### augment: {report['mode']} with teacher `{t['model']}` ({t['kind']})",
        "",
        f"- records in: {report['records_in']} (all passed through)",
        f"- seeds: {report['seeds']}, candidates: {report['candidates']}, "
        f"generated: {report['generated']}, rejected: {report['candidates'] - report['generated']}",
        f"- rejected by problem: {problems}",
    ]
    examples = report.get("examples", [])
    if examples:
        lines += ["", "#### Examples", ""]
        for ex in examples:
            msgs = ex["messages"]
            user = next((m["content"] for m in reversed(msgs[:-1]) if m["role"] == "user"), "")
            lines.append(
                f"- seed `{ex['seed_id']}`: **{_short(user)}** → {_short(msgs[-1]['content'])}"
            )
    return "\n".join(lines) + "\n"


def preflight(cfg) -> None:
    """Before the first stage: the teacher's key variable is set (``MissingSecret``)."""
    if cfg.augment.teacher is not None:
        check_key_is_set(cfg.augment.teacher, "augment.teacher")


def highlights(report: dict[str, Any]) -> str:
    """The CLI's one line for augment: the note, if any."""
    return report.get("note", "")


STAGE = Stage(
    name="augment",
    version=1,
    config=AugmentConfig,
    run=run,
    summary=summary,
    inputs=("dedup",),
    highlights=highlights,
    preflight=preflight,
    description="Synthetic data from a teacher.",
)
