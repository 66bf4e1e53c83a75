"""What training does for the task a spec's head gives (compiler/ir/ops/task.py): the data it
checks and reads, its start from another net, its validation, the figure that selects the best
net, what the summary adds. The trainer and the data ask the object `training_task` gives."""

from __future__ import annotations

from pathlib import Path

from vggspec.compiler import Spec
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.lowering.net import check_num_classes, head_task

from ..data.annotations import ANNOTATIONS_DIR, load_folder_boxes
from ..data.augment import TrainDataset
from ..data.box_targets import BoxCenterCropDataset, BoxTrainDataset
from ..data.image_folder import ImageFolder
from ..data.image_io import DataError
from ..data.validation import CenterCropDataset
from ..io.weights import init_all_but_last, init_from
from .box_validation import validate_boxes
from .config import ConfigError, TrainConfig
from .validation import validate


class TrainingTask:
    """Classification, the paper's: labels from the folders, selected by top-1 error."""

    objective = "val_top1_error"  # the validation figure whose lowest value marks the best net
    what = "top-1 error"  # how the log names it
    best = "best_top1_error"  # the field of the trainer's Position that keeps its best

    def check_data(self, cfg: TrainConfig, spec: Spec, root: Path | None) -> None:
        """Refuse data (`root`; None: the built-in demo data) the task cannot train on."""
        if cfg.boxes is not None:
            raise ConfigError(
                f"boxes={cfg.boxes}: {cfg.spec} has no box head (it classifies), so it reads "
                "no boxes; leave boxes= out"
            )

    def datasets(self, cfg: TrainConfig, train: ImageFolder, val: ImageFolder, log, settings,
                 augmentation):  # fmt: skip
        """(training set, validation set, images left out) of the scanned folders, with the
        datasets' `settings` (scale, crop, preprocessing) and the training set's
        `augmentation`."""
        training = TrainDataset(train, **settings, **augmentation)
        return training, CenterCropDataset(val, **settings), 0

    def validate(self, net, data, ctx, batch_size: int, workers: int) -> dict:
        return validate(net, data, ctx, batch_size, workers)

    def start_from(self, net, source) -> tuple[list[str], str]:
        """Copy layers of the trained net `source` into `net`: their names, and why those."""
        return init_from(net, source), "the paper's net-A start"

    def random_start(self) -> str | None:
        """What the log says of a start from random weights, if anything."""
        return None

    def summary(self, position, last_val: dict) -> dict:
        """What summary.json adds for this task."""
        return {}


class BoxTraining(TrainingTask):
    """Localisation (Appendix A): boxes from annotations, selected by protocol 1's GT-class
    localisation error, started from a classification net of the same body."""

    objective = "val_loc_error"
    what = "GT-class localisation error"
    best = "best_loc_error"

    def check_data(self, cfg, spec, root):
        if root is None:
            raise ConfigError(
                f"{cfg.spec} regresses boxes: give data=DIR with box annotations (the boxed demo "
                "data: vggspec data demo DIR --boxes)"
            )
        # A box head's width is fixed by the classes.
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

    def datasets(self, cfg, train, val, log, settings, augmentation):
        train, train_boxes, missing = _with_boxes(train, cfg, log)
        val, val_boxes, missing_val = _with_boxes(val, cfg, log)
        return (
            BoxTrainDataset(train, train_boxes, **settings, **augmentation),
            BoxCenterCropDataset(val, val_boxes, **settings),
            missing + missing_val,
        )

    def validate(self, net, data, ctx, batch_size, workers):
        return validate_boxes(net, data, ctx, batch_size, workers)

    def start_from(self, net, source):
        # Appendix A: the classification net's layers, the last one new.
        return init_all_but_last(net, source), "all layers but the last, which stays random"

    def random_start(self):
        return (
            "a box head from random weights: Appendix A starts it from a classification net "
            "of the same body (init=RUN)"
        )

    def summary(self, position, last_val):
        return {
            "val_loc_error": last_val.get("val_loc_error"),
            "val_mean_iou": last_val.get("val_mean_iou"),
            "best_val_loc_error": position.best_loc_error,
        }


def training_task(spec: Spec) -> TrainingTask:
    """How training goes for the spec's task (its head's)."""
    return head_task(spec).pick(labels=TrainingTask(), boxes=BoxTraining())


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
