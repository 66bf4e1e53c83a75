"""Fully connected layer: GEMM + bias + ReLU forward, gated data and weight gradients."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import MatmulConfig, select_matmul_config
from .plan import (
    TRITON_DTYPE,
    KernelPlan,
    Ptr,
    cdiv,
    dot_precision,
    interpreting,
    new_tensor,
    tf32_allowed,
)
from .shapes import LinearLaunch
from .splitk import new_partials, splitk_sum
from .tiles import load_operand


@triton.jit
def _matmul_kernel(
    a_ptr,
    gate_ptr,
    b_ptr,
    bias_ptr,
    out_ptr,
    rowsum_ptr,
    M,
    N,
    K,
    sam,
    sak,
    sbk,
    sbn,
    STEPS_PER_SPLIT,
    OUT_SPLIT_STRIDE,
    ROWSUM_SPLIT_STRIDE,
    HAS_GATE: tl.constexpr,
    EPILOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    ROWSUM: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # out[m, n] = sum_k a[m, k] * b[k, n] over any strides of a and b. ROWSUM also sums
    # each row of a (the bias gradient when a = dy^T). With several splits each writes an
    # fp32 slice without epilogue; the split-K sum adds them in order and applies it.
    # grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), splits); consecutive programs walk
    # GROUP_M row tiles down one column of tiles so their B tile stays in L2.
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    m_tiles = tl.cdiv(M, BLOCK_M)
    n_tiles = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * n_tiles
    first_m = (pid // group) * GROUP_M
    group_rows = tl.minimum(m_tiles - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_rows
    pid_n = (pid % group) // group_rows

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < N
    a_rows = rm.to(tl.int64) * sam
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    row_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    start = pid_s * STEPS_PER_SPLIT
    stop = tl.minimum(start + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    for step in range(start, stop):
        k = step * BLOCK_K + rk
        k_ok = k < K
        a_off = a_rows[:, None] + k[None, :] * sak
        a = load_operand(a_ptr, gate_ptr, a_off, m_ok[:, None] & k_ok[None, :], HAS_GATE, UPCAST)
        b_off = k[:, None] * sbk + rn[None, :] * sbn
        b = load_operand(b_ptr, b_ptr, b_off, k_ok[:, None] & n_ok[None, :], False, UPCAST)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        # constexpr test outside, runtime test inside: kernels without it emit nothing
        if ROWSUM:  # noqa: SIM102
            if pid_n == 0:
                row_acc += tl.sum(a.to(tl.float32), axis=1)

    if EPILOGUE:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    out_off = pid_s.to(tl.int64) * OUT_SPLIT_STRIDE + rm.to(tl.int64)[:, None] * N + rn[None, :]
    tl.store(
        out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :]
    )
    # constexpr test outside, runtime test inside: kernels without it emit nothing
    if ROWSUM:  # noqa: SIM102
        if pid_n == 0:
            rs_off = pid_s.to(tl.int64) * ROWSUM_SPLIT_STRIDE + rm
            tl.store(rowsum_ptr + rs_off, row_acc.to(rowsum_ptr.dtype.element_ty), mask=m_ok)


def matmul_plan(
    kind: str,
    m: int,
    n: int,
    k: int,
    dtype: str,
    a_strides: tuple[int, int],
    b_strides: tuple[int, int],
    has_gate: bool = False,
    has_bias: bool = False,
    relu: bool = False,
    rowsum: bool = False,
    config: MatmulConfig | None = None,
    allow_tf32: bool = False,
    upcast: bool | None = None,
) -> KernelPlan:
    """C[m, n] = A[m, k] · B[k, n]; ``notes['splits']`` > 1 means fp32 slices to sum."""
    # Only the row term of A is widened to int64; the others stay int32 for speed.
    if max(k * a_strides[1], k * b_strides[0] + n * b_strides[1]) >= 2**31:
        raise ValueError(f"{kind}: operand too large for int32 column offsets")
    cfg = config or select_matmul_config(m, n, k, dtype, gated=has_gate)
    steps = cdiv(k, cfg.block_k)
    splits = max(1, min(cfg.split_k or 1, steps))
    steps_per_split = cdiv(steps, splits)
    splits = cdiv(steps, steps_per_split)
    out_dtype = "fp32" if splits > 1 else dtype
    e = ELEMENT_BYTES[dtype]
    return KernelPlan(
        kind=kind,
        fn=_matmul_kernel,
        grid=(cdiv(m, cfg.block_m) * cdiv(n, cfg.block_n), splits),
        args={
            "a_ptr": Ptr(dtype),
            "gate_ptr": Ptr(dtype),
            "b_ptr": Ptr(dtype),
            "bias_ptr": Ptr(dtype),
            "out_ptr": Ptr(out_dtype),
            "rowsum_ptr": Ptr(out_dtype),
            "M": m,
            "N": n,
            "K": k,
            "sam": a_strides[0],
            "sak": a_strides[1],
            "sbk": b_strides[0],
            "sbn": b_strides[1],
            "STEPS_PER_SPLIT": steps_per_split,
            "OUT_SPLIT_STRIDE": m * n,
            "ROWSUM_SPLIT_STRIDE": m,
        },
        constexprs={
            "HAS_GATE": has_gate,
            "EPILOGUE": splits == 1,
            "HAS_BIAS": has_bias,
            "RELU": relu,
            "ROWSUM": rowsum,
            "UPCAST": interpreting() if upcast is None else upcast,
            "PRECISION": dot_precision(dtype, allow_tf32),
            "BLOCK_M": cfg.block_m,
            "BLOCK_N": cfg.block_n,
            "BLOCK_K": cfg.block_k,
            "GROUP_M": cfg.group_m,
        },
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        config=cfg,
        flops=2 * m * n * k,
        min_bytes=(m * k * (2 if has_gate else 1) + k * n + n * has_bias) * e
        + (m * n + m * rowsum) * ELEMENT_BYTES[out_dtype] * splits,
        uses_dot=True,
        notes={"splits": splits},
    )


Strides2 = tuple[int, int]


def linear_fwd_plan(
    layer: LinearLaunch,
    dtype: str,
    has_bias: bool = True,
    x_strides: Strides2 | None = None,
    w_strides: Strides2 | None = None,
    config: MatmulConfig | None = None,
    allow_tf32: bool = False,
    upcast: bool | None = None,
) -> KernelPlan:
    """y[m, n] = x[m, k] · W[n, k]ᵀ + b (W stored as nn.Linear stores it)."""
    m, k, n = layer.m, layer.k, layer.n
    ws = w_strides or (k, 1)
    return matmul_plan(
        "linear_fwd", m, n, k, dtype, x_strides or (k, 1), (ws[1], ws[0]), has_bias=has_bias,
        relu=layer.relu, config=config, allow_tf32=allow_tf32, upcast=upcast,
    )  # fmt: skip


def linear_dgrad_plan(
    layer: LinearLaunch,
    dtype: str,
    dy_strides: Strides2 | None = None,
    w_strides: Strides2 | None = None,
    config: MatmulConfig | None = None,
    allow_tf32: bool = False,
    upcast: bool | None = None,
) -> KernelPlan:
    """dx[m, k] = (dy ⊙ [y > 0])[m, n] · W[n, k]."""
    m, k, n = layer.m, layer.k, layer.n
    return matmul_plan(
        "linear_dgrad", m, k, n, dtype, dy_strides or (n, 1), w_strides or (k, 1),
        has_gate=layer.relu, config=config, allow_tf32=allow_tf32, upcast=upcast,
    )  # fmt: skip


def linear_wgrad_plan(
    layer: LinearLaunch,
    dtype: str,
    bias_grad: bool = True,
    dy_strides: Strides2 | None = None,
    x_strides: Strides2 | None = None,
    config: MatmulConfig | None = None,
    allow_tf32: bool = False,
    upcast: bool | None = None,
) -> KernelPlan:
    """dW[n, k] = (dy ⊙ [y > 0])ᵀ · x, and db[n] as the row sums of the gated dyᵀ."""
    m, k, n = layer.m, layer.k, layer.n
    ds = dy_strides or (n, 1)
    return matmul_plan(
        "linear_wgrad", n, k, m, dtype, (ds[1], ds[0]), x_strides or (k, 1),
        has_gate=layer.relu, rowsum=bias_grad, config=config, allow_tf32=allow_tf32,
        upcast=upcast,
    )  # fmt: skip


def _run(plan: KernelPlan, out: torch.Tensor, rowsum: torch.Tensor | None, bias, relu, **operands):
    """Launch a GEMM plan; when it is split, through fp32 slices and the ordered split-K sum."""
    splits = plan.notes["splits"]
    if splits == 1:
        plan.launch(out_ptr=out, rowsum_ptr=out if rowsum is None else rowsum, **operands)
        return
    m, n = plan.args["M"], plan.args["N"]
    slices = new_partials(splits, m * n, out.device)
    row_slices = new_partials(splits, m, out.device) if rowsum is not None else slices
    plan.launch(out_ptr=slices, rowsum_ptr=row_slices, **operands)
    splitk_sum(slices, out, bias, relu)
    if rowsum is not None:
        splitk_sum(row_slices, rowsum)


class LinearBiasAct(torch.autograd.Function):
    """x · Wᵀ + b with optional ReLU; backward masks with the saved output."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu, config, dgrad_config, wgrad_config):
        m, k = x.shape
        n = weight.shape[0]
        dtype = TRITON_DTYPE[x.dtype]
        tf32 = tf32_allowed("matmul")
        layer = LinearLaunch("fc", m, k, n, relu)
        plan = linear_fwd_plan(
            layer, dtype, bias is not None, x.stride(), weight.stride(), config, tf32
        )
        y = new_tensor((m, n), x.dtype, x.device)
        b = bias if bias is not None else weight
        _run(plan, y, None, bias, relu, a_ptr=x, gate_ptr=x, b_ptr=weight, bias_ptr=b)
        ctx.save_for_backward(x, weight, y)
        ctx.has_bias = bias is not None
        ctx.layer = layer
        ctx.configs = (dgrad_config, wgrad_config)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, y = ctx.saved_tensors
        m, k = x.shape
        n = weight.shape[0]
        dtype = TRITON_DTYPE[x.dtype]
        tf32 = tf32_allowed("matmul")
        dgrad_config, wgrad_config = ctx.configs
        dy = dy.contiguous()  # same strides as the saved y, which gates it
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            plan = linear_dgrad_plan(
                ctx.layer, dtype, dy.stride(), weight.stride(), dgrad_config, tf32
            )
            dx = new_tensor((m, k), x.dtype, x.device)
            _run(plan, dx, None, None, False, a_ptr=dy, gate_ptr=y, b_ptr=weight, bias_ptr=dy)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            plan = linear_wgrad_plan(
                ctx.layer, dtype, ctx.has_bias, dy.stride(), x.stride(), wgrad_config, tf32
            )
            dw = new_tensor((n, k), weight.dtype, weight.device)
            db = new_tensor((n,), x.dtype, x.device) if ctx.has_bias else None
            _run(plan, dw, db, None, False, a_ptr=dy, gate_ptr=y, b_ptr=x, bias_ptr=dy)
        return dx, dw, db, None, None, None, None


def linear_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    relu: bool = True,
    config: MatmulConfig | None = None,
    dgrad_config: MatmulConfig | None = None,
    wgrad_config: MatmulConfig | None = None,
) -> torch.Tensor:
    """relu(F.linear(x, weight, bias)) for x of shape (..., in), weight (out, in)."""
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear_bias_act: input {tuple(x.shape)} vs weight {tuple(weight.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16) or any(
        t is not None and t.dtype != x.dtype for t in (weight, bias)
    ):
        raise TypeError("linear_bias_act: input, weight and bias must all be fp32 or all bf16")
    lead = x.shape[:-1]
    y = LinearBiasAct.apply(
        x.reshape(-1, x.shape[-1]), weight, bias, relu, config, dgrad_config, wgrad_config
    )
    return y.reshape(*lead, weight.shape[0])
