"""Triton kernels for VGG-style nets: fused conv/FC + bias + ReLU, pooling, soft-max, AOT report."""

from .conv import conv2d_bias_act
from .linear import linear_bias_act
from .pool import max_pool2x2
from .softmax import softmax, softmax_cross_entropy, spatial_mean

__all__ = [
    "conv2d_bias_act",
    "linear_bias_act",
    "max_pool2x2",
    "softmax",
    "softmax_cross_entropy",
    "spatial_mean",
]
