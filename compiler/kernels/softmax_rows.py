"""Soft-max along a dimension (forward and backward): one row per program, online max."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import RowConfig, select_softmax_config
from .plan import TRITON_DTYPE, KernelPlan, Ptr, is_channels_last, new_tensor


@triton.jit
def row_max_logsum(x_ptr, row_base, sxc, C, BLOCK: tl.constexpr):
    """max(x) and log(sum(exp(x - max))) of one row, block by block with a running max.

    The two are kept apart (not folded into one logsumexp) because x - max - log_sum
    rounds like torch's log_softmax, while x - (max + log_sum) loses the low bits of a
    large max and with them ~1e-5 of every probability.
    """
    cols = tl.arange(0, BLOCK)
    run_max = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK):
        c = c0 + cols
        v = tl.load(x_ptr + row_base + c * sxc, mask=c < C, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, v)
        # Lanes that have seen only -inf keep a zero sum instead of exp(-inf - -inf) = NaN.
        safe = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - safe) + tl.exp(v - safe)
        run_max = new_max
    row_max = tl.max(run_max, axis=0)
    total = tl.sum(run_sum * tl.exp(run_max - row_max), axis=0)
    return row_max, tl.log(total)


@triton.jit
def _softmax_fwd_kernel(
    x_ptr, out_ptr, C, INNER, sxo, sxi, sxc, soo, soi, soc, BLOCK: tl.constexpr
):
    # grid: (outer · inner,) one program per row; x is viewed as (outer, C, inner) so
    # dim=1 of an NCHW or NHWC score map needs no copy.
    r = tl.program_id(0).to(tl.int64)
    o = r // INNER
    i = r % INNER
    x_base = o * sxo + i * sxi
    out_base = o * soo + i * soi
    row_max, log_sum = row_max_logsum(x_ptr, x_base, sxc, C, BLOCK)
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + x_base + c * sxc, mask=c < C, other=0.0).to(tl.float32)
        p = tl.exp((v - row_max) - log_sum)
        tl.store(out_ptr + out_base + c * soc, p.to(out_ptr.dtype.element_ty), mask=c < C)


@triton.jit
def _softmax_bwd_kernel(
    y_ptr,
    dy_ptr,
    dx_ptr,
    C,
    INNER,
    syo,
    syi,
    syc,
    sgo,
    sgi,
    sgc,
    sdo,
    sdi,
    sdc,
    BLOCK: tl.constexpr,
):
    # dx = y ⊙ (dy - Σ dy ⊙ y) per row. grid: (outer · inner,)
    r = tl.program_id(0).to(tl.int64)
    o = r // INNER
    i = r % INNER
    y_base = o * syo + i * syi
    g_base = o * sgo + i * sgi
    d_base = o * sdo + i * sdi
    dot = tl.zeros((BLOCK,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        y = tl.load(y_ptr + y_base + c * syc, mask=c < C, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + g_base + c * sgc, mask=c < C, other=0.0).to(tl.float32)
        dot += y * g
    total = tl.sum(dot, axis=0)
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        y = tl.load(y_ptr + y_base + c * syc, mask=c < C, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + g_base + c * sgc, mask=c < C, other=0.0).to(tl.float32)
        tl.store(
            dx_ptr + d_base + c * sdc, (y * (g - total)).to(dx_ptr.dtype.element_ty), mask=c < C
        )


def row_block(columns: int, cfg: RowConfig) -> int:
    return min(cfg.block, triton.next_power_of_2(columns))


def _as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """View x as (outer, C, inner) around ``dim`` (copying only if no such view exists)."""
    outer = math.prod(x.shape[:dim])
    inner = math.prod(x.shape[dim + 1 :])
    try:
        return x.view(outer, x.shape[dim], inner)
    except RuntimeError:
        return x.contiguous().view(outer, x.shape[dim], inner)


def _three_strides(names: str, strides) -> dict[str, int]:
    """{'s<t>o': ..., 's<t>c': ..., 's<t>i': ...} for an (outer, C, inner) view's strides."""
    return {f"s{names}{d}": st for d, st in zip("oci", strides, strict=True)}


def softmax_fwd_plan(
    outer: int,
    columns: int,
    inner: int,
    dtype: str,
    x_strides: tuple[int, int, int] | None = None,
    out_strides: tuple[int, int, int] | None = None,
    config: RowConfig | None = None,
) -> KernelPlan:
    """Soft-max over the middle axis of an (outer, C, inner) view, one program per row."""
    cfg = config or select_softmax_config(columns)
    dense = (columns * inner, inner, 1)
    rows = outer * inner
    return KernelPlan(
        kind="softmax_fwd", fn=_softmax_fwd_kernel, grid=(rows,),
        args={"x_ptr": Ptr(dtype), "out_ptr": Ptr(dtype), "C": columns, "INNER": inner,
              **_three_strides("x", x_strides or dense),
              **_three_strides("o", out_strides or dense)},
        constexprs={"BLOCK": row_block(columns, cfg)}, num_warps=cfg.num_warps, num_stages=1,
        config=cfg, flops=4 * rows * columns, min_bytes=2 * rows * columns * ELEMENT_BYTES[dtype],
    )  # fmt: skip


def softmax_bwd_plan(
    outer: int,
    columns: int,
    inner: int,
    dtype: str,
    y_strides: tuple[int, int, int] | None = None,
    dy_strides: tuple[int, int, int] | None = None,
    dx_strides: tuple[int, int, int] | None = None,
    config: RowConfig | None = None,
) -> KernelPlan:
    cfg = config or select_softmax_config(columns)
    dense = (columns * inner, inner, 1)
    rows = outer * inner
    return KernelPlan(
        kind="softmax_bwd", fn=_softmax_bwd_kernel, grid=(rows,),
        args={"y_ptr": Ptr(dtype), "dy_ptr": Ptr(dtype), "dx_ptr": Ptr(dtype), "C": columns,
              "INNER": inner, **_three_strides("y", y_strides or dense),
              **_three_strides("g", dy_strides or dense),
              **_three_strides("d", dx_strides or dense)},
        constexprs={"BLOCK": row_block(columns, cfg)}, num_warps=cfg.num_warps, num_stages=1,
        config=cfg, flops=4 * rows * columns, min_bytes=3 * rows * columns * ELEMENT_BYTES[dtype],
    )  # fmt: skip


class Softmax(torch.autograd.Function):
    """Soft-max along one dimension; backward uses the saved output."""

    @staticmethod
    def forward(ctx, x, dim, config):
        x3 = _as_rows(x, dim)
        y = new_tensor(x.shape, x.dtype, x.device, channels_last=is_channels_last(x))
        y3 = _as_rows(y, dim)
        plan = softmax_fwd_plan(*x3.shape, TRITON_DTYPE[x.dtype], x3.stride(), y3.stride(), config)
        plan.launch(x_ptr=x3, out_ptr=y3)
        ctx.save_for_backward(y)
        ctx.dim, ctx.config = dim, config
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        y3, g3 = _as_rows(y, ctx.dim), _as_rows(dy.to(y.dtype), ctx.dim)
        dx = new_tensor(y.shape, y.dtype, y.device, channels_last=is_channels_last(y))
        d3 = _as_rows(dx, ctx.dim)
        plan = softmax_bwd_plan(
            *y3.shape, TRITON_DTYPE[y.dtype], y3.stride(), g3.stride(), d3.stride(), ctx.config
        )
        plan.launch(y_ptr=y3, dy_ptr=g3, dx_ptr=d3)
        return dx, None, None


def softmax(x: torch.Tensor, dim: int = 1, config: RowConfig | None = None) -> torch.Tensor:
    """torch.softmax(x, dim) for fp32/bf16 tensors of any rank (dim=1 of a score map)."""
    dim = dim % x.dim()
    return Softmax.apply(x, dim, config)
