"""fuse: each op absorbs what its single user allows (conv + ReLU, FC + ReLU (+ dropout))."""

from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, meta, nodes, op, users
from ..ops.traits import Absorbs


def fuse(g: Graph) -> Graph:
    """A new graph in which each conv/FC has swallowed the ReLU (and dropout) after it."""
    fused = Graph(**{**g.graph, "passes": [*g.graph["passes"], "fuse"]})
    rename: dict[str, str] = {}  # absorbed node → the node that now stands for it
    for n in nodes(g):
        if n in rename:
            continue
        operation, absorbed, tail = op(g, n), [], n
        # Fuse only along a chain: the absorbed node must be the single user.
        while len(following := users(g, tail)) == 1 and operation.trait(Absorbs):
            bigger = operation.absorb(op(g, following[0]))
            if bigger is None:
                break
            operation, tail = bigger, following[0]
            absorbed.append(tail)
        info = replace(meta(g, n))
        if absorbed:
            info.fused = [n, *absorbed]
            last = meta(g, absorbed[-1]).shape
            info.shape = last if last is not None else info.shape
        fused.add_node(n, op=operation, meta=info)
        for pred in g.predecessors(n):
            fused.add_edge(rename.get(pred, pred), n)
        for a in absorbed:
            rename[a] = n
    return fused
