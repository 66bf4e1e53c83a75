"""densify: the paper's FC → conv conversion for dense evaluation (Sect. 3.2)."""

from __future__ import annotations

from .. import ops
from ..graph import Graph, meta, nodes, op, output

_KEPT = ("loc", "layer", "fused")


def densify(g: Graph) -> Graph:
    """A new, fully-convolutional graph; needs shapes (run infer_shapes first).

    The first FC becomes a conv whose kernel is the spatial size it sees (7×7 for the
    VGG nets at 224), every later FC a 1×1 conv; meta['weight_from'] records how the
    FC weight maps onto the conv weight (a reshape, flatten order C×H×W). Dropout
    goes (the dense twin is for testing) and soft-max becomes the spatial mean of the
    class score map followed by soft-max.
    """
    dense = Graph(**{**g.graph, "passes": [*g.graph["passes"], "densify"], "dense": True})
    last = None
    for n in nodes(g):
        # Analyses are re-run on the new graph: carry over only what they cannot recompute.
        operation = op(g, n)
        info = {k: v for k, v in meta(g, n).items() if k in _KEPT}
        if isinstance(operation, ops.Dropout):
            continue
        if isinstance(operation, ops.Linear):
            in_shape = meta(g, n)["in_shape"]
            c, kh, kw = in_shape if len(in_shape) == 3 else (in_shape[0], 1, 1)
            info["weight_from"] = {
                "node": n,
                "linear_shape": (operation.out_features, c * kh * kw),
                "shape": (operation.out_features, c, kh, kw),
            }
            operation = ops.Conv2d(operation.out_features, (kh, kw), (0, 0), operation.relu)
        if isinstance(operation, ops.SoftMax):
            dense.add_node("score_mean", op=ops.SpatialMean(), meta={"loc": info.get("loc")})
            dense.add_edge(last, "score_mean")
            last = "score_mean"
        dense.add_node(n, op=operation, meta=info)
        if last is not None:
            dense.add_edge(last, n)
        last = n
    assert output(dense) == last
    return dense
