"""`conv<k>-<c>`: k×k convolution, stride 1, same padding, c channels, then ReLU."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ...frontend.ast import MAX_CHANNELS, MAX_KERNEL, Layer, Loc, check_range
from ...frontend.words import match, number, register
from .base import Op, ShapeError
from .relu import ReLU


@dataclass(frozen=True)
class Conv2d(Op):
    """Stride-1 convolution; `relu` is set when the fuse pass folds the ReLU in."""

    out_channels: int
    kernel: tuple[int, int]
    padding: tuple[int, int]
    relu: bool = False

    absorbs = ("relu",)
    section = "features"
    has_weights = True

    def describe(self) -> str:
        kh, kw = self.kernel
        text = f"conv{kh}x{kw}-{self.out_channels}"
        if self.padding != (0, 0):
            ph, pw = self.padding
            text += f" pad {ph}" if ph == pw else f" pad {ph},{pw}"
        return text + ("+relu" if self.relu else "")

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError("a convolution cannot follow a fully connected layer")
        _, h, w = in_shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        if oh < 1 or ow < 1:
            raise ShapeError(f"a {kh}x{kw} kernel does not fit a {h}x{w} input")
        return (self.out_channels, oh, ow)

    def params_and_macs(self, in_shape, shape):
        kh, kw = self.kernel
        per_output = kh * kw * in_shape[0]
        return (per_output + 1) * self.out_channels, per_output * prod(shape)

    def window(self, in_shape):
        return self.kernel, self.padding, (1, 1)

    def tensors(self, in_shape):
        return {
            "weight": (self.out_channels, in_shape[0], *self.kernel),
            "bias": (self.out_channels,),
        }

    def forward(self, x, run):
        w = run.weights
        return run.backend.conv(x, w.weight, w.bias, self.padding, self.relu)

    def launch(self, node, in_shape, batch, training, input_grad):
        from ...kernels.shapes import ConvLaunch

        c, h, w = in_shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        return ConvLaunch(
            node,
            batch,
            c,
            h,
            w,
            self.out_channels,
            kh,
            kw,
            ph,
            pw,
            self.relu,
            input_grad=input_grad,
        )

    def torchvision_modules(self) -> int:
        return 1 + self.relu  # Conv2d, ReLU


@register
@dataclass(frozen=True)
class Conv(Layer):
    """`conv<k>-<c>`: k×k convolution, stride 1, same padding, c channels, then ReLU."""

    kernel: int
    channels: int
    loc: Loc | None = field(default=None, compare=False, repr=False)

    word = "conv"
    pattern = r"conv(\d*)-(\d+)"  # conv<k>-<c>; conv-<c> is k = 3
    expected = "conv<k>-<channels>"
    fills_stage = True
    normalisable = True

    def __post_init__(self):
        check_range("conv kernel size", self.kernel, 1, MAX_KERNEL)
        if self.kernel % 2 == 0:
            raise ValueError(f"conv kernel size must be odd, got {self.kernel}")
        check_range("conv channels", self.channels, 1, MAX_CHANNELS)

    @classmethod
    def read(cls, token: str, loc: Loc) -> Conv:
        kernel, channels = match(cls.pattern, token)
        k = number(kernel, "kernel size", loc) if kernel else 3
        return cls(k, number(channels, "channel count", loc), loc)

    def text(self) -> str:
        return f"conv{self.kernel}-{self.channels}"

    def build(self, b) -> None:
        index = b.namer.next("conv")
        suffix = f"{b.namer.stage}_{index}"
        pad = self.kernel // 2
        b.add(f"conv{suffix}", Conv2d(self.channels, (self.kernel,) * 2, (pad, pad)))
        b.add(f"relu{suffix}", ReLU())
