"""Caffe .caffemodel files read straight from the protobuf wire format, payloads as numpy views."""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vggspec.compiler.frontend.errors import VggspecError

# Field numbers of caffe.proto (BVLC master). Only what a weights file needs is named;
# every other field is skipped by its wire type, without reading its bytes.
NET_NAME = 1
NET_LAYERS_V1 = 2  # repeated V1LayerParameter: the deprecated layout of the VGG release
NET_LAYER = 100  # repeated LayerParameter: the current layout
V1_NAME, V1_TYPE, V1_BLOBS = 4, 5, 6
V2_NAME, V2_TYPE, V2_BLOBS = 1, 2, 7
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1
# V1LayerParameter.LayerType values of the layers that carry weights in a VGG net.
V1_TYPES = {4: "Convolution", 14: "InnerProduct"}

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class CaffeError(VggspecError):
    """A file that is not a readable .caffemodel: what, and at which byte."""


@dataclass
class CaffeLayer:
    """One layer that carries weights: its name, Caffe type and blobs (float32 arrays,
    read-only views on the file where the file stores floats)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class CaffeNet:
    name: str
    layers: list[CaffeLayer]
    layout: str  # "V1" (NetParameter.layers) or "V2" (NetParameter.layer)


class _Reader:
    """Wire-format walker over one buffer; every length is checked against the end of
    the message it belongs to, so a truncated file fails on the first field it cuts."""

    def __init__(self, buf, path: str):
        self.buf, self.path = buf, path

    def fail(self, at: int, what: str):
        raise CaffeError(f"{self.path}: not a readable .caffemodel ({what} at byte {at})")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value, shift, buf = 0, 0, self.buf
        while True:
            if pos >= end:
                self.fail(pos, "a number runs past the end of its message")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                self.fail(pos, "a number longer than 10 bytes")

    def fields(self, start: int, end: int):
        """(field number, wire type, value or (begin, stop) of the payload) for each field
        of the message in buf[start:end]; payloads are offsets, nothing is copied."""
        pos = start
        while pos < end:
            tag_at = pos
            tag, pos = self.varint(pos, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                self.fail(tag_at, "field number 0")
            if wire == VARINT:
                value, pos = self.varint(pos, end)
            elif wire == LENGTH:
                size, pos = self.varint(pos, end)
                if pos + size > end:
                    self.fail(tag_at, f"field {number} of {size} bytes runs past the end")
                value, pos = (pos, pos + size), pos + size
            elif wire in (FIXED64, FIXED32):
                width = 8 if wire == FIXED64 else 4
                if pos + width > end:
                    self.fail(tag_at, f"field {number} runs past the end")
                value, pos = (pos, pos + width), pos + width
            else:  # groups (3, 4) are not in caffe.proto; 6 and 7 do not exist
                self.fail(tag_at, f"wire type {wire} of field {number}")
            yield number, wire, value

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0] : span[1]]).decode("utf-8", "replace")

    def packed(self, wire: int, value, dtype: str, at: int) -> np.ndarray:
        """A repeated float/double field: packed (one span), or one element per field."""
        width = np.dtype(dtype).itemsize
        begin, stop = value
        if wire == LENGTH and (stop - begin) % width:
            self.fail(begin, f"a packed array of {stop - begin} bytes, not a multiple of {width}")
        if wire not in (LENGTH, FIXED32 if width == 4 else FIXED64):
            self.fail(at, f"blob data with wire type {wire}")
        return np.frombuffer(self.buf, dtype=dtype, count=(stop - begin) // width, offset=begin)

    def dims(self, wire: int, value, at: int) -> list[int]:
        """BlobShape.dim: packed varints (the usual) or one varint per field."""
        if wire == VARINT:
            return [value]
        if wire != LENGTH:
            self.fail(at, f"blob shape with wire type {wire}")
        out, pos = [], value[0]
        while pos < value[1]:
            dim, pos = self.varint(pos, value[1])
            out.append(dim)
        return out

    def blob(self, start: int, end: int) -> np.ndarray:
        shape: list[int] | None = None
        legacy = [1, 1, 1, 1]  # num, channels, height, width (default 0 means absent)
        seen_legacy = False
        chunks: list[np.ndarray] = []
        for number, wire, value in self.fields(start, end):
            if number == BLOB_SHAPE and wire == LENGTH:
                shape = []
                for dim_number, dim_wire, dim_value in self.fields(*value):
                    if dim_number == SHAPE_DIM:
                        shape += self.dims(dim_wire, dim_value, value[0])
            elif number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == VARINT:
                legacy[number - 1] = value
                seen_legacy = True
            elif number == BLOB_DATA:
                chunks.append(self.packed(wire, value, "<f4", start))
            elif number == BLOB_DOUBLE_DATA:
                chunks.append(self.packed(wire, value, "<f8", start).astype(np.float32))
        data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks or [np.empty(0, "<f4")])
        if shape is None:
            shape = legacy if seen_legacy else [data.size]
        if int(np.prod(shape, dtype=np.int64)) != data.size:
            self.fail(start, f"a blob of shape {tuple(shape)} holding {data.size} values")
        return data.reshape(shape)

    def layer(self, start: int, end: int, v1: bool) -> CaffeLayer:
        name_field, type_field, blobs_field = (
            (V1_NAME, V1_TYPE, V1_BLOBS) if v1 else (V2_NAME, V2_TYPE, V2_BLOBS)
        )
        layer = CaffeLayer("", "")
        for number, wire, value in self.fields(start, end):
            if number == name_field and wire == LENGTH:
                layer.name = self.text(value)
            elif number == type_field and v1 and wire == VARINT:
                layer.type = V1_TYPES.get(value, f"V1 type {value}")
            elif number == type_field and not v1 and wire == LENGTH:
                layer.type = self.text(value)
            elif number == blobs_field and wire == LENGTH:
                layer.blobs.append(self.blob(*value))
        return layer

    def net(self) -> CaffeNet:
        name, layers, layouts = "", [], set()
        for number, wire, value in self.fields(0, len(self.buf)):
            if number == NET_NAME and wire == LENGTH:
                name = self.text(value)
            elif number in (NET_LAYERS_V1, NET_LAYER) and wire == LENGTH:
                v1 = number == NET_LAYERS_V1
                layouts.add("V1" if v1 else "V2")
                layer = self.layer(*value, v1=v1)
                if layer.blobs:
                    layers.append(layer)
        if not layouts:
            raise CaffeError(f"{self.path}: not a .caffemodel (no layers in it)")
        return CaffeNet(name, layers, "/".join(sorted(layouts)))


def read_caffemodel(path: str | os.PathLike) -> CaffeNet:
    """The layers with weights of a .caffemodel, in file order. The file is memory-mapped
    and float blobs are numpy views on it: nothing is copied until used (the arrays keep
    the mapping alive)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise CaffeError(f"{path}: not a .caffemodel (the file is empty)")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as err:
        raise CaffeError(f"{path}: cannot read ({err.strerror})") from None
    return _Reader(buf, str(path)).net()
