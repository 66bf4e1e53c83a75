"""Forward + backward of config D through vggspec's torch backend, against a
hand-written nn.Sequential VGG-16 with the same weights, in the same process.

Run: python bench/lowering.py [--batch 8] [--rounds 3] [--config D]
Prints seconds per step of each and the ratio vggspec / hand-written (≤ 1 means
vggspec is no slower), in NCHW and in channels-last. Rounds alternate the two nets
(and which goes first) so that machine noise hits both alike; the median round is
reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from reference_vgg import ReferenceVGG  # noqa: E402

import vggspec  # noqa: E402


def step_seconds(net, x, target) -> float:
    start = time.perf_counter()
    net.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(x), target)
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="D", choices=["A", "B", "D", "E"])
    args = parser.parse_args()
    torch.manual_seed(0)
    reference = ReferenceVGG(args.config)
    ours = vggspec.build_net(ROOT / "specs" / f"{args.config}.vgg", backend="torch")
    vggspec.load_torchvision(ours, reference.state_dict())
    x = torch.randn(args.batch, 3, 224, 224)
    target = torch.randint(0, 1000, (args.batch,))
    print(
        f"config {args.config}, batch {args.batch}, forward+backward, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for fmt_name, fmt in (
        ("NCHW", torch.contiguous_format),
        ("channels-last", torch.channels_last),
    ):
        for net in (ours, reference):
            net.to(memory_format=fmt).train()
        xf = x.contiguous(memory_format=fmt)
        step_seconds(ours, xf, target)  # warm-up: allocator, mkldnn primitives
        step_seconds(reference, xf, target)
        ratios, ours_s, ref_s = [], [], []
        for i in range(args.rounds):
            if i % 2:  # alternate which net goes first, so order effects cancel
                b = step_seconds(reference, xf, target)
                a = step_seconds(ours, xf, target)
            else:
                a = step_seconds(ours, xf, target)
                b = step_seconds(reference, xf, target)
            ours_s.append(a)
            ref_s.append(b)
            ratios.append(a / b)
        print(
            f"  {fmt_name:13s} vggspec {statistics.median(ours_s):6.2f} s/step   "
            f"hand-written {statistics.median(ref_s):6.2f} s/step   "
            f"ratio {statistics.median(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
