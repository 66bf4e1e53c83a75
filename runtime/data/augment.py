"""The paper's training augmentation (Sect. 3.1), item i at epoch e a function of (seed, e, i)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .color_stats import ColorStats
from .geometry import as_hw, resized_crop, scaled_size
from .image_folder import ImageFolder
from .preprocessing import Preprocessing
from .scale import TrainScale

PCA_ALPHA_STD = 0.1  # AlexNet: alpha_i ~ N(0, 0.1)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one sample: a pure function of (seed, epoch, index), so it is the
    same whatever the worker, rank or process count."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


@dataclass(frozen=True)
class CropParams:
    """Every random choice for one training sample."""

    smallest_side: int  # S for this image
    scaled: tuple[int, int]  # (w, h) of the image rescaled to S
    offset: tuple[int, int]  # (x, y) of the crop in the rescaled image
    flip: bool
    alpha: tuple[float, float, float]  # PCA colour-shift coefficients


def sample_crop_params(
    rng: np.random.Generator,
    size: tuple[int, int],
    scale: TrainScale,
    crop: tuple[int, int],
    alpha_std: float = PCA_ALPHA_STD,
) -> CropParams:
    """Draw, in a fixed order: S uniform on the integers [S_min, S_max], the crop's x then y
    uniform over every position, the flip (p 0.5), then the three alphas."""
    s = int(rng.integers(scale.lo, scale.hi + 1))
    scaled = scaled_size(size, s, at_least=(crop[1], crop[0]))
    x = int(rng.integers(0, scaled[0] - crop[1] + 1))
    y = int(rng.integers(0, scaled[1] - crop[0] + 1))
    flip = bool(rng.random() < 0.5)
    alpha = tuple(float(a) for a in rng.normal(0.0, 1.0, size=3) * alpha_std)
    return CropParams(s, scaled, (x, y), flip, alpha)


def augment(
    img: Image.Image,
    params: CropParams,
    crop: tuple[int, int],
    stats: ColorStats,
    preprocessing: Preprocessing | None = None,
) -> torch.Tensor:
    """Apply one sample's choices to a decoded RGB image: the PCA colour shift in pixel
    units, then the net's preprocessing (default: minus the mean RGB, the paper's), as the
    CHW float32 net input."""
    patch = resized_crop(img, params.scaled, params.offset, crop)
    if params.flip:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    preprocessing = preprocessing or paper_preprocessing(stats)
    return preprocessing.image(patch, stats.pca_shift(params.alpha))


def paper_preprocessing(stats: ColorStats) -> Preprocessing:
    """The paper's preprocessing for a training set: 0..255 RGB minus its mean RGB."""
    return Preprocessing.trained(stats.mean_rgb)


class TrainDataset(Dataset):
    """(CHW float32 net input, label) with the paper's augmentation; call `set_epoch` each
    epoch.

    Values are what `preprocessing` makes of the shifted pixels; by default 0..255 minus the
    mean RGB, as in the paper. With plain SGD from scratch those ±128 inputs make the first
    layer's effective step thousands of times larger than the others'; a net meant to train
    in minutes without per-layer learning rates wants inputs of about unit variance (divide
    by the training set's std: normalise=mean-std). Whatever is chosen is saved with the net
    (its model information) and used at test time.

    The epoch lives in shared memory so that persistent DataLoader workers see `set_epoch`
    calls made in the main process (call it before iterating the loader for that epoch)."""

    def __init__(
        self,
        folder: ImageFolder,
        *,
        scale: TrainScale | int | Sequence[int],
        crop: int | Sequence[int],
        stats: ColorStats,
        seed: int = 0,
        alpha_std: float = PCA_ALPHA_STD,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        self.folder = folder
        self.scale = TrainScale.parse(scale)
        self.crop = as_hw(crop)
        self.stats = stats
        self.seed = int(seed)
        self.alpha_std = float(alpha_std)
        self.preprocessing = preprocessing or paper_preprocessing(stats)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.folder)

    def params(self, index: int, epoch: int | None = None, size=None) -> CropParams:
        """The random choices for sample `index` at `epoch` (default: the current epoch)."""
        rng = sample_rng(self.seed, self.epoch if epoch is None else epoch, index)
        size = self.folder.sizes[index] if size is None else size
        return sample_crop_params(rng, size, self.scale, self.crop, self.alpha_std)

    def sample(self, index: int, epoch: int) -> tuple[torch.Tensor, int]:
        """Item `index` at `epoch`, without touching the current epoch."""
        drawn: dict[tuple[int, int], CropParams] = {}

        def min_size_for(size: tuple[int, int]) -> tuple[int, int]:
            drawn[size] = self.params(index, epoch, size)
            return drawn[size].scaled

        img, label, used = self.folder.load(index, min_size_for)
        # `used` differs from `index` only if a file failed after the scan; the substitute
        # keeps this index's random stream.
        params = drawn[self.folder.sizes[used]]
        return augment(img, params, self.crop, self.stats, self.preprocessing), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.sample(int(index), self.epoch)
