"""Convolution + bias + ReLU as an implicit GEMM over NHWC, with fused-mask backward kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..targets import ELEMENT_BYTES
from .configs import ConvConfig, WgradConfig, select_conv_config, select_wgrad_config
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
from .shapes import ConvLaunch
from .splitk import new_partials, splitk_sum
from .tiles import load_operand


@triton.jit
def _conv_fwd_kernel(
    x_ptr,
    gate_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    H,
    W,
    C,
    HO,
    WO,
    CO,
    M,
    sxn,
    sxh,
    sxw,
    sxc,
    swh,
    sww,
    swc,
    swn,
    PH,
    PW,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    FLAT_K: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # out[m, n] = sum_k im2col(x)[m, k] * w[k, n] with m = (image, oh, ow), n = output
    # channel, k = (kh, kw, c). The data gradient runs through here too: x is then dy,
    # gated by the saved output, and w the flipped, transposed filter.
    # grid: (cdiv(M, BLOCK_M) * cdiv(CO, BLOCK_N),), the CO tiles of one row block next
    # to each other so the activation rows they share come from L2, not DRAM.
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(CO, BLOCK_N)
    pid_m = pid // n_tiles
    pid_n = pid % n_tiles
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < CO
    ow = rm % WO
    oh = (rm // WO) % HO
    img_base = (rm // (WO * HO)).to(tl.int64) * sxn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        k_total = KH * KW * C
        for k0 in range(0, k_total, BLOCK_K):
            k = k0 + rk
            k_ok = k < k_total
            tap = k // C
            c = k - tap * C
            kh = tap // KW
            kw = tap - kh * KW
            ih = oh[:, None] + kh[None, :] - PH
            iw = ow[:, None] + kw[None, :] - PW
            a_ok = (m_ok[:, None] & k_ok[None, :]) & ((ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
            a_off = img_base[:, None] + ih * sxh + iw * sxw + c[None, :] * sxc
            a = load_operand(x_ptr, gate_ptr, a_off, a_ok, HAS_GATE, UPCAST)
            b_off = (kh * swh + kw * sww + c * swc)[:, None] + rn[None, :] * swn
            b = load_operand(w_ptr, w_ptr, b_off, k_ok[:, None] & n_ok[None, :], False, UPCAST)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        c_blocks = tl.cdiv(C, BLOCK_K)
        for step in range(0, KH * KW * c_blocks):
            tap = step // c_blocks
            c = (step - tap * c_blocks) * BLOCK_K + rk
            kh = tap // KW
            kw = tap - kh * KW
            ih = oh + kh - PH
            iw = ow + kw - PW
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            c_ok = c < C
            a_off = (img_base + ih * sxh + iw * sxw)[:, None] + c[None, :] * sxc
            a = load_operand(
                x_ptr, gate_ptr, a_off, row_ok[:, None] & c_ok[None, :], HAS_GATE, UPCAST
            )
            b_off = kh * swh + kw * sww + c[:, None] * swc + rn[None, :] * swn
            b = load_operand(w_ptr, w_ptr, b_off, c_ok[:, None] & n_ok[None, :], False, UPCAST)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    # Epilogue while the accumulator is still fp32.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    out_off = rm.to(tl.int64)[:, None] * CO + rn[None, :]
    tl.store(
        out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :]
    )


@triton.jit
def _conv_wgrad_kernel(
    x_ptr,
    dy_ptr,
    y_ptr,
    dw_ptr,
    db_ptr,
    H,
    W,
    C,
    HO,
    WO,
    CO,
    M,
    sxn,
    sxh,
    sxw,
    sxc,
    syn,
    syh,
    syw,
    syc,
    PH,
    PW,
    STEPS_PER_SPLIT,
    DW_SPLIT_STRIDE,
    DB_SPLIT_STRIDE,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_GATE: tl.constexpr,
    BIAS_GRAD: tl.constexpr,
    FLAT_K: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # dw[co, c, kh, kw] = sum_m x[m shifted by (kh, kw), c] * g[m, co], g = dy where y > 0.
    # Rows r = (kh, kw, c) by C_out columns; the long M reduction is cut into splits.
    # grid: (row tiles, cdiv(CO, BLOCK_CO), splits). Split s writes its own fp32 slice
    # (or the final tensor when there is one split); slices are summed later in order.
    pid_r = tl.program_id(0)
    pid_co = tl.program_id(1)
    pid_s = tl.program_id(2)
    rco = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = rco < CO
    rr = tl.arange(0, BLOCK_R)
    if FLAT_K:
        r = pid_r * BLOCK_R + rr
        r_ok = r < KH * KW * C
        tap = r // C
        ci = r - tap * C
    else:
        c_blocks = tl.cdiv(C, BLOCK_R)
        tap = pid_r // c_blocks
        ci = (pid_r - tap * c_blocks) * BLOCK_R + rr
        r_ok = ci < C
    kh = tap // KW
    kw = tap - kh * KW

    acc = tl.zeros((BLOCK_R, BLOCK_CO), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_CO,), dtype=tl.float32)
    start = pid_s * STEPS_PER_SPLIT
    stop = tl.minimum(start + STEPS_PER_SPLIT, tl.cdiv(M, BLOCK_M))
    for step in range(start, stop):
        rm = step * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = rm < M
        ow = rm % WO
        oh = (rm // WO) % HO
        img = (rm // (WO * HO)).to(tl.int64)
        g_off = (img * syn + oh * syh + ow * syw)[:, None] + rco[None, :] * syc
        g = load_operand(dy_ptr, y_ptr, g_off, m_ok[:, None] & co_ok[None, :], HAS_GATE, UPCAST)
        if FLAT_K:
            ih = oh[None, :] + kh[:, None] - PH
            iw = ow[None, :] + kw[:, None] - PW
            x_ok = (r_ok[:, None] & m_ok[None, :]) & ((ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
            x_off = (img * sxn)[None, :] + ih * sxh + iw * sxw + ci[:, None] * sxc
        else:
            ih = oh + kh - PH
            iw = ow + kw - PW
            col_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_ok = r_ok[:, None] & col_ok[None, :]
            x_off = (img * sxn + ih * sxh + iw * sxw)[None, :] + ci[:, None] * sxc
        xt = load_operand(x_ptr, x_ptr, x_off, x_ok, False, UPCAST)
        acc = tl.dot(xt, g, acc, input_precision=PRECISION)
        # constexpr test outside, runtime test inside: kernels without it emit nothing
        if BIAS_GRAD:  # noqa: SIM102
            if pid_r == 0:
                bias_acc += tl.sum(g.to(tl.float32), axis=0)

    dw_off = (
        pid_s.to(tl.int64) * DW_SPLIT_STRIDE
        + rco[None, :] * (C * KH * KW)
        + (ci * (KH * KW) + tap)[:, None]
    )
    tl.store(dw_ptr + dw_off, acc.to(dw_ptr.dtype.element_ty), mask=r_ok[:, None] & co_ok[None, :])
    # constexpr test outside, runtime test inside: kernels without it emit nothing
    if BIAS_GRAD:  # noqa: SIM102
        if pid_r == 0:
            db_off = pid_s.to(tl.int64) * DB_SPLIT_STRIDE + rco
            tl.store(db_ptr + db_off, bias_acc.to(db_ptr.dtype.element_ty), mask=co_ok)


def conv_output_size(h: int, w: int, kh: int, kw: int, ph: int, pw: int) -> tuple[int, int]:
    """Spatial size of a stride-1 convolution."""
    return h + 2 * ph - kh + 1, w + 2 * pw - kw + 1


def nhwc_strides(batch: int, h: int, w: int, c: int) -> tuple[int, int, int, int]:
    """(image, row, column, channel) element strides of a dense NHWC tensor."""
    return h * w * c, w * c, c, 1


def _strides_nhwc_of(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(2), t.stride(3), t.stride(1)


def check_index_range(layer: ConvLaunch) -> None:
    """The kernels widen the image base to int64 but keep offsets inside one image, the
    row index m = (image, y, x) and the filter in int32: refuse shapes beyond that."""
    ho, wo = conv_output_size(layer.h, layer.w, layer.kh, layer.kw, layer.ph, layer.pw)
    extents = {
        "one input image": layer.h * layer.w * layer.c_in,
        "one output image": ho * wo * layer.c_out,
        "output rows N·H·W": layer.batch * max(ho * wo, layer.h * layer.w),
        "filter": layer.c_out * layer.c_in * layer.kh * layer.kw,
    }
    for what, size in extents.items():
        if size >= 2**31:
            raise ValueError(f"{layer.name}: {what} has {size} elements, past int32 indexing")


def mirrored_layer(layer: ConvLaunch) -> ConvLaunch:
    """The forward convolution that computes ``layer``'s data gradient.

    dx is dy convolved with the filter flipped and transposed to (kh, kw, c_out, c_in) at
    padding k - 1 - p, which maps the output grid back onto the input grid (negative
    padding is fine: it only shifts the window).
    """
    ho, wo = conv_output_size(layer.h, layer.w, layer.kh, layer.kw, layer.ph, layer.pw)
    return ConvLaunch(
        f"{layer.name}.dgrad", layer.batch, layer.c_out, ho, wo, layer.c_in, layer.kh, layer.kw,
        layer.kh - 1 - layer.ph, layer.kw - 1 - layer.pw, relu=False,
    )  # fmt: skip


def _implicit_gemm_plan(
    kind: str,
    layer: ConvLaunch,
    dtype: str,
    *,
    has_gate: bool,
    has_bias: bool,
    x_strides: tuple[int, int, int, int] | None,
    config: ConvConfig | None,
    allow_tf32: bool,
    upcast: bool | None,
) -> KernelPlan:
    check_index_range(layer)
    n, c, co, kh, kw = layer.batch, layer.c_in, layer.c_out, layer.kh, layer.kw
    ho, wo = conv_output_size(layer.h, layer.w, kh, kw, layer.ph, layer.pw)
    m = n * ho * wo
    cfg = config or select_conv_config(m, co, c, dtype, gated=has_gate)
    sxn, sxh, sxw, sxc = x_strides or nhwc_strides(n, layer.h, layer.w, c)
    e = ELEMENT_BYTES[dtype]
    return KernelPlan(
        kind=kind,
        fn=_conv_fwd_kernel,
        grid=(cdiv(m, cfg.block_m) * cdiv(co, cfg.block_n),),
        args={
            "x_ptr": Ptr(dtype), "gate_ptr": Ptr(dtype), "w_ptr": Ptr(dtype),
            "bias_ptr": Ptr(dtype), "out_ptr": Ptr(dtype),
            "H": layer.h, "W": layer.w, "C": c, "HO": ho, "WO": wo, "CO": co, "M": m,
            "sxn": sxn, "sxh": sxh, "sxw": sxw, "sxc": sxc,
            # the filter is packed dense as (kh, kw, c, co)
            "swh": kw * c * co, "sww": c * co, "swc": co, "swn": 1,
            "PH": layer.ph, "PW": layer.pw,
        },
        constexprs={
            "KH": kh, "KW": kw, "HAS_GATE": has_gate, "HAS_BIAS": has_bias,
            "RELU": layer.relu, "FLAT_K": cfg.flat_k,
            "UPCAST": interpreting() if upcast is None else upcast,
            "PRECISION": dot_precision(dtype, allow_tf32),
            "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k,
        },
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        config=cfg,
        flops=2 * m * co * kh * kw * c,
        min_bytes=(n * layer.h * layer.w * c * (1 + has_gate) + kh * kw * c * co
                   + co * has_bias + m * co) * e,
        uses_dot=True,
    )  # fmt: skip


def conv_fwd_plan(
    layer: ConvLaunch,
    dtype: str,
    has_bias: bool = True,
    x_strides: tuple[int, int, int, int] | None = None,
    config: ConvConfig | None = None,
    allow_tf32: bool = True,
    upcast: bool | None = None,
) -> KernelPlan:
    """Forward launch over NHWC input (dense unless strides are given)."""
    return _implicit_gemm_plan(
        "conv_fwd", layer, dtype, has_gate=False, has_bias=has_bias, x_strides=x_strides,
        config=config, allow_tf32=allow_tf32, upcast=upcast,
    )  # fmt: skip


def conv_dgrad_plan(
    layer: ConvLaunch,
    dtype: str,
    dy_strides: tuple[int, int, int, int] | None = None,
    config: ConvConfig | None = None,
    allow_tf32: bool = True,
    upcast: bool | None = None,
) -> KernelPlan:
    """Data gradient: the forward kernel on the mirrored layer, dy gated by the saved output."""
    return _implicit_gemm_plan(
        "conv_dgrad", mirrored_layer(layer), dtype, has_gate=layer.relu, has_bias=False,
        x_strides=dy_strides, config=config, allow_tf32=allow_tf32, upcast=upcast,
    )  # fmt: skip


def conv_wgrad_plan(
    layer: ConvLaunch,
    dtype: str,
    bias_grad: bool = True,
    x_strides: tuple[int, int, int, int] | None = None,
    dy_strides: tuple[int, int, int, int] | None = None,
    config: WgradConfig | None = None,
    allow_tf32: bool = True,
    upcast: bool | None = None,
) -> KernelPlan:
    """Weight gradient, and with ``bias_grad`` the bias gradient.

    ``notes['splits']`` > 1 means the kernel writes fp32 slices to be summed in order
    by the split-K sum; with one split it writes the gradients directly.
    """
    check_index_range(layer)
    n, c_in, c_out, kh, kw = layer.batch, layer.c_in, layer.c_out, layer.kh, layer.kw
    ho, wo = conv_output_size(layer.h, layer.w, kh, kw, layer.ph, layer.pw)
    m = n * ho * wo
    rows = kh * kw * c_in
    cfg = config or select_wgrad_config(rows, c_in, c_out, m, dtype)
    steps = cdiv(m, cfg.block_m)
    steps_per_split = cdiv(steps, max(1, min(cfg.split_k or 1, steps)))
    splits = cdiv(steps, steps_per_split)  # no empty trailing slices
    row_tiles = cdiv(rows, cfg.block_r) if cfg.flat_k else kh * kw * cdiv(c_in, cfg.block_r)
    out_dtype = "fp32" if splits > 1 else dtype
    sxn, sxh, sxw, sxc = x_strides or nhwc_strides(n, layer.h, layer.w, c_in)
    syn, syh, syw, syc = dy_strides or nhwc_strides(n, ho, wo, c_out)
    e = ELEMENT_BYTES[dtype]
    dw_len = c_out * rows
    return KernelPlan(
        kind="conv_wgrad",
        fn=_conv_wgrad_kernel,
        grid=(row_tiles, cdiv(c_out, cfg.block_co), splits),
        args={
            "x_ptr": Ptr(dtype), "dy_ptr": Ptr(dtype), "y_ptr": Ptr(dtype),
            "dw_ptr": Ptr(out_dtype), "db_ptr": Ptr(out_dtype),
            "H": layer.h, "W": layer.w, "C": c_in, "HO": ho, "WO": wo, "CO": c_out, "M": m,
            "sxn": sxn, "sxh": sxh, "sxw": sxw, "sxc": sxc,
            "syn": syn, "syh": syh, "syw": syw, "syc": syc,
            "PH": layer.ph, "PW": layer.pw, "STEPS_PER_SPLIT": steps_per_split,
            "DW_SPLIT_STRIDE": dw_len, "DB_SPLIT_STRIDE": c_out,
        },
        constexprs={
            "KH": kh, "KW": kw, "HAS_GATE": layer.relu, "BIAS_GRAD": bias_grad,
            "FLAT_K": cfg.flat_k, "UPCAST": interpreting() if upcast is None else upcast,
            "PRECISION": dot_precision(dtype, allow_tf32),
            "BLOCK_R": cfg.block_r, "BLOCK_CO": cfg.block_co, "BLOCK_M": cfg.block_m,
        },
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        config=cfg,
        flops=2 * m * c_out * rows,
        min_bytes=(n * layer.h * layer.w * c_in + m * c_out * (1 + layer.relu)) * e
        + (dw_len + c_out * bias_grad) * ELEMENT_BYTES[out_dtype] * splits,
        uses_dot=True,
        notes={"splits": splits},
    )  # fmt: skip


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal addressing: strides agree on every dimension longer than one."""
    return a.shape == b.shape and all(
        sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride(), strict=True) if n > 1
    )


def _layer_of(x: torch.Tensor, weight: torch.Tensor, padding, relu: bool) -> ConvLaunch:
    batch, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    return ConvLaunch("conv", batch, c_in, h, w, c_out, kh, kw, padding[0], padding[1], relu)


class Conv2dBiasAct(torch.autograd.Function):
    """Stride-1 conv2d + bias + optional ReLU; backward masks with the saved output."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, relu, config, dgrad_config, wgrad_config):
        layer = _layer_of(x, weight, padding, relu)
        x = x.contiguous(memory_format=torch.channels_last)
        plan = conv_fwd_plan(
            layer, TRITON_DTYPE[x.dtype], has_bias=bias is not None,
            x_strides=_strides_nhwc_of(x), config=config,
            allow_tf32=tf32_allowed("conv"),
        )  # fmt: skip
        packed = weight.permute(2, 3, 1, 0).contiguous()
        ho, wo = plan.args["HO"], plan.args["WO"]
        y = new_tensor((layer.batch, layer.c_out, ho, wo), x.dtype, x.device, channels_last=True)
        bias_or_dummy = bias if bias is not None else packed
        plan.launch(x_ptr=x, gate_ptr=x, w_ptr=packed, bias_ptr=bias_or_dummy, out_ptr=y)
        ctx.save_for_backward(x, weight, y)
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.configs = (dgrad_config, wgrad_config)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, y = ctx.saved_tensors
        layer, (dgrad_config, wgrad_config) = ctx.layer, ctx.configs
        dtype = TRITON_DTYPE[x.dtype]
        dy = dy.contiguous(memory_format=torch.channels_last)
        if not _same_layout(dy, y):  # the gate is read with dy's strides
            y = y.contiguous(memory_format=torch.channels_last)
        tf32 = tf32_allowed("conv")
        dx = dw = db = None

        if ctx.needs_input_grad[0]:
            plan = conv_dgrad_plan(layer, dtype, _strides_nhwc_of(dy), dgrad_config, tf32)
            flipped = weight.flip(2, 3).permute(2, 3, 0, 1).contiguous()
            dx = new_tensor(x.shape, x.dtype, x.device, channels_last=True)
            plan.launch(x_ptr=dy, gate_ptr=y, w_ptr=flipped, bias_ptr=flipped, out_ptr=dx)

        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            plan = conv_wgrad_plan(
                layer, dtype, ctx.has_bias, _strides_nhwc_of(x), _strides_nhwc_of(dy),
                wgrad_config, tf32,
            )  # fmt: skip
            dw = new_tensor(weight.shape, weight.dtype, weight.device)
            db = new_tensor((layer.c_out,), x.dtype, x.device) if ctx.has_bias else None
            splits = plan.notes["splits"]
            if splits == 1:
                plan.launch(x_ptr=x, dy_ptr=dy, y_ptr=y, dw_ptr=dw, db_ptr=dw if db is None else db)
            else:
                dw_parts = new_partials(splits, dw.numel(), x.device)
                db_parts = new_partials(splits, layer.c_out, x.device)
                plan.launch(x_ptr=x, dy_ptr=dy, y_ptr=y, dw_ptr=dw_parts, db_ptr=db_parts)
                splitk_sum(dw_parts, dw)
                if db is not None:
                    splitk_sum(db_parts, db)
        return dx, dw, db, None, None, None, None, None


def conv2d_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int] = (1, 1),
    relu: bool = True,
    config: ConvConfig | None = None,
    dgrad_config: ConvConfig | None = None,
    wgrad_config: WgradConfig | None = None,
) -> torch.Tensor:
    """relu(conv2d(x, weight, bias, stride 1, padding)) on NCHW logical tensors.

    Accepts contiguous or channels_last input and returns channels_last memory; any kernel
    size (odd or not, square or not) and any padding. ``config``, ``dgrad_config`` and
    ``wgrad_config`` override the per-shape tile selection.
    """
    if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d_bias_act: input {tuple(x.shape)} vs filter {tuple(weight.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16) or any(
        t is not None and t.dtype != x.dtype for t in (weight, bias)
    ):
        raise TypeError("conv2d_bias_act: input, filter and bias must all be fp32 or all bf16")
    ho, wo = conv_output_size(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], *padding)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d_bias_act: empty output {ho}x{wo}")
    return Conv2dBiasAct.apply(
        x, weight, bias, tuple(padding), relu, config, dgrad_config, wgrad_config
    )
