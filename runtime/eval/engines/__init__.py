"""Inference engines: what computes a net's outputs for the test protocol and the features
(torch, ONNX Runtime, OpenVINO), and `auto`, which measures the installed ones."""

from __future__ import annotations

import importlib
import importlib.util

from vggspec.compiler.errors import VggspecError

ENGINES = ("torch", "onnxruntime", "openvino")
CHOICES = (*ENGINES, "auto")
_MODULES = {
    "torch": ".torch_engine",
    "onnxruntime": ".onnxruntime_engine",
    "openvino": ".openvino_engine",
}


class EngineError(VggspecError):
    """An engine asked for that is not installed, or cannot do what is asked of it."""


def engine(name: str):
    """The module of an engine: NAME, PRECISIONS, PACKAGE, EXTRA, `compile(net, precision,
    threads)` → a function of a float32 batch giving the net's outputs in float32."""
    if name not in _MODULES:
        raise EngineError(f"unknown engine {name!r}: choose {', '.join(CHOICES)}")
    return importlib.import_module(_MODULES[name], __name__)


def available(name: str) -> bool:
    """Whether the engine's package is installed (torch always is)."""
    package = engine(name).PACKAGE
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a half-installed package, or one blocked in a test
        return False


def installed() -> list[str]:
    return [name for name in ENGINES if available(name)]


def require(name: str, device: str = "cpu") -> None:
    """Raise EngineError (one line) when the engine asked for by name cannot run here."""
    if name == "auto":
        return
    module = engine(name)
    if not available(name):
        raise EngineError(
            f"--engine {name} needs the {module.PACKAGE} package: "
            f"pip install 'vggspec[{module.EXTRA}]' (or --engine torch|auto)"
        )
    if name != "torch" and device == "cuda":
        raise EngineError(f"--engine {name} runs on the CPU here: use --device cpu, or torch")
