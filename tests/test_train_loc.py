"""Localisation training (Appendix A): box targets, the Euclidean loss, protocol 1 during
training, init from a classification run, finetune_layers, and 2 processes = 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import vggspec_cmd
from PIL import Image
from vggspec.runtime.data import boxes as bx
from vggspec.runtime.data.annotations import read_voc_xml
from vggspec.runtime.data.box_targets import box_target, chosen_box
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.data.geometry import center_offset, resized_crop, scaled_size
from vggspec.runtime.data.image_io import load_rgb

import vggspec

BODY = "input 32x32 RGB\nconv3-8 maxpool\nconv3-16 maxpool\nFC-32 FC-32 "
BASE = ["batch_size=8", "scale=40", "workers=0", "log_every=1", "lr=0.001", "dropout=0"]
BASE += ["normalise=mean-std"]  # raw 0..255 inputs blow a few SGD steps up


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    """Boxed demo data (60 training images, 25 validation: odd on purpose), the tiny specs,
    and a short classification run on the same data to start from."""
    root = tmp_path_factory.mktemp("boxed")
    make_demo_dataset(root / "data", seed=5, train_per_class=6, val_per_class=3, boxes=True)
    for path in sorted((root / "data" / "val").rglob("*.jpg"))[25:]:
        path.unlink()
    (root / "cls.vgg").write_text(BODY + "FC-10 soft-max\n")
    (root / "pcr.vgg").write_text(BODY + "FC-40 box\n")
    (root / "scr.vgg").write_text(BODY + "FC-4 box\n")
    data = f"data={root / 'data'}"
    run = vggspec_cmd(
        "run", "train", f"spec={root / 'cls.vgg'}", data, f"out={root / 'cls'}", *BASE,
        "init=glorot", "max_steps=3",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return root


def loc_settings(root: Path, out: Path, spec: str = "pcr", *extra: str) -> list[str]:
    return [
        f"spec={root / f'{spec}.vgg'}",
        f"data={root / 'data'}",
        f"out={out}",
        f"init={root / 'cls'}",
        *BASE,
        *extra,
    ]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vggspec.load(run / "model.safetensors", backend="torch").state_dict()


# --- targets --------------------------------------------------------------------------------


def test_the_target_is_the_largest_box_after_clipping():
    crop = (10, 20)  # H, W
    boxes = [(0, 0, 4, 4), (15, 2, 30, 8), (-50, 0, -40, 5)]  # 16 px; 5×6 = 30 px inside; out
    assert chosen_box(boxes, crop).tolist() == [15, 2, 20, 8]
    # every box cut away: the largest as it is, outside the crop
    assert chosen_box([(-50, 0, -40, 5), (25, 0, 40, 10)], crop).tolist() == [25, 0, 40, 10]
    target = box_target(3, [(0, 0, 10, 5)], crop)
    assert target.dtype == torch.float32
    assert target.tolist() == [3.0, 0.25, 0.25, 0.5, 0.5]  # (cx/W, cy/H, w/W, h/H)


# --- runs -----------------------------------------------------------------------------------


def _protocol1(run: Path, data: Path) -> tuple[float, float]:
    """(GT-class error, mean best IoU) of a run's net on the central crops of data/val,
    recomputed from the images and their VOC files without the trainer's code."""
    info = vggspec.model_info(run)
    net = vggspec.load(run / "model.safetensors", backend="torch").eval()
    classes = sorted(p.name for p in (data / "train").iterdir())
    h, w = info.input_size
    s = info.train_scale.single
    wrong, ious = 0, []
    for path in sorted((data / "val").rglob("*.jpg")):
        label = classes.index(path.parent.name)
        size = Image.open(path).size
        scaled = scaled_size(size, s, at_least=(w, h))
        x0, y0 = center_offset(scaled, (h, w))
        img = load_rgb(path, scaled)  # as the data pipeline decodes (a JPEG DCT reduction)
        patch = resized_crop(img, scaled, (x0, y0), (h, w))  # = resize, then crop (±1 level)
        x = info.preprocessing.image(np.asarray(patch))[None]
        with torch.no_grad():
            out = net(x)[0].double().numpy()
        cx, cy, bw, bh = out if len(out) == 4 else out[4 * label : 4 * label + 4]
        fx, fy = scaled[0] / size[0], scaled[1] / size[1]
        pred = [
            ((cx - bw / 2) * w + x0) / fx,
            ((cy - bh / 2) * h + y0) / fy,
            ((cx + bw / 2) * w + x0) / fx,
            ((cy + bh / 2) * h + y0) / fy,
        ]
        xml = data / "annotations" / "val" / path.parent.name / (path.stem + ".xml")
        gt = read_voc_xml(xml).boxes_of(path.parent.name)
        best = float(bx.iou(pred, gt).max())
        wrong += best <= 0.5
        ious.append(best)
    return wrong / len(ious), float(np.mean(ious))


def test_pcr_run_starts_from_the_classifier_and_reports_protocol_1(boxed, tmp_path, cli):
    out = tmp_path / "loc"
    code, stdout, err = cli("run", "train", *loc_settings(boxed, out, "pcr", "max_steps=6"))
    assert code == 0, err
    assert "validation GT-class localisation error" in stdout
    summary = json.loads((out / "summary.json").read_text())
    error, mean_iou = _protocol1(out, boxed / "data")
    assert summary["val_loc_error"] == pytest.approx(error, abs=1e-9)
    assert summary["val_mean_iou"] == pytest.approx(mean_iou, rel=1e-4)
    assert summary["best_val_loc_error"] == summary["val_loc_error"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"][-1]
    assert val["images"] == 25 and val["val_loc_error"] == summary["val_loc_error"]
    log = (out / "train.log").read_text()
    assert "initialised conv1_1, conv2_1, fc3, fc4 from" in log
    assert "GT-class localisation error" in log
    # a fresh start (lr 0 does not move the weights): every layer but the last is the
    # classifier's, the last is new
    fresh = tmp_path / "fresh"
    assert (
        cli("run", "train", *loc_settings(boxed, fresh, "pcr", "max_steps=1", "lr=1e-30"))[0] == 0
    )
    mine, theirs = weights(fresh), weights(boxed / "cls")
    for name in ("conv1_1", "conv2_1", "fc3", "fc4"):
        assert torch.equal(mine[f"{name}.weight"], theirs[f"{name}.weight"]), name
    assert mine["fc5.weight"].shape == (40, 32) and theirs["fc5.weight"].shape == (10, 32)
    assert vggspec.model_info(out).class_names == vggspec.model_info(boxed / "cls").class_names


def test_finetune_fc_trains_the_fc_layers_only(boxed, tmp_path, cli):
    out = tmp_path / "fc"
    code, _, err = cli(
        "run", "train", *loc_settings(boxed, out, "scr", "max_steps=4", "finetune_layers=fc")
    )
    assert code == 0, err
    mine, theirs = weights(out), weights(boxed / "cls")
    for key in ("conv1_1.weight", "conv1_1.bias", "conv2_1.weight"):
        assert torch.equal(mine[key], theirs[key]), key
    for key in ("fc3.weight", "fc4.weight"):
        assert not torch.equal(mine[key], theirs[key]), key
    assert mine["fc5.weight"].shape == (4, 32)  # SCR: one box
    assert "training fc3, fc4, fc5 only (finetune_layers=fc)" in (out / "train.log").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["spec={root}/bad.vgg"], "the box head's FC-12 does not fit data of 10 classes"),
        (["data=null"], "regresses boxes: give data=DIR with box annotations"),
        (["finetune_layers=conv"], "finetune_layers must be one of all, fc, got 'conv'"),
        (["boxes={root}/nowhere"], "no box annotations at"),
    ],
)
def test_bad_localisation_settings_are_one_line(boxed, tmp_path, cli, extra, message):
    (boxed / "bad.vgg").write_text(BODY + "FC-12 box\n")
    extra = [e.format(root=boxed) for e in extra]
    code, _, err = cli("run", "train", *loc_settings(boxed, tmp_path / "r", "pcr", *extra))
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_two_processes_give_the_one_process_weights(boxed, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["max_steps=6", "dropout=0.5"]
    assert vggspec_cmd("run", "train", *loc_settings(boxed, one, "pcr", *common)).returncode == 0
    result = vggspec_cmd("run", "train", "--nproc", "2", *loc_settings(boxed, two, "pcr", *common))
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = weights(two), weights(one)
    assert max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in a) < 1e-5
    x, y = (json.loads((r / "summary.json").read_text()) for r in (one, two))
    assert y["processes"] == 2
    assert x["val_loc_error"] == y["val_loc_error"]  # exact validation on 25 images
    assert x["val_mean_iou"] == pytest.approx(y["val_mean_iou"], abs=1e-5)


@pytest.mark.slow  # ~20 s; the fast tier keeps resume for classification (test_train.py)
def test_resume_is_bit_identical(boxed, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["epochs=2", "checkpoint_every=4"]
    assert (
        vggspec_cmd("run", "train", *loc_settings(boxed, straight, "pcr", *common)).returncode == 0
    )
    first = vggspec_cmd("run", "train", *loc_settings(boxed, split, "pcr", *common, "max_steps=9"))
    assert first.returncode == 0
    resumed = vggspec_cmd("run", "train", "--resume", split, "max_steps=14")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(straight), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x, y = (json.loads((r / "summary.json").read_text()) for r in (straight, split))
    assert x["best_val_loc_error"] == y["best_val_loc_error"]


def test_the_recipes_hold_the_papers_settings():
    from helpers import SPECS
    from vggspec.runtime.train.config import load_config

    paper = load_config(SPECS / "loc.yaml", [])
    assert (paper.spec, paper.lr, paper.scale.as_given) == ("specs/D-loc.vgg", 0.001, 256)
    assert paper.finetune_layers == "all" and paper.dropout == 0.5
    demo = load_config(SPECS / "demo-loc.yaml", [])
    assert demo.spec == "specs/demo-loc.vgg" and isinstance(
        demo.scale.as_given, int
    )  # no jittering
