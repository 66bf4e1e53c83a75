"""Caffe and MatConvNet weights → a spec's net: layers matched by order and shape, the
pixel convention recorded with them, written as vggspec safetensors without a full copy."""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from vggspec.compiler import Spec, compile_spec
from vggspec.compiler.ir.graph import meta
from vggspec.compiler.lowering.net import Net, lower

from ..data.preprocessing import CAFFE_MEAN_RGB, Preprocessing
from .atomic import atomic_write
from .caffe import read_caffemodel
from .matconvnet import read_matconvnet
from .model_info import ModelInfo
from .weights import WeightsError, file_metadata

# What a converted net expects of an image, as a file records it: named "vggspec" like
# every convention read back from a file, so that a converted net in memory and the file
# written from it carry the same Preprocessing.
CAFFE_PIXELS = Preprocessing("vggspec", CAFFE_MEAN_RGB, bgr=True)  # the VGG release


class ConvertError(WeightsError):
    """Weights from elsewhere that do not fit the spec: which layer, both shapes."""


@dataclass(frozen=True)
class Target:
    """One weight layer of the spec's net: its name, kind and parameter shapes."""

    name: str
    kind: str  # "conv" or "fc"
    weight: tuple[int, ...]
    bias: tuple[int, ...]
    # An FC layer's input as the conv it is in a fully-convolutional file: (C, H, W).
    fc_input: tuple[int, ...] = ()


@dataclass
class Converted:
    """A spec's net's weights as float32 arrays (views on the source file where possible),
    in state_dict order, with what the net expects of an image."""

    net: Net  # uninitialised: names, shapes and the spec, no weights
    arrays: dict[str, np.ndarray]
    info: ModelInfo  # its pixel convention (None where the file has no mean) and input size
    source: str
    origin: str  # the file's name and kind, e.g. "VGG_ILSVRC_16_layers.caffemodel (Caffe V1)"
    notes: list[str] = field(default_factory=list)


def weight_targets(net: Net) -> list[Target]:
    """The net's conv and FC layers in order: what a file's weight layers must match."""
    targets = []
    for name, operation in net.layers():
        if operation.has_weights:
            layer = getattr(net, name)
            # torchvision's sections tell the two weight layers apart: conv in features.
            kind = "conv" if operation.section == "features" else "fc"
            fc_input = ()
            if kind == "fc":
                fc_input = tuple(meta(net.graph, name).in_shape)
                fc_input = (*fc_input, 1, 1)[:3] if len(fc_input) < 3 else fc_input
            targets.append(
                Target(name, kind, tuple(layer.weight.shape), tuple(layer.bias.shape), fc_input)
            )
    return targets


def _strip_ones(shape) -> tuple[int, ...]:
    """A shape without its leading 1s: Caffe's legacy 4-D blobs write an FC weight as
    (1, 1, out, in) and a bias as (1, 1, 1, out)."""
    shape = tuple(int(d) for d in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _count_mismatch(source: str, theirs: list[str], spec_name: str, ours: list[Target]):
    def span(names):
        return f"{names[0]} … {names[-1]}" if names else "none"

    return ConvertError(
        f"{source}: {len(theirs)} weight layers ({span(theirs)}), but {spec_name} has "
        f"{len(ours)} ({span([t.name for t in ours])}): weights of another net"
    )


def _caffe_arrays(path: Path, targets: list[Target], spec_name: str):
    model = read_caffemodel(path)
    if len(model.layers) != len(targets):
        raise _count_mismatch(str(path), [la.name for la in model.layers], spec_name, targets)
    arrays = {}
    for layer, target in zip(model.layers, targets, strict=True):
        if len(layer.blobs) != 2:
            raise ConvertError(
                f"{path}: layer {layer.name} ({layer.type}) has {len(layer.blobs)} blobs; "
                f"the spec's {target.name} needs a weight and a bias"
            )
        weight, bias = layer.blobs
        for blob, wanted, what in ((weight, target.weight, "weight"), (bias, target.bias, "bias")):
            if _strip_ones(blob.shape) != _strip_ones(wanted):
                raise ConvertError(
                    f"{path}: layer {layer.name} ({layer.type}) has {what} "
                    f"{tuple(blob.shape)}; the spec's {target.name} needs {wanted}"
                )
        # Caffe's InnerProduct weight is (out, in) with `in` flattened C×H×W, as torch's
        # flatten: fc6 is a reshape, no permutation.
        arrays[f"{target.name}.weight"] = weight.reshape(target.weight)
        arrays[f"{target.name}.bias"] = bias.reshape(target.bias)
    return arrays, CAFFE_PIXELS, f"Caffe {model.layout}", []


def _hwck(shape) -> str:
    """A torch conv shape (K, C, H, W) written as MatConvNet's H×W×C×K."""
    k, c, h, w = shape
    return f"{h}×{w}×{c}×{k}"


def _matconvnet_arrays(path: Path, targets: list[Target], spec_name: str):
    model = read_matconvnet(path)
    if len(model.layers) != len(targets):
        raise _count_mismatch(str(path), [la.name for la in model.layers], spec_name, targets)
    arrays = {}
    for layer, target in zip(model.layers, targets, strict=True):
        # MatConvNet filters are H×W×C×K; an FC layer is a conv over its whole input
        # (fc6: 7×7×512×4096), so its weight is the filter transposed to K×C×H×W and
        # flattened C×H×W like torch's flatten.
        wanted = target.weight if target.kind == "conv" else (target.weight[0], *target.fc_input)
        as_torch = tuple(layer.filters.shape[i] for i in (3, 2, 0, 1))
        if as_torch != wanted:
            raise ConvertError(
                f"{path}: layer {layer.name} has filters {_hwck(as_torch)} (H×W×C×K); "
                f"the spec's {target.name} needs {_hwck(wanted)}"
            )
        if layer.biases.size != target.bias[0]:
            raise ConvertError(
                f"{path}: layer {layer.name} has {layer.biases.size} biases; "
                f"the spec's {target.name} needs {target.bias[0]}"
            )
        weight = np.ascontiguousarray(layer.filters.transpose(3, 2, 0, 1), dtype=np.float32)
        arrays[f"{target.name}.weight"] = weight.reshape(target.weight)
        arrays[f"{target.name}.bias"] = layer.biases.astype(np.float32).reshape(target.bias)
    pixels, notes = None, []  # MatConvNet nets take RGB 0..255 minus the average image
    if model.average_image is None:
        notes.append("the file has no meta.normalization.averageImage: no mean recorded")
    else:
        average = model.average_image
        pixels = Preprocessing("vggspec", tuple(average.reshape(-1, 3).mean(axis=0).tolist()))
        if average.size > 3:
            notes.append(
                f"its average image ({'×'.join(map(str, average.shape))}) is recorded as "
                "its mean pixel"
            )
    return arrays, pixels, "MatConvNet simplenn", notes


def is_matconvnet(path: Path) -> bool:
    """A MATLAB file by its header (v5 files start with 'MATLAB'), or by its suffix."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return path.suffix.lower() == ".mat"
    return head == b"MATLAB" or path.suffix.lower() == ".mat"


def convert(
    path: str | os.PathLike, spec: Spec, spec_name: str = "the spec", rgb: bool = False
) -> Converted:
    """Read a .caffemodel or MatConvNet .mat and match its weight layers to `spec`'s,
    by order and shape. `rgb` reverses conv1_1's input channels so that a BGR (Caffe)
    net takes RGB. Raises ConvertError naming the layer and both shapes."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such weights file")
    net = lower(compile_spec(spec, name=Path(spec_name).stem), "torch")
    targets = weight_targets(net)
    reader = _matconvnet_arrays if is_matconvnet(path) else _caffe_arrays
    arrays, pixels, kind, notes = reader(path, targets, spec_name)
    if rgb:
        if pixels is None or not pixels.bgr:
            notes.append("--rgb: the net already takes RGB; nothing swapped")
        else:
            first = targets[0]
            if first.kind != "conv" or first.weight[1] != 3:
                raise ConvertError(f"{path}: --rgb: {first.name} does not take 3 colour channels")
            # Input channel c of a BGR net sees colour 2 - c: reversing the filters'
            # input channels makes the same net read RGB.
            arrays[f"{first.name}.weight"] = arrays[f"{first.name}.weight"][:, ::-1]
            pixels = replace(pixels, bgr=False)
    info = ModelInfo(pixels).with_input_size(net.input_size)
    return Converted(net, arrays, info, str(path), f"{path.name} ({kind})", notes)


def to_net(converted: Converted, net: Net | None = None) -> Net:
    """The converted weights loaded into the spec's net (or into `net`, the same spec's
    net on another backend), in memory: each array is copied straight into its parameter,
    64 MiB at a time, and the file's pages it came from are then released, so the peak
    stays near one copy of the weights."""
    net = converted.net if net is None else net
    state = net.state_dict()
    if list(state) != list(converted.arrays):
        raise ConvertError(f"{converted.source}: converted for another net than this one")
    with torch.no_grad():
        for name, array in converted.arrays.items():
            if tuple(array.shape) != tuple(state[name].shape):  # convert() matched them
                raise ConvertError(f"{converted.source}: {name} has shape {array.shape}")
            target = state[name].numpy()
            rows = max(1, (64 << 20) // max(1, array[0].nbytes))  # fc6 is 392 MiB
            for start in range(0, array.shape[0], rows):
                target[start : start + rows] = array[start : start + rows]
                _release_pages(array[start : start + rows])
    return net


def _release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a view on a memory-mapped file (they are read again from
    the file if the view is used again)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = np.byte_bounds
    start = np.frombuffer(base, np.uint8, count=1).ctypes.data
    low, high = (address - start for address in byte_bounds(array))
    page = mmap.PAGESIZE
    first = -(-low // page) * page  # whole pages inside the array only
    if high - first >= page:
        base.madvise(mmap.MADV_DONTNEED, first, (high - first) // page * page)


def write(converted: Converted, path: str | os.PathLike) -> Path:
    """The converted net as a vggspec safetensors file (what `weights.save` writes, with
    the same metadata, read by `vggspec.load` and `vggspec.model_info`; the file it came
    from as `converted_from`), streamed from the arrays: safetensors' own writer first
    copies every tensor to bytes, a second copy of a 528 MB net. Atomic."""
    path = Path(path)
    metadata = file_metadata(converted.net, converted.info)
    metadata["converted_from"] = converted.origin
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}  # as weights.save orders it
    offset = 0
    for name, array in converted.arrays.items():
        size = array.size * 4
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes

    def write_file(tmp):
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for array in converted.arrays.values():
                _write_array(f, array)

    atomic_write(path, write_file)
    return path


def _write_array(f, array: np.ndarray, chunk_bytes: int = 64 << 20) -> None:
    """Little-endian float32 bytes of `array`, 64 MiB of rows at a time (a permuted view is
    never copied whole), releasing the source file's pages once written."""
    array = array.astype("<f4", copy=False)
    rows = max(1, chunk_bytes // max(1, array[0].nbytes)) if array.ndim else 1
    for start in range(0, max(1, array.shape[0] if array.ndim else 1), rows):
        chunk = array[start : start + rows] if array.ndim else array
        f.write(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))
        _release_pages(chunk)
