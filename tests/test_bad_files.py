"""Bad data and bad files: decompression bombs, images that vanish after the scan, symlink
loops in the data folder, checkpoints that hold pickled objects."""

from __future__ import annotations

import collections
import json
import logging
import os
import zlib

import pytest
import torch
from corrupt_fixture import _png_bytes, _png_chunk
from eval_helpers import SPEC_32, save_net, write_images
from PIL import Image
from vggspec.runtime.data import image_folder as image_folder_module
from vggspec.runtime.data.demo import make_demo_dataset
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.data.image_io import MAX_SOURCE_PIXELS, UnreadableImage, load_rgb
from vggspec.runtime.eval import prepare as eval_prepare_module
from vggspec.runtime.eval.images import ScaledImages
from vggspec.runtime.eval.localise import job as localise_job_module
from vggspec.runtime.io.checkpoint import FORMAT, CheckpointError, load_checkpoint


def _tree(root, n=3, size=(20, 20)):
    folder = root / "train" / "cls"
    folder.mkdir(parents=True)
    for k in range(n):
        Image.new("RGB", size, (k, 2 * k, 3 * k)).save(folder / f"{k}.png")
    return folder


# -- decompression bombs -------------------------------------------------------------------


def _ztxt_bomb() -> bytes:
    """A 1×1 PNG whose zTXt chunk inflates to 64 MB (Pillow caps text chunks at 1 MB)."""
    png = _png_bytes(1, 1, 8, 2, b"\x00\x00\x00\x00")
    text = b"comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)
    return png[:33] + _png_chunk(b"zTXt", text) + png[33:]


def _header_only_png(width: int, height: int) -> bytes:
    return _png_bytes(width, height, 8, 2, b"")


def test_bombs_are_bad_files_at_the_scan_and_at_load_time(tmp_path):
    folder = _tree(tmp_path, n=20)
    past_pillow = folder / "pillow_bomb.png"  # over Pillow's own hard limit (2 × its warning)
    past_pillow.write_bytes(_header_only_png(30000, 30000))
    side = int(MAX_SOURCE_PIXELS**0.5) + 1  # over vggspec's limit, under Pillow's error
    past_ours = folder / "our_bomb.png"
    past_ours.write_bytes(_header_only_png(side, side))
    text_bomb = folder / "text_bomb.png"
    text_bomb.write_bytes(_ztxt_bomb())
    report = scan_image_folder(tmp_path, "train", max_bad_fraction=0.5).report
    reasons = {os.path.basename(p): r for p, r, _ in report.bad}
    assert reasons == {
        "pillow_bomb.png": "too_large",
        "our_bomb.png": "too_large",
        "text_bomb.png": "unreadable",
    }
    # A file swapped for a bomb after the scan is refused by the loader in the same way.
    for path, reason in ((past_pillow, "too_large"), (past_ours, "too_large")):
        with pytest.raises(UnreadableImage) as info:
            load_rgb(path)
        assert info.value.reason == reason and "\n" not in str(info.value)


# -- an image that disappears between the scan and its load --------------------------------


def test_training_loader_skips_a_vanished_image_and_says_so(tmp_path, caplog):
    _tree(tmp_path)
    folder = scan_image_folder(tmp_path, "train")
    gone = folder.samples[1][0]
    os.unlink(gone)
    with caplog.at_level(logging.WARNING):
        img, label, used = folder.load(1)
    assert used == 2 and img.size == (20, 20) and label == 0
    assert f"skipping {gone} at load time: missing" in caplog.text


def test_evaluation_leaves_a_vanished_image_out_and_says_so(tmp_path, caplog):
    _tree(tmp_path)
    folder = scan_image_folder(tmp_path, "train")
    gone = folder.samples[0][0]
    os.unlink(gone)
    images = ScaledImages(folder, 24)
    with caplog.at_level(logging.WARNING):
        pixels, _, index, readable = images[0]
    assert not readable and index == 0 and pixels.shape == (3, 24, 24)
    assert images[1][3] and f"leaving out {gone}: missing" in caplog.text


def _vanishing_scan(monkeypatch, victims: list):
    """scan_image_folder that deletes the first usable image right after scanning."""
    real = image_folder_module.scan_image_folder

    def scan(*args, **kwargs):
        folder = real(*args, **kwargs)
        if not victims:
            victims.append(folder.samples[0][0])
            os.unlink(victims[0])
        return folder

    # Patched where it is defined and where evaluation imported it, so the test does not
    # depend on which module was imported first.
    monkeypatch.setattr(image_folder_module, "scan_image_folder", scan)
    monkeypatch.setattr(eval_prepare_module, "scan_image_folder", scan)
    monkeypatch.setattr(localise_job_module, "scan_image_folder", scan)
    return scan


def test_run_eval_counts_an_image_that_vanished_after_the_scan(tmp_path, cli, monkeypatch, caplog):
    data = write_images(tmp_path / "data", {c: [(40, 40)] * 2 for c in "abcdef"})
    net = save_net(tmp_path / "m.safetensors", SPEC_32, 0)
    victims: list = []
    _vanishing_scan(monkeypatch, victims)
    with caplog.at_level(logging.WARNING):
        code, out, err = cli(
            "run", "eval", "--checkpoint", net, "--data", data, "--workers", "0", "--json"
        )
    assert code == 0, err
    report = json.loads(out)
    assert report["unreadable"] == 1 and report["results"][0]["images"] == 11
    assert f"leaving out {victims[0]}: missing" in caplog.text


def test_run_train_skips_an_image_that_vanished_after_the_scan(tmp_path, cli, monkeypatch, caplog):
    make_demo_dataset(tmp_path / "data", seed=5, train_per_class=2, val_per_class=1)
    spec = tmp_path / "t.vgg"
    spec.write_text("input 32x32 RGB\nconv3-4 maxpool\nFC-8 FC-10 soft-max\n")
    victims: list = []
    monkeypatch.setattr(
        "vggspec.runtime.train.data.scan_image_folder", _vanishing_scan(monkeypatch, victims)
    )
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        code, _, err = cli(
            "run",
            "train",
            f"spec={spec}",
            f"data={tmp_path / 'data'}",
            f"out={out}",
            "batch_size=4",
            "scale=36",
            "workers=0",
            "max_steps=2",
            "init=glorot",
        )
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert f"skipping {victims[0]} at load time: missing" in caplog.text


# -- symlink loops -------------------------------------------------------------------------


def test_symlink_loops_are_reported_not_followed(tmp_path, alarm):
    folder = _tree(tmp_path)
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "loop")  # back to the class folder
    os.symlink("..", folder / "up")  # back to train/: 2 links a level, 2^40 paths before
    os.symlink("nowhere.png", folder / "dangling.png")
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    Image.new("RGB", (20, 20)).save(linked / "x.png")
    os.symlink(linked, tmp_path / "train" / "other")  # a linked class folder is followed
    result = scan_image_folder(tmp_path, "train", max_bad_fraction=0.5)
    names = sorted(os.path.relpath(p, tmp_path) for p, _ in result.samples)
    assert names == ["train/cls/0.png", "train/cls/1.png", "train/cls/2.png", "train/other/x.png"]
    report = result.report
    assert sorted(os.path.relpath(p, tmp_path) for p in report.repeated) == [
        "train/cls/sub/loop",
        "train/cls/up",
    ]
    assert [(os.path.basename(p), r) for p, r, _ in report.bad] == [("dangling.png", "missing")]
    assert "not followed: 2 symlinked folders already walked" in "\n".join(report.lines())


# -- checkpoints that hold pickled objects -------------------------------------------------


class _Plain:
    """An ordinary class: unpickling it would import this module."""


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize(
    "extra",
    [_Payload(), _Plain(), collections.Counter(a=1), {"ok": torch.zeros(1)}],
    ids=["code", "plain-class", "allowed-container", "no-payload"],
)
def test_a_checkpoint_holding_pickled_objects_is_refused_in_one_line(tmp_path, extra):
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT, "model": {}, "extra": extra}, path)
    if not isinstance(extra, _Payload | _Plain):  # what weights_only allows still loads
        assert load_checkpoint(path)["extra"] == extra
        return
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 300, message
    assert message.startswith(f"{path}: refused: it holds pickled objects")
    assert "weights_only=True" in message


def test_resume_from_a_checkpoint_holding_pickled_objects_exits_2(tmp_path, cli):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("spec: specs/demo.vgg\n")
    torch.save({"format": FORMAT, "x": _Payload()}, run / "checkpoints" / "last.pt")
    code, out, err = cli("run", "train", "--resume", run)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "refused: it holds pickled objects" in err
    assert "posix.system" in err or "os.system" in err


def test_a_fifo_or_device_among_the_images_is_a_bad_file_not_a_hang(tmp_path, alarm):
    """A FIFO nobody writes to held the scan's open() for ever (run train, run eval); a link
    to /dev/zero was read as an image. Neither is a regular file: each is skipped as such."""
    folder = _tree(tmp_path)
    os.mkfifo(folder / "fifo.jpg")
    os.symlink("/dev/zero", folder / "zero.png")
    result = scan_image_folder(tmp_path, "train", max_bad_fraction=0.5)
    assert sorted(os.path.basename(p) for p, _ in result.samples) == ["0.png", "1.png", "2.png"]
    bad = sorted((os.path.basename(p), r) for p, r, _ in result.report.bad)
    assert bad == [("fifo.jpg", "not_a_file"), ("zero.png", "not_a_file")]
    with pytest.raises(UnreadableImage, match="not a regular file"):
        load_rgb(folder / "fifo.jpg")


def test_a_checkpoint_with_a_changed_byte_is_refused_not_loaded(tmp_path, cli):
    """torch.load does not check the CRC-32 its zip records: a checkpoint with bytes changed
    on disk loaded, and --resume went on from weights nobody trained."""
    path = tmp_path / "last.pt"
    values = torch.arange(1000, dtype=torch.float32)
    torch.save({"format": FORMAT, "model": {"w": values}}, path)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(values.numpy().tobytes()) + 2001
    data[at] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: damaged: ") and "CRC-32" in message, message
    assert "\n" not in message
