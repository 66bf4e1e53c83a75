"""The paper's training augmentation and test-time preprocessing: semantics and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from vggspec.runtime.data.augment import (
    CropParams,
    TrainDataset,
    augment,
    sample_crop_params,
    sample_rng,
)
from vggspec.runtime.data.color_stats import ColorStats
from vggspec.runtime.data.geometry import (
    rescale_smallest_side,
    resized_crop,
    scaled_size,
)
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.data.image_io import load_rgb
from vggspec.runtime.data.loader import make_loader
from vggspec.runtime.data.preprocessing import Preprocessing
from vggspec.runtime.data.scale import TrainScale
from vggspec.runtime.data.validation import CenterCropDataset

STATS = ColorStats(
    mean_rgb=(120.0, 110.0, 100.0),
    eigenvalues=(400.0, 100.0, 25.0),
    eigenvectors=(
        (0.6, 0.6, 0.52915026),
        (0.70710678, -0.70710678, 0.0),
        (0.37416574, 0.37416574, -0.84852814),
    ),
    images=1,
    pixels=1,
)


def _noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 JPEGs of varied sizes in 3 classes."""
    root = tmp_path_factory.mktemp("folder")
    sizes = [(50, 40), (40, 70), (64, 64), (90, 45)]
    for label in range(3):
        d = root / "train" / f"c{label}"
        d.mkdir(parents=True)
        for k, (w, h) in enumerate(sizes):
            _noise_image(w, h, seed=10 * label + k).save(d / f"{k}.jpg", quality=95)
    return scan_image_folder(root, "train")


def _train(folder, **kw) -> TrainDataset:
    args = {"scale": (32, 48), "crop": (24, 32), "stats": STATS, "seed": 7} | kw
    return TrainDataset(folder, **args)


# --- randomness: a function of (seed, epoch, index) only ------------------------------------


def test_item_is_a_function_of_seed_epoch_index(folder):
    a, b = _train(folder), _train(folder)
    b.set_epoch(3)
    x3, y3 = b[5]
    assert torch.equal(a.sample(5, 3)[0], x3) and a.sample(5, 3)[1] == y3
    assert torch.equal(a[5][0], a.sample(5, 0)[0])  # epoch 0 until set_epoch
    assert not torch.equal(a.sample(5, 0)[0], a.sample(5, 1)[0])
    assert not torch.equal(_train(folder, seed=8).sample(5, 0)[0], a.sample(5, 0)[0])


def test_same_items_with_0_and_2_workers_and_epochs_reach_persistent_workers(folder):
    order = [11, 0, 5, 3, 7, 2, 9, 1, 4, 6, 10, 8]
    batches = {}
    for workers in (0, 2):
        data = _train(folder)
        loader = make_loader(data, 4, workers, sampler=order)
        batches[workers] = []
        for epoch in (0, 1):
            data.set_epoch(epoch)
            batches[workers] += [(x.clone(), y.clone()) for x, y in loader]
    assert len(batches[0]) == len(batches[2]) == 6
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    reference = _train(folder)
    expected = torch.stack([reference.sample(i, 1)[0] for i in order[:4]])
    assert torch.equal(batches[2][3][0], expected)  # epoch 1 seen inside the workers


# --- augmentation semantics ----------------------------------------------------------------


def test_crop_has_the_spec_input_size_even_non_square(folder):
    data = _train(folder, crop=(24, 40), scale=24)
    for i in range(len(data)):
        x, y = data[i]
        assert x.shape == (3, 24, 40) and x.dtype == torch.float32
        assert y == folder.samples[i][1]


def test_scale_jitter_draws_every_integer_in_range_and_nothing_else():
    seen = set()
    for i in range(400):
        p = sample_crop_params(sample_rng(0, 0, i), (500, 375), TrainScale(256, 260), (224, 224))
        seen.add(p.smallest_side)
        assert min(p.scaled) == p.smallest_side
        assert p.scaled == scaled_size((500, 375), p.smallest_side)
        assert 0 <= p.offset[0] <= p.scaled[0] - 224 and 0 <= p.offset[1] <= p.scaled[1] - 224
    assert seen == {256, 257, 258, 259, 260}


def test_crop_positions_cover_the_whole_rescaled_image_and_flip_is_fair():
    params = [
        sample_crop_params(sample_rng(1, 0, i), (80, 40), TrainScale(40, 40), (40, 40))
        for i in range(300)
    ]
    xs = {p.offset[0] for p in params}
    assert xs == set(range(0, 41)) and {p.offset[1] for p in params} == {0}
    flips = sum(p.flip for p in params)
    assert 110 < flips < 190


def test_crop_smaller_side_than_crop_width_is_enlarged_to_fit():
    p = sample_crop_params(sample_rng(0, 0, 0), (40, 80), TrainScale(32, 32), (24, 48))
    assert p.scaled == (48, 96)  # portrait: width 32 would not hold a 48-wide crop


def test_flip_really_flips(folder):
    img = load_rgb(folder.samples[0][0])
    p = CropParams(40, scaled_size(img.size, 40), (3, 2), False, (0.0, 0.0, 0.0))
    flipped = CropParams(40, p.scaled, p.offset, True, p.alpha)
    a = augment(img, p, (24, 32), STATS)
    b = augment(img, flipped, (24, 32), STATS)
    assert torch.equal(torch.flip(a, dims=[2]), b) and not torch.equal(a, b)


def test_mean_subtraction_and_zero_alpha_means_no_colour_shift():
    img = Image.new("RGB", (60, 50), (200, 100, 50))
    p = CropParams(40, scaled_size(img.size, 40), (0, 0), False, (0.0, 0.0, 0.0))
    x = augment(img, p, (32, 32), STATS)
    expected = torch.tensor([200 - 120.0, 100 - 110.0, 50 - 100.0]).view(3, 1, 1)
    assert torch.equal(x, expected.expand(3, 32, 32))
    assert np.array_equal(STATS.pca_shift((0, 0, 0)), np.zeros(3))


def test_pca_shift_is_alpha_times_std_along_each_eigenvector():
    img = Image.new("RGB", (40, 40), (90, 90, 90))
    base = CropParams(40, (40, 40), (0, 0), False, (0.0, 0.0, 0.0))
    alpha = (0.5, -1.0, 2.0)
    shifted = augment(img, CropParams(40, (40, 40), (0, 0), False, alpha), (16, 16), STATS)
    delta = (shifted - augment(img, base, (16, 16), STATS))[:, 0, 0].double().numpy()
    vectors = np.array(STATS.eigenvectors)
    expected = 0.5 * 20 * vectors[0] - 1.0 * 10 * vectors[1] + 2.0 * 5 * vectors[2]
    assert np.allclose(delta, expected, atol=1e-4)
    assert np.allclose(STATS.pca_shift(alpha), expected)


def test_alpha_std_zero_disables_colour_shift_but_not_the_other_choices(folder):
    x = _train(folder, alpha_std=0.0).sample(2, 0)[0]
    p = _train(folder, alpha_std=0.0).params(2, 0)
    assert p.alpha == (0.0, 0.0, 0.0)
    img = load_rgb(folder.samples[2][0])
    assert torch.equal(x, augment(img, p, (24, 32), STATS))


def test_training_crop_equals_rescale_then_crop():
    img = _noise_image(500, 375)
    for s, offset in ((256, (0, 0)), (300, (60, 47)), (512, (458, 288))):
        scaled = scaled_size(img.size, s)
        full = rescale_smallest_side(img, s)
        assert full.size == scaled and min(full.size) == s
        ref = np.asarray(full.crop((*offset, offset[0] + 224, offset[1] + 224)), dtype=int)
        got = np.asarray(resized_crop(img, scaled, offset, (224, 224)), dtype=int)
        assert np.abs(ref - got).max() <= 1  # Pillow's fixed-point rounding
        assert np.mean(ref != got) < 0.01


# --- evaluation preprocessing --------------------------------------------------------------


def test_preprocessing_image_is_chw_float32_in_0_255_minus_mean():
    img = _noise_image(7, 5)
    x = Preprocessing.trained(STATS.mean_rgb).image(img)
    arr = np.asarray(img, dtype=np.float32)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32 and x.is_contiguous()
    assert np.array_equal(x.numpy()[1], arr[:, :, 1] - 110.0)


@pytest.mark.parametrize(
    "preprocessing",
    [
        Preprocessing.trained((120.5, 110.25, 100.125)),
        Preprocessing.trained((120.5, 110.25, 100.125), (61.3, 70.7, 3.3)),
        Preprocessing.caffe(),
        Preprocessing.torchvision(),
    ],
    ids=["mean", "mean-std", "caffe", "torchvision"],
)
def test_workers_and_evaluation_preprocess_alike(preprocessing):
    """The one object, in the data workers (numpy, one image) and in evaluation (torch, a
    uint8 batch): bit for bit the same input for a vggspec net, within rounding for the
    0..1 range (whose two paths scale and subtract in another order)."""
    img = _noise_image(9, 6, seed=3)
    worker = preprocessing.image(img)
    batch = preprocessing(torch.from_numpy(np.array(img)).permute(2, 0, 1)[None])[0]
    if preprocessing.pixel_range == 255:
        assert torch.equal(worker, batch)
    else:
        assert torch.allclose(worker, batch, rtol=0, atol=1e-6)
    r, g, b = np.asarray(img, dtype=np.float64)[0, 0]
    first = [
        (v / (255 / preprocessing.pixel_range) - m) / s
        for v, m, s in zip((r, g, b), preprocessing.mean_rgb, preprocessing.std_rgb, strict=True)
    ]
    expected = first[::-1] if preprocessing.bgr else first
    assert np.allclose(worker[:, 0, 0].double().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_worker_input_is_one_float32_add_then_a_true_division():
    """The arithmetic the training parity rests on: float32(pixel + (shift − mean)), then a
    float32 division by std (not a multiplication by its reciprocal)."""
    img = Image.new("RGB", (1, 1), (201, 17, 99))
    mean, std, shift = (120.7, 110.3, 100.9), (61.3, 70.7, 3.3), np.array([1.7, -2.9, 0.4])
    x = Preprocessing.trained(mean, std).image(img, shift)[:, 0, 0].numpy()
    offset = np.asarray(shift - np.asarray(mean), dtype=np.float32)
    added = np.asarray([201, 17, 99], dtype=np.float32) + offset
    assert np.array_equal(x, added / np.asarray(std, dtype=np.float32))
    reciprocal = added * (np.float32(1) / np.asarray(std, dtype=np.float32))
    assert not np.array_equal(reciprocal, added / np.asarray(std, dtype=np.float32))


def test_rescale_smallest_side_is_exact_for_both_orientations():
    assert rescale_smallest_side(_noise_image(500, 375), 256).size == (341, 256)
    assert rescale_smallest_side(_noise_image(375, 500), 256).size == (256, 341)
    assert rescale_smallest_side(_noise_image(1, 1), 64).size == (64, 64)


def test_centre_crop_uses_the_single_scale_of_a_jittered_s(folder):
    mean_only = Preprocessing.trained(STATS.mean_rgb)
    data = CenterCropDataset(folder, scale=(32, 48), crop=(24, 32), preprocessing=mean_only)
    assert data.smallest_side == 40
    img = load_rgb(folder.samples[7][0])
    full = rescale_smallest_side(img, 40)
    left, top = (full.size[0] - 32) // 2, (full.size[1] - 24) // 2
    expected = mean_only.image(full.crop((left, top, left + 32, top + 24)))
    x, label = data[7]
    assert x.shape == (3, 24, 32) and label == folder.samples[7][1]
    assert (x - expected).abs().max() <= 1


def test_std_divides_every_output_after_mean_subtraction(folder):
    paper = _train(folder)
    by_64 = Preprocessing.trained(STATS.mean_rgb, (64, 64, 64))
    scaled = _train(folder, preprocessing=by_64)
    # a power of two: the division is exact, so the figures are equal bit for bit
    assert torch.equal(scaled.sample(4, 2)[0], paper.sample(4, 2)[0] / 64)
    by_4 = Preprocessing.trained(STATS.mean_rgb, (4, 4, 4))
    crop = {"scale": 40, "crop": 24}
    plain = CenterCropDataset(folder, preprocessing=Preprocessing.trained(STATS.mean_rgb), **crop)
    assert torch.equal(CenterCropDataset(folder, preprocessing=by_4, **crop)[0][0], plain[0][0] / 4)
