"""`avgpool` and `gap`: shapes, counts, names, and both backends against torch.nn.functional."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_outputs_and_gradients
from vggspec.compiler import SpecError, compile_spec, parse
from vggspec.compiler.ir.graph import meta, nodes
from vggspec.compiler.lowering.launches import graph_launches, torch_reasons
from vggspec.compiler.lowering.net import build

SPEC = "input 12x12 RGB\nconv3-4 avgpool\nconv3-6 gap\nFC-5 soft-max"


def test_shapes_counts_and_names():
    g = compile_spec(parse(SPEC))
    assert nodes(g) == ["data", "conv1_1", "pool1", "conv2_1", "pool2", "fc3", "prob"]
    assert meta(g, "pool1").shape == (4, 6, 6)
    assert meta(g, "pool2").shape == (6, 1, 1)
    assert meta(g, "fc3").params == (6 + 1) * 5  # the FC after gap sees C inputs
    assert meta(g, "pool1").rf == (4, 4)
    assert meta(g, "pool2").rf == (8 + 5 * 2,) * 2  # conv2_1 sees 8 px; gap all 6×6 (jump 2)
    assert g.graph["totals"].macs == sum(meta(g, n).macs for n in ("conv1_1", "conv2_1", "fc3"))


def test_a_512_wide_fc_after_gap():
    g = compile_spec(parse("input 32x32 RGB conv3-512 gap FC-1000 soft-max"))
    assert meta(g, "fc2").in_shape == (512, 1, 1)
    assert meta(g, "fc2").params == 513 * 1000


@pytest.mark.parametrize(
    "text, message",
    [
        ("input 32x32 RGB conv3-8 FC-10 gap", "cannot follow a fully connected layer"),
        ("input 1x1 RGB conv3-8 avgpool", "too small to pool"),
    ],
)
def test_misfits_are_located_errors(text, message):
    with pytest.raises(SpecError, match=message):
        compile_spec(parse(text))


def _reference(net, x):
    y = F.relu(F.conv2d(x, net.conv1_1.weight, net.conv1_1.bias, padding=1))
    y = F.avg_pool2d(y, 2, 2)
    y = F.relu(F.conv2d(y, net.conv2_1.weight, net.conv2_1.bias, padding=1))
    y = y.mean(dim=(2, 3))
    return F.linear(y, net.fc3.weight, net.fc3.bias)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_forward_and_backward_match_torch(backend):
    torch.manual_seed(0)
    net = build(parse(SPEC), backend=backend, init="glorot")
    x = torch.randn(3, 3, 12, 12)
    assert_same_outputs_and_gradients(net(x), _reference(net, x), list(net.parameters()))


def test_triton_report_gap_has_a_kernel_avgpool_falls_back():
    g = compile_spec(parse(SPEC))
    _, fallbacks = graph_launches(g, 2)
    assert fallbacks == ["pool1 (avgpool2/2)"]
    assert torch_reasons(g) == ["average pooling has no Triton kernel yet"]
