"""Starting N local workers through torchrun's own launcher (torch.distributed.run)."""

from __future__ import annotations

import os
import signal
import socket
import sys

from .parent import mark_launcher


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_args(nproc: int, max_restarts: int, module_args: list[str]) -> list[str]:
    """torchrun's command line for one machine, everything on loopback."""
    return [
        "--nnodes", "1",
        "--nproc-per-node", str(nproc),
        "--max-restarts", str(max_restarts),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--local-addr", "127.0.0.1",
        "--monitor-interval", "0.5",
        "-m", *module_args,
    ]  # fmt: skip


# How torchrun stops the workers left once one has failed: SIGTERM, then SIGKILL.
_STOPPED = (-signal.SIGTERM, -signal.SIGKILL)


def launch_local(nproc: int, max_restarts: int, module_args: list[str]) -> int:
    """Run `python -m <module_args>` in `nproc` workers; returns the launcher's exit code.
    torchrun restarts the whole group (up to `max_restarts` times) if a worker dies."""
    from torch.distributed.run import get_args_parser, run

    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo stays on loopback
    # A restarted group must not find the dead group's gloo addresses in a shared store:
    # give every rendezvous round a store of its own.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    mark_launcher()  # the workers die with this process (parent.py)
    args = get_args_parser().parse_args(torchrun_args(nproc, max_restarts, module_args[:1]))
    # The module's own words are set, not parsed: torchrun's parser would take a word such
    # as `--nproc` for an abbreviation of its `--nproc-per-node`.
    args.training_script_args = list(module_args[1:])
    try:
        run(args)
    except Exception as err:  # torchrun raises ChildFailedError after printing its report
        codes = {f.exitcode for f in getattr(err, "failures", {}).values()}
        # A mistake a worker refused in its one line: the parent says 2, also when torchrun
        # stopped the other workers (a signal) before they reached it themselves.
        if 2 in codes and codes <= {2, *_STOPPED}:
            return 2
        print(f"vggspec: the workers failed ({type(err).__name__})", file=sys.stderr)
        return 1
    return 0


def relaunch(
    argv: list[str], nproc: int, max_restarts: int = 0, resolved: dict[str, str] | None = None
) -> int:
    """The one way workers start: this process's own command line (`vggspec ARGV`, every flag
    as the user gave it) run again in `nproc` torchrun workers, in this working directory.
    `resolved`: what this process settled that the workers must share rather than settle
    again each (e.g. a run folder named after the time), given to them as `--from-parent
    KEY=VALUE` words ahead of the command's own."""
    words = ["vggspec"]
    for key, value in (resolved or {}).items():
        words += ["--from-parent", f"{key}={value}"]
    return launch_local(nproc, max_restarts, [*words, *argv])
