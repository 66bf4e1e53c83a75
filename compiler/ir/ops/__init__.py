"""The ops, one module per family: each owns its notation word and its IR behaviour.

Every module of this package is imported here, so a new op module registers its word
without an edit to this file; the names below are the ones other code imports.
"""

import pkgutil
from importlib import import_module

from ...frontend.words import WORDS as LAYERS
from ...frontend.words import register
from .avgpool import AvgPool, AvgPool2d
from .base import Layer, Op, ShapeError
from .batchnorm import BN, BatchNorm
from .box import Box, BoxOp
from .conv import Conv, Conv2d
from .dropout import Dropout
from .fc import FullyConnected, Linear, WeightFrom
from .gap import Gap, GlobalAvgPool
from .input import Input
from .lrn import LocalResponseNorm, Lrn
from .maxpool import MaxPool, MaxPool2d
from .relu import ReLU
from .softmax import SoftMax, SoftMaxOp
from .spatial_mean import SpatialMean

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BN",
    "LAYERS",
    "AvgPool",
    "AvgPool2d",
    "BatchNorm",
    "Box",
    "BoxOp",
    "Conv",
    "Conv2d",
    "Dropout",
    "FullyConnected",
    "Gap",
    "GlobalAvgPool",
    "Input",
    "Layer",
    "Linear",
    "LocalResponseNorm",
    "Lrn",
    "MaxPool",
    "MaxPool2d",
    "Op",
    "ReLU",
    "ShapeError",
    "SoftMax",
    "SoftMaxOp",
    "SpatialMean",
    "WeightFrom",
    "register",
]
