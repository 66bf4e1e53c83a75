"""The passes: shapes and their errors, fusion rules, densify's FC → conv mapping."""

import pytest
from helpers import SPECS
from vggspec.compiler import SpecError, compile_spec, dense_graph, load_spec, parse, score_map_size
from vggspec.compiler.ir.graph import (
    Graph,
    NodeMeta,
    build_graph,
    format_node,
    launch_count,
    meta,
    nodes,
    op,
    verify,
)
from vggspec.compiler.ir.ops.conv import Conv
from vggspec.compiler.ir.ops.dropout import Dropout
from vggspec.compiler.ir.ops.fc import FullyConnected
from vggspec.compiler.ir.ops.input import Input
from vggspec.compiler.ir.ops.relu import ReLU
from vggspec.compiler.ir.ops.spatial_mean import SpatialMean
from vggspec.compiler.ir.passes.fuse import fuse
from vggspec.compiler.ir.passes.shapes import infer_shapes


def test_shapes_follow_floor_mode_pooling():
    g = compile_spec(parse("input 37x50 RGB\nconv3-8 maxpool conv1-4 maxpool FC-3"))
    assert meta(g, "pool1").shape == (8, 18, 25)
    assert meta(g, "pool2").shape == (4, 9, 12)
    assert meta(g, "fc3").in_shape == (4, 9, 12)
    assert meta(g, "fc3").params == (4 * 9 * 12 + 1) * 3


def test_gray_input_has_one_channel():
    g = compile_spec(parse("input 28x28 gray\nconv5-6"))
    assert meta(g, "conv1_1").params == 5 * 5 * 1 * 6 + 6


def test_collapse_is_an_error_naming_the_layer_and_its_line():
    text = "input 8x8 RGB\nconv3-4 maxpool\nmaxpool\nmaxpool maxpool FC-2"
    with pytest.raises(SpecError) as info:
        compile_spec(parse(text, "tiny.vgg"))
    err = info.value
    assert "pool4" in err.message and "collapses" in err.message
    assert (err.loc.line, err.loc.column) == (4, 9)
    assert str(err).startswith("tiny.vgg:4:9: error:")


def test_conv_after_fc_is_an_error_at_the_conv():
    with pytest.raises(SpecError) as info:
        compile_spec(parse("conv3-4 maxpool FC-10\n  conv3-4", "x.vgg"), (32, 32))
    assert "cannot follow a fully connected" in info.value.message
    assert (info.value.loc.line, info.value.loc.column) == (2, 3)


def test_input_size_override():
    spec = load_spec(SPECS / "D.vgg")
    g = compile_spec(spec, (32, 32))
    assert meta(g, "pool5").shape == (512, 1, 1)
    assert meta(g, "fc6").params == (512 + 1) * 4096


def test_layer_names_follow_the_released_models():
    g = compile_spec(load_spec(SPECS / "A-LRN.vgg"), fused=False)
    assert nodes(g)[:5] == ["data", "conv1_1", "relu1_1", "norm1", "pool1"]
    assert nodes(g)[-8:] == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "prob"]
    demo = compile_spec(parse("conv3-4 maxpool conv3-4 FC-5 FC-2"), (16, 16), fused=False)
    # FC layers are numbered after the last conv stage, as fc6 follows stage 5 in VGG.
    assert [n for n in nodes(demo) if n.startswith("fc")] == ["fc3", "fc4"]


def test_receptive_field_jump_and_start():
    g = compile_spec(load_spec(SPECS / "A.vgg"))
    assert meta(g, "conv1_1").rf == (3, 3)
    assert meta(g, "pool1").rf == (4, 4) and meta(g, "pool1").jump == (2, 2)
    assert meta(g, "pool5").rf == (150, 150) and meta(g, "pool5").jump == (32, 32)
    assert meta(g, "pool5").start == (16.0, 16.0)
    assert meta(g, "fc6").rf == (342, 342)


def test_fuse_only_where_the_producer_has_a_single_user():
    g = build_graph(parse("conv3-4 conv3-4"), (8, 8))
    infer_shapes(g)
    # Give conv1_1 a second user: it must then keep its separate ReLU.
    g.add_node("tap", op=SpatialMean(), meta=NodeMeta())
    g.add_edge("conv1_1", "tap")
    fused = fuse(g)
    assert isinstance(op(fused, "relu1_1"), ReLU)
    assert op(fused, "conv1_1") == Conv(3, 4, relu=False)
    assert op(fused, "conv1_2").relu is True
    assert "relu1_2" not in fused


def test_fc_fuses_relu_and_dropout_on_the_first_two_only():
    g = compile_spec(load_spec(SPECS / "E.vgg"))
    assert op(g, "fc6") == FullyConnected(4096, relu=True, dropout=True)
    assert op(g, "fc7") == FullyConnected(4096, relu=True, dropout=True)
    assert op(g, "fc8") == FullyConnected(1000)
    assert meta(g, "fc6").fused == ["fc6", "relu6", "drop6"]


@pytest.mark.parametrize(
    "size, expected",
    [
        (None, (1, 1)),
        ((256, 256), (2, 2)),
        ((384, 384), (6, 6)),
        ((512, 512), (10, 10)),
        ((300, 300), (3, 3)),
        ((224, 300), (1, 3)),
    ],
)
def test_dense_score_map_sizes_of_D(size, expected):
    dense = dense_graph(compile_spec(load_spec(SPECS / "D.vgg")), size)
    assert score_map_size(dense) == expected


def test_densify_maps_fc_weights_onto_convs():
    dense = dense_graph(compile_spec(load_spec(SPECS / "D.vgg")), (384, 384))
    fc6, fc7, fc8 = (op(dense, n) for n in ("fc6", "fc7", "fc8"))
    assert fc6 == FullyConnected(4096, relu=True, dense_kernel=(7, 7))
    assert fc6.describe() == "conv7x7-4096+relu" and fc8.describe() == "conv1x1-1000"
    # the conv weights are views of the FC weights: (4096, 25088) as (4096, 512, 7, 7)
    assert fc6.tensors(meta(dense, "fc6").in_shape)["weight"] == (4096, 512, 7, 7)
    assert fc7.tensors(meta(dense, "fc7").in_shape)["weight"] == (4096, 4096, 1, 1)
    assert "weight = fc6.weight.reshape(4096, 512, 7, 7)" in format_node(dense, "fc6")
    assert fc8 == FullyConnected(1000, dense_kernel=(1, 1))
    assert nodes(dense)[-2:] == ["score_mean", "prob"]
    assert not any(isinstance(op(dense, n), Dropout) for n in dense)
    assert launch_count(dense) == 23


def test_densify_on_an_unfused_graph_keeps_params():
    g = compile_spec(load_spec(SPECS / "C.vgg"), fused=False)
    dense = dense_graph(g, (256, 256))
    assert dense.graph["totals"].params == 133_638_952
    assert score_map_size(dense) == (2, 2)


def test_verify_names_the_broken_invariant():
    g = Graph(passes=[])
    g.add_node("data", op=Input(3, 8, 8), meta=NodeMeta())
    g.add_node("a", op=ReLU(), meta=NodeMeta())
    g.add_node("b", op=ReLU(), meta=NodeMeta())
    g.add_edge("data", "a")
    g.add_edge("data", "b")
    with pytest.raises(Exception, match="after mypass: the graph must have exactly one output"):
        verify(g, after="mypass")
