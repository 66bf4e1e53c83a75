"""Caffe, MatConvNet and Keras weights → a spec's net (or the spec the file implies): the
file's net compared with the spec's, layer by layer, then its weight layers matched by order
and shape, the pixel convention recorded with them, written as vggspec safetensors without
a full copy."""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from vggspec.compiler import Spec, SpecError, compile_spec
from vggspec.compiler.ir.graph import meta, nodes, op
from vggspec.compiler.ir.ops.traits import Weighted
from vggspec.compiler.lowering.net import Net, lower

from ..data.preprocessing import CAFFE_MEAN_RGB, Preprocessing
from .atomic import atomic_write
from .caffe import CaffeError, read_caffemodel
from .implied_spec import implied_spec
from .keras import HDF5_SIGNATURE, read_keras
from .matconvnet import read_matconvnet
from .model_info import ModelInfo
from .source_net import Step, StructureError, compare, spec_steps
from .weights import WeightsError, file_metadata, seal

# What a converted net expects of an image, as a file records it: named "vggspec" like
# every convention read back from a file, so that a converted net in memory and the file
# written from it carry the same Preprocessing. Keras' VGG preprocessing ("caffe" mode of
# keras.applications.imagenet_utils) is the same: its weights are the VGG release's.
CAFFE_PIXELS = Preprocessing("vggspec", CAFFE_MEAN_RGB, bgr=True)  # the VGG release


# The two kinds of weight layer a file holds, as its steps name them.
KINDS = ("conv", "fc")


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
class Source:
    """A weights file as read: what its net computes, its weight layers, and how to match
    them to a spec's (arrays by the spec's names, each shape checked)."""

    kind: str  # e.g. "Caffe V1", "MatConvNet simplenn"
    steps: list[Step]
    input_shape: tuple[int, ...] | None  # (C, H, W) where the file says it (C 0: not said)
    weight_layers: list[tuple[str, str]]  # (name, "conv" or "fc") in file order
    channels: int  # what its first weight layer takes
    match: Callable[[list[Target], str], dict[str, np.ndarray]]
    pixels: Preprocessing | None
    notes: list[str] = field(default_factory=list)


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
    implied: bool = False  # the spec is the one the file implies (no spec was given)


def weight_targets(graph) -> list[Target]:
    """The conv and FC layers of a compiled spec, in order: what a file's weight layers must
    match. From the graph's shapes, before any net is made: a spec far larger than the
    file (an input of 65536×65536) is refused by shape, not by an allocation that fails."""
    targets, kind = [], ""
    for name in nodes(graph):
        operation, in_shape = op(graph, name), tuple(meta(graph, name).in_shape or ())
        # The layer's kind as weights files write it: its op's own step (a BN's is its layer's).
        kind = next((s.kind for s in operation.steps(name, in_shape) if s.kind in KINDS), kind)
        if (weighted := operation.trait(Weighted)) is not None:
            shapes = weighted.tensors(in_shape)
            fc_input = (*in_shape, 1, 1)[:3] if kind == "fc" else ()
            targets.append(
                Target(name, kind, tuple(shapes["weight"]), tuple(shapes["bias"]), fc_input)
            )
    return targets


def _strip_ones(shape) -> tuple[int, ...]:
    """A shape without its leading 1s: Caffe's legacy 4-D blobs write an FC weight as
    (1, 1, out, in) and a bias as (1, 1, 1, out)."""
    shape = tuple(int(d) for d in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _count_mismatch(source: str, theirs: list[tuple[str, str]], spec_name: str, ours):
    def span(names):
        return f"{names[0]} … {names[-1]}" if names else "none"

    convs = [name for name, kind in theirs if kind == "conv"]
    if len(convs) == len(theirs) == sum(t.kind == "conv" for t in ours) < len(ours):
        return StructureError(
            f"{source} has no FC layers (a convolutional body, like Keras' _notop files): "
            f"give a spec without them ({spec_name} has {len(ours) - len(convs)})"
        )
    return ConvertError(
        f"{source}: {len(theirs)} weight layers ({span([n for n, _ in theirs])}), but "
        f"{spec_name} has {len(ours)} ({span([t.name for t in ours])}): weights of another net"
    )


def _read_caffe(path: Path) -> Source:
    model = read_caffemodel(path)

    def match(targets: list[Target], spec_name: str) -> dict[str, np.ndarray]:
        arrays = {}
        for layer, target in zip(model.layers, targets, strict=True):
            if len(layer.blobs) != 2:
                raise ConvertError(
                    f"{path}: layer {layer.name} ({layer.type}) has {len(layer.blobs)} blobs; "
                    f"the spec's {target.name} needs a weight and a bias"
                )
            weight, bias = layer.blobs
            pairs = ((weight, target.weight, "weight"), (bias, target.bias, "bias"))
            for blob, wanted, what in pairs:
                if _strip_ones(blob.shape) != _strip_ones(wanted):
                    raise ConvertError(
                        f"{path}: layer {layer.name} ({layer.type}) has {what} "
                        f"{tuple(blob.shape)}; the spec's {target.name} needs {wanted}"
                    )
            # Caffe's InnerProduct weight is (out, in) with `in` flattened C×H×W, as
            # torch's flatten: fc6 is a reshape, no permutation.
            arrays[f"{target.name}.weight"] = weight.reshape(target.weight)
            arrays[f"{target.name}.bias"] = bias.reshape(target.bias)
        return arrays

    first = model.layers[0].blobs[0].shape if model.layers and model.layers[0].blobs else ()
    channels = int(first[1]) if len(first) == 4 else 0
    kinds = [(la.name, "conv" if la.type == "Convolution" else "fc") for la in model.layers]
    return Source(
        f"Caffe {model.layout}", model.steps, model.input_shape, kinds, channels, match,
        CAFFE_PIXELS,
    )  # fmt: skip


def _hwck(shape) -> str:
    """A torch conv shape (K, C, H, W) written as MatConvNet's H×W×C×K."""
    k, c, h, w = shape
    return f"{h}×{w}×{c}×{k}"


def _read_matconvnet(path: Path) -> Source:
    model = read_matconvnet(path)

    def match(targets: list[Target], spec_name: str) -> dict[str, np.ndarray]:
        arrays = {}
        for layer, target in zip(model.layers, targets, strict=True):
            # MatConvNet filters are H×W×C×K; an FC layer is a conv over its whole input
            # (fc6: 7×7×512×4096), so its weight is the filter transposed to K×C×H×W and
            # flattened C×H×W like torch's flatten.
            wanted = target.weight
            if target.kind == "fc":
                wanted = (target.weight[0], *target.fc_input)
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
        return arrays

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
    channels = int(model.layers[0].filters.shape[2]) if model.layers else 0
    # Every weight layer is a conv in the file; the comparison tells FC layers apart.
    kinds = [(layer.name, "conv") for layer in model.layers]
    steps = model.steps
    return Source(
        "MatConvNet simplenn", steps, model.input_shape, kinds, channels, match, pixels, notes
    )


def _read_keras(path: Path) -> Source:
    model = read_keras(path)

    def match(targets: list[Target], spec_name: str) -> dict[str, np.ndarray]:
        arrays, first_fc = {}, True
        for layer, target in zip(model.layers, targets, strict=True):
            if layer.kind == "conv":  # H×W×In×Out → Out×In×H×W
                weight = layer.kernel.transpose(3, 2, 0, 1)
            else:  # in×out; the first FC after the convs reads the map flattened H×W×C
                weight = layer.kernel.T
                c, h, w = target.fc_input
                if first_fc and layer.kernel.shape[0] == c * h * w:
                    rows = layer.kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1)
                    weight = rows.reshape(-1, c * h * w)
                first_fc = False
            if weight.shape != target.weight or layer.bias.shape != target.bias:
                raise ConvertError(
                    f"{path}: layer {layer.name} has kernel {layer.kernel.shape} and bias "
                    f"{layer.bias.shape}; the spec's {target.name} needs "
                    f"{_keras_shape(target)} and {target.bias}"
                )
            arrays[f"{target.name}.weight"] = weight
            arrays[f"{target.name}.bias"] = layer.bias
        return arrays

    channels = int(model.layers[0].kernel.shape[2]) if model.layers else 0
    kinds = [(layer.name, layer.kind) for layer in model.layers]
    return Source(
        model.layout, model.steps, model.input_shape, kinds, channels, match, CAFFE_PIXELS,
        list(model.notes),
    )  # fmt: skip


def _keras_shape(target: Target) -> tuple[int, ...]:
    """A spec's weight shape as Keras writes its kernel."""
    if target.kind == "conv":
        k, c, h, w = target.weight
        return (h, w, c, k)
    return tuple(reversed(target.weight))


def source_format(path: Path) -> str:
    """ "matconvnet", "keras" or "caffe", by the file's first bytes, else its suffix."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    suffix = path.suffix.lower()
    if head[:6] == b"MATLAB" or suffix == ".mat":
        return "matconvnet"
    if head == HDF5_SIGNATURE or suffix in (".h5", ".hdf5"):
        return "keras"
    return "caffe"


def is_matconvnet(path: Path) -> bool:
    """A MATLAB file by its header (v5 files start with 'MATLAB'), or by its suffix."""
    return source_format(path) == "matconvnet"


def _why(error: CaffeError) -> str:
    """The reason in a CaffeError's message: "not a readable .caffemodel (WHY)" → WHY."""
    found = re.search(r"\((.*)\)$", str(error))
    return found.group(1) if found else str(error)


# torchvision's and vggspec's own formats load as they are.
NO_CONVERSION = (
    ". A torchvision .pth or a safetensors file needs no conversion: give it to `run eval` or "
    "`run features` as --weights FILE with --spec SPEC"
)
READERS = {"caffe": _read_caffe, "matconvnet": _read_matconvnet, "keras": _read_keras}


def read_source(path: str | os.PathLike) -> Source:
    """A .caffemodel, MatConvNet .mat or Keras .h5 read as a Source."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a weights file" if path.is_dir() else "not a regular file"
        raise ConvertError(f"{path}: {what if path.exists() else 'no such weights file'}")
    kind = source_format(path)
    try:
        source = READERS[kind](path)
    except CaffeError as e:  # Caffe files have no signature: any other file lands here
        suffix = path.suffix.lower()
        if suffix in (".caffemodel", ".caffe", ".binaryproto"):
            raise
        raise ConvertError(
            f"{path}: not a file `vggspec convert` reads (a Caffe .caffemodel, a MatConvNet .mat "
            f"or a Keras .h5): read as a .caffemodel, {_why(e)}"
            + (NO_CONVERSION if suffix in (".pth", ".pt", ".safetensors") else "")
        ) from None
    if not source.weight_layers:
        raise ConvertError(f"{path}: a {source.kind} file without a layer that has weights")
    return source


def spec_of(path: str | os.PathLike, source: Source | None = None) -> Spec:
    """The spec a weights file implies (canonical notation, the file's input size or 224);
    StructureError names the first layer the notation cannot express."""
    path = Path(path)
    source = source or read_source(path)
    description = f"Implied by {path.name} ({source.kind})"
    return implied_spec(source.steps, source.input_shape, source.channels, str(path), description)


def convert(
    path: str | os.PathLike, spec: Spec | None = None, spec_name: str = "the spec",
    rgb: bool = False,
) -> Converted:  # fmt: skip
    """Read a .caffemodel, MatConvNet .mat or Keras .h5, check that its net computes what
    `spec`'s computes (without a spec: take the spec the file implies), and match its
    weight layers to the spec's by order and shape. `rgb` reverses conv1_1's input channels
    so that a BGR (Caffe) net takes RGB. Raises ConvertError (StructureError for another
    function) naming the layer and both sides."""
    path = Path(path)
    source = read_source(path)
    implied = spec is None
    if implied:
        spec, spec_name = spec_of(path, source), "the spec it implies"
    name = path.stem if implied else Path(spec_name).stem  # the net's name in its file
    try:
        graph = compile_spec(spec, name=name)
    except SpecError as err:  # a given spec's own error (its input too small) says itself
        if not implied:
            raise
        raise StructureError(f"{path}: the spec it implies does not compile: {err}") from None
    targets = weight_targets(graph)
    if len(source.weight_layers) != len(targets):
        raise _count_mismatch(str(path), source.weight_layers, spec_name, targets)
    try:
        compare(source.steps, spec_steps(graph), str(path))
    except StructureError as err:
        if not implied:
            raise
        raise StructureError(
            f"{err} (in the spec the file implies: no spec says its net)"
        ) from None
    arrays = source.match(targets, spec_name)
    net = lower(graph, "torch")  # its weights are the file's: a size the file has
    pixels, notes = source.pixels, list(source.notes)
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
    return Converted(net, arrays, info, str(path), f"{path.name} ({source.kind})", notes, implied)


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
        seal(tmp)

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
