"""`FC-<n>`: fully connected, ReLU and dropout after the hidden ones; a conv when dense."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod

from ...frontend.ast import MAX_CHANNELS, Loc, check_range
from ...frontend.steps import Step
from ...frontend.words import match, number, register
from .base import Modules, Op
from .conv import conv_counts, conv_launch, conv_shape, conv_text
from .dropout import Dropout
from .relu import ReLU, relu_steps
from .traits import Absorbs, Weighted


@register
@dataclass(frozen=True)
class FullyConnected(Absorbs, Weighted, Op):
    """`FC-<n>`: fully connected layer with n outputs (ReLU after all but the last); `relu`
    and `dropout` are set when the fuse pass folds them in. In the dense twin it is a
    convolution over a `dense_kernel` window of its input map (the first FC over the whole
    map it saw, 7×7 for the VGG nets; the others 1×1), its weight the FC's viewed as
    (n, C, kh, kw): flatten order C×H×W."""

    features: int
    relu: bool = field(default=False, kw_only=True, repr=False)
    dropout: bool = field(default=False, kw_only=True, repr=False)
    dense_kernel: tuple[int, int] | None = field(default=None, kw_only=True, repr=False)

    word = "FC"
    pattern = r"fc-(\d+)"
    expected = "FC-<n>"
    absorbs = ("relu", "dropout")

    def __post_init__(self):
        check_range("FC size", self.features, 1, MAX_CHANNELS)

    @classmethod
    def read(cls, token: str, loc: Loc) -> FullyConnected:
        (features,) = match(cls.pattern, token)
        return cls(number(features, "FC size", loc), loc=loc)

    def text(self) -> str:
        return f"FC-{self.features}"

    def resized(self, outputs: int) -> FullyConnected:
        return FullyConnected(outputs, loc=self.loc)

    def build(self, b) -> None:
        n = b.namer.head_number()
        position, count = b.position(self)
        b.add(f"fc{n}", self)
        if position < count - 1:  # ReLU after all but the last FC
            b.add(f"relu{n}", ReLU())
            if position < 2:  # the paper: dropout on the first two FC layers
                b.add(f"drop{n}", Dropout())

    def describe(self) -> str:
        if self.dense_kernel is not None:
            return conv_text(self.dense_kernel, (0, 0), self.features, self.relu)
        relu, dropout = "+relu" if self.relu else "", "+dropout" if self.dropout else ""
        return f"fc-{self.features}{relu}{dropout}"

    def notes(self, node: str, in_shape) -> list[str]:
        if self.dense_kernel is None:
            return []
        return [f"weight = {node}.weight.reshape{self.tensors(in_shape)['weight']}"]

    def out_shape(self, in_shape):
        if self.dense_kernel is not None:
            return conv_shape(in_shape, self.dense_kernel, (0, 0), self.features)
        return (self.features,)

    def params_and_macs(self, in_shape, shape):
        if self.dense_kernel is not None:
            return conv_counts(in_shape, shape, self.dense_kernel, self.features)
        fan_in = prod(in_shape)
        return (fan_in + 1) * self.features, fan_in * self.features

    def mask_elements(self, shape) -> int:
        return prod(shape) if self.dropout else 0

    def window(self, in_shape):
        # On a C×H×W map it sees all of it, like the H×W conv it becomes when dense.
        if self.dense_kernel is not None:
            return self.dense_kernel, (0, 0), (1, 1)
        if len(in_shape) != 3:
            return None
        return tuple(in_shape[1:]), (0, 0), (1, 1)

    def dense(self, node, in_shape):
        kernel = tuple(in_shape[1:]) if len(in_shape) == 3 else (1, 1)
        return [(node, replace(self, dense_kernel=kernel, dropout=False))]

    def tensors(self, in_shape):
        if self.dense_kernel is not None:
            weight = (self.features, in_shape[0], *self.dense_kernel)
        else:
            weight = (self.features, prod(in_shape))
        return {"weight": weight, "bias": (self.features,)}

    def forward(self, x, run):
        w = run.weights
        if self.dense_kernel is not None:
            return run.backend.conv(x, w.weight, w.bias, (0, 0), self.relu)
        if x.dim() > 2:
            x = x.flatten(1)  # C×H×W order, as the dense twin's reshape assumes
        x = run.backend.linear(x, w.weight, w.bias, self.relu)
        return run.dropout(x) if self.dropout else x

    def launch(self, node, in_shape, batch, training, input_grad):
        if self.dense_kernel is not None:
            kernel, n, relu = self.dense_kernel, self.features, self.relu
            return conv_launch(node, in_shape, batch, kernel, (0, 0), n, relu, input_grad)
        from ...kernels.shapes import LinearLaunch

        return LinearLaunch(
            node, batch, prod(in_shape), self.features, self.relu, input_grad=input_grad
        )

    def torchvision(self) -> Modules:
        return Modules("classifier", 1 + self.relu + self.dropout)

    def steps(self, node, in_shape):
        # The map the FC sees: a file that writes FC layers as convs has this kernel (fc6: 7×7).
        kernel = tuple(in_shape[1:]) if len(in_shape) == 3 else (1, 1)
        fc = Step("fc", node, kernel=kernel, outputs=self.features)
        return [fc, *relu_steps(node, self.relu)]

    @classmethod
    def implied(cls, steps, i):
        if steps[i].kind != "fc":
            return None
        followed_by_relu = i + 1 < len(steps) and steps[i + 1].kind == "relu"
        # whether it may have one, the comparison with the file tells
        return cls(steps[i].outputs), 1 + followed_by_relu
