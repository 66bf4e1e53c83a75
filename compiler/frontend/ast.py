"""The spec's abstract syntax: Spec, Input, and the Layer base with its traits (layers are ops)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TypeVar

if TYPE_CHECKING:
    from .steps import Step

# Limits keep a typo ("conv3-6400000") from becoming an out-of-memory crash later.
MAX_CHANNELS = 1 << 20
MAX_KERNEL = 99
MAX_INPUT_SIDE = 1 << 16

COLOUR_CHANNELS = {"RGB": 3, "gray": 1}


# Every node's `loc` is carried along but never compared nor printed: the same network
# written twice with different spacing is the same spec.


@dataclass(frozen=True)
class Loc:
    """A span in the spec text (1-based line and column), for error messages."""

    line: int
    column: int
    end_line: int
    end_column: int


def check_range(what: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class Input:
    """The input line: image height, width and colour (RGB = 3 channels, gray = 1)."""

    height: int = 224
    width: int = 224
    colour: str = "RGB"
    loc: Loc | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_range("input height", self.height, 1, MAX_INPUT_SIDE)
        check_range("input width", self.width, 1, MAX_INPUT_SIDE)
        if self.colour not in COLOUR_CHANNELS:
            raise ValueError(f"input colour must be one of {sorted(COLOUR_CHANNELS)}")

    @property
    def channels(self) -> int:
        return COLOUR_CHANNELS[self.colour]


T = TypeVar("T")


@dataclass(frozen=True)
class Layer:
    """A word of the notation. The op classes of compiler/ir/ops/ are its subclasses, one
    class per op, registered in the table of words (words.py); the grammar, parser,
    printer and graph builder ask it, and ask for its traits (the classes below) rather
    than for flags."""

    # Where it stands in the text: carried along, never compared nor printed.
    loc: Loc | None = field(default=None, compare=False, repr=False, kw_only=True)

    # Its spelling as printed ("soft-max", "FC"); the grammar rule is its letters, lower-cased.
    word: ClassVar[str]
    # The regular expression its tokens match (case-insensitive; default: the word itself)
    # and how an error names it among the expected words (default: the word).
    pattern: ClassVar[str]
    expected: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "word" in cls.__dict__:  # a word: what it does not say is its spelling
            cls.pattern = cls.__dict__.get("pattern", re.escape(cls.word))
            cls.expected = cls.__dict__.get("expected", cls.word)

    def trait(self, kind: type[T]) -> T | None:
        """This layer as a `kind` (a trait class) if it has that trait, else None."""
        return self if isinstance(self, kind) else None

    @classmethod
    def read(cls, token: str, loc: Loc) -> Layer:
        """The layer a token of this rule stands for; ValueError for a bad value."""
        return cls(loc=loc)

    def misplaced(self, previous: Layer | None) -> str | None:
        """Why this layer cannot follow `previous` (None: the first layer), or None."""
        return None

    @classmethod
    def may_follow(cls, previous: type[Layer] | None) -> bool:
        """Whether the word may stand after a word of class `previous` at all (None: at the
        start); an error lists a word among the expected ones only where it may."""
        return True

    def text(self) -> str:
        """Canonical text: `parse(text)` gives the layer back (default: the word)."""
        return self.word

    def build(self, b) -> None:
        """Add the IR node(s) for this layer: `b.add(name, op)`, names from `b.namer`."""
        raise NotImplementedError

    def resized(self, outputs: int) -> Layer | None:
        """This layer with `outputs` outputs if it can be a classifier's last layer."""
        return None

    @classmethod
    def implied(cls, steps: list[Step], i: int) -> tuple[Layer, int] | None:
        """The layer that a weights file's `steps[i:]` start with, as this word reads them,
        and how many steps it takes; None if they do not start with this word. Raises
        Unexpressed where they are this word's kind of layer but no spec can say them."""
        return None

    @classmethod
    def unlike(cls, step: Step) -> str | None:
        """For a step of a kind this word reads that it does not read: what the word is
        instead (a note for the refusal), or None."""
        return None


class EndsStage:
    """Trait: the word ends a stage (a Table 1 row, pool<stage>): the printer ends the line
    after it and the namer starts the next stage."""


class FillsStage:
    """Trait: a stage holding one is numbered (conv5_1 …; the head's numbers follow it)."""


class EndsNet:
    """Trait: the word ends the net (soft-max, box): nothing may follow it. Its op gives the
    net's task (compiler/ir/ops/task.py); a spec without one is sized and trained as if it
    ended in soft-max."""


def misplaced(layers) -> tuple[int, str] | None:
    """(index, why) of the first layer that cannot follow the one before it, or None."""
    for i, layer in enumerate(layers):
        if (why := layer.misplaced(layers[i - 1] if i else None)) is not None:
            return i, why
    return None


@dataclass(frozen=True)
class Spec:
    """A whole network: its description (the leading comment block), input and layers."""

    layers: tuple[Layer, ...]
    input: Input = field(default_factory=Input)
    description: tuple[str, ...] = ()
    # The text and file it was parsed from, so that errors found later by a pass
    # can still quote the line; like locations, never compared.
    source: str | None = field(default=None, compare=False, repr=False)
    filename: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        body = [layer for layer in self.layers if not layer.trait(EndsNet)]
        if not body:
            raise ValueError("a spec needs at least one layer besides soft-max")
        for i, layer in enumerate(self.layers):
            if layer.trait(EndsNet) and i != len(self.layers) - 1:
                raise ValueError("soft-max may only end the net")
        if (wrong := misplaced(self.layers)) is not None:
            raise ValueError(wrong[1])
        for line in self.description:
            if line != line.strip() or "\n" in line:
                raise ValueError(f"description lines are single stripped lines: {line!r}")
