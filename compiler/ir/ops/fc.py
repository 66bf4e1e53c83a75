"""`FC-<n>`: fully connected, ReLU and dropout after the hidden ones; a conv when dense."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ...frontend.ast import MAX_CHANNELS, Layer, Loc, check_range
from ...frontend.words import match, number, register
from .base import Op
from .conv import Conv2d
from .dropout import Dropout
from .relu import ReLU


@dataclass(frozen=True)
class WeightFrom:
    """A dense twin's conv weight is the FC weight of `node` viewed as `shape`."""

    node: str
    linear_shape: tuple[int, int]
    shape: tuple[int, int, int, int]


@dataclass(frozen=True)
class Linear(Op):
    """Fully connected; `relu` and `dropout` are set when the fuse pass folds them in."""

    out_features: int
    relu: bool = False
    dropout: bool = False

    absorbs = ("relu", "dropout")
    section = "classifier"
    has_weights = True

    @property
    def keeps_mask(self) -> bool:
        return self.dropout

    def describe(self) -> str:
        return (
            f"fc-{self.out_features}"
            + ("+relu" if self.relu else "")
            + ("+dropout" if self.dropout else "")
        )

    def out_shape(self, in_shape):
        return (self.out_features,)

    def params_and_macs(self, in_shape, shape):
        fan_in = prod(in_shape)
        return (fan_in + 1) * self.out_features, fan_in * self.out_features

    def window(self, in_shape):
        # On a C×H×W map it sees all of it, like the H×W conv it becomes when dense.
        if len(in_shape) != 3:
            return None
        return tuple(in_shape[1:]), (0, 0), (1, 1)

    def dense(self, node, in_shape):
        c, kh, kw = in_shape if len(in_shape) == 3 else (in_shape[0], 1, 1)
        n = self.out_features
        source = WeightFrom(node, (n, c * kh * kw), (n, c, kh, kw))
        return [(node, Conv2d(n, (kh, kw), (0, 0), self.relu), {"weight_from": source})]

    def tensors(self, in_shape):
        return {"weight": (self.out_features, prod(in_shape)), "bias": (self.out_features,)}

    def forward(self, x, run):
        w = run.weights
        if x.dim() > 2:
            x = x.flatten(1)  # C×H×W order, as the dense twin's reshape assumes
        x = run.backend.linear(x, w.weight, w.bias, self.relu)
        return run.dropout(x) if self.dropout else x

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import LinearLaunch

        return LinearLaunch(
            node, batch, prod(in_shape), self.out_features, self.relu, input_grad=input_grad
        )

    def torchvision_modules(self) -> int:
        return 1 + self.relu + self.dropout


@register
@dataclass(frozen=True)
class FullyConnected(Layer):
    """`FC-<n>`: fully connected layer with n outputs (ReLU after all but the last)."""

    features: int
    loc: Loc | None = field(default=None, compare=False, repr=False)

    word = "FC"
    pattern = r"fc-(\d+)"
    expected = "FC-<n>"
    normalisable = True

    def __post_init__(self):
        check_range("FC size", self.features, 1, MAX_CHANNELS)

    @classmethod
    def read(cls, token: str, loc: Loc) -> FullyConnected:
        (features,) = match(cls.pattern, token)
        return cls(number(features, "FC size", loc), loc)

    def text(self) -> str:
        return f"FC-{self.features}"

    def resized(self, outputs: int) -> FullyConnected:
        return FullyConnected(outputs, self.loc)

    def build(self, b) -> None:
        n = b.namer.head_number()
        position, count = b.position(self)
        b.add(f"fc{n}", Linear(self.features))
        if position < count - 1:  # ReLU after all but the last FC
            b.add(f"relu{n}", ReLU())
            if position < 2:  # the paper: dropout on the first two FC layers
                b.add(f"drop{n}", Dropout())
