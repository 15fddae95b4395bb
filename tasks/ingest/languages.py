"""Language codes: the labels fastText lid.176 can give, and the check that config fields use.

Kept as data here (not read from the model) so validating a config never loads fastText.
"""

from __future__ import annotations

from typing import Any

# fmt: off
LID176_LABELS: frozenset[str] = frozenset({
    "af", "als", "am", "an", "ar", "arz", "as", "ast", "av", "az", "azb", "ba", "bar", "bcl",
    "be", "bg", "bh", "bn", "bo", "bpy", "br", "bs", "bxr", "ca", "cbk", "ce", "ceb", "ckb",
    "co", "cs", "cv", "cy", "da", "de", "diq", "dsb", "dty", "dv", "el", "eml", "en", "eo",
    "es", "et", "eu", "fa", "fi", "fr", "frr", "fy", "ga", "gd", "gl", "gn", "gom", "gu", "gv",
    "he", "hi", "hif", "hr", "hsb", "ht", "hu", "hy", "ia", "id", "ie", "ilo", "io", "is", "it",
    "ja", "jbo", "jv", "ka", "kk", "km", "kn", "ko", "krc", "ku", "kv", "kw", "ky", "la", "lb",
    "lez", "li", "lmo", "lo", "lrc", "lt", "lv", "mai", "mg", "mhr", "min", "mk", "ml", "mn",
    "mr", "mrj", "ms", "mt", "mwl", "my", "myv", "mzn", "nah", "nap", "nds", "ne", "new", "nl",
    "nn", "no", "oc", "or", "os", "pa", "pam", "pfl", "pl", "pms", "pnb", "ps", "pt", "qu",
    "rm", "ro", "ru", "rue", "sa", "sah", "sc", "scn", "sco", "sd", "sh", "si", "sk", "sl",
    "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl", "tr", "tt", "tyv",
    "ug", "uk", "ur", "uz", "vec", "vep", "vi", "vls", "vo", "wa", "war", "wuu", "xal", "xmf",
    "yi", "yo", "yue", "zh"
})
# fmt: on
"""The 176 labels of lid.176 (``model.get_labels()`` without ``__label__``)."""

UNKNOWN = "unknown"
"""The label language ID gives when it cannot tell (too little text, or a score below the threshold)."""


def language_code(value: Any, field: str) -> str:
    """One language code from a config value, as lid.176 spells it.

    YAML 1.1 reads a bare ``no`` (Norwegian) as ``false``: it is turned back into ``"no"``.

    Raises:
        ValueError: not a string, or not a label lid.176 can give (the message names the field).
    """
    if value is False:
        return "no"
    if not isinstance(value, str):
        raise ValueError(
            f"{field}: {value!r} is not a language code; write ISO 639-1 codes as strings "
            "(quote them in YAML: 'no', 'on')"
        )
    code = value.strip().lower()
    if code not in LID176_LABELS:
        raise ValueError(
            f"{field}: {value!r} is not a language fastText lid.176 can identify "
            "(ISO 639-1 codes such as en, de, zh, no; see tasks/ingest/languages.py)"
        )
    return code
