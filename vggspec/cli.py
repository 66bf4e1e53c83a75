"""The `vggspec` command: one sub-command per module, user mistakes as one-line errors."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from vggspec.commands import compile as compile_command
from vggspec.commands import convert as convert_command
from vggspec.commands import data as data_command
from vggspec.commands import export as export_command
from vggspec.commands import plot as plot_command
from vggspec.commands import run as run_command
from vggspec.compiler.errors import VggspecError
from vggspec.errors import UserError
from vggspec.threads import sleep_when_idle

COMMANDS = (
    compile_command,
    run_command,
    convert_command,
    export_command,
    data_command,
    plot_command,
)


class Parser(argparse.ArgumentParser):
    """Options are given whole: argparse's default took `--check` for `--checkpoint`, so a
    typo, or an option added later that shares a prefix, changed what a command did. Its
    sub-command parsers are of this class too (add_subparsers makes its parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vggspec",
        description="Declare, compile, train and evaluate VGG-style ConvNets "
        "written in the notation of the VGG paper.",
    )
    # What a parent process settled for its workers (runtime/dist/launch.py `relaunch`).
    parser.add_argument(
        "--from-parent", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line as a command reads it: with `argv` (what workers rerun, see
    runtime/dist/launch.py `relaunch`) and `from_parent` as a dict of what the parent settled."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    args.from_parent = dict(word.partition("=")[::2] for word in args.from_parent)
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is: what `timeout`, systemd and batch schedulers send. Its
    default ended the process at once, leaving a lock (and the folder made for it) behind;
    this unwinds through the code that removes them. The trainer handles both signals its
    own way while it trains (train/faults.py)."""


def _terminate_once_unwound(owner: int):
    def handler(signum, _frame):
        if os.getpid() != owner:  # a forked child (a loader or pool worker): as before
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated

    return handler


def main(argv: list[str] | None = None) -> int:
    sleep_when_idle()  # before any command imports torch
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.from_parent.get("locked"):  # a worker of a launcher holding the lock
        from vggspec.runtime.dist.parent import die_with_launcher

        die_with_launcher()
    # Not in torchrun's workers (its agent stops them, holding no lock, and one blocked in
    # a collective must still die at once), nor where a caller chose a handler.
    previous = signal.getsignal(signal.SIGTERM)
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ
    main_thread = threading.current_thread() is threading.main_thread()
    if previous == signal.SIG_DFL and not torchrun and main_thread:
        signal.signal(signal.SIGTERM, _terminate_once_unwound(os.getpid()))
    try:
        return _run(args)
    finally:
        if signal.getsignal(signal.SIGTERM) != previous:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        return args.run(args)
    except UserError as err:
        print(f"vggspec: error: {err}", file=sys.stderr)
        return 2
    except VggspecError as err:  # SpecError and friends carry their own "file: error:"
        print(err, file=sys.stderr)
        return 2
    except Terminated:
        print("vggspec: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("vggspec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vggspec compile ... | head`
        return 0
    except RuntimeError as err:
        from vggspec.runtime.dist.launch import PEER_GONE_EXIT, peer_gone

        gone = peer_gone(err)  # a worker whose peer died: the launcher names the dead one
        if gone is None:
            raise
        print(f"vggspec: {gone}", file=sys.stderr)
        return PEER_GONE_EXIT
    except OSError as err:
        print(f"vggspec: error: {err}", file=sys.stderr)
        return 1
