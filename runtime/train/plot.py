"""`vggspec plot RUN_DIR`: loss and top-1/top-5 error curves of a run, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from vggspec.compiler.errors import VggspecError

from ..io.rundir import RunDir


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    path = RunDir(run_dir).metrics
    if not path.is_file():
        raise VggspecError(f"{run_dir}: no {path.name} (is it a training run folder?)")
    steps, vals = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise VggspecError(f"{path}:{number}: not a JSON line") from None
        (vals if row.get("kind") == "val" else steps).append(row)
    return steps, vals


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps, vals = read_metrics(run_dir)
    if not steps and not vals:
        raise VggspecError(f"{run_dir}: {RunDir.METRICS} is empty: nothing to plot yet")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        left.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="training loss")
    if vals:
        left.plot(
            [r["step"] for r in vals], [r["val_loss"] for r in vals], "o-", label="validation loss"
        )
        right.plot(
            [r["step"] for r in vals],
            [100 * r["val_top1_error"] for r in vals],
            "o-",
            label="top-1 error",
        )
        if all(r.get("val_top5_error") is not None for r in vals):
            right.plot(
                [r["step"] for r in vals],
                [100 * r["val_top5_error"] for r in vals],
                "s-",
                label="top-5 error",
            )
    left.set(xlabel="step", ylabel="loss", title="loss")
    right.set(xlabel="step", ylabel="error (%)", title="validation error")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    target = Path(out) if out else RunDir(run_dir).curves
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
