"""Built-in demo data (deterministic, varied, colour-blind labels) and stored colour statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import vggspec.runtime.io.color_stats_file as color_stats_file
from fault_helpers import children, running
from helpers import ROOT
from PIL import Image
from vggspec.runtime.data.color_stats import compute_color_stats
from vggspec.runtime.data.demo import DEMO_CLASSES, make_demo_dataset, render_demo_image
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.io.color_stats_file import STATS_FILE_NAME, load_or_compute_color_stats


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=5, train_per_class=12, val_per_class=3, workers=2)
    return root


def test_demo_is_an_image_folder_of_jpegs_with_ten_shape_classes(demo):
    train = scan_image_folder(demo, "train")
    val = scan_image_folder(demo, "val", classes=train.classes)
    assert train.classes == sorted(DEMO_CLASSES) and len(DEMO_CLASSES) == 10
    assert len(train) == 120 and len(val) == 30
    assert not train.report.bad and not train.report.converted
    with Image.open(train.samples[0][0]) as img:
        assert img.format == "JPEG" and img.mode == "RGB"


def test_demo_is_deterministic_from_the_seed_whatever_the_processes(demo, tmp_path):
    make_demo_dataset(tmp_path, seed=5, train_per_class=12, val_per_class=3, workers=1)
    files = sorted(p.relative_to(demo) for p in demo.rglob("*.jpg"))
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.jpg"))
    assert all((demo / f).read_bytes() == (tmp_path / f).read_bytes() for f in files)
    a = np.asarray(render_demo_image(5, "train", 3, 0))
    b = np.asarray(render_demo_image(6, "train", 3, 0))
    assert a.shape != b.shape or not np.array_equal(a, b)
    assert not np.array_equal(
        np.asarray(render_demo_image(5, "train", 3, 0)),
        np.asarray(render_demo_image(5, "val", 3, 0)),
    )


def test_demo_images_vary_in_size_and_orientation(demo):
    sizes = scan_image_folder(demo, "train").sizes
    short = [min(s) for s in sizes]
    aspect = [max(s) / min(s) for s in sizes]
    assert min(short) >= 64 and max(short) <= 128 and max(short) - min(short) > 40
    assert max(aspect) <= 1.6 + 1 / 64 and max(aspect) > 1.3
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert len(set(sizes)) > 100


def test_colour_does_not_give_the_class():
    """Nearest class-mean on an image's mean colour: about chance (10 %), not a shortcut."""

    def colour(split, label, k):
        return np.asarray(render_demo_image(1, split, label, k), dtype=np.float64).mean((0, 1))

    centres = np.array(
        [np.mean([colour("train", c, k) for k in range(30)], axis=0) for c in range(10)]
    )
    hits = sum(
        int(np.argmin(np.linalg.norm(centres - colour("val", c, k), axis=1)) == c)
        for c in range(10)
        for k in range(20)
    )
    assert hits / 200 < 0.2


def test_stats_are_computed_once_then_read_back(demo, monkeypatch):
    folder = scan_image_folder(demo, "train")
    path = demo / STATS_FILE_NAME
    assert not path.exists()
    first = load_or_compute_color_stats(folder)
    stored = json.loads(path.read_text())
    assert stored["mean_rgb"] == list(first.mean_rgb) and stored["images"] == 120

    def fail(*_a, **_k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(color_stats_file, "compute_color_stats", fail)
    assert load_or_compute_color_stats(folder) == first
    monkeypatch.undo()
    # another sample setting (or another file list) is another set of statistics
    other = load_or_compute_color_stats(folder, max_images=10)
    assert other.images == 10 and json.loads(path.read_text())["images"] == 10


def test_stats_of_known_pixels(tmp_path):
    d = tmp_path / "train" / "x"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = []
    for k in range(4):
        arr = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{k}.png")
        pixels.append(arr.reshape(-1, 3).astype(np.float64))
    allpix = np.concatenate(pixels)
    stats = compute_color_stats(scan_image_folder(tmp_path, "train"), side=64)
    assert np.allclose(stats.mean_rgb, allpix.mean(0))
    cov = np.cov(allpix.T, bias=True)
    vectors = np.array(stats.eigenvectors)
    assert np.allclose(vectors @ cov @ vectors.T, np.diag(stats.eigenvalues), atol=1e-6)
    assert list(stats.eigenvalues) == sorted(stats.eigenvalues, reverse=True)
    assert stats.pixels == len(allpix)


def test_unwritable_stats_path_only_warns(demo, tmp_path, caplog):
    folder = scan_image_folder(demo, "train")
    (tmp_path / "a-file").write_text("not a folder")
    unwritable = tmp_path / "a-file" / "stats.json"  # its "folder" is a file
    stats = load_or_compute_color_stats(folder, unwritable, max_images=5)
    assert stats.images == 5 and "could not store" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    # They lived on under init, writing and holding the caller's stdout: a pipe reading
    # `vggspec data demo D` never saw its end.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggspec", "data", "demo", str(tmp_path / "d")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while len(workers := children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2, "the pool did not start"
    proc.kill()
    proc.communicate(timeout=20)  # the pipe ends: no worker holds it any more
    deadline = time.monotonic() + 10
    while any(running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(w) for w in workers)
    # Nothing at D that looks like data (`make demo-loc` took a partial D/annotations as
    # done): the set is renamed into place only when complete.
    assert not (tmp_path / "d").exists()  # (d.partial, if a worker had begun writing)


def test_data_demo_writes_a_new_or_empty_folder_only(tmp_path, cli, monkeypatch):
    from vggspec.runtime.io.lock import FolderLock
    from vggspec.runtime.io.whole_folder import PARTIAL_MARK

    small = ["--train-per-class", "1", "--val-per-class", "1"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.partial").mkdir()  # left by a killed run (it carries the mark): replaced
    (tmp_path / "x.partial" / PARTIAL_MARK).write_text("")
    (tmp_path / "x.partial" / "stale.jpg").write_text("")
    for name in ("empty", "x"):
        code, _, err = cli("data", "demo", tmp_path / name, *small)
        assert code == 0, err
        assert len(list((tmp_path / name).rglob("*.jpg"))) == 20
        assert not (tmp_path / name / PARTIAL_MARK).exists()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.lock"))
    before = sorted((tmp_path / "x").rglob("*"))
    code, _, err = cli("data", "demo", tmp_path / "x", "--train-per-class", "2")
    assert code == 2
    assert err.strip().endswith("exists and is not an empty folder; name a new or empty one")
    assert sorted((tmp_path / "x").rglob("*")) == before  # another count is not mixed in
    # A user's own y.partial was deleted whole.
    (tmp_path / "y.partial").mkdir()
    (tmp_path / "y.partial" / "thesis.txt").write_text("keep")
    code, _, err = cli("data", "demo", tmp_path / "y", *small)
    assert code == 2 and "y.partial: exists and is not a set vggspec was writing" in err
    assert (tmp_path / "y.partial" / "thesis.txt").read_text() == "keep"
    # A second writer of one folder: the two deleted each other's z.partial, and one said
    # "wrote" over an incomplete set.
    with FolderLock(tmp_path, "another data demo", name=".z.lock", target=tmp_path / "z"):
        code, _, err = cli("data", "demo", tmp_path / "z", *small)
    assert code == 2 and "z: in use by another writer" in err, err
    assert not (tmp_path / "z").exists() and not (tmp_path / "z.partial").exists()
    # The current folder (its name was empty: a traceback) and a symbolic link (refused
    # only after all the work, leaving DIR.partial).
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    (tmp_path / "link").symlink_to(tmp_path / "empty2", target_is_directory=True)
    for name, says in ((".", "not the current one"), (tmp_path / "link", "a symbolic link")):
        code, _, err = cli("data", "demo", name, *small)
        assert code == 2 and says in err, err
    assert [p.name for p in tmp_path.glob("*.partial")] == ["y.partial"]  # the user's
    assert os.listdir(tmp_path / "here") == []


def test_a_second_writer_of_the_demo_data_waits_its_turn_or_finds_it_done(tmp_path):
    """The trainer's demo data (two first `run train` at once deleted each other's
    ROOT.partial and both failed): one writer at a time, and one that gets the lock after
    another finished writes nothing."""
    from vggspec.runtime.io.lock import FolderBusy, FolderLock
    from vggspec.runtime.io.whole_folder import write_whole

    root, wrote = tmp_path / "demo", []
    first = FolderLock(tmp_path, "a first run", name=".demo.lock", target=root)
    with first, pytest.raises(FolderBusy, match="in use by another writer"):
        write_whole(root, wrote.append, "a second run")
    assert not wrote and not root.exists()
    write_whole(root, lambda partial: (partial / "a.jpg").write_text("x"), "a run")
    write_whole(root, wrote.append, "a later run", done=root.exists)
    assert not wrote and os.listdir(root) == ["a.jpg"]


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--seed", "-1", "expected a whole number ≥ 0, got '-1'"),  # was a traceback
        ("--train-per-class", "0", "expected a positive integer, got '0'"),  # an empty split
        ("--val-per-class", "-1", "expected a positive integer, got '-1'"),
    ],
)
def test_data_demo_refuses_a_negative_seed_or_an_empty_split(tmp_path, capsys, flag, value, says):
    from vggspec.cli import main

    with pytest.raises(SystemExit) as exited:  # argparse's own exit, in its one line
        main(["data", "demo", str(tmp_path / "d"), flag, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.strip().endswith(says), err
    assert os.listdir(tmp_path) == []  # no d, no d.partial
