"""Helpers for the evaluation tests: tiny specs, nets saved as training would, image folders."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import vggspec

SPEC_224 = "input 224x224 RGB\n" + "conv3-4 maxpool\n" * 5 + "FC-16 FC-16 FC-10 soft-max\n"
SPEC_32 = "input 32x32 RGB\nconv3-8 maxpool\nconv3-16 maxpool\nFC-32 FC-32 FC-6 soft-max\n"
CLASSES = ["a", "b", "c", "d", "e", "f"]
MEAN = [120.0, 115.0, 100.0]


def save_net(path, spec_text, seed, *, classes=CLASSES, train_scale=(36, 44), spec_dir=None):
    spec = (spec_dir or path.parent) / f"net{seed}.vgg"
    spec.write_text(spec_text)
    torch.manual_seed(seed)
    net = vggspec.build_net(spec, backend="torch", num_classes=len(classes))
    info = vggspec.ModelInfo(
        vggspec.Preprocessing.trained(MEAN), tuple(classes), vggspec.TrainScale(*train_scale)
    )
    vggspec.save(net, path, info)
    return path


def write_images(root, sizes_by_class, seed=0, fmt="PNG", split="val"):
    rng = np.random.default_rng(seed)
    for name, sizes in sizes_by_class.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for k, (w, h) in enumerate(sizes):
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{k:03d}.{fmt.lower()}", fmt)
    return root
