"""Soft-max, soft-max + cross-entropy and spatial mean against torch, every config."""

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_close, randn
from vggspec.compiler.kernels import softmax, softmax_cross_entropy, spatial_mean
from vggspec.compiler.kernels.configs import MEAN_CONFIGS, SOFTMAX_CONFIGS

FP32_TOL = 1e-5


@pytest.mark.parametrize("config", SOFTMAX_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("shape", [(3, 1000), (2, 77), (1, 5)], ids=str)
def test_cross_entropy_matches_torch(shape, config, rng):
    x = randn(shape, rng, scale=3.0).requires_grad_()
    t = torch.randint(0, shape[1], (shape[0],), generator=rng)
    loss = softmax_cross_entropy(x, t, config)
    (dx,) = torch.autograd.grad(loss * 2.5, x)
    xr = x.detach().requires_grad_()
    ref = F.cross_entropy(xr, t)
    (dxr,) = torch.autograd.grad(ref * 2.5, xr)
    assert loss.shape == ()
    assert_close(loss, ref, FP32_TOL, "xent loss fp32", f"{shape} {config.name}")
    assert_close(dx, dxr, FP32_TOL, "xent dx fp32", f"{shape} {config.name}")


def test_cross_entropy_is_stable_for_huge_logits(rng):
    x = randn((4, 300), rng, scale=1e4).requires_grad_()
    t = torch.tensor([0, 7, 299, 150])
    loss = softmax_cross_entropy(x, t)
    (dx,) = torch.autograd.grad(loss, x)
    xr = x.detach().requires_grad_()
    ref = F.cross_entropy(xr, t)
    (dxr,) = torch.autograd.grad(ref, xr)
    assert torch.isfinite(loss) and torch.isfinite(dx).all()
    assert_close(loss, ref, FP32_TOL, "xent loss huge logits", "1e4 scale")
    assert (dx - dxr).abs().max() < 1e-6


def test_cross_entropy_out_of_range_target_gives_nan(rng):
    x = randn((2, 10), rng)
    assert torch.isnan(softmax_cross_entropy(x, torch.tensor([3, 10])))


def test_cross_entropy_bf16_logits(rng):
    x = randn((3, 50), rng, torch.bfloat16).requires_grad_()
    t = torch.randint(0, 50, (3,), generator=rng)
    loss = softmax_cross_entropy(x, t)
    (dx,) = torch.autograd.grad(loss, x)
    xr = x.detach().float().requires_grad_()
    ref = F.cross_entropy(xr, t)
    (dxr,) = torch.autograd.grad(ref, xr)
    assert dx.dtype == torch.bfloat16
    assert_close(loss, ref, 1e-5, "xent loss bf16", "bf16")
    assert_close(dx, dxr, 1.5e-2, "xent dx bf16", "bf16")


@pytest.mark.parametrize("config", SOFTMAX_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize(
    "shape,channels_last",
    [((3, 1000), False), ((2, 77), False), ((2, 13, 3, 5), False), ((2, 13, 3, 5), True)],
    ids=["3x1000", "2x77", "score-map-nchw", "score-map-nhwc"],
)
def test_softmax_matches_torch(shape, channels_last, config, rng):
    x = randn(shape, rng, channels_last=channels_last, scale=3.0).requires_grad_()
    y = softmax(x, 1, config)
    dy = randn(shape, rng)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().requires_grad_()
    yr = torch.softmax(xr, 1)
    (dxr,) = torch.autograd.grad(yr, xr, dy)
    assert_close(y, yr, FP32_TOL, "softmax fwd fp32", f"{shape} {config.name}")
    assert_close(dx, dxr, FP32_TOL, "softmax dx fp32", f"{shape} {config.name}")


def test_softmax_last_dim_of_3d(rng):
    x = randn((2, 3, 9), rng)
    assert_close(softmax(x, -1), torch.softmax(x, -1), FP32_TOL, "softmax fwd fp32", "dim=-1")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("config", MEAN_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("shape", [(2, 70, 6, 5), (1, 9, 7, 1), (3, 5, 1, 1)], ids=str)
def test_spatial_mean_matches_torch(shape, config, channels_last, rng):
    x = randn(shape, rng, channels_last=channels_last).requires_grad_()
    y = spatial_mean(x, config)
    dy = randn(tuple(y.shape), rng)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().requires_grad_()
    yr = xr.mean(dim=(2, 3))
    (dxr,) = torch.autograd.grad(yr, xr, dy)
    assert_close(y, yr, FP32_TOL, "spatial mean fwd fp32", f"{shape} {config.name}")
    assert_close(dx, dxr, FP32_TOL, "spatial mean dx fp32", f"{shape} {config.name}")


def test_spatial_mean_bf16(rng):
    x = randn((2, 70, 3, 5), rng, torch.bfloat16)
    assert_close(spatial_mean(x), x.float().mean((2, 3)), 1e-2, "spatial mean bf16", "bf16")
