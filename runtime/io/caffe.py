"""Caffe .caffemodel files read straight from the protobuf wire format, payloads as numpy
views; each layer's settings read as the steps of source_net, by a table of Caffe types."""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vggspec.compiler.errors import VggspecError

from .source_net import Step

# Field numbers of caffe.proto (BVLC master). Only what a weights file needs is named;
# every other field is skipped by its wire type, without reading its bytes.
NET_NAME = 1
NET_INPUT = 3  # the deploy net's input blob names
NET_LAYERS_V1 = 2  # repeated V1LayerParameter: the deprecated layout of the VGG release
NET_LAYER = 100  # repeated LayerParameter: the current layout
NET_INPUT_DIM, NET_INPUT_SHAPE = 4, 8  # the deploy net's input, (N, C, H, W)
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1
RULE_PHASE, TEST = 1, 1  # NetStateRule.phase; Phase TEST (a deploy net is the TEST phase)


@dataclass(frozen=True)
class LayerFields:
    """Where V1LayerParameter and LayerParameter keep what is read here."""

    name: int
    type: int
    bottom: int
    top: int
    blobs: int
    include: int
    exclude: int
    params: dict[str, int]  # the parameter messages read, by name


V1 = LayerFields(
    4, 5, 2, 3, 6, 32, 33,
    {"convolution": 10, "pooling": 19, "lrn": 18, "relu": 30, "inner_product": 17,
     "softmax": 39, "transform": 36, "data": 11},
)  # fmt: skip
V2 = LayerFields(
    1, 2, 3, 4, 7, 8, 9,
    {"convolution": 106, "pooling": 121, "lrn": 118, "relu": 123, "inner_product": 117,
     "softmax": 125, "transform": 100, "data": 107, "input": 143},
)  # fmt: skip
# V1LayerParameter.LayerType → the type name Caffe's upgrade gives it.
V1_TYPES = {
    1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
    20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData",
    25: "Eltwise", 26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss",
    29: "MemoryData", 30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice",
    34: "MVN", 35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp",
    39: "Deconvolution",
}  # fmt: skip

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
    bottoms: list[str] = field(default_factory=list)  # the blobs it reads and writes
    tops: list[str] = field(default_factory=list)


@dataclass
class CaffeNet:
    name: str
    layers: list[CaffeLayer]
    layout: str  # "V1" (NetParameter.layers) or "V2" (NetParameter.layer)
    steps: list[Step] = field(default_factory=list)  # the TEST-phase net, data and loss left out
    input_shape: tuple[int, ...] | None = None  # (C, H, W) where the file says it (C 0: not)


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
        if wire not in (LENGTH, FIXED32 if width == 4 else FIXED64):  # a varint is no span
            self.fail(at, f"blob data with wire type {wire}")
        begin, stop = value
        if wire == LENGTH and (stop - begin) % width:
            self.fail(begin, f"a packed array of {stop - begin} bytes, not a multiple of {width}")
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

    def message(self, span: tuple[int, int]) -> Message:
        """A parameter message's fields: number → [(wire type, value)], payloads as spans."""
        fields: dict[int, list] = {}
        for number, wire, value in self.fields(*span):
            fields.setdefault(number, []).append((wire, value))
        return Message(self, fields)

    def layer(self, start: int, end: int, where: LayerFields) -> tuple[CaffeLayer, dict, bool]:
        """The layer, its parameter messages by name, and whether the TEST phase has it."""
        layer, params, include, exclude = CaffeLayer("", ""), {}, [], []
        by_number = {number: name for name, number in where.params.items()}
        for number, wire, value in self.fields(start, end):
            if number == where.name and wire == LENGTH:
                layer.name = self.text(value)
            elif number == where.type and where is V1 and wire == VARINT:
                layer.type = V1_TYPES.get(value, f"V1 type {value}")
            elif number == where.type and where is V2 and wire == LENGTH:
                layer.type = self.text(value)
            elif number == where.blobs and wire == LENGTH:
                layer.blobs.append(self.blob(*value))
            elif number in (where.bottom, where.top) and wire == LENGTH:
                (layer.bottoms if number == where.bottom else layer.tops).append(self.text(value))
            elif number in (where.include, where.exclude) and wire == LENGTH:
                phase = self.message(value).int(RULE_PHASE, None)
                (include if number == where.include else exclude).append(phase)
            elif number in by_number and wire == LENGTH:
                params[by_number[number]] = self.message(value)
        # NetStateRule: a rule without a phase holds in every phase.
        tested = (not include or any(p in (None, TEST) for p in include)) and not any(
            p in (None, TEST) for p in exclude
        )
        return layer, params, tested

    def net(self) -> CaffeNet:
        name, layers, layouts, steps = "", [], set(), []
        declared, input_dims, from_layers = None, [], []
        chain = Chain()
        for number, wire, value in self.fields(0, len(self.buf)):
            if number == NET_NAME and wire == LENGTH:
                name = self.text(value)
            elif number == NET_INPUT and wire == LENGTH:
                chain.heads.add(self.text(value))
            elif number in (NET_LAYERS_V1, NET_LAYER) and wire == LENGTH:
                where = V1 if number == NET_LAYERS_V1 else V2
                layouts.add("V1" if where is V1 else "V2")
                layer, params, tested = self.layer(*value, where=where)
                if layer.blobs:
                    layers.append(layer)
                if tested:
                    steps += chain.follow(layer, layer_steps(layer, params))
                    from_layers.append(_layer_input(params))
            elif number == NET_INPUT_DIM and wire in (VARINT, LENGTH):
                input_dims += self.dims(wire, value, 0)
            elif number == NET_INPUT_SHAPE and wire == LENGTH and declared is None:
                declared = _nchw(self.message(value).ints(SHAPE_DIM))
        if not layouts:
            raise CaffeError(f"{self.path}: not a .caffemodel (no layers in it)")
        # The deploy net's declared input first, then an Input layer's, then a data crop.
        candidates = [declared, _nchw(input_dims[:4]), *from_layers]
        input_shape = next((c for c in candidates if c is not None), None)
        return CaffeNet(name, layers, "/".join(sorted(layouts)), steps, input_shape)


class Chain:
    """The blobs that hold the net's current output, followed through the layers' bottoms
    and tops: the steps are the file's function only where each layer reads the output of
    the one before it (in place or not). A layer fed by another blob (a branch, or a layer
    whose output nothing reads, like a ReLU into a blob of its own that the next layer
    passes by) is a step no spec matches."""

    def __init__(self):
        self.heads: set[str] = set()  # the current output's names (identities add aliases)
        self.last = ""  # the layer that wrote it

    def follow(self, layer: CaffeLayer, steps: list[Step]) -> list[Step]:
        feeds = layer.bottoms[0] if layer.bottoms else None
        if not layer.bottoms and not steps:  # a data or input layer: where the chain starts
            self.heads.update(layer.tops[:1])
            return steps
        if not steps:
            if layer.type in CAFFE_IDENTITIES and feeds in self.heads:
                self.heads.update(layer.tops)  # Dropout, Flatten, Split: other names of it
            return steps  # losses and scores read the chain and write nothing it reads
        if feeds is not None and self.heads and feeds not in self.heads:
            after = f" ({self.last})" if self.last else ""
            why = (
                f"fed by {feeds}, not by the output of the layer before it{after}: "
                "vggspec reads nets that are one chain of layers"
            )
            return [_unknown(layer, why)]
        if layer.tops:
            self.heads, self.last = {layer.tops[0]}, layer.name
        return steps


def _nchw(dims: list[int]) -> tuple[int, int, int] | None:
    return tuple(dims[1:4]) if len(dims) == 4 and all(d > 0 for d in dims[1:]) else None


class Message:
    """The fields of one parameter message, read on demand with caffe.proto's defaults."""

    def __init__(self, reader: _Reader, fields: dict[int, list]):
        self.reader, self.fields = reader, fields

    def __contains__(self, number: int) -> bool:
        return number in self.fields

    def ints(self, number: int) -> list[int]:
        """A repeated integer field, packed or not."""
        out = []
        for wire, value in self.fields.get(number, []):
            out += self.reader.dims(wire, value, 0) if wire in (VARINT, LENGTH) else []
        return out

    def int(self, number: int, default):
        values = self.ints(number)
        return values[-1] if values else default  # proto2: the last one wins

    def float(self, number: int, default: float) -> float:
        """A float field as the decimal it was written as (0.0001, not 9.9999997e-05)."""
        for wire, (begin, _) in reversed(self.fields.get(number, [])):
            if wire == FIXED32:
                (value,) = struct.unpack_from("<f", self.reader.buf, begin)
                return float(str(np.float32(value)))
        return default

    def message(self, number: int) -> Message | None:
        for wire, value in reversed(self.fields.get(number, [])):
            if wire == LENGTH:
                return self.reader.message(value)
        return None


def _layer_input(params: dict) -> tuple[int, ...] | None:
    """(C, H, W) of an Input layer, or of a data layer's crop (C 0: not said)."""
    if "input" in params and (shape := params["input"].message(1)) is not None:
        return _nchw(shape.ints(SHAPE_DIM))
    for name, number in (("transform", 3), ("data", 5)):  # crop_size
        if name in params and (crop := params[name].int(number, 0)):
            return (0, crop, crop)
    return None


# --- each Caffe layer type as steps: one small function per type ---------------------------


def _pair(p: Message, single: int, height: int | None, width: int | None, default: int):
    """A 2-D setting: its _h/_w fields, or the repeated (or single) field: one value for
    both sides, or height then width (dilation has no _h/_w fields)."""
    if height is not None and (height in p or width in p):
        return (p.int(height, default), p.int(width, default))
    values = p.ints(single) or [default]
    return (values[0], values[-1])


def _convolution(layer: CaffeLayer, params: dict) -> list[Step]:
    p = params.get("convolution") or Message(None, {})
    kernel = _pair(p, 4, 11, 12, 0)
    if 0 in kernel and layer.blobs:  # the weights say it too
        kernel = tuple(int(d) for d in layer.blobs[0].shape[-2:])
    pad_h, pad_w = _pair(p, 3, 9, 10, 0)
    step = Step(
        "conv",
        layer.name,
        layer.type,
        kernel=kernel,
        stride=_pair(p, 6, 13, 14, 1),
        pad=(pad_h, pad_h, pad_w, pad_w),
        dilation=_pair(p, 18, None, None, 1),
        groups=p.int(5, 1),
        outputs=int(layer.blobs[0].shape[0]) if layer.blobs else p.int(1, 0),
    )
    if p.int(16, 1) != 1:
        return [_unknown(layer, "a convolution over another axis than the channels")]
    return [step]


def _inner_product(layer: CaffeLayer, params: dict) -> list[Step]:
    p = params.get("inner_product") or Message(None, {})
    if p.int(6, 0):
        return [_unknown(layer, "an InnerProduct with transpose: true")]
    if p.int(5, 1) != 1:
        return [_unknown(layer, "an InnerProduct over another axis than 1")]
    outputs, fan_in = p.int(1, 0), 0
    if layer.blobs:  # (out, in), or (1, 1, out, in) in the legacy 4-D blobs
        shape = [int(d) for d in layer.blobs[0].shape]
        while len(shape) > 2 and shape[0] == 1:
            shape = shape[1:]
        outputs, fan_in = shape[0], int(np.prod(shape[1:]))
    return [Step("fc", layer.name, layer.type, outputs=outputs, inputs=fan_in)]


POOL_METHODS = {0: "max", 1: "average"}  # PoolingParameter.PoolMethod; 2 is STOCHASTIC


def _pooling(layer: CaffeLayer, params: dict) -> list[Step]:
    p = params.get("pooling") or Message(None, {})
    method = p.int(1, 0)
    if method not in POOL_METHODS:
        return [_unknown(layer, "stochastic pooling")]
    if p.int(12, 0):
        return [_unknown(layer, f"global {POOL_METHODS[method]} pooling")]
    kernel = (p.int(5, 0), p.int(6, 0)) if 5 in p or 6 in p else (p.int(2, 0),) * 2
    pad = (p.int(9, 0), p.int(10, 0)) if 9 in p or 10 in p else (p.int(4, 0),) * 2
    stride = (p.int(7, 1), p.int(8, 1)) if 7 in p or 8 in p else (p.int(3, 1),) * 2
    return [
        Step(
            "pool",
            layer.name,
            layer.type,
            kernel=kernel,
            stride=stride,
            pad=(pad[0], pad[0], pad[1], pad[1]),
            method=POOL_METHODS[method],
            ceil=p.int(13, 0) == 0,  # RoundMode CEIL (the default) = 0
        )
    ]


def _lrn(layer: CaffeLayer, params: dict) -> list[Step]:
    p = params.get("lrn") or Message(None, {})
    if p.int(4, 0) != 0:
        return [_unknown(layer, "LRN WITHIN_CHANNEL (the notation's LRN is across channels)")]
    size, alpha, beta, k = p.int(1, 5), p.float(2, 1.0), p.float(3, 0.75), p.float(5, 1.0)
    # Caffe divides alpha by the window; the notation (AlexNet) does not.
    lrn = (size, alpha / size, beta, k)
    spelled = f"Caffe: local_size {size}, alpha {alpha:g}, beta {beta:g}, k {k:g}"
    return [Step("lrn", layer.name, layer.type, lrn=lrn, spelled=spelled)]


def _relu(layer: CaffeLayer, params: dict) -> list[Step]:
    slope = params["relu"].float(1, 0.0) if "relu" in params else 0.0
    return [Step("relu", layer.name, layer.type, slope=slope)]


def _softmax(layer: CaffeLayer, params: dict) -> list[Step]:
    axis = params["softmax"].int(2, 1) if "softmax" in params else 1
    axis = axis - (1 << 64) if axis >= 1 << 63 else axis  # int64 on the wire
    if axis not in (1, -1):  # the class axis of the FC's (N, classes)
        return [_unknown(layer, f"a soft-max over axis {axis}")]
    return [Step("softmax", layer.name, layer.type)]


def _unknown(layer: CaffeLayer, why: str) -> Step:
    return Step("unknown", layer.name, layer.type, why=why)


CAFFE_STEPS = {
    "Convolution": _convolution,
    "InnerProduct": _inner_product,
    "Pooling": _pooling,
    "LRN": _lrn,
    "ReLU": _relu,
    "Softmax": lambda layer, params: _softmax(layer, params),
    # A training net's classifier ends in its loss: its posteriors are that soft-max.
    "SoftmaxWithLoss": lambda layer, params: _softmax(layer, params),
}
# Layers that change nothing a converted net computes: its input, training-only layers,
# losses and their scores, and plumbing (InnerProduct flattens C×H×W itself).
CAFFE_SKIPPED = {
    "Data", "ImageData", "WindowData", "MemoryData", "HDF5Data", "DummyData", "Input",
    "Dropout", "Accuracy", "Silence", "Split", "Flatten", "EuclideanLoss",
    "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss",
    "ContrastiveLoss", "HDF5Output",
}  # fmt: skip
# Skipped layers whose output is their input, under other names (at test time).
CAFFE_IDENTITIES = {"Dropout", "Split", "Flatten"}


def layer_steps(layer: CaffeLayer, params: dict) -> list[Step]:
    """What one Caffe layer computes, as steps (none for a skipped layer)."""
    if layer.type in CAFFE_SKIPPED:
        return []
    reader = CAFFE_STEPS.get(layer.type)
    if reader is None:
        return [_unknown(layer, f"a Caffe {layer.type or 'untyped'} layer, which no spec has")]
    return reader(layer, params)


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
