"""infer_shapes: (C, H, W) of every node's input and output, from the input size."""

from __future__ import annotations

from ...frontend.errors import SpecError
from ...frontend.printer import format_layer
from .. import ops
from ..graph import Graph, meta, nodes, op, producer


def _layer_error(g: Graph, n: str, message: str) -> SpecError:
    info = meta(g, n)
    layer = info.get("layer")
    shown = f"{n} ({format_layer(layer)})" if layer is not None else n
    return SpecError(f"{shown}: {message}", info.get("loc"))


def _out_shape(g: Graph, n: str, operation: ops.Op, shape: tuple[int, ...]) -> tuple[int, ...]:
    spatial = len(shape) == 3
    if isinstance(operation, ops.Conv2d):
        if not spatial:
            raise _layer_error(g, n, "a convolution cannot follow a fully connected layer")
        c, h, w = shape
        (kh, kw), (ph, pw) = operation.kernel, operation.padding
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        if oh < 1 or ow < 1:
            raise _layer_error(g, n, f"a {kh}x{kw} kernel does not fit a {h}x{w} input")
        return (operation.out_channels, oh, ow)
    if isinstance(operation, ops.MaxPool2d):
        if not spatial:
            raise _layer_error(g, n, "max pooling cannot follow a fully connected layer")
        c, h, w = shape
        k, s = operation.kernel, operation.stride
        if h < k or w < k:
            raise _layer_error(
                g,
                n,
                f"the spatial size collapses: {h}x{w} is too small to pool {k}x{k}"
                " (too many maxpools for this input size)",
            )
        return (c, (h - k) // s + 1, (w - k) // s + 1)  # floor mode, as Caffe and torch
    if isinstance(operation, ops.LocalResponseNorm) and not spatial:
        raise _layer_error(g, n, "LRN cannot follow a fully connected layer")
    if isinstance(operation, ops.Linear):
        return (operation.out_features,)
    if isinstance(operation, ops.SpatialMean):
        return shape[:1]
    return shape  # elementwise: relu, lrn, dropout, soft-max


def infer_shapes(g: Graph) -> Graph:
    """Write meta['in_shape'] and meta['shape']; a spec that does not fit is a SpecError."""
    for n in nodes(g):
        operation = op(g, n)
        if isinstance(operation, ops.Input):
            meta(g, n)["shape"] = (operation.channels, operation.height, operation.width)
            continue
        in_shape = meta(g, producer(g, n))["shape"]
        meta(g, n)["in_shape"] = in_shape
        meta(g, n)["shape"] = _out_shape(g, n, operation, in_shape)
    return g
