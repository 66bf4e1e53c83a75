"""Soft-max + cross-entropy loss of class scores against labels (training's last kernel)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import RowConfig, select_softmax_config
from .plan import TRITON_DTYPE, KernelPlan, Ptr, new_tensor
from .softmax_rows import row_block, row_max_logsum
from .splitk import splitk_sum


@triton.jit
def _cross_entropy_fwd_kernel(
    x_ptr, target_ptr, loss_ptr, stats_ptr, C, sxn, sxc, INV_BATCH, BLOCK: tl.constexpr
):
    # loss_i / N = -(x_i[t_i] - max_i - log_sum_i) / N; the per-row values are then summed
    # in row order, so the mean is deterministic. A target outside [0, C) gives NaN.
    # (max_i, log_sum_i) are kept for the backward. grid: (N,)
    row = tl.program_id(0)
    base = row.to(tl.int64) * sxn
    row_max, log_sum = row_max_logsum(x_ptr, base, sxc, C, BLOCK)
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
        constexprs={"BLOCK": row_block(classes, cfg)}, num_warps=cfg.num_warps, num_stages=1,
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
        constexprs={"BLOCK": row_block(classes, cfg)}, num_warps=cfg.num_warps, num_stages=1,
        config=cfg, flops=4 * batch * classes,
        min_bytes=batch * (2 * classes * ELEMENT_BYTES[dtype] + 8 + 8),
    )  # fmt: skip


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


def softmax_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, config: RowConfig | None = None
) -> torch.Tensor:
    """F.cross_entropy(logits, target) (mean); an out-of-range target gives NaN."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"softmax_cross_entropy: logits {tuple(logits.shape)}, target {tuple(target.shape)}"
        )
    return SoftmaxCrossEntropy.apply(logits, target.long().contiguous(), config)
