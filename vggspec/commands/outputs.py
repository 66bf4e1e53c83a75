"""Where `run eval` and `run features` write, checked before any work against what they
read: an output is none of their input files, not in their data, not another output."""

from __future__ import annotations

from pathlib import Path

from vggspec.errors import check_distinct, check_output


def check_outputs(args, files, folder=None, classifier=None) -> None:
    """After `check`: the outputs ((flag, path) pairs; `folder` one that is a folder) are
    none of the command's input files, not in what it reads of its data folder (its splits,
    its box annotations)
    and not two names of one file; `-o DATA/val/cat/1.jpg` wrote its report over an image.
    `classifier`: localisation's classification net, an input too."""
    from vggspec.runtime.eval.models import resolve_checkpoint

    nets = [*args.checkpoint, *([classifier] if classifier else [])]
    inputs = [*nets, *map(resolve_checkpoint, nets), *args.weights, *args.spec, args.classes]
    # What is read of the data: the split(s) and the box annotations (ROOT/report.json, or
    # ROOT/runs/…, beside them, is no harm).
    root = Path(args.data)
    splits = [args.split]
    if getattr(args, "train_split", None) and args.classifier:  # features' classifier
        splits.append(args.train_split)
    within = [root / split for split in splits] + [root / "annotations"]
    boxes = getattr(args, "boxes", None)
    (within if boxes and Path(boxes).is_dir() else inputs).append(boxes)
    check_distinct(files)
    for create in (False, True):  # every refusal before any folder is made
        if folder is not None:
            check_output(folder[1], folder[0], folder=True, within=within, create=create)
        for flag, path in files:
            if path:
                check_output(path, flag, inputs=inputs, within=within, create=create)
