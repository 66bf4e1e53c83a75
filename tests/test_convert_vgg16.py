"""`vggspec convert FILE -o OUT` without a spec on VGG-16-shaped files (the release's Caffe
layout, V1 training net and V2 deploy net; MatConvNet's): the spec it writes is configuration
D, and the converted net computes what Caffe computes. Full size in the slow tier (528 MB,
138,357,544 parameters), a narrower twin in the default one."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import SPECS
from source_nets import (
    caffe_forward,
    layers_of,
    matconvnet_forward,
    random_weights,
    write_caffemodel,
    write_matconvnet,
)
from vggspec.compiler import parse
from vggspec.runtime.io.convert import convert, to_net

D = (SPECS / "D.vgg").read_text()


def narrow(text: str, by: int) -> str:
    """D with every width divided by `by`, the 1000 classes kept."""
    text = re.sub(r"conv3-(\d+)", lambda m: f"conv3-{int(m[1]) // by}", text)
    return text.replace("FC-4096", f"FC-{4096 // by}")


def params(layers, weights) -> int:
    return sum(w.size + b.size for w, b in weights.values())


# The two layouts of the release's file: V1 as the training net saved it (with its data,
# loss and accuracy layers, legacy 4-D blobs), V2 as a deploy net (an Input layer, BlobShape).
LAYOUTS = pytest.mark.parametrize(
    "layout, train", [("V1", True), ("V2", False)], ids=["V1-training-net", "V2-deploy-net"]
)


def vgg16_caffemodel(tmp_path, text: str, layout: str, train: bool, seed: int):
    """(layers, weights, file) of `text`'s net at 224×224, random weights."""
    layers = layers_of(text)
    weights = random_weights(layers, 3, (224, 224), seed=seed)
    file = write_caffemodel(
        tmp_path / "VGG_ILSVRC_16_layers.caffemodel", layers, weights, layout, layout == "V1",
        train=train, input_size=(224, 224),
    )  # fmt: skip
    return layers, weights, file


def convert_without_spec(cli, tmp_path, file, text: str, count: int) -> None:
    """The CLI writes the weights and the spec; the spec is `text`'s net (configuration D
    where the widths are D's), and `vggspec compile` counts `count` parameters."""
    out = tmp_path / f"{file.stem}.safetensors"
    code, stdout, err = cli("convert", file, "-o", out)
    assert code == 0, err
    spec_file = out.with_suffix(".vgg")
    assert f"{spec_file}: the spec it implies" in stdout
    assert parse(spec_file.read_text()).layers == parse(text).layers
    assert parse(spec_file.read_text()).input == parse(text).input
    if text == D:
        assert "configuration D (specs/D.vgg)" in stdout
    code, stdout, err = cli("compile", spec_file, "--json")
    assert code == 0, err
    assert json.loads(stdout)["params"] == count


@LAYOUTS
def test_narrow_vgg16_caffemodel_implies_d_and_computes_caffes_scores(cli, tmp_path, layout, train):
    text = narrow(D, 16)
    layers, weights, file = vgg16_caffemodel(tmp_path, text, layout, train, seed=16)
    convert_without_spec(cli, tmp_path, file, text, params(layers, weights))
    x = np.random.default_rng(2).uniform(-120, 135, (1, 3, 224, 224)).astype(np.float32)
    expected = caffe_forward([la for la in layers if la[0] != "softmax"], weights, x)
    with torch.no_grad():
        got = to_net(convert(file)).eval()(torch.from_numpy(x)).double().numpy()
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) <= 1e-5


def test_narrow_vgg16_matconvnet_implies_d_and_computes_its_scores(cli, tmp_path):
    text = narrow(D, 16)
    layers = layers_of(text)
    weights = random_weights(layers, 3, (224, 224), seed=17)
    file = tmp_path / "imagenet-vgg-verydeep-16.mat"
    filters = write_matconvnet(file, layers, weights, (224, 224))
    convert_without_spec(cli, tmp_path, file, text, params(layers, weights))
    image = np.random.default_rng(3).uniform(-120, 135, (224, 224, 3)).astype(np.float32)
    scores = [la for la in layers if la[0] != "softmax"]
    expected = matconvnet_forward(scores, weights, filters, image).reshape(-1)
    batch = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        got = to_net(convert(file)).eval()(batch)[0].double().numpy()
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) <= 1e-5


@pytest.mark.slow
@LAYOUTS
def test_vgg16_caffemodel_converts_without_spec_into_d(cli, tmp_path, layout, train):
    """VGG_ILSVRC_16_layers at full size (random weights, 528 MB): configuration D,
    138,357,544 parameters, every weight read back exactly."""
    _, weights, file = vgg16_caffemodel(tmp_path, D, layout, train, seed=4)
    convert_without_spec(cli, tmp_path, file, D, 138_357_544)
    converted = convert(file)
    for name, (weight, bias) in weights.items():
        np.testing.assert_array_equal(converted.arrays[f"{name}.weight"].reshape(weight.shape),
                                      weight)  # fmt: skip
        np.testing.assert_array_equal(converted.arrays[f"{name}.bias"], bias)


@pytest.mark.slow
def test_vgg16_matconvnet_converts_without_spec_into_d(cli, tmp_path):
    layers = layers_of(D)
    weights = random_weights(layers, 3, (224, 224), seed=5)
    file = tmp_path / "imagenet-vgg-verydeep-16.mat"
    write_matconvnet(file, layers, weights, (224, 224))
    del weights
    convert_without_spec(cli, tmp_path, file, D, 138_357_544)
