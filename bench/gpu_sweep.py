"""Every kernel configuration against torch on one device: forward and gradients, per dtype.

The kernel tests' shapes (tests/kernels/) run here with the device's tensors instead of
the interpreter's. Errors are max|a - b| / max|b| against torch in fp32 on the same
inputs; TOLERANCE gives the bound per dtype (pooling is exact in both).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "kernels"))

from test_kernels_conv import CASES as CONV_CASES  # noqa: E402
from test_kernels_linear import SHAPES as LINEAR_SHAPES  # noqa: E402
from test_kernels_pool import SHAPES as POOL_SHAPES  # noqa: E402
from vggspec.compiler.kernels import (  # noqa: E402
    conv2d_bias_act,
    linear_bias_act,
    max_pool2x2,
    softmax,
    softmax_cross_entropy,
    spatial_mean,
)
from vggspec.compiler.kernels.configs import (  # noqa: E402
    CONV_CONFIGS,
    MATMUL_CONFIGS,
    MEAN_CONFIGS,
    POOL_CONFIGS,
    SOFTMAX_CONFIGS,
    WGRAD_CONFIGS,
)
from vggspec.compiler.lowering.autotune import relative_error  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "tf32": torch.float32}
# bf16: the kernel tests' bound (operands and outputs rounded to 8 bits). TF32: operands
# rounded to 11 bits, fp32 accumulation; the interpreter computes TF32 dots in fp32.
TOLERANCE = {"bf16": 1.5e-2, "tf32": 5e-3}
SOFTMAX_SHAPES = [(3, 1000), (2, 77), (1, 5)]
MEAN_SHAPES = [(2, 70, 6, 5), (1, 9, 7, 1), (3, 5, 1, 1)]


def _compare(ours, reference, inputs, wrt, device, dtype, exact=False):
    """Errors of `ours` against `reference` (run on fp32 copies), output then gradients."""
    g = torch.Generator(device).manual_seed(0)
    leaves = [t.detach().requires_grad_(i in wrt) for i, t in enumerate(inputs)]
    y = ours(*leaves)
    dy = torch.randn(y.shape, generator=g, device=device).to(y.dtype)
    grads = torch.autograd.grad(y, [leaves[i] for i in wrt], dy) if wrt else ()
    ref_leaves = [
        (t.detach().float() if t.is_floating_point() else t).requires_grad_(i in wrt)
        for i, t in enumerate(inputs)
    ]
    yr = reference(*ref_leaves)
    ref_grads = torch.autograd.grad(yr, [ref_leaves[i] for i in wrt], dy.float()) if wrt else ()
    errors = [relative_error(y.float(), yr)]
    errors += [relative_error(a.float(), b) for a, b in zip(grads, ref_grads, strict=True)]
    return max(errors)


def _randn(shape, g, device, dtype, scale=1.0, channels_last=False):
    t = (torch.randn(shape, generator=g, device=device) * scale).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def sweep_cases(device: str, dtype_name: str, cases: int, configs: int | None = None) -> list[dict]:
    """Rows (family, config, case, dtype, error, tol, ok): every config (the first
    `configs` of each family, for a dry run) × the first `cases` shapes of each family."""
    dtype = DTYPES[dtype_name]
    g = torch.Generator(device).manual_seed(1)
    tol = TOLERANCE[dtype_name]
    rows = []

    def add(family, config, case, error, bound=tol):
        rows.append(
            {
                "family": family,
                "config": config.name,
                "case": str(case),
                "dtype": dtype_name,
                "error": error,
                "tol": bound,
                "ok": bool(error <= bound),
            }
        )

    for case in CONV_CASES[:cases]:
        x = _randn((case.batch, case.c_in, case.h, case.w), g, device, dtype, 1, case.channels_last)
        w = _randn((case.c_out, case.c_in, case.kh, case.kw), g, device, dtype, 0.3)
        b = _randn((case.c_out,), g, device, dtype)
        pad = (case.ph, case.pw)

        def ref(x, w, b, pad=pad, relu=case.relu):
            y = F.conv2d(x, w, b, padding=pad)
            return F.relu(y) if relu else y

        for cfg in CONV_CONFIGS[:configs]:
            fwd = _compare(
                lambda x, w, b, c=cfg, p=pad, r=case.relu: conv2d_bias_act(x, w, b, p, r, c),
                ref, [x, w, b], (), device, dtype,
            )  # fmt: skip
            add("conv fwd", cfg, case, fwd)
            dgrad = _compare(
                lambda x, w, b, c=cfg, p=pad, r=case.relu: conv2d_bias_act(
                    x, w, b, p, r, dgrad_config=c
                ),
                ref, [x, w, b], (0,), device, dtype,
            )  # fmt: skip
            add("conv dgrad", cfg, case, dgrad)
        for cfg in WGRAD_CONFIGS[:configs]:
            wgrad = _compare(
                lambda x, w, b, c=cfg, p=pad, r=case.relu: conv2d_bias_act(
                    x, w, b, p, r, wgrad_config=c
                ),
                ref, [x, w, b], (1, 2), device, dtype,
            )  # fmt: skip
            add("conv wgrad", cfg, case, wgrad)

    for m, k, n in LINEAR_SHAPES[:cases]:
        x, w, b = (
            _randn(s, g, device, dtype, sc) for s, sc in (((m, k), 1), ((n, k), 0.2), ((n,), 1))
        )
        for cfg in MATMUL_CONFIGS[:configs]:
            err = _compare(
                lambda x, w, b, c=cfg: linear_bias_act(x, w, b, True, c, c, c),
                lambda x, w, b: F.relu(F.linear(x, w, b)),
                [x, w, b], (0, 1, 2), device, dtype,
            )  # fmt: skip
            add("linear fwd+dgrad+wgrad", cfg, (m, k, n), err)

    for shape in POOL_SHAPES[:cases]:
        x = _randn(shape, g, device, dtype, 1.5).round()  # ties, as in the kernel tests
        for cfg in POOL_CONFIGS[:configs]:
            err = _compare(
                lambda x, c=cfg: max_pool2x2(x, c, c), lambda x: F.max_pool2d(x, 2, 2),
                [x], (0,), device, dtype,
            )  # fmt: skip
            add("max pool fwd+bwd", cfg, shape, err, 0.0)

    for shape in SOFTMAX_SHAPES[:cases]:
        x = _randn(shape, g, device, torch.float32, 3)
        t = torch.randint(0, shape[1], (shape[0],), generator=g, device=device)
        for cfg in SOFTMAX_CONFIGS[:configs]:
            err = _compare(
                lambda x, c=cfg: softmax(x, 1, c), lambda x: torch.softmax(x, 1),
                [x.to(dtype)], (0,), device, dtype,
            )  # fmt: skip
            add("softmax fwd+bwd", cfg, shape, err)
            err = _compare(
                lambda x, c=cfg, t=t: softmax_cross_entropy(x, t, c),
                lambda x, t=t: F.cross_entropy(x, t), [x], (0,), device, torch.float32,
            )  # fmt: skip
            add("cross-entropy fwd+bwd", cfg, shape, err)

    for shape in MEAN_SHAPES[:cases]:
        x = _randn(shape, g, device, dtype)
        for cfg in MEAN_CONFIGS[:configs]:
            err = _compare(
                lambda x, c=cfg: spatial_mean(x, c), lambda x: x.mean(dim=(2, 3)),
                [x], (0,), device, dtype,
            )  # fmt: skip
            add("spatial mean fwd+bwd", cfg, shape, err)
    return rows
