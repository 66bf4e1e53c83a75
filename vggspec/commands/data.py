"""`vggspec data demo DIR`: write the built-in demo data as an ImageFolder of JPEGs."""

from __future__ import annotations

from .argtypes import natural_int, positive_int


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="data tools: write the built-in demo data")
    tools = data.add_subparsers(dest="tool", metavar="TOOL", required=True)
    demo = tools.add_parser("demo", help="write the demo data as an ImageFolder of JPEGs")
    demo.add_argument("dir", help="where to write train/ and val/")
    demo.add_argument("--seed", type=natural_int, default=0)
    demo.add_argument("--train-per-class", type=positive_int, default=300)
    demo.add_argument("--val-per-class", type=positive_int, default=50)
    demo.add_argument(
        "--boxes",
        action="store_true",
        help="place the shapes anywhere, of more sizes, and write their boxes "
        "(DIR/annotations/<split>/<class>/NNNNN.xml, Pascal VOC)",
    )
    demo.set_defaults(run=run_demo)


def run_demo(args) -> int:
    """The set is written whole (runtime/io/whole_folder.py): a killed run leaves no DIR
    that looks like data (`make demo-loc` tests for DIR/annotations), two runs never write
    into one DIR.partial, and a set is never mixed with files already in DIR (another count
    left the extra images)."""
    import os
    from pathlib import Path

    from vggspec.errors import UserError
    from vggspec.runtime.data.demo import make_demo_dataset
    from vggspec.runtime.io.whole_folder import write_whole

    given = Path(args.dir)
    root = Path(os.path.abspath(given))
    if given.is_symlink():
        raise UserError(f"{given}: a symbolic link; name the folder itself")
    if root == Path(os.path.abspath(os.curdir)) or not root.name:
        raise UserError(f"{given}: name a new or empty folder to write, not the current one")
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        raise UserError(f"{given}: exists and is not an empty folder; name a new or empty one")

    def write(partial: Path) -> None:
        make_demo_dataset(
            partial, args.seed, args.train_per_class, args.val_per_class, boxes=args.boxes
        )

    write_whole(root, write, "data demo")
    boxes = ", boxes in annotations/" if args.boxes else ""
    print(f"wrote the demo data to {given} (train/ and val/, 10 classes{boxes})")
    return 0
