"""The feature job (`vggspec run features`) of one process: descriptors of each split gathered on
rank 0 and written as .npy, and a linear classifier's accuracy on them if asked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...dist.context import Context
from ..prepare import Say, classifiers_only, load_models, pass_settings, quiet, scan, with_workers
from ..requests import FeaturesRequest


def run_features(request: FeaturesRequest, ctx: Context, say: Say = quiet) -> dict | None:
    """Writes OUT/<split>.npy, _labels.npy, _files.txt (and features.json) for the split and,
    with a classifier, the training split; the summary on rank 0, None elsewhere."""
    from .extract import extract_features, gather
    from .linear_probe import fit_and_score

    say = say if ctx.is_main else quiet
    images = with_workers(request.images, ctx)
    models = load_models(request.nets, ctx.device)
    classifiers_only(models, features=True)
    out = Path(request.out)
    splits = [images.split] + ([request.train_split] if request.classifier else [])
    summary = {
        "nets": [{"name": m.name, "source": m.source, "scales": sorted(m.scales)} for m in models],
        "aggregate": request.aggregate,
        **({"layer": request.layer} if request.layer else {}),
        "flip": images.flip,
        "splits": {},
    }
    gathered = {}
    # Features need no class scores: only nets that name their classes order the labels
    # (a convolutional body's outputs are channels, not classes).
    named = [m for m in models if m.class_names]
    for split in splits:
        names, _, folder = scan(images, request.nets.classes, named, split)
        for line in folder.report.lines():
            say(line)
        local = extract_features(
            models,
            folder,
            ctx,
            pass_settings(images, say),
            aggregate=request.aggregate,
            layer=request.layer,
        )
        features = gather(local, ctx)
        if features is None:
            continue
        keep = features.readable
        paths = [folder.samples[i][0] for i in features.indices[keep]]
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{split}.npy", features.descriptors[keep])
        np.save(out / f"{split}_labels.npy", features.labels[keep])
        (out / f"{split}_files.txt").write_text("".join(p + "\n" for p in paths))
        gathered[split] = features
        summary["splits"][split] = {
            "images": int(keep.sum()),
            "unreadable": len(folder.report.bad) + int((~keep).sum()),
            "dimension": int(features.descriptors.shape[1]),
            "features": str(out / f"{split}.npy"),
            "seconds": round(features.seconds, 3),
        }
        summary["classes"] = names
    if not ctx.is_main:
        return None
    for entry, m in zip(summary["nets"], models, strict=True):
        entry["engine"] = m.serving.label  # as chosen (under --nproc, rank 0's, every rank's)
    if request.classifier:
        train, test = gathered[request.train_split], gathered[images.split]
        summary["classifier"] = fit_and_score(
            request.classifier,
            train.descriptors[train.readable],
            train.labels[train.readable],
            test.descriptors[test.readable],
            test.labels[test.readable],
            len(summary["classes"]),
            request.reg,
        )
    (out / "features.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
