"""Built-in demo data: ten classes of shapes on cluttered backgrounds, an ImageFolder of JPEGs."""

from __future__ import annotations

import io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from ..dist.parent import die_with_parent
from .annotations import ANNOTATIONS_DIR, voc_xml

# The class is the shape only: colours, size, position, stretch, rotation, background and
# clutter are drawn independently of it. Images vary in size and orientation so that scale
# jittering and dense evaluation have something to do. Each image is a pure function of
# (seed, split, class, index).
DEMO_CLASSES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "hbars",
    "vbars",
    "diamond",
    "checker",
)
DEMO_VERSION = 2  # bump when the generator changes: cached images are reused by version
SMALLEST_SIDE = (64, 128)  # inclusive range of an image's smallest side
MAX_ASPECT = 1.6
SHAPE_RADIUS = (0.22, 0.40)  # of the smallest side: the shape spans 44..80 % of it
BOXED_SHAPE_RADIUS = (0.12, 0.40)  # --boxes: 24..80 %, placed anywhere
NOISE_STD = (2.0, 10.0)  # per-pixel Gaussian noise, 0..255 units
LINES = (0, 2)  # random lines behind the shape, and again in front of it (inclusive range)
BLOBS = (0, 3)  # small random ellipses behind the shape
MAX_ROTATION_DEG = 15  # small, so square/diamond and hbars/vbars stay different shapes
STRETCH = (0.8, 1.25)  # independent x/y stretch of the shape
JPEG_QUALITY = 90
_SUPERSAMPLE = 2  # shapes drawn at 2× then reduced: antialiased edges
_SPLITS = {"train": 0, "val": 1}


def _polygon(points, angle, cx, cy, sx, sy, r):
    """Unit-radius points → image coordinates: stretch, rotate, scale, move."""
    c, s = math.cos(angle), math.sin(angle)
    return [
        (cx + r * (c * x * sx - s * y * sy), cy + r * (s * x * sx + c * y * sy)) for x, y in points
    ]


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _unit_shapes(name: str, rng: np.random.Generator) -> list[tuple[list, bool]]:
    """The class's shape as unit-radius polygons: [(points, filled-not-hole)]."""
    if name == "circle":
        return [(_circle(1.0), True)]
    if name == "ring":
        return [(_circle(1.0), True), (_circle(rng.uniform(0.5, 0.68)), False)]
    if name == "square":
        return [(_rect(-0.8, -0.8, 0.8, 0.8), True)]
    if name == "diamond":
        return [([(0, -1), (1, 0), (0, 1), (-1, 0)], True)]
    if name == "triangle":
        return [([(0, -1), (0.95, 0.7), (-0.95, 0.7)], True)]
    if name == "cross":
        t = rng.uniform(0.2, 0.3)
        return [(_rect(-1, -t, 1, t), True), (_rect(-t, -1, t, 1), True)]
    if name == "star":
        inner = rng.uniform(0.35, 0.45)
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rad = 1.0 if k % 2 == 0 else inner
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return [(pts, True)]
    if name in ("hbars", "vbars"):
        t = rng.uniform(0.16, 0.22)
        bars = [_rect(-0.9, y - t, 0.9, y + t) for y in (-0.65, 0.0, 0.65)]
        if name == "vbars":
            bars = [[(y, x) for x, y in bar] for bar in bars]
        return [(bar, True) for bar in bars]
    if name == "checker":
        cell = 0.6
        return [
            (
                _rect(
                    -0.9 + i * cell, -0.9 + j * cell, -0.9 + (i + 1) * cell, -0.9 + (j + 1) * cell
                ),
                True,
            )
            for i in range(3)
            for j in range(3)
            if (i + j) % 2 == 0
        ]
    raise ValueError(f"unknown demo class {name!r}")


def _circle(radius: float, n: int = 48) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(2 * math.pi * k / n), radius * math.sin(2 * math.pi * k / n))
        for k in range(n)
    ]


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(SMALLEST_SIDE[0], SMALLEST_SIDE[1] + 1))
    long = round(short * rng.uniform(1.0, MAX_ASPECT))
    return (long, short) if rng.random() < 0.5 else (short, long)


def _colour_far_from(rng: np.random.Generator, other: np.ndarray, distance: float) -> np.ndarray:
    for _ in range(100):
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        if np.linalg.norm(colour - other) >= distance:
            return colour
    return 255.0 - other


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Random base colour, a gradient in a random direction, and soft low-frequency blotches."""
    base = rng.integers(0, 256, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    xs = np.arange(w, dtype=np.float32) * (math.cos(angle) / max(w, h))
    ys = np.arange(h, dtype=np.float32) * (math.sin(angle) / max(w, h))
    ramp = ys[:, None] + xs[None, :]
    tint = rng.normal(0, 40, size=3).astype(np.float32)
    low = rng.normal(0, 25, size=(4, 4, 3)).astype(np.float32)
    blotches = (
        np.asarray(
            Image.fromarray(np.clip(low + 128, 0, 255).astype(np.uint8)).resize(
                (w, h), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        - 128
    )
    return base + ramp[..., None] * tint + blotches


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int, blobs: bool):
    """Thin random lines and (behind the shape) small blobs: busy, but never shape-sized."""
    short = min(w, h)
    for _ in range(int(rng.integers(LINES[0], LINES[1] + 1))):
        x0, x1 = rng.uniform(0, w, size=2)
        y0, y1 = rng.uniform(0, h, size=2)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(BLOBS[0], BLOBS[1] + 1)) if blobs else 0):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.02, 0.06, size=2) * short
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)


class BoxedDemoImage(NamedTuple):
    image: Image.Image
    box: tuple[float, float, float, float]  # pixel corners enclosing the shape, in the image
    mask: Image.Image  # the shape's coverage, 0..255 ("L")


def render_demo_image(seed: int, split: str, label: int, index: int) -> Image.Image:
    """One demo image, a pure function of its arguments."""
    return _render(seed, split, label, index, boxed=False).image


def render_boxed_demo_image(seed: int, split: str, label: int, index: int) -> BoxedDemoImage:
    """One image of the boxed demo (shapes anywhere, of more sizes) with its shape's box."""
    return _render(seed, split, label, index, boxed=True)


def _render(seed: int, split: str, label: int, index: int, boxed: bool) -> BoxedDemoImage:
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, _SPLITS[split], label, index]))
    )
    w, h = _image_size(rng)
    short = min(w, h)
    background = _background(rng, w, h)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    _clutter(rng, draw, w, h, blobs=True)

    if boxed:  # anywhere its radius fits in the image
        r = rng.uniform(*BOXED_SHAPE_RADIUS) * short
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    else:  # centred somewhere in the central short×short square, mostly inside it
        r = rng.uniform(*SHAPE_RADIUS) * short
        slack_x = max(0.0, short / 2 - 0.9 * r)
        slack_y = max(0.0, short / 2 - 0.9 * r)
        cx = w / 2 + rng.uniform(-slack_x, slack_x)
        cy = h / 2 + rng.uniform(-slack_y, slack_y)
    angle = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    sx, sy = rng.uniform(*STRETCH, size=2)
    ss = _SUPERSAMPLE
    mask = Image.new("L", (w * ss, h * ss), 0)
    mask_draw = ImageDraw.Draw(mask)
    corners = []
    for points, filled in _unit_shapes(DEMO_CLASSES[label], rng):
        poly = _polygon(points, angle, cx * ss, cy * ss, sx, sy, r * ss)
        mask_draw.polygon(poly, fill=255 if filled else 0)
        corners.extend(poly if filled else [])
    mask = mask.resize((w, h), Image.Resampling.BOX)

    shape_colour = _colour_far_from(rng, background.mean(axis=(0, 1)), 110.0)
    fill = Image.new("RGB", (w, h), tuple(int(v) for v in shape_colour))
    canvas.paste(fill, (0, 0), mask)
    _clutter(rng, draw, w, h, blobs=False)  # lines in front of the shape too

    pixels = rng.standard_normal((h, w, 3), dtype=np.float32)
    pixels *= rng.uniform(*NOISE_STD)
    pixels += np.asarray(canvas, dtype=np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")
    return BoxedDemoImage(image, _enclosing_box(corners, ss, w, h), mask)


def _enclosing_box(points, ss: int, w: int, h: int) -> tuple[float, float, float, float]:
    """The image pixels the vertices fall in, as pixel corners, clipped to the image: Pillow
    fills no pixel past the one holding a polygon's extreme vertex (checked on 3,000 random
    polygons with Pillow 13), so this encloses the drawn shape."""
    xs, ys = [x / ss for x, _ in points], [y / ss for _, y in points]
    return (
        float(max(0, math.floor(min(xs)))),
        float(max(0, math.floor(min(ys)))),
        float(min(w, math.ceil(max(xs)))),
        float(min(h, math.ceil(max(ys)))),
    )


def _write_class(
    root: Path, seed: int, split: str, label: int, count: int, boxes: bool = False
) -> None:
    name = DEMO_CLASSES[label]
    folder = root / split / name
    folder.mkdir(parents=True, exist_ok=True)
    if boxes:
        (root / ANNOTATIONS_DIR / split / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        buf = io.BytesIO()
        if boxes:
            img, box, _ = render_boxed_demo_image(seed, split, label, index)
            xml = voc_xml(f"{index:05d}.jpg", img.size, [(name, box)])
            (root / ANNOTATIONS_DIR / split / name / f"{index:05d}.xml").write_bytes(xml)
        else:
            img = render_demo_image(seed, split, label, index)
        img.save(buf, "JPEG", quality=JPEG_QUALITY)
        (folder / f"{index:05d}.jpg").write_bytes(buf.getvalue())


def make_demo_dataset(
    root: str | Path,
    seed: int = 0,
    train_per_class: int = 300,
    val_per_class: int = 50,
    workers: int | None = None,
    boxes: bool = False,
) -> Path:
    """Write ROOT/train/<class>/NNNNN.jpg and ROOT/val/<class>/NNNNN.jpg and return ROOT
    (existing files of the same names are overwritten). `workers` processes (default: one
    per core) write class folders in parallel; the files do not depend on it. With `boxes`,
    the shapes are placed anywhere and sized more freely, and each image's box is written
    to ROOT/annotations/<split>/<class>/NNNNN.xml (Pascal VOC)."""
    root = Path(root)
    jobs = [
        (root, seed, split, label, count, boxes)
        for split, count in (("train", train_per_class), ("val", val_per_class))
        for label in range(len(DEMO_CLASSES))
    ]
    workers = min(os.cpu_count() or 1, len(jobs)) if workers is None else workers
    if workers <= 1:
        for job in jobs:
            _write_class(*job)
    else:
        # The workers die with this process: a kill -9 of it left them writing (and holding
        # its stdout, so `vggspec data demo D | tail` never returned).
        with ProcessPoolExecutor(
            workers, initializer=die_with_parent, initargs=(os.getpid(), "parent", "a pool worker")
        ) as pool:
            list(pool.map(_write_class, *zip(*jobs, strict=True)))
    return root


def demo_data_root(seed: int) -> Path:
    """Where the built-in demo data is written once and reused."""
    base = os.environ.get("VGGSPEC_DEMO_DATA")
    if base:
        return Path(base)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "vggspec" / f"demo-v{DEMO_VERSION}-seed{seed}"
