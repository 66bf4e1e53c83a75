"""fuse: conv + ReLU → one node; FC + ReLU (+ dropout) → one node."""

from __future__ import annotations

from dataclasses import replace

from .. import ops
from ..graph import Graph, meta, nodes, op, users


def _absorbable(g: Graph, n: str, kind: type) -> str | None:
    """The single user of n if it is of `kind` (fuse only where n has one user)."""
    following = users(g, n)
    if len(following) == 1 and isinstance(op(g, following[0]), kind):
        return following[0]
    return None


def fuse(g: Graph) -> Graph:
    """A new graph in which each conv/FC has swallowed the ReLU (and dropout) after it."""
    fused = Graph(**{**g.graph, "passes": [*g.graph["passes"], "fuse"]})
    rename: dict[str, str] = {}  # absorbed node → the node that now stands for it
    for n in nodes(g):
        if n in rename:
            continue
        operation, absorbed = op(g, n), []
        if isinstance(operation, ops.Conv2d | ops.Linear) and (relu := _absorbable(g, n, ops.ReLU)):
            absorbed.append(relu)
            operation = replace(operation, relu=True)
            if isinstance(operation, ops.Linear) and (drop := _absorbable(g, relu, ops.Dropout)):
                absorbed.append(drop)
                operation = replace(operation, dropout=True)
        info = dict(meta(g, n))
        if absorbed:
            info["fused"] = [n, *absorbed]
            info["shape"] = meta(g, absorbed[-1]).get("shape", info.get("shape"))
        fused.add_node(n, op=operation, meta=info)
        for pred in g.predecessors(n):
            fused.add_edge(rename.get(pred, pred), n)
        for a in absorbed:
            rename[a] = n
    return fused
