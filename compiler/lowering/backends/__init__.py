"""Backends: how each IR op runs. "torch" is torch.nn.functional; "triton" the fused kernels;
"auto" each call on the side measured faster on this GPU."""

from __future__ import annotations

import importlib

from ...frontend.errors import VggspecError

# name → module defining `Backend`; imported only when asked for, so that the torch
# backend never pays for (or needs) triton.
_BACKENDS = {"torch": ".torch_functional", "triton": ".triton_kernels", "auto": ".auto"}


def resolve(name: str) -> str:
    """The backend `name` stands for: "auto" measures on CUDA; without CUDA it is torch."""
    if name == "auto":
        import torch

        return "auto" if torch.cuda.is_available() and _has_triton() else "torch"
    if name not in _BACKENDS:
        raise VggspecError(f"unknown backend {name!r}: choose auto, torch or triton")
    return name


def _has_triton() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def get_backend(name: str):
    """An instance of the named backend ("auto" resolved)."""
    name = resolve(name)
    module = importlib.import_module(_BACKENDS[name], __name__)
    return module.Backend()
