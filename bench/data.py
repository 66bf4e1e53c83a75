"""Data pipeline throughput at 224 crops from JPEGs, against plain PIL measured in the same run.

    python bench/data.py [--images 120] [--seconds 4]

Writes ImageNet-like JPEGs (500×375 and 375×500, quality 90) and large photos (2000×1500)
to a temporary folder, then measures images/s in one process (= per loader worker):
  reference  PIL open + convert("RGB") + resize to smallest side 256 (no crop, no tensor)
  pipeline   TrainDataset item: decode, rescale to S, random 224 crop, flip, PCA shift, mean
and prints pipeline/reference ratios, the JPEG draft speed-up on the large photos, and the
throughput of make_loader with 2 worker processes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from vggspec.runtime.data.augment import TrainDataset
from vggspec.runtime.data.color_stats import ColorStats
from vggspec.runtime.data.geometry import rescale_smallest_side, scaled_size
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.data.image_io import load_rgb
from vggspec.runtime.data.loader import make_loader

STATS = ColorStats(
    (124.0, 117.0, 104.0),
    (4200.0, 300.0, 60.0),
    ((0.58, 0.58, 0.57), (-0.71, 0.0, 0.71), (0.41, -0.82, 0.41)),
    0,
    0,
)


def photo_like(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth regions, edges and fine noise: a JPEG about as costly to decode as a photo."""
    low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(5, w / 5)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.ellipse([x - r, y - r * rng.uniform(0.5, 2), x + r, y + r], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    noise = rng.normal(0, 10, size=(h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def write_jpegs(folder: Path, sizes: list[tuple[int, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "train" / "c").mkdir(parents=True)
    for k, (w, h) in enumerate(sizes):
        photo_like(rng, w, h).save(folder / "train" / "c" / f"{k:04d}.jpg", quality=90)


def rate(fn, items: int, seconds: float) -> float:
    """Images per second of fn(i), cycling over `items`, for about `seconds`."""
    fn(0)  # warm-up
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds:
        fn(done % items)
        done += 1
    return done / (time.perf_counter() - start)


def plain_pil(path: str) -> Image.Image:
    with Image.open(path) as img:
        return rescale_smallest_side(img.convert("RGB"), 256)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        imagenet, large = Path(tmp, "imagenet"), Path(tmp, "large")
        write_jpegs(imagenet, [(500, 375), (375, 500)] * (args.images // 2), 0)
        write_jpegs(large, [(2000, 1500)] * 20, 1)
        folder = scan_image_folder(imagenet, "train")
        paths = [p for p, _ in folder.samples]
        n = len(paths)
        kib = sum(Path(p).stat().st_size for p in paths) / n / 1024
        print(f"{n} JPEGs of 500×375 / 375×500 (mean {kib:.0f} KiB)")

        reference = rate(lambda i: plain_pil(paths[i]), n, args.seconds)
        print(f"reference  PIL open+convert+resize to 256:   {reference:7.1f} img/s")
        for scale in (256, (256, 512)):
            data = TrainDataset(folder, scale=scale, crop=224, stats=STATS)
            r = rate(lambda i, d=data: d[i], n, args.seconds)
            print(
                f"pipeline   S={scale!s:<10} 224 crop + aug:  {r:7.1f} img/s per worker, "
                f"ratio {r / reference:.2f} of reference"
            )

        big = [p for p, _ in scan_image_folder(large, "train").samples]
        target = scaled_size((2000, 1500), 256)
        full = rate(lambda i: load_rgb(big[i]), len(big), args.seconds)
        draft = rate(lambda i: load_rgb(big[i], target), len(big), args.seconds)
        print(
            f"2000×1500 JPEG decode for S=256: full {full:.1f} img/s, draft {draft:.1f} img/s "
            f"(speed-up {draft / full:.2f}×)"
        )

        data = TrainDataset(folder, scale=256, crop=224, stats=STATS)
        for workers in (1, 2):
            loader = make_loader(data, 32, workers)
            next(iter(loader))  # start the workers
            start = time.perf_counter()
            seen = 0
            while time.perf_counter() - start < args.seconds:
                for x, _ in loader:
                    seen += len(x)
            elapsed = time.perf_counter() - start
            print(
                f"make_loader, {workers} worker(s), batch 32: {seen / elapsed:7.1f} img/s total, "
                f"{seen / elapsed / workers:.1f} per worker"
            )
            del loader


if __name__ == "__main__":
    main()
