"""Centre crops for validation during training (evaluation proper is runtime/eval/)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .geometry import as_hw, center_offset, resized_crop, scaled_size
from .image_folder import ImageFolder
from .preprocessing import Preprocessing
from .scale import TrainScale


class CenterCropDataset(Dataset):
    """(CHW float32 centre crop as the net's input, label) for plain validation during
    training: rescale to the single scale of S (S itself, or the mean of [S_min, S_max] when
    jittered), then the centre H×W crop, then the net's preprocessing."""

    def __init__(
        self,
        folder: ImageFolder,
        *,
        scale: TrainScale | int | Sequence[int],
        crop: int | Sequence[int],
        preprocessing: Preprocessing,
    ) -> None:
        self.folder = folder
        self.smallest_side = TrainScale.parse(scale).single
        self.crop = as_hw(crop)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.folder)

    def _scaled(self, size: tuple[int, int]) -> tuple[int, int]:
        return scaled_size(size, self.smallest_side, at_least=(self.crop[1], self.crop[0]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label, used = self.folder.load(int(index), self._scaled)
        scaled = self._scaled(self.folder.sizes[used])
        patch = resized_crop(img, scaled, center_offset(scaled, self.crop), self.crop)
        return self.preprocessing.image(patch), label
