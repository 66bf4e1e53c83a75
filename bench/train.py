"""Training throughput of vggspec's trainer against a hand-written PyTorch loop.

Run: python bench/train.py [--demo-steps 80] [--a-steps 6] [--a-batch 16] [--rounds 3]
     python bench/train.py --precision [--a-steps 6] [--a-batch 16] [--rounds 3]

Both sides train the same architecture on the same data pipeline (the paper's
augmentation over a JPEG ImageFolder written to a temporary folder) with SGD, one
process, this machine's threads. The vggspec side is the real `vggspec run train`; the
hand-written side is a plain loop over an nn.Sequential. Each prints steady-state
images/s (data loading and each epoch's loader restart included; the first, warm-up step
and the trainer's validation and checkpoints excluded).

Every measurement runs in a fresh process, so no side inherits the other's heap. On CPU
the trainer keeps freed memory for the next step (runtime/cpu_memory.py) instead of
faulting gigabytes in again each step, so the hand-written loop runs twice: as written
(the C library's defaults) and with the same allocator setting. The first ratio, vggspec
/ hand-written with the same setting, is the trainer's own cost (≥ 0.95: under 5 %);
the second is what a user gains over the plain loop. The sides alternate for --rounds
rounds; the median ratio is reported with its range over the rounds, since a shared
machine is noisy. Last, the data pipeline's images/s per worker at 224 crops.

--precision: the trainer alone on config A, `precision: bf16` with the default layout (which
the trainer's log names: channels_last on a bf16 run) and with NCHW, against the fp32 NCHW
step (the default of an fp32 run on the CPU), rotated rounds in fresh processes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vggspec.threads import sleep_when_idle

sleep_when_idle()  # as `vggspec run train` does, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference_vgg import ReferenceVGG  # noqa: E402
from vggspec.compiler import load_spec  # noqa: E402
from vggspec.runtime.data.augment import TrainDataset  # noqa: E402
from vggspec.runtime.data.demo import make_demo_dataset  # noqa: E402
from vggspec.runtime.data.image_folder import scan_image_folder  # noqa: E402
from vggspec.runtime.data.loader import make_loader  # noqa: E402
from vggspec.runtime.dist.cpu_memory import retain_freed_memory  # noqa: E402
from vggspec.runtime.io.color_stats_file import load_or_compute_color_stats  # noqa: E402
from vggspec.runtime.train.config import make_config  # noqa: E402
from vggspec.runtime.train.trainer import run_training  # noqa: E402


def demo_sequential(classes: int) -> nn.Sequential:
    """bench/parity-demo.vgg (the 64x64 demo net of 2026-12-02, without batch norm) by hand."""
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
    spec: Path, data: Path, out: Path, scale, batch: int, steps: int, workers: int, **settings
) -> float:
    cfg = make_config({
        "spec": str(spec), "data": str(data), "out": str(out), "batch_size": batch,
        "max_steps": steps, "scale": scale, "workers": workers, "lr": 0.001,
        "init": "glorot", "log_every": 10**6, "checkpoint_every": 10**6, "backend": "torch",
        **settings,
    })  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        summary = run_training(cfg, load_spec(cfg.spec))
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


NETS = {
    # name: (spec, hand-written net, crop, scale S)
    "demo": (ROOT / "bench" / "parity-demo.vgg", lambda: demo_sequential(10), 64, [72, 96]),
    "A": (ROOT / "specs" / "A.vgg", lambda: ReferenceVGG("A", num_classes=4), 224, 256),
}
SIDES = ("vggspec", "hand", "hand+retain")
# --precision's sides: the trainer's settings (channels_last left out: its default).
PRECISION_SIDES = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "bf16 NCHW": {"precision": "bf16", "channels_last": False},
}


def measure(side: str, net: str, data: Path, out: Path, batch: int, steps: int, workers: int):
    """One side's images/s, in this (fresh) process."""
    spec, make_hand_net, crop, scale = NETS[net]
    if side == "vggspec":
        return vggspec_trainer(spec, data, out, scale, batch, steps, workers)
    if side in PRECISION_SIDES:
        return vggspec_trainer(
            spec, data, out, scale, batch, steps, workers, **PRECISION_SIDES[side]
        )
    if side == "hand+retain":
        retain_freed_memory()
    torch.manual_seed(0)
    return hand_written(make_hand_net(), data, crop, scale, batch, steps, workers)


def in_fresh_process(side, net, data, out, batch, steps, workers) -> float:
    command = [
        sys.executable, __file__, "--side", side, "--net", net, "--data", str(data),
        "--out", str(out), "--batch", str(batch), "--steps", str(steps),
        "--workers", str(workers),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{side} on {net} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def compare_precision(data, batch, steps, workers, tmp, rounds):
    """Config A's trainer: bf16 (default layout) and bf16 NCHW against fp32 NCHW."""
    sides = list(PRECISION_SIDES)
    rates = {side: [] for side in sides}
    layouts = {}
    for i in range(rounds):
        for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
            out = tmp / f"run-precision-{i}-{side.replace(' ', '-')}"
            rates[side].append(in_fresh_process(side, "A", data, out, batch, steps, workers))
            log = (out / "train.log").read_text()
            layouts[side] = next(line for line in log.splitlines() if "conv weights" in line)
    for side in sides:
        each = [a / b for a, b in zip(rates[side], rates["fp32"], strict=True)]
        print(
            f"  config A (224, b{batch}) {side:9s} {statistics.median(rates[side]):6.2f} img/s, "
            f"{statistics.median(each):.2f}x fp32 ({min(each):.2f}-{max(each):.2f}); "
            f"log: {layouts[side].split('] ', 1)[-1].strip()}"
        )


def conv_ceiling(batch: int) -> None:
    """What the CPU allows bf16 to gain, apart from the trainer: oneDNN's throughput (GFLOP/s,
    best of 3 after a first call) for a 2048² matrix product and for three of A's 3×3
    convolutions at their sizes, forward and backward (input and weight gradients), fp32 in
    NCHW and NHWC and bf16 tensors in NHWC, all in this process."""
    torch.manual_seed(0)

    def best(f):
        f()
        times = []
        for _ in range(3):
            tick = time.perf_counter()
            f()
            times.append(time.perf_counter() - tick)
        return min(times)

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    fp32 = 2 * 2048**3 / best(lambda: a @ b) / 1e9
    a, b = a.bfloat16(), b.bfloat16()
    bf16 = 2 * 2048**3 / best(lambda: a @ b) / 1e9
    print(f"  oneDNN ceiling: 2048² matrix product fp32 {fp32:.0f} GFLOP/s, "
          f"bf16 {bf16:.0f} ({bf16 / fp32:.2f}x)")  # fmt: skip
    layouts = {
        "fp32 NCHW": (torch.float32, torch.contiguous_format),
        "fp32 NHWC": (torch.float32, torch.channels_last),
        "bf16 NHWC": (torch.bfloat16, torch.channels_last),
    }
    for channels, side in ((128, 112), (256, 56), (512, 28)):
        flops = 2 * batch * channels * channels * 9 * side * side  # forward; backward twice it
        rates = {}
        for label, (dtype, layout) in layouts.items():
            conv = nn.Conv2d(channels, channels, 3, padding=1).to(dtype, memory_format=layout)
            x = torch.randn(batch, channels, side, side, dtype=dtype)
            x = x.contiguous(memory_format=layout).requires_grad_(True)

            def step(conv=conv, x=x):
                y = conv(x)
                y.backward(torch.ones_like(y))

            rates[label] = 3 * flops / best(step) / 1e9
        base = rates["fp32 NCHW"]
        print(f"  oneDNN ceiling: conv {channels}->{channels} 3x3 at {side}x{side}, b{batch}, "
              "forward + backward: " + ", ".join(
                  f"{k} {v:.0f} GFLOP/s ({v / base:.2f}x)" for k, v in rates.items()))  # fmt: skip


def compare(net, label, data, batch, steps, workers, tmp, rounds):
    rates = {side: [] for side in SIDES}
    for i in range(rounds):
        for side in SIDES[i % 3 :] + SIDES[: i % 3]:  # each side takes each slot in turn
            out = tmp / f"run-{net}-{i}"
            rates[side].append(in_fresh_process(side, net, data, out, batch, steps, workers))

    def ratio(other: str) -> str:
        each = [a / b for a, b in zip(rates["vggspec"], rates[other], strict=True)]
        return f"{statistics.median(each):.3f} ({min(each):.2f}-{max(each):.2f})"

    rate = {side: statistics.median(values) for side, values in rates.items()}
    print(
        f"  {label:22s} vggspec {rate['vggspec']:6.1f} img/s | hand-written, same allocator "
        f"{rate['hand+retain']:6.1f}: ratio {ratio('hand+retain')} | hand-written as is "
        f"{rate['hand']:6.1f}: ratio {ratio('hand')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-steps", type=int, default=80)
    parser.add_argument("--a-steps", type=int, default=6)
    parser.add_argument("--a-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    # One measurement in this process (what each fresh process is asked to do):
    parser.add_argument("--precision", action="store_true", help="only: A in bf16 vs fp32")
    parser.add_argument("--side", choices=SIDES + tuple(PRECISION_SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--net", choices=sorted(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        rate = measure(
            args.side, args.net, args.data, args.out, args.batch, args.steps, args.workers
        )
        print(rate)
        return
    print(
        f"training throughput, one process, {torch.get_num_threads()} threads, "
        f"{args.workers} data worker(s), each measurement in a fresh process"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.precision:
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {load}")
            write_imagenet_like(tmp / "inet")
            compare_precision(
                tmp / "inet", args.a_batch, args.a_steps, args.workers, tmp, args.rounds
            )
            conv_ceiling(args.a_batch)
            return
        make_demo_dataset(tmp / "demo", seed=0, train_per_class=60, val_per_class=2)
        compare(
            "demo", "64x64 demo spec of 2026-12-02 (b64)", tmp / "demo", 64, args.demo_steps,
            args.workers, tmp, args.rounds,
        )  # fmt: skip
        write_imagenet_like(tmp / "inet")
        compare(
            "A", f"config A (224, b{args.a_batch})", tmp / "inet", args.a_batch, args.a_steps,
            args.workers, tmp, args.rounds,
        )  # fmt: skip
        rate = pipeline_rate(tmp / "inet", 224, 256)
        print(
            f"  data pipeline, 224 crops from 500x375 JPEGs: {rate:.0f} images/s per worker "
            "(bench/data.py compares it with plain PIL)"
        )


if __name__ == "__main__":
    main()
