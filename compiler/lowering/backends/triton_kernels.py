"""The Triton backend: fused conv/FC + bias + ReLU, pooling and soft-max kernels.

LRN, batch norm and dropout have no kernel of their own and run through torch.nn.functional (their
ops have no `launch`; the compile report lists them). Under torch.autocast the kernels get
their operands in the autocast dtype (bf16), accumulate in fp32, and give bf16 back, as
cuDNN does.
"""

from __future__ import annotations

import torch

from ...kernels import (
    conv2d_bias_act,
    linear_bias_act,
    max_pool2x2,
    softmax,
    softmax_cross_entropy,
    spatial_mean,
)
from . import torch_functional


def _operands(x: torch.Tensor, *params: torch.Tensor) -> list[torch.Tensor]:
    # ("meta": gpu-check records a net's launches on shape-only tensors, with no autocast.)
    if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    else:
        dtype = x.dtype
    return [t.to(dtype) for t in (x, *params)]


# The window the pooling kernel computes (kernel, stride, ceil): 2×2, stride 2, rounding down.
POOL_KERNEL = (2, 2, False)


class Backend(torch_functional.Backend):
    """The kernels below; what has no kernel (ReLU alone, average pooling, pooling windows
    other than 2×2 stride 2, LRN, batch norm, dropout) runs exactly as the torch backend
    runs it."""

    name = "triton"
    # The conv kernels are implicit GEMMs over NHWC: feed them channels-last.
    memory_format = torch.channels_last

    def conv(self, x, weight, bias, padding, relu):
        x, weight, bias = _operands(x, weight, bias)
        return conv2d_bias_act(x, weight, bias, tuple(padding), relu)

    def max_pool(self, x, kernel=2, stride=2, ceil=False):
        if (kernel, stride, ceil) != POOL_KERNEL:  # no kernel for this window: torch's
            return super().max_pool(x, kernel, stride, ceil)
        return max_pool2x2(x)

    def linear(self, x, weight, bias, relu):
        x, weight, bias = _operands(x, weight, bias)
        return linear_bias_act(x.contiguous(), weight, bias, relu)

    def spatial_mean(self, x):
        return spatial_mean(x)

    def softmax(self, x):
        return softmax(x.float(), dim=1)

    def cross_entropy(self, logits, target):
        return softmax_cross_entropy(logits.float(), target)
