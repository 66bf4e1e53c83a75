"""The ONNX models the engines run, exported once per net by vggspec's own exporter and kept
in the user cache under a digest of the net (spec, graph, weights, torch version)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ...io.onnx_export import export_onnx
from . import EngineError


def cache_root() -> Path:
    """$VGGSPEC_ENGINE_CACHE, else ~/.cache/vggspec/engines (XDG_CACHE_HOME honoured)."""
    chosen = os.environ.get("VGGSPEC_ENGINE_CACHE")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vggspec" / "engines"


def net_digest(net) -> str:
    """sha256 of what the exported model computes: the spec, the graph's passes, layers and
    input size, every weight (name, dtype, shape, bytes) and the exporter's torch version."""
    h = hashlib.sha256()
    head = [net.spec_text(), torch.__version__, repr(net.graph.graph["passes"]), repr(net.dense)]
    head += [repr(net.input_size), repr(net.layer_names())]
    h.update("\n".join(head).encode())
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy())  # no copy: the buffer itself
    return h.hexdigest()


def exported_onnx(net) -> Path:
    """The net's ONNX file in the cache, exported now if it is not there (atomically, so
    two processes exporting at once leave one whole file)."""
    path = cache_root() / f"{net_digest(net)[:32]}.onnx"
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(net, path)
        except OSError as err:
            raise EngineError(
                f"cannot keep the exported model in {path.parent} ({err.strerror}): "
                "set VGGSPEC_ENGINE_CACHE to a writable folder"
            ) from None
    return path
