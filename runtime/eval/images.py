"""Test images at scale Q (Sect. 3.2): whole images isotropically rescaled to smallest side Q,
as uint8 tensors, batched only with images of the same size.

Each net normalises the same uint8 pixels its own way (fusion of nets with different
conventions decodes and rescales once). A panorama would make the dense pass's memory grow
with its length: the rescaled long side is capped at MAX_ASPECT × the short side by keeping
the centre of the image (the paper's images, ILSVRC photos, are far below the cap)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.geometry import RESAMPLE, scaled_size
from ..data.image_folder import ImageFolder
from ..data.image_io import UnreadableImage, load_rgb
from .requests import MAX_ASPECT

log = logging.getLogger(__name__)

# Decoded images kept across the passes of one evaluation (each then decoded once, not once per
# scale) when all of this process's images fit: the demo's 500 take 19 MB; ILSVRC's 50,000
# validation photos 28 GB, so there each is decoded again at each scale.
KEEP_DECODED_BYTES = 256 * 2**20


def scaled_geometry(
    size: tuple[int, int], q: int, at_least: tuple[int, int], max_aspect: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((w, h) of the test image, (w, h) of the whole image rescaled) for a stored image of
    `size` (w, h) rescaled to smallest side `q` (enlarged to fit `at_least` (w, h)); the
    test image is the centre of the rescaled one, its long side at most `max_aspect` × its
    short side."""
    full_w, full_h = scaled_size(size, q, at_least)
    cap = int(max_aspect * min(full_w, full_h))
    out = min(full_w, max(cap, at_least[0])), min(full_h, max(cap, at_least[1]))
    return out, (full_w, full_h)


def centre_region(decoded: tuple[int, int], out: tuple[int, int], full: tuple[int, int]):
    """(x0, y0, x1, y1) of a decoded image that the test image shows: all of it, given as
    exact integers (so an image already at its test size is not resampled), unless the
    long side was capped."""
    dw, dh = decoded
    keep_w = dw if out[0] == full[0] else dw * out[0] / full[0]
    keep_h = dh if out[1] == full[1] else dh * out[1] / full[1]
    x0, y0 = (dw - keep_w) / 2, (dh - keep_h) / 2
    return (x0, y0, x0 + keep_w, y0 + keep_h)


class ScaledImages(Dataset):
    """Item i: (uint8 tensor (3, h, w) of image i at scale Q, label, i, readable). The size
    is known from the scan without decoding (`output_size`) and always holds, whatever
    size a JPEG decodes at. A file that fails to decode now (it passed the scan)
    yields zeros and readable=False: it is left out and counted, not replaced."""

    def __init__(
        self,
        folder: ImageFolder,
        q: int,
        at_least: tuple[int, int] = (1, 1),
        max_aspect: float = MAX_ASPECT,
        decoded: dict[int, Image.Image] | None = None,
    ) -> None:
        self.folder = folder
        self.q = int(q)
        self.at_least = at_least
        self.max_aspect = max_aspect
        self.decoded = decoded  # index → its decoded image, shared by the passes (`kept_decoded`)

    def __len__(self) -> int:
        return len(self.folder)

    def geometry(self, index: int):
        return scaled_geometry(self.folder.sizes[index], self.q, self.at_least, self.max_aspect)

    def output_size(self, index: int) -> tuple[int, int]:
        return self.geometry(index)[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, bool]:
        path, label = self.folder.samples[index]
        (w, h), full = self.geometry(index)
        try:
            # Whole, as torchvision's readers do; with reduced_decode at the smallest DCT
            # size ≥ full (see ImageFolder).
            img = self._decode(index, path, full)
        except UnreadableImage as err:
            log.warning("leaving out %s: %s (%s)", path, err.reason, err.detail)
            return torch.zeros(3, h, w, dtype=torch.uint8), label, index, False
        region = centre_region(img.size, (w, h), full)
        if img.size != (w, h) or region != (0, 0, *img.size):
            img = img.resize((w, h), RESAMPLE, box=region)
        chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw)), label, index, True

    def _decode(self, index: int, path: str, full: tuple[int, int]) -> Image.Image:
        if self.decoded is None:
            return load_rgb(path, full if self.folder.reduced_decode else None)
        if index not in self.decoded:  # a file that fails is tried again at the next scale
            self.decoded[index] = load_rgb(path)
        return self.decoded[index]


def kept_decoded(
    folder: ImageFolder, indices: Sequence[int], budget: int = KEEP_DECODED_BYTES
) -> dict | None:
    """An empty store for the decoded images of `indices` across the passes when their RGB
    pixels fit `budget` bytes and JPEGs are decoded whole (a reduced decode depends on Q),
    else None: each image decoded again at each scale."""
    if folder.reduced_decode:
        return None
    pixels = sum(w * h for w, h in (folder.sizes[i] for i in indices))
    return {} if 3 * pixels <= budget else None


def batches_by_size(
    dataset: ScaledImages,
    indices: Sequence[int],
    max_images: int,
    max_pixels: int,
    copies: int = 1,
) -> list[list[int]]:
    """`indices` grouped into batches of one output size (a DataLoader batch_sampler), at
    most `max_images` per batch and `max_pixels` pixels counting `copies` per image (2 when
    the flip runs in the same batch); an image larger than that runs alone. Deterministic:
    ordered by size, then index."""
    order = sorted(indices, key=lambda i: (dataset.output_size(i), i))
    batches: list[list[int]] = []
    for i in order:
        w, h = dataset.output_size(i)
        last = batches[-1] if batches else None
        if (
            last is not None
            and dataset.output_size(last[0]) == (w, h)
            and len(last) < max_images
            and (len(last) + 1) * w * h * copies <= max_pixels
        ):
            last.append(i)
        else:
            batches.append([i])
    return batches


def collate(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Equal-size items → (uint8 (N, 3, h, w), labels, indices, readable)."""
    images, labels, indices, readable = zip(*items, strict=True)
    return (
        # numpy's copy: torch.stack of a batch this size starts a team of OpenMP threads, in
        # the read-ahead thread a second one on the net's cores.
        torch.from_numpy(np.stack([image.numpy() for image in images])),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(indices, dtype=torch.long),
        torch.tensor(readable, dtype=torch.bool),
    )
