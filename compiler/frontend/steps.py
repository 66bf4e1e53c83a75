"""A layer as a weights file says it computes (a step), in the terms every file format and every
op share: what the ops map themselves to, and what the implied spec is read from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One layer as its source computes it. Kinds: conv, fc, relu, pool, lrn, softmax, and
    for a layer no spec can match, the source's own word for it (`unknown`). Only the
    fields of a kind are set; `name` and `source` (the file's layer type) only inform."""

    kind: str
    name: str = field(default="", compare=False)
    source: str = field(default="", compare=False)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    method: str = ""  # pool: "max" or "average"
    ceil: bool = False  # pool: output size rounded up (Caffe's default)
    # LRN: (size, alpha, beta, k) in the notation's (AlexNet's) convention.
    lrn: tuple[int, float, float, float] | None = None
    slope: float = 0.0  # relu: negative slope (a leaky ReLU)
    outputs: int = field(default=0, compare=False)  # conv/fc width
    inputs: int = field(default=0, compare=False)  # fc: fan-in
    # How the source spells it where that differs from the notation (Caffe's LRN alpha).
    spelled: str = field(default="", compare=False)
    why: str = field(default="", compare=False)  # unknown: why no spec matches it


class Unexpressed(Exception):
    """A step of a word's kind that no spec can say; `str(err)` is what the step is."""


def _pair(values) -> str:
    a, b = values
    return f"{a}" if a == b else f"{a}×{b}"


def _pads(pad) -> str:
    return f"{pad[0]}" if len(set(pad)) == 1 else ",".join(map(str, pad))


def _number(value: float) -> str:
    return f"{value:.6g}"


def describe(step: Step) -> str:
    """The step in words, e.g. `max pooling 2×2 stride 2`, `conv 3×3 stride 1 pad 0`."""
    if step.kind == "conv":
        text = f"conv {step.kernel[0]}×{step.kernel[1]} stride {_pair(step.stride)} pad "
        text += _pads(step.pad)
        text += f" dilation {_pair(step.dilation)}" if step.dilation != (1, 1) else ""
        return text + (f" in {step.groups} groups" if step.groups != 1 else "")
    if step.kind == "fc":
        return "fully connected"
    if step.kind == "relu":
        return f"leaky ReLU (slope {_number(step.slope)})" if step.slope else "ReLU"
    if step.kind == "pool":
        kernel = f"{step.kernel[0]}×{step.kernel[1]}"
        text = f"{step.method} pooling {kernel} stride {_pair(step.stride)}"
        # (Caffe's rounding up is told apart only where it changes a size: compare.)
        return text + (f" pad {_pads(step.pad)}" if any(step.pad) else "")
    if step.kind == "lrn":
        size, alpha, beta, k = step.lrn
        text = f"LRN size {size} alpha {_number(alpha)} beta {_number(beta)} k {_number(k)}"
        return text + (f" ({step.spelled})" if step.spelled else "")
    if step.kind == "softmax":
        return "soft-max"
    return step.why or step.kind
