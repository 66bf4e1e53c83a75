"""Whether a job fits the machine (memory, and disk for a checkpoint), checked before any work.

The figures are those of `vggspec compile --batch B` (compiler/ir/passes/count.py), float32:

- training, per process: the weights, their gradients and SGD's momentum (3 × the
  parameter bytes; 2 × without momentum), what one step keeps for backward at the
  per-process batch (`training_activation_bytes`), and the largest layer's input and
  output once more (`forward_activation_bytes`: their gradients during backward);
- evaluation, per net: the weights and one image's forward peak at the largest test
  scale Q, on a Q×Q image (the smallest an image rescaled to Q can be);
- disk: one checkpoint, the weights and the momentum.

The estimate leaves out what it cannot see (the allocator's slack, torch's own ~0.3 GB,
data-loading workers, a checkpoint being written while the last one stays): it is a floor,
so that a job it refuses cannot have fitted, and a job near the limit may still run out
late. A false refusal (of the demo, of a run that would have fitted) costs more than a late
failure, which the allocator reports anyway.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vggspec.compiler import Spec, compile_spec
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.ir.pipeline import dense_graph
from vggspec.compiler.ir.report import format_bytes as size_text

from .cpu_memory import available_bytes


class NotEnoughResources(VggspecError):
    """The job's estimate exceeds the memory or disk there is; nothing was started."""


@dataclass(frozen=True)
class TrainingNeed:
    """Bytes one training process holds."""

    weights: int  # parameters (and BN buffers)
    gradients: int
    momentum: int
    activations: int  # one step at the per-process batch
    batch: int  # per process

    @property
    def state(self) -> int:
        return self.weights + self.gradients + self.momentum

    @property
    def memory(self) -> int:
        return self.state + self.activations

    @property
    def checkpoint(self) -> int:
        return self.weights + self.momentum


# The activations' dtype under a run's `precision` (bf16: autocast), in the names of
# `vggspec compile --dtype`; the weights, gradients and momentum stay fp32 either way.
# fp64 is priced as fp32: a floor (half), the memory probe measures the real figure.
ACTIVATION_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp64": "float32"}


def training_need(
    spec: Spec, batch: int, momentum: bool = True, precision: str = "fp32"
) -> TrainingNeed:
    """The memory one training process needs at per-process batch `batch`."""
    totals = compile_spec(spec, batch=batch).graph["totals"]
    weights = totals.param_bytes
    if precision != "fp32":
        dtype = ACTIVATION_DTYPE[precision]
        totals = compile_spec(spec, batch=batch, dtype=dtype).graph["totals"]
    activations = totals.training_bytes + totals.forward_bytes
    return TrainingNeed(weights, weights, weights if momentum else 0, activations, batch)


def _gpu_free(device_index: int = 0, context: bool = True) -> int | None:
    """Free memory on a GPU, by NVML where it is installed (no CUDA context in this process),
    else torch's, which makes one: only with `context` (a process that will use that GPU
    anyway; a --nproc parent's context would hold GPU memory away from rank 0)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except Exception:  # not installed, no driver: ask torch
        pass
    if not context:
        return None
    import torch

    try:
        return int(torch.cuda.mem_get_info(device_index)[0])
    except Exception:  # no usable GPU after all: not ours to judge here
        return None


def uses_cuda(device: str) -> bool:
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def check_training(
    spec: Spec,
    batch: int,
    processes: int,
    device: str,
    out: str,
    momentum: bool = True,
    memory: int | None = None,
    disk: int | None = None,
    precision: str = "fp32",
) -> TrainingNeed:
    """Raise NotEnoughResources (one line: both figures, what to change) unless `processes`
    training processes on this machine, each with a per-process `batch`, fit in its memory
    (RAM, or each GPU's free memory) and a checkpoint fits on the disk holding `out`.
    `memory` / `disk`: the available figures, if known (else measured here)."""
    need = training_need(spec, batch, momentum, precision)
    on_gpu = uses_cuda(device)
    if memory is None:
        memory = _gpu_free(context=processes == 1) if on_gpu else available_bytes()
    needed = need.memory if on_gpu else need.memory * processes
    if memory is not None and needed > memory:
        where = "is free on the GPU" if on_gpu else "of RAM is available"
        each = f" for {processes} processes" if processes > 1 and not on_gpu else ""
        if need.state > memory / (1 if on_gpu else processes):
            change = "a smaller spec (fewer or narrower layers)"
        else:
            change = "a smaller batch_size" + (" or fewer --nproc" if each else "")
        raise NotEnoughResources(
            f"not enough memory: training needs {size_text(needed)}{each} (weights, gradients "
            f"and momentum {size_text(need.state)}, activations "
            f"{size_text(need.activations)} at {need.batch} images per process) but only "
            f"{size_text(memory)} {where}; try {change}"
        )
    if disk is None:
        folder = Path(out).absolute()
        while not folder.exists():
            folder = folder.parent
        disk = shutil.disk_usage(folder).free
    if need.checkpoint > disk:
        raise NotEnoughResources(
            f"not enough disk for a checkpoint: one needs {size_text(need.checkpoint)} (weights "
            f"and momentum) but only {size_text(disk)} is free for {out}; free some space, choose "
            "another out=, or a smaller spec"
        )
    return need


def evaluation_need(spec: Spec, scale: int) -> int:
    """Memory to evaluate one image densely at test scale `scale` (a scale×scale image):
    the weights and the forward pass's peak."""
    totals = dense_graph(compile_spec(spec), (scale, scale)).graph["totals"]
    return totals.param_bytes + totals.forward_bytes


def check_evaluation(nets: list[tuple[str, Spec, int]], device, memory: int | None = None) -> None:
    """Raise NotEnoughResources unless the nets (name, spec, largest test scale), all held at
    once for fusion, fit with one image at the largest scale each; `device`: a torch device."""
    on_gpu = getattr(device, "type", str(device)) == "cuda"
    if memory is None:
        memory = _gpu_free(getattr(device, "index", None) or 0) if on_gpu else available_bytes()
    if memory is None:
        return
    needs = [(name, scale, evaluation_need(spec, scale)) for name, spec, scale in nets]
    needed = sum(n for *_, n in needs)
    if needed > memory:
        name, scale, _ = max(needs, key=lambda item: item[2])
        raise NotEnoughResources(
            f"not enough memory: evaluating needs {size_text(needed)} (weights and one image "
            f"at the largest test scale; {name} at Q={scale}) but only {size_text(memory)} "
            f"{'is free on the GPU' if on_gpu else 'of RAM is available'}; try smaller --scales, "
            "fewer nets, or a smaller spec"
        )
