"""vggspec: declare, compile, train and evaluate VGG-style ConvNets in the paper's notation."""

from compiler import (
    Graph,
    Spec,
    SpecError,
    compile_spec,
    dense_graph,
    format_graph,
    format_spec,
    load_spec,
)
from compiler import parse as parse_spec

__all__ = [
    "Graph",
    "Spec",
    "SpecError",
    "compile_spec",
    "dense_graph",
    "format_graph",
    "format_spec",
    "load_spec",
    "parse_spec",
]
