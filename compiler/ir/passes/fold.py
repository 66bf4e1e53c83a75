"""fold_norms: BN folded into the conv/FC before it, for inference (running statistics)."""

from __future__ import annotations

from dataclasses import replace

from ..graph import Graph, meta, nodes, op, producer
from ..ops.traits import Folds


def fold_norms(g: Graph) -> Graph:
    """A new graph without BN nodes: each one's producer takes its flags (ReLU, dropout), and
    its meta.fused names the BN whose statistics its weights must be folded with."""
    folded = Graph(**{**g.graph, "passes": [*g.graph["passes"], "fold_norms"]})
    rename: dict[str, str] = {}
    for n in nodes(g):
        before, folds = producer(g, n), op(g, n).trait(Folds)
        bigger = folds.fold_into(op(g, before)) if folds and before is not None else None
        if bigger is not None:
            target = rename.get(before, before)
            info = folded.nodes[target]["meta"]
            info.fused = [*(info.fused or [target]), *(meta(g, n).fused or [n])]
            info.shape = meta(g, n).shape
            folded.nodes[target]["op"] = bigger
            rename[n] = target
            continue
        folded.add_node(n, op=op(g, n), meta=replace(meta(g, n)))
        if before is not None:
            folded.add_edge(rename.get(before, before), n)
    return folded
