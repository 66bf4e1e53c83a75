"""Conv + bias + ReLU kernels (forward, data and weight gradients) against torch, every config."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_close, randn
from vggspec.compiler.kernels import conv2d_bias_act
from vggspec.compiler.kernels.configs import CONV_CONFIGS, WGRAD_CONFIGS
from vggspec.compiler.kernels.conv import conv_wgrad_plan
from vggspec.compiler.kernels.shapes import ConvLaunch

from bench.kernel_cases import CONV_CASES as CASES
from bench.kernel_cases import ConvCase

FP32_TOL = 1e-5
BF16_TOL = 1.5e-2


def _run(case: ConvCase, rng, dtype=torch.float32, bias=True, wrt="xwb", **configs):
    """Kernel and torch results for one case; gradients only for the leaves in ``wrt``
    (the interpreter is slow, so a test asks only for the kernels it checks)."""
    x = randn((case.batch, case.c_in, case.h, case.w), rng, dtype, case.channels_last)
    w = randn((case.c_out, case.c_in, case.kh, case.kw), rng, dtype, scale=0.3)
    b = randn((case.c_out,), rng, dtype) if bias else None
    named = [(n, t) for n, t in zip("xwb", (x, w, b), strict=True) if t is not None and n in wrt]
    for _, t in named:
        t.requires_grad_()
    y = conv2d_bias_act(x, w, b, (case.ph, case.pw), case.relu, **configs)
    dy = randn(tuple(y.shape), rng, dtype)
    grads = dict(
        zip((n for n, _ in named), torch.autograd.grad(y, [t for _, t in named], dy), strict=True)
    )

    ref = {
        n: t.detach().float().requires_grad_(n in wrt) if t is not None else None
        for n, t in zip("xwb", (x, w, b), strict=True)
    }
    yr = F.conv2d(ref["x"], ref["w"], ref["b"], padding=(case.ph, case.pw))
    if case.relu:
        yr = F.relu(yr)
    ref_grads = dict(
        zip(grads, torch.autograd.grad(yr, [ref[n] for n in grads], dy.float()), strict=True)
    )
    return y, grads, yr, ref_grads


_GRAD_NAMES = {"x": "dx", "w": "dw", "b": "db"}


def _check(case, y, grads, yr, ref_grads, tol, tag, where):
    assert_close(y, yr, tol, f"conv fwd {tag}", where)
    for n, g in grads.items():
        assert g.dtype == (torch.bfloat16 if tag == "bf16" else torch.float32)
        assert_close(g, ref_grads[n], tol, f"conv {_GRAD_NAMES[n]} {tag}", where)


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_forward_and_dgrad_fp32_every_config(case, config, rng):
    y, grads, yr, ref = _run(case, rng, wrt="x", config=config, dgrad_config=config)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _check(case, y, grads, yr, ref, FP32_TOL, "fp32", f"{case} {config.name}")


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("config", WGRAD_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_wgrad_fp32_every_config_and_split(case, config, splits, rng):
    forced = dataclasses.replace(config, split_k=splits)
    y, grads, yr, ref = _run(case, rng, wrt="wb", wgrad_config=forced)
    _check(case, y, grads, yr, ref, FP32_TOL, "fp32", f"{case} {config.name} split{splits}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv_default_selection_fp32(case, rng):
    y, grads, yr, ref = _run(case, rng)
    _check(case, y, grads, yr, ref, FP32_TOL, "fp32", f"{case} selected")


def test_conv_wgrad_many_uneven_splits(rng):
    """More slices than steps divide evenly; the trailing slice is short, none is empty."""
    case = ConvCase(3, 6, 9, 11, 10, 3, 3, 1, 1, True, False)
    cfg = dataclasses.replace(WGRAD_CONFIGS[-1], split_k=7)
    plan = conv_wgrad_plan(ConvLaunch("uneven", *case[:-1]), "fp32", config=cfg)
    assert plan.notes["splits"] > 1
    y, grads, yr, ref = _run(case, rng, wgrad_config=cfg)
    _check(case, y, grads, yr, ref, FP32_TOL, "fp32", "uneven splits")


def test_conv_without_bias(rng):
    case = CASES[0]
    y, grads, yr, ref = _run(case, rng, bias=False)
    assert set(grads) == {"x", "w"}
    _check(case, y, grads, yr, ref, FP32_TOL, "fp32", "no bias")


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: c.name)
def test_conv_bf16_every_config(config, rng):
    case = CASES[5]
    y, grads, yr, ref = _run(case, rng, torch.bfloat16, config=config, dgrad_config=config)
    assert y.dtype == torch.bfloat16
    _check(case, y, grads, yr, ref, BF16_TOL, "bf16", f"{case} {config.name}")


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[6]], ids=str)
def test_conv_bf16_default_selection(case, rng):
    y, grads, yr, ref = _run(case, rng, torch.bfloat16)
    _check(case, y, grads, yr, ref, BF16_TOL, "bf16", f"{case} selected")


def test_conv_propagates_nan_like_torch(rng):
    x = randn((1, 4, 5, 6), rng)
    x[0, 1, 2, 3] = float("nan")
    w = randn((5, 4, 3, 3), rng)
    b = randn((5,), rng)
    y = conv2d_bias_act(x, w, b, (1, 1))
    ref = F.relu(F.conv2d(x, w, b, padding=1))
    assert torch.isnan(ref).any()
    assert_close(y, ref, FP32_TOL, "conv fwd nan", "nan input")


def test_conv_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="filter"):
        conv2d_bias_act(torch.zeros(1, 3, 4, 4), torch.zeros(8, 4, 3, 3), None, (1, 1))


def test_conv_rejects_mixed_dtypes():
    x = torch.zeros(1, 3, 4, 4, dtype=torch.bfloat16)
    w = torch.zeros(8, 3, 3, 3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="all be fp32 or all bf16"):
        conv2d_bias_act(x, w, torch.zeros(8), (1, 1))
