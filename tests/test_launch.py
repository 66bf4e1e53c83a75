"""Worker processes: the one launcher reruns the parent's own command line, plus only what
the parent settled for them (no flag list copied by hand)."""

from __future__ import annotations

import pytest
from eval_helpers import CLASSES, SPEC_32, save_net, write_images
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.dist import launch
from vggspec.runtime.io.rundir import RunDir

from vggspec.cli import parse_args
from vggspec.commands.train import resolve_config


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
    assert resolve_config(worker).out == out
