"""The demo recipe over several seeds: what `make demo` does, timed, and its accuracy.

    python bench/demo_seeds.py [--seeds 0,1,2] [key=value ...]

For each seed (each has its own demo data, written once to ~/.cache/vggspec): `vggspec run
train --config specs/demo.yaml seed=S`, then `vggspec run eval --checkpoint` (the paper's
dense protocol at the recipe's test scales), each in a fresh process. Prints per seed the
wall and CPU seconds (user + sys, children included) of each command, the training
images/s, the best validation epoch and its accuracy (the net kept as model.safetensors)
and the dense top-1 accuracy; then the worst seed. key=value words go to `run train`
(e.g. epochs=10). No ratio: on a shared machine compare CPU seconds, not wall.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VGGSPEC = [sys.executable, "-m", "vggspec"]


def timed(command: list[str]) -> tuple[float, float]:
    """(wall, user + sys CPU) seconds of a child command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def top1_error(report) -> float:
    """The first top-1 error in a `run eval --json` report."""
    if isinstance(report, dict):
        if "top1_error" in report:
            return float(report["top1_error"])
        values = report.values()
    elif isinstance(report, list):
        values = report
    else:
        raise KeyError("top1_error")
    for value in values:
        try:
            return top1_error(value)
        except KeyError:
            continue
    raise KeyError("top1_error")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("settings", nargs="*", help="key=value for run train")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            run = Path(tmp) / f"seed{seed}"
            train = [*VGGSPEC, "run", "train", "--config", "specs/demo.yaml"]
            train_wall, train_cpu = timed([*train, f"seed={seed}", f"out={run}", *args.settings])
            report = run / "eval.json"
            evaluate = [*VGGSPEC, "run", "eval", "--checkpoint", str(run), "--json", "-o"]
            eval_wall, eval_cpu = timed([*evaluate, str(report)])
            summary = json.loads((run / "summary.json").read_text())
            dense = 1 - top1_error(json.loads(report.read_text()))
            best_epoch = summary["best_step"] / (summary["steps"] / summary["epochs"])
            rows.append((seed, summary, best_epoch, dense))
            print(
                f"seed {seed}: train {train_wall:.1f} s wall / {train_cpu:.1f} s CPU "
                f"({summary['images_per_second']:.0f} img/s), eval {eval_wall:.1f} s wall / "
                f"{eval_cpu:.1f} s CPU; best validation after epoch {best_epoch:.3g}: "
                f"{1 - summary['best_val_top1_error']:.1%} "
                f"(last {1 - summary['val_top1_error']:.1%}); "
                f"dense {dense:.1%}",
                flush=True,
            )
    worst = min(rows, key=lambda r: 1 - r[1]["best_val_top1_error"])
    print(
        f"worst seed {worst[0]}: validation {1 - worst[1]['best_val_top1_error']:.1%}, "
        f"dense {worst[3]:.1%}"
    )


if __name__ == "__main__":
    main()
