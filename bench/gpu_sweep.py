"""Every kernel configuration against torch on one device: forward and gradients, per dtype.

The kernel tests' shapes (bench/kernel_cases.py) run here with the device's tensors instead
of the interpreter's, one unit (bench/gpu_plan.py) per family, config, shape and dtype.
Errors are max|a - b| / max|b| against torch in fp32 on the same inputs; TOLERANCE gives the
bound per dtype (pooling is exact in both).
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from vggspec.compiler.kernels import (
    conv2d_bias_act,
    linear_bias_act,
    max_pool2x2,
    softmax,
    softmax_cross_entropy,
    spatial_mean,
)
from vggspec.compiler.kernels.configs import (
    CONV_CONFIGS,
    MATMUL_CONFIGS,
    MEAN_CONFIGS,
    POOL_CONFIGS,
    SOFTMAX_CONFIGS,
    WGRAD_CONFIGS,
)
from vggspec.compiler.lowering.autotune import relative_error

from bench.gpu_plan import Unit
from bench.kernel_cases import (
    CONV_CASES,
    LINEAR_SHAPES,
    MEAN_SHAPES,
    POOL_SHAPES,
    SOFTMAX_SHAPES,
)

DTYPES = {"bf16": torch.bfloat16, "tf32": torch.float32}
# bf16: the kernel tests' bound (operands and outputs rounded to 8 bits). TF32: operands
# rounded to 11 bits, fp32 accumulation; the interpreter computes TF32 dots in fp32.
TOLERANCE = {"bf16": 1.5e-2, "tf32": 5e-3}


class Inputs:
    """Draws a unit's inputs on a device: random from the unit's own seed, or shape-only
    on "meta" (for the plan)."""

    def __init__(self, device: str, seed: str):
        self.device = device
        self.g = (
            None
            if device == "meta"
            else torch.Generator(device).manual_seed(zlib.crc32(seed.encode()))
        )

    def randn(self, shape, dtype, scale=1.0, channels_last=False):
        if self.g is None:
            t = torch.empty(shape, device="meta", dtype=dtype)
        else:
            t = (torch.randn(shape, generator=self.g, device=self.device) * scale).to(dtype)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    def labels(self, n: int, classes: int):
        if self.g is None:
            return torch.empty(n, device="meta", dtype=torch.long)
        return torch.randint(0, classes, (n,), generator=self.g, device=self.device)


def _leaves(inputs, wrt):
    return [
        t.detach().requires_grad_(i in wrt) if t.is_floating_point() else t
        for i, t in enumerate(inputs)
    ]


def _triton_side(ours, inputs, wrt):
    """The kernels' forward, and the gradients of the inputs in `wrt`."""
    leaves = _leaves(inputs, wrt)
    y = ours(*leaves)
    if wrt:
        torch.autograd.grad(y, [leaves[i] for i in wrt], torch.ones_like(y))


def compare(ours, reference, inputs, wrt, device):
    """Worst error of `ours` against `reference` (run on fp32 copies): output, then the
    gradients of the inputs in `wrt` for one random output gradient."""
    g = torch.Generator(device).manual_seed(0)
    leaves = _leaves(inputs, wrt)
    y = ours(*leaves)
    dy = torch.randn(y.shape, generator=g, device=device).to(y.dtype)
    grads = torch.autograd.grad(y, [leaves[i] for i in wrt], dy) if wrt else ()
    ref_leaves = _leaves([t.float() if t.is_floating_point() else t for t in inputs], wrt)
    yr = reference(*ref_leaves)
    ref_grads = torch.autograd.grad(yr, [ref_leaves[i] for i in wrt], dy.float()) if wrt else ()
    errors = [relative_error(y.float(), yr)]
    errors += [relative_error(a.float(), b) for a, b in zip(grads, ref_grads, strict=True)]
    return max(errors)


def _unit(family, config, case, dtype_name, device, make, ours, reference, wrt, bound=None):
    """A sweep unit: `make(inputs)` draws the tensors, `ours` runs the kernels on them."""
    name = f"{family} {config.name} {case} {dtype_name}"
    tol = TOLERANCE[dtype_name] if bound is None else bound

    def run():
        error = compare(ours, reference, make(Inputs(device, name)), wrt, device)
        return [
            {
                "family": family,
                "config": config.name,
                "case": str(case),
                "dtype": dtype_name,
                "error": error,
                "tol": tol,
                "ok": bool(error <= tol),
            }
        ]

    return Unit(
        "kernels",
        name,
        dtype_name,
        triton=lambda where: _triton_side(ours, make(Inputs(where, name)), wrt),
        run=run,
        config=config.name,
    )


def _conv_units(case, dtype, dtype_name, device, configs):
    def make(draw):
        x = draw.randn((case.batch, case.c_in, case.h, case.w), dtype, 1, case.channels_last)
        w = draw.randn((case.c_out, case.c_in, case.kh, case.kw), dtype, 0.3)
        return [x, w, draw.randn((case.c_out,), dtype)]

    pad, relu = (case.ph, case.pw), case.relu

    def ref(x, w, b):
        y = F.conv2d(x, w, b, padding=pad)
        return F.relu(y) if relu else y

    units = []
    for cfg in CONV_CONFIGS[:configs]:
        units.append(_unit(
            "conv fwd", cfg, case, dtype_name, device, make,
            lambda x, w, b, c=cfg: conv2d_bias_act(x, w, b, pad, relu, c), ref, (),
        ))  # fmt: skip
        units.append(_unit(
            "conv dgrad", cfg, case, dtype_name, device, make,
            lambda x, w, b, c=cfg: conv2d_bias_act(x, w, b, pad, relu, dgrad_config=c), ref,
            (0,),
        ))  # fmt: skip
    for cfg in WGRAD_CONFIGS[:configs]:
        units.append(_unit(
            "conv wgrad", cfg, case, dtype_name, device, make,
            lambda x, w, b, c=cfg: conv2d_bias_act(x, w, b, pad, relu, wgrad_config=c), ref,
            (1, 2),
        ))  # fmt: skip
    return units


def sweep_units(device: str, dtype_name: str, cases: int, configs: int | None = None) -> list:
    """Units for every config (the first `configs` of each family, for a dry run) × the
    first `cases` shapes of each family, in one dtype."""
    dtype = DTYPES[dtype_name]
    units = []
    for case in CONV_CASES[:cases]:
        units += _conv_units(case, dtype, dtype_name, device, configs)

    for m, k, n in LINEAR_SHAPES[:cases]:

        def make(draw, m=m, k=k, n=n):
            return [
                draw.randn((m, k), dtype),
                draw.randn((n, k), dtype, 0.2),
                draw.randn((n,), dtype),
            ]

        for cfg in MATMUL_CONFIGS[:configs]:
            units.append(_unit(
                "linear fwd+dgrad+wgrad", cfg, (m, k, n), dtype_name, device, make,
                lambda x, w, b, c=cfg: linear_bias_act(x, w, b, True, c, c, c),
                lambda x, w, b: F.relu(F.linear(x, w, b)), (0, 1, 2),
            ))  # fmt: skip

    for shape in POOL_SHAPES[:cases]:

        def make(draw, shape=shape):
            return [draw.randn(shape, dtype, 1.5).round()]  # ties, as in the kernel tests

        for cfg in POOL_CONFIGS[:configs]:
            units.append(_unit(
                "max pool fwd+bwd", cfg, shape, dtype_name, device, make,
                lambda x, c=cfg: max_pool2x2(x, c, c), lambda x: F.max_pool2d(x, 2, 2), (0,),
                bound=0.0,
            ))  # fmt: skip

    for shape in SOFTMAX_SHAPES[:cases]:

        def make(draw, shape=shape):
            return [draw.randn(shape, torch.float32, 3).to(dtype)]

        def make_xent(draw, shape=shape):
            return [draw.randn(shape, torch.float32, 3), draw.labels(shape[0], shape[1])]

        for cfg in SOFTMAX_CONFIGS[:configs]:
            units.append(_unit(
                "softmax fwd+bwd", cfg, shape, dtype_name, device, make,
                lambda x, c=cfg: softmax(x, 1, c), lambda x: torch.softmax(x, 1), (0,),
            ))  # fmt: skip
            units.append(_unit(
                "cross-entropy fwd+bwd", cfg, shape, dtype_name, device, make_xent,
                lambda x, t, c=cfg: softmax_cross_entropy(x, t, c),
                lambda x, t: F.cross_entropy(x, t), (0,),
            ))  # fmt: skip

    for shape in MEAN_SHAPES[:cases]:

        def make(draw, shape=shape):
            return [draw.randn(shape, dtype)]

        for cfg in MEAN_CONFIGS[:configs]:
            units.append(_unit(
                "spatial mean fwd+bwd", cfg, shape, dtype_name, device, make,
                lambda x, c=cfg: spatial_mean(x, c), lambda x: x.mean(dim=(2, 3)), (0,),
            ))  # fmt: skip
    return units
