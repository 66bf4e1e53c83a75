"""Is the demo data learnable on CPU in ~2 minutes? A plain-PyTorch VGG-style net on runtime's data.

    python bench/demo_learnability.py [--budget 120] [--scale 72,96] [--lr 0.01] [--std 64]

Generates the demo set in a temporary folder, trains with the paper's augmentation and SGD
(momentum 0.9, weight decay 5e-4) until the time budget is spent, and prints centre-crop
validation accuracy after every epoch. No vggspec compiler involved. The defaults are the
settings measured to work in two minutes; `--std 1 --dropout 0.5 --init glorot` is the
paper's literal recipe, which stays at chance for that long (see the module's report).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn as nn
from torch.utils.data import RandomSampler
from vggspec.runtime.data.augment import TrainDataset
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.data.loader import make_loader
from vggspec.runtime.data.preprocessing import Preprocessing
from vggspec.runtime.data.validation import CenterCropDataset
from vggspec.runtime.io.color_stats_file import load_or_compute_color_stats


def demo_net(classes: int, crop: int, dropout: float, init: str) -> nn.Sequential:
    """conv3-32 maxpool conv3-64 maxpool conv3-128 maxpool conv3-128 maxpool FC-256 FC-256 FC-n."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 128, 128):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    side = crop // 16
    layers += [
        nn.Flatten(),
        nn.Linear(channels * side * side, 256),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(256, classes),
    ]
    for m in layers:
        if isinstance(m, nn.Conv2d | nn.Linear):
            if init == "glorot":
                nn.init.xavier_uniform_(m.weight)
            elif init == "kaiming":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:  # the paper's N(0, 0.01²)
                nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def accuracy(net: nn.Module, loader) -> float:
    net.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((net(x).argmax(1) == y).sum())
            total += len(y)
    net.train()
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds")
    parser.add_argument("--scale", default="72,96", help="S or S_min,S_max")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--std", type=float, default=64.0, help="input = (pixel - mean) / std")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--init", choices=("glorot", "kaiming", "normal"), default="kaiming")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scale = [int(v) for v in args.scale.split(",")]
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        make_demo_dataset(root, args.seed, args.train_per_class, args.val_per_class)
        t_gen = time.perf_counter() - t0
        train_folder = scan_image_folder(root, "train")
        val_folder = scan_image_folder(root, "val", classes=train_folder.classes)
        stats = load_or_compute_color_stats(train_folder)
        t_prep = time.perf_counter() - t0 - t_gen
        print(
            f"demo data: {len(train_folder)} train / {len(val_folder)} val images, "
            f"generated in {t_gen:.1f} s, scan+stats {t_prep:.1f} s"
        )
        preprocessing = Preprocessing.trained(stats.mean_rgb, (args.std,) * 3)
        train = TrainDataset(
            train_folder,
            scale=scale,
            crop=args.crop,
            stats=stats,
            seed=args.seed,
            preprocessing=preprocessing,
        )
        val = CenterCropDataset(
            val_folder, scale=scale, crop=args.crop, preprocessing=preprocessing
        )
        sampler_gen = torch.Generator().manual_seed(args.seed)
        train_loader = make_loader(
            train,
            args.batch,
            args.workers,
            RandomSampler(train, generator=sampler_gen),
            drop_last=True,
        )
        val_loader = make_loader(val, 250, 0)
        net = demo_net(len(train_folder.classes), args.crop, args.dropout, args.init)
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        start = time.perf_counter()
        epoch = seen = 0
        while time.perf_counter() - start < args.budget:
            train.set_epoch(epoch)
            for x, y in train_loader:
                loss = nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(y)
                if time.perf_counter() - start >= args.budget:
                    break
            elapsed = time.perf_counter() - start
            acc = accuracy(net, val_loader)
            print(
                f"epoch {epoch}: loss {loss.item():.3f} val top-1 {acc:.1%} "
                f"after {elapsed:.0f} s ({seen / elapsed:.0f} img/s)",
                flush=True,
            )
            epoch += 1


if __name__ == "__main__":
    main()
