"""Box regression targets for training: an image, its class and one box through the crop.

A sample is (CHW float32 net input, target) where the target is float32 (5,): the class
index, then the encoded box (cx/W, cy/H, w/W, h/H of the crop; boxes.encode) of the image's
class, after the same rescale, crop and flip as the pixels (box_augment). The Euclidean
loss of the `box` head reads it (compiler/ir/ops/box.py).

One box per sample: an image may hold several boxes of its class, the net regresses one.
The choice is the largest after clipping to the crop (ties: the first in annotation order),
so it is deterministic and is the object the crop shows most of. When the crop cuts away
every box of the class (a random crop of a wide image), the target is the largest box
unclipped, in crop coordinates (it lies partly or wholly outside [0, 1]): the net still
learns where the object is relative to what it sees, and no sample leaves the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from . import boxes as bx
from .augment import TrainDataset, augment
from .box_augment import centre_crop_geometry, image_to_crop
from .geometry import resized_crop
from .validation import CenterCropDataset


def chosen_box(boxes_in_crop, crop: tuple[int, int]) -> np.ndarray:
    """The box a sample regresses (module docstring), given its class's boxes in crop
    coordinates, not clipped; crop is (H, W). Shape (4,)."""
    boxes = bx.as_boxes(boxes_in_crop)
    if not len(boxes):
        raise ValueError("a sample needs at least one box of its class")
    clipped = bx.clip(boxes, (crop[1], crop[0]))
    area = bx.areas(clipped)
    if area.max() <= 0:
        return boxes[int(np.argmax(bx.areas(boxes)))]
    return clipped[int(np.argmax(area))]


def box_target(label: int, boxes_in_crop, crop: tuple[int, int]) -> torch.Tensor:
    """float32 (5,): the class, then the encoded chosen box."""
    encoded = bx.encode(chosen_box(boxes_in_crop, crop), (crop[1], crop[0]))[0]
    return torch.tensor([float(label), *encoded], dtype=torch.float32)


class BoxTrainDataset(TrainDataset):
    """TrainDataset's augmentation, with the box target instead of the label. `boxes[i]` are
    sample i's boxes of its class in the stored image's pixel corners (annotations'
    FolderBoxes); the folder holds only samples that have one."""

    def __init__(self, folder, boxes: list[np.ndarray], **kwargs) -> None:
        super().__init__(folder, **kwargs)
        self.boxes = boxes

    def sample(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = {}

        def min_size_for(size):
            drawn[size] = self.params(index, epoch, size)
            return drawn[size].scaled

        img, label, used = self.folder.load(index, min_size_for)
        size = self.folder.sizes[used]
        params = drawn[size]
        x = augment(img, params, self.crop, self.stats, self.preprocessing)
        moved = image_to_crop(
            self.boxes[used], size, params.scaled, params.offset, self.crop, params.flip
        )
        return x, box_target(label, moved, self.crop)


class BoxCenterCropDataset(CenterCropDataset):
    """CenterCropDataset with the box target of the central crop (for the validation loss);
    `geometry(i)` and `boxes[i]` give what protocol 1 needs to score the prediction in the
    image's own coordinates."""

    def __init__(self, folder, boxes: list[np.ndarray], **kwargs) -> None:
        super().__init__(folder, **kwargs)
        self.boxes = boxes

    def geometry(self, index: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(stored size, scaled size, crop offset) of sample `index`'s central crop."""
        size = tuple(self.folder.sizes[index])
        scaled, offset = centre_crop_geometry(size, self.smallest_side, self.crop)
        return size, scaled, offset

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, label, used = self.folder.load(int(index), self._scaled)
        size, scaled, offset = self.geometry(used)
        patch = resized_crop(img, scaled, offset, self.crop)
        moved = image_to_crop(self.boxes[used], size, scaled, offset, self.crop, False)
        return self.preprocessing.image(patch), box_target(label, moved, self.crop)
