"""A net as ONNX: the classifier at its input size, or the dense twin at any image size."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from vggspec.compiler.lowering.net import Net, densify, lower

from .atomic import atomic_write
from .model_info import KEY, ModelInfo
from .weights import WeightsError

INPUT, OUTPUT = "image", "scores"


@torch.library.custom_op("vggspec::lrn", mutates_args=())
def _lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The notation's LRN as one op, so that the exporter writes one ONNX `LRN` node
    (torch's local_response_norm is traced as a pad, an average pool and a power)."""
    return torch.nn.functional.local_response_norm(x, size, alpha * size, beta, k)


@_lrn.register_fake
def _lrn_shape(x, size, alpha, beta, k):
    return torch.empty_like(x)


def _onnx_lrn(x, size: int, alpha: float, beta: float, k: float):
    from onnxscript import opset18 as op

    # ONNX's LRN divides alpha by the window, as Caffe and torch do; the notation's
    # alpha (AlexNet's) does not.
    return op.LRN(x, size=size, alpha=alpha * size, beta=beta, bias=k)


class _ExportBackend:
    """The torch backend with LRN as the one op above (for the exporter only)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def lrn(self, x, size, alpha, beta, k):
        return torch.ops.vggspec.lrn(x, size, alpha, beta, k)


class ExportError(WeightsError):
    """A net that cannot be exported, or ONNX tools that are missing."""


def export_onnx(
    net: Net, path: str | os.PathLike, dense: bool = False, info: ModelInfo | None = None
) -> Path:
    """Write `net` as ONNX (torch's exporter, opset 18). Input `image`: (N, 3, H, W)
    float32, already preprocessed as the model information `info` says (the metadata
    `vggspec.preprocess`, the JSON of a safetensors file's; its input size the net's). Output
    `scores`: class scores (N, classes), or with `dense` the class score map
    (N, classes, h, w) of the fully-convolutional twin, N, H and W dynamic (H, W at least
    the spec's input size). The spec text travels as `vggspec.spec`. Atomic."""
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'vggspec[onnx]'") from None
    path = Path(path)
    source = net
    if net.backend_name != "torch":  # the reference ops export; Triton kernels do not
        source = lower(net.graph, "torch")
        source.load_state_dict(net.state_dict())
    model = (densify(source) if dense and not net.dense else source).eval()
    backend = model.backend  # `model` may be the caller's net: its backend is put back
    height, width = net.input_size
    example = torch.zeros(1, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = {0: batch}
    if model.dense:
        shapes[2] = torch.export.Dim("height", min=height, max=16384)
        shapes[3] = torch.export.Dim("width", min=width, max=16384)
    model.backend = _ExportBackend(backend)
    # The exporter's registry logs a warning per torchvision op when torchvision is not
    # installed (four lines on every export): ops no vggspec net uses.
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        try:
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=(shapes,),
                dynamo=True,
                opset_version=18,
                verbose=False,
                custom_translation_table={torch.ops.vggspec.lrn.default: _onnx_lrn},
            )
        finally:
            model.backend = backend
            registry.setLevel(level)
    info = (info or ModelInfo()).with_input_size(net.input_size)
    program.model.metadata_props.update(
        {
            "vggspec.spec": net.spec_text(),
            f"vggspec.{KEY}": info.to_json(),
            "vggspec.output": "class score map (N, classes, h, w)"
            if model.dense
            else "class scores (N, classes)",
        }
    )
    atomic_write(path, lambda tmp: program.save(tmp))
    return path
