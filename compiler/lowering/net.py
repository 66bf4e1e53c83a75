"""lower(graph, backend) → Net, a torch.nn.Module named after the graph's nodes."""

from __future__ import annotations

import torch
from torch import nn

from ..frontend.ast import FullyConnected, Spec
from ..frontend.errors import VggspecError
from ..frontend.printer import format_spec
from ..ir import ops
from ..ir.graph import Graph, meta, nodes, op
from ..ir.pipeline import compile_spec, dense_graph
from .backends import get_backend


class Weights(nn.Module):
    """The parameters of one conv or FC node: `<node>.weight` and `<node>.bias`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)


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
        self.input_size = tuple(meta(graph, nodes(graph)[0])["shape"][1:])
        # What the weights expect of an image; set by training, kept by save/load.
        self.preprocess: dict = {}
        # Set by the trainer for each step: (seed, first row, global batch). Dropout then
        # draws its mask for the whole global batch from the seed and keeps this process's
        # rows, so a sample's mask does not depend on how the batch is split over processes.
        self.batch_rows: tuple[int, int, int] | None = None
        self._body: list[tuple[str, ops.Op]] = []
        self._head: list[ops.Op] = []
        for n in nodes(graph):
            operation = op(graph, n)
            if isinstance(operation, ops.Input):
                continue
            if isinstance(operation, ops.SpatialMean | ops.SoftMax):
                self._head.append(operation)
                continue
            if self._head:
                raise VggspecError(f"{n} follows the soft-max: nothing can run after it")
            self._body.append((n, operation))
            in_shape = meta(graph, n)["in_shape"]
            if isinstance(operation, ops.Conv2d):
                shape = (operation.out_channels, in_shape[0], *operation.kernel)
                self.add_module(n, Weights(torch.empty(shape), torch.empty(shape[0])))
            elif isinstance(operation, ops.Linear):
                fan_in = 1
                for d in in_shape:
                    fan_in *= d
                shape = (operation.out_features, fan_in)
                self.add_module(n, Weights(torch.empty(shape), torch.empty(shape[0])))

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def num_classes(self) -> int:
        """Channels of the class scores: the output width of the last layer."""
        last, _ = self._body[-1]
        return meta(self.graph, last)["shape"][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backend
        if x.dim() == 4 and b.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=b.memory_format)
        for n, operation in self._body:
            if isinstance(operation, ops.Conv2d):
                w = getattr(self, n)
                x = b.conv(x, w.weight, w.bias, operation.padding, operation.relu)
            elif isinstance(operation, ops.Linear):
                w = getattr(self, n)
                if x.dim() > 2:
                    x = x.flatten(1)  # C×H×W order, as the dense twin's reshape assumes
                x = b.linear(x, w.weight, w.bias, operation.relu)
                if operation.dropout:
                    x = self._dropout(x, n)
            elif isinstance(operation, ops.ReLU):
                x = b.relu(x)
            elif isinstance(operation, ops.MaxPool2d):
                x = b.max_pool(x)
            elif isinstance(operation, ops.LocalResponseNorm):
                x = b.lrn(x, operation.size, operation.alpha, operation.beta, operation.k)
            elif isinstance(operation, ops.Dropout):
                x = self._dropout(x, n)
            else:
                raise VggspecError(f"the {b.name} backend cannot run {operation.describe()}")
        return x

    def _dropout(self, x: torch.Tensor, node: str) -> torch.Tensor:
        p = self.dropout
        if self.batch_rows is None or not self.training or p == 0:
            return self.backend.dropout(x, p, self.training)
        seed, first, total = self.batch_rows
        layer = [name for name, _ in self._body].index(node)
        generator = torch.Generator(device=x.device)
        generator.manual_seed((seed + 7919 * layer) % 2**63)
        draws = torch.rand((total, *x.shape[1:]), generator=generator, device=x.device)
        keep = draws[first : first + x.shape[0]] >= p
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
        for module in net.modules():
            if isinstance(module, Weights):
                if init == "gaussian":
                    module.weight.normal_(0.0, 0.01)
                else:
                    nn.init.xavier_uniform_(module.weight)
                module.bias.zero_()
    return net


def with_num_classes(spec: Spec, num_classes: int) -> Spec:
    """The spec with its last FC layer resized to `num_classes` outputs."""
    last = max(
        (i for i, layer in enumerate(spec.layers) if isinstance(layer, FullyConnected)),
        default=None,
    )
    if last is None:
        raise VggspecError("num_classes needs a spec whose last weight layer is an FC layer")
    layers = list(spec.layers)
    layers[last] = FullyConnected(num_classes, layers[last].loc)
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
    dense.preprocess = dict(net.preprocess)
    with torch.no_grad():
        for n in nodes(dense.graph):
            source = meta(dense.graph, n).get("weight_from")
            target = getattr(dense, n, None)
            if not isinstance(target, Weights):
                continue
            original = getattr(net, n)
            weight = original.weight
            if source is not None:
                weight = weight.reshape(source["shape"])  # a view
            target.weight = nn.Parameter(weight)
            target.bias = original.bias
    return dense.train(net.training)
