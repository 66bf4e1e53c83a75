"""Decode one image file into an 8-bit RGB Pillow image, or say precisely why not."""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from vggspec.compiler.errors import VggspecError

# Pillow's own hard limit (2 × its default MAX_IMAGE_PIXELS, ~179 Mpx: 12000×8000 = 96 Mpx
# fits). We check it per call instead of changing Pillow's process-wide MAX_IMAGE_PIXELS, so
# importing vggspec never changes the behaviour of other code in the same process.
MAX_SOURCE_PIXELS = 2 * 89_478_485

# What an RGBA/LA/PA image is composited onto: transparent product shots and logos are
# meant to be seen on white, and garbage RGB under alpha 0 must not leak into training.
ALPHA_BACKGROUND = (255, 255, 255)

_LFS_MAGIC = b"version https://git-lfs"
_TAIL_BYTES = 64


class DataError(VggspecError):
    """A data problem explained in one human sentence (never a raw decoder traceback)."""


class BadFile(DataError):
    """One file of a data set that cannot be used; `reason` is a short counter key (the scan
    report counts files by it), `detail` the why."""

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {reason} ({detail})")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


class UnreadableImage(BadFile):
    """One file that cannot be turned into an RGB image."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding the pixels."""

    size: tuple[int, int]  # (width, height) as stored
    format: str  # Pillow's format name: "JPEG", "PNG", ...
    mode: str  # Pillow's mode before conversion: "RGB", "CMYK", "I;16", "P", ...


def _classify_open_error(path: Path, head: bytes, err: Exception) -> UnreadableImage:
    if isinstance(err, Image.DecompressionBombError):
        return UnreadableImage(path, "too_large", str(err))
    if head.startswith(_LFS_MAGIC):
        return UnreadableImage(path, "lfs_pointer", "a Git LFS pointer, not the image")
    if isinstance(err, Image.UnidentifiedImageError):
        return UnreadableImage(path, "not_an_image", "Pillow does not recognise the content")
    return _decode_error(path, err)


def _decode_error(path: Path, err: Exception) -> UnreadableImage:
    text = f"{type(err).__name__}: {err}"
    if "truncated" in text.lower() or isinstance(err, EOFError):
        return UnreadableImage(path, "truncated", text)
    return UnreadableImage(path, "unreadable", text)


def _open(path: Path) -> Image.Image:
    """Image.open with our size policy; the caller closes the image."""
    try:
        # A FIFO would hold open() until someone writes to it (the scan hung for ever), a
        # device such as /dev/zero never ends: only a regular file can be an image.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UnreadableImage(path, "not_a_file", "not a regular file (a FIFO, a device…)")
        with open(path, "rb") as f:
            head = f.read(len(_LFS_MAGIC))
    except FileNotFoundError:  # gone since the scan, or a symlink to nowhere
        raise UnreadableImage(path, "missing", "no such file (any more)") from None
    except OSError as err:
        raise UnreadableImage(path, "unreadable", f"{type(err).__name__}: {err}") from None
    if not head:
        raise UnreadableImage(path, "empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's warning band.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Exception as err:  # Pillow raises many types for garbage input
        raise _classify_open_error(path, head, err) from None
    w, h = img.size
    if w * h > MAX_SOURCE_PIXELS:
        img.close()
        raise UnreadableImage(
            path, "too_large", f"{w}×{h} = {w * h} pixels > limit {MAX_SOURCE_PIXELS}"
        )
    if w < 1 or h < 1:
        img.close()
        raise UnreadableImage(path, "unreadable", f"empty canvas {w}×{h}")
    return img


def _ends_cleanly(path: Path, fmt: str) -> bool:
    """Cheap completeness check: a JPEG ends with EOI, a PNG with its IEND chunk."""
    marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(fmt)
    if marker is None:
        return False
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        return marker in f.read()


def read_header(path: str | Path, *, full_check: bool = False) -> ImageHeader:
    """Header of `path`, proving it decodes: JPEG/PNG that end cleanly are trusted, any
    other file (or every file with `full_check`) is decoded once at low resolution."""
    path = Path(path)
    img = _open(path)
    try:
        header = ImageHeader(size=img.size, format=img.format or "?", mode=img.mode)
        if full_check or not _ends_cleanly(path, header.format):
            if header.format == "JPEG":
                img.draft(None, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            _load(path, img)
        _check_mode(path, header.mode)
        return header
    finally:
        img.close()


def _load(path: Path, img: Image.Image) -> None:
    try:
        img.load()
    except Exception as err:
        raise _decode_error(path, err) from None


_CONVERTIBLE_MODES = frozenset(
    {
        "1",
        "L",
        "LA",
        "La",
        "P",
        "PA",
        "RGB",
        "RGBA",
        "RGBa",
        "RGBX",
        "CMYK",
        "YCbCr",
        "LAB",
        "HSV",
        "I",
        "I;16",
        "I;16L",
        "I;16B",
        "I;16N",
        "F",
    }
)


def _check_mode(path: Path, mode: str) -> None:
    if mode not in _CONVERTIBLE_MODES:
        raise UnreadableImage(path, "unsupported_mode", f"Pillow mode {mode!r}")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB version of a loaded image: alpha composited on ALPHA_BACKGROUND,
    16/32-bit and float greys rescaled (not clipped) to 0..255."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        elif mode != "F":
            arr = arr / 257.0  # 16-bit range 0..65535 onto 0..255
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("P", "PA") or "A" in mode or "a" in mode:
        if mode == "P" and "transparency" not in img.info:
            return img.convert("RGB")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` to 8-bit RGB. With `min_size` (w, h), a JPEG may be decoded at a DCT
    reduction (1/2, 1/4, 1/8) that stays at least that large: much faster and smaller for
    big photos. Raises UnreadableImage with a reason key."""
    path = Path(path)
    img = _open(path)
    try:
        _check_mode(path, img.mode)
        if min_size is not None and img.format == "JPEG":
            img.draft("RGB", (max(1, min_size[0]), max(1, min_size[1])))
        _load(path, img)
        rgb = to_rgb(img)
    except BaseException:
        img.close()
        raise
    if rgb is not img:
        img.close()  # close() would invalidate the pixels of the image we return
    return rgb
