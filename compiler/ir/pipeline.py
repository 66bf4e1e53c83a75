"""The compile pipeline: one flat list of named steps with verify() between them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..frontend import ast
from ..frontend.errors import SpecError
from .graph import Graph, build_graph, score_map_size, verify
from .ops.traits import GraphInput

__all__ = [
    "compile_spec",
    "dense_graph",
    "folded_graph",
    "run_steps",
    "score_map_size",
    "with_input_size",
]
from .passes.count import count
from .passes.densify import densify
from .passes.fold import fold_norms
from .passes.fuse import fuse
from .passes.shapes import infer_shapes


def with_input_size(g: Graph, size: tuple[int, int]) -> Graph:
    """A copy of the graph fed images of another size (analyses must be re-run)."""
    new = g.copy()
    new.graph["passes"] = [*g.graph["passes"], f"input {size[0]}x{size[1]}"]
    for _, data in new.nodes(data=True):
        data["meta"] = replace(data["meta"])
        if (source := data["op"].trait(GraphInput)) is not None:
            data["op"] = source.at_size(*size)
    return new


def run_steps(g: Graph, steps: list[tuple[str, Callable[[Graph], Graph]]]) -> Graph:
    for name, step in steps:
        g = step(g)
        if g.graph["passes"][-1:] != [name]:
            g.graph["passes"] = [*g.graph["passes"], name]
        verify(g, after=name)
    return g


def compile_spec(
    spec: ast.Spec,
    input_size: tuple[int, int] | None = None,
    *,
    name: str = "spec",
    batch: int = 1,
    dtype: str = "float32",
    fused: bool = True,
) -> Graph:
    """Spec → checked, measured (and by default fused) graph. Raises SpecError."""

    def counted(g: Graph) -> Graph:
        return count(g, batch, dtype)

    try:
        g = build_graph(spec, input_size, name)
        verify(g, after="build")
        steps = [("infer_shapes", infer_shapes), ("count", counted)]
        if fused:
            steps += [("fuse", fuse), ("infer_shapes", infer_shapes), ("count", counted)]
        return run_steps(g, steps)
    except SpecError as err:  # found late, told against the text it came from
        raise err.with_source(spec.source, spec.filename) from None


def dense_graph(g: Graph, image_size: tuple[int, int] | None = None) -> Graph:
    """The fully-convolutional twin of a compiled graph, measured on `image_size`."""
    totals = g.graph["totals"]

    def counted(d: Graph) -> Graph:
        return count(d, totals.batch, totals.dtype)

    steps = [("densify", densify)]
    if image_size is not None:
        steps.append(
            (f"input {image_size[0]}x{image_size[1]}", lambda d: with_input_size(d, image_size))
        )
    steps += [("infer_shapes", infer_shapes), ("count", counted)]
    spec = g.graph["spec"]
    try:
        return run_steps(g, steps)
    except SpecError as err:
        raise err.with_source(spec.source, spec.filename) from None


def folded_graph(g: Graph) -> Graph:
    """A compiled graph for inference: every BN folded into the conv/FC before it."""
    totals = g.graph["totals"]

    def counted(d: Graph) -> Graph:
        return count(d, totals.batch, totals.dtype)

    return run_steps(
        g, [("fold_norms", fold_norms), ("infer_shapes", infer_shapes), ("count", counted)]
    )
