"""The optional behaviour of ops, one small class each: a pass asks `op.trait(Weighted)` and
uses what it gets, as xDSL's Toy asks an op for its shape-inference trait."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar


class GraphInput:
    """Trait: the graph's source, the image batch."""

    def at_size(self, height: int, width: int):
        """The same input fed images of another size."""
        raise NotImplementedError


class Weighted:
    """Trait: the op owns parameters (conv, FC, BN): the net gives its node a module."""

    def tensors(self, in_shape) -> dict[str, tuple[int, ...]]:
        """The parameters it owns (name → shape), in the order they are initialised."""
        raise NotImplementedError

    def buffers(self, in_shape) -> dict[str, tuple[tuple[int, ...], str | None]]:
        """State that is not a parameter (BN's running statistics): name → (shape, dtype),
        dtype None for the net's own."""
        return {}

    def init(self, module, init: str) -> None:
        """Initialise its tensors in `module` (under no_grad), in `tensors` order: the
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


class Epilogue:
    """Trait: the op belongs to the weight layer before it (its ReLU, its BN): a feature cut
    keeps it with that layer, and copying the layer copies it too."""


class Absorbable:
    """Trait: the fuse pass may fold the op into the op before it, which then sets the flag
    `absorbed_as` ("relu", "dropout")."""

    absorbed_as: ClassVar[str]


class Absorbs:
    """Trait: the op can take in its single user, if that is Absorbable by one of the
    flags in `absorbs`, in order (an FC: its ReLU, then its dropout)."""

    absorbs: ClassVar[tuple[str, ...]]

    def absorb(self, user):
        """This op with `user` folded in, or None if it cannot take it."""
        taken = user.trait(Absorbable)
        flag = taken.absorbed_as if taken is not None else None
        if flag not in self.absorbs:
            return None
        earlier = self.absorbs[: self.absorbs.index(flag)]
        if getattr(self, flag) or not all(getattr(self, f) for f in earlier):
            return None
        return replace(self, **{flag: True})


class Folds:
    """Trait: for inference the op folds into the weight layer before it (BN)."""

    def fold_into(self, before):
        """`before` with this op folded in, or None if it cannot take it."""
        raise NotImplementedError

    def folded(self, weight, bias, module):
        """The (weight, bias) of the layer before, with this op's `module` folded in."""
        raise NotImplementedError


class Head:
    """Trait: the op runs after the class scores (Net.predict), not in forward; the last
    one gives the net's task (task.py): what the outputs stand for and how training scores
    them."""

    def task(self):
        """The net's task (default: classification)."""
        from .task import CLASSIFICATION

        return CLASSIFICATION

    def classes(self, outputs: int) -> int | None:
        """How many classes `outputs` outputs stand for: the task's answer."""
        return self.task().classes(outputs)

    def loss(self, scores, target, backend):
        """The training loss of the net's output `scores` against `target`: the task's."""
        return self.task().loss(scores, target, backend)
