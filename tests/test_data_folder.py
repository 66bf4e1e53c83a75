"""Image folders: layout, deterministic order, odd and corrupt files, the bad-file threshold."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from corrupt_fixture import make_corrupt_fixture
from PIL import Image
from vggspec.runtime.data.augment import TrainDataset
from vggspec.runtime.data.color_stats import ColorStats
from vggspec.runtime.data.image_folder import TooManyBadFiles, scan_image_folder
from vggspec.runtime.data.image_io import DataError, UnreadableImage, load_rgb, to_rgb

STATS = ColorStats(
    (128.0, 128.0, 128.0),
    (100.0, 10.0, 1.0),
    ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    1,
    1,
)


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    expected = make_corrupt_fixture(root)
    return root, expected


def test_every_odd_file_is_converted_or_skipped_and_counted(corrupt):
    root, expected = corrupt
    folder = scan_image_folder(root, "train")
    report = folder.report
    bad = {os.path.relpath(path, root): reason for path, reason, _ in report.bad}
    expected_bad = {
        p: o[4:] for p, o in expected.items() if o.startswith("bad:") and p.startswith("train/")
    }
    assert bad == expected_bad
    assert len(expected_bad) == 5  # truncated, zero bytes, text, LFS pointer, bomb
    kinds = [
        o.split(":")[1]
        for p, o in expected.items()
        if o.startswith("converted:") and p.startswith("train/")
    ]
    for kind in set(kinds):
        assert report.converted[kind] >= kinds.count(kind), kind
    assert [os.path.relpath(p, root) for p in report.ignored] == ["train/class_a/notes.txt"]
    usable = {os.path.relpath(p, root) for p, _ in folder.samples}
    for path, outcome in expected.items():
        if path.startswith("train/") and outcome.split(":")[0] in ("ok", "converted"):
            assert path in usable, path
    assert not any(".DS_Store" in p for p in usable | set(report.ignored))
    assert report.examined == len(folder) + len(report.bad)


def test_every_usable_odd_file_becomes_a_finite_training_tensor(corrupt):
    root, expected = corrupt
    folder = scan_image_folder(root, "train")
    data = TrainDataset(folder, scale=(36, 44), crop=32, stats=STATS)
    index = {os.path.relpath(p, root): i for i, (p, _) in enumerate(folder.samples)}
    for path, outcome in expected.items():
        if path in index:
            x, label = data[index[path]]
            assert x.shape == (3, 32, 32) and torch.isfinite(x).all() and label == 0, outcome


def test_report_lines_name_each_bad_file_and_the_counts(corrupt):
    root, _ = corrupt
    report = scan_image_folder(root, "train").report
    text = "\n".join(report.lines())
    for path, reason, _ in report.bad:
        assert f"bad file {path}: {reason}" in text
    assert "skipped 5: 1 empty, 1 lfs_pointer, 1 not_an_image, 1 too_large, 1 truncated" in text


def test_val_uses_train_classes_and_counts_its_own_bad_file(corrupt):
    root, _ = corrupt
    train = scan_image_folder(root, "train")
    val = scan_image_folder(root, "val", classes=train.classes)
    assert val.classes == train.classes == ["class_a", "class_b"]
    assert [reason for _, reason, _ in val.report.bad] == ["truncated"]
    assert val.report.converted["cmyk"] == 1


def test_over_the_threshold_is_one_clear_error(corrupt):
    root, _ = corrupt
    with pytest.raises(TooManyBadFiles) as info:
        scan_image_folder(root, "train", max_bad_fraction=0.02)
    message = str(info.value)
    assert isinstance(info.value, DataError)
    assert "5 of " in message and "more than the 2% allowed" in message
    assert "1 truncated" in message and "git lfs pull" in message
    assert "Traceback" not in message and len(info.value.report.bad) == 5


def test_order_is_sorted_and_deterministic(corrupt):
    root, _ = corrupt
    a = scan_image_folder(root, "train")
    b = scan_image_folder(root, "train")
    assert a.samples == b.samples and a.sizes == b.sizes
    assert a.samples == sorted(a.samples, key=lambda s: (s[1], s[0]))


def test_layout_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="ImageFolder layout"):
        scan_image_folder(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no image files"):
        scan_image_folder(tmp_path, "train")
    d = tmp_path / "train" / "zebra"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "a.png")
    with pytest.raises(DataError, match="zebra"):
        scan_image_folder(tmp_path, "train", classes=["cat", "dog"])


def test_case_insensitive_extensions_and_content_decides_the_decoder(tmp_path):
    d = tmp_path / "train" / "x"
    d.mkdir(parents=True)
    Image.new("RGB", (9, 9), (1, 2, 3)).save(d / "a.PNG")
    Image.new("RGB", (9, 9), (1, 2, 3)).save(d / "b.JpEg", "PNG")
    folder = scan_image_folder(tmp_path, "train")
    assert [os.path.basename(p) for p, _ in folder.samples] == ["a.PNG", "b.JpEg"]
    assert folder.report.converted["misnamed"] == 1


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(arr)))
    assert rgb[0, :, 0].tolist() == [0, 100, 255] and (rgb[..., 0] == rgb[..., 2]).all()


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    img.putpixel((1, 0), (10, 20, 30, 0))
    assert np.asarray(to_rgb(img)).tolist() == [[[10, 20, 30], [255, 255, 255]]]


def test_a_file_failing_after_the_scan_is_replaced_by_the_next_one(tmp_path, caplog):
    d = tmp_path / "train" / "x"
    d.mkdir(parents=True)
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (20, 20), colour).save(d / f"{k}.png")
    folder = scan_image_folder(tmp_path, "train")
    (d / "1.png").write_bytes(b"")  # damaged after the scan
    with caplog.at_level(logging.WARNING):
        img, _, used = folder.load(1)
    assert used == 2 and img.getpixel((0, 0)) == (0, 0, 255)
    assert "1.png" in caplog.text and "empty" in caplog.text
    with pytest.raises(UnreadableImage):
        load_rgb(d / "1.png")


_MEASURE = """
import resource, sys
from vggspec.runtime.data.image_io import load_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = load_rgb(sys.argv[1], (384, 256))  # what S = 256 needs
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(img.size[0], img.size[1], grown // 1024)
"""


def test_a_12000x8000_jpeg_decodes_small_without_the_memory_of_the_full_image(tmp_path):
    path = tmp_path / "huge.jpg"
    huge = Image.new("RGB", (12000, 8000), (30, 60, 90))
    huge.paste((200, 100, 0), (3000, 2000, 9000, 6000))
    huge.save(path, quality=70)
    del huge
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout.split()
    w, h, grown_mb = (int(v) for v in out)
    assert (w, h) == (1500, 1000)  # decoded at 1/8 scale: still ≥ 384×256
    assert grown_mb < 50  # the full decode would need 288 MB
