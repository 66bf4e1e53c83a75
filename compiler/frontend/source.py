"""Reading a spec file: every way a path can fail becomes one clear SpecError."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from .ast import Spec
from .errors import SpecError
from .parser import parse

# A real spec is a few hundred bytes; anything this large is the wrong file.
MAX_SPEC_BYTES = 1 << 20
# A pipe that has said nothing for this long is not going to give a spec or a recipe.
READ_TIMEOUT_S = 10.0


class TooLarge(OSError):
    """A file that holds more than the bytes asked for."""


def read_at_most(path: str | Path, limit: int, timeout_s: float | None = None) -> bytes:
    """The bytes of `path`, however it reports its size: a regular file, a pipe, or a device
    such as /dev/zero, which says it is empty and never ends. Raises TooLarge past `limit`
    bytes, TimeoutError when a pipe stays silent for `timeout_s` (default READ_TIMEOUT_S),
    OSError otherwise."""
    timeout_s = READ_TIMEOUT_S if timeout_s is None else timeout_s
    # Non-blocking open: a FIFO nobody writes to would hold a blocking open for ever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        chunks, size = [], 0
        while size <= limit:
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(left * 1000):
                raise TimeoutError(f"nothing to read for {timeout_s:g} s")
            try:
                chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            except BlockingIOError:  # woken with nothing to read: wait again
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise TooLarge(f"more than {limit} bytes")
    finally:
        os.close(fd)


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
        # Read up to the limit whatever the size said: /dev/zero and pipes say 0.
        data = read_at_most(path, MAX_SPEC_BYTES)
    except TooLarge:
        raise SpecError("more than 1 MiB, too large to be a spec", filename=shown) from None
    except TimeoutError as err:
        raise SpecError(f"cannot read: {err}", filename=shown) from None
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
