"""Kernel launch plans: one launch description shared by host launchers and the AOT compiler."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

TRITON_DTYPE = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int64: "i64",
    torch.int32: "i32",
}

# Debugging aid: when set (the kernel tests set NaN), every output and workspace the
# launchers allocate is filled with this value first, so an element a kernel forgets
# to write shows up instead of passing as whatever the allocator left there.
FILL_NEW_OUTPUTS: float | None = None

# When set, every launch is first shown to this function, `observer(plan)`; it returns True
# to take the launch's place (gpu-check records a whole run on shape-only "meta" tensors,
# which run the host code but no kernel) or False to let the kernel run.
LAUNCH_OBSERVER = None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d tensor laid out NHWC (and not also plain contiguous, as 1×1 maps are)."""
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not (x.is_contiguous())
    )


def new_tensor(shape, dtype, device, channels_last: bool = False) -> torch.Tensor:
    """Allocate a kernel output (poisoned when FILL_NEW_OUTPUTS is set)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=fmt)
    if FILL_NEW_OUTPUTS is not None:
        out.fill_(FILL_NEW_OUTPUTS)
    return out


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tf32_allowed(kind: str) -> bool:
    """torch's TF32 setting for "conv" (cuDNN) or "matmul" GEMMs. The legacy allow_tf32
    flag, or where torch >= 2.9's fp32_precision API was used (torch then raises on
    reading the legacy flag) that API's setting."""
    try:
        if kind == "conv":
            return torch.backends.cudnn.allow_tf32
        return torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:
        api = torch.backends.cudnn.conv if kind == "conv" else torch.backends.cuda.matmul
        return api.fp32_precision == "tf32"


def dot_precision(dtype: str, allow_tf32: bool) -> str:
    """tl.dot input precision: tf32 tensor cores for fp32 only when torch allows it."""
    return "tf32" if (dtype == "fp32" and allow_tf32) else "ieee"


@dataclass(frozen=True)
class Ptr:
    """A pointer argument of a launch, known only by its element type until launch time."""

    dtype: str


@dataclass(frozen=True)
class KernelPlan:
    """Everything needed to launch one kernel, or to compile it ahead of time.

    ``args`` holds the runtime arguments in kernel order: ``Ptr`` placeholders for
    tensors, plain ints for sizes and strides. ``flops`` and ``min_bytes`` are the
    roofline inputs: useful floating-point work and the bytes that must cross DRAM at
    least once (inputs read once, outputs written once).
    """

    kind: str
    fn: Any
    grid: tuple[int, ...]
    args: dict[str, Ptr | int]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    config: Any
    flops: int = 0
    min_bytes: int = 0
    uses_dot: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def programs(self) -> int:
        return math.prod(self.grid)

    def launch(self, **tensors: torch.Tensor) -> None:
        """Run the kernel on the device its tensors are on (not the current device)."""
        if LAUNCH_OBSERVER is not None and LAUNCH_OBSERVER(self):
            return
        call = {}
        for name, spec in self.args.items():
            if isinstance(spec, Ptr):
                t = tensors[name]
                if TRITON_DTYPE[t.dtype] != spec.dtype:
                    raise TypeError(f"{self.kind}: {name} is {t.dtype}, plan expects {spec.dtype}")
                call[name] = t
            else:
                call[name] = spec
        with on_device(next(iter(tensors.values())).device):
            self.fn[self.grid](
                **call, **self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages
            )


def on_device(device: torch.device):
    """Make `device` current while a kernel launches: Triton launches on the current CUDA
    device and stream, which need not be the one a tensor lives on (cuda:1 of a DDP rank)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)
