"""The inference net: a trained net's weights folded, cast and laid out once for evaluation,
features and export (no BN left to run, no per-forward casts, no gradients)."""

from __future__ import annotations

import torch

from ..errors import VggspecError
from ..targets import cpu_has_native_bf16
from .net import Net, densify, fold_batch_norm

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PRECISIONS = (*DTYPES, "auto")
MEMORY_FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU of compute capability 8.0 or
    later (Ampere on), or a CPU with AVX512_BF16 or AMX-BF16 (read from /proc/cpuinfo;
    elsewhere False)."""
    device = torch.device(device)
    if device.type == "cuda":
        # Not torch's default, which also answers True where bf16 is only emulated (a V100,
        # a T4: it merely tries to make a bf16 tensor there).
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """ "fp32" or "bf16"; "auto" is bf16 where `device` has native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise VggspecError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def resolve_memory_format(memory_format: str, precision: str) -> torch.memory_format:
    """ "auto" is NHWC for bf16 (oneDNN's and cuDNN's bf16 convolutions run NHWC: 1.4× NCHW
    for D on a Zen 5 CPU) and NCHW for fp32, whose results then equal the training net's
    bit for bit."""
    if memory_format == "auto":
        memory_format = "nhwc" if precision == "bf16" else "nchw"
    if memory_format not in MEMORY_FORMATS:
        raise VggspecError(f"unknown memory format {memory_format!r}: choose auto, nchw or nhwc")
    return MEMORY_FORMATS[memory_format]


class InferenceNet(Net):
    """A net for inference only: weights stored in `dtype` and `memory_format`, frozen; its
    input is cast to them on the way in and its output comes back float32 (so the head's
    spatial mean and soft-max run in float32)."""

    def __init__(self, graph, backend: str, dtype: torch.dtype, memory_format):
        super().__init__(graph, backend, dropout=0.0)
        self.dtype, self.memory_format = dtype, memory_format

    @torch.no_grad()
    def forward(self, x: torch.Tensor, batch=None) -> torch.Tensor:
        x = x.to(self.dtype)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        return super().forward(x).float()

    def extra_repr(self) -> str:
        layout = "NHWC" if self.memory_format == torch.channels_last else "NCHW"
        return f"{super().extra_repr()}, {str(self.dtype).removeprefix('torch.')}, {layout}"


def _fits(tensor: torch.Tensor, dtype: torch.dtype, memory_format) -> bool:
    layout = memory_format if tensor.dim() == 4 else torch.contiguous_format
    return tensor.dtype == dtype and tensor.is_contiguous(memory_format=layout)


def _stored(tensor: torch.Tensor, dtype: torch.dtype, memory_format) -> torch.Tensor:
    """A frozen copy of the tensor in `dtype` (and, if 4-D, `memory_format`): one of the two
    conversions copies, since the tensor does not `_fits`."""
    tensor = tensor.detach().to(dtype)
    if tensor.dim() == 4:
        tensor = tensor.contiguous(memory_format=memory_format)
    return torch.nn.Parameter(tensor, requires_grad=False)


def inference_net(
    net: Net, *, precision: str = "fp32", memory_format: str = "auto", dense: bool = False
) -> InferenceNet:
    """`net` for inference: BN folded into its conv/FC (running statistics), with `dense` its
    fully-convolutional twin, each weight stored once in the compute dtype of `precision`
    ("fp32", "bf16", "auto": bf16 where the net's device has native bf16) and
    `memory_format` ("auto", "nchw", "nhwc"). Conv + bias + ReLU are one backend call each
    (the ReLU in place on the conv's output). Weights already in that dtype and layout are
    shared with `net`, not copied: an fp32 NCHW inference net costs no memory and computes
    what `net.eval()` computes, bit for bit."""
    device = next(net.parameters(), torch.empty(0)).device
    precision = resolve_precision(precision, device)
    dtype, layout = DTYPES[precision], resolve_memory_format(memory_format, precision)
    training = net.training
    source = fold_batch_norm(net.eval())
    net.train(training)  # the caller's net keeps its mode
    if dense:
        source = densify(source)
    out = InferenceNet(source.graph, source.backend_name, dtype, layout)
    with torch.no_grad():
        for name, module in out.named_children():
            held = getattr(source, name)
            module.share(held)  # then each tensor that is not stored right is replaced
            for key, tensor in list(held.named_parameters(recurse=False)):
                if not _fits(tensor, dtype, layout):
                    setattr(module, key, _stored(tensor, dtype, layout))
    return out.eval()
