"""The OpenVINO engine: vggspec's exported model compiled for the CPU with an inference
precision hint (bf16 or f32), each time from the checked ONNX file. Not from OpenVINO's
own model cache (CACHE_DIR): it takes a compiled model whose bytes changed (20 bytes flipped:
the demo's top-1 error 85.8 % → 89.2 %, no error said), and compiling D from the ONNX file
costs 3.6 s against its cache's 0.3 s, once per net and process."""

from __future__ import annotations

import numpy as np
import torch

from .exported import exported_onnx

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
        },
    )
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: x.detach().float().contiguous().numpy()})[0]
        return torch.from_numpy(np.array(out))  # the request's buffer is reused: copy

    return run
