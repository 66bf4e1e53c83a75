"""`vggspec run eval --protocol centre|dense`: localisation's two test protocols end to end.

Nets whose weights are all zero output their last bias whatever the image: a box net with the
ground-truth boxes in its bias is a perfect regressor, a classifier a fixed class ranking.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_helpers import CLASSES, MEAN, SPEC_32, write_images
from helpers import vggspec_cmd
from vggspec.runtime.data import boxes as bx
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.eval.classify.evaluate import single_process
from vggspec.runtime.eval.localise.net_boxes import aligned_scores, map_boxes
from vggspec.runtime.eval.localise.passes import centre_boxes, dense_guesses
from vggspec.runtime.eval.requests import ImagesRequest, LocRequest, NetsRequest
from vggspec.runtime.eval.scale_passes import PassSettings

import vggspec

BODY = "input 32x32 RGB\nconv3-8 maxpool\nconv3-16 maxpool\nFC-32 FC-32 "
PCR = BODY + f"FC-{4 * len(CLASSES)} box\n"
SCR = BODY + "FC-4 box\n"
# Ground-truth boxes of the 32 × 32 images of classes a and f, symmetric about x = 16 so
# that the mirror image has the same box.
BOX_A = (8.0, 4.0, 24.0, 20.0)
BOX_F = (4.0, 10.0, 28.0, 30.0)


def _jobs():
    """runtime/eval/localise/job.py, imported when a test runs, not at collection: test_bad_files
    patches scan_image_folder before the first import of the job binds it."""
    from vggspec.runtime.eval.localise import job as jobs

    return jobs


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _save(path, spec_text, bias=None, *, seed=0, classes=tuple(CLASSES), zero=True):
    """A net of `spec_text` as written (classes=None: saved without class names)."""
    spec = path.with_suffix(".vgg")
    spec.write_text(spec_text)
    torch.manual_seed(seed)
    net = vggspec.build_net(spec, backend="torch")
    if zero:
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
    if bias is not None:
        last = [m for m in net.modules() if hasattr(m, "bias")][-1]
        with torch.no_grad():
            last.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    info = vggspec.ModelInfo(
        vggspec.Preprocessing.trained(MEAN), classes, vggspec.TrainScale(32, 32)
    )
    vggspec.save(net, path, info)
    return path


def _pcr_bias(boxes_by_class, crop=(32, 32), order=CLASSES):
    bias = np.zeros(4 * len(order))
    for c, box in boxes_by_class.items():
        i = order.index(c)
        bias[4 * i : 4 * i + 4] = bx.encode(box, crop)[0]
    return bias


def _ranking(first: list[str]) -> list[float]:
    """A classifier bias ranking `first` best, then the others in order."""
    order = first + [c for c in CLASSES if c not in first]
    return [float(len(CLASSES) - order.index(c)) for c in CLASSES]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("loc")
    data = write_images(root / "data", {"a": [(32, 32)] * 3, "f": [(32, 32)] * 2})
    write_images(data, {"f": [(32, 32)] * 2}, split="only_f")
    table = {
        f"{c}/{k:03d}.png": [{"class": c, "box": list(b)}]
        for c, b in (("a", BOX_A), ("f", BOX_F))
        for k in range(3)
    }
    (root / "boxes.json").write_text(json.dumps(table))
    nets = {
        "perfect": _save(root / "perfect.safetensors", PCR, _pcr_bias({"a": BOX_A, "f": BOX_F})),
        # Its classes in another order: its box rows follow its names.
        "reordered": _save(
            root / "reordered.safetensors",
            PCR,
            _pcr_bias({"a": BOX_A, "f": BOX_F}, order=CLASSES[::-1]),
            classes=tuple(CLASSES[::-1]),
        ),
        # The same boxes moved 2 px right: close enough to merge with the perfect ones. No
        # class names: its rows are taken in the classifier's order.
        "shifted": _save(
            root / "shifted.safetensors",
            PCR,
            _pcr_bias({"a": bx.translate(BOX_A, 2, 0)[0], "f": bx.translate(BOX_F, 2, 0)[0]}),
            classes=None,
        ),
        "scr": _save(root / "scr.safetensors", SCR, bx.encode(BOX_F, (32, 32))[0]),
        "random": _save(root / "random.safetensors", PCR, seed=3, zero=False),
        # Top-5 holds a and f / leaves f out.
        "right": _save(root / "right.safetensors", SPEC_32, _ranking(["f", "b", "a"])),
        "wrong": _save(root / "wrong.safetensors", SPEC_32, _ranking(["a", "b", "c", "d", "e"])),
    }
    return root, data, {k: str(v) for k, v in nets.items()}


def _cli_args(setup, *extra):
    root, data, _ = setup
    return ["--data", data, "--boxes", root / "boxes.json", "--workers", "0", "--threads", "1",
            *extra]  # fmt: skip


def _json(cli, *args):
    code, out, err = cli("run", "eval", *args, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert list(report) == ["results"]
    for r in report["results"]:
        assert list(r) == ["protocol", "scales", "loc_error", "images"]
    return report["results"]


def test_perfect_regressor_right_classifier_0_percent_every_class_wrong_100(setup, cli):
    _, _, nets = setup
    both = ["--checkpoint", nets["perfect"], "--protocol", "both", "--scales", "32"]
    right = _json(cli, *both, "--classifier", nets["right"], *_cli_args(setup))
    assert right == [
        {"protocol": "centre", "scales": [32], "loc_error": 0.0, "images": 5},
        {"protocol": "dense", "scales": [32], "loc_error": 0.0, "images": 5},
    ]
    # The classifier leaves out f, the one class of the only_f split: every image is wrong;
    # protocol 1 takes the ground-truth class and does not ask the classifier.
    wrong = _json(cli, *both, "--classifier", nets["wrong"], *_cli_args(setup, "--split", "only_f"))
    assert [(r["protocol"], r["loc_error"], r["images"]) for r in wrong] == [
        ("centre", 0.0, 2),
        ("dense", 1.0, 2),
    ]
    # Box rows are found by class name.
    reordered = ["--checkpoint", nets["reordered"], "--classifier", nets["right"]]
    results = _json(cli, *reordered, "--protocol", "both", "--scales", "32", *_cli_args(setup))
    assert [r["loc_error"] for r in results] == [0.0, 0.0]
    # A single-class regressor (one box for every class) that knows f's box.
    scr = ["--checkpoint", nets["scr"], "--classifier", nets["right"], "--protocol", "both"]
    results = _json(cli, *scr, "--scales", "32", *_cli_args(setup, "--split", "only_f"))
    assert [r["loc_error"] for r in results] == [0.0, 0.0]


def test_table_names_the_protocols_and_the_regression(setup, cli):
    _, _, nets = setup
    args = ["--checkpoint", nets["perfect"], "--classifier", nets["right"], "--protocol", "both"]
    code, out, err = cli("run", "eval", *args, "--scales", "32", *_cli_args(setup))
    assert code == 0, err
    lines = out.splitlines()
    header = "config  regression  train S  test Q  protocol  loc err"
    assert lines[0].split() == header.split()
    assert "PCR" in lines[2] and "central crop, GT class" in lines[2] and "0.0 %" in lines[2]
    assert "dense, top-5 classes" in lines[3]
    assert lines[-1].startswith("5 images with a box, top-5 classes from right")


def test_output_is_refused_while_another_writer_holds_its_folder(setup, cli, tmp_path):
    # As classification's -o (tests/test_lock.py): one writer per folder, nothing written.
    from vggspec.runtime.io.lock import FolderLock

    _, _, nets = setup
    out = tmp_path / "busy"
    args = ["--checkpoint", nets["perfect"], "--protocol", "centre", "--scales", "32"]
    with FolderLock(out, "run train"):
        before = sorted(p.name for p in out.iterdir())
        code, _, err = cli("run", "eval", *args, *_cli_args(setup), "-o", out / "loc.json")
        assert code == 2, err
        assert "in use by another writer (`vggspec run train`" in err
        assert len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in out.iterdir()) == before  # no loc.json
    code, _, err = cli("run", "eval", *args, *_cli_args(setup), "-o", out / "loc.json")
    assert code == 0, err
    assert json.loads((out / "loc.json").read_text())["results"][0]["loc_error"] == 0.0
    assert not (out / ".loc.json.lock").exists() and not (out / ".vggspec.lock").exists()


def _request(setup, checkpoints, classifier="right", protocol="dense", **images):
    root, data, nets = setup
    return LocRequest(
        NetsRequest(checkpoints=[nets[c] for c in checkpoints], scales=[32], backend="torch"),
        ImagesRequest(data=str(data), flip=False, workers=0, **images),
        protocol=protocol,
        classifier=nets[classifier],
        boxes=str(root / "boxes.json"),
    )


def test_union_of_two_nets_merges_their_boxes(setup, cli):
    """Each image gets one box per net at Q = crop; the two are close, so the class's box is
    their mean: the union was taken before merging."""
    request = _request(setup, ["perfect", "shifted"])
    nets, classifier = _jobs().load_localisation_nets(request, "cpu")
    boxed = _jobs().localisation_images(request, classifier.class_names)
    folder, gt = boxed.folder, boxed.boxes
    rows = [list(range(len(CLASSES)))] * 2
    top = np.array([[CLASSES.index(c) for c in ("f", "b", "a", "c", "d")]] * len(folder))
    settings = PassSettings(flip=False, max_images=8, max_pixels=10**6, workers=0, max_aspect=3.0)
    guesses, readable = dense_guesses(
        nets, rows, classifier, top, folder, range(len(folder)), settings, "cpu"
    )
    assert readable.all()
    for k, (_, label) in enumerate(folder.samples):
        box = dict(guesses[k])[label]
        expected = bx.translate(gt[k], 1, 0)[0]  # the mean of the GT box and it + 2 px
        np.testing.assert_allclose(box, expected, atol=1e-5)
    # Fused from the command line, the two nets still localise every image.
    _, _, paths = setup
    fused = ["--checkpoint", paths["perfect"], "--checkpoint", paths["shifted"]]
    results = _json(cli, *fused, "--classifier", paths["right"], "--scales", "32",
                    *_cli_args(setup))  # fmt: skip
    assert results == [{"protocol": "dense", "scales": [32], "loc_error": 0.0, "images": 5}]


def test_dense_at_q_equal_to_the_crop_gives_the_central_crop_box(setup):
    """FC→conv for boxes: a square image at Q = crop size is one map position, the central
    crop; a net with random weights gives the same box both ways."""
    request = _request(setup, ["random"])
    (net,), classifier = _jobs().load_localisation_nets(request, "cpu")
    folder = _jobs().localisation_images(request, classifier.class_names).folder
    local = range(len(folder))
    rows = list(range(len(CLASSES)))
    settings = PassSettings(flip=False, max_images=4, max_pixels=10**6, workers=0, max_aspect=3.0)
    centre, ok = centre_boxes(net, rows, folder, local, 32, settings, "cpu")
    top = np.array([[0, 1, 2, 3, 5]] * len(folder))  # a and f among them
    guesses, _ = dense_guesses([net], [rows], classifier, top, folder, local, settings, "cpu")
    assert ok.all()
    assert len({tuple(np.round(b, 4)) for b in centre}) == len(folder)  # one box per image
    for k, (_, label) in enumerate(folder.samples):
        np.testing.assert_allclose(dict(guesses[k])[label], centre[k], rtol=1e-5, atol=1e-4)


def test_scores_are_taken_at_the_nearest_classifier_window():
    # A classifier with 16-px windows every 8 px (3 × 4 map) rating a box net's 32-px
    # windows every 16 px (2 × 2 map): window centres 16, 32 → classifier positions 1, 3
    # (centres 8 + 8j), clipped to the map.
    score_map = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    out = aligned_scores(score_map, 8, (16, 16), (2, 2), 16, (32, 32))
    assert out.shape == (2, 4)
    assert out[0].tolist() == [score_map[0, 1, 1], score_map[0, 1, 3], score_map[0, 2, 1],
                               score_map[0, 2, 3]]  # fmt: skip
    same = aligned_scores(score_map, 8, (16, 16), (3, 4), 8, (16, 16))
    assert same.tolist() == score_map.reshape(2, -1).tolist()


def test_a_capped_image_is_placed_back_in_the_whole_one():
    # A 30 × 10 stored image at Q = 10 is 30 × 10; capped at aspect 2 the net sees its
    # central 20 × 10, 5 px in; one 10 × 10 window (stride 10) of a 2-class PCR map, row 1.
    box_map = np.zeros((8, 1, 2))
    box_map[4:, 0, 1] = [0.5, 0.5, 1.0, 1.0]  # class 1, window 1: the whole window
    out = map_boxes(box_map, [1], (10, 10), 10, (20, 10), (30, 10), (60, 20))
    # Window 1 is [10, 20] of the shown image, [15, 25] of the rescaled one, × 2 stored.
    assert out.shape == (1, 2, 4)
    assert out[0, 1].tolist() == [30, 0, 50, 20]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "CLS", "--classifier", "CLS"], "is a classification net (no box head)"),
        (["--checkpoint", "LOC", "--classifier", "LOC"], "is a localisation net (box head)"),
        (["--checkpoint", "LOC", "--protocol", "dense"], "give --classifier CLS_RUN"),
        (["--checkpoint", "LOC", "--checkpoint", "LOC", "--protocol", "centre"], "one loc"),
        (["--checkpoint", "NARROW", "--classifier", "CLS"], "a box head of 20 outputs for 6"),
        (["--checkpoint", "LOC", "--protocol", "centre", "--boxes", "NOWHERE"], "no such file"),
        (["--checkpoint", "LOC", "--classifier", "CLS", "--boxes", "EMPTY"], "5 without one"),
        (["--checkpoint", "LOC", "--classifier", "CLS", "NO_BOXES"], "no box annotations at"),
        (["--checkpoint", "LOC", "--classifier", "CLS", "--boxes", "NONE"], "no image has a box"),
        (["--checkpoint", "LOC", "NO_BOXES"], "is a localisation net (box head): evaluate it"),
        (["--checkpoint", "LOC", "--protocol", "centre", "--method", "both"], "--grid and"),
    ],
)  # fmt: skip
def test_mistakes_are_one_message_and_exit_2(setup, cli, tmp_path, args, message):
    root, data, nets = setup
    narrow = tmp_path / "narrow.safetensors"
    _save(narrow, BODY + "FC-20 box\n", classes=None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "none.json").write_text(json.dumps({"a/000.png": []}))
    replace = {
        "CLS": nets["right"],
        "LOC": nets["perfect"],
        "NARROW": str(narrow),
        "NOWHERE": str(tmp_path / "nowhere.json"),
        "EMPTY": str(tmp_path / "empty"),
        "NONE": str(tmp_path / "none.json"),
    }
    boxes = [] if {"--boxes", "NO_BOXES"} & set(args) else ["--boxes", str(root / "boxes.json")]
    args = [replace.get(a, a) for a in args if a != "NO_BOXES"]
    code, _, err = cli("run", "eval", *args, "--data", data, *boxes, "--workers", "0")
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_run_localisation_counts_images_without_a_box(setup, tmp_path):
    root = setup[0]
    table = json.loads((root / "boxes.json").read_text())
    del table["a/000.png"]
    (tmp_path / "fewer.json").write_text(json.dumps(table))
    request = _request(setup, ["perfect"], protocol="centre")
    request.boxes = str(tmp_path / "fewer.json")
    heard = []
    report = _jobs().run_localisation(request, single_process(), heard.append)
    assert report["results"] == [
        {"protocol": "centre", "scales": [32], "loc_error": 0.0, "images": 4}
    ]
    assert report["without_box"] == 1
    assert any("4 of 5 images have a box" in line for line in heard)


def test_data_and_boxes_default_to_what_the_run_trained_on(setup, cli, tmp_path):
    root, data, _ = setup
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes((root / "perfect.safetensors").read_bytes())
    config = {"data": str(data), "boxes": str(root / "boxes.json").replace("boxes", "{split}")}
    (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    (root / "val.json").write_text((root / "boxes.json").read_text())
    args = ["--checkpoint", run, "--protocol", "centre"]
    results = _json(cli, *args, "--scales", "32", "--workers", "0")
    assert results == [{"protocol": "centre", "scales": [32], "loc_error": 0.0, "images": 5}]


def _mixed(setup, *extra):
    """The classifier that leaves out f on the split of 3 a's and 2 f's: 2 of 5 wrong."""
    _, _, nets = setup
    args = ["--checkpoint", nets["perfect"], "--classifier", nets["wrong"], "--protocol", "both"]
    return [*args, "--scales", "32", *_cli_args(setup, *extra)]


def test_errors_count_every_image_of_the_split(setup, cli):
    results = _json(cli, *_mixed(setup))
    assert [(r["protocol"], r["loc_error"], r["images"]) for r in results] == [
        ("centre", 0.0, 5),
        ("dense", 0.4, 5),
    ]


@pytest.mark.slow  # two worker processes; the one-process sibling is the test above
def test_two_processes_equal_one(setup, cli, tmp_path):
    args = ["run", "eval", *_mixed(setup, "-o", tmp_path / "two.json", "--nproc", "2")]
    result = vggspec_cmd(*[str(a) for a in args])
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["results"] == _json(cli, *_mixed(setup))


def test_protocol_1_is_the_error_training_validates_with(tmp_path, cli):
    """The trainer's validation of a box head (protocol 1 at the run's S) and `run eval
    --protocol centre` agree on a net right for some images only: one central box per
    class, on the boxed demo data."""
    make_demo_dataset(tmp_path / "data", seed=3, train_per_class=1, val_per_class=4, boxes=True)
    spec = tmp_path / "pcr.vgg"
    spec.write_text(BODY + "FC-40 box\n")
    net = vggspec.build_net(spec, backend="torch")
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.fc5.bias.copy_(torch.tensor([0.5, 0.5, 0.8, 0.8] * 10))
    vggspec.save(net, tmp_path / "start.safetensors")
    settings = [f"spec={spec}", f"data={tmp_path / 'data'}", f"out={tmp_path / 'run'}"]
    settings += [f"finetune={tmp_path / 'start.safetensors'}", "lr=1e-30", "max_steps=1"]
    settings += ["batch_size=4", "scale=40", "workers=0", "dropout=0", "normalise=mean-std"]
    code, _, err = cli("run", "train", *settings)
    assert code == 0, err
    trained = json.loads((tmp_path / "run" / "summary.json").read_text())["val_loc_error"]
    assert 0 < trained < 1  # right for some images, not all
    results = _json(cli, "--checkpoint", tmp_path / "run", "--protocol", "centre", "--workers", "0")
    assert results == [{"protocol": "centre", "scales": [40], "loc_error": trained, "images": 40}]


def _dense_guesses(setup, checkpoints, scales, **options):
    """Protocol 2's guesses for the setup's images: classes f, b, a, c, d on top."""
    request = _request(setup, checkpoints)
    nets, classifier = _jobs().load_localisation_nets(request, "cpu")
    for net in nets:
        net.scales = scales
    folder = _jobs().localisation_images(request, classifier.class_names).folder
    rows = [list(range(len(CLASSES)))] * len(nets)
    top = np.array([[CLASSES.index(c) for c in ("f", "b", "a", "c", "d")]] * len(folder))
    settings = PassSettings(flip=True, max_images=2, max_pixels=10**6, workers=0, max_aspect=3.0)
    guesses, _ = dense_guesses(
        nets, rows, classifier, top, folder, range(len(folder)), settings, "cpu", **options
    )
    return guesses


def test_merging_in_a_worker_thread_gives_the_same_guesses_to_the_bit(setup):
    """Two nets, three scales, flips, batches of two: merges of finished images run while
    later batches go through the nets, and every guess is the in-line one exactly."""
    inline = _dense_guesses(setup, ["shifted", "random"], [32, 48, 64], overlap=False)
    overlapped = _dense_guesses(setup, ["shifted", "random"], [32, 48, 64], overlap=True)
    assert overlapped == inline
    assert all(len(g) == 5 for g in inline)  # every class got a box


def test_a_merge_that_fails_is_an_error_naming_the_image(setup, monkeypatch):
    from vggspec.runtime.eval.localise import passes as localise
    from vggspec.runtime.eval.localise.merge_worker import MergeFailed

    def broken(top_classes, predictions):
        raise ValueError("no boxes today")

    monkeypatch.setattr(localise, "_merge", broken)
    for overlap in (True, False):
        with pytest.raises(MergeFailed, match=r"boxes of \S+/a/000\.png failed: ValueError: no"):
            _dense_guesses(setup, ["perfect"], [32], overlap=overlap)


def test_a_merge_that_does_not_end_is_an_error_not_a_hang(setup, monkeypatch):
    import threading
    import time

    from vggspec.runtime.eval.localise import merge_worker as localisation_merges
    from vggspec.runtime.eval.localise import passes as localise

    release = threading.Event()
    monkeypatch.setattr(localise, "_merge", lambda top_classes, predictions: release.wait(60))
    monkeypatch.setattr(localisation_merges, "MERGE_TIMEOUT_S", 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(localisation_merges.MergeFailed, match=r"did not finish in 0\.5 s"):
            _dense_guesses(setup, ["perfect"], [32])
    finally:
        release.set()
    assert time.monotonic() - started < 30


def test_features_of_a_localisation_net_are_refused_in_features_words(setup, cli, tmp_path):
    # It said "evaluate it with --protocol …", an option `run features` does not have.
    _, data, nets = setup
    out = tmp_path / "f"
    code, _, err = cli("run", "features", "--checkpoint", nets["perfect"], "--data", data,
                       "--out", out, "--workers", "0")  # fmt: skip
    assert code == 2 and "features are taken from classification nets" in err, err
    assert "--protocol" not in err
