"""A net as a weights file says it computes: its layers in order with the settings that
change the function (the same terms for Caffe, MatConvNet, Keras and the spec's net), and
the comparison that refuses, in one line, a file that means another function than a spec."""

from __future__ import annotations

import math
from dataclasses import replace

from vggspec.compiler.frontend.steps import Step, describe
from vggspec.compiler.ir.graph import meta, nodes, op
from vggspec.compiler.ir.ops.lrn import Lrn

from .weights import WeightsError

__all__ = ["Step", "StructureError", "compare", "describe", "pool_size", "spec_steps"]


class StructureError(WeightsError):
    """A file whose net computes another function than the spec's: which layer, both sides."""


def pool_size(size: int, kernel: int, stride: int, pad: tuple[int, int], ceil: bool) -> int:
    """Caffe's output size of a pooling window (ceil or floor), with its correction that
    the last window starts inside the image or its first padding."""
    span = size + pad[0] + pad[1] - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and pad[0] and (out - 1) * stride >= size + pad[0]:
        out -= 1
    return out


def spec_steps(graph) -> list[tuple[Step, tuple[int, ...]]]:
    """The steps of a compiled spec's net (each op says its own), each with the shape it
    takes."""
    out = []
    for n in nodes(graph):
        in_shape = tuple(meta(graph, n).in_shape or ())
        out += [(step, in_shape) for step in op(graph, n).steps(n, in_shape)]
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


def _pair(values) -> str:
    a, b = values
    return f"{a}" if a == b else f"{a}×{b}"


def _fitting(pool: Step) -> str:
    """The input sizes at which rounding up and down agree for `pool`: where its windows tile
    each map exactly (side − kernel a multiple of the stride)."""
    (k, _), (s, _) = pool.kernel, pool.stride
    if s == 2:
        return f"an input size whose maps are {'odd' if k % 2 else 'even'}"
    return f"an input size whose maps are {k} plus a multiple of {s}"


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
                    f"{where} rounds its output size {'up' if mine.ceil else 'down'}: "
                    f"{h}×{w} pools to {_pair(sizes[0])} where the spec's {spec_step.name} "
                    f"gives {_pair(sizes[1])} ({_fitting(spec_step)} fits both)"
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
