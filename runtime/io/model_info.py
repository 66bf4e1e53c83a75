"""What a trained net expects and knows (its preprocessing, class names, training scale S,
input size): kept beside the weights, in model.safetensors metadata and in checkpoints."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.preprocessing import Preprocessing, PreprocessingError
from ..data.scale import TrainScale
from .rundir import model_file

# The metadata key, and the checkpoint key, that hold it (a JSON object; the name predates
# this module and files written before it must still load).
KEY = "preprocess"


@dataclass(frozen=True)
class ModelInfo:
    """Everything but the weights that a trained net needs to be used: None where unknown
    (weights from elsewhere carry none of it)."""

    preprocessing: Preprocessing | None = None
    class_names: tuple[str, ...] | None = None
    train_scale: TrainScale | None = None
    input_size: tuple[int, int] | None = None

    def with_input_size(self, size) -> ModelInfo:
        return replace(self, input_size=(int(size[0]), int(size[1])))

    def to_metadata(self) -> dict:
        """The JSON object saved under `preprocess`: mean_rgb, pixel_range, std_rgb (if
        any), class_names, input_size, train_scale, as earlier files have them."""
        info = self.preprocessing.to_metadata() if self.preprocessing is not None else {}
        if self.class_names is not None:
            info["class_names"] = list(self.class_names)
        if self.input_size is not None:
            info["input_size"] = list(self.input_size)
        if self.train_scale is not None:
            info["train_scale"] = self.train_scale.to_json()
        return info

    @classmethod
    def from_metadata(cls, info: dict, source: str, pixels: bool = True) -> ModelInfo:
        """Read back what `to_metadata` wrote (or what the code before it wrote under
        `preprocess`). No mean_rgb: preprocessing unknown (None); a malformed one is an
        error that names `source`. `pixels=False` leaves the preprocessing unread (None),
        for a net told another pixel convention."""
        if not isinstance(info, dict):
            raise PreprocessingError(f"{source}: its {KEY} metadata is not a JSON object")
        known = pixels and "mean_rgb" in info
        preprocessing = Preprocessing.from_metadata(info, source) if known else None
        names = info.get("class_names")
        size = info.get("input_size")
        return cls(
            preprocessing,
            tuple(str(c) for c in names) if isinstance(names, list) else None,
            TrainScale.read(info.get("train_scale")),
            (int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None,
        )

    @classmethod
    def from_json(cls, text: str | None, source: str, pixels: bool = True) -> ModelInfo:
        try:
            info = json.loads(text) if text else {}
        except json.JSONDecodeError:
            raise PreprocessingError(f"{source}: its preprocessing metadata is not JSON") from None
        return cls.from_metadata(info, source, pixels)

    def to_json(self) -> str:
        return json.dumps(self.to_metadata())


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The model information of a model.safetensors, a training checkpoint (.pt) or a run
    folder (its model, or its last checkpoint before it finished)."""
    from .checkpoint import load_checkpoint
    from .weights import read_metadata

    file = model_file(path)
    if file.suffix == ".pt":
        state = load_checkpoint(file)
        return ModelInfo.from_metadata(dict(state.get(KEY) or {}), str(file))
    return ModelInfo.from_json(read_metadata(file).get(KEY), str(Path(file)))
