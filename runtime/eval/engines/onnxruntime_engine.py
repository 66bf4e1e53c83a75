"""The ONNX Runtime engine: vggspec's exported model (runtime/io/onnx_export.py) in an
InferenceSession on the CPU; fp32 only (its CPU provider has no bf16 convolution)."""

from __future__ import annotations

import torch

from ...io.onnx_export import INPUT
from .exported import exported_onnx

NAME = "onnxruntime"
PACKAGE = "onnxruntime"
EXTRA = "onnx"
PRECISIONS = ("fp32",)


def compile(net, precision: str, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning, or they would take the cores that the
    # loader, torch (the head, the other nets of a fusion) and other engines need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(exported_onnx(net)), options, providers=["CPUExecutionProvider"]
    )

    def run(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {INPUT: x.detach().float().contiguous().numpy()})
        return torch.from_numpy(out)

    return run
