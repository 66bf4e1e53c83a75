"""Backends: how each IR op runs. "torch" is torch.nn.functional and every other backend
inherits it, overriding only the ops it accelerates: "triton" the fused kernels; "auto" each
such call on the side measured faster on this GPU."""

from __future__ import annotations

import importlib

from ...errors import VggspecError
from ..autotune import stand_in_side

# name → module defining `Backend`; imported only when asked for, so that the torch
# backend never pays for (or needs) triton.
_BACKENDS = {"torch": ".torch_functional", "triton": ".triton_kernels", "auto": ".auto"}


def resolve(name: str) -> str:
    """The backend `name` stands for: "auto" measures on CUDA; without CUDA it is torch,
    unless VGGSPEC_AUTO_STAND_IN asks for its own logic with a stand-in timer."""
    if name == "auto":
        import torch

        if stand_in_side() is not None:
            return "auto"
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


def backend_class(name: str) -> type:
    """The class of a backend by its registered name (not resolved)."""
    return importlib.import_module(_BACKENDS[name], __name__).Backend


def names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name):
    """An instance of the named backend ("auto" resolved); an instance is returned as is."""
    if not isinstance(name, str):
        return name
    return backend_class(resolve(name))()
