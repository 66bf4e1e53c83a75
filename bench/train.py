"""Training throughput of vggspec's trainer against a hand-written PyTorch loop.

Run: python bench/train.py [--demo-steps 40] [--a-steps 4] [--a-batch 16] [--rounds 3]

Both sides train the same architecture on the same data pipeline (the paper's
augmentation over a JPEG ImageFolder written to a temporary folder) with SGD, one
process, this machine's threads. The vggspec side is the real `vggspec run train`
(in-process); the hand-written side is a plain loop over an nn.Sequential. Each prints
steady-state images/s (data loading and each epoch's loader restart included; the
first, warm-up step and the trainer's validation excluded) and the ratio vggspec /
hand-written: ≥ 0.95 means the trainer costs under 5 %. The two alternate for --rounds
rounds and the median ratio is reported, since a shared machine is noisy. Last, the
data pipeline's images/s per worker at 224 crops.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference_vgg import ReferenceVGG  # noqa: E402

from runtime.augment import TrainDataset  # noqa: E402
from runtime.color_stats import load_or_compute_color_stats  # noqa: E402
from runtime.config import make_config  # noqa: E402
from runtime.demo_data import make_demo_dataset  # noqa: E402
from runtime.image_folder import scan_image_folder  # noqa: E402
from runtime.loader import make_loader  # noqa: E402
from runtime.train import run_training  # noqa: E402


def demo_sequential(classes: int) -> nn.Sequential:
    """specs/demo.vgg written by hand."""
    layers, channels = [], 3
    for item in (32, "M", 64, "M", 128, 128, "M", 256, "M"):
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(
        *layers, nn.Flatten(),
        nn.Linear(256 * 4 * 4, 256), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(256, 256), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(256, classes),
    )  # fmt: skip


def write_imagenet_like(root: Path, classes: int = 4, per_class: int = 24) -> None:
    """JPEGs of ImageNet's typical size (500×375) for the 224 crops of config A."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)


def hand_written(
    net: nn.Module, data: Path, crop: int, scale, batch: int, steps: int, workers: int
) -> float:
    """Images/s of a plain loop: per epoch, DataLoader → forward → cross-entropy → SGD
    (like the trainer, it restarts the loader's workers each epoch)."""
    folder = scan_image_folder(data, "train")
    stats = load_or_compute_color_stats(folder)
    dataset = TrainDataset(folder, scale=scale, crop=crop, stats=stats, seed=0)
    sampler = torch.utils.data.RandomSampler(dataset)
    loader = make_loader(dataset, batch, workers, sampler, drop_last=True)
    optimizer = torch.optim.SGD(net.parameters(), 0.001, momentum=0.9, weight_decay=5e-4)
    net.train()
    start, done = None, 0
    while done < steps:
        for x, y in loader:
            loss = nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            start = start or time.perf_counter()  # like the trainer, the first step is warm-up
            if done == steps:
                break
    return batch * (steps - 1) / (time.perf_counter() - start)


def vggspec_trainer(
    spec: Path, data: Path, out: Path, scale, batch: int, steps: int, workers: int
) -> float:
    cfg = make_config({
        "spec": str(spec), "data": str(data), "out": str(out), "batch_size": batch,
        "max_steps": steps, "scale": scale, "workers": workers, "lr": 0.001,
        "init": "glorot", "log_every": 10**6, "checkpoint_every": 10**6, "backend": "torch",
    })  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        summary = run_training(cfg)
    return summary["images_per_second"]


def pipeline_rate(data: Path, crop: int, scale, seconds: float = 4.0) -> float:
    """Images/s of one process (= one loader worker): decode, rescale, crop, flip, PCA
    colour shift and mean subtraction of JPEG training items, no net."""
    folder = scan_image_folder(data, "train")
    dataset = TrainDataset(
        folder, scale=scale, crop=crop, stats=load_or_compute_color_stats(folder), seed=0
    )
    dataset[0]  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[count % len(dataset)]
        count += 1
    return count / (time.perf_counter() - start)


def compare(name, spec, data, hand_net, crop, scale, batch, steps, workers, tmp, rounds):
    ours, theirs = [], []
    for i in range(rounds):
        ours.append(
            vggspec_trainer(spec, data, tmp / f"run-{name}-{i}", scale, batch, steps, workers)
        )
        theirs.append(hand_written(hand_net, data, crop, scale, batch, steps, workers))
    ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    print(
        f"  {name:24s} vggspec {statistics.median(ours):7.1f} img/s   hand-written "
        f"{statistics.median(theirs):7.1f} img/s   ratio {ratio:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-steps", type=int, default=40)
    parser.add_argument("--a-steps", type=int, default=4)
    parser.add_argument("--a-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"training throughput, one process, {torch.get_num_threads()} threads, "
        f"{args.workers} data worker(s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_demo_dataset(tmp / "demo", seed=0, train_per_class=60, val_per_class=2)
        compare(
            "demo spec (64x64, b64)",
            ROOT / "specs" / "demo.vgg",
            tmp / "demo",
            demo_sequential(10),
            64,
            [72, 96],
            64,
            args.demo_steps,
            args.workers,
            tmp,
            args.rounds,
        )
        write_imagenet_like(tmp / "inet")
        compare(
            f"config A (224, b{args.a_batch})",
            ROOT / "specs" / "A.vgg",
            tmp / "inet",
            ReferenceVGG("A", num_classes=4),
            224,
            256,
            args.a_batch,
            args.a_steps,
            args.workers,
            tmp,
            args.rounds,
        )
        rate = pipeline_rate(tmp / "inet", 224, 256)
        print(
            f"  data pipeline, 224 crops from 500x375 JPEGs: {rate:.0f} images/s per worker "
            "(bench/data.py compares it with plain PIL)"
        )


if __name__ == "__main__":
    main()
