"""The torch engine: the compiler's inference net (BN folded, weights stored once in the
compute dtype and layout) run by the net's own backend."""

from __future__ import annotations

from vggspec.compiler.lowering.inference import inference_net

NAME = "torch"
PACKAGE = "torch"
EXTRA = ""
PRECISIONS = ("fp32", "bf16")


def compile(net, precision: str, threads: int):
    """The inference net of `net` (torch's threads are the process's own)."""
    return inference_net(net, precision=precision)
