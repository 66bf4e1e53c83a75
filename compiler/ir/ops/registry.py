"""The notation's words: grammar rule name → the Layer class that reads it (one table)."""

from __future__ import annotations

from ...frontend.ast import Layer

LAYERS: dict[str, type[Layer]] = {}


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make `cls` the reader of grammar rule `cls.word`."""
    if cls.word in LAYERS:
        raise ValueError(f"two layers claim the word {cls.word!r}")
    LAYERS[cls.word] = cls
    return cls
