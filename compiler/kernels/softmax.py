"""Soft-max, soft-max + cross-entropy loss, and the spatial mean of a dense class-score map."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .configs import (
    BlockConfig,
    MeanConfig,
    RowConfig,
    select_mean_config,
    select_reduce_config,
    select_softmax_config,
)
from .plan import ELEMENT_BYTES, TRITON_DTYPE, KernelPlan, Ptr, cdiv, new_tensor
from .splitk import splitk_sum
from .tiles import split_nchw_index


@triton.jit
def _row_max_logsum(x_ptr, row_base, sxc, C, BLOCK: tl.constexpr):
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
    row_max, log_sum = _row_max_logsum(x_ptr, x_base, sxc, C, BLOCK)
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


@triton.jit
def _cross_entropy_fwd_kernel(
    x_ptr, target_ptr, loss_ptr, stats_ptr, C, sxn, sxc, INV_BATCH, BLOCK: tl.constexpr
):
    # loss_i / N = -(x_i[t_i] - max_i - log_sum_i) / N; the per-row values are then summed
    # in row order, so the mean is deterministic. A target outside [0, C) gives NaN.
    # (max_i, log_sum_i) are kept for the backward. grid: (N,)
    row = tl.program_id(0)
    base = row.to(tl.int64) * sxn
    row_max, log_sum = _row_max_logsum(x_ptr, base, sxc, C, BLOCK)
    t = tl.load(target_ptr + row)
    valid = (t >= 0) & (t < C)
    picked = tl.load(x_ptr + base + tl.where(valid, t, 0) * sxc).to(tl.float32)
    loss = tl.where(valid, -((picked - row_max) - log_sum), float("nan"))
    tl.store(loss_ptr + row, loss * INV_BATCH)
    tl.store(stats_ptr + 2 * row, row_max)
    tl.store(stats_ptr + 2 * row + 1, log_sum)


@triton.jit
def _cross_entropy_bwd_kernel(
    x_ptr,
    target_ptr,
    stats_ptr,
    dloss_ptr,
    dx_ptr,
    C,
    sxn,
    sxc,
    sdn,
    sdc,
    INV_BATCH,
    BLOCK: tl.constexpr,
):
    # d(mean loss)/dx_ij = (softmax_ij - [j = t_i]) / N · dloss. grid: (N,)
    row = tl.program_id(0)
    row_max = tl.load(stats_ptr + 2 * row)
    log_sum = tl.load(stats_ptr + 2 * row + 1)
    t = tl.load(target_ptr + row)
    scale = tl.load(dloss_ptr).to(tl.float32) * INV_BATCH
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + row.to(tl.int64) * sxn + c * sxc, mask=c < C, other=0.0)
        p = tl.exp((v.to(tl.float32) - row_max) - log_sum)
        g = (p - tl.where(c == t, 1.0, 0.0)) * scale
        tl.store(
            dx_ptr + row.to(tl.int64) * sdn + c * sdc, g.to(dx_ptr.dtype.element_ty), mask=c < C
        )


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


def _row_block(columns: int, cfg: RowConfig) -> int:
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
        constexprs={"BLOCK": _row_block(columns, cfg)}, num_warps=cfg.num_warps, num_stages=1,
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
        constexprs={"BLOCK": _row_block(columns, cfg)}, num_warps=cfg.num_warps, num_stages=1,
        config=cfg, flops=4 * rows * columns, min_bytes=3 * rows * columns * ELEMENT_BYTES[dtype],
    )  # fmt: skip


def cross_entropy_fwd_plan(
    batch: int,
    classes: int,
    dtype: str,
    x_strides: tuple[int, int] | None = None,
    config: RowConfig | None = None,
) -> KernelPlan:
    """Per-row loss / batch and the (max, log-sum) statistics the backward reuses."""
    cfg = config or select_softmax_config(classes)
    sxn, sxc = x_strides or (classes, 1)
    return KernelPlan(
        kind="softmax_xent_fwd", fn=_cross_entropy_fwd_kernel, grid=(batch,),
        args={"x_ptr": Ptr(dtype), "target_ptr": Ptr("i64"), "loss_ptr": Ptr("fp32"),
              "stats_ptr": Ptr("fp32"), "C": classes, "sxn": sxn, "sxc": sxc,
              "INV_BATCH": 1.0 / batch},
        constexprs={"BLOCK": _row_block(classes, cfg)}, num_warps=cfg.num_warps, num_stages=1,
        config=cfg, flops=4 * batch * classes,
        min_bytes=batch * (classes * ELEMENT_BYTES[dtype] + 8 + 4 + 8),
    )  # fmt: skip


def cross_entropy_bwd_plan(
    batch: int,
    classes: int,
    dtype: str,
    x_strides: tuple[int, int] | None = None,
    config: RowConfig | None = None,
) -> KernelPlan:
    """d loss / d logits into a fresh dense (batch, classes) tensor."""
    cfg = config or select_softmax_config(classes)
    sxn, sxc = x_strides or (classes, 1)
    return KernelPlan(
        kind="softmax_xent_bwd", fn=_cross_entropy_bwd_kernel, grid=(batch,),
        args={"x_ptr": Ptr(dtype), "target_ptr": Ptr("i64"), "stats_ptr": Ptr("fp32"),
              "dloss_ptr": Ptr("fp32"), "dx_ptr": Ptr(dtype), "C": classes, "sxn": sxn,
              "sxc": sxc, "sdn": classes, "sdc": 1, "INV_BATCH": 1.0 / batch},
        constexprs={"BLOCK": _row_block(classes, cfg)}, num_warps=cfg.num_warps, num_stages=1,
        config=cfg, flops=4 * batch * classes,
        min_bytes=batch * (2 * classes * ELEMENT_BYTES[dtype] + 8 + 8),
    )  # fmt: skip


def _is_channels_last(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not (x.is_contiguous())
    )


class Softmax(torch.autograd.Function):
    """Soft-max along one dimension; backward uses the saved output."""

    @staticmethod
    def forward(ctx, x, dim, config):
        x3 = _as_rows(x, dim)
        y = new_tensor(x.shape, x.dtype, x.device, channels_last=_is_channels_last(x))
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
        dx = new_tensor(y.shape, y.dtype, y.device, channels_last=_is_channels_last(y))
        d3 = _as_rows(dx, ctx.dim)
        plan = softmax_bwd_plan(
            *y3.shape, TRITON_DTYPE[y.dtype], y3.stride(), g3.stride(), d3.stride(), ctx.config
        )
        plan.launch(y_ptr=y3, dy_ptr=g3, dx_ptr=d3)
        return dx, None, None


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean over the batch of -log softmax(logits)[target]."""

    @staticmethod
    def forward(ctx, logits, target, config):
        batch, classes = logits.shape
        dtype = TRITON_DTYPE[logits.dtype]
        plan = cross_entropy_fwd_plan(batch, classes, dtype, logits.stride(), config)
        losses = new_tensor((batch, 1), torch.float32, logits.device)
        stats = new_tensor((batch, 2), torch.float32, logits.device)
        plan.launch(x_ptr=logits, target_ptr=target, loss_ptr=losses, stats_ptr=stats)
        loss = new_tensor((), torch.float32, logits.device)
        splitk_sum(losses, loss)  # rows added in order: a deterministic mean
        ctx.save_for_backward(logits, target, stats)
        ctx.config = config
        return loss

    @staticmethod
    def backward(ctx, dloss):
        logits, target, stats = ctx.saved_tensors
        batch, classes = logits.shape
        dtype = TRITON_DTYPE[logits.dtype]
        plan = cross_entropy_bwd_plan(batch, classes, dtype, logits.stride(), ctx.config)
        dx = new_tensor(logits.shape, logits.dtype, logits.device)
        dloss = dloss.float().reshape(1)
        plan.launch(x_ptr=logits, target_ptr=target, stats_ptr=stats, dloss_ptr=dloss, dx_ptr=dx)
        return dx, None, None


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
        ctx.channels_last = _is_channels_last(x)
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


def softmax(x: torch.Tensor, dim: int = 1, config: RowConfig | None = None) -> torch.Tensor:
    """torch.softmax(x, dim) for fp32/bf16 tensors of any rank (dim=1 of a score map)."""
    dim = dim % x.dim()
    return Softmax.apply(x, dim, config)


def softmax_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, config: RowConfig | None = None
) -> torch.Tensor:
    """F.cross_entropy(logits, target) (mean); an out-of-range target gives NaN."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"softmax_cross_entropy: logits {tuple(logits.shape)}, target {tuple(target.shape)}"
        )
    return SoftmaxCrossEntropy.apply(logits, target.long().contiguous(), config)


def spatial_mean(x: torch.Tensor, config: MeanConfig | None = None) -> torch.Tensor:
    """x.mean(dim=(2, 3)) for an (N, C, H, W) tensor."""
    if x.dim() != 4:
        raise ValueError(f"spatial_mean: want (N, C, H, W), got {tuple(x.shape)}")
    return SpatialMean.apply(x, config)
