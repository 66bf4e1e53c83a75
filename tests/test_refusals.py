"""Every way `vggspec run train` refuses (exit 2) ends in one line and leaves no run folder:
all of its checks come before anything is written."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from eval_helpers import SPEC_32, save_net
from fault_helpers import make_setup, train_args


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The fault matrix's tiny set-up, odd data folders, foreign weights and a finished run."""
    from vggspec.cli import main

    root = make_setup(tmp_path_factory.mktemp("refusals"))
    data = root / "data"
    unknown_class = root / "unknown-class"  # a validation class training never saw
    shutil.copytree(data, unknown_class)
    shutil.copytree(data / "val" / "circle", unknown_class / "val" / "zigzag")
    bad_files = root / "bad-files"  # 5 of 65 training files are not images (> 1 %)
    shutil.copytree(data, bad_files)
    for i in range(5):
        (bad_files / "train" / "circle" / f"junk{i}.jpg").write_text("not a JPEG")
    save_net(root / "other.safetensors", SPEC_32, 0)  # 6 classes: fc8 does not fit
    (root / "junk.safetensors").write_text("not weights")
    (root / "bad.vgg").write_text("input 32x32 RGB\nconv3-8 FC-10 conv3-8 soft-max\n")
    (root / "box.vgg").write_text("input 32x32 RGB\nconv3-8 maxpool\nFC-16 FC-4 box\n")
    (root / "huge.vgg").write_text("input 224x224 RGB conv3-999999 maxpool FC-10 soft-max\n")
    (root / "a-file").write_text("")
    (root / "dangling").symlink_to(root / "gone")
    (root / "mine").mkdir()  # a folder of the user's, named as the demo data's
    (root / "mine" / "thesis.txt").write_text("keep")
    assert main([str(a) for a in train_args(root, root / "done", "max_steps=4")]) == 0
    # A run whose last.pt is another spec's run's (resuming it was a torch traceback).
    (root / "wide.vgg").write_text(
        "input 32x32 RGB\nconv3-12 maxpool\nconv3-16 maxpool\nFC-32 FC-32 FC-10 soft-max\n"
    )
    wide = train_args(root, root / "wide", "max_steps=2", f"spec={root / 'wide.vgg'}")
    assert main([str(a) for a in wide]) == 0
    shutil.copytree(root / "done", root / "swapped")
    shutil.copytree(root / "done", root / "copy")  # its config.yaml names done/ as out
    (root / "mystuff").mkdir()  # the user's files, named as a run's
    (root / "mystuff" / "config.yaml").write_text("lr: 0.1\n")
    (root / "mystuff" / "metrics.jsonl").write_text('{"mine": 1}\n')
    (root / "recipe.yaml").write_text("lr: 0.01\n")
    shutil.copy(root / "wide" / "checkpoints" / "last.pt", root / "swapped" / "checkpoints")
    return root


def _tree(root: Path) -> dict:
    """Every path under `root`, with a file's size and time (a folder's time changes when a
    lock file comes and goes in it)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.name.startswith(".vggspec-stats")  # the data's colour statistics cache
    }


def _cases(root: Path) -> list[tuple[str, list[str], dict, str]]:
    """(name, command line, environment, what the line says)."""
    data = root / "data"
    train = lambda *extra: train_args(root, root / "new", *extra)  # noqa: E731
    # finetune= with the recipe's init=glorot is refused (init= would not take effect).
    tuned = lambda *extra: [a for a in train(*extra) if a != "init=glorot"]  # noqa: E731
    done = root / "done"
    cases = [
        ("bad value", train("lr=fast"), {}, "lr must be float"),
        ("unknown key", train("lr_factr=0.5"), {}, "did you mean 'lr_factor'"),
        ("spec error", train(f"spec={root / 'bad.vgg'}"), {}, "bad.vgg:2:15: error: conv1_2"),
        ("no data", train(f"data={root / 'nowhere'}"), {}, "no train/ folder"),
        ("uneven split", [*train("batch_size=7"), "--nproc", "2"], {}, "does not split evenly"),
        ("scale below crop", train("scale=16"), {}, "smaller than the 32x32 crop"),
        ("batch above data", train("batch_size=100"), {}, "fewer than one batch"),
        ("boxes without data", train(f"spec={root / 'box.vgg'}", "data=null"), {}, "box"),
        ("init missing", train(f"init={root / 'nothing'}"), {}, "no such checkpoint"),
        ("init not weights", train(f"init={root / 'junk.safetensors'}"), {}, "junk.safetensors"),
        ("init another net", train(f"init={root / 'other.safetensors'}"), {}, "fc"),
        ("finetune missing", tuned(f"finetune={root / 'nothing'}"), {}, "no such checkpoint"),
        ("finetune another net", tuned(f"finetune={root / 'other.safetensors'}"), {}, "fc"),
        ("unknown val class", train(f"data={root / 'unknown-class'}"), {}, "zigzag"),
        ("too many bad files", train(f"data={root / 'bad-files'}"), {}, "cannot be read"),
        ("triton without a GPU", train("backend=triton"), {}, "TRITON_INTERPRET=1"),
        ("fp64 on triton", train("precision=fp64", "backend=triton"), {}, "backend="),
        ("out through a dead link", train_args(root, root / "dangling" / "x"), {}, "gone"),
        ("out under a file", train_args(root, root / "a-file" / "x"), {}, "a-file"),
        ("estimate too big", train(f"spec={root / 'huge.vgg'}", "scale=256"), {}, "memory"),
        ("bad memory cap", train(), {"VGGSPEC_MEMORY_CAP": "lots"}, "give a size"),
        # It trained a step, wrote a checkpoint and exited 1: stopped by its own cap.
        ("cap under the step", train(), {"VGGSPEC_MEMORY_CAP": "1M"}, "would stop at its first"),
        # Anything but 0 ran the probe and kept freed memory, as 1 does.
        ("probe switch not 0/1", train(), {"VGGSPEC_MEMORY_PROBE": "off"}, "give 0 (off) or 1"),
        ("retain switch not 0/1", train(), {"VGGSPEC_RETAIN_MEMORY": "no"}, "give 0 (off) or 1"),
        ("recipe from /dev/zero", ["run", "train", "--config", "/dev/zero"], {}, "1 MiB"),
        ("run already there", train_args(root, done), {}, "already holds a run"),
        ("resume edited", ["run", "train", "--resume", done, "lr=0.5"], {}, "not lr"),
        ("resume and config", ["run", "train", "--resume", done, "--config", data], {}, "give one"),
        ("resume not a run", ["run", "train", "--resume", data], {}, "not a run folder"),
        (
            "resume another spec's checkpoint",
            ["run", "train", "--resume", root / "swapped"],
            {},
            "conv1_1.weight has shape (12, 3, 3, 3), the spec needs (8, 3, 3, 3)",
        ),
        ("resume and overwrite", ["run", "train", "--resume", done, "--overwrite"], {}, "give one"),
        ("no processes", ["run", "train", "--nproc", "0"], {}, "--nproc must be"),
        # These trained, replacing or mixing with the files there (exit 0).
        ("out over the user's files", train_args(root, root / "mystuff"), {}, "holds files"),
        (
            "--overwrite over the user's files",
            [*train_args(root, root / "mystuff"), "--overwrite"],
            {},
            "holds files",
        ),
        ("out in the data", train_args(root, data / "train" / "circle"), {}, "inside data="),
        ("out new in the data", train_args(root, data / "val" / "new"), {}, "inside data="),
        (
            "out in the demo data",
            train_args(root, root / "demo" / "run", "data=null"),
            {"VGGSPEC_DEMO_DATA": str(root / "demo")},
            "inside the built-in demo data",
        ),
        # It trained into done/ (the out: its config.yaml records), --overwrite replacing it.
        (
            "a run's config without out=",
            ["run", "train", "--config", root / "copy" / "config.yaml", "--overwrite"],
            {},
            "out=NEW_FOLDER",
        ),
        ("init and finetune", train(f"init={done}", f"finetune={done}"), {}, "give one"),
        ("finetune and init given", train(f"finetune={done}", "init=gaussian"), {}, "give one"),
        ("boxes for a classifier", train(f"boxes={root / 'x.csv'}"), {}, "no box head"),
        ("empty data=", train("data="), {}, "data= has no value"),  # trained on the demo data
        ("empty out=", train("out="), {}, "out= has no value"),  # trained into runs/
        ("momentum 1", train("momentum=1"), {}, "momentum must be in [0, 1)"),
        ("momentum 2", train("momentum=2"), {}, "momentum must be in [0, 1)"),
        (
            "a typo on the command line",
            ["run", "train", "--config", root / "recipe.yaml", "lrr=0.1"],
            {},
            "unknown setting in the command line: 'lrr'",
        ),
        ("too many workers", train("workers=100000"), {}, "workers=100000: more data-loading"),
        # Writing the demo data there deleted the folder whole, then trained.
        (
            "demo data over a folder",
            train("data=null"),
            {"VGGSPEC_DEMO_DATA": str(root / "mine")},
            "holds files but not the demo data",
        ),
        (
            "demo data over a file",
            train("data=null"),
            {"VGGSPEC_DEMO_DATA": str(root / "a-file")},
            "not a folder",
        ),
    ]
    if not torch.cuda.is_available():
        cases.append(("cuda without CUDA", train("device=cuda"), {}, "device=cuda: "))
    return cases


def test_every_refusal_is_one_line_and_leaves_no_run_folder(setup, cli, monkeypatch, tmp_path):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the tests' own choice
    # Only the probe's refusal needs memory faked: it is measured after the data is read.
    from vggspec.runtime.train import memory_probe

    real_measure = memory_probe.measure
    monkeypatch.chdir(tmp_path)  # a relative out= or the default runs/ would land here
    failures = []
    cases = _cases(setup)
    cases.append(("probe too big", train_args(setup, setup / "new"), {"FAKE": "1"}, "memory"))
    for name, args, env, says in cases:
        before, here = _tree(setup), sorted(os.listdir(tmp_path))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if "FAKE" in env:
            monkeypatch.setattr(
                memory_probe, "measure", lambda *a: memory_probe.MemoryProbe(
                    (4, 8), (1 << 40, 2 << 40), 0, 0, 1 << 30, 0, False
                )
            )  # fmt: skip
        try:
            code, _, err = cli(*args)
        finally:
            for key in env:
                monkeypatch.delenv(key)
            monkeypatch.setattr(memory_probe, "measure", real_measure)
        lines = err.strip().splitlines()
        if lines and re.fullmatch(r" *\^+", lines[-1]):  # a spec error: its line and a caret
            lines = lines[:-2]
        # A run refused after its first log lines (the data it scanned) says so last.
        logged = all(re.match(r"\[\d\d:\d\d:\d\d\] ", line) for line in lines[:-1])
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if not lines or not logged or "Traceback" in err or says not in lines[-1]:
            problems.append(f"said {err[-300:]!r}")
        if _tree(setup) != before or sorted(os.listdir(tmp_path)) != here:
            problems.append("wrote " + ", ".join(sorted(set(_tree(setup)) ^ set(before))))
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert len(cases) >= 50


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_eval_and_features_refuse_a_device_or_backend_the_machine_lacks(
    setup, cli, monkeypatch, tmp_path
):
    # They were tracebacks: AttributeError _cuda_setDevice, RuntimeError 0 active drivers.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for job, output in (("eval", ["-o", tmp_path / "r.json"]), ("features", ["--out", tmp_path])):
        for flag, says in (
            (["--device", "cuda"], "--device cuda: this torch"),
            (["--backend", "triton"], "--backend triton needs a CUDA GPU"),
        ):
            code, _, err = cli("run", job, "--checkpoint", setup / "done", *flag, *output)
            assert code == 2 and err.count("\n") == 1 and says in err, err
    assert os.listdir(tmp_path) == []


def test_the_demo_data_may_go_only_where_nothing_is(tmp_path):
    """An absent or empty folder takes the demo data; a file or a folder with anything in it
    is refused (writing the demo data replaced it whole)."""
    from vggspec.runtime.train.config import ConfigError
    from vggspec.runtime.train.data import check_demo_data_root

    check_demo_data_root(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_demo_data_root(tmp_path / "empty")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / ".complete").write_text("ok\n")
    (tmp_path / "done" / "train").mkdir()
    check_demo_data_root(tmp_path / "done")
    (tmp_path / "file").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for name, says in (("file", "not a folder"), ("full", "holds files")):
        with pytest.raises(ConfigError, match=says):
            check_demo_data_root(tmp_path / name)
    assert (tmp_path / "full" / "x").exists()


def test_a_mistyped_memory_cap_is_refused_before_the_data_is_read(setup, cli, monkeypatch):
    # It came after the data scan and the memory probe: log lines, seconds, then the refusal.
    monkeypatch.setenv("VGGSPEC_MEMORY_CAP", "lots")
    code, _, err = cli(*train_args(setup, setup / "new"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("VGGSPEC_MEMORY_CAP=lots: give a size"), err
