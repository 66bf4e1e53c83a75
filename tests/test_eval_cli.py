"""`vggspec run eval` and `vggspec run features` from the command line: the report, its JSON,
one message for every mistake, two processes equal to one, features on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from eval_helpers import CLASSES, SPEC_32, save_net, write_images
from helpers import vggspec_cmd
from vggspec.runtime.eval.features.linear_probe import fit_and_score

import vggspec


@pytest.fixture(autouse=True)
def restore_threads():
    # The commands set torch's thread count in this process (--threads 1 below).
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two nets of the 6-class spec, and 15 validation images (odd: 8 + 7 on two ranks)."""
    root = tmp_path_factory.mktemp("cli")
    shapes = [(40, 40), (50, 38), (36, 60), (45, 45), (70, 40)]
    sizes = {c: [shapes[(i + k) % 5] for k in range(3)] for i, c in enumerate(CLASSES[:5])}
    data = write_images(root / "data", sizes)
    write_images(data, {c: [(40, 44)] * 3 for c in CLASSES}, seed=1, split="train")
    run = root / "run"
    run.mkdir()
    save_net(run / "model.safetensors", SPEC_32, 1, spec_dir=root)
    other = save_net(root / "other.safetensors", SPEC_32, 2)
    return root, data, run, other


def common(data, *extra):
    return ["--data", data, "--workers", "0", "--threads", "1", *extra]


def test_table_and_json(setup, cli, tmp_path):
    _, data, run, _ = setup
    code, out, err = cli("run", "eval", "--checkpoint", run, *common(data, "--method", "all"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "config",
        "train",
        "S",
        "test",
        "Q",
        "method",
        "top-1",
        "err",
        "top-5",
        "err",
    ]
    assert [line.split()[2] for line in lines[2:6]] == ["40", "36,40,44", "36,40,44", "36,40,44"]
    assert "multi-crop & dense" in lines[5] and lines[2].split()[1] == "[36;44]"
    assert lines[6].startswith("15 images, 1 process(es)")
    assert "/data/val: 15 of 15 images usable" in err
    report_path, posteriors = tmp_path / "r.json", tmp_path / "p.npz"
    code, out, _ = cli(
        "run",
        "eval",
        "--checkpoint",
        run,
        *common(data, "--method", "both", "--json", "-o", report_path, "--scales", "32,48"),
        "--posteriors",
        posteriors,
    )
    assert code == 0
    report = json.loads(out)
    assert report == json.loads(report_path.read_text())
    assert [r["method"] for r in report["results"]] == ["dense", "multi-crop", "both"]
    saved = np.load(posteriors)
    for r, key in zip(
        report["results"], ["dense@32,48", "multi-crop@32,48", "both@32,48"], strict=True
    ):
        assert r["scales"] == [32, 48] and r["images"] == 15
        # The errors of the posteriors written beside the report, counted here with numpy
        # (top-5 given: 6 classes).
        ranked = np.argsort(-saved[key], axis=1, kind="stable")
        hits = ranked == saved["label"][:, None]
        assert r["top1_error"] == pytest.approx(1 - hits[:, 0].mean(), abs=1e-12)
        assert r["top5_error"] == pytest.approx(1 - hits[:, :5].any(axis=1).mean(), abs=1e-12)
    # Written under the name given: "p.npy" became "p.npy.npz", said nowhere.
    npy = tmp_path / "p.npy"
    code, _, _ = cli(
        "run", "eval", "--checkpoint", run, *common(data, "--scales", "32,48"), "--posteriors", npy
    )
    assert code == 0 and not (tmp_path / "p.npy.npz").exists()
    assert np.array_equal(np.load(npy)["dense@32,48"], saved["dense@32,48"])
    seconds = report["seconds"]["total"]
    assert report["images_per_second"] == pytest.approx(15 / seconds)
    assert report["processes"] == 1
    assert report["nets"][0]["train_scale"] == "[36;44]"


def test_fewer_than_five_classes_have_no_top5(tmp_path, cli):
    net = save_net(
        tmp_path / "m.safetensors", SPEC_32.replace("FC-6", "FC-2"), 0, classes=["a", "b"]
    )
    data = write_images(tmp_path / "d", {"a": [(40, 40)] * 2, "b": [(40, 50)]})
    code, out, _ = cli("run", "eval", "--checkpoint", net, *common(data, "--json"))
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert "top5_error" not in result and result["images"] == 3


def test_fused_report_names_every_net(setup, cli):
    _, data, run, other = setup
    code, out, _ = cli(
        "run", "eval", "--checkpoint", run, "--checkpoint", other, *common(data, "--json")
    )
    assert code == 0
    report = json.loads(out)
    assert [n["name"] for n in report["nets"]] == ["net1", "net2"]
    code, out, _ = cli("run", "eval", "--checkpoint", run, "--checkpoint", other, *common(data))
    assert out.splitlines()[2].startswith("net1 & net2  [36;44] / [36;44]")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "/nonexistent"], "/nonexistent: no such checkpoint file or run folder"),
        (["--checkpoint", "RUN", "--split", "test"], "no test/ folder"),
        (["--checkpoint", "RUN", "--scales", "16,40"], "Q=16 is smaller than net1's 32x32 input"),
        (["--checkpoint", "RUN", "--scales", "4x"], "--scales takes whole numbers"),
        (["--checkpoint", "RUN", "--scales", "100000"], "Q=100000 is more than 8× net1's"),
        (["--checkpoint", "JUNK"], "not a readable safetensors file"),
        (["--checkpoint", "RUN", "--spec", "OTHER_SPEC"], "another spec than --spec"),
        (["--weights", "RUN/model.safetensors"], "1 --weights but 0 --spec"),
        ([], "say which net"),
        (["--checkpoint", "RUN", "--scales", "8", "--nproc", "2"], "Q=8 is smaller"),  # no worker
        (["--checkpoint", "RUN", "--posteriors", "TMP"], "is a folder; give a file name"),
        (["--checkpoint", "RUN", "-o", "TMP"], "is a folder; give a file name"),
        # 1000 held 2.5 GB of crop lists and ran for ever; with dense, --grid did nothing.
        (["--checkpoint", "RUN", "--method", "all", "--grid", "1000"], "--grid must be 1 to 20"),
        (["--checkpoint", "RUN", "--method", "both", "--grid", "0"], "--grid must be 1 to 20"),
        (["--checkpoint", "RUN", "--grid", "3"], "--grid is for multi-crop"),
        (["--checkpoint", "RUN", "--protocol", "centre", "--grid", "3"], "--grid and --posteri"),
        # Each dropped without a word (and 0 threads passed as "not given").
        (["--checkpoint", "RUN", "--train-scale", "100"], "--train-scale is for --weights"),
        # It said the folder had classes the net did not know.
        (["--checkpoint", "RUN", "--classes", "ONE_CLASS"], "1 class name(s), but"),
        (["--checkpoint", "RUN", "--protocol", "centre", "--classifier", "RUN"], "not centre"),
    ],
)
def test_mistakes_are_one_message_and_exit_2(setup, cli, tmp_path, args, message):
    _, data, run, _ = setup
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    spec = tmp_path / "o.vgg"
    spec.write_text(SPEC_32.replace("conv3-8", "conv3-4"))
    replace = {
        "RUN": str(run),
        "JUNK": str(tmp_path / "junk.safetensors"),
        "OTHER_SPEC": str(spec),
        "TMP": str(tmp_path),
        "ONE_CLASS": str(tmp_path / "one.txt"),
    }
    (tmp_path / "one.txt").write_text("a\n")
    args = [replace.get(a, a.replace("RUN", str(run))) for a in args]
    code, _, err = cli("run", "eval", *args, *common(data))
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--checkpoint", "RUN", "-o", "DATA/val/a/000.png"],
        ["eval", "--checkpoint", "RUN", "--posteriors", "DATA/val/a/001.png"],
        ["eval", "--checkpoint", "RUN", "-o", "DATA/val/report.json"],
        ["eval", "--checkpoint", "RUN", "-o", "DATA/annotations/r.json"],
        ["eval", "--weights", "W", "--spec", "SPEC", "-o", "SPEC"],
        ["eval", "--checkpoint", "RUN", "--spec", "SPEC", "--posteriors", "SPEC_AGAIN"],
        ["eval", "--checkpoint", "RUN", "--classes", "CLASSES", "-o", "CLASSES"],
        ["eval", "--checkpoint", "RUN", "--posteriors", "P", "-o", "P"],
        ["eval", "--checkpoint", "RUN", "-o", "NEW/r.json", "--posteriors", "DATA/val/a/0.npz"],
        ["eval", "--checkpoint", "RUN", "--protocol", "centre", "-o", "DATA/val/a/000.png"],
        ["eval", "--checkpoint", "RUN", "--protocol", "centre", "--boxes", "B", "-o", "B"],
        ["eval", "--checkpoint", "RUN", "--classifier", "W", "-o", "W"],
        ["features", "--checkpoint", "RUN", "--out", "DATA/val/feats"],
        ["features", "--checkpoint", "RUN", "--classifier", "ridge", "--out", "DATA/train/f"],
        ["features", "--checkpoint", "RUN", "--classes", "OUT/val_files.txt", "--out", "OUT"],
    ],
)
def test_no_output_lands_on_an_input(setup, cli, tmp_path, args):
    """`run eval -o DATA/val/square/00000.jpg` wrote its report over an image, `-o SPEC`
    over the spec, `--posteriors P -o P` left the report in P; localisation's `-o` on an
    image said "[Errno 2] No such file or directory: ''", exit 1."""
    import shutil

    _, data, run, _ = setup
    shutil.copytree(data, tmp_path / "data")
    shutil.copy(run / "model.safetensors", tmp_path / "w.safetensors")
    (tmp_path / "c.vgg").write_text(SPEC_32)
    (tmp_path / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    (tmp_path / "boxes.json").write_text("{}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "val_files.txt").write_text("".join(c + "\n" for c in CLASSES))
    (tmp_path / "p.npz").write_bytes(b"p")
    names = {
        "RUN": run, "DATA": tmp_path / "data", "W": tmp_path / "w.safetensors",
        "SPEC": tmp_path / "c.vgg", "CLASSES": tmp_path / "classes.txt",
        "B": tmp_path / "boxes.json", "OUT": tmp_path / "out", "P": tmp_path / "p.npz",
        "SPEC_AGAIN": f"{tmp_path}/./c.vgg", "NEW": tmp_path / "new",
    }  # fmt: skip
    parts = [a.partition("/") for a in args]
    args = [f"{names[head]}{sep}{tail}" if head in names else head for head, sep, tail in parts]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = cli("run", *args, *common(tmp_path / "data"))
    assert code == 2, err
    assert "write elsewhere" in err or "give two files" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "new").exists()  # no folder made for an output either


def test_an_output_beside_the_images_under_the_data_root_is_written(setup, cli, tmp_path):
    # Only what the command reads (its splits, the box annotations) is refused: DATA/report.json
    # beside DATA/val was refused too.
    import shutil

    _, data, run, _ = setup
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    code, _, err = cli("run", "eval", "--checkpoint", run, *common(copy, "-o", copy / "r.json"))
    assert code == 0 and (copy / "r.json").is_file(), err


def test_weights_from_torchvision_layout(setup, cli, tmp_path):
    root, data, run, _ = setup
    net = vggspec.load(run / "model.safetensors", backend="torch")
    torch.save(vggspec.to_torchvision(net), tmp_path / "tv.pth")
    spec = root / "net1.vgg"
    base = ["--scales", "40", "--json", "--classes", tmp_path / "classes.txt"]
    (tmp_path / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    code, out, err = cli(
        "run",
        "eval",
        "--weights",
        tmp_path / "tv.pth",
        "--spec",
        spec,
        "--preprocess",
        "torchvision",
        "--posteriors",
        tmp_path / "theirs.npz",
        *common(data, *base),
    )
    assert code == 0, err
    theirs = json.loads(out)["results"]
    code, out, _ = cli(
        "run",
        "eval",
        "--checkpoint",
        run,
        "--preprocess",
        "torchvision",
        "--posteriors",
        tmp_path / "ours.npz",
        *common(data, *base),
    )
    assert json.loads(out)["results"] == theirs
    # Per image, not only the error counts: the same weights under the same preprocessing.
    a, b = np.load(tmp_path / "theirs.npz"), np.load(tmp_path / "ours.npz")
    np.testing.assert_array_equal(a["dense@40"], b["dense@40"])


def test_two_processes_equal_one_on_an_odd_count(setup, tmp_path, cli):
    _, data, run, other = setup
    outputs = {}
    for nproc in (1, 2):
        args = [
            "run",
            "eval",
            "--checkpoint",
            run,
            "--checkpoint",
            other,
            "--method",
            "all",
            "--nproc",
            nproc,
            *common(
                data, "-o", tmp_path / f"{nproc}.json", "--posteriors", tmp_path / f"{nproc}.npz"
            ),
        ]
        if nproc == 1:
            assert cli(*args)[0] == 0
        else:  # torchrun's launcher, two worker processes on loopback
            result = vggspec_cmd(*args)
            assert result.returncode == 0, result.stderr[-3000:]
        outputs[nproc] = json.loads((tmp_path / f"{nproc}.json").read_text())
    one, two = outputs[1], outputs[2]
    assert two["processes"] == 2 and one["images"] == two["images"] == 15
    keys = ("method", "scales", "top1_error", "top5_error", "images")
    assert [[r[k] for k in keys] for r in one["results"]] == [
        [r[k] for k in keys] for r in two["results"]
    ]
    a, b = np.load(tmp_path / "1.npz"), np.load(tmp_path / "2.npz")
    assert a.files == b.files and len(a.files) == 5 + 4
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])  # bit for bit, here


def test_features_on_two_processes_equal_one(setup, tmp_path, cli):
    _, data, run, _ = setup
    args = ["run", "features", "--checkpoint", run, *common(data, "--classifier", "ridge")]
    assert cli(*args, "--out", tmp_path / "one")[0] == 0
    result = vggspec_cmd(*args, "--out", tmp_path / "two", "--nproc", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    # Both ranks' images (8 + 7), gathered on rank 0 in the folder's order.
    for name in ("val.npy", "val_labels.npy", "train.npy", "train_labels.npy"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        )
    for name in ("val_files.txt", "train_files.txt"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    assert len((tmp_path / "two" / "val_files.txt").read_text().splitlines()) == 15
    one, two = (json.loads((tmp_path / r / "features.json").read_text()) for r in ("one", "two"))
    assert one["classifier"] == two["classifier"]


def test_features_and_a_linear_classifier(setup, cli, tmp_path):
    _, data, run, other = setup
    out = tmp_path / "features"
    code, stdout, err = cli(
        "run",
        "features",
        "--checkpoint",
        run,
        *common(data, "--out", out, "--classifier", "ridge", "--json"),
    )
    assert code == 0, err
    summary = json.loads(stdout)
    val = np.load(out / "val.npy")
    assert val.shape == (15, 32 * 3)  # FC-32 penultimate, 3 scales stacked
    np.testing.assert_allclose(np.linalg.norm(val, axis=1), 1, rtol=1e-5)
    assert len((out / "val_files.txt").read_text().splitlines()) == 15
    assert np.load(out / "train_labels.npy").tolist() == sorted(list(range(6)) * 3)
    classifier = summary["classifier"]
    assert classifier["classifier"] == "ridge" and classifier["train_accuracy"] > 0.5  # chance 1/6
    # The classifier saw the features the files hold, with their labels, in the same order.
    split = {
        s: (np.load(out / f"{s}.npy"), np.load(out / f"{s}_labels.npy")) for s in ("train", "val")
    }
    assert classifier == fit_and_score("ridge", *split["train"], *split["val"], 6, 1.0)
    assert round(classifier["test_accuracy"] * 15, 9) % 1 == 0  # a count of the 15 images
    code, stdout, _ = cli(
        "run",
        "features",
        "--checkpoint",
        run,
        "--checkpoint",
        other,
        *common(data, "--out", out, "--aggregate", "pool"),
    )
    assert code == 0 and np.load(out / "val.npy").shape == (15, 64)
    code, _, err = cli(
        "run",
        "features",
        "--checkpoint",
        run,
        *common(data, "--out", out, "--classifier", "ridge", "--train-split", "nope"),
    )
    assert code == 2 and "needs a nope/ folder" in err
    # Fitted on the images it is scored on (it said 98.0 %), and the classifier's settings
    # without a classifier: refused, nothing written.
    for extra, says in (
        (["--classifier", "ridge", "--train-split", "val"], "--train-split val is the --split"),
        (["--train-split", "train2"], "--train-split and --reg are the classifier's"),
        (["--reg", "5"], "--train-split and --reg are the classifier's"),
    ):
        new = tmp_path / "refused"
        code, _, err = cli(
            "run", "features", "--checkpoint", run, *common(data, "--out", new, *extra)
        )
        assert code == 2 and says in err and len(err.splitlines()) == 1, err
        assert not new.exists()
    (tmp_path / "a-file").write_text("")
    code, _, err = cli(
        "run", "features", "--checkpoint", run, *common(data, "--out", tmp_path / "a-file")
    )
    assert code == 2 and "exists and is not a folder" in err


def test_features_of_a_named_layer(setup, cli, tmp_path):
    _, data, run, _ = setup
    out = tmp_path / "features"
    args = ("run", "features", "--checkpoint", run, "--scales", "40")
    code, stdout, err = cli(*args, *common(data, "--out", out, "--layer", "relu2_1", "--json"))
    assert code == 0, err
    assert json.loads(stdout)["layer"] == "relu2_1"
    assert np.load(out / "val.npy").shape == (15, 16)  # conv3-16's channels, one scale
    code, _, err = cli(*args, *common(data, "--out", out, "--layer", "relu9_9"))
    assert code == 2 and "--layer relu9_9: no layer named 'relu9_9'" in err
    assert "conv1_1, relu1_1, pool1, conv2_1, relu2_1, pool2, fc3" in err


def test_corrupt_files_are_counted_and_reported(tmp_path, cli):
    from corrupt_fixture import make_corrupt_fixture

    expected = make_corrupt_fixture(tmp_path / "data", good_per_class=1, val_per_class=4)
    net = save_net(
        tmp_path / "m.safetensors",
        SPEC_32.replace("FC-6", "FC-2"),
        0,
        classes=["class_a", "class_b"],
    )
    code, out, err = cli("run", "eval", "--checkpoint", net, *common(tmp_path / "data", "--json"))
    assert code == 0, err
    report = json.loads(out)
    bad = [
        p for p, outcome in expected.items() if p.startswith("val/") and outcome.startswith("bad")
    ]
    assert [b["path"] for b in report["bad_files"]] == [str(tmp_path / "data" / p) for p in bad]
    assert report["unreadable"] == len(bad) == 1 and report["images"] == 8 + 1  # + the CMYK one
    assert "skipped 1: 1 truncated" in err and "converted to RGB: 1 cmyk" in err
    (tmp_path / "data" / "val" / "class_b" / "bad2.jpg").write_bytes(b"junk")
    code, _, err = cli(
        "run", "eval", "--checkpoint", net, *common(tmp_path / "data"), "--max-bad-files", "0.1"
    )
    assert code == 2 and "2 of 11 image files" in err and "Traceback" not in err


def test_data_defaults_to_what_the_run_trained_on(setup, cli, tmp_path, monkeypatch):
    _, data, run, _ = setup
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    (run_dir / "config.yaml").write_text(f"spec: x.vgg\ndata: {data}\nseed: 0\n")
    code, out, err = cli("run", "eval", "--checkpoint", run_dir, "--workers", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["data"] == str(data)
    (run_dir / "config.yaml").write_text("spec: x.vgg\ndata: null\nseed: 0\n")
    monkeypatch.setenv("VGGSPEC_DEMO_DATA", str(data))  # where the demo data was written
    code, out, _ = cli("run", "eval", "--checkpoint", run_dir, "--workers", "0", "--json")
    assert code == 0 and json.loads(out)["images"] == 15


def test_data_of_a_run_is_its_recorded_one(setup, cli, tmp_path):
    """The run's data came from config.yaml: `seed: 0` edited to `seed: 1` evaluated
    another demo data set (4.2 % instead of 5.6 %), a garbled file said "say which
    images". They come from settings.json, as for --resume; an edit is refused."""
    import shutil

    from vggspec.runtime.io.rundir import RunDir
    from vggspec.runtime.train.config import make_config
    from vggspec.runtime.train.settings import record

    root, data, run, _ = setup
    other = shutil.copytree(data, tmp_path / "other")
    shutil.rmtree(other / "val" / "a")  # 12 images, not 15
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    shutil.copy(run / "model.safetensors", run_dir.model)
    spec = root / "net1.vgg"
    cfg = make_config({"spec": str(spec), "data": str(data), "out": str(run_dir.path)})
    record(cfg, vggspec.load_spec(spec), run_dir)
    args = ["run", "eval", "--checkpoint", run_dir.path, "--workers", "0", "--json"]
    code, out, err = cli(*args)
    assert code == 0 and json.loads(out)["images"] == 15, err
    written = run_dir.config.read_text()
    moved = written.replace(f"data: {data}", f"data: {other}")
    for edited, said in ((written + ": : [", "not valid YAML"), (moved, "started: data")):
        run_dir.config.write_text(edited)
        code, out, err = cli(*args)
        assert code == 2 and out == "", err
        assert len(err.strip().splitlines()) == 1 and "config.yaml" in err and said in err, err
    code, _, err = cli("run", "features", "--checkpoint", run_dir.path, "--out", tmp_path / "f")
    assert code == 2 and "edited after the run started: data" in err, err


def test_a_run_that_has_not_finished_is_said_to_be_one(setup, cli, tmp_path):
    """`run eval --checkpoint RUN` on a run still training (no model.safetensors yet)
    evaluated its checkpoints/last.pt without a word: 74.0 % mid-run, read as the net's."""
    from vggspec.runtime.io.checkpoint import save_checkpoint

    _, data, run, _ = setup
    net = vggspec.load(run / "model.safetensors", backend="torch")
    run_dir = tmp_path / "run"
    state = {
        "format": "vggspec-checkpoint/1",
        "model": net.state_dict(),
        "spec": net.spec_text(),
        "preprocess": vggspec.model_info(run / "model.safetensors").to_metadata(),
        "config": {"spec": "specs/net1.vgg"},
        "position": {"step": 7, "epoch": 0, "step_in_epoch": 7},
    }
    save_checkpoint(state, run_dir / "checkpoints" / "last.pt")
    (run_dir / "config.yaml").write_text(f"spec: x.vgg\ndata: {data}\nseed: 0\n")
    said = f"vggspec: warning: {run_dir} has no model.safetensors (the run has not finished)"
    said += f": its last checkpoint, {run_dir}/checkpoints/last.pt (step 7), is used"
    for command in (["eval"], ["features", "--out", tmp_path / "f"]):
        code, _, err = cli("run", *command, "--checkpoint", run_dir, "--workers", "0")
        assert code == 0 and err.splitlines().count(said) == 1, err
    code, _, err = cli("run", "eval", "--checkpoint", run_dir / "checkpoints" / "last.pt")
    assert code == 0 and "warning" not in err, err  # asked for by name
    (run_dir / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    code, _, err = cli("run", "eval", "--checkpoint", run_dir, "--workers", "0")
    assert code == 0 and "warning" not in err, err


def test_zero_threads_is_refused_not_taken_for_the_default(setup, cli):
    _, data, run, _ = setup
    code, _, err = cli("run", "eval", "--checkpoint", run, "--data", data, "--threads", "0")
    assert code == 2 and err == "vggspec: error: --nproc, --batch and --threads must be ≥ 1, " \
        "--workers ≥ 0\n", err  # fmt: skip


def test_a_folder_without_images_is_one_line_before_any_worker(setup, cli, tmp_path, monkeypatch):
    # Each worker said it, between torchrun's banner and its report: 7 lines.
    from vggspec.runtime.eval import run as run_module

    _, _, run, _ = setup
    (tmp_path / "empty" / "val" / "a").mkdir(parents=True)
    monkeypatch.setattr(run_module, "relaunch", lambda *a, **k: pytest.fail("workers started"))
    for command in (["eval"], ["features", "--out", str(tmp_path / "f")]):
        code, _, err = cli(
            "run", *command, "--checkpoint", run, "--data", tmp_path / "empty", "--nproc", "2"
        )
        assert code == 2 and err == f"no image files under {tmp_path / 'empty' / 'val'} " \
            "(expected val/<class>/<image>)\n", err  # fmt: skip


def test_the_command_line_takes_its_defaults_from_the_requests(monkeypatch):
    from vggspec.runtime.eval.requests import EvalRequest, FeaturesRequest, ImagesRequest

    from vggspec.cli import build_parser

    changed = {
        (ImagesRequest, "split"): "test",
        (ImagesRequest, "max_bad_files"): 0.25,
        (ImagesRequest, "max_aspect"): 2.5,
        (ImagesRequest, "batch"): 7,
        (ImagesRequest, "workers"): 3,
        (EvalRequest, "grid"): 4,
        (FeaturesRequest, "train_split"): "fit",
        (FeaturesRequest, "reg"): 0.5,
    }
    for (request, name), value in changed.items():
        monkeypatch.setattr(request, name, value)
    common = ["--checkpoint", "r", "--data", "d"]
    eval_args = build_parser().parse_args(["run", "eval", *common])
    features_args = build_parser().parse_args(["run", "features", *common, "--out", "o"])
    for (request, name), value in changed.items():
        args = features_args if request is FeaturesRequest else eval_args
        assert getattr(args, name) == value, name
        if request is ImagesRequest:
            assert getattr(features_args, name) == value, name


def test_help_does_not_import_torch():
    # the parser imports the requests for its defaults; they must stay torch-free
    code = (
        "import sys; from vggspec.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_checkpoint_checked_against_its_own_spec_is_evaluated(setup, cli, tmp_path):
    """`--checkpoint RUN --spec SPEC` ended in a traceback (the spec was zipped with the
    weights files, of which there were none); a spec with an error said "another spec"."""
    root, data, run, _ = setup
    code, out, err = cli("run", "eval", "--checkpoint", run, "--spec", root / "net1.vgg",
                         *common(data, "--json"))  # fmt: skip
    assert code == 0, err
    code, plain, _ = cli("run", "eval", "--checkpoint", run, *common(data, "--json"))
    assert json.loads(out)["results"] == json.loads(plain)["results"]
    bad = tmp_path / "bad.vgg"
    bad.write_text("input 32x32 RGB\nconv3-8 FC-10 conv3-8 soft-max\n")
    code, _, err = cli("run", "eval", "--checkpoint", run, "--spec", bad, *common(data))
    assert code == 2 and f"{bad}:2:15: error: conv1_2" in err and "Traceback" not in err
