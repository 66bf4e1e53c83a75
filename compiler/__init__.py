"""vggspec's compiler: notation front end, graph IR, ops and passes, lowering to torch and
Triton kernels (the lowering is imported from its modules: it needs torch)."""

from .frontend.ast import Input, Spec
from .frontend.errors import SpecError
from .frontend.parser import parse
from .frontend.printer import format_spec
from .frontend.source import load_spec, read_spec_text
from .ir.graph import Graph, build_graph, format_graph, launch_count, verify
from .ir.ops.avgpool import AvgPool
from .ir.ops.batchnorm import BN
from .ir.ops.box import Box
from .ir.ops.conv import Conv
from .ir.ops.fc import FullyConnected
from .ir.ops.gap import Gap
from .ir.ops.lrn import Lrn
from .ir.ops.maxpool import MaxPool
from .ir.ops.softmax import SoftMax
from .ir.pipeline import compile_spec, dense_graph, score_map_size, with_input_size

__all__ = [
    "BN",
    "AvgPool",
    "Box",
    "Conv",
    "FullyConnected",
    "Gap",
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
