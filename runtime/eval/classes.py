"""One class order for an evaluation: the nets' outputs and the data folder's labels agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.regular import check_regular
from .models import EvalError, EvalModel


def read_class_names(path: str | Path) -> list[str]:
    """A text file of class names in output order, one a line (e.g. ILSVRC synsets);
    anything after the first space of a line is a comment ("n01440764 tench")."""
    try:
        check_regular(path)
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        detail = (err.strerror or err) if isinstance(err, OSError) else err
        raise EvalError(f"{path}: cannot read the class names ({detail})") from None
    names = [line.split()[0] for line in lines if line.strip()]
    if not names:  # it was reported as a folder whose classes the model does not know
        raise EvalError(f"{path}: no class names in it (one a line, in the net's output order)")
    if len(set(names)) != len(names):
        raise EvalError(f"{path}: a class name appears twice")
    return names


def class_order(
    models: list[EvalModel], folder_classes: list[str], given: list[str] | None = None
) -> tuple[list[str], list[np.ndarray]]:
    """(class names in the order evaluation uses, and per model the index array that puts
    its outputs in that order). The order is the first net's that knows its classes, else
    `given` (--classes), else the data folder's (then every net must have that many outputs)."""
    reference = given or next((m.class_names for m in models if m.class_names), None)
    if reference is None:
        reference = list(folder_classes)
        for m in models:
            if m.num_classes != len(reference):
                raise EvalError(
                    f"{m.source} has {m.num_classes} outputs but {len(reference)} classes are "
                    "in the data folder, and the weights do not name their classes: give "
                    "their order with --classes FILE"
                )
    orders = []
    for m in models:
        names = m.class_names or (reference if m.num_classes == len(reference) else None)
        if names is None or sorted(names) != sorted(reference):
            raise EvalError(
                f"{m.source} predicts other classes than {models[0].source}: nets fused "
                "together must share their classes"
            )
        position = {c: i for i, c in enumerate(names)}
        orders.append(np.array([position[c] for c in reference], dtype=np.int64))
    return list(reference), orders
