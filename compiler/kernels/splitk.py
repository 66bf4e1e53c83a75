"""Deterministic split-K reduction: sum fp32 partial slices in a fixed order, then bias + ReLU."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import BlockConfig, select_reduce_config
from .plan import TRITON_DTYPE, KernelPlan, Ptr, cdiv, new_tensor


@triton.jit
def _splitk_sum_kernel(
    partials_ptr,
    bias_ptr,
    out_ptr,
    LENGTH,
    SPLITS,
    BIAS_PERIOD,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(LENGTH, BLOCK),); each program owns BLOCK output elements and adds the
    # SPLITS partials of each in slice order 0, 1, ... so the result never depends on
    # which program finished first (no atomics).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < LENGTH
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, SPLITS):
        acc += tl.load(partials_ptr + s * LENGTH + offs, mask=ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % BIAS_PERIOD, mask=ok, other=0.0).to(tl.float32)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def splitk_sum_plan(
    length: int,
    splits: int,
    out_dtype: str,
    bias_dtype: str | None = None,
    bias_period: int = 1,
    relu: bool = False,
    config: BlockConfig | None = None,
) -> KernelPlan:
    """Plan summing ``splits`` fp32 slices of ``length`` elements into one output."""
    cfg = config or select_reduce_config(length)
    return KernelPlan(
        kind="splitk_sum",
        fn=_splitk_sum_kernel,
        grid=(cdiv(length, cfg.block),),
        args={
            "partials_ptr": Ptr("fp32"),
            "bias_ptr": Ptr(bias_dtype or "fp32"),
            "out_ptr": Ptr(out_dtype),
            "LENGTH": length,
            "SPLITS": splits,
            "BIAS_PERIOD": bias_period,
        },
        constexprs={"HAS_BIAS": bias_dtype is not None, "RELU": relu, "BLOCK": cfg.block},
        num_warps=cfg.num_warps,
        num_stages=1,
        config=cfg,
        flops=length * splits,
        min_bytes=length * (4 * splits + ELEMENT_BYTES[out_dtype]),
    )


def splitk_followers(
    plan: KernelPlan, length: int, dtype: str, bias_period: int = 1, relu: bool = False
) -> list[KernelPlan]:
    """The sum of a split-K GEMM's partials (with its bias and ReLU where the GEMM has
    them), or nothing when the plan does not split K."""
    splits = plan.notes["splits"]
    if splits == 1:
        return []
    bias = dtype if plan.constexprs.get("HAS_BIAS") else None
    return [splitk_sum_plan(length, splits, dtype, bias, bias_period, relu)]


def splitk_sum(
    partials: torch.Tensor,
    out: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
    config: BlockConfig | None = None,
) -> torch.Tensor:
    """Write ``sum(partials[s] for s in order)`` (+ bias over the last dim, ReLU) into ``out``."""
    splits = partials.shape[0]
    length = out.numel()
    assert partials.is_contiguous() and out.is_contiguous() and partials[0].numel() == length
    plan = splitk_sum_plan(
        length,
        splits,
        TRITON_DTYPE[out.dtype],
        TRITON_DTYPE[bias.dtype] if bias is not None else None,
        bias.numel() if bias is not None else 1,
        relu,
        config,
    )
    plan.launch(partials_ptr=partials, bias_ptr=bias if bias is not None else partials, out_ptr=out)
    return out


def new_partials(splits: int, length: int, device) -> torch.Tensor:
    """fp32 workspace of ``splits`` slices (poisoned in tests like every output)."""
    return new_tensor((splits, length), torch.float32, device)
