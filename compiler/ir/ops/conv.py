"""`conv<k>-<c>`: k×k convolution, stride 1, same padding, c channels, then ReLU."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ...frontend.ast import MAX_CHANNELS, MAX_KERNEL, FillsStage, Loc, check_range
from ...frontend.steps import Step, Unexpressed, describe
from ...frontend.words import match, number, register
from .base import Modules, Op, ShapeError
from .relu import ReLU, relu_steps
from .traits import Absorbs, Weighted


@register
@dataclass(frozen=True)
class Conv(Absorbs, Weighted, FillsStage, Op):
    """`conv<k>-<c>`: k×k convolution, stride 1, same padding, c channels, then ReLU (its own
    node until the fuse pass folds it in and sets `relu`)."""

    kernel: int
    channels: int
    relu: bool = field(default=False, kw_only=True, repr=False)

    word = "conv"
    pattern = r"conv(\d*)-(\d+)"  # conv<k>-<c>; conv-<c> is k = 3
    expected = "conv<k>-<channels>"
    absorbs = ("relu",)

    def __post_init__(self):
        check_range("conv kernel size", self.kernel, 1, MAX_KERNEL)
        if self.kernel % 2 == 0:
            raise ValueError(f"conv kernel size must be odd, got {self.kernel}")
        check_range("conv channels", self.channels, 1, MAX_CHANNELS)

    @classmethod
    def read(cls, token: str, loc: Loc) -> Conv:
        kernel, channels = match(cls.pattern, token)
        k = number(kernel, "kernel size", loc) if kernel else 3
        return cls(k, number(channels, "channel count", loc), loc=loc)

    def text(self) -> str:
        return f"conv{self.kernel}-{self.channels}"

    def build(self, b) -> None:
        index = b.namer.next("conv")
        suffix = f"{b.namer.stage}_{index}"
        b.add(f"conv{suffix}", self)
        b.add(f"relu{suffix}", ReLU())

    @property
    def kernel_hw(self) -> tuple[int, int]:
        """(height, width) of the kernel: the notation's are square."""
        return (self.kernel, self.kernel)

    @property
    def padding(self) -> tuple[int, int]:
        return (self.kernel // 2, self.kernel // 2)

    def describe(self) -> str:
        return conv_text(self.kernel_hw, self.padding, self.channels, self.relu)

    def out_shape(self, in_shape):
        return conv_shape(in_shape, self.kernel_hw, self.padding, self.channels)

    def params_and_macs(self, in_shape, shape):
        return conv_counts(in_shape, shape, self.kernel_hw, self.channels)

    def window(self, in_shape):
        return self.kernel_hw, self.padding, (1, 1)

    def tensors(self, in_shape):
        return {
            "weight": (self.channels, in_shape[0], *self.kernel_hw),
            "bias": (self.channels,),
        }

    def forward(self, x, run):
        w = run.weights
        return run.backend.conv(x, w.weight, w.bias, self.padding, self.relu)

    def launch(self, node, in_shape, batch, training, input_grad):
        kernel, padding, relu = self.kernel_hw, self.padding, self.relu
        return conv_launch(node, in_shape, batch, kernel, padding, self.channels, relu, input_grad)

    def torchvision(self) -> Modules:
        return Modules("features", 1 + self.relu)  # Conv2d, ReLU

    def steps(self, node, in_shape):
        (ph, pw) = self.padding
        pad = (ph, ph, pw, pw)
        conv = Step("conv", node, kernel=self.kernel_hw, pad=pad, outputs=self.channels)
        return [conv, *relu_steps(node, self.relu)]

    @classmethod
    def implied(cls, steps, i):
        step = steps[i]
        if step.kind != "conv":
            return None
        if i + 1 == len(steps) or steps[i + 1].kind != "relu":
            raise Unexpressed("a convolution without a ReLU after it")
        (kh, kw), k = step.kernel, step.kernel[0]
        if kh != kw or k % 2 == 0:
            raise Unexpressed(f"a {kh}×{kw} convolution (the notation's are k×k, k odd)")
        same = (k // 2,) * 4
        plain = step.stride == (1, 1) and step.dilation == (1, 1) and step.groups == 1
        if not plain or step.pad != same:
            raise Unexpressed(f"{describe(step)} (the notation's is stride 1, pad {k // 2})")
        return cls(k, step.outputs), 2  # with its ReLU


# A convolution's arithmetic, shared with the FC layer of a dense twin (a conv over its map).


def conv_text(kernel, padding, channels: int, relu: bool) -> str:
    (kh, kw), (ph, pw) = kernel, padding
    text = f"conv{kh}x{kw}-{channels}"
    if (ph, pw) != (0, 0):
        text += f" pad {ph}" if ph == pw else f" pad {ph},{pw}"
    return text + ("+relu" if relu else "")


def conv_shape(in_shape, kernel, padding, channels: int) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ShapeError("a convolution cannot follow a fully connected layer")
    _, h, w = in_shape
    (kh, kw), (ph, pw) = kernel, padding
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"a {kh}x{kw} kernel does not fit a {h}x{w} input")
    return (channels, oh, ow)


def conv_counts(in_shape, shape, kernel, channels: int) -> tuple[int, int]:
    per_output = kernel[0] * kernel[1] * in_shape[0]
    return (per_output + 1) * channels, per_output * prod(shape)


def conv_launch(node, in_shape, batch, kernel, padding, channels, relu, input_grad):
    from ...kernels.shapes import ConvLaunch

    c, h, w = in_shape
    (kh, kw), (ph, pw) = kernel, padding
    return ConvLaunch(node, batch, c, h, w, channels, kh, kw, ph, pw, relu, input_grad=input_grad)
