"""A compiled graph's kernel launches at real shapes, for the ahead-of-time GPU report."""

from __future__ import annotations

from ..ir.graph import Graph, meta, nodes, op, producer
from ..ir.ops.traits import Weighted


def graph_launches(g: Graph, batch: int, training: bool = True) -> tuple[list, list[str]]:
    """(launches, the nodes that fall back to torch) of a fused graph at `batch`.

    A training step also runs each layer's gradient kernels: `aot_report` expands every
    launch into its forward, data-gradient and weight-gradient kernels.
    """
    launches, fallbacks = [], []
    input_grad = False  # nothing needs the gradient of the image
    for n in nodes(g):
        operation, info = op(g, n), meta(g, n)
        if producer(g, n) is None:  # the image
            continue
        launch = operation.launch(n, info.in_shape, batch, training, input_grad)
        if launch is None:  # LRN, and un-fused ReLU/dropout: torch runs them
            fallbacks.append(f"{n} ({operation.describe()})")
        else:
            launches.append(launch)
        input_grad = input_grad or operation.trait(Weighted) is not None
    return launches, fallbacks


def torch_reasons(g: Graph, training: bool = True) -> list[str]:
    """Why torch runs the ops that have no launch, one line per distinct reason given."""
    reasons = []
    for n in nodes(g):
        operation = op(g, n)
        if producer(g, n) is None or operation.launch(n, meta(g, n).in_shape, 1, training, True):
            continue
        if (why := operation.torch_reason(training)) and why not in reasons:
            reasons.append(why)
    return reasons
