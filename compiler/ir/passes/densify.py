"""densify: the paper's FC → conv conversion for dense evaluation (Sect. 3.2)."""

from __future__ import annotations

from ..graph import Graph, NodeMeta, meta, nodes, op, output


def densify(g: Graph) -> Graph:
    """A new, fully-convolutional graph; needs shapes (run infer_shapes first).

    The first FC becomes a conv whose kernel is the spatial size it sees (7×7 for the
    VGG nets at 224), every later FC a 1×1 conv, its weight the FC weight reshaped
    (flatten order C×H×W; each op's `dense` says what it becomes). Dropout
    goes (the dense twin is for testing) and soft-max becomes the spatial mean of the
    class score map followed by soft-max.
    """
    dense = Graph(**{**g.graph, "passes": [*g.graph["passes"], "densify"], "dense": True})
    last = None
    for n in nodes(g):
        # Analyses are re-run on the new graph: carry over only what they cannot recompute.
        info = meta(g, n)
        for name, operation in op(g, n).dense(n, info.in_shape):
            if name == n:
                node_meta = NodeMeta(info.loc, info.layer, fused=info.fused)
            else:
                node_meta = NodeMeta(info.loc)
            dense.add_node(name, op=operation, meta=node_meta)
            if last is not None:
                dense.add_edge(last, name)
            last = name
    assert output(dense) == last
    return dense
