"""`LRN`: local response normalisation across channels (configuration A-LRN); torch runs it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ...frontend.ast import MAX_CHANNELS, Loc
from ...frontend.steps import Step, Unexpressed
from ...frontend.words import register
from .base import NotInTorchvision, Op, ShapeError

# The paper (Sect. 2.1): "the parameters for the LRN layer are those of (Krizhevsky et al.,
# 2012)", i.e. AlexNet's n = 5, alpha = 1e-4, beta = 0.75, k = 2.
PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")


def _number_text(value: float) -> str:
    """The shortest text that reads back as `value` (1.0 as `1`)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _read_parameters(body: str) -> dict[str, float]:
    """`size=5,alpha=2e-05,...` → {name: value}; ValueError names what is wrong."""
    if not body.strip():
        raise ValueError("LRN() has no parameters: write LRN, or LRN(k=1)")
    values: dict[str, float] = {}
    for item in body.split(","):
        name, equals, value = (part.strip() for part in item.partition("="))
        name = name.lower()
        if name not in PAPER or not equals:
            raise ValueError(
                f"{item.strip()!r} is not a parameter: write name=value with name one of "
                "size, alpha, beta, k"
            )
        if name in values:
            raise ValueError(f"{name} is given twice")
        if name == "size" and not value.isdigit():
            raise ValueError(f"size must be an odd whole number, got {value!r}")
        if not _NUMBER.fullmatch(value):
            raise ValueError(f"{name}={value!r} is not a number")
        values[name] = int(value) if name == "size" else float(value)
    return values


@register
@dataclass(frozen=True)
class Lrn(Op):
    """`LRN`: local response normalisation across channels, with the paper's parameters
    (size 5, alpha 1e-4, beta 0.75, k 2); `LRN(k=1,alpha=2e-05)` names the ones that differ,
    in AlexNet's convention (Krizhevsky et al., 2012, Sect. 3.3), which is the notation's:

        b[c] = a[c] / (k + alpha · Σ a[j]²)^beta,   j from c − (size−1)/2 to c + (size−1)/2

    (channels outside the map count as 0). Caffe writes the same window with alpha divided
    by the window: a[c] / (k + alpha_caffe / size · Σ a[j]²)^beta, k 1 by default, so
    alpha = alpha_caffe / size; torch's local_response_norm and ONNX's LRN divide as Caffe
    does; MatConvNet's `[N κ α β]` is AlexNet's (alpha = α, k = κ). `size` is odd: Caffe
    allows nothing else, and an even window has no centre."""

    size: int = PAPER["size"]
    alpha: float = PAPER["alpha"]
    beta: float = PAPER["beta"]
    k: float = PAPER["k"]

    word = "LRN"
    # LRN with the parameters that differ from the paper's, e.g. LRN(k=1,alpha=2e-05): one
    # token, so the comma inside the parentheses is not a separator.
    pattern = r"lrn(\([^()\n#]*\))?(?!\()"

    def __post_init__(self):
        size = self.size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_CHANNELS:
            raise ValueError(f"LRN size must be a whole number in [1, {MAX_CHANNELS}], got {size}")
        if size % 2 == 0:
            raise ValueError(f"LRN size must be odd (a window centred on its channel), got {size}")
        for name, low, strict in (("alpha", 0.0, False), ("beta", 0.0, False), ("k", 0.0, True)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"LRN {name} must be a number, got {value!r}")
            value = float(value) + 0.0  # one zero: -0.0 prints as 0
            if not math.isfinite(value) or value < low or (strict and value == low):
                raise ValueError(f"LRN {name} must be {'>' if strict else '≥'} 0, got {value}")
            object.__setattr__(self, name, value)

    @classmethod
    def read(cls, token: str, loc: Loc) -> Lrn:
        body = token[token.index("(") + 1 : -1] if "(" in token else None
        return cls(**_read_parameters(body), loc=loc) if body is not None else cls(loc=loc)

    def parameters(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PAPER}

    def __repr__(self) -> str:
        # Like the text: the paper's LRN is `Lrn()` (as `--emit ast` has always shown it).
        changed = [f"{n}={v!r}" for n, v in self.parameters().items() if v != PAPER[n]]
        return f"Lrn({', '.join(changed)})"

    def text(self) -> str:
        changed = [(n, v) for n, v in self.parameters().items() if v != PAPER[n]]
        if not changed:
            return "LRN"
        return "LRN(" + ",".join(f"{n}={_number_text(v)}" for n, v in changed) + ")"

    def build(self, b) -> None:
        index = b.namer.next("norm")
        stage = b.namer.stage
        name = f"norm{stage}" if index == 1 else f"norm{stage}_{index}"
        b.add(name, self)

    def describe(self) -> str:
        if self.parameters() == PAPER:
            return f"lrn size {self.size}"
        return f"lrn size {self.size} alpha {self.alpha:g} beta {self.beta:g} k {self.k:g}"

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError("LRN cannot follow a fully connected layer")
        return in_shape

    def forward(self, x, run):
        return run.backend.lrn(x, self.size, self.alpha, self.beta, self.k)

    def torchvision(self):
        raise NotInTorchvision("torchvision has no VGG with LRN (configuration A-LRN)")

    def steps(self, node, in_shape):
        return [Step("lrn", node, lrn=(self.size, self.alpha, self.beta, self.k))]

    @classmethod
    def implied(cls, steps, i):
        if steps[i].kind != "lrn":
            return None
        try:
            return cls(*steps[i].lrn), 1
        except ValueError as err:
            raise Unexpressed(f"an LRN whose {err}") from None
