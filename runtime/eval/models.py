"""The nets an evaluation runs: a training run's checkpoint or weights from elsewhere, each
with its dense twin, pixel convention, class names and test scales."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from vggspec.compiler import Spec, SpecError, compile_spec, load_spec, parse
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.frontend.printer import format_spec
from vggspec.compiler.ir.ops.box import BOXES
from vggspec.compiler.lowering.net import (
    Net,
    classifier_index,
    densify,
    fold_batch_norm,
    head_task,
    lower,
    with_num_classes,
    with_outputs,
)

from ..data.preprocessing import Preprocessing, PreprocessingError
from ..data.scale import TrainScale
from ..io.checkpoint import CheckpointError, load_checkpoint
from ..io.convert import convert, to_net
from ..io.model_info import KEY as INFO_KEY
from ..io.model_info import ModelInfo
from ..io.rundir import RunDirError, model_file
from ..io.weights import (
    WeightsError,
    check_data_digest,
    load,
    load_state,
    load_torchvision,
    read_metadata,
    torch_load,
    torchvision_keys,
)
from .classify.dense import engine_sample
from .engines.serving import Serving


class EvalError(VggspecError):
    """A mistake in what an evaluation was asked to do: told in one message."""


@dataclass
class EvalModel:
    """One net as the test protocol sees it."""

    name: str  # the configuration, as the paper's tables name it (spec file stem)
    source: str  # the file the weights came from
    net: Net  # the classifier, for crops
    twin: Net  # its fully-convolutional twin (shares the weights), for whole images
    preprocessing: Preprocessing
    class_names: list[str] | None  # output order; None: unknown (weights from elsewhere)
    train_scale: TrainScale | None  # S or [S_min, S_max] if known
    scales: list[int] = field(default_factory=list)  # test scales Q
    boxes: bool = False  # a localisation net: its outputs are boxes (4 per class, or 4)
    serving: Serving = field(default_factory=Serving)  # the engine that computes its outputs

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.net.input_size)

    @property
    def outputs(self) -> int:
        return self.net.outputs

    @property
    def per_class(self) -> bool:
        """A localisation net with a box per class (PCR), not one for all (SCR)."""
        return self.boxes and BOXES.per_class(self.outputs)

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def train_scale_text(self) -> str:
        return "?" if self.train_scale is None else str(self.train_scale)

    def choose_engine(self, form: Net, say) -> None:
        """Decide now, before any image, what computes this net: `form` is the one of its
        nets that the passes run first (dense twin, classifier, feature cut), measured on
        random images of its first test scale (the classifier: of its input size). Under
        torch.distributed every rank calls this for the same nets in the same order (ranks
        hold different images, some none): each takes rank 0's choice."""
        size = self.input_size if form is self.net else (min(self.scales),) * 2
        device = next(form.parameters()).device
        sample = engine_sample(self.preprocessing, size, device)
        self.serving.choose(form, sample, lambda line: say(f"{self.name} ({self.source}): {line}"))


def default_scales(train_scale: TrainScale | None, input_size: tuple[int, int]) -> list[int]:
    """The paper's test scales (Sect. 4.2): {S−32, S, S+32} for a fixed S, {S_min,
    (S_min+S_max)/2, S_max} for a jittered one. Unknown S (weights from elsewhere) is taken
    as a fixed 256·(input/224). Scales below the input size are left out."""
    s = train_scale
    if s is None:
        s = TrainScale.parse(round(min(input_size) * 256 / 224))
    candidates = [s.lo, s.single, s.hi] if s.jittered else [s.lo - 32, s.lo, s.lo + 32]
    kept = sorted({q for q in candidates if q >= min(input_size)})
    return kept or [max(input_size)]


def single_scale(model: EvalModel) -> int:
    """The single test scale of Table 3: Q = S for a fixed S, (S_min + S_max)/2 for a
    jittered one, when that is among the net's test scales; otherwise the median of the
    test scales."""
    if model.train_scale is not None:
        q = model.train_scale.single
        if q in model.scales:
            return q
    ordered = sorted(model.scales)
    return ordered[len(ordered) // 2]


# The largest test scale, as a multiple of the input size: 1792 for 224 (the paper's
# largest is 512), whose first conv layer already holds ~2.5 GB at an aspect of 3.
MAX_SCALE_FACTOR = 8


def check_scales(model: EvalModel, scales: list[int]) -> list[int]:
    if not scales:
        raise EvalError("--scales needs at least one test scale Q")
    low = min(model.input_size)
    too_small = [q for q in scales if q < low]
    if too_small:
        h, w = model.input_size
        raise EvalError(
            f"test scale Q={too_small[0]} is smaller than {model.name}'s {h}x{w} input: "
            f"dense and multi-crop evaluation need Q ≥ {low}"
        )
    high = MAX_SCALE_FACTOR * max(model.input_size)
    too_large = [q for q in scales if q > high]
    if too_large:
        raise EvalError(
            f"test scale Q={too_large[0]} is more than {MAX_SCALE_FACTOR}× {model.name}'s input "
            f"(Q ≤ {high}; the paper tests at most 512 for 224): its activations would not "
            "fit in memory"
        )
    return sorted(set(scales))


def regresses_boxes(net: Net) -> bool:
    """True for a localisation net, whose head (`box`) makes its outputs box parameters."""
    return head_task(net.spec).pick(labels=False, boxes=True)


def check_box_width(outputs: int, classes: int, source: str) -> None:
    """A box head has 4 outputs (SCR) or 4 per class (PCR): the box task's rule."""
    if not BOXES.fits(outputs, classes):
        raise EvalError(
            f"{source}: a box head of {outputs} outputs for {classes} classes: it must have 4 "
            f"(single-class regression) or 4 × {classes} = {4 * classes} (per-class regression)"
        )


def _check_rgb(net: Net, source: str) -> None:
    if net.spec.input.channels != 3:
        raise EvalError(f"{source}: the spec's input is gray; evaluation reads RGB images")


def same_network(a: Spec, b: Spec) -> bool:
    """Same input and layers (the comment block and the class count may differ: training
    resizes the last FC layer to the data's classes)."""
    if classifier_index(a) is not None and classifier_index(b) is not None:
        a, b = with_num_classes(a, 1), with_num_classes(b, 1)
    return a.input == b.input and a.layers == b.layers


def _spec_mismatch(source: str, theirs: Spec, spec_path: str, ours: Spec) -> EvalError:
    mine = format_spec(Spec(ours.layers, ours.input)).strip().splitlines()
    other = format_spec(Spec(theirs.layers, theirs.input)).strip().splitlines()
    line = next(
        (i for i, (x, y) in enumerate(zip(mine, other, strict=False)) if x != y),
        min(len(mine), len(other)),
    )
    shown = lambda lines: lines[line] if line < len(lines) else "(ends)"  # noqa: E731
    return EvalError(
        f"{source} holds a net of another spec than --spec {spec_path}: its line "
        f"{line + 1} is {shown(other)!r}, the spec's is {shown(mine)!r}"
    )


def _empty_net(spec: Spec, name: str, backend: str, outputs: int | None = None) -> Net:
    """The net of a spec with uninitialised weights, for loading into (every tensor is then
    checked and overwritten by `load_state`); `outputs` resizes its last FC layer."""
    if outputs is not None:
        spec = with_outputs(spec, outputs)
    return lower(compile_spec(spec, name=name), backend)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A model file, given it or a training run folder (its model.safetensors, or the last
    training checkpoint of a run that has not finished)."""
    try:
        return model_file(path)
    except RunDirError as err:
        raise EvalError(str(err)) from None


def _finish(
    net: Net,
    name: str,
    source: str,
    preprocessing: Preprocessing,
    class_names,
    train_scale: TrainScale | None,
    device,
) -> EvalModel:
    _check_rgb(net, source)
    # Evaluation runs on running statistics: BN folded into its layer, nothing left to run.
    net = fold_batch_norm(net.eval()).to(device)
    boxes = regresses_boxes(net)
    if boxes and class_names is not None:
        check_box_width(net.outputs, len(class_names), source)
    elif class_names is not None and len(class_names) != net.num_classes:
        raise EvalError(
            f"{source}: {len(class_names)} class names for a net with {net.num_classes} outputs"
        )
    model = EvalModel(
        name, source, net, densify(net).eval(), preprocessing, class_names, train_scale
    )
    model.boxes = boxes
    model.scales = default_scales(train_scale, model.input_size)
    return model


def load_checkpoint_model(
    path: str | os.PathLike,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    expected_spec: str | None = None,
    preprocessing: str | None = None,
) -> EvalModel:
    """A net trained by `vggspec run train`: its model.safetensors (or a run folder, or a
    training checkpoint .pt). `expected_spec` (a .vgg path) must describe the same net."""
    file = resolve_checkpoint(path)
    source = str(file)
    if file.suffix == ".pt":
        try:
            state = load_checkpoint(file)
        except CheckpointError as err:
            raise EvalError(str(err)) from None
        try:
            spec = parse(state["spec"], f"{file} (embedded spec)")
        except SpecError as err:
            raise EvalError(f"{file}: its embedded spec does not parse:\n{err}") from None
        name = Path(str(state.get("config", {}).get("spec", "spec"))).stem
        net = load_state(_empty_net(spec, name, backend), state["model"], source)
        saved = state.get(INFO_KEY) or {}
    else:
        try:
            net = load(file, backend)
        except WeightsError as err:
            foreign = "no spec in its metadata" in str(err)
            hint = " (weights from elsewhere: --weights FILE --spec SPEC)" if foreign else ""
            raise EvalError(f"{err}{hint}") from None
        saved = read_metadata(file).get(INFO_KEY)
        name = str(net.graph.graph.get("name", file.stem))
    if expected_spec is not None:
        wanted = load_spec(expected_spec)
        if not same_network(net.spec, wanted):
            raise _spec_mismatch(source, net.spec, expected_spec, wanted)
    choice = preprocessing or "vggspec"
    info = _model_info(saved, source, choice)
    names = list(info.class_names) if info.class_names is not None else None
    return _finish(
        net, name, source, _preprocessing(choice, info, source), names, info.train_scale, device
    )


def _model_info(saved: str | dict | None, source: str, choice: str) -> ModelInfo:
    """The model information saved with a net (JSON text or its object); its pixel
    convention is read only when it is the one asked for (`choice` "vggspec")."""
    pixels = choice == "vggspec"
    try:
        if isinstance(saved, dict):
            return ModelInfo.from_metadata(saved, source, pixels)
        return ModelInfo.from_json(saved, source, pixels)
    except PreprocessingError as err:
        raise EvalError(str(err)) from None


def _preprocessing(choice: str, info: ModelInfo, source: str) -> Preprocessing:
    """The pixel convention asked for: a named one, or ("vggspec") the one the net saved."""
    if choice == "vggspec" and info.preprocessing is not None:
        return info.preprocessing
    return Preprocessing.named(choice, {}, source)


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, vggspec metadata or {}) of a .safetensors or torch .pth/.pt state_dict."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
        try:
            metadata = read_metadata(path)
        except WeightsError:
            metadata = {}
        check_data_digest(path, metadata)
        return tensors, metadata
    state = torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint's weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state_dict of tensors")
    return state, {}


def load_weights_model(
    weights: str | os.PathLike,
    spec_path: str,
    preprocessing: str | None,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    class_names: list[str] | None = None,
    train_scale: TrainScale | None = None,
) -> EvalModel:
    """Weights from elsewhere for the net `spec_path` describes: a torchvision VGG
    state_dict (.pth, or safetensors with torchvision's names), a safetensors file with
    vggspec's names (the class count follows the file's last layer), or a Caffe, MatConvNet
    or Keras file, converted here once its net is checked against the spec's."""
    path = Path(weights)
    if not path.is_file():
        raise EvalError(f"{path}: no such weights file")
    spec = load_spec(spec_path)
    if path.suffix.lower() in (".caffemodel", ".mat", ".h5", ".hdf5"):  # converted here
        converted = convert(path, spec, spec_path)
        net = to_net(converted, _empty_net(spec, Path(spec_path).stem, backend))
        chosen = _preprocessing(preprocessing or "vggspec", converted.info, str(path))
        stem = Path(spec_path).stem
        return _finish(net, stem, str(path), chosen, class_names, train_scale, device)
    tensors, metadata = _read_tensors(path)
    if "spec" in metadata:
        theirs = parse(metadata["spec"], f"{path} (embedded spec)")
        if not same_network(theirs, spec):
            raise _spec_mismatch(str(path), theirs, spec_path, spec)
    name = Path(spec_path).stem
    net = _empty_net(spec, name, backend)
    torchvision_layout = any(k.startswith(("features.", "classifier.")) for k in tensors)
    ours_to_file = torchvision_keys(net) if torchvision_layout else {k: k for k in net.state_dict()}
    last_layer = [k for k in net.state_dict() if k.endswith(".weight")][-1]
    classes_in_file = tensors.get(ours_to_file.get(last_layer, ""))
    if classes_in_file is not None and classes_in_file.shape[0] != net.outputs:
        net = _empty_net(spec, name, backend, int(classes_in_file.shape[0]))
    try:
        if torchvision_layout:
            load_torchvision(net, tensors)
        else:
            load_state(net, tensors, str(path))
    except WeightsError as err:
        raise EvalError(f"{path} does not fit --spec {spec_path}: {err}") from None
    saved = metadata.get(INFO_KEY) if metadata else None
    if preprocessing is None:
        if saved in (None, "", "{}"):
            raise EvalError(
                f"{path}: say how its pixels were normalised with --preprocess caffe "
                "(the VGG release: BGR minus the mean pixel) or torchvision (RGB on [0,1], "
                "mean/std)"
            )
        preprocessing = "vggspec"
    info = _model_info(saved, str(path), preprocessing)
    chosen = _preprocessing(preprocessing, info, str(path))
    names = class_names or (list(info.class_names) if info.class_names is not None else None)
    scale = train_scale if train_scale is not None else info.train_scale
    return _finish(net, name, str(path), chosen, names, scale, device)
