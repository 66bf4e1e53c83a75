"""How a net wants its pixels: colour order, pixel range, mean and std, as one object used by
the training workers, validation, evaluation, features and the saved weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from vggspec.compiler.errors import VggspecError

# The VGG team's Caffe release: BGR input, 0..255, minus the ILSVRC mean pixel
# (B 103.939, G 116.779, R 123.68), no division.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
# torchvision's ImageNet weights: RGB on [0, 1], minus mean, divided by std.
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
CHOICES = ("vggspec", "caffe", "torchvision")
NO_STD = (1.0, 1.0, 1.0)


class PreprocessingError(VggspecError):
    """Weights whose pixel convention is unknown or inconsistent."""


def _three(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _is_three_numbers(value) -> bool:
    """Whether saved metadata holds a list of three numbers there (JSON can hold anything)."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


@dataclass(frozen=True)
class Preprocessing:
    """RGB pixels in 0..255 → the net's input: scaled to 0..`pixel_range` (255: as they
    are; 1: times 1/255), minus `mean_rgb`, divided by `std_rgb` (RGB order, in the units of
    the pixel range), then channels reversed if `bgr`. vggspec's own nets: the mean RGB of
    their training set, range 255, RGB; std 1 (the paper) or the training set's std."""

    name: str
    mean_rgb: tuple[float, float, float]
    std_rgb: tuple[float, float, float] = NO_STD
    pixel_range: int = 255
    bgr: bool = False

    @classmethod
    def trained(cls, mean_rgb: Sequence[float], std_rgb: Sequence[float] | None = None):
        """A net trained by vggspec: 0..255 RGB minus its training set's mean (and divided
        by its std when the run asked for it)."""
        return cls("vggspec", _three(mean_rgb), _three(std_rgb) if std_rgb else NO_STD)

    @classmethod
    def caffe(cls) -> Preprocessing:
        return cls("caffe", CAFFE_MEAN_RGB, bgr=True)

    @classmethod
    def torchvision(cls) -> Preprocessing:
        return cls("torchvision", TORCHVISION_MEAN_RGB, TORCHVISION_STD_RGB, pixel_range=1)

    @classmethod
    def from_metadata(cls, preprocess: dict, source: str) -> Preprocessing:
        """What a vggspec net saved by training expects (its `preprocess` metadata)."""
        mean = preprocess.get("mean_rgb")
        if not isinstance(mean, list | tuple) or len(mean) != 3:
            raise PreprocessingError(
                f"{source}: no mean_rgb in its metadata, so its pixel convention is unknown; "
                "say it with --preprocess caffe|torchvision"
            )
        if not _is_three_numbers(mean):
            raise PreprocessingError(f"{source}: mean_rgb {mean!r} is not three numbers")
        pixel_range = preprocess.get("pixel_range", 255)
        if pixel_range not in (1, 255):
            raise PreprocessingError(f"{source}: pixel_range {pixel_range!r} is not 1 or 255")
        std = preprocess.get("std_rgb") or NO_STD
        if not _is_three_numbers(std) or min(std) <= 0:
            raise PreprocessingError(f"{source}: std_rgb {std!r} is not three positive numbers")
        bgr = bool(preprocess.get("bgr", False))
        return cls("vggspec", _three(mean), _three(std), int(pixel_range), bgr)

    @classmethod
    def named(cls, name: str, preprocess: dict | None = None, source: str = "") -> Preprocessing:
        if name == "caffe":
            return cls.caffe()
        if name == "torchvision":
            return cls.torchvision()
        if name == "vggspec":
            return cls.from_metadata(preprocess or {}, source)
        raise PreprocessingError(f"unknown preprocessing {name!r}: choose {', '.join(CHOICES)}")

    def to_metadata(self) -> dict:
        """The keys saved in a net's `preprocess` metadata (read back by `from_metadata`);
        std and colour order only when they are not the default, as earlier files had them."""
        info: dict = {"mean_rgb": list(self.mean_rgb), "pixel_range": self.pixel_range}
        if self.std_rgb != NO_STD:
            info["std_rgb"] = list(self.std_rgb)
        if self.bgr:
            info["bgr"] = True
        return info

    @property
    def pixel_factor(self) -> float:
        """What 0..255 pixels are multiplied by to reach the pixel range."""
        return 1.0 if self.pixel_range == 255 else 1 / 255

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB → float32 net input on the same device. On the CPU it is
        numpy's, on one thread: evaluation makes it in its read-ahead thread while the net
        computes, where torch's would start a second team of OpenMP threads on the net's
        cores. The figures are torch's, bit for bit (tests/test_prefetch.py)."""
        if images.device.type == "cpu":
            return torch.from_numpy(self._normalised(images.numpy()))
        x = images.float()
        if self.pixel_factor != 1.0:
            x = x * self.pixel_factor
        x = x - torch.tensor(self.mean_rgb, dtype=torch.float32, device=x.device)[:, None, None]
        if self.std_rgb != NO_STD:
            std = torch.tensor(self.std_rgb, dtype=torch.float32, device=x.device)
            x = x / std[:, None, None]
        return x.flip(1) if self.bgr else x

    def image(self, pixels: np.ndarray, shift_rgb: Sequence[float] | None = None) -> torch.Tensor:
        """One HWC uint8 RGB image (optionally shifted per channel, in pixel units: the PCA
        colour shift) → the CHW float32 net input, in one pass: the same figures as
        `__call__` on the unshifted image."""
        return torch.from_numpy(self._normalised(np.asarray(pixels).transpose(2, 0, 1), shift_rgb))

    def _normalised(self, chw: np.ndarray, shift_rgb: Sequence[float] | None = None) -> np.ndarray:
        """uint8 RGB, channels on axis -3 → float32 net input. For range 255 the shift and
        the mean are one float32 add, then a true float32 division by the std."""
        out = np.empty(chw.shape, dtype=np.float32)
        mean = np.asarray(self.mean_rgb, dtype=np.float32)
        shift = np.zeros(3) if shift_rgb is None else np.asarray(shift_rgb)
        if self.pixel_factor == 1.0:
            # Shift and mean are both constant per channel: one add does both.
            offset = np.asarray(shift - np.asarray(self.mean_rgb), dtype=np.float32)
            np.add(chw, offset[:, None, None], out=out)
        else:
            np.add(chw, np.asarray(shift, dtype=np.float32)[:, None, None], out=out)
            out *= np.float32(self.pixel_factor)
            out -= mean[:, None, None]
        if self.std_rgb != NO_STD:
            out /= np.asarray(self.std_rgb, dtype=np.float32)[:, None, None]
        if self.bgr:
            out = np.ascontiguousarray(out[..., ::-1, :, :])
        return out

    def describe(self) -> str:
        mean = ",".join(f"{v:.4g}" for v in self.mean_rgb)
        text = f"{self.name}: RGB {'× 1/255 ' if self.pixel_factor != 1.0 else ''}− ({mean})"
        if self.std_rgb != NO_STD:
            text += " ÷ (" + ",".join(f"{v:.4g}" for v in self.std_rgb) + ")"
        return text + (", fed as BGR" if self.bgr else "")
