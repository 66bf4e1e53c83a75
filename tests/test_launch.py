"""Worker processes: the one launcher reruns the parent's own command line, plus only what
the parent settled for them (no flag list copied by hand)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from eval_helpers import CLASSES, SPEC_32, save_net, write_images
from helpers import ROOT
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.dist import launch
from vggspec.runtime.io.rundir import RunDir
from vggspec.runtime.train.start import resolve_config

from vggspec.cli import parse_args
from vggspec.commands.train import train_request


@pytest.fixture
def launched(monkeypatch):
    """The workers' `python -m` words of each launch, instead of starting them."""
    calls = []

    def fake(nproc, max_restarts, module_args):
        calls.append((nproc, max_restarts, module_args))
        return 0

    monkeypatch.setattr(launch, "launch_local", fake)
    return calls


def test_eval_workers_get_every_flag_as_given(tmp_path, cli, launched):
    net = save_net(tmp_path / "m.safetensors", SPEC_32, 0)
    data = write_images(tmp_path / "d", {c: [(40, 40)] for c in CLASSES})
    argv = ["run", "eval", "--checkpoint", str(net), "--data", str(data), "--nproc", "3"]
    argv += ["--method", "both", "--no-flip", "--scales", "32,40", "--posteriors", "p.npz"]
    code, _, err = cli(*argv)
    assert code == 0, err
    # The parent holds the lock of the posteriors file; the workers are told so.
    assert launched == [(3, 0, ["vggspec", "--from-parent", "locked=1", *argv])]


def test_a_bad_net_stops_before_any_worker_starts(tmp_path, cli, launched):
    net = save_net(tmp_path / "m.safetensors", SPEC_32, 0)
    data = write_images(tmp_path / "d", {c: [(40, 40)] for c in CLASSES})
    code, _, err = cli("run", "eval", "--checkpoint", net, "--data", data, "--nproc", "2",
                       "--scales", "8")  # fmt: skip
    assert code == 2 and "test scale Q=8 is smaller than" in err
    assert launched == []


def test_train_workers_share_the_run_folder_the_parent_named(tmp_path, cli, launched, monkeypatch):
    make_demo_dataset(tmp_path / "data", seed=1, train_per_class=2, val_per_class=1)
    (tmp_path / "t.vgg").write_text(SPEC_32.replace("FC-6", "FC-10"))
    monkeypatch.chdir(tmp_path)
    argv = ["run", "train", "spec=t.vgg", "data=data", "batch_size=4", "--nproc", "2"]
    argv += ["--max-restarts", "1"]
    code, _, err = cli(*argv)
    assert code == 0, err
    ((nproc, restarts, words),) = launched
    assert (nproc, restarts) == (2, 1)
    assert words[:2] == ["vggspec", "--from-parent"] and words[5:] == argv
    assert words[3:5] == ["--from-parent", "locked=1"]  # the parent holds the run folder
    key, _, out = words[2].partition("=")
    assert key == "out" and out.startswith("runs/t-")  # runs/<spec>-<date>-<time>
    # A worker, started in another second, takes that folder rather than naming one.
    monkeypatch.setattr(RunDir, "default", classmethod(lambda cls, spec: RunDir("runs/t-later")))
    worker = parse_args(words[1:])
    assert worker.argv == words[1:] and worker.from_parent == {"out": out, "locked": "1"}
    assert resolve_config(train_request(worker))[0].out == out


WORKER = (
    "import sys, time\n"
    "from vggspec.runtime.dist.parent import die_with_launcher\n"
    "die_with_launcher()\n"
    "print('worker', flush=True)\n"
    "time.sleep(60)\n"
)
LAUNCHER = (
    "import os, subprocess, sys, time\n"
    "from vggspec.runtime.dist.parent import mark_launcher\n"
    "mark_launcher()\n"
    "worker = subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True)\n"
    "print(worker.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def test_workers_die_with_a_launcher_killed_9(tmp_path):
    # torchrun starts workers in a session of their own: only the kernel's parent-death
    # signal ends them when the launcher (which holds the run folder's lock) is killed.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    worker = int(launcher.stdout.readline())
    assert launcher.stdout.readline() == "worker\n"  # past die_with_launcher
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.05)
    assert not _alive(worker)
    # A launcher gone before the worker set the signal: the worker exits at once.
    env["VGGSPEC_LAUNCHER_PID"] = str(launcher.pid)  # not this process
    late = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True)
    assert late.returncode == 1 and late.stdout == ""
    assert late.stderr == f"vggspec: the launcher (pid {launcher.pid}) is gone: this worker stops\n"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "sig, code, told",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_a_signalled_launcher_says_so_in_one_line(monkeypatch, capsys, sig, code, told):
    # It said "the workers failed (SignalException)", exit 1, for a Ctrl-C.
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def signalled(args):
        raise SignalException(f"Process {os.getpid()} got signal: {sig}", sigval=sig)

    monkeypatch.setattr(torchrun, "run", signalled)
    for name in ("VGGSPEC_LAUNCHER_PID", "GLOO_SOCKET_IFNAME", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
                 "OMP_NUM_THREADS"):  # fmt: skip
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert launch.launch_local(2, 0, ["vggspec", "run", "train"]) == code
    assert capsys.readouterr().err == f"vggspec: {told}\n"


@pytest.mark.parametrize(
    "codes, expected, told",
    [
        ({0: 2, 1: 2}, 2, ""),  # every worker refused the mistake in its line
        ({0: 2, 1: -signal.SIGTERM}, 2, ""),  # one did; torchrun stopped the other first
        ({0: 2, 1: launch.PEER_GONE_EXIT}, 2, ""),  # or it lost it in a collective
        # Another worker failed of its own: not a user's mistake alone.
        ({0: 2, 1: 1}, 1, "worker rank 0 (pid 1000) failed with exit code 2 (its own words "
                          "are above); the others were stopped\n"),
        # Killed, no mistake told: the one killed is named, not the one torchrun stopped.
        ({0: -signal.SIGTERM, 1: -signal.SIGKILL}, 1, "worker rank 1 (pid 1001) was killed "
                                                      "by SIGKILL; the others were stopped\n"),
        # Nor the one that stopped because it lost its peer (and said so in its own line).
        ({0: launch.PEER_GONE_EXIT, 1: -signal.SIGKILL}, 1, "worker rank 1 (pid 1001) was "
                                                            "killed by SIGKILL; the others were "
                                                            "stopped\n"),
    ],
)  # fmt: skip
def test_a_mistake_a_worker_refused_is_exit_2_whoever_torchrun_stopped(
    monkeypatch, capsys, codes, expected, told
):
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def failing(args):
        failures = {
            rank: ProcessFailure(rank, 1000 + rank, code, "") for rank, code in codes.items()
        }
        raise ChildFailedError("vggspec", failures)

    monkeypatch.setattr(torchrun, "run", failing)
    from vggspec.runtime.dist.parent import LAUNCHER_PID

    # launch_local sets these in this process: each goes back as it was after the test.
    for name in (
        LAUNCHER_PID,
        "GLOO_SOCKET_IFNAME",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
        "OMP_NUM_THREADS",
    ):
        monkeypatch.setenv(name, "")  # recorded as it was (delenv records only one present)
        monkeypatch.delenv(name)
    assert launch.launch_local(2, 0, ["vggspec", "run", "eval"]) == expected
    said = capsys.readouterr().err
    assert said == (f"vggspec: {told}" if told else ""), said
