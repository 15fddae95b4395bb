"""card: the model card of what this run trained, evaluated and exported.

Reads the train, evaluate and export artifacts and writes ``README.md``, a model card in the
Hugging Face layout (``tuneline.card``): front matter with the eval results, the data lineage
walked back from the train artifact to ingest (each stage's key, records in and kept, PII and
dedup figures), the training config, base-vs-tuned eval results, every exported file with its
size and sha256, and the serving commands. Its summary is the card itself, so the Prefect UI
shows it as the ``card-summary`` markdown artifact.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.card import TINY, lineage, model_card
from tuneline.sections import Section
from tuneline.stage import Stage


class CardConfig(Section):
    include_serving: bool = Field(
        default=True, description="Add the export's serving commands (Ollama, vLLM, llama.cpp) to the card."
    )


def exported_files(export_report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file export shipped, ``{"path", "size", "sha256"}``, in the order of its formats."""
    files = []
    for fmt in (export_report.get("formats") or {}).values():
        files += fmt.get("files", [])
    files += (export_report.get("serving") or {}).get("files_detail", [])
    return files


def usage(export_report: dict[str, Any]) -> list[str]:
    """Shell lines that serve the exports, from the export folder (export's own commands)."""
    return list(((export_report.get("serving") or {}).get("commands") or {}).values())


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Writes the model card.

    Args:
        inputs: ``[train, evaluate, export]`` artifacts of one run.
        cfg: the ``card`` and ``model`` sections.
        out: receives ``README.md`` (the card) and the report (``{"card": markdown}``).
    """
    trained, evaluated, exported = inputs
    manifest_config = trained.manifest.get("config", {})
    card = model_card(
        lineage(trained),
        base=cfg.model.name_or_path or TINY,
        train_config=manifest_config.get("train", {}),
        evaluation=evaluated.report,
        files=exported_files(exported.report),
        usage=usage(exported.report) if cfg.card.include_serving else None,
    )
    out.file("README.md").write_text(card)
    out.report["card"] = card


def summary(report: dict[str, Any]) -> str:
    """The card itself."""
    return report.get("card", "")


STAGE = Stage(
    name="card",
    version=1,
    config=CardConfig,
    run=run,
    summary=summary,
    inputs=("train", "evaluate", "export"),
    uses=("model",),
    records=False,
    highlights=lambda r: "model card written (README.md)",
    description="The model card: data lineage, training config, eval results, exported files.",
)
