"""The training run's data: the folders scanned, colour statistics, datasets built."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vggspec.compiler import Spec
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.lowering.net import check_num_classes, training_target

from ..data.annotations import ANNOTATIONS_DIR, load_folder_boxes
from ..data.augment import TrainDataset
from ..data.box_targets import BoxCenterCropDataset, BoxTrainDataset
from ..data.color_stats import ColorStats
from ..data.demo import demo_data_root, make_demo_dataset
from ..data.image_folder import IMAGE_EXTENSIONS, ImageFolder, scan_image_folder
from ..data.image_io import DataError
from ..data.preprocessing import Preprocessing
from ..data.validation import CenterCropDataset
from ..dist import context as distributed
from ..io.color_stats_file import load_or_compute_color_stats
from ..io.model_info import ModelInfo
from .config import ConfigError, TrainConfig


@dataclass
class TrainingData:
    root: Path
    train: TrainDataset
    val: CenterCropDataset
    classes: list[str]
    stats: ColorStats
    bad_files: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.train.preprocessing

    def model_info(self) -> ModelInfo:
        """What the trained net expects of an image and what its outputs mean; saved with
        its weights and in its checkpoints."""
        return ModelInfo(self.preprocessing, tuple(self.classes), self.train.scale, self.train.crop)


def ensure_demo_data(root: Path, seed: int, ctx, log) -> Path:
    """Rank 0 writes the demo set (into a temporary folder, renamed when complete)."""
    if ctx.is_main and not (root / ".complete").exists():
        log.info(f"writing the built-in demo data to {root} (once)")
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        make_demo_dataset(partial, seed=seed)
        (partial / ".complete").write_text("ok\n")
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    distributed.barrier(ctx)
    return root


def check_data_settings(cfg: TrainConfig, spec: Spec, world: int = 1) -> tuple[int, int]:
    """The crop size (H, W) — after checking, before any work, that the spec (`cfg.spec`,
    parsed), scale, batch size, number of processes and data folder fit together."""
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size={cfg.batch_size} (the global batch) does not split evenly over "
            f"{world} processes"
        )
    if spec.input.channels != 3:
        raise ConfigError(f"{cfg.spec}: training reads RGB images, but the spec's input is gray")
    crop = (spec.input.height, spec.input.width)
    if cfg.scale.lo < min(crop):
        raise ConfigError(
            f"scale S={cfg.scale.as_given} is smaller than the {crop[0]}x{crop[1]} crop; "
            f"the paper needs S ≥ {min(crop)}"
        )
    if cfg.data is None and training_target(spec) == "boxes":
        raise ConfigError(
            f"{cfg.spec} regresses boxes: give data=DIR with box annotations (the boxed demo "
            "data: vggspec data demo DIR --boxes)"
        )
    if cfg.data is not None:
        root = Path(cfg.data)
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise ConfigError(
                    f"data={root}: no {split}/ folder (expected ImageFolder layout "
                    f"{root}/{split}/<class>/<image>)"
                )
        if training_target(spec) == "boxes":  # a box head's width is fixed by the classes
            folders = [d for d in (root / "train").iterdir() if d.is_dir()]
            classes = sum(1 for d in folders if not d.name.startswith("."))
            try:
                check_num_classes(spec, classes)
            except VggspecError as err:
                raise ConfigError(f"{cfg.spec}: {err}") from None
            for split in ("train", "val"):
                where = box_source(cfg, root, split)
                if not where.exists():
                    raise ConfigError(
                        f"no box annotations at {where}: expected a folder of VOC XML files "
                        "(default DATA/annotations/<split>) or a .json/.csv table (boxes=)"
                    )
        images = sum(1 for f in (root / "train").rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        if images < cfg.batch_size:
            raise ConfigError(
                f"data={root}: {images} training images are fewer than one batch "
                f"(batch_size={cfg.batch_size})"
            )
    return crop


def prepare_training_data(cfg: TrainConfig, spec: Spec, ctx, log) -> TrainingData:
    crop = check_data_settings(cfg, spec)
    if cfg.data is None:
        root = ensure_demo_data(demo_data_root(cfg.seed), cfg.seed, ctx, log)
    else:
        root = Path(cfg.data)
    train_folder = scan_image_folder(root, "train", max_bad_fraction=cfg.max_bad_files)
    val_folder = scan_image_folder(
        root, "val", classes=train_folder.classes, max_bad_fraction=cfg.max_bad_files
    )
    for report in (train_folder.report, val_folder.report):
        for line in report.lines():
            log.info(line)
    # Rank 0 computes the statistics once (they are stored beside the data); the others
    # wait and read them.
    stats = load_or_compute_color_stats(train_folder) if ctx.is_main else None
    distributed.barrier(ctx)
    if stats is None:
        stats = load_or_compute_color_stats(train_folder)
    log.info("mean RGB " + ", ".join(f"{v:.1f}" for v in stats.mean_rgb) + " (training set)")
    std = stats.std_rgb if cfg.normalise == "mean-std" else None
    preprocessing = Preprocessing.trained(stats.mean_rgb, std)
    bad = len(train_folder.report.bad) + len(val_folder.report.bad)
    settings = dict(scale=cfg.scale, crop=crop, preprocessing=preprocessing)
    augmentation = dict(stats=stats, seed=cfg.seed, alpha_std=cfg.colour_shift)
    if training_target(spec) == "boxes":
        train_folder, train_boxes, missing = _with_boxes(train_folder, cfg, log)
        val_folder, val_boxes, missing_val = _with_boxes(val_folder, cfg, log)
        train = BoxTrainDataset(train_folder, train_boxes, **settings, **augmentation)
        val = BoxCenterCropDataset(val_folder, val_boxes, **settings)
        bad += missing + missing_val
    else:
        train = TrainDataset(train_folder, **settings, **augmentation)
        val = CenterCropDataset(val_folder, **settings)
    return TrainingData(root, train, val, train_folder.classes, stats, bad)


def box_source(cfg: TrainConfig, root: Path, split: str) -> Path:
    """Where a split's box annotations are read from (TrainConfig.boxes)."""
    if cfg.boxes is None:
        return root / ANNOTATIONS_DIR / split
    return Path(cfg.boxes.replace("{split}", split))


def _with_boxes(folder: ImageFolder, cfg: TrainConfig, log) -> tuple[ImageFolder, list, int]:
    """The folder's samples that have a box of their class, their boxes, and how many had
    none: those are reported like unreadable images, and too many of them stop the run."""
    found = load_folder_boxes(folder, box_source(cfg, Path(folder.root), folder.split))
    for line in found.report.lines():
        log.info(line)
    missing = len(found.report.missing)
    if missing > cfg.max_bad_files * max(1, len(folder)):
        raise DataError(
            f"{folder.root}/{folder.split}: {missing} of {len(folder)} images have no usable "
            f"box (more than max_bad_files={cfg.max_bad_files:g} of them)"
        )
    keep = found.usable()
    subset = ImageFolder(
        folder.root,
        folder.split,
        folder.classes,
        [folder.samples[i] for i in keep],
        [folder.sizes[i] for i in keep],
        folder.report,
    )
    return subset, [found.boxes[i] for i in keep], missing
