"""Test-time datasets: whole images rescaled to Q (Sect. 3.2), and centre crops for validation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from runtime.augment import as_scale_range
from runtime.image_folder import ImageFolder
from runtime.preprocess import (
    as_hw,
    center_offset,
    rescale_smallest_side,
    resized_crop,
    scaled_size,
    to_tensor,
)


class EvalDataset(Dataset):
    """(whole image rescaled to smallest side Q as a CHW float32 tensor, label, index).

    No crop and no flip: dense evaluation flips the tensor itself. Images differ in size,
    so batch them with `batches_by_size` (or batch size 1), never by padding. If a file
    fails after the scan, the next readable image stands in under the same index (logged),
    so every index still yields exactly one result."""

    def __init__(
        self, folder: ImageFolder, q: int, mean_rgb: Sequence[float], unit: float = 1.0
    ) -> None:
        self.folder = folder
        self.q = int(q)
        self.mean_rgb = tuple(float(v) for v in mean_rgb)
        self.unit = float(unit)

    def __len__(self) -> int:
        return len(self.folder)

    def output_size(self, index: int) -> tuple[int, int]:
        """(w, h) of item `index`'s tensor, known from the scan without decoding."""
        return scaled_size(self.folder.sizes[index], self.q)

    def batches_by_size(self, batch_size: int) -> list[list[int]]:
        """Indices grouped into batches of equal output size (a DataLoader batch_sampler);
        deterministic: by size, then index."""
        order = sorted(range(len(self)), key=lambda i: (self.output_size(i), i))
        batches: list[list[int]] = []
        for i in order:
            if (
                batches
                and len(batches[-1]) < batch_size
                and (self.output_size(batches[-1][0]) == self.output_size(i))
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img, label, _ = self.folder.load(int(index), lambda size: scaled_size(size, self.q))
        x = to_tensor(rescale_smallest_side(img, self.q), self.mean_rgb, self.unit)
        return x, label, int(index)


class CenterCropDataset(Dataset):
    """(CHW float32 centre crop, label) for plain validation during training: rescale to S
    (the middle of [S_min, S_max] when jittered), then the centre H×W crop."""

    def __init__(
        self,
        folder: ImageFolder,
        *,
        scale: int | Sequence[int],
        crop: int | Sequence[int],
        mean_rgb: Sequence[float],
        unit: float = 1.0,
    ) -> None:
        lo, hi = as_scale_range(scale)
        self.folder = folder
        self.smallest_side = (lo + hi) // 2
        self.crop = as_hw(crop)
        self.mean_rgb = tuple(float(v) for v in mean_rgb)
        self.unit = float(unit)

    def __len__(self) -> int:
        return len(self.folder)

    def _scaled(self, size: tuple[int, int]) -> tuple[int, int]:
        return scaled_size(size, self.smallest_side, at_least=(self.crop[1], self.crop[0]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label, used = self.folder.load(int(index), self._scaled)
        scaled = self._scaled(self.folder.sizes[used])
        patch = resized_crop(img, scaled, center_offset(scaled, self.crop), self.crop)
        return to_tensor(patch, self.mean_rgb, self.unit), label
