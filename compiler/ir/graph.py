"""The graph IR: a networkx.DiGraph whose nodes carry an `op` and a `meta` dict."""

from __future__ import annotations

import networkx as nx

from ..frontend import ast
from ..frontend.errors import SpecError
from . import ops

Graph = nx.DiGraph


def nodes(g: Graph) -> list[str]:
    """Node names in execution order."""
    return list(nx.topological_sort(g))


def op(g: Graph, name: str) -> ops.Op:
    return g.nodes[name]["op"]


def meta(g: Graph, name: str) -> dict:
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
    return sum(1 for n in g.nodes if not isinstance(op(g, n), ops.Input))


class _Namer:
    """Names nodes the way the VGG team's released Caffe models do."""

    def __init__(self, spec: ast.Spec):
        self.stage = 1
        self.conv_index = 0
        self.norms_in_stage = 0
        pools = sum(isinstance(layer, ast.MaxPool) for layer in spec.layers)
        convs_after_last_pool = False
        for layer in spec.layers:
            if isinstance(layer, ast.MaxPool):
                convs_after_last_pool = False
            elif isinstance(layer, ast.Conv):
                convs_after_last_pool = True
        # VGG-16's fc6 follows pool5: FC layers are numbered after the last conv stage.
        self.fc_number = pools + 1 + (1 if convs_after_last_pool else 0)

    def conv(self) -> tuple[str, str]:
        self.conv_index += 1
        suffix = f"{self.stage}_{self.conv_index}"
        return f"conv{suffix}", f"relu{suffix}"

    def norm(self) -> str:
        self.norms_in_stage += 1
        if self.norms_in_stage == 1:
            return f"norm{self.stage}"
        return f"norm{self.stage}_{self.norms_in_stage}"

    def pool(self) -> str:
        name = f"pool{self.stage}"
        self.stage += 1
        self.conv_index = 0
        self.norms_in_stage = 0
        return name

    def fc(self) -> tuple[str, str, str]:
        n = self.fc_number
        self.fc_number += 1
        return f"fc{n}", f"relu{n}", f"drop{n}"


def build_graph(
    spec: ast.Spec, input_size: tuple[int, int] | None = None, name: str = "spec"
) -> Graph:
    """Spec → unfused graph: every conv and hidden FC followed by its own ReLU node."""
    height, width = input_size or (spec.input.height, spec.input.width)
    g = Graph(name=name, spec=spec, description=spec.description, passes=["build"])
    last = "data"
    g.add_node(last, op=ops.Input(spec.input.channels, height, width), meta={"loc": spec.input.loc})

    def add(node: str, operation: ops.Op, layer) -> None:
        nonlocal last
        if node in g:
            raise SpecError(f"two layers would both be named {node!r}", layer.loc)
        g.add_node(node, op=operation, meta={"loc": layer.loc, "layer": layer})
        g.add_edge(last, node)
        last = node

    namer = _Namer(spec)
    fc_count = sum(isinstance(layer, ast.FullyConnected) for layer in spec.layers)
    fc_position = 0
    for layer in spec.layers:
        if isinstance(layer, ast.Conv):
            conv, relu = namer.conv()
            pad = layer.kernel // 2
            add(conv, ops.Conv2d(layer.channels, (layer.kernel,) * 2, (pad, pad)), layer)
            add(relu, ops.ReLU(), layer)
        elif isinstance(layer, ast.MaxPool):
            add(namer.pool(), ops.MaxPool2d(), layer)
        elif isinstance(layer, ast.Lrn):
            add(namer.norm(), ops.LocalResponseNorm(), layer)
        elif isinstance(layer, ast.FullyConnected):
            fc, relu, drop = namer.fc()
            add(fc, ops.Linear(layer.features), layer)
            if fc_position < fc_count - 1:  # ReLU after all but the last FC
                add(relu, ops.ReLU(), layer)
                if fc_position < 2:  # the paper: dropout on the first two FC layers
                    add(drop, ops.Dropout(), layer)
            fc_position += 1
        elif isinstance(layer, ast.SoftMax):
            add("prob", ops.SoftMax(), layer)
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
    inputs = [n for n in g.nodes if isinstance(g.nodes[n].get("op"), ops.Input)]
    if len(inputs) != 1:
        fail(f"expected one input node, found {len(inputs)}")
    for n, data in g.nodes(data=True):
        if not isinstance(data.get("meta"), dict) or "op" not in data:
            fail(f"node {n!r} lacks an op or a meta dict")
        expected_preds = 0 if isinstance(data["op"], ops.Input) else 1
        if g.in_degree(n) != expected_preds:
            fail(f"node {n!r} has {g.in_degree(n)} inputs, expected {expected_preds}")
        shape = data["meta"].get("shape")
        for user in g.successors(n):
            in_shape = g.nodes[user]["meta"].get("in_shape")
            if shape is not None and in_shape is not None and in_shape != shape:
                fail(f"{user!r} expects {in_shape} but {n!r} makes {shape}")
    if len([n for n in g.nodes if g.out_degree(n) == 0]) != 1:
        fail("the graph must have exactly one output")


def format_node(g: Graph, n: str) -> str:
    """One line per node, in the manner of torch.fx's Node.format_node."""
    operation, info = op(g, n), meta(g, n)
    args = ", ".join(f"%{p}" for p in g.predecessors(n))
    text = f"%{n} = {operation.describe()}({args})"
    notes = []
    if "shape" in info:
        notes.append(f"[{', '.join(map(str, info['shape']))}]")
    if info.get("params"):
        notes.append(f"params={info['params']:,}")
    if info.get("macs"):
        notes.append(f"macs={info['macs']:,}")
    if "fused" in info:
        notes.append("fused " + "+".join(info["fused"]))
    if "weight_from" in info:
        source = info["weight_from"]
        notes.append(f"weight = {source['node']}.weight.reshape{tuple(source['shape'])}")
    loc = info.get("loc")
    if loc is not None:
        notes.append(f"@{loc.line}:{loc.column}")
    return text + ("  # " + "  ".join(notes) if notes else "")


def format_graph(g: Graph) -> str:
    header = f"graph {g.graph.get('name', 'spec')} (passes: {', '.join(g.graph['passes'])})"
    return "\n".join([header, *("  " + format_node(g, n) for n in nodes(g))]) + "\n"
