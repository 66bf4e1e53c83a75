"""How a net wants its pixels: channel order, scale, mean and std, as one explicit object."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vggspec.compiler.frontend.errors import VggspecError

# The VGG team's Caffe release: BGR input, 0..255, minus the ILSVRC mean pixel
# (B 103.939, G 116.779, R 123.68), no division.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
# torchvision's ImageNet weights: RGB on [0, 1], minus mean, divided by std.
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
CHOICES = ("vggspec", "caffe", "torchvision")


class NormalizationError(VggspecError):
    """Weights whose pixel convention is unknown or inconsistent."""


@dataclass(frozen=True)
class Normalization:
    """RGB pixels in 0..255 → the net's input: times `unit`, minus `mean_rgb`, divided by
    `std_rgb` (all in RGB order, in the units after `unit`), then channels reversed if
    `bgr`. vggspec's own nets: mean RGB of their training set, unit 1, std 1, RGB."""

    name: str
    mean_rgb: tuple[float, float, float]
    std_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: float = 1.0
    bgr: bool = False

    @classmethod
    def caffe(cls) -> Normalization:
        return cls("caffe", CAFFE_MEAN_RGB, bgr=True)

    @classmethod
    def torchvision(cls) -> Normalization:
        return cls("torchvision", TORCHVISION_MEAN_RGB, TORCHVISION_STD_RGB, unit=1 / 255)

    @classmethod
    def from_metadata(cls, preprocess: dict, source: str) -> Normalization:
        """What a vggspec net saved by training expects (its `preprocess` metadata)."""
        mean = preprocess.get("mean_rgb")
        if not isinstance(mean, list | tuple) or len(mean) != 3:
            raise NormalizationError(
                f"{source}: no mean_rgb in its metadata, so its pixel convention is unknown; "
                "say it with --preprocess caffe|torchvision"
            )
        pixel_range = preprocess.get("pixel_range", 255)
        if pixel_range not in (1, 255):
            raise NormalizationError(f"{source}: pixel_range {pixel_range!r} is not 1 or 255")
        unit = 1.0 if pixel_range == 255 else 1 / 255
        std = preprocess.get("std_rgb") or (1.0, 1.0, 1.0)
        if len(std) != 3 or min(std) <= 0:
            raise NormalizationError(f"{source}: std_rgb {std!r} is not three positive numbers")
        bgr = bool(preprocess.get("bgr", False))  # converted Caffe weights (vggspec convert)
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        return cls("vggspec", mean, std, unit, bgr)

    @classmethod
    def named(cls, name: str, preprocess: dict | None = None, source: str = "") -> Normalization:
        if name == "caffe":
            return cls.caffe()
        if name == "torchvision":
            return cls.torchvision()
        if name == "vggspec":
            return cls.from_metadata(preprocess or {}, source)
        raise NormalizationError(f"unknown preprocessing {name!r}: choose {', '.join(CHOICES)}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 RGB → float32 net input on the same device."""
        x = images.float()
        if self.unit != 1.0:
            x = x * self.unit
        x = x - torch.tensor(self.mean_rgb, dtype=torch.float32, device=x.device)[:, None, None]
        if self.std_rgb != (1.0, 1.0, 1.0):
            std = torch.tensor(self.std_rgb, dtype=torch.float32, device=x.device)
            x = x / std[:, None, None]
        return x.flip(1) if self.bgr else x

    def describe(self) -> str:
        mean = ",".join(f"{v:.4g}" for v in self.mean_rgb)
        text = f"{self.name}: RGB {'× 1/255 ' if self.unit != 1.0 else ''}− ({mean})"
        if self.std_rgb != (1.0, 1.0, 1.0):
            text += " ÷ (" + ",".join(f"{v:.4g}" for v in self.std_rgb) + ")"
        return text + (", fed as BGR" if self.bgr else "")
