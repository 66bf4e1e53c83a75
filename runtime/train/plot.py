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
    text = path.read_bytes().decode("utf-8", errors="replace")  # garbage is a bad line
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            if number == len(lines) and not text.endswith("\n"):
                break  # the last line, cut short by a kill: left out, as a resume drops it
            raise VggspecError(f"{path}:{number}: not a JSON line") from None
        (vals if row.get("kind") == "val" else steps).append(row)
    return steps, vals


# The validation errors a run may log, and their labels: classification, and localisation
# (its validation logs the GT-class localisation error, no top-1).
ERRORS = (
    ("val_top1_error", "top-1 error", "o-"),
    ("val_top5_error", "top-5 error", "s-"),
    ("val_loc_error", "localisation error", "^-"),
)


def plot_run(run_dir: str | Path, out: str | Path | None = None, check_out=None) -> Path:
    """The curves of the run in `run_dir` drawn to `out` (default RUN_DIR/curves.png).
    `check_out()`, if given, is called once the metrics are read and `out`'s kind is known,
    before anything is written (the command's checks of where it writes)."""
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
    if vals and all(r.get("val_loss") is not None for r in vals):
        left.plot(
            [r["step"] for r in vals], [r["val_loss"] for r in vals], "o-", label="validation loss"
        )
    for key, label, style in ERRORS:
        if vals and all(r.get(key) is not None for r in vals):
            right.plot([r["step"] for r in vals], [100 * r[key] for r in vals], style, label=label)
    left.set(xlabel="step", ylabel="loss", title="loss")
    right.set(xlabel="step", ylabel="error (%)", title="validation error")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    target = Path(out) if out else RunDir(run_dir).curves
    kinds = fig.canvas.get_supported_filetypes()
    if target.suffix[1:].lower() not in kinds:
        plt.close(fig)
        raise VggspecError(
            f"-o {target}: name an image file ({', '.join('.' + k for k in sorted(kinds))})"
        )
    try:
        if check_out is not None:
            check_out()
    except BaseException:
        plt.close(fig)
        raise
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
