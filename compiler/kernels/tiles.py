"""Device helpers shared by several kernels: gated GEMM operand loads, NCHW/NHWC index split."""

import triton
import triton.language as tl


@triton.jit
def load_operand(src_ptr, gate_ptr, offs, ok, HAS_GATE: tl.constexpr, UPCAST: tl.constexpr):
    """Load a GEMM operand tile; zero it where the saved ReLU output (the gate) is <= 0.

    Reading the saved output here is how the backward kernels apply the ReLU mask
    without a separate ``dy * (y > 0)`` pass over memory.
    """
    tile = tl.load(src_ptr + offs, mask=ok, other=0.0)
    if UPCAST:
        # The interpreter multiplies bf16 as raw bits; fp32 keeps its arithmetic honest.
        tile = tile.to(tl.float32)
    if HAS_GATE:
        gate = tl.load(gate_ptr + offs, mask=ok, other=0.0)
        tile = tl.where(gate.to(tl.float32) > 0.0, tile, tl.zeros_like(tile))
    return tile


@triton.jit
def split_nchw_index(offs, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(image, channel, row, column) of a flat index in NHWC or NCHW memory order."""
    if CHANNELS_LAST:
        c = offs % C
        t = offs // C
        w = t % W
        t = t // W
        h = t % H
        n = t // H
    else:
        w = offs % W
        t = offs // W
        h = t % H
        t = t // H
        c = t % C
        n = t // C
    return n, c, h, w
