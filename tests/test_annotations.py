"""Box annotations: VOC XML (DTDs refused), JSON/CSV tables, images without a box reported."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from PIL import Image
from vggspec.runtime.data.annotations import (
    BadAnnotation,
    load_folder_boxes,
    parse_voc_xml,
    read_box_table,
    read_voc_xml,
    voc_xml,
)
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.data.image_io import DataError

# As ILSVRC ships them (Annotations/CLS-LOC/train/n01440764/n01440764_10026.xml), abridged.
ILSVRC_XML = b"""<annotation>
\t<folder>n01440764</folder>
\t<filename>n01440764_10026</filename>
\t<source><database>ILSVRC_2012</database></source>
\t<size><width>250</width><height>200</height><depth>3</depth></size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>n01440764</name><pose>Unspecified</pose><truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox><xmin>11</xmin><ymin>21</ymin><xmax>130</xmax><ymax>160</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>n01440764</name>
\t\t<bndbox><xmin>101.0</xmin><ymin>1</ymin><xmax>250</xmax><ymax>90</ymax></bndbox>
\t</object>
</annotation>
"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<annotation><object><name>&lol3;</name></object></annotation>
"""


def test_voc_xml_as_ilsvrc_ships_it():
    ann = parse_voc_xml(ILSVRC_XML)
    assert ann.size == (250, 200)
    # 1-based inclusive pixel indices → pixel corners: x0 = xmin − 1, x1 = xmax.
    assert ann.objects == (
        ("n01440764", (10.0, 20.0, 130.0, 160.0)),
        ("n01440764", (100.0, 0.0, 250.0, 90.0)),
    )
    assert ann.boxes_of("n01440764").shape == (2, 4) and ann.boxes_of("other").shape == (0, 4)


@pytest.mark.parametrize(
    "data, detail",
    [
        (BILLION_LAUGHS, "DTD"),
        (b'<!DOCTYPE annotation SYSTEM "http://x/voc.dtd"><annotation/>', "DTD"),
        (b"<annotation><object>", "not well-formed"),
        (b"<annotations/>", "root element <annotations>"),
        (b"<annotation><object><name>a</name></object></annotation>", "without <name>/<bndbox>"),
        (
            b"<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>x</ymin>"
            b"<xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>",
            "<ymin> is 'x'",
        ),
    ],
)
def test_bad_voc_xml_is_one_clear_error(data, detail):
    with pytest.raises(BadAnnotation, match="bad_annotation") as err:
        parse_voc_xml(data, "f.xml")
    assert detail in err.value.detail and str(err.value).startswith("f.xml: ")


def test_written_voc_boxes_round_outwards_and_read_back(tmp_path):
    data = voc_xml("a.jpg", (64, 48), [("circle", (3.2, 4.7, 10.1, 20.0))])
    (tmp_path / "a.xml").write_bytes(data)
    ann = read_voc_xml(tmp_path / "a.xml")
    assert ann.size == (64, 48) and ann.objects == (("circle", (3.0, 4.0, 11.0, 20.0)),)
    assert b"<xmin>4</xmin>" in data and b"<xmax>11</xmax>" in data


def test_json_and_csv_tables(tmp_path):
    (tmp_path / "b.json").write_text(
        json.dumps({"cat/1.png": [{"class": "cat", "box": [1, 2, 3, 4]}], "dog/2.png": []})
    )
    table = read_box_table(tmp_path / "b.json")
    assert table["cat/1.png"].objects == (("cat", (1.0, 2.0, 3.0, 4.0)),)
    assert table["dog/2.png"].objects == ()
    (tmp_path / "b.csv").write_text(  # with the BOM a spreadsheet writes
        "\ufeffimage,class,x0,y0,x1,y1\ncat/1.png,cat,1,2,3,4\ncat/1.png,cat,5,6,7.5,8\n",
        encoding="utf-8",
    )
    table = read_box_table(tmp_path / "b.csv")
    assert table["cat/1.png"].objects == (
        ("cat", (1.0, 2.0, 3.0, 4.0)),
        ("cat", (5.0, 6.0, 7.5, 8.0)),
    )
    (tmp_path / "bad.csv").write_text("path,x\n")
    with pytest.raises(DataError, match=r"bad\.csv: the header must be image,class,x0"):
        read_box_table(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("image,class,x0,y0,x1,y1\na.png,cat,1,2\n")
    with pytest.raises(DataError, match="line 2 has 4 fields"):
        read_box_table(tmp_path / "short.csv")
    (tmp_path / "nan.json").write_text('{"a.png": [{"class": "c", "box": [1, 2, "nan", 4]}]}')
    with pytest.raises(DataError, match=r"a\.png has a non-finite box"):
        read_box_table(tmp_path / "nan.json")


@pytest.fixture
def folder(tmp_path):
    """ROOT/val/{cat,dog}/N.png, 40 × 30 each."""
    for name in ("cat", "dog"):
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30)).save(tmp_path / "val" / name / f"{i}.png")
    return scan_image_folder(tmp_path, "val")


def _write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_folder_boxes_from_voc_xml_and_the_report_of_images_without_one(folder, tmp_path):
    ann = tmp_path / "annotations" / "val"  # the default place
    # cat/0 sticks out of the image: clipped.
    _write(ann / "cat" / "0.xml", voc_xml("0.png", (40, 30), [("cat", (5, 5, 50, 20))]))
    _write(
        ann / "cat" / "1.xml",
        voc_xml("1.png", (40, 30), [("cat", (0, 0, 10, 10)), ("dog", (1, 1, 2, 2))]),
    )
    # cat/2 has none; dog/0 only a cat; dog/1 another size; dog/2 a DTD.
    _write(ann / "dog" / "0.xml", voc_xml("0.png", (40, 30), [("cat", (0, 0, 10, 10))]))
    _write(ann / "dog" / "1.xml", voc_xml("1.png", (30, 40), [("dog", (0, 0, 10, 10))]))
    _write(ann / "dog" / "2.xml", BILLION_LAUGHS)
    boxes = load_folder_boxes(folder)
    assert [b.tolist() for b in boxes.boxes] == [[[5, 5, 40, 20]], [[0, 0, 10, 10]], [], [], [], []]
    assert boxes.usable() == [0, 1]
    report = boxes.report
    reasons = {p.split("val/")[1]: r for p, r, _ in report.missing}
    assert reasons == {
        "cat/2.png": "no_annotation",
        "dog/0.png": "no_box",
        "dog/1.png": "size_mismatch",
        "dog/2.png": "bad_annotation",
    }
    lines = report.lines()
    assert lines[0].endswith("val: 2 of 6 images have a box")
    assert (
        lines[1]
        == "  without a box 4: 1 bad_annotation, 1 no_annotation, 1 no_box, 1 size_mismatch"
    )
    assert len(lines) == 6 and "2.xml: has a DTD" in lines[-1]


def test_folder_boxes_flat_beside_the_images_json_and_csv(folder, tmp_path):
    expected = [[[1, 2, 3, 4]]] * 6
    flat = tmp_path / "flat"  # ILSVRC's val boxes: one folder, named like the images
    _write(flat / "0.xml", voc_xml("0.png", (40, 30), [(n, (1, 2, 3, 4)) for n in ("cat", "dog")]))
    for i in (1, 2):
        _write(
            flat / f"{i}.xml", voc_xml("x", (40, 30), [(n, (1, 2, 3, 4)) for n in ("cat", "dog")])
        )
    assert [b.tolist() for b in load_folder_boxes(folder, flat).boxes] == expected
    for name in ("cat", "dog"):  # XML files beside the images: the source is ROOT/SPLIT
        for i in range(3):
            _write(
                tmp_path / "val" / name / f"{i}.xml", voc_xml("x", (40, 30), [(name, (1, 2, 3, 4))])
            )
    assert [b.tolist() for b in load_folder_boxes(folder, tmp_path / "val").boxes] == expected
    images = [f"{n}/{i}.png" for n in ("cat", "dog") for i in range(3)]
    table = {image: [{"class": image.split("/")[0], "box": [1, 2, 3, 4]}] for image in images[1:]}
    (tmp_path / "boxes.json").write_text(json.dumps(table))
    from_json = load_folder_boxes(folder, tmp_path / "boxes.json")
    assert [b.tolist() for b in from_json.boxes] == [[], *expected[1:]]
    assert [r for _, r, _ in from_json.report.missing] == ["no_annotation"]
    rows = "".join(f"{image},{image.split('/')[0]},1,2,3,4\n" for image in images)
    (tmp_path / "boxes.csv").write_text("image,class,x0,y0,x1,y1\n" + rows)
    assert [b.tolist() for b in load_folder_boxes(folder, tmp_path / "boxes.csv").boxes] == expected


def test_no_annotations_at_all_is_one_clear_error(folder, tmp_path):
    with pytest.raises(DataError, match=r"no box annotations at .*annotations/val: expected"):
        load_folder_boxes(folder)
    assert np.asarray(load_folder_boxes(folder, tmp_path / "val").boxes[0]).shape == (0, 4)


def test_the_folder_of_every_split_given_for_one_is_told_where_to_look(folder, tmp_path):
    # Every image came out "without annotation" (and too many such stop a run), with
    # nothing said of where it looked.
    parent = tmp_path / "annotations"
    _write(parent / "val" / "cat" / "0.xml", voc_xml("0.png", (40, 30), [("cat", (1, 2, 3, 4))]))
    with pytest.raises(DataError) as told:
        load_folder_boxes(folder, parent)
    assert str(told.value) == (
        f"{parent} holds a folder per split, not the VOC files of val: give {parent / 'val'}"
    )
    assert load_folder_boxes(folder, parent / "val").boxes[0].tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_for_a_box_table_or_annotation_is_one_error_not_a_hang(tmp_path, kind):
    """A FIFO held open() for ever; /dev/zero read as a table grew without end."""

    def make(path):
        os.mkfifo(path) if kind == "fifo" else os.symlink("/dev/zero", path)

    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the read did not finish"))
    signal.alarm(20)
    try:
        for name in ("t.csv", "t.json"):
            make(tmp_path / name)
            with pytest.raises(DataError, match=rf"{name}: not a regular file"):
                read_box_table(tmp_path / name)
        make(tmp_path / "a.xml")
        with pytest.raises(BadAnnotation, match="not a regular file"):
            read_voc_xml(tmp_path / "a.xml")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
