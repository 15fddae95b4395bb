import pytest
from pydantic import ValidationError

from tuneline.pipeline import Selection


def test_only_runs_one_stage_and_skips_later():
    s = Selection(only="dedup")
    assert [st for st in ("ingest", "pii", "dedup", "augment") if s.runs(st)] == ["dedup"]
    assert s.after_last("augment") and not s.after_last("pii")


def test_from_to_window():
    s = Selection(from_stage="pii", to_stage="augment")
    assert not s.runs("ingest") and s.runs("pii") and s.runs("augment") and s.after_last("format")


def test_force_covers_downstream():
    s = Selection(force=["dedup"])
    assert not s.forced("pii") and s.forced("dedup") and s.forced("evaluate")


def test_bad_selection_is_rejected():
    with pytest.raises(ValidationError, match="not a stage"):
        Selection(only="training")
    with pytest.raises(ValidationError, match="comes before"):
        Selection(from_stage="train", to_stage="pii")
