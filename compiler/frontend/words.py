"""The notation's words: one table, filled by the op classes (compiler/ir/ops/), that the
grammar, the parser and the printer read. A word class names its spelling once."""

from __future__ import annotations

import re

from .ast import Layer, Loc
from .errors import SpecError

# grammar rule name → the op class that reads it, in registration order
WORDS: dict[str, type[Layer]] = {}

# Every word token ends here: two tokens can never be glued together.
WORD_END = r"(?![A-Za-z0-9_\-])"


def rule(cls: type[Layer]) -> str:
    """The word's grammar rule: its spelling's letters and digits, lower-cased (soft-max →
    softmax); its lark terminal is the same in upper case."""
    return re.sub(r"[^a-z0-9]", "", cls.word.lower())


def terminal(cls: type[Layer]) -> str:
    return rule(cls).upper()


def token_pattern(cls: type[Layer]) -> str:
    """The regular expression of the word's token (case-insensitive), its end included."""
    return f"(?:{cls.pattern}){WORD_END}"


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make `cls` the reader of its word."""
    name = rule(cls)
    if name in WORDS:
        raise ValueError(f"two layers claim the word {cls.word!r}")
    WORDS[name] = cls
    return cls


def number(digits: str, what: str, loc: Loc) -> int:
    """A number read from a token; more than 9 digits is a located SpecError."""
    if len(digits) > 9:
        raise SpecError(f"{what} {digits[:12]}… is out of range", loc)
    return int(digits)


def match(pattern: str, token: str) -> tuple[str, ...]:
    """The groups of a token that the grammar already accepted (so it matches)."""
    return re.fullmatch(pattern, token, re.IGNORECASE).groups()
