"""The spec a weights file implies: its layers (source_net steps) written in the notation,
with its input size; a layer the notation cannot express is one line that names it."""

from __future__ import annotations

import math
from dataclasses import replace

from vggspec.compiler import Input, Spec
from vggspec.compiler.frontend.steps import Unexpressed
from vggspec.compiler.frontend.words import WORDS

from .source_net import Step, StructureError, describe

DEFAULT_SIZE = 224  # the paper's input, for a file that does not say its own
COLOURS = {3: "RGB", 1: "gray"}


def _refuse(source: str, step: Step, why: str) -> StructureError:
    return StructureError(
        f"{source}: layer {step.name} ({step.source}) is {why}: the notation cannot express it"
    )


def fc_convs(steps: list[Step]) -> list[Step]:
    """MatConvNet's FC layers are convs: the first unpadded conv after which come only
    1×1 convs and no pooling starts them (fc6: 7×7 over 7×7, fc7 and fc8: 1×1)."""
    convs = [i for i, s in enumerate(steps) if s.kind == "conv"]
    pools = [i for i, s in enumerate(steps) if s.kind == "pool"]
    for i in convs:
        later = [steps[j] for j in convs if j > i]
        unpadded = not any(steps[i].pad) and steps[i].stride == (1, 1)
        if unpadded and all(s.kernel == (1, 1) for s in later) and not any(j > i for j in pools):
            return [
                replace(s, kind="fc") if j >= i and s.kind == "conv" else s
                for j, s in enumerate(steps)
            ]
    return steps


def _unpooled(size: tuple[int, int], pools: list[Step]) -> tuple[int, int]:
    """The smallest input size that `pools` (unpadded windows, in order) turn into `size`:
    each window run backwards (a 2×2/2 pool doubles a side, a 3×3/2 one gives 2·side + 1,
    rounding up or not)."""
    h, w = size
    for pool in reversed(pools):
        h = (h - 1) * pool.stride[0] + pool.kernel[0]
        w = (w - 1) * pool.stride[1] + pool.kernel[1]
    return (h, w)


def _input_size(steps: list[Step], declared, channels: int, source: str) -> tuple[int, int]:
    """The file's own input size; else the one its first FC layer's input map implies
    (through the pools before it; the map must be square to be told); else 224."""
    if declared and declared[1] > 0 and declared[2] > 0:
        return (declared[1], declared[2])
    width, pools = channels, []
    for step in steps:
        if step.kind == "pool":
            pools.append(step)
        elif step.kind == "conv":
            width = step.outputs
        elif step.kind == "fc":
            if step.kernel != (1, 1):  # a conv-as-FC: its kernel is the map
                return _unpooled(step.kernel, pools)
            side = math.isqrt(step.inputs // width) if width and step.inputs % width == 0 else 0
            if side and side * side * width == step.inputs:
                return _unpooled((side, side), pools)
            raise StructureError(
                f"{source} does not say its input size, and its first FC layer {step.name} "
                f"takes {step.inputs} inputs, not {width} channels of a square map: give --spec"
            )
    return (DEFAULT_SIZE, DEFAULT_SIZE)


def _next_layer(steps: list[Step], i: int, source: str):
    """The layer of the notation that `steps[i:]` start with, as the words read them (each
    op class reads its own; see Layer.implied), and how many steps it takes."""
    step = steps[i]
    try:
        found = [read for cls in WORDS.values() if (read := cls.implied(steps, i)) is not None]
    except Unexpressed as err:
        raise _refuse(source, step, str(err)) from None
    if found:
        return found[0]
    if step.kind == "relu":  # conv and FC layers take the ReLU after them: not this one
        raise _refuse(source, step, f"a {describe(step)} that does not follow a conv or FC layer")
    notes = dict.fromkeys(note for cls in WORDS.values() if (note := cls.unlike(step)))
    raise _refuse(source, step, describe(step) + (f" ({'; '.join(notes)})" if notes else ""))


def implied_spec(steps: list[Step], declared, channels: int, source: str, description: str) -> Spec:
    """The spec whose net computes what `steps` compute, or StructureError naming the
    first layer the notation cannot express. The caller compiles it and compares it with
    the file as for any spec (ReLU placement, Caffe's rounding up)."""
    steps = fc_convs(steps)
    layers, i = [], 0
    while i < len(steps):
        layer, taken = _next_layer(steps, i, source)
        layers.append(layer)
        i += taken
    if channels not in COLOURS:
        raise StructureError(
            f"{source}: its first layer takes {channels} channels: the notation takes RGB "
            "(3) or gray (1) images"
        )
    height, width = _input_size(steps, declared, channels, source)
    try:
        return Spec(tuple(layers), Input(height, width, COLOURS[channels]), (description,))
    except ValueError as err:
        raise StructureError(f"{source}: the notation cannot express its net ({err})") from None
