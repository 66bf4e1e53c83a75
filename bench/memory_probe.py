"""How well the memory probe predicts a training step's peak: predicted vs measured.

Run: python bench/memory_probe.py [--spec specs/A.vgg] [--batches 16,32,64] [--classes 10]

For each batch B, in a fresh process each (so that one's retained memory does not hide
the next one's): the probe of runtime/train/memory_probe.py (a warm-up step, then steps at
b1 and b2 ≤ 8, extrapolated to B), and, as the reference, three real steps at B with the
trainer's allocator setting (freed memory kept): the resident set they leave above the
process's baseline, which is their peak, since that heap never shrinks. Prints both, their
ratio, and the graph's estimate (dist/resources.py). The trainer refuses when the
prediction passes what is available less the margin (10 % and 0.5 GiB): a measured figure
above prediction + margin would be a miss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

CHILD = """
import json, sys, torch
from types import SimpleNamespace
from vggspec.compiler import load_spec
from vggspec.runtime.dist.cpu_memory import retain_freed_memory
from vggspec.runtime.train import memory_probe as mp
from vggspec.runtime.dist.resources import training_need

spec_path, batch, classes, what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(2)
retain_freed_memory()  # as the trainer does on a CPU
spec = load_spec(spec_path)
cfg = SimpleNamespace(precision="fp32", backend="torch", dropout=0.5, channels_last=False,
                      lr=0.01, momentum=0.9, weight_decay=5e-4, workers=0)
device = torch.device("cpu")
if what == "probe":
    probe = mp.measure(cfg, spec, classes, batch, device)
    print(json.dumps({"predicted": probe.need(batch), "batches": probe.batches,
                      "peaks": probe.peaks, "estimate": training_need(spec, batch).memory}))
else:  # three real steps at B; the retained heap never shrinks: the end is the peak
    baseline = mp._baseline(device)
    mp._steps(cfg, spec, classes, device, (batch, batch), baseline)
    print(json.dumps({"measured": mp._baseline(device) - baseline}))
"""


def child(spec: str, batch: int, classes: int, what: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, spec, str(batch), str(classes), what],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"},
    )
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/A.vgg")
    parser.add_argument("--batches", default="16,32,64")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    gib = 1 << 30
    print(f"{args.spec}, {args.classes} classes, fp32, torch backend, 2 threads")
    print("batch  probe (b1, b2)  estimate  predicted  measured  measured/predicted")
    for batch in (int(b) for b in args.batches.split(",")):
        probe = child(args.spec, batch, args.classes, "probe")
        real = child(args.spec, batch, args.classes, "real")
        print(
            f"{batch:5d}  {tuple(probe['batches'])!s:14s}  {probe['estimate'] / gib:6.2f} G"
            f"  {probe['predicted'] / gib:7.2f} G  {real['measured'] / gib:6.2f} G"
            f"  {real['measured'] / probe['predicted']:6.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
