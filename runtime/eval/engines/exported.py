"""The ONNX models the engines run, exported once per net by vggspec's own exporter and kept
in the user cache, named by a digest of the net and the exporter and by one of their own
bytes, which is checked before each use: a damaged file is exported anew, never run."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
from importlib import metadata
from pathlib import Path

import torch
import vggspec.compiler

from ...io import onnx_export
from ...io.atomic import remove_stale_temporaries
from ...io.onnx_export import export_onnx
from . import EngineError

# What the exported model depends on besides the net: vggspec's code that lowers and exports
# it (a fix there must not leave the models it exported before in use) and the exporter's
# packages.
SOURCES = (Path(vggspec.compiler.__file__).parent, Path(onnx_export.__file__))
PACKAGES = ("torch", "onnx", "onnxscript")
CONTENT_DIGITS = 16  # of the file's sha256, in its name


def cache_root() -> Path:
    """$VGGSPEC_ENGINE_CACHE, else ~/.cache/vggspec/engines (XDG_CACHE_HOME honoured)."""
    chosen = os.environ.get("VGGSPEC_ENGINE_CACHE")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vggspec" / "engines"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def exporter_digest() -> str:
    """sha256 of the exporter: its packages' versions and vggspec's sources in SOURCES."""
    h = hashlib.sha256()
    for package in PACKAGES:
        h.update(f"{package} {_version(package)}\n".encode())
    for source in SOURCES:
        files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
        for path in files:
            h.update(f"{path.relative_to(source.parent)}\n".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def net_digest(net) -> str:
    """sha256 of what the exported model computes: the spec, the graph's passes, layers and
    input size, every weight and buffer (name, dtype, shape, bytes) and the exporter."""
    h = hashlib.sha256()
    head = [net.spec_text(), exporter_digest(), repr(net.graph.graph["passes"]), repr(net.dense)]
    head += [repr(net.input_size), repr(net.layer_names())]
    h.update("\n".join(head).encode())
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy())  # no copy: the buffer itself
    return h.hexdigest()


def _content(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:CONTENT_DIGITS]


def _intact(path: Path) -> bool:
    """Whether the file holds the bytes its name says (a truncated or changed file does not)."""
    try:
        return _content(path) == path.name.split(".")[1]
    except OSError:
        return False


def exported_onnx(net) -> Path:
    """The net's ONNX file in the cache, KEY.CONTENT.onnx, exported now if no intact one is
    there. Exported under a temporary name of this process, then renamed: two processes
    exporting at once leave whole files, and a killed export's temporary file is removed by
    the next export."""
    root, key = cache_root(), net_digest(net)[:32]
    with contextlib.suppress(OSError):
        for path in sorted(root.glob(f"{key}.*.onnx")):
            if _intact(path):
                return path
            with contextlib.suppress(OSError):
                path.unlink()  # damaged: exported anew below
    staged = root / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(root)
            staged.touch(exist_ok=False)  # a folder we cannot write is told before the export
            export_onnx(net, staged)
            path = root / f"{key}.{_content(staged)}.onnx"
            os.replace(staged, path)
        except OSError as err:
            raise EngineError(
                f"cannot keep the exported model in {root} ({err.strerror or err}): "
                "set VGGSPEC_ENGINE_CACHE to a writable folder"
            ) from None
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()
    return path
