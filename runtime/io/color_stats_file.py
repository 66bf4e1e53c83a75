"""The training set's colour statistics stored beside its images as JSON: read back when they
were computed from the same files with the same sample, else computed and written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..data.color_stats import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_SIDE,
    FORMAT,
    VERSION,
    ColorStats,
    compute_color_stats,
)
from ..data.image_folder import ImageFolder
from .atomic import atomic_write

log = logging.getLogger(__name__)

STATS_FILE_NAME = ".vggspec-stats.json"


def folder_fingerprint(folder: ImageFolder) -> str:
    """Hash of the usable file list (paths relative to the root, labels, sizes)."""
    digest = hashlib.sha256()
    for (path, label), (w, h) in zip(folder.samples, folder.sizes, strict=True):
        digest.update(f"{os.path.relpath(path, folder.root)}\t{label}\t{w}x{h}\n".encode())
    return digest.hexdigest()


def load_or_compute_color_stats(
    folder: ImageFolder,
    path: str | Path | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    side: int = DEFAULT_SIDE,
) -> ColorStats:
    """Stats stored at `path` (default ROOT/.vggspec-stats.json) if they were computed from
    this same file list with the same sample settings; otherwise computed and stored
    (atomically, so ranks computing at once cannot corrupt it; the computation is
    deterministic, so they write identical files). A read-only ROOT only costs a warning."""
    path = Path(path) if path is not None else Path(folder.root) / STATS_FILE_NAME
    fingerprint = folder_fingerprint(folder)
    sample = {"max_images": max_images, "smallest_side": side}
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if (data.get("format"), data.get("version")) != (FORMAT, VERSION):
                raise ValueError("not a vggspec stats file of this version")
            if data.get("fingerprint") == fingerprint and data.get("sample") == sample:
                return ColorStats.from_json(data)
            log.warning("%s was computed from other files or settings: recomputing", path)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("ignoring unreadable stats file %s (%s): recomputing", path, err)
    stats = compute_color_stats(folder, max_images, side)
    try:
        text = json.dumps(stats.to_json(fingerprint, max_images, side), indent=2) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    except OSError as err:
        log.warning("could not store colour statistics at %s (%s); pass a writable path", path, err)
    return stats
