"""infer_shapes: (C, H, W) of every node's input and output, from the input size."""

from __future__ import annotations

from ...frontend.errors import SpecError
from ...frontend.printer import format_layer
from ..graph import Graph, meta, nodes, op, producer
from ..ops.base import ShapeError


def _layer_error(g: Graph, n: str, message: str) -> SpecError:
    info = meta(g, n)
    shown = f"{n} ({format_layer(info.layer)})" if info.layer is not None else n
    return SpecError(f"{shown}: {message}", info.loc)


def infer_shapes(g: Graph) -> Graph:
    """Write meta.in_shape and meta.shape; a spec that does not fit is a SpecError."""
    for n in nodes(g):
        operation, source = op(g, n), producer(g, n)
        in_shape = meta(g, source).shape if source is not None else None  # the image: none
        meta(g, n).in_shape = in_shape
        try:
            meta(g, n).shape = operation.out_shape(in_shape)
        except ShapeError as err:
            raise _layer_error(g, n, str(err)) from None
    return g
