"""Weights in and out: safetensors files that carry their spec, torchvision's VGG
layout, and the paper's pre-initialisation of a deep net from net A."""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from vggspec.compiler import SpecError, compile_spec, parse
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.ir.graph import meta, nodes, op
from vggspec.compiler.ir.ops.base import NotInTorchvision
from vggspec.compiler.ir.ops.traits import Epilogue, Weighted
from vggspec.compiler.lowering.net import Net, Weights, lower

from .atomic import atomic_write
from .model_info import KEY, ModelInfo

FORMAT = "vggspec-net/1"
# The metadata key of the CRC-32 of a file's tensor bytes (all that follows its header), as
# zip keeps one per entry: safetensors keeps no checksum, and a file with bytes changed on
# disk loaded as another net. Written as a placeholder, then filled in place once the bytes
# are on disk (`seal`). CRC-32 and not sha256: 0.22 s for 512 MiB here against 0.76 s, and
# what it guards against is damage, not forgery.
DIGEST_KEY = "data_crc32"
_PLACEHOLDER = "0" * 8


class WeightsError(VggspecError):
    """A weights file or state_dict that does not fit: what, where and why."""


def torch_load(path: Path):
    """A .pth file read with weights_only=True (never runs pickled code); any failure is
    one line about the file."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path}: cannot read as a plain torch state_dict (vggspec reads .pth files with "
            "weights_only=True: tensors only, no pickled objects)"
        ) from None
    except Exception as err:  # torch.load fails in many ways on a bad file; all are the file's
        lines = str(err).strip().splitlines()
        gist = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise WeightsError(f"{path}: cannot read as a torch state_dict ({gist})") from None


def save(net: Net, path: str | os.PathLike, info: ModelInfo | None = None) -> Path:
    """Write the net as safetensors, with its spec text and its model information
    (preprocessing, class names, training scale; the input size is the net's) in the
    metadata. Atomic: a crash mid-write leaves any previous file intact."""
    path = Path(path)
    names = info.class_names if info is not None else None
    if names is not None and net.num_classes is not None and len(names) != net.num_classes:
        raise WeightsError(
            f"{path}: {len(names)} class names for a net of {net.num_classes} classes"
        )
    metadata = file_metadata(net, info)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}

    def write(tmp) -> None:
        save_file(tensors, tmp, metadata=metadata)
        sort_metadata(tmp)
        seal(tmp)

    try:
        atomic_write(path, write)
    except SafetensorError as err:  # a full disk: "I/O error: No space left on device"
        raise OSError(errno.EIO, f"cannot write {path}: {err}") from None
    return path


def sort_metadata(path: str | os.PathLike) -> None:
    """Rewrite, in place, the header of a safetensors file with its metadata in key order.
    safetensors keeps the metadata in a Rust HashMap, whose order changes from one process
    to the next: two identical nets gave files of different bytes, so no checksum could
    confirm that two runs agree. Same keys and values, same length: only the order moves."""
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        text = f.read(length)
        header = json.loads(text)
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        ordered = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(ordered) > length:  # cannot happen for JSON written compactly; never grow
            raise ValueError(f"{path}: the sorted safetensors header is longer than the original")
        f.seek(8)
        f.write(ordered + b" " * (length - len(ordered)))  # safetensors pads with spaces


def data_digest(path: str | os.PathLike) -> str:
    """CRC-32 (8 hex digits) of the bytes after a safetensors file's header: every tensor's."""
    crc = 0
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + length)
        while chunk := f.read(16 << 20):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def seal(path: str | os.PathLike) -> None:
    """Fill in, in place, the DIGEST_KEY placeholder of a safetensors file just written (its
    header compact JSON, as `sort_metadata` and convert's writer leave it)."""
    placeholder = f'"{DIGEST_KEY}":"{_PLACEHOLDER}"'.encode()
    digest = data_digest(path)
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        at = f.read(length).index(placeholder)
        f.seek(8 + at + len(placeholder) - len(_PLACEHOLDER) - 1)
        f.write(digest.encode())


def check_data_digest(path: str | os.PathLike, metadata: dict) -> None:
    """WeightsError unless the tensors' bytes are those the file was written with; a file
    without the digest (written before it, or elsewhere) is taken as it is."""
    expected = metadata.get(DIGEST_KEY)
    if expected is not None and data_digest(path) != expected:
        raise WeightsError(
            f"{path}: damaged: its tensors' bytes fail the CRC-32 written with them "
            "(the file changed after it was written, on its disk or in a copy)"
        )


def file_metadata(net: Net, info: ModelInfo | None = None) -> dict[str, str]:
    """The metadata of a vggspec safetensors file (what `read_metadata` checks and `load`
    rebuilds the net from): format, spec text, name and the model information, whose input
    size is the net's. Every writer of these files uses it."""
    info = (info or ModelInfo()).with_input_size(net.input_size)
    return {
        "format": FORMAT,
        "spec": net.spec_text(),
        "name": str(net.graph.graph.get("name", "spec")),
        KEY: info.to_json(),
        DIGEST_KEY: _PLACEHOLDER,  # filled in by `seal` once the tensors are written
    }


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a vggspec safetensors file, checked."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT or "spec" not in metadata:
        raise WeightsError(f"{path}: not a vggspec net (no spec in its metadata)")
    return metadata


def load(path: str | os.PathLike, backend: str = "auto", dropout: float = 0.5) -> Net:
    """A net saved by `save`, rebuilt from the spec text it carries. Never unpickles.
    What it expects of its input and what its outputs mean: `read_model_info(path)`."""
    path = Path(path)
    metadata = read_metadata(path)
    try:
        spec = parse(metadata["spec"], f"{path} (embedded spec)")
        graph = compile_spec(spec, name=metadata.get("name", path.stem))
    except SpecError as err:
        raise WeightsError(f"{path}: its embedded spec does not compile:\n{err}") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: corrupt or truncated weights ({err})") from None
    check_data_digest(path, metadata)
    net = lower(graph, backend, dropout)
    return load_state(net, tensors, str(path))


def load_state(net: Net, tensors: dict[str, torch.Tensor], source: str) -> Net:
    """Copy tensors into the net after checking names and shapes; errors say which."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}")
        if unexpected:
            shown = ", ".join(unexpected[:6]) + (" …" if len(unexpected) > 6 else "")
            parts.append(f"unexpected {shown}")
        raise WeightsError(f"{source}: weights do not match the spec: {'; '.join(parts)}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"{source}: {key} has shape {tuple(value.shape)}, "
                f"the spec needs {tuple(expected[key].shape)}"
            )
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return net


def torchvision_keys(net: Net) -> dict[str, str]:
    """Our parameter name → torchvision's, for the layout of torchvision.models.vgg:
    `features` holds conv, ReLU and max-pool modules in order, `classifier` holds
    Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear; the `_bn` nets put a
    BatchNorm2d (weight, bias and its running statistics) between each conv and ReLU."""
    fused = compile_spec(net.spec)  # one node per conv or FC, with its ReLU (and dropout)
    mapping, position = {}, {"features": 0, "classifier": 0}
    for n in nodes(fused):
        operation = op(fused, n)
        try:
            place = operation.torchvision()
        except NotInTorchvision as err:
            raise WeightsError(str(err)) from None
        if place is None:
            continue
        if (weighted := operation.trait(Weighted)) is not None:
            index = position[place.section]
            in_shape = meta(fused, n).in_shape
            for p in [*weighted.tensors(in_shape), *weighted.buffers(in_shape)]:
                mapping[f"{n}.{p}"] = f"{place.section}.{index}.{p}"
        position[place.section] += place.count
    return mapping


def to_torchvision(net: Net) -> dict[str, torch.Tensor]:
    """The net's weights as a torchvision VGG state_dict (vgg11/13/16/19 for A/B/D/E)."""
    if net.dense:
        raise WeightsError("export the net itself, not its dense twin")
    state = net.state_dict()
    return {theirs: state[ours].detach().clone() for ours, theirs in torchvision_keys(net).items()}


def load_torchvision(net: Net, state_dict: dict | str | os.PathLike) -> Net:
    """Load a torchvision VGG state_dict (or a .pth file of one, read with
    weights_only=True) into the net; names and shapes are checked."""
    if not isinstance(state_dict, dict):
        path = Path(state_dict)
        state_dict = torch_load(path)
        if not isinstance(state_dict, dict):
            raise WeightsError(f"{path}: holds a {type(state_dict).__name__}, not a state_dict")
    theirs_to_ours = {theirs: ours for ours, theirs in torchvision_keys(net).items()}
    extra = sorted(set(state_dict) - set(theirs_to_ours))
    if extra:
        raise WeightsError(
            "not the torchvision VGG layout of this spec: unexpected keys "
            + ", ".join(extra[:6])
            + (
                " (a batch-norm net: write its spec with BN, as specs/D-BN.vgg)"
                if any(k.endswith("running_mean") for k in extra)
                else ""
            )
        )
    renamed = {theirs_to_ours[k]: v for k, v in state_dict.items()}
    return load_state(net, renamed, "torchvision state_dict")


def weight_layers(net: Net) -> dict[str, list[list[str]]]:
    """Each weight layer of `net` under its list in torchvision's layout (conv layers in
    "features", FC layers in "classifier"), in order, with the weight nodes that belong to
    it (its BN)."""
    groups: dict[str, list[list[str]]] = {"features": [], "classifier": []}
    current = None
    for name, operation in net.layers():
        if operation.trait(Weighted) is None:
            continue
        if operation.trait(Epilogue):  # BN: goes with its layer
            if current is not None:
                current.append(name)
            continue
        current = [name]
        groups[operation.torchvision().section].append(current)
    return groups


def init_from(net: Net, source: Net, convs: int = 4, fcs: int = 3) -> list[str]:
    """The paper's pre-initialisation (Sect. 3.1): copy the first `convs` conv layers
    and the last `fcs` FC layers of a trained shallower net (A) into the same-named
    layers of `net` (conv1_1, conv2_1, conv3_1, conv3_2, fc6, fc7, fc8 from A), leaving
    the rest as they are; a layer's BN (weights and running statistics) goes with it.
    Returns the names copied; refuses if any shape differs."""
    layers = weight_layers(source)
    groups = layers["features"][:convs] + layers["classifier"][-fcs:]
    return _copy_layers(net, source, [name for group in groups for name in group], "init_from")


def init_all_but_last(net: Net, source: Net) -> list[str]:
    """Appendix A's start of a localisation net: every weight layer of a trained
    classification net `source` of the same body but its last one (the class scores), which
    keeps its fresh initialisation. Returns the names copied; refuses if a shape differs."""
    layers = weight_layers(source)
    groups = layers["features"] + layers["classifier"][:-1]
    return _copy_layers(net, source, [name for group in groups for name in group], "init")


def _copy_layers(net: Net, source: Net, chosen: list[str], what: str) -> list[str]:
    for name in chosen:
        target = getattr(net, name, None)
        if not isinstance(target, Weights):
            raise WeightsError(f"{what}: the target net has no layer {name}")
        theirs = getattr(source, name)
        if target.weight.shape != theirs.weight.shape or (
            target.state_dict().keys() != theirs.state_dict().keys()
        ):
            raise WeightsError(
                f"{what}: {name} is {tuple(theirs.weight.shape)} in the source net but "
                f"{tuple(target.weight.shape)} in the target"
            )
    with torch.no_grad():
        for name in chosen:
            target, theirs = getattr(net, name), getattr(source, name)
            mine = target.state_dict()
            for key, value in theirs.state_dict().items():
                mine[key].copy_(value)  # weight and bias, and BN's running statistics
    return chosen
