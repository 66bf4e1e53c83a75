"""The boxed demo data (`vggspec data demo DIR --boxes`): boxes that enclose the drawn shapes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from vggspec.runtime.data.annotations import load_folder_boxes
from vggspec.runtime.data.demo import DEMO_CLASSES, render_boxed_demo_image, render_demo_image
from vggspec.runtime.data.image_folder import scan_image_folder


def _mask_extent(mask: Image.Image) -> np.ndarray:
    """Pixel corners of every pixel the shape touches at all."""
    ys, xs = np.nonzero(np.asarray(mask))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def test_the_box_encloses_the_drawn_shape_and_no_more():
    centres, sizes = [], []
    for label in range(len(DEMO_CLASSES)):
        for index in range(8):
            img, box, mask = render_boxed_demo_image(4, "train", label, index)
            w, h = img.size
            assert mask.size == img.size and 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
            drawn = _mask_extent(mask)
            # Encloses every pixel of the shape ...
            assert box[0] <= drawn[0] and box[1] <= drawn[1], (label, index, box, drawn)
            assert box[2] >= drawn[2] and box[3] >= drawn[3], (label, index, box, drawn)
            # ... and is within a pixel of its extent on each side.
            assert np.abs(np.asarray(box) - drawn).max() <= 1.0, (label, index, box, drawn)
            centres.append(((box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h))
            sizes.append((box[2] - box[0]) * (box[3] - box[1]) / (w * h))
    # Shapes anywhere, of many sizes (the default demo keeps them near the centre).
    centres = np.asarray(centres)
    assert (centres.max(axis=0) - centres.min(axis=0) > 0.5).all()
    assert max(sizes) / min(sizes) > 5


def test_the_default_demo_pixels_are_unchanged():
    """The demo cache is keyed by DEMO_VERSION (runtime/train/data.py): a change to these
    pixels must bump it, then this digest."""
    digest = hashlib.sha256()
    for split in ("train", "val"):
        for label in range(10):
            for index in (0, 7):
                pixels = np.asarray(render_demo_image(3, split, label, index))
                digest.update(str(pixels.shape).encode())
                digest.update(pixels.tobytes())
    assert digest.hexdigest() == "67b2c2feb823c920818de3dc3adafe7ee07f21fe11e74ad27c9fd3a17dcdb38a"


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    from vggspec.cli import main

    root = tmp_path_factory.mktemp("boxed")
    args = ["data", "demo", str(root), "--boxes", "--seed", "2"]
    assert main([*args, "--train-per-class", "3", "--val-per-class", "2"]) == 0
    return root


def test_the_cli_writes_a_voc_file_per_image_enclosing_its_shape(boxed):
    for split, per_class in (("train", 3), ("val", 2)):
        folder = scan_image_folder(boxed, split)
        boxes = load_folder_boxes(folder)
        assert len(folder) == 10 * per_class and not folder.report.ignored
        assert boxes.usable() == list(range(len(folder))) and not boxes.report.missing
        for (path, label), found in zip(folder.samples, boxes.boxes, strict=True):
            index = int(path[-9:-4])
            demo_label = DEMO_CLASSES.index(folder.classes[label])  # folder classes are sorted
            _, box, mask = render_boxed_demo_image(2, split, demo_label, index)
            (written,) = found
            drawn = _mask_extent(mask)
            assert (written[:2] <= drawn[:2]).all() and (written[2:] >= drawn[2:]).all()
            # The box is whole pixels, so VOC's integers hold it exactly.
            assert written.tolist() == list(box)


def test_the_cli_without_boxes_writes_no_annotations(tmp_path, cli):
    code, out, _ = cli("data", "demo", tmp_path, "--train-per-class", "1", "--val-per-class", "1")
    assert code == 0 and "annotations" not in out
    assert not (tmp_path / "annotations").exists()
