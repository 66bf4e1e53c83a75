"""Triton kernels for VGG-style nets: fused conv/FC + bias + ReLU, pooling, soft-max, AOT report.

The launch descriptions (shapes.py) import neither torch nor triton; the kernels and the
report are imported on first use, so that `vggspec compile` without --target stays light.
"""

from importlib import import_module

from .shapes import (
    ConvLaunch,
    LinearLaunch,
    PoolLaunch,
    SoftmaxLaunch,
    SpatialMeanLaunch,
    vgg16_conv_launches,
    vgg16_launches,
)

# name → the module (one per kernel family) that defines it
_LAZY = {
    "aot_report": ".aot",
    "format_aot_report": ".aot",
    "predicted_step_time": ".aot",
    "conv2d_bias_act": ".conv",
    "linear_bias_act": ".linear",
    "max_pool2x2": ".pool",
    "softmax": ".softmax_rows",
    "softmax_cross_entropy": ".cross_entropy",
    "spatial_mean": ".score_mean",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
