"""Keras VGG weights (keras.applications' VGG16/VGG19 HDF5 files, the legacy layout and Keras 3's
.weights.h5) read with h5py; each layer's settings read as the steps of source_net."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vggspec.compiler.errors import VggspecError

from .source_net import Step

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class KerasError(VggspecError):
    """A file that is not readable Keras weights of a net vggspec can express."""


@dataclass
class KerasLayer:
    """A layer with weights: Conv2D (kernel H×W×I×O) or Dense (kernel in×out), and bias."""

    name: str
    kind: str  # "conv" or "fc"
    kernel: np.ndarray
    bias: np.ndarray


@dataclass
class KerasNet:
    layers: list[KerasLayer]
    layout: str  # "Keras HDF5" or "Keras 3 .weights.h5"
    steps: list[Step] = field(default_factory=list)
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) where the model config says it
    notes: list[str] = field(default_factory=list)


# keras.applications' VGG16/VGG19 (keras/src/applications/vgg16.py), by layer name: what a
# weights-only file's layers compute, which the file itself does not record.
APPLICATIONS = [
    (r"block\d+_conv\d+", {"class_name": "Conv2D", "padding": "same", "activation": "relu"}),
    (r"block\d+_pool", {"class_name": "MaxPooling2D", "pool_size": [2, 2], "strides": [2, 2]}),
    (r"flatten", {"class_name": "Flatten"}),
    (r"fc[12]", {"class_name": "Dense", "activation": "relu"}),
    (r"predictions", {"class_name": "Dense", "activation": "softmax"}),
    (r"input_\d+|input_layer(_\d+)?", {"class_name": "InputLayer"}),
]


def _applications_config(name: str) -> dict | None:
    for pattern, config in APPLICATIONS:
        if re.fullmatch(pattern, name):
            return config
    return None


def _order_key(name: str):
    """keras.applications' VGG layers in model order (a .weights.h5 lists them by class)."""
    if match := re.fullmatch(r"block(\d+)_(conv|pool)(\d*)", name):
        block, kind, index = match.groups()
        return (0, int(block), kind == "pool", int(index or 0))
    tail = ["input", "flatten", "fc1", "fc2", "predictions"]
    return (-1 if name.startswith("input") else 1, tail.index(name) if name in tail else 9, 0, 0)


# --- each Keras layer class as steps: one small function per class -------------------------


def _pair(value, default) -> tuple[int, int]:
    value = default if value is None else value
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _activation(name: str, config: dict) -> list[Step]:
    activation = config.get("activation", "linear")
    if isinstance(activation, dict):  # serialised: a function ('config' is its name) or a layer
        kind, inner = activation.get("class_name"), activation.get("config")
        if isinstance(inner, str):
            activation = inner
        elif kind in KERAS_STEPS and isinstance(inner, dict):  # Dense(activation=ReLU())
            return KERAS_STEPS[kind](name, {**inner, "class_name": kind}, None)
        else:
            activation = kind
    if activation in ("linear", None):
        return []
    if activation == "relu":
        return [Step("relu", name, "activation relu")]
    if activation == "softmax":
        return [Step("softmax", name, "activation softmax")]
    return [Step("unknown", name, "activation", why=f"a {activation} activation")]


def _conv2d(name: str, config: dict, kernel) -> list[Step]:
    if config.get("data_format", "channels_last") != "channels_last":
        return [Step("unknown", name, "Conv2D", why="a channels-first convolution")]
    kh, kw = kernel.shape[:2] if kernel is not None else _pair(config.get("kernel_size"), 3)
    stride = _pair(config.get("strides"), 1)
    dilation = _pair(config.get("dilation_rate"), 1)
    pad = (0, 0, 0, 0)
    if config.get("padding", "valid") == "same":
        if stride != (1, 1):  # then the padding depends on the input size
            return [Step("unknown", name, "Conv2D", why="a strided 'same' convolution")]
        top, left = dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2
        pad = (top, dilation[0] * (kh - 1) - top, left, dilation[1] * (kw - 1) - left)
    outputs = kernel.shape[3] if kernel is not None else config.get("filters", 0)
    conv = Step(
        "conv",
        name,
        "Conv2D",
        kernel=(int(kh), int(kw)),
        stride=stride,
        pad=pad,
        dilation=dilation,
        groups=int(config.get("groups", 1)),
        outputs=int(outputs),
    )
    return [conv, *_activation(name, config)]


def _channels_first(name: str, config: dict) -> list[Step]:
    """A layer that reads its map as C×H×W in a net whose convs write H×W×C (a Flatten so
    set gives the first FC its rows in C×H×W order), or none."""
    if config.get("data_format", "channels_last") == "channels_last":
        return []
    why = f"a channels-first {config['class_name']} in a channels-last net"
    return [Step("unknown", name, config["class_name"], why=why)]


def _pooling(method: str):
    def steps(name: str, config: dict, kernel) -> list[Step]:
        if refused := _channels_first(name, config):
            return refused
        size = _pair(config.get("pool_size"), 2)
        stride = _pair(config.get("strides"), size)
        same = config.get("padding", "valid") == "same"
        # 'same' pads to an output of ceil(size / stride), half of the padding before the
        # map: Caffe's rounding up (windows from the first pixel, the last one cut short)
        # only where the window is the stride and that is 1 or 2 (no padding before).
        if same and (size != stride or max(stride) > 2):
            why = "a 'same' pooling whose padding falls unlike Caffe's rounding up"
            return [Step("unknown", name, config["class_name"], why=why)]
        kind = config["class_name"]
        return [Step("pool", name, kind, kernel=size, stride=stride, method=method, ceil=same)]

    return steps


def _dense(name: str, config: dict, kernel) -> list[Step]:
    inputs, outputs = kernel.shape if kernel is not None else (0, config.get("units", 0))
    return [Step("fc", name, "Dense", outputs=int(outputs), inputs=int(inputs))]


def _relu_layer(name: str, config: dict, kernel) -> list[Step]:
    if config.get("max_value") is not None or config.get("threshold", 0):
        return [Step("unknown", name, "ReLU", why="a capped or thresholded ReLU")]
    return [Step("relu", name, "ReLU", slope=float(config.get("negative_slope", 0.0)))]


KERAS_STEPS = {
    "Conv2D": lambda name, config, kernel: _conv2d(name, config, kernel),
    "MaxPooling2D": _pooling("max"),
    "AveragePooling2D": _pooling("average"),
    "Dense": lambda name, config, kernel: _dense(name, config, kernel) + _activation(name, config),
    "Activation": lambda name, config, kernel: _activation(name, config),
    "ReLU": _relu_layer,
    "Softmax": lambda name, config, kernel: _softmax(name, config),
    # Nothing to compute: the first FC's rows are permuted from H×W×C instead.
    "Flatten": lambda name, config, kernel: _channels_first(name, config),
}
# Classes that change nothing a converted net computes.
KERAS_SKIPPED = {"InputLayer", "Dropout"}


def _softmax(name: str, config: dict) -> list[Step]:
    axis = config.get("axis", -1)
    if axis not in (-1, 1, [-1], [1]):  # the class axis of the FC's (N, classes)
        return [Step("unknown", name, "Softmax", why=f"a soft-max over axis {axis}")]
    return [Step("softmax", name, "Softmax")]


def layer_steps(name: str, config: dict | None, kernel) -> list[Step]:
    if config is None:
        why = (
            "a layer whose settings the file does not record (a weights-only file: "
            "vggspec reads keras.applications' VGG16/VGG19 layer names, or a model saved "
            "with its config)"
        )
        return [Step("unknown", name, "Keras", why=why)]
    kind = config.get("class_name", "")
    if kind in KERAS_SKIPPED:
        return []
    steps = KERAS_STEPS.get(kind)
    if steps is None:
        return [Step("unknown", name, kind, why=f"a Keras {kind} layer")]
    return steps(name, config, kernel)


# --- the two file layouts ----------------------------------------------------------------------


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _model_config(f) -> dict[str, dict]:
    """Layer name → {class_name, config…} from a whole-model file's `model_config`."""
    text = f.attrs.get("model_config")
    if text is None:
        return {}
    config = json.loads(_text(text))
    layers = config.get("config", {})
    layers = layers.get("layers", []) if isinstance(layers, dict) else layers
    out = {}
    for layer in layers:
        settings = dict(layer.get("config", {}))
        settings["class_name"] = layer.get("class_name", "")
        out[settings.get("name", layer.get("name", ""))] = settings
    return out


def _input_shape(configs: dict[str, dict]) -> tuple[int, int, int] | None:
    for settings in configs.values():
        if settings["class_name"] == "InputLayer":
            shape = settings.get("batch_shape") or settings.get("batch_input_shape")
            if shape and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
                return (shape[3], shape[1], shape[2])
    return None


def _weights(group, names: list[str]) -> list[np.ndarray]:
    """A layer group's arrays in `weight_names` order (Keras 1 `conv_W_1:0`, Keras 2
    `conv/kernel:0`, Keras 3 `conv/kernel`: the names are paths in the group)."""
    if not names:  # no weight_names: every dataset in the group, kernel first
        found = []
        group.visititems(lambda n, obj: found.append(n) if hasattr(obj, "shape") else None)
        names = sorted(found, key=lambda n: (group[n].ndim == 1, n))
    return [np.asarray(group[n][()], dtype=np.float32) for n in names]


def _legacy(f, path: Path) -> tuple[list, str]:
    """(name, arrays) in model order from `layer_names` and each group's `weight_names`."""
    root = f.get("model_weights", f)
    layers = []
    for name in (_text(n) for n in root.attrs["layer_names"]):
        if name not in root:
            raise KerasError(f"{path}: layer {name} is listed but has no group")
        group = root[name]
        names = [_text(n) for n in group.attrs.get("weight_names", [])]
        layers.append((name, _weights(group, names)))
    return layers, "Keras HDF5"


def _keras3(f, path: Path) -> tuple[list, str]:
    """(name, arrays) from `layers/<group>/vars/<i>`, put in keras.applications' order:
    the file lists its layers by class (conv2d, conv2d_1 …), not in model order."""
    layers_group = f["layers"] if "layers" in f else f["_layer_checkpoint_dependencies"]
    layers = []
    for key in layers_group:
        variables = layers_group[key].get("vars")
        if variables is None:
            continue
        name = _text(variables.attrs.get("name", key))
        arrays = [
            np.asarray(variables[str(i)][()], dtype=np.float32) for i in range(len(variables))
        ]
        layers.append((name, arrays))
    unknown = [n for n, _ in layers if _applications_config(n) is None]
    if unknown:
        raise KerasError(
            f"{path}: layer {unknown[0]}: a Keras 3 weights file records neither the order "
            "of its layers nor what they compute; vggspec reads keras.applications' "
            "VGG16/VGG19 (layers block1_conv1 … predictions)"
        )
    return sorted(layers, key=lambda item: _order_key(item[0])), "Keras 3 .weights.h5"


def read_keras(path: str | os.PathLike) -> KerasNet:
    """The layers of a Keras HDF5 weights file in model order, with what each computes:
    from the model config where the file has one, else from keras.applications' VGG."""
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise KerasError(
            f"{path}: reading Keras weights needs h5py: pip install 'vggspec[keras]'"
        ) from None
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise KerasError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        try:
            if "layer_names" in f.attrs or "model_weights" in f:
                layers, layout = _legacy(f, path)
            elif "layers" in f or "_layer_checkpoint_dependencies" in f:
                layers, layout = _keras3(f, path)
            else:
                raise KerasError(f"{path}: an HDF5 file, but not Keras weights (no layer_names)")
            configs = _model_config(f)
        # h5py raises RuntimeError too for a damaged file ("bad symbol table node signature").
        except (AttributeError, KeyError, ValueError, TypeError, OSError, RuntimeError) as err:
            raise KerasError(f"{path}: not readable Keras weights ({err})") from None
    net = KerasNet([], layout, input_shape=_input_shape(configs))
    if not configs:
        net.notes.append(
            "a weights-only file: read as keras.applications' VGG (3×3 'same' convolutions, "
            "2×2 max pools, ReLU, soft-max at the end)"
        )
    for name, arrays in layers:
        config = configs.get(name) or _applications_config(name)
        kernel = arrays[0] if arrays else None
        if arrays:
            if len(arrays) != 2 or arrays[0].ndim not in (2, 4) or arrays[1].ndim != 1:
                shapes = ", ".join(str(a.shape) for a in arrays)
                raise KerasError(
                    f"{path}: layer {name} has weights {shapes}, not a kernel and a bias"
                )
            kind = "conv" if arrays[0].ndim == 4 else "fc"
            net.layers.append(KerasLayer(name, kind, arrays[0], arrays[1]))
        try:
            net.steps += layer_steps(name, config, kernel)
        except (AttributeError, KeyError, TypeError, ValueError) as err:  # a config's odd types
            raise KerasError(
                f"{path}: layer {name}: settings vggspec cannot read ({type(err).__name__}: {err})"
            ) from None
    return net
