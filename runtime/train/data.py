"""The training run's data: the folders scanned, colour statistics, datasets built."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vggspec.compiler import Spec

from ..data.augment import TrainDataset
from ..data.color_stats import ColorStats
from ..data.demo import demo_data_root, make_demo_dataset
from ..data.image_folder import IMAGE_EXTENSIONS, scan_image_folder
from ..data.preprocessing import Preprocessing
from ..data.validation import CenterCropDataset
from ..dist import context as distributed
from ..io.color_stats_file import load_or_compute_color_stats
from ..io.model_info import ModelInfo
from ..io.whole_folder import write_whole
from .config import ConfigError, TrainConfig
from .tasks import training_task


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


def _demo_data_name(root: Path) -> str:
    """How a refusal names the demo data's folder: by the variable that chose it, if one did."""
    chosen = os.environ.get("VGGSPEC_DEMO_DATA")
    return f"VGGSPEC_DEMO_DATA={chosen}" if chosen else str(root)


def check_demo_data_root(root: Path) -> None:
    """The demo data's folder holds the demo data, or can take it: absent, or an empty folder.
    Anything else is the user's (VGGSPEC_DEMO_DATA pointed at a folder of theirs, which
    writing the demo data used to delete whole)."""
    if (root / ".complete").is_file():
        return
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise ConfigError(f"{_demo_data_name(root)}: not a folder; name a new or empty one")
        if any(root.iterdir()):
            raise ConfigError(
                f"{_demo_data_name(root)}: holds files but not the demo data; "
                "name a new or empty folder for it"
            )


def ensure_demo_data(root: Path, seed: int, ctx, log) -> Path:
    """Rank 0 writes the demo set whole (runtime/io/whole_folder.py: into ROOT.partial, one
    writer at a time, renamed when complete; two first runs at once deleted each other's
    ROOT.partial and both failed)."""
    complete = root / ".complete"
    if ctx.is_main and not complete.exists():
        check_demo_data_root(root)
        log.info(f"writing the built-in demo data to {root} (once)")

        def write(partial: Path) -> None:
            make_demo_dataset(partial, seed=seed)
            (partial / ".complete").write_text("ok\n")

        try:
            write_whole(root, write, "run train", complete.exists)
        except OSError as err:
            raise ConfigError(
                f"{_demo_data_name(root)}: cannot write the demo data there "
                f"({err.strerror or err}); set VGGSPEC_DEMO_DATA to a writable folder"
            ) from None
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
    task = training_task(spec)
    if cfg.data is None:
        check_demo_data_root(demo_data_root(cfg.seed))
        task.check_data(cfg, spec, None)
    else:
        root = Path(cfg.data)
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise ConfigError(
                    f"data={root}: no {split}/ folder (expected ImageFolder layout "
                    f"{root}/{split}/<class>/<image>)"
                )
        task.check_data(cfg, spec, root)
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
    task = training_task(spec)
    train, val, left_out = task.datasets(cfg, train_folder, val_folder, log, settings, augmentation)
    return TrainingData(root, train, val, train_folder.classes, stats, bad + left_out)
