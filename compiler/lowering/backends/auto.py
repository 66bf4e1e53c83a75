"""The "auto" backend: each call that has a Triton kernel goes to the triton or the torch
backend, whichever the autotuner measured faster (and correct) for that call's signature."""

from __future__ import annotations

import torch

from ...kernels.plan import tf32_allowed
from ..autotune import Autotuner, default_autotuner
from . import torch_functional, triton_kernels

_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def describe(value) -> str:
    """One argument of a call as it appears in a signature: bf16[64x3x224x224]cl, 1x1, …"""
    if isinstance(value, torch.Tensor):
        dims = "x".join(map(str, value.shape))
        layout = "cl" if value.dim() == 4 and not value.is_contiguous() else ""
        return f"{_SHORT.get(value.dtype, str(value.dtype).removeprefix('torch.'))}[{dims}]{layout}"
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return "x".join(map(str, value))
    return str(value)


def precision_of(method: str, args: tuple) -> str:
    """What the call computes in: the autocast dtype for GEMMs under autocast, else the
    inputs' dtype, and fp32 on a GPU that allows TF32 counts as TF32."""
    x = args[0]
    dtype = x.dtype
    meta = x.device.type == "meta"  # (gpu-check's plan: no autocast on shape-only tensors)
    if method in ("conv", "linear") and not meta and torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    name = _SHORT.get(dtype, "fp32")
    if name == "fp32" and x.device.type == "cuda":
        tf32 = tf32_allowed("conv" if method == "conv" else "matmul")
        return "tf32" if tf32 else "fp32"
    return name


class Backend(torch_functional.Backend):
    """The calls below are measured per signature; everything else (ReLU alone, LRN,
    average pooling, batch norm, dropout) runs as the torch backend runs it, inherited.

    `tuner`: the Autotuner that measures and remembers (default: the process's; with
    VGGSPEC_AUTO_STAND_IN set, its timer is a stand-in, see autotune.stand_in_timer).
    """

    name = "auto"
    # Both sides take channels-last: the Triton convs need it, cuDNN runs it well.
    memory_format = torch.channels_last

    def __init__(self, tuner: Autotuner | None = None):
        self.tuner = tuner or default_autotuner()
        self.sides = {"triton": triton_kernels.Backend(), "torch": torch_functional.Backend()}

    def conv(self, x, weight, bias, padding, relu):
        return self._dispatch("conv", x, weight, bias, tuple(padding), relu)

    def linear(self, x, weight, bias, relu):
        return self._dispatch("linear", x, weight, bias, relu)

    def max_pool(self, x, kernel=2, stride=2, ceil=False):
        if (kernel, stride, ceil) != triton_kernels.POOL_KERNEL:  # one side only: torch's
            return super().max_pool(x, kernel, stride, ceil)
        return self._dispatch("max_pool", x)

    def spatial_mean(self, x):
        return self._dispatch("spatial_mean", x)

    def softmax(self, x):
        return self._dispatch("softmax", x)

    def cross_entropy(self, logits, target):
        return self._dispatch("cross_entropy", logits, target)

    def _dispatch(self, method: str, *args):
        backward = torch.is_grad_enabled() and any(
            isinstance(a, torch.Tensor) and a.requires_grad for a in args
        )
        precision = precision_of(method, args)
        signature = " ".join(
            [method, *map(describe, args), precision, "fwd+bwd" if backward else "fwd"]
        )
        choice = self.tuner.choose(
            signature,
            precision,
            args[0].device,
            {side: trial(self.sides[side], method, args, backward) for side in self.sides},
            shared=backward,
        )
        return getattr(self.sides[choice], method)(*args)


def trial(side, method: str, args: tuple, backward: bool):
    """A closure running the call on fresh leaves: its output, and with `backward` the
    gradients of the inputs that want one for a fixed random output gradient."""

    def run() -> list[torch.Tensor]:
        leaves = [
            a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
            for a in args
        ]
        out = getattr(side, method)(*leaves)
        if not backward:
            return [out.detach()]
        wrt = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
        # Its own generator: both sides get the same gradient, and the global generator
        # (which training draws from) is left alone. In the output's memory layout, as
        # training hands it back: the backward kernels measured are the ones that will run.
        if out.device.type == "meta":  # gpu-check's plan records the trial's launches
            dy = torch.empty(out.shape, device="meta", dtype=out.dtype)
        else:
            g = torch.Generator(out.device).manual_seed(0)
            dy = torch.randn(out.shape, generator=g, device=out.device).to(out.dtype)
        if out.dim() == 4 and not out.is_contiguous():
            dy = dy.contiguous(memory_format=torch.channels_last)
        return [out.detach(), *torch.autograd.grad(out, wrt, dy)]

    return run
