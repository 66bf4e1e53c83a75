"""What every op answers, with defaults: an op is one class, a word of the notation (if it has
one) and a node of the IR; optional behaviour comes as traits (traits.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import VggspecError
from ...frontend.ast import Layer
from ...frontend.steps import Step

__all__ = ["Modules", "NotInTorchvision", "Op", "ShapeError"]


class ShapeError(Exception):
    """A layer does not fit the shape it is given; the shapes pass locates it in the text."""


class NotInTorchvision(VggspecError):
    """An op that torchvision's VGG has no module for (LRN, global average pooling)."""


@dataclass(frozen=True)
class Modules:
    """Where an op sits in torchvision's VGG: its list (`features` or `classifier`) and how
    many modules of it the op takes (a conv with its ReLU: 2)."""

    section: str
    count: int


@dataclass(frozen=True)
class Op(Layer):
    """An IR operation. The defaults are an element-wise op: shape kept, nothing counted,
    no window, run by torch in the Triton report, no module in torchvision's VGG, and a
    layer that weights files from elsewhere do not have."""

    def describe(self) -> str:
        raise NotImplementedError

    # --- analyses -------------------------------------------------------------------
    def out_shape(self, in_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        """The output shape (the graph's input is given None); a shape that does not fit
        raises ShapeError."""
        return in_shape

    def params_and_macs(self, in_shape, shape) -> tuple[int, int]:
        return 0, 0

    def elementwise(self, in_shape) -> int:
        """Element-wise operations per image that are not MACs (BN), reported apart."""
        return 0

    def mask_elements(self, shape) -> int:
        """Elements of the one-byte mask training keeps per image (dropout's), or 0."""
        return 0

    def window(self, in_shape) -> tuple[tuple, tuple, tuple] | None:
        """(kernel, padding, stride) per axis if the op widens the receptive field."""
        return None

    # --- transforms -----------------------------------------------------------------
    def dense(self, node: str, in_shape) -> list[tuple[str, Op]]:
        """What the node becomes in the fully-convolutional twin: (name, op) in order; `node`
        itself keeps its meta, and its tensors are a view (a reshape) of this op's.
        Default: unchanged."""
        return [(node, self)]

    def notes(self, node: str, in_shape) -> list[str]:
        """What the IR text says of the node besides its figures (a dense FC's weight)."""
        return []

    # --- lowering -------------------------------------------------------------------
    def forward(self, x, run):
        """x through the op; `run` gives `backend`, `weights` (this node's module) and
        `dropout(x)`."""
        raise NotImplementedError(f"no forward for {self.describe()}")

    def launch(self, node: str, in_shape, batch: int, training: bool, input_grad: bool):
        """The Triton launch description, or None: torch runs it (the report says so)."""
        return None

    def torch_reason(self, training: bool) -> str:
        """Why torch runs this op in the Triton backend ("" when it goes without saying)."""
        return ""

    # --- other formats --------------------------------------------------------------
    def torchvision(self) -> Modules | None:
        """Its modules in torchvision's VGG (None: it has none there, like the input);
        NotInTorchvision where torchvision has no such layer."""
        return None

    def steps(self, node: str, in_shape) -> list[Step]:
        """What the op computes as a weights file from elsewhere (Caffe, MatConvNet, Keras)
        writes it, in order (none: the file has nothing for it, like dropout)."""
        why = f"{self.describe()}, which weights files from elsewhere do not have"
        return [Step("unknown", node, why=why)]
