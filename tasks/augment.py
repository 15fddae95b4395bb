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
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, model_validator

from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import MissingSecret, TransientError
from tuneline.progress import track
from tuneline.records import Message, Record, record_id
from tuneline.sections import Section
from tuneline.stage import Stage

# ------------------------------------------------------------------------------- augment


class TeacherConfig(Section):
    kind: Literal["transformers", "openai"] = Field(
        description="transformers: a local model (path or hub id); openai: an OpenAI-compatible endpoint."
    )
    model: str = Field(description="Model path or hub id (transformers), or the served model name (openai).")
    base_url: str | None = Field(default=None, description="Endpoint URL, for kind=openai (e.g. http://127.0.0.1:8000/v1).")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description=(
            "Name of the environment variable holding the API key (never the key itself); "
            "null for a server without auth."
        ),
    )
    api_key_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the API key; used instead of api_key_env when set.",
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    max_new_tokens: int = Field(default=128, ge=1, description="Longest generation.")

    @model_validator(mode="after")
    def check_openai_has_url(self) -> TeacherConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("teacher.kind=openai needs teacher.base_url")
        return self


class AugmentConfig(Section):
    teacher: TeacherConfig | None = Field(
        default=None, description="The teacher LLM; empty passes records through unchanged."
    )
    mode: Literal["generate", "improve"] = Field(
        default="generate",
        description="generate: new instruction/response pairs from seed records; improve: rewrite responses.",
    )
    num_seeds: int = Field(default=8, ge=1, description="How many chat records seed the teacher.")
    batch_size: int = Field(default=4, ge=1, description="Generations per teacher call.")
    instructions_per_seed: int = Field(
        default=2, ge=1, description="New instructions asked of the teacher per seed, for mode=generate."
    )
    application_description: str = Field(
        default="AI assistant",
        description="What the tuned model is for; steers the instructions the teacher invents (mode=generate).",
    )
    min_chars: int = Field(
        default=10, ge=1, description="Teacher instructions and replies shorter than this are rejected."
    )



REASON = "teacher_output_invalid"
# Seeds are shown to the teacher whole up to this size: enough context for a good instruction,
# small enough for a small teacher's context window.
CONTEXT_CHARS = 2000
# What the teacher is given in memory for a local server without auth (never stored).
NO_AUTH_KEY = "EMPTY"

IMPROVE_TEMPLATE = """\
Rewrite the assistant's final reply in the conversation below so that it is more accurate, \
complete and helpful. Keep its language and intent. Answer with the rewritten reply only.

# Conversation
{{ conversation }}

# Reply to rewrite
{{ response }}
"""

log = logging.getLogger("tuneline.augment")


# ------------------------------------------------------------------------- checking output

# "1. ", "2) ", "- ", "* ", "• ": list markers teachers add although SelfInstruct asks them not to.
_LIST_MARKER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s+")


def output_problem(text: str | None, min_chars: int) -> str | None:
    """Why a piece of teacher output is unusable, or None when it is fine.

    Args:
        text: an instruction or reply from the teacher (None: the call gave nothing back).
        min_chars: shortest acceptable text, after stripping whitespace.
    """
    if text is None:
        return "no_output"
    text = text.strip()
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if not any(c.isalpha() for c in text):
        return "no_letters"
    if "\ufffd" in text or any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in text):
        return "garbled"  # broken bytes or control characters: a decoding failure, not prose
    return None


def parse_instructions(
    lines: list[str] | None, min_chars: int
) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """Splits SelfInstruct's lines into usable instructions and rejected ones.

    Args:
        lines: SelfInstruct's ``instructions`` column for one seed (None: no output).
        min_chars: shortest acceptable instruction.

    Returns:
        ``(kept, dropped)``: ``kept`` holds ``(index, instruction)``, ``dropped`` holds
        ``(index, line, problem)``. Index is the line's position, which ties an answer back to
        its instruction.
    """
    kept: list[tuple[int, str]] = []
    dropped: list[tuple[int, str, str]] = []
    for i, line in enumerate(lines or []):
        text = _LIST_MARKER.sub("", line).strip().strip('"').strip()
        problem = output_problem(text, min_chars)
        if problem is None and text.endswith(":"):
            problem = "heading"  # "Here are three queries:" is a preamble, not a query
        if problem:
            dropped.append((i, line, problem))
        else:
            kept.append((i, text))
    return kept, dropped


# ------------------------------------------------------------------------------ the teacher


def resolve_api_key(teacher: TeacherConfig) -> str | None:
    """The teacher's API key, read now and kept only in memory (None: no key is needed).

    Args:
        teacher: the teacher section; ``api_key_secret`` (a Prefect Secret block) wins over
            ``api_key_env`` (an environment variable name); both empty means no auth.

    Raises:
        MissingSecret: the named variable or block is unset or empty, naming it and what to do.
    """
    if teacher.kind != "openai":
        return None
    if teacher.api_key_secret:
        from tuneline.orchestration import read_secret

        try:
            return read_secret(teacher.api_key_secret)
        except ValueError as e:
            raise MissingSecret(
                f"teacher.api_key_secret names the Prefect Secret block {teacher.api_key_secret!r}, "
                f"which could not be loaded ({e}); create it in the Prefect UI (Blocks > Secret) "
                "or with `prefect block create secret`"
            ) from None
    if teacher.api_key_env is None:
        return None
    key = os.environ.get(teacher.api_key_env, "")
    if not key:
        raise MissingSecret(
            f"teacher.api_key_env names the environment variable {teacher.api_key_env!r}, which is "
            f"not set (or empty): export {teacher.api_key_env}=<your key> for {public_url(teacher.base_url)}, "
            "or set teacher.api_key_env to null if the server needs no key"
        )
    return key


def public_url(url: str | None) -> str | None:
    """The URL without any user:password part, safe to log and report."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def build_llm(teacher: TeacherConfig, api_key: str | None):
    """A Distilabel LLM for the teacher: TransformersLLM or OpenAILLM.

    Args:
        teacher: kind, model, endpoint and sampling settings.
        api_key: from ``resolve_api_key`` (openai only).
    """
    if teacher.kind == "transformers":
        from distilabel.models import TransformersLLM

        sampling: dict[str, Any] = {
            "max_new_tokens": teacher.max_new_tokens,
            "do_sample": teacher.temperature > 0,
        }
        if teacher.temperature > 0:
            sampling["temperature"] = teacher.temperature
        # trust_remote_code stays off: a teacher is data, not code we have reviewed.
        return TransformersLLM(
            model=teacher.model, trust_remote_code=False, generation_kwargs=sampling
        )

    from distilabel.models import OpenAILLM
    from pydantic import SecretStr

    return OpenAILLM(
        model=teacher.model,
        base_url=teacher.base_url,
        api_key=SecretStr(api_key or NO_AUTH_KEY),
        generation_kwargs={
            "max_new_tokens": teacher.max_new_tokens,
            "temperature": teacher.temperature,
        },
    )


# --------------------------------------------------------------------- running distilabel


class _Collect(logging.Handler):
    """Keeps Distilabel's warnings (failed teacher calls), to report and to explain errors."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_distilabel_init_worker = None  # Distilabel's own pool initializer, while ours wraps it


def _init_worker(*args: Any) -> None:
    """Pool initializer for Distilabel's workers: fork-safe torch, the default SIGTERM, then
    Distilabel's own.

    ``Pool.terminate()`` stops the workers with SIGTERM. A handler inherited from the parent
    (Prefect's raises ``TerminationSignal``) can leave a worker holding the pool's queue lock,
    and ``terminate()`` then waits for it forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "torch" in sys.modules:
        # A forked worker inherits the parent's OpenMP pool in a broken state once the parent
        # has run a parallel op (training, scoring): its first parallel op then hangs for
        # ever. One intra-op thread never enters that pool; teachers here are small or remote.
        sys.modules["torch"].set_num_threads(1)
    from distilabel.pipeline import local

    (_distilabel_init_worker or local._init_worker)(*args)  # None in a spawned (fresh) worker


@contextmanager
def _contained_distilabel() -> Iterator[None]:
    """Runs Distilabel quietly and undoes what its run does to the process around it.

    ``Pipeline.run`` clears the root logger's handlers (Prefect's and pytest's), silences some
    library loggers for good, and installs a SIGINT handler, which Python only allows on the
    main thread (Prefect may run tasks on worker threads). Its INFO chatter and the progress
    bars of the ``datasets`` it builds are kept out of our logs (set DISTILABEL_LOG_LEVEL=INFO
    to see them), and so is its end-of-run citation lookup, which goes to the network for
    Hub dataset cards we never push. Its workers get the default SIGTERM (see ``_init_worker``).
    """
    global _distilabel_init_worker
    import datasets
    from distilabel import distiset
    from distilabel.pipeline import local
    from distilabel.utils import logging as dl_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {n: logging.getLogger(n).level for n in getattr(dl_logging, "_SILENT_LOGGERS", [])}
    main = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main else None
    log_level = os.environ.get("DISTILABEL_LOG_LEVEL")
    bars = datasets.utils.logging.is_progress_bar_enabled()
    grab_citations = distiset._grab_citations
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")  # read by the forked workers too
    datasets.utils.logging.disable_progress_bar()
    distiset._grab_citations = lambda dag: []
    _distilabel_init_worker, local._init_worker = local._init_worker, _init_worker
    try:
        yield
    finally:
        local._init_worker, _distilabel_init_worker = _distilabel_init_worker, None
        distiset._grab_citations = grab_citations
        if bars:
            datasets.utils.logging.enable_progress_bar()
        if log_level is None:
            os.environ.pop("DISTILABEL_LOG_LEVEL", None)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in quiet.items():
            logging.getLogger(name).setLevel(lvl)
        if main and sigint is not None:
            signal.signal(signal.SIGINT, sigint)


def run_pipeline(pipeline, leaves: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """Runs a Distilabel pipeline with no cache reuse; returns each leaf's rows and the warnings.

    Args:
        pipeline: a built ``distilabel.pipeline.Pipeline`` (its cache_dir a temporary directory).
        leaves: names of its leaf steps.
    """
    collect = _Collect()
    if threading.current_thread() is not threading.main_thread():
        pipeline._handle_keyboard_interrupt = lambda: None  # signal.signal needs the main thread
    with _contained_distilabel():
        distiset = pipeline.run(use_cache=False, logging_handlers=[collect])
        rows: dict[str, list[dict]] = {}
        for name in leaves:
            # A single leaf is renamed "default"; a leaf that produced nothing is absent.
            ds = distiset.get(name) or (distiset.get("default") if len(leaves) == 1 else None)
            rows[name] = ds["train"].to_list() if ds is not None else []
    return rows, collect.messages


def _transcript(messages: list[Message]) -> str:
    text = "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages)
    return text[:CONTEXT_CHARS]


def _is_seed(r: Record) -> bool:
    """A chat with a user turn that ends on an assistant reply: something to learn from."""
    msgs = r.messages or []
    return (
        r.kind == "chat"
        and len(msgs) >= 2
        and msgs[-1].role == "assistant"
        and any(m.role == "user" for m in msgs)
    )


def generate(
    seeds: list[Record], a: AugmentConfig, api_key: str | None, cache_dir: str
) -> tuple[dict, list[str]]:
    """SelfInstruct over the seeds, then TextGeneration over the usable instructions.

    Two pipelines rather than one with a splitting step in between: a Distilabel step that
    receives an empty batch (every instruction of a batch unusable) never finishes.

    Returns:
        ``({"instructions": rows, "responses": rows}, warnings)``: ``instructions`` has one row
        per seed (``seed_id``, ``instructions``), ``responses`` one per usable instruction
        (``seed_id``, ``index``, ``instruction``, ``generation``).
    """
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import SelfInstruct, TextGeneration

    t = a.teacher
    data = [{"seed_id": s.id, "input": _transcript(s.messages or [])} for s in seeds]
    with Pipeline(name="tuneline-augment-instructions", cache_dir=cache_dir) as pipeline:
        load = LoadDataFromDicts(name="seeds", data=data, batch_size=a.batch_size)
        instruct = SelfInstruct(
            name="instructions",
            llm=build_llm(t, api_key),
            num_instructions=a.instructions_per_seed,
            application_description=a.application_description,
            input_batch_size=a.batch_size,
        )
        load >> instruct
    rows, warnings = run_pipeline(pipeline, ["instructions"])

    todo = [
        {"seed_id": r["seed_id"], "index": i, "instruction": text}
        for r in rows["instructions"]
        for i, text in parse_instructions(r["instructions"], a.min_chars)[0]
    ]
    rows["responses"] = []
    if todo:
        with Pipeline(name="tuneline-augment-responses", cache_dir=cache_dir) as pipeline:
            load = LoadDataFromDicts(name="instructions", data=todo, batch_size=a.batch_size)
            answer = TextGeneration(
                name="responses", llm=build_llm(t, api_key), input_batch_size=a.batch_size
            )
            load >> answer
        answered, more = run_pipeline(pipeline, ["responses"])
        rows["responses"], warnings = answered["responses"], warnings + more
    return rows, warnings


def improve(
    seeds: list[Record], a: AugmentConfig, api_key: str | None, cache_dir: str
) -> tuple[dict, list[str]]:
    """TextGeneration that rewrites each seed's final reply; rows: ``seed_id``, ``generation``."""
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    data = [
        {
            "seed_id": s.id,
            "conversation": _transcript(s.messages[:-1]),
            "response": s.messages[-1].content,
        }
        for s in seeds
    ]
    with Pipeline(name="tuneline-augment-improve", cache_dir=cache_dir) as pipeline:
        load = LoadDataFromDicts(name="seeds", data=data, batch_size=a.batch_size)
        rewrite = TextGeneration(
            name="responses",
            llm=build_llm(a.teacher, api_key),
            template=IMPROVE_TEMPLATE,
            columns=["conversation", "response"],
            input_batch_size=a.batch_size,
        )
        load >> rewrite
    return run_pipeline(pipeline, ["responses"])


# ------------------------------------------------------------------------- judging output


def _reject(
    out: ArtifactWriter, problems: Counter, candidate: dict[str, Any], problem: str, step: str
) -> None:
    problems[problem] += 1
    out.reject(candidate, REASON, problem=problem, step=step)


def _judge_generate(
    seeds: list[Record],
    rows: dict,
    a: AugmentConfig,
    out: ArtifactWriter,
    teacher: str,
    problems: Counter,
) -> list[Record]:
    """Turns SelfInstruct/TextGeneration rows into new records or rejections, seed by seed."""
    instructions = {r["seed_id"]: r["instructions"] for r in rows["instructions"]}
    answers = {(r["seed_id"], r["index"]): r["generation"] for r in rows["responses"]}
    made = []
    for seed in seeds:
        lines = instructions.get(seed.id)
        if not lines:  # the call failed (None) or wrote only blank lines: one failed attempt
            problem = "no_output" if lines is None else "empty"
            candidate = {"seed_id": seed.id, "instructions": lines}
            _reject(out, problems, candidate, problem, "self_instruct")
            continue
        kept, dropped = parse_instructions(lines, a.min_chars)
        for _, line, problem in dropped:
            _reject(
                out, problems, {"seed_id": seed.id, "instruction": line}, problem, "self_instruct"
            )
        for index, instruction in kept:
            reply = answers.get((seed.id, index))
            problem = output_problem(reply, a.min_chars)
            if problem:
                candidate = {"seed_id": seed.id, "instruction": instruction, "response": reply}
                _reject(out, problems, candidate, problem, "responses")
                continue
            made.append(
                Record(
                    id=record_id("augment", seed.id, index, instruction),
                    kind="chat",
                    messages=[
                        Message(role="user", content=instruction),
                        Message(role="assistant", content=reply.strip()),
                    ],
                    meta={
                        "source": "augment",
                        "teacher": teacher,
                        "seed_id": seed.id,
                        "mode": "generate",
                    },
                )
            )
    return made


def _judge_improve(
    seeds: list[Record],
    rows: dict,
    a: AugmentConfig,
    out: ArtifactWriter,
    teacher: str,
    problems: Counter,
) -> list[Record]:
    """Turns rewritten replies into new records (the seed with its last reply replaced) or rejections."""
    answers = {r["seed_id"]: r["generation"] for r in rows["responses"]}
    made = []
    for seed in seeds:
        reply = answers.get(seed.id)
        problem = output_problem(reply, a.min_chars)
        if problem:
            _reject(out, problems, {"seed_id": seed.id, "response": reply}, problem, "responses")
            continue
        messages = [m.model_copy() for m in seed.messages]
        messages[-1] = Message(role="assistant", content=reply.strip())
        made.append(
            Record(
                id=record_id("augment", seed.id, "improve"),
                kind="chat",
                messages=messages,
                meta={
                    "source": "augment",
                    "teacher": teacher,
                    "seed_id": seed.id,
                    "improves": seed.id,
                    "mode": "improve",
                },
            )
        )
    return made


# ------------------------------------------------------------------------------ reporting


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
            lines.append(f"- seed `{ex['seed_id']}`: **{_short(user)}** → {_short(msgs[-1]['content'])}")
    return "\n".join(lines) + "\n"


def _scrub(messages: list[str], secret: str | None) -> list[str]:
    """Warnings safe to report: the key cut out, should any library have echoed it."""
    if secret and secret != NO_AUTH_KEY:
        messages = [m.replace(secret, "***") for m in messages]
    return [_short(m, 300) for m in messages]


# ----------------------------------------------------------------------------------- stage


def _pass_through(
    art: Artifact, out: ArtifactWriter, num_seeds: int, counts: Counter
) -> list[Record]:
    """Writes every input record unchanged; returns the ``num_seeds`` seed chats with the smallest ids.

    Ids are hashes, so the smallest ones are a fixed sample spread over all sources. The
    records are written as ``nsmallest`` consumes them, in one pass and bounded memory.
    """

    def written() -> Iterator[Record]:
        for r in track(art.records(), "augment: pass-through"):
            out.write(r)
            counts["records_in"] += 1
            if _is_seed(r):
                yield r

    return heapq.nsmallest(num_seeds, written(), key=lambda r: r.id)


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
        for r in track(inputs[0].records(), "augment: pass-through"):
            out.write(r)
            counts["records_in"] += 1
        out.report.update(
            records_in=counts["records_in"],
            teacher=None,
            generated=0,
            note="no teacher configured: records passed through",
        )
        return

    t = a.teacher
    api_key = resolve_api_key(t)  # before any work: a missing key is a config error
    seeds = _pass_through(inputs[0], out, a.num_seeds, counts)
    teacher_info = {"model": t.model, "kind": t.kind, "base_url": public_url(t.base_url)}
    warnings: list[str] = []
    made: list[Record] = []
    problems: Counter = Counter()
    if seeds:
        log.info("augment: %s with %s teacher %s on %d seeds", a.mode, t.kind, t.model, len(seeds))
        with tempfile.TemporaryDirectory(prefix="tuneline-distilabel-") as cache_dir:
            ask = generate if a.mode == "generate" else improve
            rows, warnings = ask(seeds, a, api_key, cache_dir)
        outputs = [r.get("instructions") for r in rows.get("instructions", [])] + [
            r.get("generation") for r in rows["responses"]
        ]
        if not any(o is not None for o in outputs):
            # Nothing at all came back: the teacher is down or refuses us. Failing (and
            # retrying) beats caching an artifact that silently lacks all its synthetic data.
            detail = "; ".join(_scrub(warnings, api_key)[:3]) or "no warnings were logged"
            raise TransientError(
                f"teacher {t.model} ({t.kind}, {public_url(t.base_url) or 'local'}) returned no output for "
                f"any of {len(seeds)} seeds; check that it is reachable and the key is valid. Distilabel said: {detail}"
            )
        judge = _judge_generate if a.mode == "generate" else _judge_improve
        made = judge(seeds, rows, a, out, t.model, problems)
        out.write_all(made)

    out.report.update(
        records_in=counts["records_in"],
        teacher=teacher_info,
        mode=a.mode,
        seeds=len(seeds),
        seed_ids=[s.id for s in seeds],
        generated=len(made),
        candidates=len(made) + sum(problems.values()),
        invalid_by_problem=dict(sorted(problems.items())),
        teacher_warnings=_scrub(warnings, api_key)[:5],
        examples=[
            {"seed_id": r.meta["seed_id"], "messages": [m.model_dump() for m in r.messages]}
            for r in made[:3]
        ],
    )
    if not seeds:
        out.report["note"] = "no chat record ending on an assistant reply to seed the teacher"


def highlights(report: dict[str, Any]) -> str:
    return report.get("note", "")


STAGE = Stage(
    name="augment",
    version=1,
    config=AugmentConfig,
    run=run,
    summary=summary,
    inputs=("dedup",),
    highlights=highlights,
    description="Synthetic data from a teacher.",
)
