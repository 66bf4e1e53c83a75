"""Triton kernels for VGG-style nets: fused conv/FC + bias + ReLU, pooling, soft-max, AOT report."""

from .aot import aot_report, format_aot_report, predicted_step_time
from .conv import conv2d_bias_act
from .linear import linear_bias_act
from .pool import max_pool2x2
from .shapes import (
    ConvLaunch,
    LinearLaunch,
    PoolLaunch,
    SoftmaxLaunch,
    SpatialMeanLaunch,
    vgg16_conv_launches,
    vgg16_launches,
)
from .softmax import softmax, softmax_cross_entropy, spatial_mean

__all__ = [
    "ConvLaunch",
    "LinearLaunch",
    "PoolLaunch",
    "SoftmaxLaunch",
    "SpatialMeanLaunch",
    "aot_report",
    "conv2d_bias_act",
    "format_aot_report",
    "linear_bias_act",
    "max_pool2x2",
    "predicted_step_time",
    "softmax",
    "softmax_cross_entropy",
    "spatial_mean",
    "vgg16_conv_launches",
    "vgg16_launches",
]
