"""Box annotations of an ImageFolder: VOC XML per image, or a JSON/CSV table; images without one.

Images without a usable box are reported the way the scan reports bad files.

Where they are read from (`source` of load_folder_boxes):
- a folder of VOC XML files (default ROOT/annotations/SPLIT): the image ROOT/SPLIT/<class>/
  <name>.jpg has <folder>/<class>/<name>.xml, or <folder>/<name>.xml in a flat folder
  (ILSVRC's train boxes are a tree by class, its val boxes a flat folder; giving ROOT/SPLIT
  itself reads XML files lying beside the images);
- a .json file: {"<class>/<name>.jpg": [{"class": "<class>", "box": [x0, y0, x1, y1]}, ...]};
- a .csv file with the header image,class,x0,y0,x1,y1 and one row per box.
Image keys are paths relative to ROOT/SPLIT with "/". VOC's xmin..xmax are 1-based inclusive
pixel indices (x0 = xmin − 1, x1 = xmax); the JSON/CSV numbers are the pixel corners of
runtime/data/boxes.py as they are.

VOC files are read with xml.etree after an expat pass that refuses any DTD (no entity can be
declared, so none can expand) and files over MAX_XML_BYTES.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from . import boxes as bx
from .image_folder import ImageFolder
from .image_io import BadFile, DataError
from .regular import check_regular

ANNOTATIONS_DIR = "annotations"
MAX_XML_BYTES = 1 << 20  # a VOC file is a few hundred bytes per object
CSV_HEADER = ("image", "class", "x0", "y0", "x1", "y1")
Box = tuple[float, float, float, float]


class BadAnnotation(BadFile):
    """One annotation that cannot be used (counted by reason, as unreadable images are)."""


@dataclass(frozen=True)
class ImageAnnotation:
    """One image's objects: (name, box in pixel corners); its (w, h) when the file states it."""

    objects: tuple[tuple[str, Box], ...]
    size: tuple[int, int] | None = None

    def boxes_of(self, name: str) -> np.ndarray:
        return bx.as_boxes([box for n, box in self.objects if n == name])


def _refuse_dtd(data: bytes, source: str) -> None:
    def refuse(*_args) -> None:
        raise BadAnnotation(source, "bad_annotation", "has a DTD, refused (entity expansion)")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise BadAnnotation(source, "bad_annotation", f"not well-formed XML: {err}") from None


def _number(elem: ET.Element, tag: str, source: str) -> float:
    text = elem.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise BadAnnotation(source, "bad_annotation", f"<{tag}> is {text!r}, not a number")
    return value


def parse_voc_xml(data: bytes, source: str = "<xml>") -> ImageAnnotation:
    """A Pascal VOC <annotation>: <size> and every <object>'s <name> and <bndbox>."""
    if len(data) > MAX_XML_BYTES:
        raise BadAnnotation(source, "bad_annotation", f"over {MAX_XML_BYTES} bytes")
    _refuse_dtd(data, source)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise BadAnnotation(source, "bad_annotation", f"not well-formed XML: {err}") from None
    if root.tag != "annotation":
        raise BadAnnotation(source, "bad_annotation", f"root element <{root.tag}>")
    size = None
    size_elem = root.find("size")
    if size_elem is not None:
        w, h = _number(size_elem, "width", source), _number(size_elem, "height", source)
        size = (int(w), int(h)) if w > 0 and h > 0 else None  # some tools write 0: unknown
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise BadAnnotation(source, "bad_annotation", "an <object> without <name>/<bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, t, source) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((name, (xmin - 1, ymin - 1, xmax, ymax)))
    return ImageAnnotation(tuple(objects), size)


def read_voc_xml(path: str | Path) -> ImageAnnotation:
    path = Path(path)
    try:
        check_regular(path)
        with path.open("rb") as f:
            data = f.read(MAX_XML_BYTES + 1)
    except OSError as err:
        raise BadAnnotation(path, "bad_annotation", err.strerror or str(err)) from None
    return parse_voc_xml(data, str(path))


def voc_xml(filename: str, size: tuple[int, int], objects) -> bytes:
    """A VOC annotation for `objects` [(name, box in pixel corners)]; each box is written as
    the pixels it touches (rounded outwards), so it still encloses what it enclosed."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size_elem = ET.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3), strict=True):
        ET.SubElement(size_elem, tag).text = str(value)
    for name, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        box = ET.SubElement(obj, "bndbox")
        corners = (math.floor(x0) + 1, math.floor(y0) + 1, math.ceil(x1), math.ceil(y1))
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), corners, strict=True):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def read_box_table(path: str | Path) -> dict[str, ImageAnnotation]:
    """A .json or .csv box table (module docstring), keyed by image path relative to the split.
    Raises DataError, with the file and what is wrong, for a table that cannot be read."""
    path = Path(path)
    objects: dict[str, list[tuple[str, Box]]] = {}
    try:
        check_regular(path)
        if path.suffix.lower() == ".json":
            table = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(table, dict):
                raise ValueError("expected an object {image: [{class, box}, ...]}")
            for image, items in table.items():
                entry = objects.setdefault(str(image), [])
                for item in items:
                    x0, y0, x1, y1 = (float(v) for v in item["box"])
                    entry.append((str(item["class"]), (x0, y0, x1, y1)))
        elif path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:  # spreadsheets add a BOM
                reader = csv.reader(f)
                header = tuple(next(reader, ()))
                if header != CSV_HEADER:
                    raise ValueError(f"the header must be {','.join(CSV_HEADER)}")
                for line, row in enumerate(reader, start=2):
                    if len(row) != len(CSV_HEADER):
                        raise ValueError(f"line {line} has {len(row)} fields, not 6")
                    image, name, *corners = row
                    x0, y0, x1, y1 = (float(v) for v in corners)
                    objects.setdefault(image, []).append((name, (x0, y0, x1, y1)))
        else:
            raise ValueError("a box table is a .json or .csv file")
    except (OSError, ValueError, TypeError, KeyError) as err:
        detail = err.strerror if isinstance(err, OSError) else str(err)
        raise DataError(f"cannot read the box table {path}: {detail}") from None
    for image, items in objects.items():
        if not all(math.isfinite(v) for _, box in items for v in box):
            raise DataError(f"cannot read the box table {path}: {image} has a non-finite box")
    return {image: ImageAnnotation(tuple(items)) for image, items in objects.items()}


@dataclass
class BoxReport:
    """Images without a usable box, by reason: like image_folder.ScanReport's bad files."""

    root: str
    split: str
    examined: int = 0
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)

    @property
    def missing_counts(self) -> Counter:
        return Counter(reason for _, reason, _ in self.missing)

    def lines(self) -> list[str]:
        out = [
            f"{self.root}/{self.split}: {self.examined - len(self.missing)} of "
            f"{self.examined} images have a box"
        ]
        if self.missing:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self.missing_counts.items()))
            out.append(f"  without a box {len(self.missing)}: {counts}")
        out.extend(
            f"  no box for {path}: {reason} ({detail})" for path, reason, detail in self.missing
        )
        return out


@dataclass
class FolderBoxes:
    """Per sample of an ImageFolder (same order): its class's boxes, in pixel corners of the
    stored image, clipped to it; empty for the images the report lists."""

    boxes: list[np.ndarray]
    report: BoxReport

    def usable(self) -> list[int]:
        """Indices of the samples with at least one box."""
        return [i for i, b in enumerate(self.boxes) if len(b)]


class _XmlSource:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, relative: str) -> ImageAnnotation | None:
        stem = Path(relative).with_suffix(".xml")
        for candidate in (self.folder / stem, self.folder / stem.name):
            if candidate.is_file():
                return read_voc_xml(candidate)
        return None


def _holds_splits(path: Path, folder: ImageFolder) -> bool:
    """Whether a folder given for one split's VOC files is their parent (ROOT/annotations
    rather than ROOT/annotations/SPLIT): a SPLIT folder beside no XML file and no class
    folder. Every image was then "without annotation", and nothing said where it looked."""
    if not (path / folder.split).is_dir() or next(path.glob("*.xml"), None) is not None:
        return False
    return not any((path / name).is_dir() for name in folder.classes)


def _open_source(folder: ImageFolder, source: str | Path | None):
    path = Path(folder.root) / ANNOTATIONS_DIR / folder.split if source is None else Path(source)
    if path.is_dir():
        if _holds_splits(path, folder):
            raise DataError(
                f"{path} holds a folder per split, not the VOC files of {folder.split}: "
                f"give {path / folder.split}"
            )
        return _XmlSource(path)
    if path.is_file():
        return read_box_table(path)
    raise DataError(
        f"no box annotations at {path}: expected a folder of VOC XML files "
        f"(default ROOT/{ANNOTATIONS_DIR}/SPLIT) or a .json/.csv box table"
    )


def load_folder_boxes(folder: ImageFolder, source: str | Path | None = None) -> FolderBoxes:
    """The boxes of every sample of `folder` (see the module docstring for `source`). Only a
    sample's own class's boxes are kept, clipped to the image; an image left without any is
    reported (no_annotation, bad_annotation, size_mismatch or no_box) and gets none."""
    annotations = _open_source(folder, source)
    split_dir = Path(folder.root) / folder.split
    report = BoxReport(root=folder.root, split=folder.split, examined=len(folder))
    out = []
    for (path, label), size in zip(folder.samples, folder.sizes, strict=True):
        relative = Path(path).relative_to(split_dir).as_posix()
        try:
            found = annotations.get(relative)
            if found is None:
                raise BadAnnotation(path, "no_annotation", f"no annotation for {relative}")
            if found.size is not None and found.size != tuple(size):
                raise BadAnnotation(
                    path, "size_mismatch", f"annotated as {found.size}, stored as {tuple(size)}"
                )
            name = folder.classes[label]
            boxes = bx.clip(found.boxes_of(name), size)
            boxes = boxes[bx.nonempty(boxes)]
            if not len(boxes):
                raise BadAnnotation(path, "no_box", f"no box of class {name} inside the image")
        except BadAnnotation as err:
            detail = err.detail if err.path == path else f"{err.path}: {err.detail}"
            report.missing.append((path, err.reason, detail))
            boxes = bx.as_boxes([])
        out.append(boxes)
    return FolderBoxes(out, report)
