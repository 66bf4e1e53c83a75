"""The IR's operations: frozen dataclasses holding what the spec fixes, not shapes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Input:
    channels: int
    height: int
    width: int

    def describe(self) -> str:
        return f"input {self.height}x{self.width}x{self.channels}"


@dataclass(frozen=True)
class Conv2d:
    """Stride-1 convolution; `relu` is set when the fuse pass folds the ReLU in."""

    out_channels: int
    kernel: tuple[int, int]
    padding: tuple[int, int]
    relu: bool = False

    def describe(self) -> str:
        kh, kw = self.kernel
        text = f"conv{kh}x{kw}-{self.out_channels}"
        if self.padding != (0, 0):
            ph, pw = self.padding
            text += f" pad {ph}" if ph == pw else f" pad {ph},{pw}"
        return text + ("+relu" if self.relu else "")


@dataclass(frozen=True)
class ReLU:
    def describe(self) -> str:
        return "relu"


@dataclass(frozen=True)
class MaxPool2d:
    kernel: int = 2
    stride: int = 2

    def describe(self) -> str:
        return f"maxpool{self.kernel}/{self.stride}"


@dataclass(frozen=True)
class LocalResponseNorm:
    """AlexNet's LRN with the paper's (and Caffe's) constants."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0

    def describe(self) -> str:
        return f"lrn size {self.size}"


@dataclass(frozen=True)
class Linear:
    """Fully connected; `relu` and `dropout` are set when the fuse pass folds them in."""

    out_features: int
    relu: bool = False
    dropout: bool = False

    def describe(self) -> str:
        return (
            f"fc-{self.out_features}"
            + ("+relu" if self.relu else "")
            + ("+dropout" if self.dropout else "")
        )


@dataclass(frozen=True)
class Dropout:
    """Dropout in training; its ratio is a run setting, not part of the network."""

    def describe(self) -> str:
        return "dropout"


@dataclass(frozen=True)
class SpatialMean:
    """Average of the class score map over its spatial positions (dense evaluation)."""

    def describe(self) -> str:
        return "spatial-mean"


@dataclass(frozen=True)
class SoftMax:
    def describe(self) -> str:
        return "soft-max"


Op = (
    Input | Conv2d | ReLU | MaxPool2d | LocalResponseNorm | Linear | Dropout | SpatialMean | SoftMax
)
