"""The data half of the runtime in one import: folders, statistics, datasets, loader, demo data."""

from runtime.augment import CropParams, TrainDataset, augment, sample_crop_params, sample_rng
from runtime.color_stats import (
    STATS_FILE_NAME,
    ColorStats,
    compute_color_stats,
    load_or_compute_color_stats,
)
from runtime.corrupt_fixture import make_corrupt_fixture
from runtime.demo_data import DEMO_CLASSES, make_demo_dataset, render_demo_image
from runtime.eval_data import CenterCropDataset
from runtime.image_folder import (
    DEFAULT_MAX_BAD_FRACTION,
    ImageFolder,
    ScanReport,
    TooManyBadFiles,
    scan_image_folder,
)
from runtime.image_io import DataError, UnreadableImage, load_rgb
from runtime.loader import make_loader
from runtime.preprocess import rescale_smallest_side, resized_crop, scaled_size, to_tensor

__all__ = [
    "DEFAULT_MAX_BAD_FRACTION",
    "DEMO_CLASSES",
    "STATS_FILE_NAME",
    "CenterCropDataset",
    "ColorStats",
    "CropParams",
    "DataError",
    "ImageFolder",
    "ScanReport",
    "TooManyBadFiles",
    "TrainDataset",
    "UnreadableImage",
    "augment",
    "compute_color_stats",
    "load_or_compute_color_stats",
    "load_rgb",
    "make_corrupt_fixture",
    "make_demo_dataset",
    "make_loader",
    "render_demo_image",
    "rescale_smallest_side",
    "resized_crop",
    "sample_crop_params",
    "sample_rng",
    "scaled_size",
    "scan_image_folder",
    "to_tensor",
]
