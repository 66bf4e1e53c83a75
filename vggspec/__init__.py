"""vggspec: declare, compile, train and evaluate VGG-style ConvNets in the paper's notation."""

from vggspec.compiler import (
    Graph,
    Spec,
    SpecError,
    compile_spec,
    dense_graph,
    format_graph,
    format_spec,
    load_spec,
)
from vggspec.compiler import parse as parse_spec
from vggspec.compiler.errors import VggspecError

# The torch-side API (vggspec/api.py, whose __all__ is this list) is imported on first
# use, so that `vggspec compile` and the notation tools start without loading torch.
TORCH_API = (
    "ModelInfo",
    "Net",
    "Preprocessing",
    "RunDir",
    "TrainScale",
    "build_net",
    "densify",
    "features",
    "fold_batch_norm",
    "inference_net",
    "init_from",
    "init_weights",
    "load",
    "load_torchvision",
    "lower",
    "model_info",
    "save",
    "to_torchvision",
)


def __getattr__(name: str):
    if name in TORCH_API:
        from vggspec import api

        return getattr(api, name)
    raise AttributeError(f"module 'vggspec' has no attribute {name!r}")


__all__ = [
    "Graph",
    "Spec",
    "SpecError",
    "VggspecError",
    "compile_spec",
    "dense_graph",
    "format_graph",
    "format_spec",
    "load_spec",
    "parse_spec",
    *TORCH_API,
]
