"""``RecordFilter``: one rule that may reject a record, named after the reason it gives."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from tuneline.records import Record


class Rejection(NamedTuple):
    """Why a filter dropped a record: its ``reason`` and the details the rejected shard keeps."""

    reason: str
    detail: dict[str, Any]


class RecordFilter:
    """One rule over records, in the style of datatrove's ``BaseFilter`` but with a verdict that
    carries the reason and its details (they go into ``rejected/`` next to the record).

    Subclasses set ``name`` (the rejection reason, as it appears in reports) and implement
    ``check``.
    """

    name: ClassVar[str]

    def check(self, record: Record) -> Rejection | None:
        """``None`` to keep ``record``, or ``self.reject(...)`` to drop it."""
        raise NotImplementedError

    def reject(self, **detail: Any) -> Rejection:
        return Rejection(self.name, detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
