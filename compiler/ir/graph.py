"""The graph IR: a networkx.DiGraph whose nodes carry an `op` and a typed `meta`."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ..frontend import ast
from ..frontend.ast import EndsStage, FillsStage, Layer, Loc
from ..frontend.errors import SpecError
from .ops.base import Op
from .ops.input import Input
from .ops.traits import GraphInput, Head

Graph = nx.DiGraph


@dataclass
class NodeMeta:
    """What the build and the passes know of a node (what its op is lives in the op). Build:
    loc, layer; infer_shapes: in_shape, shape; count: params … out_bytes (rf, jump and start
    per axis, in input pixels); fuse and fold_norms: the nodes it stands for."""

    loc: Loc | None = None
    layer: Layer | None = None
    in_shape: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    params: int = 0
    macs: int = 0
    flops: int = 0
    rf: tuple[int, int] | None = None
    jump: tuple[int, int] | None = None
    start: tuple[float, float] | None = None
    out_bytes: int = 0
    fused: list[str] | None = None


@dataclass(frozen=True)
class Totals:
    """The count pass's whole-graph figures (see passes/count.py for the conventions)."""

    params: int
    macs: int
    flops: int
    forward_bytes: int
    training_bytes: int
    param_bytes: int
    batch: int
    dtype: str
    # BN: running statistics (elements and bytes, in param_bytes too) and element-wise ops.
    buffers: int = 0
    buffer_bytes: int = 0
    elementwise: int = 0


def nodes(g: Graph) -> list[str]:
    """Node names in execution order."""
    return list(nx.topological_sort(g))


def op(g: Graph, name: str) -> Op:
    return g.nodes[name]["op"]


def meta(g: Graph, name: str) -> NodeMeta:
    return g.nodes[name]["meta"]


def users(g: Graph, name: str) -> list[str]:
    return list(g.successors(name))


def producer(g: Graph, name: str) -> str | None:
    preds = list(g.predecessors(name))
    return preds[0] if preds else None


def output(g: Graph) -> str:
    """The single node nothing consumes."""
    (last,) = [n for n in g.nodes if g.out_degree(n) == 0]
    return last


def launch_count(g: Graph) -> int:
    """How many kernels a forward pass launches: one per node but the input."""
    return sum(1 for n in g.nodes if producer(g, n) is not None)


def score_map_size(g: Graph) -> tuple[int, int] | None:
    """Spatial size of the class score map of a dense graph (before its spatial mean)."""
    for n in g.nodes:
        in_shape = meta(g, n).in_shape
        if op(g, n).trait(Head) and len(in_shape) == 3:  # the spatial mean's input
            return tuple(in_shape[1:])
    return None


class Namer:
    """Names nodes the way the VGG team's released Caffe models do (conv1_1, pool1, norm1,
    fc6, prob): a stage number, counters that restart with each stage, and the head's
    numbers, which follow the last conv stage (VGG-16's fc6 follows pool5)."""

    def __init__(self, spec: ast.Spec):
        self.stage = 1
        self._counts: dict[str, int] = {}
        stages = sum(layer.trait(EndsStage) is not None for layer in spec.layers)
        filled_after_last = False
        for layer in spec.layers:
            if layer.trait(EndsStage):
                filled_after_last = False
            elif layer.trait(FillsStage):
                filled_after_last = True
        self._head = stages + 1 + (1 if filled_after_last else 0)

    def next(self, kind: str) -> int:
        """1, 2, … for each `kind` of layer within the current stage."""
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return self._counts[kind]

    def last(self, kind: str) -> int:
        """The current count of `kind` in this stage (0 if none yet)."""
        return self._counts.get(kind, 0)

    def head_number(self) -> int:
        """The next number of the classifier head (fc6, fc7, …)."""
        self._head += 1
        return self._head - 1

    def end_stage(self) -> None:
        self.stage += 1
        self._counts = {}


class Builder:
    """What a Layer's `build` is given: `add(name, op)` appends a node after the last one."""

    def __init__(self, g: Graph, spec: ast.Spec, last: str):
        self.g, self.last, self.namer = g, last, Namer(spec)
        self._layers = spec.layers
        self._index = 0
        self._nodes: list[list[str]] = []  # the nodes each layer added, by layer index

    def position(self, layer) -> tuple[int, int]:
        """(index among the spec's layers of the same kind, how many there are)."""
        same = [type(other) is type(layer) for other in self._layers]
        return sum(same[: self._index]), sum(same)

    def add(self, node: str, operation: Op) -> None:
        layer = self._layers[self._index]
        if node in self.g:
            raise SpecError(f"two layers would both be named {node!r}", layer.loc)
        self.g.add_node(node, op=operation, meta=NodeMeta(layer.loc, layer))
        self.g.add_edge(self.last, node)
        self.last = node
        self._nodes[self._index].append(node)

    def previous_layer_nodes(self) -> list[str]:
        """The nodes the layer before the current one added (its weight node first)."""
        return list(self._nodes[self._index - 1])

    def insert_after(self, before: str, node: str, operation: Op) -> None:
        """Put a node of the current layer right after `before` (BN between conv and ReLU)."""
        layer = self._layers[self._index]
        if node in self.g:
            raise SpecError(f"two layers would both be named {node!r}", layer.loc)
        following = list(self.g.successors(before))
        self.g.add_node(node, op=operation, meta=NodeMeta(layer.loc, layer))
        for after in following:
            self.g.remove_edge(before, after)
            self.g.add_edge(node, after)
        self.g.add_edge(before, node)
        if self.last == before:
            self.last = node
        self._nodes[self._index].append(node)

    def build(self, index: int) -> None:
        self._index = index
        self._nodes.append([])
        layer = self._layers[index]
        layer.build(self)
        if layer.trait(EndsStage):
            self.namer.end_stage()


def build_graph(
    spec: ast.Spec, input_size: tuple[int, int] | None = None, name: str = "spec"
) -> Graph:
    """Spec → unfused graph: every conv and hidden FC followed by its own ReLU node."""
    height, width = input_size or (spec.input.height, spec.input.width)
    g = Graph(name=name, spec=spec, description=spec.description, passes=["build"])
    g.add_node("data", op=Input(spec.input.channels, height, width), meta=NodeMeta(spec.input.loc))
    builder = Builder(g, spec, "data")
    for index in range(len(spec.layers)):
        builder.build(index)
    return g


class IRError(Exception):
    """The IR broke an invariant: a bug in a pass, not a user's mistake."""


def verify(g: Graph, after: str = "") -> None:
    """Check the invariants every pass must keep; name the pass that broke them."""
    where = f" after {after}" if after else ""

    def fail(message: str):
        raise IRError(f"invalid IR{where}: {message}")

    if not nx.is_directed_acyclic_graph(g):
        fail("the graph has a cycle")
    if g.number_of_nodes() and not nx.is_weakly_connected(g):
        fail("the graph is not connected")
    inputs = [n for n, data in g.nodes(data=True) if _is_input(data.get("op"))]
    if len(inputs) != 1:
        fail(f"expected one input node, found {len(inputs)}")
    for n, data in g.nodes(data=True):
        if not isinstance(data.get("meta"), NodeMeta) or "op" not in data:
            fail(f"node {n!r} lacks an op or its meta")
        expected_preds = 0 if _is_input(data["op"]) else 1
        if g.in_degree(n) != expected_preds:
            fail(f"node {n!r} has {g.in_degree(n)} inputs, expected {expected_preds}")
        shape = data["meta"].shape
        for user in g.successors(n):
            in_shape = g.nodes[user]["meta"].in_shape
            if shape is not None and in_shape is not None and in_shape != shape:
                fail(f"{user!r} expects {in_shape} but {n!r} makes {shape}")
    if len([n for n in g.nodes if g.out_degree(n) == 0]) != 1:
        fail("the graph must have exactly one output")


def _is_input(operation: Op | None) -> bool:
    return operation is not None and operation.trait(GraphInput) is not None


def format_node(g: Graph, n: str) -> str:
    """One line per node, in the manner of torch.fx's Node.format_node."""
    operation, info = op(g, n), meta(g, n)
    args = ", ".join(f"%{p}" for p in g.predecessors(n))
    text = f"%{n} = {operation.describe()}({args})"
    notes = []
    if info.shape is not None:
        notes.append(f"[{', '.join(map(str, info.shape))}]")
    if info.params:
        notes.append(f"params={info.params:,}")
    if info.macs:
        notes.append(f"macs={info.macs:,}")
    if info.fused is not None:
        notes.append("fused " + "+".join(info.fused))
    notes += operation.notes(n, info.in_shape)
    loc = info.loc
    if loc is not None:
        notes.append(f"@{loc.line}:{loc.column}")
    return text + ("  # " + "  ".join(notes) if notes else "")


def format_graph(g: Graph) -> str:
    header = f"graph {g.graph.get('name', 'spec')} (passes: {', '.join(g.graph['passes'])})"
    return "\n".join([header, *("  " + format_node(g, n) for n in nodes(g))]) + "\n"
