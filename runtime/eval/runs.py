"""What a training run folder tells an evaluation of its net: the data folder it trained on,
the box annotations it read, and whether its net is a finished one."""

from __future__ import annotations

import sys

from ..data.demo import demo_data_root
from ..dist.context import holds_lock
from ..io.rundir import RunDir
from ..train.config import read_yaml
from ..train.settings import checked_record
from .models import resolve_checkpoint


def _config(checkpoint: str) -> dict | None:
    """The settings of the training run holding `checkpoint`, as it recorded them (as
    --resume reads them: config.yaml edited since is refused); its config.yaml for a run
    written before settings.json existed; None when it is not in a run folder."""
    run = RunDir.containing(checkpoint)
    if run is None:
        return None
    if not run.settings.is_file():
        return read_yaml(run.config)
    return checked_record(
        run,
        f"What is taken of the run (its data; a box net's boxes) is read from its record, "
        f"{run.settings}: undo the edit, or say which images: --data DIR",
    )


def training_data(checkpoint: str) -> str | None:
    """The data folder the training run holding `checkpoint` read (its config's data, or the
    built-in demo data's folder when it had none), or None when it is not in a run folder."""
    config = _config(checkpoint)
    if config is None:
        return None
    if config.get("data"):
        return str(config["data"])
    return str(demo_data_root(int(config.get("seed", 0))))


def training_boxes(checkpoint: str, split: str) -> str | None:
    """The box annotations the training run holding `checkpoint` read for `split` (its
    config's `boxes`, "{split}" standing for the split); None for the default place."""
    config = _config(checkpoint)
    boxes = config.get("boxes") if config else None
    return str(boxes).replace("{split}", split) if boxes else None


def resolve_net(path: str, from_parent: dict) -> None:
    """`path` names a net (a model file or a run folder: else an EvalError); a run folder
    without its model.safetensors (still training, or stopped before the end), whose last
    checkpoint is used in its place, is said to be one, with that checkpoint's step, once
    (by the process that holds the lock, not by every worker)."""
    resolve_checkpoint(path)
    run = RunDir(path)
    if not run.path.is_dir() or run.trained_model() != run.last or not holds_lock(from_parent):
        return
    import torch

    try:  # mmap: the step alone, not the weights (the load that follows checks the file)
        state = torch.load(run.last, map_location="cpu", weights_only=True, mmap=True)
        step = f" (step {int(state['position']['step'])})"
    except Exception:
        step = ""
    print(
        f"vggspec: warning: {path} has no {RunDir.MODEL} (the run has not finished): its last "
        f"checkpoint, {run.last}{step}, is used",
        file=sys.stderr,
        flush=True,
    )
