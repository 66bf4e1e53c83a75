"""lower(graph, backend) → Net, a torch.nn.Module named after the graph's nodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..frontend.ast import Spec
from ..frontend.errors import VggspecError
from ..frontend.printer import format_spec
from ..ir.graph import Graph, meta, nodes, op
from ..ir.ops import Op
from ..ir.pipeline import compile_spec, dense_graph
from .backends import get_backend


class Weights(nn.Module):
    """The parameters of one weight node: `<node>.weight` and `<node>.bias` (the names and
    shapes its op's `tensors` gives)."""

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        for name, tensor in tensors.items():
            setattr(self, name, nn.Parameter(tensor))


@dataclass(frozen=True)
class GlobalBatch:
    """This process holds rows [first_row, first_row + n) of a global batch of `size`; dropout
    draws its masks for the whole global batch from `seed` and keeps this process's rows,
    so that a sample's mask does not depend on how the batch is split over processes."""

    seed: int
    first_row: int
    size: int
    # Batch norm over the global batch (issue 12) will need its cross-process reduction
    # handed in the same way: a field here, read by that op's forward through `run.batch`.


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

    def __init__(self, graph: Graph, backend: str = "auto", dropout: float = 0.5):
        super().__init__()
        self.graph = graph
        self.backend = get_backend(backend)
        self.dropout = dropout
        self.spec: Spec = graph.graph["spec"]
        self.dense = bool(graph.graph.get("dense"))
        self.input_size = tuple(meta(graph, nodes(graph)[0]).shape[1:])
        self._body: list[tuple[str, Op]] = []
        head = False
        for n in nodes(graph):
            operation = op(graph, n)
            if operation.is_input:
                continue
            if operation.in_head:
                head = True
                continue
            if head:
                raise VggspecError(f"{n} follows the soft-max: nothing can run after it")
            self._body.append((n, operation))
            if operation.has_weights:
                shapes = operation.tensors(meta(graph, n).in_shape)
                tensors = {name: torch.empty(shape) for name, shape in shapes.items()}
                self.add_module(n, Weights(**tensors))

    def layers(self) -> list[tuple[str, Op]]:
        """(node, op) of every layer `forward` runs, in order (input and head left out)."""
        return list(self._body)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def num_classes(self) -> int:
        """Channels of the class scores: the output width of the last layer."""
        last, _ = self._body[-1]
        return meta(self.graph, last).shape[0]

    def forward(self, x: torch.Tensor, batch: GlobalBatch | None = None) -> torch.Tensor:
        """Class scores; `batch` places x in a global batch for dropout (None: plain dropout)."""
        b = self.backend
        if x.dim() == 4 and b.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=b.memory_format)
        run = _Run(self, batch)
        for index, (n, operation) in enumerate(self._body):
            run.node, run.index = n, index
            run.weights = getattr(self, n) if operation.has_weights else None
            x = operation.forward(x, run)
        return x

    def _dropout(self, x: torch.Tensor, layer: int, batch: GlobalBatch | None) -> torch.Tensor:
        p = self.dropout
        if batch is None or not self.training or p == 0:
            return self.backend.dropout(x, p, self.training)
        generator = torch.Generator(device=x.device)
        generator.manual_seed((batch.seed + 7919 * layer) % 2**63)
        draws = torch.rand((batch.size, *x.shape[1:]), generator=generator, device=x.device)
        keep = draws[batch.first_row : batch.first_row + x.shape[0]] >= p
        return x * keep.to(x.dtype) / (1 - p)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Soft-max posteriors (N, classes); a dense twin averages its score map first."""
        scores = self(x)
        if scores.dim() == 4:
            scores = self.backend.spatial_mean(scores)
        return self.backend.softmax(scores)

    def loss(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean soft-max cross-entropy of class scores (logits) against labels."""
        return self.backend.cross_entropy(scores, target)

    def spec_text(self) -> str:
        return format_spec(self.spec)

    def extra_repr(self) -> str:
        h, w = self.input_size
        kind = "dense twin, " if self.dense else ""
        return f"{kind}input {h}x{w}, backend {self.backend_name}, dropout {self.dropout}"


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
            if operation.has_weights:
                operation.init(getattr(net, n), init)
    return net


def with_num_classes(spec: Spec, num_classes: int) -> Spec:
    """The spec with its last FC layer resized to `num_classes` outputs."""
    last = max(
        (i for i, layer in enumerate(spec.layers) if layer.resized(num_classes) is not None),
        default=None,
    )
    if last is None:
        raise VggspecError("num_classes needs a spec whose last weight layer is an FC layer")
    layers = list(spec.layers)
    layers[last] = layers[last].resized(num_classes)
    return Spec(tuple(layers), spec.input, spec.description)


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
    is the FC weight viewed as (out, C, kh, kw), flatten order C×H×W. The twin takes
    any image at least the spec's input size and returns the class score map
    (N, classes, h, w); `twin.predict(x)` is the soft-max of its spatial mean.
    """
    if net.dense:
        return net
    dense = Net(dense_graph(net.graph), net.backend_name, net.dropout)
    with torch.no_grad():
        for n in nodes(dense.graph):
            source = meta(dense.graph, n).weight_from
            target = getattr(dense, n, None)
            if not isinstance(target, Weights):
                continue
            original = getattr(net, n)
            weight = original.weight
            if source is not None:
                weight = weight.reshape(source.shape)  # a view
            target.weight = nn.Parameter(weight)
            target.bias = original.bias
    return dense.train(net.training)
