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
    # What torchrun sets when it is unset (each CPU worker sets torch's threads itself), but
    # without the banner torchrun prints about it on every run.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mark_launcher()  # the workers die with this process (parent.py)
    args = get_args_parser().parse_args(torchrun_args(nproc, max_restarts, module_args[:1]))
    # The module's own words are set, not parsed: torchrun's parser would take a word such
    # as `--nproc` for an abbreviation of its `--nproc-per-node`.
    args.training_script_args = list(module_args[1:])
    from torch.distributed.elastic.multiprocessing.api import SignalException

    try:
        run(args)
    except SignalException as err:  # this process was signalled; torchrun stopped the workers
        if err.sigval == signal.SIGINT:
            print("vggspec: interrupted", file=sys.stderr)
            return 130
        print(f"vggspec: stopped by {signal.Signals(err.sigval).name}", file=sys.stderr)
        return 128 + err.sigval
    except Exception as err:  # torchrun raises ChildFailedError after printing its report
        codes = {f.exitcode for f in getattr(err, "failures", {}).values()}
        # A mistake a worker refused in its one line: the parent says 2, also when torchrun
        # stopped the other workers (a signal) before they reached it themselves, or they
        # lost it in a collective.
        if 2 in codes and codes <= {2, PEER_GONE_EXIT, *_STOPPED}:
            return 2
        print(f"vggspec: {first_failure(err)}", file=sys.stderr)
        return 1
    return 0


def first_failure(err: Exception) -> str:
    """Which worker failed first and how, from torchrun's ChildFailedError, in words."""
    failures = getattr(err, "failures", None)
    if not failures:
        return f"the workers failed ({type(err).__name__}: {err})"
    # The earliest (to the second); among those, one that neither lost its peer (it tells
    # so itself) nor was stopped by torchrun.
    rank, failure = min(
        failures.items(),
        key=lambda item: (
            item[1].timestamp,
            item[1].exitcode in (PEER_GONE_EXIT, -signal.SIGTERM),
            item[0],
        ),
    )
    if failure.exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-failure.exitcode}"
    else:
        how = f"failed with exit code {failure.exitcode} (its own words are above)"
    return f"worker rank {rank} (pid {failure.pid}) {how}; the others were stopped"


# The exit code of a worker that stopped because another of its group died (EX_TEMPFAIL).
PEER_GONE_EXIT = 75
# What gloo says on a process whose peer has gone (killed, or stopped by torchrun).
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def peer_gone(err: BaseException) -> str | None:
    """For an error a worker met because another worker of its group died (gloo's read or
    write failed), one line saying so, else None: the dead worker's own failure is the
    news, not this process's traceback."""
    seen = err
    while seen is not None:
        text = str(seen)
        said = [words for words in _PEER_GONE if words in text]
        if "gloo" in text and said:
            rank = os.environ.get("RANK", "?")
            return f"rank {rank}: another process of its group is gone (gloo: {said[0]})"
        seen = seen.__cause__ or seen.__context__
    return None


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
