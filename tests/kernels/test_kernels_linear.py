"""FC kernels (GEMM + bias + ReLU, gated backward, split-K) against torch, every config."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_close, randn
from vggspec.compiler.kernels import linear_bias_act
from vggspec.compiler.kernels.configs import MATMUL_CONFIGS, REDUCE_CONFIGS
from vggspec.compiler.kernels.splitk import splitk_sum

from bench.kernel_cases import LINEAR_SHAPES as SHAPES

FP32_TOL = 1e-5


def _compare(m, k, n, relu, rng, dtype=torch.float32, tol=FP32_TOL, bias=True, where="", **cfg):
    x = randn((m, k), rng, dtype).requires_grad_()
    w = randn((n, k), rng, dtype, scale=0.2).requires_grad_()
    b = randn((n,), rng, dtype).requires_grad_() if bias else None
    leaves = [t for t in (x, w, b) if t is not None]
    y = linear_bias_act(x, w, b, relu, **cfg)
    dy = randn((m, n), rng, dtype)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    yr = F.linear(*ref_leaves)
    yr = F.relu(yr) if relu else yr
    ref_grads = torch.autograd.grad(yr, ref_leaves, dy.float())
    tag = "bf16" if dtype == torch.bfloat16 else "fp32"
    assert y.dtype == dtype
    assert_close(y, yr, tol, f"linear fwd {tag}", where)
    for name, g, gr in zip(("dx", "dw", "db"), grads, ref_grads, strict=False):
        assert g.dtype == dtype
        assert_close(g, gr, tol, f"linear {name} {tag}", where)


@pytest.mark.parametrize("splits", [1, 2, 3])
@pytest.mark.parametrize("config", MATMUL_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_every_config_and_split(shape, config, splits, rng):
    cfg = dataclasses.replace(config, split_k=splits)
    relu = (splits + len(shape[0:1]) + shape[2]) % 2 == 1  # both settings across the grid
    _compare(
        *shape,
        relu,
        rng,
        config=cfg,
        dgrad_config=cfg,
        wgrad_config=cfg,
        where=f"{shape} {config.name} split{splits}",
    )


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_linear_default_selection(shape, relu, rng):
    _compare(*shape, relu, rng, where=f"{shape} selected")


def test_linear_without_bias(rng):
    _compare(3, 40, 9, True, rng, bias=False, where="no bias")


def test_linear_bf16(rng):
    _compare(3, 70, 21, True, rng, torch.bfloat16, tol=1.5e-2, where="bf16")


def test_linear_keeps_leading_dims(rng):
    x = randn((2, 3, 11), rng)
    w = randn((5, 11), rng)
    y = linear_bias_act(x, w, None, relu=False)
    assert_close(y, F.linear(x, w), FP32_TOL, "linear fwd fp32", "3-d input")


@pytest.mark.parametrize("config", REDUCE_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("relu", [False, True])
def test_splitk_sum_adds_slices_in_order_with_epilogue(config, relu, rng):
    partials = randn((5, 7 * 300), rng)
    bias = randn((300,), rng)
    out = torch.full((7, 300), float("nan"))
    splitk_sum(partials, out, bias, relu, config)
    want = partials.sum(0).view(7, 300) + bias
    want = F.relu(want) if relu else want
    assert_close(out, want, FP32_TOL, "splitk sum", config.name)


def test_linear_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="all be fp32 or all bf16"):
        linear_bias_act(torch.zeros(2, 4), torch.zeros(3, 4, dtype=torch.bfloat16), None)
