"""A small ImageFolder with every kind of odd file next to good ones, for robustness tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("class_a", "class_b")


def _good_image(rng: np.random.Generator, label: int) -> Image.Image:
    """Stripes whose orientation is the class: learnable, cheap, varied in size and colour."""
    w, h = (int(v) for v in rng.integers(40, 80, size=2))
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(6, 14)
    phase = (xx if label == 0 else yy) / period + rng.uniform(0, 1)
    stripes = (np.sin(2 * np.pi * phase) > 0)[..., None]
    fg, bg = rng.integers(0, 256, size=(2, 3))
    arr = np.where(stripes, fg, bg) + rng.normal(0, 8, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, for layouts Pillow will not write (16-bit RGB, bomb header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _rgb16_png(rng: np.random.Generator) -> bytes:
    arr = rng.integers(0, 65536, size=(24, 32, 3), dtype=np.uint16).astype(">u2")
    rows = b"".join(b"\x00" + arr[y].tobytes() for y in range(arr.shape[0]))
    return _png_bytes(32, 24, 16, 2, rows)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _odd_files(rng: np.random.Generator) -> dict[str, tuple[bytes, str]]:
    """name -> (content, expected outcome). Outcomes: 'ok', 'converted:<kind>',
    'bad:<reason>', 'ignored'."""
    base = _good_image(rng, 0)
    jpeg = _jpeg_bytes(base)
    grey16 = Image.fromarray(rng.integers(0, 65536, size=(30, 40), dtype=np.uint16))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    return {
        "truncated.jpg": (jpeg[: len(jpeg) * 6 // 10], "bad:truncated"),
        "zero_bytes.jpg": (b"", "bad:empty"),
        "not_an_image.jpg": (b"this is a text file, not a photo\n" * 20, "bad:not_an_image"),
        "lfs_pointer.jpg": (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:"
            + b"0" * 64
            + b"\nsize 12345\n",
            "bad:lfs_pointer",
        ),
        "bomb.png": (_png_bytes(30000, 30000, 8, 2, b""), "bad:too_large"),
        "png_named.JPEG": (_save(base, "PNG"), "converted:misnamed"),
        "UPPER_CASE.JPG": (jpeg, "ok"),
        "cmyk.jpg": (_save(base.convert("CMYK"), "JPEG"), "converted:cmyk"),
        "grayscale.jpg": (_save(base.convert("L"), "JPEG"), "converted:grayscale"),
        "bilevel.png": (_save(base.convert("1"), "PNG"), "converted:grayscale"),
        "grey_alpha.png": (_save(base.convert("LA"), "PNG"), "converted:alpha"),
        "palette_alpha.png": (
            _save(palette, "PNG", transparency=0),
            "converted:palette",
        ),
        "rgba.png": (_save(rgba, "PNG"), "converted:alpha"),
        "grey16.png": (_save(grey16, "PNG"), "converted:high_bit_depth"),
        "rgb16.png": (_rgb16_png(rng), "ok"),  # Pillow reads 16-bit RGB as 8-bit RGB
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "converted:tiny"),
        "notes.txt": (b"not an image extension: ignored, and listed\n", "ignored"),
    }


def make_corrupt_fixture(
    root: str | Path, good_per_class: int = 32, val_per_class: int = 8, seed: int = 0
) -> dict[str, str]:
    """Write ROOT/{train,val}/{class_a,class_b}/ with good images plus every odd file
    (all in train/class_a, a truncated JPEG and a CMYK JPEG in val/class_b).
    Returns {path relative to ROOT: expected outcome} for the odd files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    expected: dict[str, str] = {}
    for split, per_class in (("train", good_per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                (folder / f"good_{k:03d}.jpg").write_bytes(_jpeg_bytes(_good_image(rng, label)))
    odd = _odd_files(rng)
    for name, (content, outcome) in odd.items():
        (root / "train" / CLASSES[0] / name).write_bytes(content)
        expected[f"train/{CLASSES[0]}/{name}"] = outcome
    (root / "train" / CLASSES[0] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for name in ("truncated.jpg", "cmyk.jpg"):
        content, outcome = odd[name]
        (root / "val" / CLASSES[1] / name).write_bytes(content)
        expected[f"val/{CLASSES[1]}/{name}"] = outcome
    return expected
