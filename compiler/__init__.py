"""vggspec's compiler: notation front end, graph IR and passes (and, later, lowering)."""

from .ast import Conv, FullyConnected, Input, Lrn, MaxPool, SoftMax, Spec
from .errors import SpecError
from .graph import Graph, build_graph, format_graph, launch_count, verify
from .parser import parse
from .pipeline import compile_spec, dense_graph, score_map_size, with_input_size
from .printer import format_spec
from .source import load_spec, read_spec_text

__all__ = [
    "Conv",
    "FullyConnected",
    "Graph",
    "Input",
    "Lrn",
    "MaxPool",
    "SoftMax",
    "Spec",
    "SpecError",
    "build_graph",
    "compile_spec",
    "dense_graph",
    "format_graph",
    "format_spec",
    "launch_count",
    "load_spec",
    "parse",
    "read_spec_text",
    "score_map_size",
    "verify",
    "with_input_size",
]
