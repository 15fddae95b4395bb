"""The Distilabel pipelines that ask the teacher, and running them.

- ``generate``: ``SelfInstruct`` writes new user instructions in the spirit of each seed, then
  ``TextGeneration`` answers the usable ones;
- ``improve``: ``TextGeneration`` rewrites each seed's final assistant reply.

Distilabel is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from tasks.augment import distilabel_compat
from tasks.augment.config import AugmentConfig
from tasks.augment.validate import parse_instructions
from tuneline.records import Message, Record
from tuneline.teacher import TeacherClient

# Seeds are shown to the teacher whole up to this size: enough context for a good instruction,
# small enough for a small teacher's context window.
CONTEXT_CHARS = 2000

IMPROVE_TEMPLATE = """\
Rewrite the assistant's final reply in the conversation below so that it is more accurate, \
complete and helpful. Keep its language and intent. Answer with the rewritten reply only.

# Conversation
{{ conversation }}

# Reply to rewrite
{{ response }}
"""


def ask_teacher(
    seeds: list[Record], a: AugmentConfig, teacher: TeacherClient
) -> tuple[dict, list[str]]:
    """Runs the pipelines of ``a.mode`` over the seeds, in a Distilabel cache that is deleted after.

    Args:
        seeds: the chat records to show the teacher.
        a: the augment section (mode, batch size, instructions per seed, ...).
        teacher: the connected teacher.

    Returns:
        ``(rows, warnings)``: the rows of ``generate`` or ``improve``, and Distilabel's warnings.
    """
    ask = generate if a.mode == "generate" else improve
    with distilabel_compat.cache_dir() as cache_dir:
        return ask(seeds, a, teacher, cache_dir)


def transcript(messages: list[Message]) -> str:
    """A conversation as ``Role: text`` paragraphs, cut to ``CONTEXT_CHARS``."""
    text = "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages)
    return text[:CONTEXT_CHARS]


def generate(
    seeds: list[Record], a: AugmentConfig, teacher: TeacherClient, cache_dir: str
) -> tuple[dict, list[str]]:
    """SelfInstruct over the seeds, then TextGeneration over the usable instructions.

    Two pipelines rather than one with a splitting step in between: a Distilabel step that
    receives an empty batch (every instruction of a batch unusable) never finishes (1.5.3).

    Args:
        seeds: the chat records to show the teacher.
        a: the augment section.
        teacher: the connected teacher.
        cache_dir: Distilabel's cache (``distilabel_compat.cache_dir``).

    Returns:
        ``({"instructions": rows, "responses": rows}, warnings)``: ``instructions`` has one row
        per seed (``seed_id``, ``instructions``), ``responses`` one per usable instruction
        (``seed_id``, ``index``, ``instruction``, ``generation``).
    """
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import SelfInstruct, TextGeneration

    data = [{"seed_id": s.id, "input": transcript(s.messages or [])} for s in seeds]
    with Pipeline(name="tuneline-augment-instructions", cache_dir=cache_dir) as pipeline:
        load = LoadDataFromDicts(name="seeds", data=data, batch_size=a.batch_size)
        instruct = SelfInstruct(
            name="instructions",
            llm=teacher.llm(),
            num_instructions=a.instructions_per_seed,
            application_description=a.application_description,
            input_batch_size=a.batch_size,
        )
        load >> instruct
    rows, warnings = distilabel_compat.run_pipeline(pipeline, ["instructions"])

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
                name="responses", llm=teacher.llm(), input_batch_size=a.batch_size
            )
            load >> answer
        answered, more = distilabel_compat.run_pipeline(pipeline, ["responses"])
        rows["responses"], warnings = answered["responses"], warnings + more
    return rows, warnings


def improve(
    seeds: list[Record], a: AugmentConfig, teacher: TeacherClient, cache_dir: str
) -> tuple[dict, list[str]]:
    """TextGeneration that rewrites each seed's final reply.

    Args:
        seeds: the chat records to show the teacher (each ends on an assistant reply).
        a: the augment section.
        teacher: the connected teacher.
        cache_dir: Distilabel's cache (``distilabel_compat.cache_dir``).

    Returns:
        ``({"responses": rows}, warnings)``: one row per seed (``seed_id``, ``generation``).
    """
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    data = [
        {
            "seed_id": s.id,
            "conversation": transcript(s.messages[:-1]),
            "response": s.messages[-1].content,
        }
        for s in seeds
    ]
    with Pipeline(name="tuneline-augment-improve", cache_dir=cache_dir) as pipeline:
        load = LoadDataFromDicts(name="seeds", data=data, batch_size=a.batch_size)
        rewrite = TextGeneration(
            name="responses",
            llm=teacher.llm(),
            template=IMPROVE_TEMPLATE,
            columns=["conversation", "response"],
            input_batch_size=a.batch_size,
        )
        load >> rewrite
    return distilabel_compat.run_pipeline(pipeline, ["responses"])
