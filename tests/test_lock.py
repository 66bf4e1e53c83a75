"""One run per folder: the writer lock (refused while held, taken over once its holder is
killed), and `run train --overwrite`, which keeps the old run until the new one's first
checkpoint, whatever moment a kill -9 strikes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest
from fault_helpers import audit, digest, make_setup, start, train_args
from helpers import ROOT
from vggspec.runtime.io.checkpoint import load_checkpoint
from vggspec.runtime.io.lock import FolderBusy, FolderLock, FolderUnwritable
from vggspec.runtime.io.rundir import RunDir, output_lock

SHORT = "max_steps=4"  # a checkpoint at step 3 (checkpoint_every=3), the end at 4

HOLD = (
    "import sys, time\n"
    "from vggspec.runtime.io.lock import FolderLock\n"
    "FolderLock(sys.argv[1], 'run train').acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny set-up of the fault matrix and one finished run, trained in this process."""
    from vggspec.cli import main

    root = make_setup(tmp_path_factory.mktemp("lock"))
    assert main([str(a) for a in train_args(root, root / "done", SHORT)]) == 0
    return root


def hold(folder) -> subprocess.Popen:
    """Another process holding `folder`'s lock until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline() == "held\n"
    return proc


def files(folder) -> dict:
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_lock_is_exclusive_and_leaves_nothing_when_released(tmp_path):
    folder = tmp_path / "new"
    with FolderLock(folder, "run train") as lock:
        assert lock.path.is_file() and str(os.getpid()) in lock.path.read_text()
        with pytest.raises(FolderBusy, match=rf"pid {os.getpid()} on .*, started 20"):
            FolderLock(folder).acquire()  # flock: even another open file of this process
    assert not folder.exists()  # created by the lock, left empty: removed with it
    folder.mkdir()
    with FolderLock(folder):
        pass
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_each_output_has_the_lock_of_what_it_is_in(setup, tmp_path):
    run = setup / "done"
    assert output_lock(run / "eval.json", "run eval").path == run / RunDir.LOCK
    assert output_lock(run / "checkpoints" / "x.pt", "convert").path == run / RunDir.LOCK
    assert output_lock(tmp_path / "feats", "run features", folder=True).path == (
        tmp_path / "feats" / RunDir.LOCK
    )
    # A file outside a run folder: its own lock, so that writers of other files there go on.
    assert output_lock(tmp_path / "net.safetensors", "convert").path == (
        tmp_path / ".net.safetensors.lock"
    )


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(setup, tmp_path, cli):
    out = tmp_path / "run"
    holder = hold(out)
    try:
        before = files(out)
        code, _, err = cli(*train_args(setup, out, SHORT))
        assert code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{out}: in use by another writer (`vggspec run train`, pid {holder.pid} " in err
        assert "started 20" in err
        assert files(out) == before  # nothing written
        # The same for the other writers, into that run folder.
        model = setup / "done"
        args = ["run", "eval", "--checkpoint", model, "--data", setup / "data", "--workers", "0"]
        code, _, err = cli(*args, "--scales", "40", "-o", out / "eval.json")
        assert code == 2 and f"pid {holder.pid}" in err and err.count("\n") == 1, err
        args[1] = "features"
        code, _, err = cli(*args, "--scales", "40", "--out", out)
        assert code == 2 and f"pid {holder.pid}" in err and err.count("\n") == 1, err
        assert files(out) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, _, err = cli(*train_args(setup, out, SHORT))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("vggspec: warning:")]
    assert warnings == [
        f"vggspec: warning: {out}: taking over the lock of a dead writer (`vggspec run "
        f"train`, pid {holder.pid} " + warnings[0].split(f"pid {holder.pid} ")[1]
    ]
    assert not (out / RunDir.LOCK).exists() and audit(out) == []


def test_a_finished_run_is_replaced_only_with_overwrite(setup, tmp_path, cli):
    out = tmp_path / "run"
    assert cli(*train_args(setup, out, "max_steps=2"))[0] == 0
    code, _, err = cli(*train_args(setup, out, SHORT))
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    code, _, err = cli("run", "train", "--resume", out, "--overwrite")
    assert code == 2 and "--overwrite starts a new run" in err and err.count("\n") == 1
    assert load_checkpoint(RunDir(out).last)["position"]["step"] == 2
    code, _, err = cli(*train_args(setup, out, SHORT), "--overwrite")
    assert code == 0, err
    assert digest(out) == digest(setup / "done")  # the new run, whole, in its place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert audit(out) == []


@pytest.mark.parametrize(
    "fault, replaced",
    [
        ("kill-in-checkpoint:3", False),  # the first checkpoint half written
        # A process each (~10 s): the suite keeps one.
        pytest.param(
            "kill-before-swap:3", False, marks=pytest.mark.slow
        ),  # the old run still in place
        pytest.param("kill-in-swap:3", True, marks=pytest.mark.slow),  # the old one not yet deleted
    ],
)
def test_overwrite_killed_at_its_first_checkpoint_keeps_one_whole_run(
    setup, tmp_path, cli, fault, replaced
):
    out = tmp_path / "run"
    assert cli(*train_args(setup, out, "max_steps=2"))[0] == 0
    old = RunDir(out).last.read_bytes()
    proc = start(*train_args(setup, out, SHORT), "--overwrite", env={"VGGSPEC_FAULT": fault})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert audit(out, temporaries=True) == []  # readable, whichever run it holds
    step = load_checkpoint(RunDir(out).last)["position"]["step"]
    if replaced:
        assert step == 3 and not RunDir(out).model.exists()
        code, _, err = cli("run", "train", "--resume", out)
    else:
        assert step == 2 and RunDir(out).last.read_bytes() == old and RunDir(out).model.exists()
        code, _, err = cli(*train_args(setup, out, SHORT), "--overwrite")
    assert code == 0, err
    assert "taking over the lock" in err  # the killed writer's
    assert digest(out) == digest(setup / "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left
    assert audit(out) == [] and not (out / ".replacing").exists()


FORK = (
    "import os, sys, time\n"
    "from vggspec.runtime.io.lock import FolderLock\n"
    "FolderLock(sys.argv[1], 'run train').acquire()\n"
    "child = os.fork()\n"
    "if child == 0:\n"
    "    os.write(1, b'child\\n')\n"  # past fork's after-in-child hooks; one write each
    "    time.sleep(60)\n"
    "    os._exit(0)\n"
    "os.write(1, b'%d\\n' % child)\n"
    "time.sleep(600)\n"
)


def test_a_forked_child_does_not_keep_a_killed_holders_lock(tmp_path):
    # A DataLoader worker (fork) outliving its killed parent must not keep the folder locked.
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", FORK, str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = {proc.stdout.readline(), proc.stdout.readline()}  # in either order
    assert "child\n" in lines, lines
    child = int((lines - {"child\n"}).pop())
    try:
        with pytest.raises(FolderBusy):  # the parent still holds it
            FolderLock(folder).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the child lives on
        warnings = []
        with FolderLock(folder, warn=warnings.append) as lock:
            assert lock.took_over and f"pid {proc.pid} " in lock.took_over
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_restarted_rank_0_claims_its_own_run_again(tmp_path, monkeypatch):
    # Under a torchrun of one's own with --max-restarts, rank 0 takes the lock itself; once
    # restarted, the run in the folder is its own, which it resumes.
    from vggspec.runtime.train.claim import claimed
    from vggspec.runtime.train.config import ConfigError

    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run"), claimed(run, False, False):
        pass
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with claimed(run, False, False) as staging:
        assert staging is None and (run.path / RunDir.LOCK).is_file()
    assert run.checkpoints.is_dir() and not (run.path / RunDir.LOCK).exists()


def test_overwrite_stopped_before_its_first_checkpoint_keeps_the_old_run(
    setup, tmp_path, cli, monkeypatch
):
    # Ctrl-C as the new run starts: the stop's checkpoint must not swap it in for the old one.
    from vggspec.runtime.train import faults

    out = tmp_path / "run"
    assert cli(*train_args(setup, out, "max_steps=2"))[0] == 0
    old = digest(out)
    install = faults.StopRequest.install

    def install_then_interrupt(self):
        install(self)
        os.kill(os.getpid(), signal.SIGINT)  # handled here, at once: a stop at step 1

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(faults.StopRequest, "install", install_then_interrupt)
    try:
        code, _, err = cli(*train_args(setup, out, SHORT), "--overwrite")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 130, err  # interrupted, as Ctrl-C elsewhere (it was 0, as a finished run)
    said = "SIGINT: stopped at step 1, before this run's first checkpoint: the previous run in"
    assert f"{said} {out} stays, this one is dropped" in err
    assert digest(out) == old and load_checkpoint(RunDir(out).last)["position"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left
    assert audit(out) == [] and not (out / ".replacing").exists()


def test_a_folder_removed_by_a_releasing_holder_is_made_again(tmp_path, monkeypatch):
    # The narrow race: the holder releases and removes the empty folder between our mkdir
    # and our open of the lock file.
    folder = tmp_path / "new"
    real_open = os.open
    raced = []

    def open_after_a_release(path, *args, **kwargs):
        if str(path) == str(folder / RunDir.LOCK) and not raced:
            raced.append(path)
            folder.rmdir()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_a_release)
    with FolderLock(folder) as lock:
        assert raced and lock.path.is_file()
    assert not folder.exists()  # made by the lock: removed with it


def test_a_folder_that_takes_no_file_is_one_error_not_a_loop(tmp_path, monkeypatch, cli):
    # /proc answers ENOENT to a new file in a folder that exists (root passes os.access):
    # that is not the race above, and retrying it for ever hung `vggspec convert -o /proc/x`.
    real_open, calls = os.open, []

    def no_file_here(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            calls.append(path)
            if len(calls) > 1000:
                raise RuntimeError("acquire() keeps retrying")
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_file_here)
    folder = tmp_path / "new"
    with pytest.raises(FolderUnwritable) as refused:
        FolderLock(folder, "convert").acquire()
    assert str(refused.value) == f"{folder}: cannot write in {folder} (No such file or directory)"
    assert not folder.exists()  # made by the lock: removed with it
    monkeypatch.setattr(os, "open", real_open)

    def denied(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    out = tmp_path / "x.safetensors"
    code, _, err = cli("convert", tmp_path / "missing.caffemodel", "-o", out)
    assert (code, err) == (2, f"{out}: cannot write in {tmp_path} (Permission denied)\n")


def _a_run(folder, step):
    """A folder that holds a run, as far as settle() looks: a checkpoints folder."""
    RunDir(folder).checkpoints.mkdir(parents=True)
    (RunDir(folder).checkpoints / f"step-{step}").write_text("")
    return folder


def test_settle_removes_a_staging_folder_killed_before_it_was_marked(tmp_path):
    from vggspec.runtime.io import replace

    run = RunDir(_a_run(tmp_path / "run", 2))
    (tmp_path / "run.new-123").mkdir()  # a kill between mkdir and the marker
    (tmp_path / "run.new-backup").mkdir()  # not ours: left alone
    with run.lock():
        replace.settle(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.new-backup"]


def test_settle_puts_back_an_old_run_a_three_rename_swap_left_aside(tmp_path):
    # Killed after `run` → run.old-PID, before the new run took its name.
    from vggspec.runtime.io import replace

    run = RunDir(tmp_path / "run")
    _a_run(tmp_path / "run.old-123", 2)
    _a_run(tmp_path / "run.new-123", 3)
    (tmp_path / "run.new-123" / replace.MARKER).write_text("run.new-123\n")
    with run.lock() as lock:  # the next writer: it makes `run` again, for its lock file
        replace.settle(run)
        assert os.stat(lock.path).st_ino == os.fstat(lock._fd).st_ino  # still the one held
        with pytest.raises(FolderBusy):
            FolderLock(run.path).acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (run.checkpoints / "step-2").exists() and not (run.path / RunDir.LOCK).exists()


def test_settle_deletes_an_old_run_left_aside_once_the_new_one_is_in(tmp_path):
    # Killed after the new run took `run`'s name, before the old one went to the staging name.
    from vggspec.runtime.io import replace

    run = RunDir(_a_run(tmp_path / "run", 3))
    (run.path / replace.MARKER).write_text("run.new-123\n")
    _a_run(tmp_path / "run.old-123", 2)
    with run.lock():
        replace.settle(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (run.checkpoints / "step-3").exists() and not (run.path / replace.MARKER).exists()


def test_a_dangling_link_or_a_file_on_the_way_is_one_line_and_leaves_nothing(tmp_path, cli):
    # It used to spin for ever: mkdir said the folder was there, open said it was not.
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    (tmp_path / "afile").write_text("")
    before = sorted(os.listdir(tmp_path))
    for out, why in [
        (tmp_path / "runs" / "x", f"{tmp_path / 'runs'} is a link to {tmp_path / 'gone'}"),
        (tmp_path / "afile" / "x", "Not a directory"),
    ]:
        with pytest.raises(FolderUnwritable, match=why):
            FolderLock(out).acquire()
        code, _, err = cli("run", "train", f"out={out}", "max_steps=1")
        assert code == 2 and len(err.strip().splitlines()) == 1 and why in err, err
    assert sorted(os.listdir(tmp_path)) == before


def test_a_folder_where_no_file_can_be_made_is_one_line(setup, cli):
    # /proc as root: os.access says writable, open(O_CREAT) says "no such file".
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    with pytest.raises(FolderUnwritable, match=r"cannot write in /proc \(No such file"):
        output_lock("/proc/o.json", "run eval").acquire()
    code, _, err = cli("run", "eval", "--checkpoint", setup / "done", "-o", "/proc/r.json")
    assert code == 2 and "/proc/r.json" in err and len(err.strip().splitlines()) == 1, err


def test_the_lock_gives_up_after_a_bounded_number_of_races(tmp_path, monkeypatch):
    # A folder that vanishes after every mkdir (a holder releasing it, again and again).
    from vggspec.runtime.io import lock as lock_module

    folder = tmp_path / "new"
    real_open, opens = os.open, []

    def always_gone(path, *args, **kwargs):
        if str(path) == str(folder / RunDir.LOCK):
            opens.append(path)
            folder.rmdir()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", always_gone)
    with pytest.raises(FolderUnwritable, match="changed each of"):
        FolderLock(folder).acquire()
    assert len(opens) == lock_module.ATTEMPTS and not folder.exists()


def test_missing_folders_made_by_a_refused_lock_are_removed(tmp_path):
    deep = tmp_path / "a" / "b" / "run"
    with FolderLock(deep):
        assert deep.is_dir()
    assert os.listdir(tmp_path) == []


# `run train` held in its set-up (the data scan), after it took the lock, until signalled.
SCAN_WAITS = (
    "import sys, time\n"
    "from vggspec.runtime.train import trainer\n"
    "def waiting(*args):\n"
    "    print('scanning', flush=True)\n"
    "    time.sleep(120)\n"
    "trainer.prepare_training_data = waiting\n"
    "from vggspec.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_set_up_leaves_no_folder_and_no_lock(setup, tmp_path, sig):
    # SIGTERM (what `timeout`, systemd and batch schedulers send) during the data scan or the
    # memory probe ended the process at once: a folder holding only a stale lock was left.
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCAN_WAITS, *map(str, train_args(setup, out, SHORT))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout.readline() == "scanning\n"
        assert (out / ".vggspec.lock").exists()  # held while the checks run
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == (
        "vggspec: interrupted" if sig == signal.SIGINT else "vggspec: stopped by SIGTERM"
    )
    assert not out.exists() and os.listdir(tmp_path) == []
