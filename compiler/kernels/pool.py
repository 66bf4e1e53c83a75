"""2×2 stride-2 max pooling (floor mode); backward recomputes the argmax from the saved input."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import BlockConfig, select_pool_config
from .plan import TRITON_DTYPE, KernelPlan, Ptr, cdiv, new_tensor
from .tiles import split_nchw_index


@triton.jit
def _window_argmax(x_ptr, base, sxh, sxw, ok):
    """Max of a 2×2 window and its row-major position, with torch's tie and NaN rules.

    A later element wins only if strictly greater, or if it is NaN (torch's CPU and CUDA
    kernels both test ``val > max || isnan(val)``), so ties go to the first element and
    gradients land where torch puts them.
    """
    best = tl.load(x_ptr + base, mask=ok, other=0.0).to(tl.float32)
    idx = tl.zeros(best.shape, dtype=tl.int32)
    for pos in tl.static_range(1, 4):
        v = tl.load(x_ptr + base + (pos // 2) * sxh + (pos % 2) * sxw, mask=ok, other=0.0)
        v = v.to(tl.float32)
        take = (v > best) | (v != v)
        best = tl.where(take, v, best)
        idx = tl.where(take, pos, idx)
    return best, idx


@triton.jit
def _maxpool_fwd_kernel(
    x_ptr,
    out_ptr,
    TOTAL,
    C,
    HO,
    WO,
    sxn,
    sxc,
    sxh,
    sxw,
    CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(TOTAL, BLOCK),) over output elements in the output's memory order, so
    # the flat index is also the output offset (channels fastest for NHWC: coalesced).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < TOTAL
    n, c, oh, ow = split_nchw_index(offs, C, HO, WO, CHANNELS_LAST)
    base = n * sxn + c * sxc + (2 * oh) * sxh + (2 * ow) * sxw
    best, _ = _window_argmax(x_ptr, base, sxh, sxw, ok)
    tl.store(out_ptr + offs, best.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _maxpool_bwd_kernel(
    x_ptr,
    dy_ptr,
    dx_ptr,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    sdn,
    sdc,
    sdh,
    sdw,
    CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(TOTAL, BLOCK),) over ceil(H/2)·ceil(W/2) windows per (image, channel),
    # one more row/column than the output when H or W is odd: those windows own the input
    # cells floor mode drops and write zeros there, so every dx element is written once
    # by exactly one program (windows do not overlap: no races, no zero-fill pass).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < TOTAL
    n, c, wh, ww = split_nchw_index(offs, C, (H + 1) // 2, (W + 1) // 2, CHANNELS_LAST)
    pooled = ok & (wh < HO) & (ww < WO)
    _, idx = _window_argmax(
        x_ptr, n * sxn + c * sxc + (2 * wh) * sxh + (2 * ww) * sxw, sxh, sxw, pooled
    )
    g = tl.load(dy_ptr + n * syn + c * syc + wh * syh + ww * syw, mask=pooled, other=0.0)
    g = g.to(tl.float32)
    dx_base = n * sdn + c * sdc + (2 * wh) * sdh + (2 * ww) * sdw
    for pos in tl.static_range(0, 4):
        ih = 2 * wh + pos // 2
        iw = 2 * ww + pos % 2
        val = tl.where(pooled & (idx == pos), g, 0.0)
        tl.store(
            dx_ptr + dx_base + (pos // 2) * sdh + (pos % 2) * sdw,
            val.to(dx_ptr.dtype.element_ty),
            mask=ok & (ih < H) & (iw < W),
        )


def pool_output_size(h: int, w: int) -> tuple[int, int]:
    return h // 2, w // 2


def _nchw_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _dense_strides(batch, c, h, w, channels_last):
    if channels_last:
        return h * w * c, 1, w * c, c
    return c * h * w, h * w, w, 1


def maxpool_fwd_plan(
    batch: int,
    c: int,
    h: int,
    w: int,
    dtype: str,
    channels_last: bool = True,
    x_strides: tuple[int, int, int, int] | None = None,
    config: BlockConfig | None = None,
) -> KernelPlan:
    ho, wo = pool_output_size(h, w)
    total = batch * c * ho * wo
    cfg = config or select_pool_config(total)
    sxn, sxc, sxh, sxw = x_strides or _dense_strides(batch, c, h, w, channels_last)
    e = ELEMENT_BYTES[dtype]
    return KernelPlan(
        kind="maxpool_fwd",
        fn=_maxpool_fwd_kernel,
        grid=(cdiv(total, cfg.block),),
        args={
            "x_ptr": Ptr(dtype),
            "out_ptr": Ptr(dtype),
            "TOTAL": total,
            "C": c,
            "HO": ho,
            "WO": wo,
            "sxn": sxn,
            "sxc": sxc,
            "sxh": sxh,
            "sxw": sxw,
        },
        constexprs={"CHANNELS_LAST": channels_last, "BLOCK": cfg.block},
        num_warps=cfg.num_warps,
        num_stages=1,
        config=cfg,
        flops=3 * total,
        min_bytes=(4 * total + total) * e,
    )


def maxpool_bwd_plan(
    batch: int,
    c: int,
    h: int,
    w: int,
    dtype: str,
    channels_last: bool = True,
    x_strides: tuple[int, int, int, int] | None = None,
    dy_strides: tuple[int, int, int, int] | None = None,
    dx_strides: tuple[int, int, int, int] | None = None,
    config: BlockConfig | None = None,
) -> KernelPlan:
    ho, wo = pool_output_size(h, w)
    total = batch * c * ((h + 1) // 2) * ((w + 1) // 2)
    cfg = config or select_pool_config(total)
    dense_x = _dense_strides(batch, c, h, w, channels_last)
    sx = x_strides or dense_x
    sy = dy_strides or _dense_strides(batch, c, ho, wo, channels_last)
    sd = dx_strides or dense_x
    e = ELEMENT_BYTES[dtype]
    return KernelPlan(
        kind="maxpool_bwd",
        fn=_maxpool_bwd_kernel,
        grid=(cdiv(total, cfg.block),),
        args={
            "x_ptr": Ptr(dtype),
            "dy_ptr": Ptr(dtype),
            "dx_ptr": Ptr(dtype),
            "TOTAL": total,
            "C": c,
            "H": h,
            "W": w,
            "HO": ho,
            "WO": wo,
            **dict(zip(("sxn", "sxc", "sxh", "sxw"), sx, strict=True)),
            **dict(zip(("syn", "syc", "syh", "syw"), sy, strict=True)),
            **dict(zip(("sdn", "sdc", "sdh", "sdw"), sd, strict=True)),
        },
        constexprs={"CHANNELS_LAST": channels_last, "BLOCK": cfg.block},
        num_warps=cfg.num_warps,
        num_stages=1,
        config=cfg,
        flops=3 * batch * c * ho * wo,
        min_bytes=(2 * batch * c * h * w + batch * c * ho * wo) * e,
    )


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class MaxPool2x2(torch.autograd.Function):
    """2×2/2 max pool whose backward keeps only the input it already needed (no indices)."""

    @staticmethod
    def forward(ctx, x, config, bwd_config):
        batch, c, h, w = x.shape
        channels_last = _is_channels_last(x)
        if not channels_last:
            x = x.contiguous()
        ho, wo = pool_output_size(h, w)
        plan = maxpool_fwd_plan(
            batch, c, h, w, TRITON_DTYPE[x.dtype], channels_last, _nchw_strides(x), config
        )
        out = new_tensor((batch, c, ho, wo), x.dtype, x.device, channels_last=channels_last)
        plan.launch(x_ptr=x, out_ptr=out)
        ctx.save_for_backward(x)
        ctx.channels_last = channels_last
        ctx.bwd_config = bwd_config
        return out

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        batch, c, h, w = x.shape
        dx = new_tensor(x.shape, x.dtype, x.device, channels_last=ctx.channels_last)
        plan = maxpool_bwd_plan(
            batch,
            c,
            h,
            w,
            TRITON_DTYPE[x.dtype],
            ctx.channels_last,
            _nchw_strides(x),
            _nchw_strides(dy),
            _nchw_strides(dx),
            ctx.bwd_config,
        )
        plan.launch(x_ptr=x, dy_ptr=dy, dx_ptr=dx)
        return dx, None, None


def max_pool2x2(
    x: torch.Tensor, config: BlockConfig | None = None, bwd_config: BlockConfig | None = None
) -> torch.Tensor:
    """F.max_pool2d(x, 2, 2) on an (N, C, H, W) tensor; keeps its memory format."""
    if x.dim() != 4:
        raise ValueError(f"max_pool2x2: want (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"max_pool2x2: {x.shape[2]}x{x.shape[3]} is smaller than the window")
    if x.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"max_pool2x2: unsupported dtype {x.dtype}")
    return MaxPool2x2.apply(x, config, bwd_config)
