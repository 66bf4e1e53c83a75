"""A net as a weights file says it computes: its layers in order with the settings that
change the function (the same terms for Caffe, MatConvNet, Keras and the spec's net), and
the comparison that refuses, in one line, a file that means another function than a spec."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from vggspec.compiler.ir.graph import meta, nodes, op
from vggspec.compiler.ir.ops import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Input,
    Linear,
    LocalResponseNorm,
    Lrn,
    MaxPool2d,
    ReLU,
    SoftMaxOp,
)

from .weights import WeightsError


class StructureError(WeightsError):
    """A file whose net computes another function than the spec's: which layer, both sides."""


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


def pool_size(size: int, kernel: int, stride: int, pad: tuple[int, int], ceil: bool) -> int:
    """Caffe's output size of a pooling window (ceil or floor), with its correction that
    the last window starts inside the image or its first padding."""
    span = size + pad[0] + pad[1] - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and pad[0] and (out - 1) * stride >= size + pad[0]:
        out -= 1
    return out


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


# --- the spec's net in the same terms: one small function per op class --------------------


def _conv_steps(name, operation: Conv2d, in_shape):
    (ph, pw) = operation.padding
    conv = Step("conv", name, kernel=operation.kernel, pad=(ph, ph, pw, pw))
    return [replace(conv, outputs=operation.out_channels), *_relu(name, operation.relu)]


def _fc_steps(name, operation: Linear, in_shape):
    # The map the FC sees: a file that writes FC layers as convs has this kernel (fc6: 7×7).
    kernel = tuple(in_shape[1:]) if len(in_shape) == 3 else (1, 1)
    fc = Step("fc", name, kernel=kernel, outputs=operation.out_features)
    return [fc, *_relu(name, operation.relu)]


def _relu(name: str, present: bool = True) -> list[Step]:
    # A fused ReLU keeps its layer's number: conv1_1 → relu1_1, fc6 → relu6.
    return [Step("relu", name.replace("conv", "relu").replace("fc", "relu"))] if present else []


def _pool_steps(method: str):
    def steps(name, operation, in_shape):
        kernel, stride = (operation.kernel,) * 2, (operation.stride,) * 2
        return [Step("pool", name, kernel=kernel, stride=stride, method=method)]

    return steps


def _lrn_steps(name, operation: LocalResponseNorm, in_shape):
    lrn = (operation.size, operation.alpha, operation.beta, operation.k)
    return [Step("lrn", name, lrn=lrn)]


SPEC_STEPS = {
    Input: lambda name, operation, in_shape: [],
    Conv2d: _conv_steps,
    ReLU: lambda name, operation, in_shape: [Step("relu", name)],
    MaxPool2d: _pool_steps("max"),
    AvgPool2d: _pool_steps("average"),
    LocalResponseNorm: _lrn_steps,
    Linear: _fc_steps,
    Dropout: lambda name, operation, in_shape: [],  # training only
    SoftMaxOp: lambda name, operation, in_shape: [Step("softmax", name)],
}


def spec_steps(graph) -> list[tuple[Step, tuple[int, ...]]]:
    """The steps of a compiled spec's net, each with the shape it takes."""
    out = []
    for n in nodes(graph):
        operation = op(graph, n)
        in_shape = tuple(meta(graph, n).in_shape or ())
        steps = SPEC_STEPS.get(type(operation))
        if steps is None:
            why = f"{operation.describe()}, which weights files from elsewhere do not have"
            out.append((Step("unknown", n, why=why), in_shape))
            continue
        out += [(step, in_shape) for step in steps(n, operation, in_shape)]
    return out


# --- the comparison ------------------------------------------------------------------------


def _as_spec_sees(step: Step, theirs: Step) -> Step:
    """MatConvNet writes FC layers as convs over the whole map: such a conv is the FC."""
    whole_map = step.kernel == theirs.kernel and not any(step.pad)
    plain = step.stride == (1, 1) and step.dilation == (1, 1) and step.groups == 1
    if step.kind == "conv" and theirs.kind == "fc" and whole_map and plain:
        return replace(step, kind="fc", kernel=theirs.kernel)
    return step


def _same(mine: Step, theirs: Step) -> bool:
    if mine.kind != theirs.kind or mine.kind == "unknown":
        return False
    if mine.kind == "fc":
        return True  # the weights' shapes are matched apart
    if mine.kind == "lrn":  # the size exactly, the constants to float32's precision
        pairs = zip(mine.lrn, theirs.lrn, strict=True)
        return all(math.isclose(a, b, rel_tol=1e-6) for a, b in pairs)
    return replace(mine, ceil=False) == replace(theirs, ceil=False)


def _lrn_hint(step: Step) -> str:
    size, alpha, beta, k = step.lrn
    try:
        return f" (write {Lrn(size, alpha, beta, k).text()} in the spec for this file's)"
    except ValueError:
        return ""


def compare(file_steps: list[Step], spec: list[tuple[Step, tuple]], source: str) -> None:
    """Raise StructureError (one line) at the first layer where the file's net and the
    spec's compute different functions. A file may end without the spec's soft-max (its
    outputs are the class scores the soft-max takes); a Caffe pooling that rounds up
    differs only where that changes its output size at the spec's input size."""
    theirs = [step for step, _ in spec]
    for step, (spec_step, in_shape) in zip(file_steps, spec, strict=False):
        mine = _as_spec_sees(step, spec_step)
        where = f"{source}: layer {step.name} ({step.source})"
        if mine.kind == "pool" and _same(mine, spec_step) and mine.ceil != spec_step.ceil:
            sizes = [
                tuple(
                    pool_size(
                        in_shape[axis],
                        s.kernel[axis - 1],
                        s.stride[axis - 1],
                        s.pad[2 * axis - 2 : 2 * axis],
                        s.ceil,
                    )
                    for axis in (1, 2)
                )
                for s in (mine, spec_step)
            ]
            if sizes[0] != sizes[1]:
                h, w = in_shape[1:]
                raise StructureError(
                    f"{where} rounds its output size up: {h}×{w} pools to "
                    f"{_pair(sizes[0])} where the spec's {spec_step.name} gives "
                    f"{_pair(sizes[1])} (an input size whose maps are even fits both)"
                )
            continue
        if not _same(mine, spec_step):
            hint = _lrn_hint(step) if step.kind == "lrn" == spec_step.kind else ""
            raise StructureError(
                f"{where} is {describe(step)}; the spec's {spec_step.name} is "
                f"{describe(spec_step)}{hint}"
            )
    if len(file_steps) > len(spec):
        step = file_steps[len(spec)]
        last = f"its last layer is {spec[-1][0].name}" if spec else "it has none"
        raise StructureError(
            f"{source}: layer {step.name} ({step.source}, {describe(step)}) is not in the "
            f"spec ({last})"
        )
    missing = theirs[len(file_steps) :]
    if missing and [s.kind for s in missing] != ["softmax"]:
        step = missing[0]
        last = f"its last layer is {file_steps[-1].name}" if file_steps else "it has none"
        if step.kind == "fc" and not any(s.kind == "fc" for s in file_steps):
            raise StructureError(
                f"{source} has no FC layers (a convolutional body, like Keras' _notop "
                f"files): give a spec without them (it ends after {file_steps[-1].name})"
            )
        raise StructureError(
            f"{source}: the spec's {step.name} ({describe(step)}) is not in the file ({last})"
        )
