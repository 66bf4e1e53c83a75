"""What every op answers: the notation side (`Layer`) and the IR side (`Op`), with defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ...frontend.ast import Layer

__all__ = ["Layer", "Op", "ShapeError"]


class ShapeError(Exception):
    """A layer does not fit the shape it is given; the shapes pass locates it in the text."""


@dataclass(frozen=True)
class Op:
    """An IR operation. The defaults are an element-wise op: shape kept, nothing counted,
    no weights, no window, run by torch in the Triton report."""

    # Flag this op sets on a weight layer that absorbs it in the fuse pass ("relu").
    fuses_as: ClassVar[str | None] = None
    # Flags this op can absorb from its single user, in order (conv: relu).
    absorbs: ClassVar[tuple[str, ...]] = ()
    # Input: the graph's source. Head: runs after the class scores (Net.predict).
    is_input: ClassVar[bool] = False
    in_head: ClassVar[bool] = False
    # torchvision's VGG: "features" or "classifier", None for ops with no module there.
    section: ClassVar[str | None] = None
    # A weight layer's own activation (ReLU): the feature cut keeps it with its layer.
    part_of_previous: ClassVar[bool] = False
    # Training keeps a one-byte mask per output element (dropout).
    keeps_mask: ClassVar[bool] = False
    # A weight layer: owns `tensors`, counts as conv/FC for init_from and the feature cut.
    has_weights: ClassVar[bool] = False

    def describe(self) -> str:
        raise NotImplementedError

    # --- analyses -------------------------------------------------------------------
    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape; a shape that does not fit raises ShapeError."""
        return in_shape

    def params_and_macs(self, in_shape, shape) -> tuple[int, int]:
        return 0, 0

    def elementwise(self, in_shape) -> int:
        """Element-wise operations per image that are not MACs (BN), reported apart."""
        return 0

    def window(self, in_shape) -> tuple[tuple, tuple, tuple] | None:
        """(kernel, padding, stride) per axis if the op widens the receptive field."""
        return None

    # --- transforms -----------------------------------------------------------------
    def absorb(self, user: Op) -> Op | None:
        """This op with its single user folded in, or None if it cannot take it."""
        flag = user.fuses_as
        if flag not in self.absorbs:
            return None
        earlier = self.absorbs[: self.absorbs.index(flag)]
        if getattr(self, flag) or not all(getattr(self, f) for f in earlier):
            return None
        return replace(self, **{flag: True})

    def fold_into(self, before: Op) -> Op | None:
        """`before` with this op folded into it for inference (BN into its conv/FC), or None."""
        return None

    def dense(self, node: str, in_shape) -> list[tuple[str, Op, dict]]:
        """What the node becomes in the fully-convolutional twin: (name, op, meta) in order;
        `node` itself keeps its meta. Default: unchanged."""
        return [(node, self, {})]

    # --- lowering -------------------------------------------------------------------
    def tensors(self, in_shape) -> dict[str, tuple[int, ...]]:
        """The parameters this op owns (name → shape), in the order they are initialised."""
        return {}

    def buffers(self, in_shape) -> dict[str, tuple[tuple[int, ...], str | None]]:
        """State that is not a parameter (BN's running statistics): name → (shape, dtype),
        dtype None for the net's own."""
        return {}

    def init(self, module, init: str) -> None:
        """Initialise this op's tensors in `module` (under no_grad), in `tensors` order: the
        paper's weights N(0, 0.01²) ("gaussian") or Glorot & Bengio ("glorot", uniform),
        biases zero. Uses torch's global generator."""
        from torch import nn

        for name, tensor in module.named_parameters():
            if name == "bias":
                tensor.zero_()
            elif init == "gaussian":
                tensor.normal_(0.0, 0.01)
            else:
                nn.init.xavier_uniform_(tensor)

    def forward(self, x, run):
        """x through the op; `run` gives `backend`, `weights` (this node's module) and
        `dropout(x)`."""
        raise NotImplementedError(f"no forward for {self.describe()}")

    def classes(self, outputs: int) -> int | None:
        """How many classes a head's `outputs` inputs stand for (None: they are not per
        class). A soft-max head: one class per output."""
        return outputs

    def loss(self, scores, target, backend):
        """The training loss of a head op that ends the net: mean over the batch of its
        loss of `scores` (the net's output) against `target`."""
        raise NotImplementedError(f"{self.describe()} has no training loss")

    def launch(self, node: str, in_shape, batch: int, training: bool, input_grad: bool):
        """The Triton launch description, or None: torch runs it (the report says so)."""
        return None

    def torch_reason(self, training: bool) -> str:
        """Why torch runs this op in the Triton backend ("" when it goes without saying)."""
        return ""

    def torchvision_modules(self) -> int:
        """How many modules the op occupies in its torchvision `section`."""
        return 0

    torchvision_missing: ClassVar[str | None] = None  # why torchvision has no such layer
