"""MatConvNet simplenn .mat files (imagenet-vgg-verydeep-16/-19.mat) read with scipy; each
layer's settings read as the steps of source_net, by a table of simplenn types."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vggspec.compiler.errors import VggspecError

from .source_net import Step


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
    steps: list[Step] = field(default_factory=list)
    input_shape: tuple[int, int, int] | None = None  # (C, H, W): meta.normalization.imageSize


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


def _numbers(layer, name: str, count: int, default: float) -> tuple:
    """A setting given as one number for all sides or as `count` (vl_simplenn's defaults
    for a missing one)."""
    value = _field(layer, name)
    values = np.asarray(value if value is not None else default, dtype=np.float64).reshape(-1)
    if values.size == 0:
        values = np.asarray([default], dtype=np.float64)
    if values.size not in (1, count):
        raise ValueError(f"`{name}` has {values.size} numbers, not 1 or {count}")
    values = np.broadcast_to(values, (count,)) if values.size == 1 else values
    return tuple(v.item() for v in values)


def _whole(values: tuple) -> tuple[int, ...]:
    if any(v != int(v) for v in values):
        raise ValueError(f"{values} are not whole numbers")
    return tuple(int(v) for v in values)


def _conv(layer, name: str, found, channels: int | None) -> Step:
    if found is None:
        raise ValueError("a conv layer without filters")
    filters = found[0]
    kh, kw, depth, outputs = filters.shape
    groups = channels // depth if channels and depth and channels % depth == 0 else 1
    return Step(
        "conv",
        name,
        "conv",
        kernel=(kh, kw),
        stride=_whole(_numbers(layer, "stride", 2, 1)),
        pad=_whole(_numbers(layer, "pad", 4, 0)),  # top, bottom, left, right
        dilation=_whole(_numbers(layer, "dilate", 2, 1)),
        groups=groups,
        outputs=outputs,
    )


def _pool(layer, name: str) -> Step:
    method = _text(_field(layer, "method")) or "max"
    if method not in ("max", "avg"):
        return Step("unknown", name, "pool", why=f"{method} pooling")
    if _field(layer, "pool") is None:
        raise ValueError("a pool layer without `pool` (its window)")
    return Step(
        "pool",
        name,
        "pool",
        kernel=_whole(_numbers(layer, "pool", 2, 1)),
        stride=_whole(_numbers(layer, "stride", 2, 1)),
        pad=_whole(_numbers(layer, "pad", 4, 0)),
        method="max" if method == "max" else "average",
    )


def _lrn(layer, name: str, kind: str) -> Step:
    # vl_nnnormalize: x / (κ + α Σ x²)^β over N channels: AlexNet's convention as it is.
    size, kappa, alpha, beta = _numbers(layer, "param", 4, np.nan)
    if np.isnan(size):
        size, kappa, alpha, beta = 5, 1.0, 0.0001 / 5, 0.75  # vl_simplenn_tidy's default
    spelled = f"MatConvNet: param [{size:g} {kappa:g} {alpha:g} {beta:g}]"
    if size != int(size):
        return Step("unknown", name, kind, why=f"an LRN over {size:g} channels")
    lrn = (int(size), float(alpha), float(beta), float(kappa))
    return Step("lrn", name, kind, lrn=lrn, spelled=spelled)


def _relu(layer, name: str) -> Step:
    leak = _field(layer, "leak")
    return Step(
        "relu",
        name,
        "relu",
        slope=float(np.asarray(leak).reshape(-1)[0]) if leak is not None and np.size(leak) else 0.0,
    )


# simplenn types that change nothing a converted net computes (training only, losses).
MATCONVNET_SKIPPED = {"dropout", "softmaxloss", "loss", "custom-loss"}


MATCONVNET_STEPS = {
    "conv": lambda layer, name, found, channels: _conv(layer, name, found, channels),
    "pool": lambda layer, name, found, channels: _pool(layer, name),
    "lrn": lambda layer, name, found, channels: _lrn(layer, name, "lrn"),
    "normalize": lambda layer, name, found, channels: _lrn(layer, name, "normalize"),
    "relu": lambda layer, name, found, channels: _relu(layer, name),
    "softmax": lambda layer, name, found, channels: Step("softmax", name, "softmax"),
}


def _layer_steps(layer, kind: str, name: str, found, channels) -> list[Step]:
    """What one simplenn layer computes, as steps (none for a skipped layer)."""
    if kind in MATCONVNET_SKIPPED:
        return []
    step = MATCONVNET_STEPS.get(kind)
    if step is None:
        return [Step("unknown", name, kind, why=f"a MatConvNet {kind or 'untyped'} layer")]
    return [step(layer, name, found, channels)]


MI_COMPRESSED = 15  # a MAT v5 data element's type: zlib-compressed (MATLAB's v7 default)


def _all_compressed(path: Path) -> bool:
    """Whether every top-level variable of a MAT v5 file is zlib-compressed: zlib's
    checksum then refuses a damaged one before scipy builds arrays from its bytes."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(128)
        if len(head) < 128:
            return False
        order = "<" if head[126:128] == b"IM" else ">"
        at = 128
        while at < size:
            f.seek(at)
            tag = f.read(8)
            if len(tag) < 8:
                return False
            kind, length = struct.unpack(order + "II", tag)
            if kind != MI_COMPRESSED:
                return False
            at += 8 + length
        return True


def _survives_loadmat(path: Path) -> int | None:
    """scipy's MATLAB reader crashes the process (SIGSEGV, SIGBUS) on some damaged
    uncompressed files, or asks for more memory than there is: read the file in a forked
    child first. The signal that ended the child, or None."""
    from scipy.io import loadmat

    pid = os.fork()
    if pid == 0:  # the child: its exceptions are read again, and told, by the parent
        try:
            loadmat(str(path), squeeze_me=False, struct_as_record=False)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def read_matconvnet(path: str | os.PathLike) -> MatConvNet:
    """The conv layers with weights (FC included), in order, and the average image."""
    from scipy.io import loadmat

    path = Path(path)
    if hasattr(os, "fork") and not _all_compressed(path):
        signal = _survives_loadmat(path)
        if signal is not None:
            raise MatConvNetError(
                f"{path}: not a readable MATLAB file (scipy's reader died on it: "
                f"{_signal_name(signal)}; a damaged file)"
            )
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
    meta = root.get("meta")
    normalization = _field(meta, "normalization") if meta is not None else None
    if normalization is None and "normalization" in root:  # before MatConvNet beta-17
        normalization = _one(root["normalization"])
    size = _field(normalization, "imageSize") if normalization is not None else None
    size = np.asarray(size if size is not None else [], dtype=np.float64).reshape(-1)
    input_shape = (int(size[2]), int(size[0]), int(size[1])) if size.size >= 3 else None
    layers, steps = [], []
    channels = input_shape[0] if input_shape else None
    for index, layer in enumerate(np.asarray(root["layers"], dtype=object).flat, start=1):
        layer = _one(layer)
        kind = _text(_field(layer, "type"))
        name = _text(_field(layer, "name")) or f"layers{{{index}}}"
        try:
            found = _weights(layer)
            steps += _layer_steps(layer, kind, name, found, channels)
        except (ValueError, TypeError, AttributeError) as err:  # a setting of an odd type too
            raise MatConvNetError(f"{path}: layer {name}: {err}") from None
        if found is not None and kind != "conv":
            raise MatConvNetError(
                f"{path}: layer {name} of type {kind!r} has weights; a VGG net as in the "
                "paper has weights only in conv (and FC-as-conv) layers"
            )
        if found is not None:
            layers.append(MatConvNetLayer(name, *found))
            channels = found[0].shape[3]
    average = _field(normalization, "averageImage") if normalization is not None else None
    if average is not None and (np.size(average) == 0 or np.size(average) % 3):
        average = None
    average = None if average is None else np.asarray(average, dtype=np.float64)
    return MatConvNet(layers, average, steps, input_shape)
