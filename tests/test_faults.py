"""The fault matrix, short form: kills at chosen moments (validation, the final save, `run eval
-o`) and a full disk during a checkpoint write; every resumed run ends bit-identical to the
uninterrupted one, with every file readable. bench/faults.py kills at random moments."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import audit, digest, make_setup, run_to_end, start, train_args
from helpers import ROOT
from vggspec.runtime.io.atomic import atomic_write, remove_stale_temporaries
from vggspec.runtime.io.checkpoint import load_checkpoint
from vggspec.runtime.io.rundir import RunDir

from vggspec.cli import main

SHORT = "max_steps=8"  # validation and a checkpoint at step 7 (the epoch's end), the end at 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The uninterrupted run, shared by the module; run in this process (a process start is
    a few seconds of the suite's budget; the kills below need their own processes)."""
    root = make_setup(tmp_path_factory.mktemp("faults"))
    reference = root / "reference"
    assert main([str(a) for a in train_args(root, reference, SHORT)]) == 0
    return root, digest(reference)


def _crash(root, out, fault):
    proc = start(*train_args(root, out, SHORT), env={"VGGSPEC_FAULT": fault})
    _, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr


def _resume_matches(root, out, expected):
    result = run_to_end(root, out, extra=[SHORT])
    assert result.returncode == 0, result.stderr[-2000:]
    assert digest(out) == expected
    assert audit(out) == []


@pytest.mark.slow  # 2 more training runs; test_train kills mid-step and mid-checkpoint
def test_kill_during_validation_then_resume_is_bit_identical(setup, tmp_path):
    root, expected = setup
    out = tmp_path / "run"
    code, _ = _crash(root, out, "kill-in-validation:7")
    assert code == -signal.SIGKILL
    assert audit(out) == []
    assert load_checkpoint(RunDir(out).last)["position"]["step"] == 6
    _resume_matches(root, out, expected)


@pytest.mark.slow
def test_kill_before_the_final_save_then_resume_is_bit_identical(setup, tmp_path):
    root, expected = setup
    out = tmp_path / "run"
    code, _ = _crash(root, out, "kill-in-final-save:8")
    assert code == -signal.SIGKILL
    assert audit(out) == [] and not RunDir(out).model.exists()
    assert load_checkpoint(RunDir(out).last)["position"]["step"] == 8
    _resume_matches(root, out, expected)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(
    setup, tmp_path, cli, monkeypatch
):
    root, expected = setup
    out = tmp_path / "run"
    monkeypatch.setenv("VGGSPEC_FAULT", "enospc-in-checkpoint:6")  # no kill: in this process
    code, _, stderr = cli(*train_args(root, out, SHORT))
    monkeypatch.delenv("VGGSPEC_FAULT")
    assert code == 1 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]  # not "top-1 error"
    assert len(errors) == 1, stderr
    assert errors[0].startswith("vggspec: error: [Errno 28] cannot write the checkpoint ")
    assert errors[0].endswith("No space left on device; the previous checkpoint is unchanged")
    assert load_checkpoint(RunDir(out).last)["position"]["step"] == 3
    assert audit(out) == []  # and no temporary file left behind
    assert cli("run", "train", "--resume", out)[0] == 0
    assert digest(out) == expected
    assert audit(out) == []


# Runs `vggspec ARGS` with os.replace made a SIGKILL: the process dies with its output
# written in full to the temporary file, just before the rename that would publish it.
KILLED_BEFORE_RENAME = (
    "import os, signal, sys\n"
    "os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "from vggspec.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_kill_during_run_eval_output_leaves_no_partial_file(setup, tmp_path, cli):
    root, _ = setup
    model = RunDir(root / "reference").model
    target = tmp_path / "report.json"
    args = ["run", "eval", "--checkpoint", model, "--data", root / "data", "--workers", "0"]
    args += ["--method", "dense", "--scales", "40", "--no-flip", "--threads", "1"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_RENAME, *map(str, args), "--json", "-o", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not target.exists()
    (left,) = tmp_path.glob(".report.json.*.tmp")  # the dead writer's, complete but unnamed
    code, _, err = cli(*args, "--json", "-o", target)  # the next write, in this process
    assert code == 0, err[-2000:]
    assert target.read_text() and not left.exists()  # the next write cleared it


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "last.pt"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f".last.pt.{gone.pid}.abc.tmp"
    alive = tmp_path / f".last.pt.{os.getpid()}.def.tmp"
    other = tmp_path / f".best.pt.{gone.pid}.ghi.tmp"
    for path in (dead, alive, other):
        path.write_bytes(b"torn")
    assert remove_stale_temporaries(target) == [dead]
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"ok"))
    assert target.read_bytes() == b"ok" and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, alive.name, other.name]
    )
    assert remove_stale_temporaries(tmp_path) == [other]  # a folder: every file's
    assert alive.exists()


def test_a_metrics_line_cut_short_does_not_stop_a_resume(tmp_path):
    from vggspec.runtime.train.log import RunLog

    rows = '{"kind": "step", "step": 1}\n{"kind": "step", "step": 2}\n{"kind": "step", "step": 3}\n'
    RunDir(tmp_path).metrics.write_text(rows + '{"kind": "st')  # a full disk mid-line
    log = RunLog(RunDir(tmp_path), True, truncate_after=2)
    log.open()
    log.close()
    assert RunDir(tmp_path).metrics.read_text() == "".join(rows.splitlines(True)[:2])


def test_atomically_written_files_get_the_mode_open_gives(tmp_path):
    umask = os.umask(0o022)
    try:
        target = tmp_path / "model.safetensors"
        atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"weights"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # was 0600, mkstemp's
        # safetensors makes its own file, 0600: the weights were unreadable to others.
        import torch
        from safetensors.torch import save_file

        weights = tmp_path / "w.safetensors"
        atomic_write(weights, lambda tmp: save_file({"w": torch.zeros(2)}, tmp))
        assert stat.S_IMODE(weights.stat().st_mode) == 0o644
    finally:
        os.umask(umask)
