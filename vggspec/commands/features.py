"""`vggspec run features`: very deep features (Appendix B) to .npy, and a linear classifier."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vggspec.commands import nets as eval_args
from vggspec.errors import UserError, check_output


def add_parser(run_subparsers) -> None:
    p = run_subparsers.add_parser(
        "features",
        help="very deep features (Appendix B): penultimate activations, dense, multi-scale",
        description="Per image: the penultimate layer's activations (fc7: 4096-D for the "
        "VGG nets) computed densely over the whole image, globally averaged, averaged with "
        "the flipped image, over several scales (stacked or pooled), L2-normalised. Written "
        "as OUT/<split>.npy with OUT/<split>_files.txt and OUT/<split>_labels.npy. With "
        "--classifier, features of --train-split too and a linear classifier's accuracy.",
    )
    eval_args.add_arguments(p, "extract")
    p.add_argument("--out", required=True, metavar="DIR", help="where the .npy files go")
    p.add_argument(
        "--aggregate",
        choices=("stack", "pool"),
        default="stack",
        help="scales stacked into one long descriptor (default) or averaged",
    )
    p.add_argument(
        "--classifier",
        choices=("ridge", "logistic", "svm", "sklearn-svm"),
        help="fit a linear classifier on --train-split and report its accuracy on --split: "
        "ridge (closed form), logistic or svm (squared hinge; L-BFGS in torch), "
        "sklearn-svm (scikit-learn's LinearSVC, if installed)",
    )
    p.add_argument("--train-split", default="train", help="the classifier's training split")
    p.add_argument("--reg", type=float, default=1.0, help="the classifier's L2 penalty (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from vggspec.runtime.dist.context import under_torchrun

    eval_args.check(args)
    if args.reg <= 0:
        raise UserError("--reg must be > 0")
    if args.classifier and not (Path(args.data) / args.train_split).is_dir():
        raise UserError(f"--classifier needs a {args.train_split}/ folder under {args.data}")
    if args.classifier == "sklearn-svm":
        from vggspec.runtime.eval.linear_probe import require_sklearn

        require_sklearn()
    check_output(args.out, "--out", folder=True)
    if not under_torchrun() and args.nproc > 1:
        from vggspec.runtime.dist.launch import launch_local

        eval_args.preflight(args)
        extra = [
            "--out",
            str(Path(args.out).resolve()),
            "--aggregate",
            args.aggregate,
            "--train-split",
            args.train_split,
            "--reg",
            str(args.reg),
        ]
        if args.classifier:
            extra += ["--classifier", args.classifier]
        if args.json:
            extra.append("--json")
        return launch_local(args.nproc, 0, eval_args.worker_args(args, "features", extra))
    from vggspec.runtime.dist import context as distributed

    ctx = eval_args.start(args)
    try:
        summary = _extract(args, ctx)
        if ctx.is_main:
            if args.json:
                sys.stdout.write(json.dumps(summary, indent=2) + "\n")
            else:
                print(_summary_text(summary))
        distributed.barrier(ctx)
        return 0
    finally:
        distributed.teardown()


def _extract(args, ctx) -> dict | None:
    import numpy as np

    from vggspec.runtime.eval.features import extract_features, gather
    from vggspec.runtime.eval.linear_probe import fit_and_score

    say = eval_args.say if ctx.is_main else (lambda _message: None)
    models = eval_args.load_models(args, ctx.device)
    out = Path(args.out)
    splits = [args.split] + ([args.train_split] if args.classifier else [])
    summary = {
        "nets": [{"name": m.name, "source": m.source, "scales": sorted(m.scales)} for m in models],
        "aggregate": args.aggregate,
        "flip": not args.no_flip,
        "splits": {},
    }
    gathered = {}
    for split in splits:
        names, _, folder = eval_args.scan(args, models, split)
        if ctx.is_main:
            for line in folder.report.lines():
                say(line)
        local = extract_features(
            models,
            folder,
            ctx,
            aggregate=args.aggregate,
            flip=not args.no_flip,
            max_images=args.batch,
            workers=args.workers,
            max_aspect=args.max_aspect,
            progress=say,
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
    if args.classifier:
        train, test = gathered[args.train_split], gathered[args.split]
        summary["classifier"] = fit_and_score(
            args.classifier,
            train.descriptors[train.readable],
            train.labels[train.readable],
            test.descriptors[test.readable],
            test.labels[test.readable],
            len(summary["classes"]),
            args.reg,
        )
    (out / "features.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _summary_text(summary: dict) -> str:
    lines = []
    for split, info in summary["splits"].items():
        lines.append(
            f"{split}: {info['images']} images → {info['features']} "
            f"({info['dimension']}-D, {summary['aggregate']}ed over scales, "
            f"{info['seconds']:.1f} s)"
        )
    c = summary.get("classifier")
    if c:
        lines.append(
            f"{c['classifier']} (reg {c['reg']:g}): accuracy {c['test_accuracy']:.1%} on "
            f"{next(iter(summary['splits']))}, mean class recall {c['mean_class_recall']:.1%}, "
            f"{c['train_accuracy']:.1%} on its training split"
        )
    return "\n".join(lines)
