"""`vggspec run features`: very deep features (Appendix B) to .npy, and a linear classifier."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vggspec.commands import jobs, nets, outputs
from vggspec.errors import UserError
from vggspec.runtime.eval.requests import FeaturesRequest


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
    nets.add_arguments(p, "extract")
    p.add_argument("--out", required=True, metavar="DIR", help="where the .npy files go")
    p.add_argument(
        "--aggregate",
        choices=("stack", "pool"),
        default=FeaturesRequest.aggregate,
        help="scales stacked into one long descriptor (default) or averaged",
    )
    p.add_argument(
        "--layer",
        metavar="NAME",
        help="take this layer's activations instead of the penultimate layer's: a name as "
        "`vggspec compile --no-fuse` shows it (relu5_3, pool5, fc6, relu7 …)",
    )
    p.add_argument(
        "--classifier",
        choices=("ridge", "logistic", "svm", "sklearn-svm"),
        help="fit a linear classifier on --train-split and report its accuracy on --split: "
        "ridge (closed form), logistic or svm (squared hinge; L-BFGS in torch), "
        "sklearn-svm (scikit-learn's LinearSVC, if installed)",
    )
    p.add_argument(
        "--train-split",
        default=FeaturesRequest.train_split,
        help="the classifier's training split",
    )
    p.add_argument(
        "--reg",
        type=float,
        default=FeaturesRequest.reg,
        help=f"the classifier's L2 penalty (default {FeaturesRequest.reg:g})",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from vggspec.runtime.eval.features.job import run_features

    jobs.check(args)
    if args.reg <= 0:
        raise UserError("--reg must be > 0")
    defaults = (FeaturesRequest.train_split, FeaturesRequest.reg)
    if not args.classifier and (args.train_split, args.reg) != defaults:
        raise UserError("--train-split and --reg are the classifier's: give --classifier too")
    if args.classifier and args.train_split == args.split:
        # A classifier fitted on the images it is scored on reported 98.0 %.
        raise UserError(
            f"--train-split {args.train_split} is the --split tested: the classifier would "
            "be scored on the images it was fitted on; give another split"
        )
    if args.classifier and not (Path(args.data) / args.train_split).is_dir():
        raise UserError(f"--classifier needs a {args.train_split}/ folder under {args.data}")
    if args.classifier == "sklearn-svm":
        from vggspec.runtime.eval.features.linear_probe import require_sklearn

        require_sklearn()
    splits = [args.split, *([args.train_split] if args.classifier else [])]
    names = [f"{s}{end}" for s in splits for end in (".npy", "_labels.npy", "_files.txt")]
    written = [("--out", Path(args.out) / name) for name in [*names, "features.json"]]
    outputs.check_outputs(args, written, folder=("--out", args.out))
    request = FeaturesRequest(
        jobs.nets_request(args),
        jobs.images_request(args),
        out=args.out,
        aggregate=args.aggregate,
        layer=args.layer,
        classifier=args.classifier,
        train_split=args.train_split,
        reg=args.reg,
        processes=jobs.processes(args),
    )
    return jobs.execute(request, run_features, lambda summary: _show(args, summary))


def _show(args, summary: dict) -> None:
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print(_summary_text(summary))


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
