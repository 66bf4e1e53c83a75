"""The spatial mean of a dense class-score map (dense evaluation's head), and its gradient."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import BlockConfig, MeanConfig, select_mean_config, select_reduce_config
from .plan import TRITON_DTYPE, KernelPlan, Ptr, cdiv, is_channels_last, new_tensor
from .tiles import split_nchw_index


@triton.jit
def _spatial_mean_fwd_kernel(
    x_ptr,
    out_ptr,
    C,
    H,
    W,
    sxn,
    sxc,
    sxh,
    sxw,
    INV_HW,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    # out[n, c] = mean over (h, w) of x[n, c, h, w]. grid: (N, cdiv(C, BLOCK_C))
    n = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    base = n.to(tl.int64) * sxn + c * sxc
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, H * W, BLOCK_HW):
        p = p0 + tl.arange(0, BLOCK_HW)
        off = (p // W) * sxh + (p % W) * sxw
        ok = (p < H * W)[:, None] & (c < C)[None, :]
        acc += tl.load(x_ptr + base[None, :] + off[:, None], mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) * INV_HW
    tl.store(out_ptr + n.to(tl.int64) * C + c, mean.to(out_ptr.dtype.element_ty), mask=c < C)


@triton.jit
def _spatial_mean_bwd_kernel(
    dy_ptr,
    dx_ptr,
    TOTAL,
    C,
    H,
    W,
    sgn,
    sgc,
    INV_HW,
    CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # dx[n, c, h, w] = dy[n, c] / (H·W), written in dx's memory order. grid: (cdiv(TOTAL, BLOCK),)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < TOTAL
    n, c, _, _ = split_nchw_index(offs, C, H, W, CHANNELS_LAST)
    g = tl.load(dy_ptr + n * sgn + c * sgc, mask=ok, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, (g * INV_HW).to(dx_ptr.dtype.element_ty), mask=ok)


def spatial_mean_fwd_plan(batch, c, h, w, dtype, strides=None, config: MeanConfig | None = None):
    cfg = config or select_mean_config(c)
    sn, sc, sh, sw = strides or (c * h * w, h * w, w, 1)
    return KernelPlan(
        kind="spatial_mean_fwd",
        fn=_spatial_mean_fwd_kernel,
        grid=(batch, cdiv(c, cfg.block_c)),
        args={
            "x_ptr": Ptr(dtype),
            "out_ptr": Ptr(dtype),
            "C": c,
            "H": h,
            "W": w,
            "sxn": sn,
            "sxc": sc,
            "sxh": sh,
            "sxw": sw,
            "INV_HW": 1.0 / (h * w),
        },
        constexprs={"BLOCK_C": cfg.block_c, "BLOCK_HW": cfg.block_hw},
        num_warps=cfg.num_warps,
        num_stages=1,
        config=cfg,
        flops=batch * c * h * w,
        min_bytes=batch * c * (h * w + 1) * ELEMENT_BYTES[dtype],
    )


def spatial_mean_bwd_plan(
    batch, c, h, w, dtype, channels_last=False, dy_strides=None, config: BlockConfig | None = None
):
    total = batch * c * h * w
    cfg = config or select_reduce_config(total)
    sgn, sgc = dy_strides or (c, 1)
    return KernelPlan(
        kind="spatial_mean_bwd",
        fn=_spatial_mean_bwd_kernel,
        grid=(cdiv(total, cfg.block),),
        args={
            "dy_ptr": Ptr(dtype),
            "dx_ptr": Ptr(dtype),
            "TOTAL": total,
            "C": c,
            "H": h,
            "W": w,
            "sgn": sgn,
            "sgc": sgc,
            "INV_HW": 1.0 / (h * w),
        },
        constexprs={"CHANNELS_LAST": channels_last, "BLOCK": cfg.block},
        num_warps=cfg.num_warps,
        num_stages=1,
        config=cfg,
        flops=total,
        min_bytes=(total + batch * c) * ELEMENT_BYTES[dtype],
    )


class SpatialMean(torch.autograd.Function):
    """(N, C, H, W) → (N, C) average over positions (the dense class-score map)."""

    @staticmethod
    def forward(ctx, x, config):
        batch, c, h, w = x.shape
        plan = spatial_mean_fwd_plan(batch, c, h, w, TRITON_DTYPE[x.dtype], x.stride(), config)
        out = new_tensor((batch, c), x.dtype, x.device)
        plan.launch(x_ptr=x, out_ptr=out)
        ctx.shape = x.shape
        ctx.channels_last = is_channels_last(x)
        ctx.config = config
        return out

    @staticmethod
    def backward(ctx, dy):
        batch, c, h, w = ctx.shape
        dx = new_tensor(ctx.shape, dy.dtype, dy.device, channels_last=ctx.channels_last)
        plan = spatial_mean_bwd_plan(
            batch, c, h, w, TRITON_DTYPE[dy.dtype], ctx.channels_last, dy.stride()
        )
        plan.launch(dy_ptr=dy, dx_ptr=dx)
        return dx, None


def spatial_mean(x: torch.Tensor, config: MeanConfig | None = None) -> torch.Tensor:
    """x.mean(dim=(2, 3)) for an (N, C, H, W) tensor."""
    if x.dim() != 4:
        raise ValueError(f"spatial_mean: want (N, C, H, W), got {tuple(x.shape)}")
    return SpatialMean.apply(x, config)
