"""The ops, one module per family: each owns its notation word and its IR behaviour."""

from .base import Layer, Op, ShapeError
from .conv import Conv, Conv2d
from .dropout import Dropout
from .fc import FullyConnected, Linear, WeightFrom
from .input import Input
from .lrn import LocalResponseNorm, Lrn
from .maxpool import MaxPool, MaxPool2d
from .registry import LAYERS, register
from .relu import ReLU
from .softmax import SoftMax, SoftMaxOp
from .spatial_mean import SpatialMean

__all__ = [
    "LAYERS",
    "Conv",
    "Conv2d",
    "Dropout",
    "FullyConnected",
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
