"""2×2/2 max pool forward and backward against torch: ties, odd sizes, layouts, NaN, configs."""

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_close, randn
from vggspec.compiler.kernels import max_pool2x2
from vggspec.compiler.kernels.configs import POOL_CONFIGS

from bench.kernel_cases import POOL_SHAPES as SHAPES


def _tied(shape, rng, dtype=torch.float32, channels_last=False):
    """Integer-valued input, so most windows hold ties that torch breaks row-major first."""
    x = randn(shape, rng, dtype, scale=1.5).round()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _compare(x, config=None, tag="fp32"):
    x = x.detach().requires_grad_()
    y = max_pool2x2(x, config, config)
    dy = torch.randn(y.shape).to(x.dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().requires_grad_()
    yr = F.max_pool2d(xr, 2, 2)
    (dxr,) = torch.autograd.grad(yr, xr, dy)
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    where = f"{tuple(x.shape)} {getattr(config, 'name', 'selected')}"
    # Max and argmax routing are exact operations: demand bit equality.
    assert_close(y, yr, 0.0, f"pool fwd {tag}", where)
    assert_close(dx, dxr, 0.0, f"pool dx {tag}", where)
    return y, dx


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("config", POOL_CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pool_matches_torch_with_ties(shape, config, channels_last, rng):
    x = _tied(shape, rng, channels_last=channels_last)
    y, dx = _compare(x, config)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


def test_pool_bf16(rng):
    _compare(_tied((2, 6, 5, 7), rng, torch.bfloat16, channels_last=True), tag="bf16")


def test_pool_propagates_nan_and_routes_its_gradient_like_torch(rng):
    x = randn((1, 2, 4, 5), rng)
    x[0, 0, 0, 1] = float("nan")
    x[0, 1, 3, 2] = float("nan")
    x[0, 1, 2, 3] = float("nan")
    x[0, 1, 3, 3] = float("nan")  # two NaNs in one window
    _compare(x, tag="nan")


def test_pool_all_equal_window_sends_gradient_to_first(rng):
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    (dx,) = torch.autograd.grad(max_pool2x2(x), x, torch.ones(1, 1, 1, 1))
    assert dx.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_pool_rejects_too_small_input():
    with pytest.raises(ValueError, match="smaller than the window"):
        max_pool2x2(torch.zeros(1, 1, 1, 5))
