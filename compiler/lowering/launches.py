"""A compiled graph's kernel launches at real shapes, for the ahead-of-time GPU report."""

from __future__ import annotations

from ..ir.graph import Graph, meta, nodes, op


def graph_launches(g: Graph, batch: int, training: bool = True) -> tuple[list, list[str]]:
    """(launches, the nodes that fall back to torch) of a fused graph at `batch`.

    A training step also runs each layer's gradient kernels: `aot_report` expands every
    launch into its forward, data-gradient and weight-gradient kernels.
    """
    launches, fallbacks = [], []
    input_grad = False  # nothing needs the gradient of the image
    for n in nodes(g):
        operation, info = op(g, n), meta(g, n)
        if operation.is_input:
            continue
        launch = operation.launch(n, info.in_shape, batch, training, input_grad)
        if launch is None:  # LRN, and un-fused ReLU/dropout: torch runs them
            fallbacks.append(f"{n} ({operation.describe()})")
        else:
            launches.append(launch)
        input_grad = input_grad or operation.has_weights
    return launches, fallbacks
