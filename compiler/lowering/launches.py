"""A compiled graph's kernel launches at real shapes, for the ahead-of-time GPU report."""

from __future__ import annotations

from math import prod

from ..ir import ops
from ..ir.graph import Graph, meta, nodes, op


def graph_launches(g: Graph, batch: int, training: bool = True) -> tuple[list, list[str]]:
    """(launches, the nodes that fall back to torch) of a fused graph at `batch`.

    A training step also runs each layer's gradient kernels: `aot_report` expands every
    launch into its forward, data-gradient and weight-gradient kernels.
    """
    from ..kernels import ConvLaunch, LinearLaunch, PoolLaunch, SoftmaxLaunch, SpatialMeanLaunch

    launches, fallbacks = [], []
    first_weight_layer = True
    for n in nodes(g):
        operation, info = op(g, n), meta(g, n)
        if isinstance(operation, ops.Input):
            continue
        in_shape = info["in_shape"]
        if isinstance(operation, ops.Conv2d):
            c, h, w = in_shape
            (kh, kw), (ph, pw) = operation.kernel, operation.padding
            launches.append(
                ConvLaunch(
                    n,
                    batch,
                    c,
                    h,
                    w,
                    operation.out_channels,
                    kh,
                    kw,
                    ph,
                    pw,
                    operation.relu,
                    input_grad=not first_weight_layer,
                )
            )
            first_weight_layer = False
        elif isinstance(operation, ops.Linear):
            launches.append(
                LinearLaunch(
                    n,
                    batch,
                    prod(in_shape),
                    operation.out_features,
                    operation.relu,
                    input_grad=not first_weight_layer,
                )
            )
            first_weight_layer = False
        elif isinstance(operation, ops.MaxPool2d):
            launches.append(PoolLaunch(n, batch, *in_shape))
        elif isinstance(operation, ops.SpatialMean):
            launches.append(SpatialMeanLaunch(n, batch, *in_shape))
        elif isinstance(operation, ops.SoftMax):
            launches.append(SoftmaxLaunch(n, batch, in_shape[0], loss=training))
        else:  # LRN, and un-fused ReLU/dropout: torch runs them
            fallbacks.append(f"{n} ({operation.describe()})")
    return launches, fallbacks
