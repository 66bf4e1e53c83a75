"""`maxpool3` (compiler/ir/ops/maxpool3.py): 3×3 max pooling, stride 2, rounding up as Caffe
does, against torch's ceil_mode, a receptive field measured by gradients, Caffe's own pooling
(tests/source_nets.py), Keras' MaxPooling2D and a hand-written torchvision-style Sequential.
Its run through every backend is tests/test_backends.py's (`maxpool3-alone`), its printing
round trip the property tests' (tests/strategies.py draws every registered word)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import strategies
import torch
import torch.nn.functional as F
from helpers import assert_same_outputs_and_gradients
from test_backends import SPECS
from test_convert import caffe_reference, random_layers, relative, write_caffemodel
from vggspec.compiler import SpecError, compile_spec, format_spec, parse
from vggspec.compiler.frontend.words import WORDS
from vggspec.compiler.ir.graph import meta, nodes
from vggspec.compiler.ir.ops.maxpool3 import MaxPool3
from vggspec.compiler.lowering.launches import graph_launches, torch_reasons
from vggspec.compiler.lowering.net import build
from vggspec.runtime.io.convert import convert, to_net
from vggspec.runtime.io.weights import WeightsError, to_torchvision

SPEC = "input {0}x{0} RGB\nconv3-4 maxpool3\nconv3-6 maxpool3\nFC-5 soft-max\n"


def test_the_word_reads_prints_and_names_its_node():
    spec = parse(SPEC.format(16).replace("maxpool3", "MAXPOOL3", 1))
    assert spec.layers[1] == MaxPool3() and WORDS["maxpool3"] is MaxPool3
    assert format_spec(spec) == SPEC.format(16) and parse(format_spec(spec)) == spec
    g = compile_spec(spec)
    assert nodes(g) == ["data", "conv1_1", "pool1", "conv2_1", "pool2", "fc3", "prob"]
    with pytest.raises(SpecError, match="unknown word 'maxpool3x'"):
        parse("conv3-4 maxpool3x")  # the word ends where the token ends


@pytest.mark.parametrize("side", [3, 4, 5, 6, 7, 13, 16, 27, 55, 56, 224])
def test_shapes_are_torchs_ceil_mode(side):
    spec = parse(f"input {side}x{side} RGB\nconv3-4 maxpool3\n")
    g = compile_spec(spec)
    want = F.max_pool2d(torch.zeros(1, 4, side, side), 3, 2, ceil_mode=True).shape[1:]
    assert meta(g, "pool1").shape == tuple(want)
    assert meta(g, "pool1").params == 0 and meta(g, "pool1").macs == 0


def test_alexnet_sizes_and_too_small_maps():
    # AlexNet's three overlapping pools in Caffe's deploy net: 55 → 27, 27 → 13, 13 → 6.
    for side, pooled in ((55, 27), (27, 13), (13, 6)):
        g = compile_spec(parse(f"input {side}x{side} RGB\nconv3-4 maxpool3\n"))
        assert meta(g, "pool1").shape == (4, pooled, pooled)
    with pytest.raises(SpecError, match="too small to pool 3x3"):
        compile_spec(parse("input 2x2 RGB\nconv3-4 maxpool3\n"))


def _measured_rf(spec_text: str, node: str, side: int) -> int:
    """The input rows one output of `node` can see: the union over many random images of
    the pixels its gradient reaches (a max passes its gradient to one pixel of its window,
    a different one from image to image), along one axis."""
    torch.manual_seed(0)
    net = build(parse(spec_text), "torch").eval()
    for p in net.parameters():
        p.data.fill_(0.1)  # all-positive weights: every path counts
    x = torch.rand(256, 3, side, side, requires_grad=True)
    out = net.activations(x, [node])[node]
    h, w = out.shape[2:]
    (grad,) = torch.autograd.grad(out[:, 0, h // 2, w // 2].sum(), x)
    rows = grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    return int(rows.max() - rows.min() + 1)


def test_receptive_field_by_gradients():
    text = "input 33x33 RGB\nconv3-4 maxpool3 conv3-4 maxpool3\nFC-5\n"
    g = compile_spec(parse(text))
    # conv 3 → pool 3 over stride 1: 5; conv 3 at jump 2: 9; pool 3 at jump 2: 13.
    assert meta(g, "pool1").rf == (5, 5) and meta(g, "pool2").rf == (13, 13)
    assert meta(g, "pool2").jump == (4, 4)
    assert _measured_rf(text, "pool1", 33) == 5
    assert _measured_rf(text, "pool2", 33) == 13


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_forward_and_backward_are_torchs_ceil_mode(backend):
    text = SPEC.format(15)
    torch.manual_seed(0)
    net = build(parse(text), backend=backend, init="glorot")
    x = torch.randn(2, 3, 15, 15)

    def reference(x):
        y = F.relu(F.conv2d(x, net.conv1_1.weight, net.conv1_1.bias, padding=1))
        y = F.max_pool2d(y, 3, 2, ceil_mode=True)  # 15 → 7
        y = F.relu(F.conv2d(y, net.conv2_1.weight, net.conv2_1.bias, padding=1))
        y = F.max_pool2d(y, 3, 2, ceil_mode=True)  # 7 → 3
        return F.linear(y.flatten(1), net.fc3.weight, net.fc3.bias)

    assert_same_outputs_and_gradients(net(x), reference(x), list(net.parameters()))


def test_torch_runs_it_in_the_triton_backend_and_the_report_says_why():
    g = compile_spec(parse(SPEC.format(16)))
    _, fallbacks = graph_launches(g, 2)
    assert fallbacks == ["pool1 (maxpool3/2 ceil)", "pool2 (maxpool3/2 ceil)"]
    assert "3×3 max pooling has no Triton kernel yet" in torch_reasons(g)


def test_found_by_the_enumerations_of_the_other_tests():
    assert SPECS["maxpool3-alone"].layers[1] == MaxPool3()  # every backend (test_backends)
    assert MaxPool3 in strategies.plain_words  # drawn and spelled by the property tests


# --- other formats ----------------------------------------------------------------------

CAFFE = "input 31x31 RGB\nconv3-4 maxpool\nconv3-8 maxpool\nFC-6 FC-5 soft-max\n"


def test_a_caffe_net_with_overlapping_pooling_converts_to_maxpool3(tmp_path):
    # Caffe's pooling rounds up: 31 → 15 → 7 with 3×3/2 windows, where 2×2/2 would not fit.
    net = random_layers(CAFFE, seed=3, pool1={"k": 3}, pool2={"k": 3})
    file = write_caffemodel(tmp_path / "overlap.caffemodel", net)
    converted = convert(file)
    assert "conv3-4 maxpool3\nconv3-8 maxpool3\n" in format_spec(converted.net.spec)
    x = torch.randn(2, 3, 31, 31) * 50
    with torch.no_grad():
        assert relative(to_net(converted).eval()(x), caffe_reference(net, x)) <= 1e-5


def test_a_caffe_pooling_rounded_down_is_refused_where_it_differs(tmp_path):
    # At 32×32 a 3×3/2 window rounded down gives 15 where maxpool3 gives 16.
    text = CAFFE.replace("31x31", "32x32")
    net = random_layers(text, seed=3, pool1={"k": 3, "round": "FLOOR"})
    file = write_caffemodel(tmp_path / "floor.caffemodel", net)
    with pytest.raises(WeightsError) as refused:
        convert(file, parse(text.replace("maxpool", "maxpool3", 1)))
    assert str(refused.value) == (
        f"{file}: layer pool1 (Pooling) rounds its output size down: 32×32 pools to 15 where "
        "the spec's pool1 gives 16 (an input size whose maps are odd fits both)"
    )


@pytest.fixture
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported
    pytest.importorskip("h5py")
    return pytest.importorskip("keras")


def _keras_overlapping(keras, side: int):
    """conv 3×3 'same' ReLU, MaxPooling2D 3×3/2 'valid' (rounding down), Flatten, Dense
    softmax: a whole Keras model, its config with it."""
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(side, side, 3))
    x = layers.Conv2D(4, 3, activation="relu", padding="same", name="block1_conv1")(inputs)
    x = layers.MaxPooling2D(3, 2, padding="valid", name="block1_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="vgg16")
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.standard_normal(w.shape).astype(np.float32) * 0.05 for w in model.get_weights()]
    )
    return model


def test_keras_valid_overlapping_pooling_fits_odd_maps_and_is_refused_on_even(tmp_path, keras):
    odd = _keras_overlapping(keras, 17)  # 17 → 8 rounding down or up
    odd.save(tmp_path / "odd.h5")
    converted = convert(tmp_path / "odd.h5")
    assert "conv3-4 maxpool3" in format_spec(converted.net.spec)
    x = np.random.default_rng(1).uniform(-100, 100, (2, 17, 17, 3)).astype(np.float32)
    with torch.no_grad():
        ours = to_net(converted).eval().predict(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(ours.numpy(), np.asarray(odd.predict(x, verbose=0)), atol=1e-5)
    even = _keras_overlapping(keras, 16)  # 16 → 7 rounding down, 8 up
    even.save(tmp_path / "even.h5")
    said = r"block1_pool .* rounds its output size down: 16×16 pools to 7 where the spec's pool1"
    with pytest.raises(WeightsError, match=said + " gives 8"):
        convert(tmp_path / "even.h5")


def test_torchvision_export_counts_it_as_one_features_module():
    text = "input 15x15 RGB\nconv3-4 maxpool3 conv3-6 maxpool3\nFC-8 FC-5 soft-max\n"
    torch.manual_seed(0)
    net = build(parse(text), "torch", dropout=0.0).eval()
    state = to_torchvision(net)
    assert sorted(state) == sorted(
        f"{section}.{i}.{p}"
        for section, i in (("features", 0), ("features", 3), ("classifier", 0), ("classifier", 3))
        for p in ("weight", "bias")
    )
    # torchvision's layout (AlexNet's pools, rounding up as Caffe) with those weights.
    nn = torch.nn
    features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
    )  # fmt: skip
    classifier = nn.Sequential(nn.Linear(6 * 3 * 3, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 5))
    model = nn.ModuleDict({"features": features, "classifier": classifier}).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 15, 15)
    with torch.no_grad():
        torch.testing.assert_close(net(x), classifier(features(x).flatten(1)))
