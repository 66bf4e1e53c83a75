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
# A batch is split in this many parts, each run at once on a stream of its own with its
# share of the threads: the images of a batch (an image and its mirror image, crops) are
# independent, and streams do not wait for each other at every layer as the threads of one
# request do, which costs most where other processes hold the cores (README, "Speed by
# engine"). A batch smaller than this runs as one request on all the threads.
STREAMS = 2


def compile(net, precision: str, threads: int):
    import openvino

    core = openvino.Core()
    model = core.read_model(str(exported_onnx(net)))
    streams = STREAMS if threads >= STREAMS else 1

    def compiled(n_streams: int):
        hint = "THROUGHPUT" if n_streams > 1 else "LATENCY"
        return core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": HINTS[precision],
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": hint,
                "NUM_STREAMS": n_streams,
            },
        )

    split = compiled(streams)
    requests = [split.create_infer_request() for _ in range(streams)]
    whole = []  # one stream with all the threads, compiled on the first batch too small to split

    def one(x: np.ndarray) -> torch.Tensor:
        if not whole:
            whole.append(compiled(1).create_infer_request())
        out = whole[0].infer({0: x})[0]
        return torch.from_numpy(np.array(out))  # the request's buffer is reused: copy

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().contiguous()
        if x.shape[0] < streams or streams == 1:
            return one(x.numpy())
        parts = x.tensor_split(streams)  # contiguous along the batch: no copy
        for request, part in zip(requests, parts, strict=True):
            request.start_async({0: part.numpy()})
        outs = []
        for request in requests:
            request.wait()
            outs.append(torch.from_numpy(np.array(request.get_output_tensor(0).data)))
        return torch.cat(outs)

    return run
