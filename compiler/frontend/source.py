"""Reading a spec file: every way a path can fail becomes one clear SpecError."""

from __future__ import annotations

from pathlib import Path

from .ast import Spec
from .errors import SpecError
from .parser import parse

# A real spec is a few hundred bytes; anything this large is the wrong file.
MAX_SPEC_BYTES = 1 << 20


def read_spec_text(path: str | Path) -> str:
    path = Path(path)
    shown = str(path)
    try:
        if not path.exists():
            raise SpecError("no such file", filename=shown)
        if path.is_dir():
            raise SpecError("is a directory, not a spec file", filename=shown)
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"file is {size / 1e6:.1f} MB, too large to be a spec (limit 1 MiB)",
                filename=shown,
            )
        data = path.read_bytes()
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror or err}", filename=shown) from None
    if b"\x00" in data:
        raise SpecError("binary file, not a spec (it contains NUL bytes)", filename=shown)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"not UTF-8 text (bad byte at offset {err.start})", filename=shown
        ) from None


def load_spec(path: str | Path) -> Spec:
    """Read and parse a .vgg file; every failure is a SpecError naming the file."""
    return parse(read_spec_text(path), str(path))
