"""lower(graph, backend) → Net, a torch.nn.Module named after the graph's nodes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import VggspecError
from ..frontend.ast import Spec
from ..frontend.printer import format_spec
from ..ir.graph import Graph, meta, nodes, op
from ..ir.ops.base import Op
from ..ir.ops.softmax import SoftMax
from ..ir.ops.task import Task
from ..ir.ops.traits import Folds, GraphInput, Head, Weighted
from ..ir.pipeline import compile_spec, dense_graph, folded_graph
from .backends import get_backend

# The head of a spec written without one (no soft-max): predicted and trained as if it
# ended in soft-max, as the paper's nets all do.
DEFAULT_HEAD = ("prob", SoftMax())


class Weights(nn.Module):
    """The parameters of one weight node: `<node>.weight` and `<node>.bias` (the names and
    shapes its op's `tensors` gives), and its buffers (BN's running statistics)."""

    def __init__(self, buffers: dict[str, torch.Tensor] | None = None, **tensors: torch.Tensor):
        super().__init__()
        for name, tensor in tensors.items():
            setattr(self, name, nn.Parameter(tensor))
        for name, tensor in (buffers or {}).items():
            self.register_buffer(name, tensor)

    def share(self, source: Weights) -> None:
        """Make this module's parameters and buffers those of `source` (no copy)."""
        for name, tensor in source.named_parameters(recurse=False):
            setattr(self, name, tensor)
        for name, tensor in source.named_buffers(recurse=False):
            self._buffers[name] = tensor


def _empty_buffers(weighted: Weighted, in_shape) -> dict[str, torch.Tensor]:
    return {
        name: torch.zeros(shape, dtype=getattr(torch, dtype) if dtype else None)
        for name, (shape, dtype) in weighted.buffers(in_shape).items()
    }


@dataclass(frozen=True)
class GlobalBatch:
    """This process holds rows [first_row, first_row + n) of a global batch of `size`; dropout
    draws its masks for the whole global batch from `seed` and keeps this process's rows,
    and BN sums its statistics over all processes, so that a sample's mask and its
    normalisation do not depend on how the batch is split over processes."""

    seed: int
    first_row: int
    size: int
    # Sums a tensor over the processes, differentiably (torch.distributed.nn's all_reduce):
    # BN takes its training statistics over the global batch with it. None: one process.
    sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None


class _Run:
    """What an op's `forward` is handed: the backend, its node's weights, and dropout."""

    def __init__(self, net: Net, batch: GlobalBatch | None):
        self.net, self.batch, self.backend = net, batch, net.backend
        self.node, self.index, self.weights = "", 0, None

    def dropout(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._dropout(x, self.index, self.batch)


class Net(nn.Module):
    """A compiled network. `net(x)` gives class scores (logits); `net.predict(x)` the
    soft-max posteriors. A dense twin (see `densify`) gives the class score map, and
    its `predict` averages the map spatially before the soft-max."""

    def __init__(self, graph: Graph, backend="auto", dropout: float = 0.5):
        """`backend`: a name (see backends.resolve) or a backend instance, which twins
        (dense, folded, cut) share."""
        super().__init__()
        self.graph = graph
        self.backend = get_backend(backend)
        self.dropout = dropout
        self.spec: Spec = graph.graph["spec"]
        self.dense = bool(graph.graph.get("dense"))
        self.input_size = tuple(meta(graph, nodes(graph)[0]).shape[1:])
        self._body: list[tuple[str, Op]] = []
        self._head: list[tuple[str, Op]] = []
        for n in nodes(graph):
            operation = op(graph, n)
            if operation.trait(GraphInput):
                continue
            if operation.trait(Head):
                self._head.append((n, operation))
                continue
            if self._head:
                raise VggspecError(f"{n} follows the soft-max: nothing can run after it")
            self._body.append((n, operation))
            if (weighted := operation.trait(Weighted)) is not None:
                in_shape = meta(graph, n).in_shape
                shapes = weighted.tensors(in_shape)
                tensors = {name: torch.empty(shape) for name, shape in shapes.items()}
                self.add_module(n, Weights(_empty_buffers(weighted, in_shape), **tensors))

    def layers(self) -> list[tuple[str, Op]]:
        """(node, op) of every layer `forward` runs, in order (input and head left out)."""
        return list(self._body)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def outputs(self) -> int:
        """Channels of the net's output: the width of its last layer."""
        last, _ = self._body[-1]
        return meta(self.graph, last).shape[0]

    @property
    def num_classes(self) -> int | None:
        """The classes the outputs stand for, as the head says: one per output before
        soft-max, one per 4 outputs of a per-class box head, None for one box (SCR)."""
        _, last = self.head()[-1]
        return last.classes(self.outputs)

    def forward(self, x: torch.Tensor, batch: GlobalBatch | None = None) -> torch.Tensor:
        """Class scores; `batch` places x in a global batch for dropout (None: plain dropout)."""
        b = self.backend
        if x.dim() == 4 and b.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=b.memory_format)
        ((_, scores),) = deque(self._steps(x, batch, len(self._body)), maxlen=1)
        return scores

    def _steps(self, x: torch.Tensor, batch: GlobalBatch | None, stop: int):
        """(node, output) of the first `stop` layers, in order."""
        run = _Run(self, batch)
        for index, (n, operation) in enumerate(self._body[:stop]):
            run.node, run.index = n, index
            run.weights = self._modules.get(n)  # None: an op without weights
            x = operation.forward(x, run)
            yield n, x

    def layer_names(self) -> list[str]:
        """What each layer's output is called: its node, or the last node folded into it
        (a folded conv gives its BN's output, bn3_3)."""
        return [(meta(self.graph, n).fused or [n])[-1] for n, _ in self._body]

    def known_layers(self, names) -> list[str]:
        """`layer_names()`, once every name of `names` is found among them; else an error
        listing them, or saying where a name was folded (conv1_1 into bn1_1)."""
        known = self.layer_names()
        unknown = [name for name in names if name not in known]
        chains = {
            name: chain
            for n, _ in self._body
            for chain in [meta(self.graph, n).fused or [n]]
            for name in chain[:-1]
        }
        for name in unknown:
            if name in chains:  # `compile --no-fuse` lists it: say why it has no output here
                chain = chains[name]
                raise VggspecError(
                    f"{name} is folded into {chain[-1]} in this net ({' + '.join(chain)}, one "
                    f"layer for inference): its own output is not computed; take {chain[-1]}"
                )
        if unknown:
            raise _unknown_layers(unknown, known)
        return known

    def activations(self, x: torch.Tensor, names) -> dict[str, torch.Tensor]:
        """The outputs of the named layers (see `layer_names`) from one forward pass that
        stops after the last one asked for."""
        known = self.known_layers(names)
        if not names:
            return {}
        wanted = {known.index(name): name for name in names}
        found = {}
        b = self.backend
        if x.dim() == 4 and b.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=b.memory_format)
        for index, (_, y) in enumerate(self._steps(x, None, max(wanted) + 1)):
            if index in wanted:
                found[wanted[index]] = y
        return {name: found[name] for name in names}

    def _dropout(self, x: torch.Tensor, layer: int, batch: GlobalBatch | None) -> torch.Tensor:
        p = self.dropout
        if batch is None or not self.training or p == 0:
            return self.backend.dropout(x, p, self.training)
        generator = torch.Generator(device=x.device)
        generator.manual_seed((batch.seed + 7919 * layer) % 2**63)
        draws = torch.rand((batch.size, *x.shape[1:]), generator=generator, device=x.device)
        keep = draws[batch.first_row : batch.first_row + x.shape[0]] >= p
        return x * keep.to(x.dtype) / (1 - p)

    def head(self) -> list[tuple[str, Op]]:
        """(node, op) of the head `predict` runs after the class scores, in order: the
        spec's (soft-max; a dense twin's spatial mean, then soft-max), or DEFAULT_HEAD."""
        return list(self._head) or [DEFAULT_HEAD]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output for the class scores of x: soft-max posteriors (N, classes);
        a dense twin averages its score map first."""
        return self.head_output(self(x))

    def head_output(self, scores: torch.Tensor) -> torch.Tensor:
        """What `predict` makes of class scores (or a score map) computed elsewhere: the head
        run over them (an inference engine computes the scores; the head stays the net's)."""
        run = _Run(self, None)
        for n, operation in self.head():
            run.node = n
            scores = operation.forward(scores, run)
        return scores

    def loss(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of class scores (logits) against labels, as the head's last op
        defines it (soft-max: mean cross-entropy)."""
        _, last = self.head()[-1]
        return last.loss(scores, target, self.backend)

    def spec_text(self) -> str:
        return format_spec(self.spec)

    def extra_repr(self) -> str:
        h, w = self.input_size
        kind = "dense twin, " if self.dense else ""
        return f"{kind}input {h}x{w}, backend {self.backend_name}, dropout {self.dropout}"


def _unknown_layers(unknown: list[str], known: list[str]) -> VggspecError:
    return VggspecError(
        f"no layer named {', '.join(map(repr, unknown))}; the layers are: {', '.join(known)}"
    )


def lower(graph: Graph, backend: str = "auto", dropout: float = 0.5) -> Net:
    """A module for a compiled graph; weights are uninitialised (see `init_weights`)."""
    return Net(graph, backend, dropout)


def init_weights(net: Net, init: str = "gaussian") -> Net:
    """The paper's initialisation: weights N(0, 0.01²) ("gaussian") or Glorot & Bengio
    ("glorot", uniform); biases zero. Uses torch's global generator (seed it)."""
    if init not in ("gaussian", "glorot"):
        raise VggspecError(f"unknown init {init!r}: choose gaussian or glorot")
    with torch.no_grad():
        for n, operation in net.layers():
            if (weighted := operation.trait(Weighted)) is not None:
                weighted.init(getattr(net, n), init)
    return net


def classifier_index(spec: Spec) -> int | None:
    """Where the spec's class scores come from: its last layer that can be resized (its
    last FC layer; `Layer.resized`), or None when it has none."""
    return max(
        (i for i, layer in enumerate(spec.layers) if layer.resized(1) is not None),
        default=None,
    )


def head_task(spec: Spec) -> Task:
    """The spec's task, as its last op gives it (soft-max: classification, box: box
    regression); a spec without a head is classified, as if it ended in soft-max."""
    return (spec.layers[-1].trait(Head) or DEFAULT_HEAD[1]).task()


def with_num_classes(spec: Spec, num_classes: int) -> Spec:
    """The spec with its last FC layer resized for `num_classes` classes: to `num_classes`
    outputs before soft-max; a box head keeps FC-4, or 4 × `num_classes` per class."""
    last = classifier_index(spec)
    if last is None:
        raise VggspecError("num_classes needs a spec whose last weight layer is an FC layer")
    return with_outputs(spec, head_task(spec).width(spec.layers[last], num_classes))


def with_outputs(spec: Spec, outputs: int) -> Spec:
    """The spec with its last FC layer resized to `outputs` outputs (whatever its head)."""
    last = classifier_index(spec)
    if last is None:
        raise VggspecError("resizing needs a spec whose last weight layer is an FC layer")
    layers = list(spec.layers)
    layers[last] = layers[last].resized(outputs)
    return Spec(tuple(layers), spec.input, spec.description)


def check_num_classes(spec: Spec, num_classes: int) -> None:
    """Raise VggspecError when the spec's head cannot be trained on `num_classes` classes
    as written (a box head's width is 4 or 4 × classes)."""
    last = classifier_index(spec)
    if last is not None and (why := head_task(spec).misfit(spec.layers[last], num_classes)):
        raise VggspecError(why)


def build(
    spec: Spec,
    backend: str = "auto",
    num_classes: int | None = None,
    init: str = "gaussian",
    dropout: float = 0.5,
    name: str = "spec",
) -> Net:
    """Spec → initialised Net (compile at the spec's input size, lower, initialise)."""
    if num_classes is not None:
        spec = with_num_classes(spec, num_classes)
    return init_weights(lower(compile_spec(spec, name=name), backend, dropout), init)


def densify(net: Net) -> Net:
    """The fully-convolutional twin of `net`, sharing its weights (no copy).

    The first FC layer becomes a k×k conv, k being the spatial size it saw at the
    spec's input size (7×7 for the VGG nets), the others 1×1 convs: each conv weight
    is the FC weight viewed as (out, C, kh, kw), flatten order C×H×W (each op's `dense`
    gives its twin's tensors, a view of its own). The twin takes
    any image at least the spec's input size and returns the class score map
    (N, classes, h, w); `twin.predict(x)` is the soft-max of its spatial mean.
    """
    if net.dense:
        return net
    dense = Net(dense_graph(net.graph), net.backend, net.dropout)
    with torch.no_grad():
        for n in nodes(dense.graph):
            target = getattr(dense, n, None)
            if not isinstance(target, Weights):
                continue
            original = getattr(net, n)
            weight = original.weight
            if weight.shape != target.weight.shape:
                weight = weight.reshape(target.weight.shape)  # a view
            target.share(original)
            target.weight = nn.Parameter(weight)
    return dense.train(net.training)


def fold_batch_norm(net: Net) -> Net:
    """An inference copy of `net` with every BN folded into the conv/FC before it (its
    running statistics and affine parameters become that layer's weight and bias): the
    same outputs as `net.eval()`, with no BN left to run. A net without BN comes back as
    it is; a dense twin is folded as well (densify of the folded net gives the same)."""
    graph = folded_graph(net.graph)
    if graph.number_of_nodes() == net.graph.number_of_nodes():
        return net  # nothing to fold (no BN, or folded already)
    folded = Net(graph, net.backend, net.dropout)
    with torch.no_grad():
        for n, operation in folded.layers():
            if operation.trait(Weighted) is None:
                continue
            source, target = getattr(net, n), getattr(folded, n)
            weight, bias = source.weight, source.bias
            for taken in (meta(graph, n).fused or [])[1:]:  # its BN, where it had one
                if taken in net.graph and (norm := op(net.graph, taken).trait(Folds)):
                    weight, bias = norm.folded(weight, bias, getattr(net, taken))
            target.weight.copy_(weight)
            target.bias.copy_(bias)
    return folded.eval()


def named_twin(net: Net) -> Net:
    """A twin of `net` with one layer per node of its spec (nothing fused, so relu3_3 is a
    layer of its own), sharing its weights; folded and dense as `net` is."""
    graph = compile_spec(
        net.spec, net.input_size, name=net.graph.graph.get("name", "spec"), fused=False
    )
    if "fold_norms" in net.graph.graph["passes"]:
        graph = folded_graph(graph)
    if net.dense:
        graph = dense_graph(graph)
    twin = Net(graph, net.backend, net.dropout)
    for name, module in twin.named_children():
        module.share(getattr(net, name))
    return twin.train(net.training)


def features(net: Net, x: torch.Tensor, names) -> dict[str, torch.Tensor]:
    """The activations of the named layers (conv1_1, bn1_1, relu1_1, pool1, fc6, relu6 …,
    as `vggspec compile --no-fuse` names them) from one forward pass of `net` that stops
    after the last one asked for; an unknown name is an error listing the names."""
    return named_twin(net).activations(x, list(names))


def cut(net: Net, name: str) -> Net:
    """The named twin of `net` ending at layer `name` (its output is that layer's), sharing
    the weights."""
    twin = named_twin(net)
    known = twin.known_layers([name])
    order = nodes(twin.graph)
    end = order.index(twin.layers()[known.index(name)][0]) + 1
    head = Net(twin.graph.subgraph(order[:end]).copy(), twin.backend, twin.dropout)
    for child, module in head.named_children():
        module.share(getattr(twin, child))
    return head.train(net.training)
