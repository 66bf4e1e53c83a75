"""The OpenVINO engine: vggspec's exported model compiled for the CPU with an inference
precision hint (bf16 or f32); OpenVINO keeps the compiled model in its cache folder."""

from __future__ import annotations

import numpy as np
import torch

from .exported import cache_root, exported_onnx

NAME = "openvino"
PACKAGE = "openvino"
EXTRA = "openvino"
PRECISIONS = ("fp32", "bf16")
HINTS = {"fp32": "f32", "bf16": "bf16"}


def compile(net, precision: str, threads: int):
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(
        str(exported_onnx(net)),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "INFERENCE_NUM_THREADS": threads,
            # One request at a time, all cores on it: the protocol's batches come in order.
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str(cache_root() / "openvino"),
        },
    )
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: x.detach().float().contiguous().numpy()})[0]
        return torch.from_numpy(np.array(out))  # the request's buffer is reused: copy

    return run
