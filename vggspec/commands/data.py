"""`vggspec data demo DIR`: write the built-in demo data as an ImageFolder of JPEGs."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="data tools: write the built-in demo data")
    tools = data.add_subparsers(dest="tool", metavar="TOOL", required=True)
    demo = tools.add_parser("demo", help="write the demo data as an ImageFolder of JPEGs")
    demo.add_argument("dir", help="where to write train/ and val/")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--train-per-class", type=int, default=300)
    demo.add_argument("--val-per-class", type=int, default=50)
    demo.set_defaults(run=run_demo)


def run_demo(args) -> int:
    from vggspec.runtime.data.demo import make_demo_dataset

    root = make_demo_dataset(args.dir, args.seed, args.train_per_class, args.val_per_class)
    print(f"wrote the demo data to {root} (train/ and val/, 10 classes)")
    return 0
