"""The training set's mean RGB and RGB principal components, from a sample of its images
(stored beside them as JSON by runtime/io/color_stats_file.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import rescale_smallest_side, scaled_size
from .image_folder import ImageFolder
from .image_io import DataError

FORMAT = "vggspec-color-stats"  # the JSON form's name and version (to_json)
VERSION = 1

# The sample: at most this many images, evenly spaced over the sorted file list (so every
# class is represented), each shrunk to this smallest side (never enlarged). Pixel
# statistics barely depend on scale, and this keeps the pass to seconds even on ImageNet.
DEFAULT_MAX_IMAGES = 2000
DEFAULT_SIDE = 64


@dataclass(frozen=True)
class ColorStats:
    """Mean RGB and principal components of RGB pixel values, all in 0..255 units."""

    mean_rgb: tuple[float, float, float]
    eigenvalues: tuple[float, float, float]  # variances along the components, descending
    eigenvectors: tuple[tuple[float, float, float], ...]  # eigenvectors[i] is unit vector p_i
    images: int  # how many images the figures come from
    pixels: int

    def pca_shift(self, alpha) -> np.ndarray:
        """AlexNet's colour shift sum_i alpha_i * lambda_i * p_i, as an RGB offset. lambda_i is
        taken as the standard deviation along p_i (sqrt of the eigenvalue): only then is the
        shift in pixel units, and it is what AlexNet-style code does (fb.resnet.torch's
        "eigval" 0.2175 on [0, 1] data is a standard deviation); the literal variance would
        move pixels by about ±300 levels with alpha ~ N(0, 0.1)."""
        alpha = np.asarray(alpha, dtype=np.float64)
        std = np.sqrt(np.asarray(self.eigenvalues, dtype=np.float64))
        return (alpha * std) @ np.asarray(self.eigenvectors, dtype=np.float64)

    @property
    def std_rgb(self) -> tuple[float, float, float]:
        """Per-channel standard deviation (0..255 units), from the covariance the PCA
        colour shift already measured."""
        values, vectors = self.eigenvalues, self.eigenvectors
        r, g, b = (
            math.sqrt(sum(lam * vec[c] ** 2 for lam, vec in zip(values, vectors, strict=True)))
            for c in range(3)
        )
        return r, g, b

    def to_json(self, fingerprint: str, max_images: int, side: int) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "mean_rgb": list(self.mean_rgb),
            "eigenvalues": list(self.eigenvalues),
            "eigenvectors": [list(v) for v in self.eigenvectors],
            "images": self.images,
            "pixels": self.pixels,
            "sample": {"max_images": max_images, "smallest_side": side},
            "fingerprint": fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict) -> ColorStats:
        return cls(
            mean_rgb=tuple(float(v) for v in data["mean_rgb"]),
            eigenvalues=tuple(float(v) for v in data["eigenvalues"]),
            eigenvectors=tuple(tuple(float(c) for c in v) for v in data["eigenvectors"]),
            images=int(data["images"]),
            pixels=int(data["pixels"]),
        )


def sample_indices(n: int, max_images: int) -> list[int]:
    """Evenly spaced indices into n sorted samples: deterministic and class-balanced."""
    if n <= max_images:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max_images).round()})


def compute_color_stats(
    folder: ImageFolder, max_images: int = DEFAULT_MAX_IMAGES, side: int = DEFAULT_SIDE
) -> ColorStats:
    """Mean and covariance of all pixels of the sampled images (float64 sums)."""
    total = np.zeros(3)
    outer = np.zeros((3, 3))
    count = 0
    used = 0
    for i in sample_indices(len(folder), max_images):
        img, _, _ = folder.load(i, lambda size: scaled_size(size, side))
        if min(img.size) > side:
            img = rescale_smallest_side(img, side)
        pixels = np.asarray(img, dtype=np.float64).reshape(-1, 3)
        total += pixels.sum(axis=0)
        outer += pixels.T @ pixels
        count += len(pixels)
        used += 1
    if count == 0:
        raise DataError(f"no pixels to compute colour statistics from in {folder.root}")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    vectors = []
    for k in order:
        v = eigenvectors[:, k]
        vectors.append(v if v[np.argmax(np.abs(v))] >= 0 else -v)  # fix the sign: reproducible
    return ColorStats(
        mean_rgb=tuple(float(v) for v in mean),
        eigenvalues=tuple(float(max(eigenvalues[k], 0.0)) for k in order),
        eigenvectors=tuple(tuple(float(c) for c in v) for v in vectors),
        images=used,
        pixels=count,
    )
