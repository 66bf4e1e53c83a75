"""`vggspec plot RUN_DIR`: a run's loss and error curves as a PNG."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    plot = subparsers.add_parser("plot", help="plot a run's loss and error curves to a PNG")
    plot.add_argument("run_dir")
    plot.add_argument("-o", "--output", help="PNG path (default RUN_DIR/curves.png)")
    plot.set_defaults(run=run_plot)


def run_plot(args) -> int:
    from vggspec.errors import check_output
    from vggspec.runtime.train.plot import plot_run

    # A missing folder made, /proc or a run's own file refused: once the run's metrics are
    # read and -o names an image kind, so that a refusal leaves no folder made.
    check = (lambda: check_output(args.output, "-o")) if args.output else None
    print(plot_run(args.run_dir, args.output, check))
    return 0
