"""The torch-side public API: build, densify, save and load nets, and read what a trained
net expects (its model information)."""

from __future__ import annotations

import os
from pathlib import Path

from vggspec import TORCH_API
from vggspec.compiler import Spec, load_spec
from vggspec.compiler.lowering.inference import inference_net
from vggspec.compiler.lowering.net import (
    Net,
    build,
    densify,
    features,
    fold_batch_norm,
    init_weights,
    lower,
)
from vggspec.runtime.data.preprocessing import Preprocessing
from vggspec.runtime.data.scale import TrainScale
from vggspec.runtime.io.model_info import ModelInfo
from vggspec.runtime.io.model_info import read_model_info as model_info
from vggspec.runtime.io.rundir import RunDir
from vggspec.runtime.io.weights import init_from, load, load_torchvision, save, to_torchvision

__all__ = list(TORCH_API)  # one list: the package's, which imports this lazily


def build_net(
    spec_or_path: Spec | str | os.PathLike,
    backend: str = "auto",
    num_classes: int | None = None,
    init: str = "gaussian",
    dropout: float = 0.5,
) -> Net:
    """A ready-to-train net for a spec (or a .vgg file): compiled, lowered to the
    backend ("auto": measured per call on CUDA, torch otherwise), initialised as in the paper
    (weights N(0, 0.01²), or init="glorot"; biases 0). `num_classes` resizes the
    last FC layer."""
    if isinstance(spec_or_path, Spec):
        spec, name = spec_or_path, "spec"
    else:
        spec, name = load_spec(spec_or_path), Path(spec_or_path).stem
    return build(spec, backend, num_classes, init, dropout, name)
