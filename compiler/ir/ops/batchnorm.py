"""`BN`: batch normalisation after a conv or FC layer, before its ReLU (torchvision's `_bn`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from math import prod

from ...frontend.ast import Layer
from ...frontend.words import register
from .base import Modules, Op
from .traits import Absorbs, Epilogue, Folds, Weighted

# torchvision's (and torch's) defaults for BatchNorm1d/2d.
MOMENTUM = 0.1
EPS = 1e-5


@register
@dataclass(frozen=True)
class BN(Folds, Absorbs, Weighted, Epilogue, Op):
    """`BN`: batch normalisation of the conv or FC layer just before it (then its ReLU).
    Per-channel: batch statistics in training (updating the running ones with `momentum`),
    running statistics in evaluation; `relu` and `dropout` are set when the fuse pass folds
    in the weight layer's ReLU (and dropout) that follow it."""

    # torchvision's module list it sits in, its layer's: BatchNorm2d in `features`, 1d in
    # `classifier`.
    section: str = field(default="features", kw_only=True, repr=False)
    momentum: float = field(default=MOMENTUM, kw_only=True, repr=False)
    eps: float = field(default=EPS, kw_only=True, repr=False)
    relu: bool = field(default=False, kw_only=True, repr=False)
    dropout: bool = field(default=False, kw_only=True, repr=False)

    word = "BN"
    absorbs = ("relu", "dropout")

    def misplaced(self, previous: Layer | None) -> str | None:
        if previous is None:
            return "BN cannot start the net: it normalises the conv or FC layer before it"
        if previous.trait(Weighted) is None or previous.trait(Epilogue) is not None:
            return f"BN must follow a conv or FC layer, not {previous.text()}"
        return None

    def build(self, b) -> None:
        weight_node = b.previous_layer_nodes()[0]
        section = b.g.nodes[weight_node]["op"].torchvision().section
        b.insert_after(weight_node, bn_name(weight_node), replace(self, section=section))

    def mask_elements(self, shape) -> int:
        return prod(shape) if self.dropout else 0

    def describe(self) -> str:
        return "bn" + ("+relu" if self.relu else "") + ("+dropout" if self.dropout else "")

    def params_and_macs(self, in_shape, shape):
        return 2 * in_shape[0], 0  # MACs are conv/FC only; see `elementwise`

    def elementwise(self, in_shape) -> int:
        """Element-wise operations per image once folded to a scale and shift: one
        multiply-add per element (reported apart from MACs)."""
        return prod(in_shape)

    def tensors(self, in_shape):
        return {"weight": (in_shape[0],), "bias": (in_shape[0],)}

    def buffers(self, in_shape):
        return {
            "running_mean": ((in_shape[0],), None),
            "running_var": ((in_shape[0],), None),
            "num_batches_tracked": ((), "int64"),
        }

    def init(self, module, init: str) -> None:
        # torchvision's _bn nets: scale 1, shift 0, fresh statistics; whatever `init` says.
        module.weight.fill_(1.0)
        module.bias.zero_()
        module.running_mean.zero_()
        module.running_var.fill_(1.0)
        module.num_batches_tracked.zero_()

    def forward(self, x, run):
        w, training = run.weights, run.net.training
        if training:
            w.num_batches_tracked.add_(1)
        across = run.batch.sum_across if run.batch is not None else None
        if training and across is not None:
            x = global_batch_norm(x, w, across, self.momentum, self.eps)
        else:
            x = run.backend.batch_norm(
                x,
                w.running_mean,
                w.running_var,
                w.weight,
                w.bias,
                training,
                self.momentum,
                self.eps,
            )
        if self.relu:
            x = run.backend.relu(x)
        return run.dropout(x) if self.dropout else x

    def fold_into(self, before):
        if before.trait(Weighted) is None or getattr(before, "relu", True):
            return None  # only a conv/FC whose ReLU still comes after this BN
        flags = {"relu": self.relu, **({"dropout": True} if self.dropout else {})}
        return replace(before, **flags)

    def folded(self, weight, bias, bn):
        """The (weight, bias) of the layer before, with `bn`'s running statistics folded in:
        y = (Wx + b - mean) · γ/√(var + ε) + β."""
        scale = bn.weight / (bn.running_var + self.eps).sqrt()
        shape = (-1,) + (1,) * (weight.dim() - 1)
        return weight * scale.reshape(shape), (bias - bn.running_mean) * scale + bn.bias

    def torchvision(self) -> Modules:
        return Modules(self.section, 1 + self.relu + self.dropout)

    def torch_reason(self, training: bool) -> str:
        if training:
            return "BN in training: batch statistics have no Triton kernel yet"
        return "BN with running statistics: fold it into its layer to run it fused"


def global_batch_norm(x, w, sum_across, momentum: float, eps: float):
    """Training BN with the statistics of the global batch: per-channel sums (and the row
    count) summed over the processes by `sum_across`, which carries the gradient back to
    every process's rows; the running statistics are updated as torch does (unbiased
    variance), the same on every process."""
    import torch

    c = x.shape[1]
    dims = [0, *range(2, x.dim())]
    shape = (1, c) + (1,) * (x.dim() - 2)
    xf = x if x.dtype == torch.float64 else x.float()  # at least float32
    count = torch.full((1,), x.numel() // c, dtype=xf.dtype, device=x.device)
    totals = sum_across(torch.cat([xf.sum(dims), count]))
    n = totals[-1]
    mean = totals[:c] / n
    centred = xf - mean.reshape(shape)  # two passes: no cancellation in the variance
    var = sum_across(centred.square().sum(dims)) / n
    y = centred * torch.rsqrt(var + eps).reshape(shape) * w.weight.reshape(shape)
    with torch.no_grad():
        w.running_mean.lerp_(mean.to(w.running_mean.dtype), momentum)
        unbiased = var * n / (n - 1).clamp_min(1)
        w.running_var.lerp_(unbiased.to(w.running_var.dtype), momentum)
    return (y + w.bias.reshape(shape)).to(x.dtype)


def bn_name(weight_node: str) -> str:
    """conv3_3 → bn3_3, fc6 → bn6: the normalisation is named after its layer."""
    return re.sub(r"^[a-z]+", "bn", weight_node)
