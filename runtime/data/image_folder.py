"""Scan an ImageFolder split (ROOT/<split>/<class>/<file>): classes, samples, bad-file report."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .image_io import DataError, ImageHeader, UnreadableImage, load_rgb, read_header

log = logging.getLogger(__name__)

# torchvision's IMG_EXTENSIONS, compared case-insensitively. The content decides the decoder.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
)
DEFAULT_MAX_BAD_FRACTION = 0.10
TINY_SIDE = 16  # smaller images are kept (rescaling makes them usable) but counted

_FORMAT_OF_EXTENSION = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_CONVERSION_OF_MODE = {
    "CMYK": "cmyk",
    "YCbCr": "colour_space",
    "LAB": "colour_space",
    "HSV": "colour_space",
    "L": "grayscale",
    "1": "grayscale",
    "P": "palette",
    "PA": "palette",
    "RGBA": "alpha",
    "RGBa": "alpha",
    "LA": "alpha",
    "La": "alpha",
}


class TooManyBadFiles(DataError):
    """More unreadable files than the allowed fraction; `report` says which."""

    def __init__(self, message: str, report: ScanReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ScanReport:
    """What a scan found, for the training log: bad files by reason, conversions, ignored files."""

    root: str
    split: str
    examined: int = 0  # files with an image extension
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)
    converted: Counter = field(default_factory=Counter)  # kind -> files converted to RGB
    ignored: list[str] = field(default_factory=list)  # not an image extension, or no class
    repeated: list[str] = field(default_factory=list)  # symlinked folders walked once already

    @property
    def bad_counts(self) -> Counter:
        return Counter(reason for _, reason, _ in self.bad)

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.examined if self.examined else 0.0

    def lines(self) -> list[str]:
        """Human-readable summary: one headline, then one line per bad file."""
        where = f"{self.root}/{self.split}"
        out = [f"{where}: {self.examined - len(self.bad)} of {self.examined} images usable"]
        if self.bad:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self.bad_counts.items()))
            out.append(f"  skipped {len(self.bad)}: {counts}")
        if self.converted:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.converted.items()))
            out.append(f"  converted to RGB: {kinds}")
        if self.ignored:
            out.append(f"  ignored {len(self.ignored)} non-image files, e.g. {self.ignored[0]}")
        if self.repeated:
            out.append(
                f"  not followed: {len(self.repeated)} symlinked folders already walked "
                f"(a loop, or a second link to one folder), e.g. {self.repeated[0]}"
            )
        out.extend(f"  bad file {path}: {reason} ({detail})" for path, reason, detail in self.bad)
        return out


@dataclass
class ImageFolder:
    """The usable images of one split, in a deterministic order (class, then path)."""

    root: str
    split: str
    classes: list[str]
    samples: list[tuple[str, int]]  # (path, label)
    sizes: list[tuple[int, int]]  # (width, height) as stored in each file
    report: ScanReport
    # Testing (eval/images.py, eval/localise/passes.py): decode a JPEG at the DCT reduction (1/2,
    # 1/4, 1/8) that stays at least the size it is rescaled to. Faster for large photos, but
    # other pixels than a full decode's. Training decodes so anyway (`load`'s min_size_for).
    reduced_decode: bool = False

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.samples)

    def load(
        self, index: int, min_size_for: Callable[[tuple[int, int]], tuple[int, int]] | None = None
    ) -> tuple[Image.Image, int, int]:
        """(RGB image, label, index actually used). `min_size_for(stored size)` is the size
        the caller will rescale to, letting a JPEG decode at a reduced scale. A file that
        passed the scan but fails now (changed on disk, damage the quick check missed) is
        logged and replaced by the next readable sample: the same index, the same substitute."""
        n = len(self.samples)
        for step in range(n):
            j = (index + step) % n
            path, label = self.samples[j]
            try:
                min_size = None if min_size_for is None else min_size_for(self.sizes[j])
                return load_rgb(path, min_size), label, j
            except UnreadableImage as err:
                log.warning("skipping %s at load time: %s (%s)", path, err.reason, err.detail)
        raise DataError(f"no image under {self.root}/{self.split} can be decoded any more")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _first_visit(path: str, seen: set[tuple[int, int]]) -> bool:
    """Whether the folder at `path` (after symlinks) has not been walked yet."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True


def _candidate_files(split_dir: Path) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """([(class name, path)], [ignored paths], [folders not walked]) in sorted order; hidden
    entries skipped. Symlinked folders are followed, each real folder once: a link back to
    an ancestor (a loop) or a second link to a folder already walked is listed, not walked."""
    files: list[tuple[str, str]] = []
    ignored: list[str] = []
    repeated: list[str] = []
    seen: set[tuple[int, int]] = set()
    _first_visit(str(split_dir), seen)
    classes = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        if not entry.is_dir():
            ignored.append(entry.path)
        elif _first_visit(entry.path, seen):
            classes.append(entry)
        else:
            repeated.append(entry.path)
    # Every class folder is marked seen before any is walked, so that a link back up to
    # the split cannot file one class's images under another.
    for entry in classes:
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            kept = []
            for name in sorted(d for d in dirnames if not _is_hidden(d)):
                folder = os.path.join(dirpath, name)
                if _first_visit(folder, seen):
                    kept.append(name)
                else:
                    repeated.append(folder)
            dirnames[:] = kept
            for name in sorted(filenames):
                if _is_hidden(name):
                    continue
                path = os.path.join(dirpath, name)
                ext = os.path.splitext(name)[1].lower()
                if ext in IMAGE_EXTENSIONS:
                    files.append((entry.name, path))
                else:
                    ignored.append(path)
    return files, ignored, repeated


def _conversions(path: str, header: ImageHeader) -> list[str]:
    kinds = []
    ext = os.path.splitext(path)[1].lower()
    if _FORMAT_OF_EXTENSION.get(ext) != header.format:
        kinds.append("misnamed")
    if header.mode.startswith("I") or header.mode == "F":
        kinds.append("high_bit_depth")
    elif header.mode in _CONVERSION_OF_MODE:
        kinds.append(_CONVERSION_OF_MODE[header.mode])
    if min(header.size) < TINY_SIDE:
        kinds.append("tiny")
    return kinds


def _check(path: str, full_check: bool) -> ImageHeader | UnreadableImage:
    try:
        return read_header(path, full_check=full_check)
    except UnreadableImage as err:
        return err


def check_layout(root: str | Path, split: str) -> tuple[list, int, int]:
    """The candidate files of ROOT/SPLIT (files, ignored, repeated; nothing opened), or a
    DataError for a layout with none: what a `--nproc` parent checks before its workers
    start, so that the mistake is one message and not one per worker."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(
            f"no folder {split_dir}: expected the ImageFolder layout ROOT/{split}/<class>/<image>"
        )
    files, ignored, repeated = _candidate_files(split_dir)
    if not files:
        raise DataError(f"no image files under {split_dir} (expected {split}/<class>/<image>)")
    return files, ignored, repeated


def scan_image_folder(
    root: str | Path,
    split: str = "train",
    *,
    classes: list[str] | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    full_check: bool = False,
) -> ImageFolder:
    """Scan ROOT/SPLIT. Classes are the sorted sub-folder names unless `classes` fixes them
    (e.g. val must use train's). Every file is checked once (header, plus a full decode when
    the file does not end cleanly or `full_check`); unreadable ones are skipped and reported.
    Raises DataError for a wrong layout and TooManyBadFiles over `max_bad_fraction`."""
    split_dir = Path(root) / split
    files, ignored, repeated = check_layout(root, split)
    found = sorted({name for name, _ in files})
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"{split_dir} has classes the model does not know: {', '.join(unknown[:5])}"
            )
    index = {name: i for i, name in enumerate(classes)}
    report = ScanReport(
        root=str(root), split=split, examined=len(files), ignored=ignored, repeated=repeated
    )
    # One thread: header reads are GIL-bound (a pool measured slower on the demo set), and
    # the per-call warnings filter in image_io is not thread-safe.
    results = [_check(path, full_check) for _, path in files]
    samples, sizes = [], []
    for (name, path), result in zip(files, results, strict=True):
        if isinstance(result, UnreadableImage):
            report.bad.append((path, result.reason, result.detail))
            continue
        samples.append((path, index[name]))
        sizes.append(result.size)
        report.converted.update(_conversions(path, result))
    if report.bad_fraction > max_bad_fraction or not samples:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(report.bad_counts.items()))
        hint = ""
        if report.bad_counts.get("lfs_pointer"):
            hint = " Some files are Git LFS pointers: run `git lfs pull` in the dataset."
        raise TooManyBadFiles(
            f"{len(report.bad)} of {len(files)} image files under {split_dir} cannot be read "
            f"({report.bad_fraction:.0%}, more than the {max_bad_fraction:.0%} allowed): "
            f"{counts}; first: {report.bad[0][0]}.{hint}",
            report,
        )
    return ImageFolder(str(root), split, list(classes), samples, sizes, report)
