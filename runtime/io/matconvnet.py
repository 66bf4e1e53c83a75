"""MatConvNet simplenn .mat files (imagenet-vgg-verydeep-16/-19.mat) read with scipy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vggspec.compiler.frontend.errors import VggspecError


class MatConvNetError(VggspecError):
    """A file that is not a readable MatConvNet simplenn net."""


@dataclass
class MatConvNetLayer:
    """A conv layer (FC layers are convs in MatConvNet): filters H×W×C×K, biases K."""

    name: str
    filters: np.ndarray
    biases: np.ndarray


@dataclass
class MatConvNet:
    layers: list[MatConvNetLayer]
    average_image: np.ndarray | None  # H×W×3 (often 1×1×3), RGB, 0..255


def _one(value):
    """scipy wraps every MATLAB scalar struct and 1×1 cell in a 1-element object array."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value


def _text(value) -> str:
    value = _one(value)
    if isinstance(value, np.ndarray):
        return "".join(str(v) for v in value.flat)
    return "" if value is None else str(value)


def _field(struct, name: str):
    struct = _one(struct)
    return _one(getattr(struct, name, None)) if hasattr(struct, "_fieldnames") else None


def _filters(value) -> np.ndarray:
    """MATLAB drops trailing singleton dimensions (a 3×3×64×1 filter bank is 3-D):
    put them back, so that every filter bank is H×W×C×K."""
    array = np.asarray(value)
    if array.ndim > 4:
        raise ValueError(f"filters of {array.ndim} dimensions")
    return array.reshape(array.shape + (1,) * (4 - array.ndim))


def _weights(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """(filters, biases) of a layer: `weights = {filters, biases}` (MatConvNet ≥ beta-8),
    or the older `filters` and `biases` fields; None when it has none."""
    weights = getattr(_one(layer), "weights", None)
    if weights is not None and np.size(weights) > 0:
        cells = [_one(c) for c in np.asarray(weights, dtype=object).flat]
        if len(cells) != 2:
            raise ValueError(f"weights with {len(cells)} entries, not {{filters, biases}}")
        return _filters(cells[0]), np.asarray(cells[1]).reshape(-1)
    filters = _field(layer, "filters")
    if filters is not None and np.size(filters) > 0:
        return _filters(filters), np.asarray(_field(layer, "biases")).reshape(-1)
    return None


def read_matconvnet(path: str | os.PathLike) -> MatConvNet:
    """The conv layers with weights (FC included), in order, and the average image."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(str(path), squeeze_me=False, struct_as_record=False)
    except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
        raise MatConvNetError(
            f"{path}: a MATLAB v7.3 file; save it as v7 (save(..., '-v7')) to convert it"
        ) from None
    except Exception as err:  # scipy raises many kinds on a damaged file; all are the file's
        lines = str(err).strip().splitlines()
        gist = f": {lines[0]}" if lines else ""
        raise MatConvNetError(
            f"{path}: not a readable MATLAB file ({type(err).__name__}{gist})"
        ) from None
    root = mat if "layers" in mat else {}
    if not root and "net" in mat:  # saved as a variable `net` instead of '-struct'
        net = _one(mat["net"])
        root = {name: getattr(net, name) for name in getattr(net, "_fieldnames", [])}
    if "layers" not in root:
        raise MatConvNetError(f"{path}: not a MatConvNet simplenn net (no `layers`)")
    layers = []
    for index, layer in enumerate(np.asarray(root["layers"], dtype=object).flat, start=1):
        layer = _one(layer)
        kind = _text(_field(layer, "type"))
        name = _text(_field(layer, "name")) or f"layers{{{index}}}"
        try:
            found = _weights(layer)
        except ValueError as err:
            raise MatConvNetError(f"{path}: layer {name}: {err}") from None
        if found is None:
            continue
        if kind != "conv":
            raise MatConvNetError(
                f"{path}: layer {name} of type {kind!r} has weights; a VGG net as in the "
                "paper has weights only in conv (and FC-as-conv) layers"
            )
        layers.append(MatConvNetLayer(name, *found))
    meta = root.get("meta")
    normalization = _field(meta, "normalization") if meta is not None else None
    if normalization is None and "normalization" in root:  # before MatConvNet beta-17
        normalization = _one(root["normalization"])
    average = _field(normalization, "averageImage") if normalization is not None else None
    if average is not None and (np.size(average) == 0 or np.size(average) % 3):
        average = None
    average = None if average is None else np.asarray(average, dtype=np.float64)
    return MatConvNet(layers, average)
