"""count: parameters, MACs, FLOPs, memory and receptive field per node and in total.

Conventions, so that the figures can be checked by hand:
- MACs count multiply-accumulates of convolutions and FC layers (bias adds, ReLU,
  pooling, LRN, BN and soft-max are not MACs); FLOPs = 2 × MACs. BN's own cost, one
  multiply-add per element once folded into a scale and shift, is `elementwise`.
- Buffers (BN's running statistics) are not parameters; their bytes (int64 counters
  at 8 bytes) are added to `param_bytes`.
- Activation memory is for a batch in the given dtype. `forward_bytes` is the peak of
  an inference pass that frees each input once its consumer ran (max of in + out).
  `training_bytes` is what a training step keeps for backward: every tensor a node
  produces (the image included), each once, plus a one-byte mask per dropout element.
- Receptive field, jump and start are per axis (H, W), in input pixels; `start` is
  the centre of the first output unit's field. A fully connected layer on a C×H×W
  map sees all of it, exactly like the H×W convolution it becomes in dense testing.
"""

from __future__ import annotations

from math import prod

from ...targets import DTYPE_BYTES
from ..graph import Graph, Totals, meta, nodes, op, producer
from ..ops.base import Op
from ..ops.traits import Weighted


def _field(operation: Op, in_shape, field_in):
    """(rf, jump, start) per axis after this op, from the same before it."""
    (rf, jump, start) = field_in
    window = operation.window(in_shape)
    if window is None:
        return field_in
    kernel, padding, stride = window
    rf = tuple(r + (k - 1) * j for r, k, j in zip(rf, kernel, jump, strict=True))
    start = tuple(
        s + ((k - 1) / 2 - p) * j for s, k, p, j in zip(start, kernel, padding, jump, strict=True)
    )
    jump = tuple(j * s for j, s in zip(jump, stride, strict=True))
    return rf, jump, start


def count(g: Graph, batch: int = 1, dtype: str = "float32") -> Graph:
    """Write per-node figures into meta and the Totals into g.graph['totals']."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    width = DTYPE_BYTES[dtype]
    params_total = macs_total = forward_bytes = training_bytes = 0
    buffers = buffer_bytes = elementwise = 0
    for n in nodes(g):
        operation, info = op(g, n), meta(g, n)
        out_bytes = batch * prod(info.shape) * width
        info.out_bytes = out_bytes
        training_bytes += out_bytes
        if producer(g, n) is None:  # the image
            one = (1, 1)
            info.params = info.macs = info.flops = 0
            info.rf, info.jump, info.start = one, one, (0.5, 0.5)
            continue
        before = meta(g, producer(g, n))
        params, macs = operation.params_and_macs(info.in_shape, info.shape)
        info.params, info.macs, info.flops = params, macs, 2 * macs
        info.rf, info.jump, info.start = _field(
            operation, info.in_shape, (before.rf, before.jump, before.start)
        )
        params_total += params
        elementwise += operation.elementwise(info.in_shape)
        weighted = operation.trait(Weighted)
        for shape, buffer_dtype in (weighted.buffers(info.in_shape) if weighted else {}).values():
            buffers += prod(shape)
            buffer_bytes += prod(shape) * (8 if buffer_dtype == "int64" else width)
        macs_total += macs
        forward_bytes = max(forward_bytes, before.out_bytes + out_bytes)
        training_bytes += batch * operation.mask_elements(info.shape)
    g.graph["totals"] = Totals(
        params=params_total,
        macs=macs_total,
        flops=2 * macs_total,
        forward_bytes=forward_bytes,
        training_bytes=training_bytes,
        param_bytes=params_total * width + buffer_bytes,
        batch=batch,
        dtype=dtype,
        buffers=buffers,
        buffer_bytes=buffer_bytes,
        elementwise=elementwise,
    )
    return g
