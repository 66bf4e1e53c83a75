"""Centre crops for validation during training (evaluation proper is runtime/evaluate.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .augment import as_scale_range
from .geometry import as_hw, center_offset, resized_crop, scaled_size, to_tensor
from .image_folder import ImageFolder


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
