"""`vggspec convert`: Caffe (V1 and current layouts) and MatConvNet weights read back by value."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import source_nets
import torch
from helpers import vggspec_cmd
from source_nets import caffe_forward, layers_of, random_weights
from vggspec.compiler import compile_spec, format_spec, parse
from vggspec.compiler.lowering.net import densify, lower
from vggspec.runtime.data.preprocessing import CAFFE_MEAN_RGB, Preprocessing
from vggspec.runtime.io.convert import convert, to_net
from vggspec.runtime.io.model_info import ModelInfo, read_model_info
from vggspec.runtime.io.weights import WeightsError, data_digest, read_metadata

import vggspec

SMALL = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 conv3-8 maxpool\nFC-12 FC-12 FC-5 soft-max\n"
# The same depth with conv2_2 wider: every layer count matches, one shape does not.
WIDER = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 conv3-16 maxpool\nFC-12 FC-12 FC-5 soft-max\n"
OTHER = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 maxpool\nFC-12 FC-12 FC-5 soft-max\n"


def random_layers(spec_text: str, seed: int = 0, lrn=None, **changes):
    """(layers, weights, input size) of the net `spec_text` writes, as source_nets describes
    it; `changes` replaces a layer's settings by name (`pool1={"method": "AVE"}`)."""
    layers = [
        (kind, name, {**settings, **changes.get(name, {})})
        for kind, name, settings in layers_of(spec_text, lrn)
    ]
    size = tuple(map(int, re.search(r"input (\d+)x(\d+)", spec_text).groups()))
    return layers, random_weights(layers, 3, size, seed), size


def write_caffemodel(path, net, layout="V1", legacy_shape=True, double=False, **kwargs):
    layers, weights, size = net
    return source_nets.write_caffemodel(
        path, layers, weights, layout, legacy_shape, double, input_size=size, **kwargs
    )


def caffe_reference(net, x: torch.Tensor) -> torch.Tensor:
    """The class scores (the input of the soft-max) Caffe computes for `x`."""
    layers, weights, _ = net
    logits = [layer for layer in layers if layer[0] != "softmax"]
    return torch.from_numpy(caffe_forward(logits, weights, x.numpy())).float()


def weight_items(net):
    """(name, weight, bias) of each weight layer."""
    return [(name, w, b) for name, (w, b) in net[1].items()]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture
def small_spec(tmp_path):
    path = tmp_path / "small.vgg"
    path.write_text(SMALL)
    return path


# ---------------------------------------------------------------------------------------
# Caffe


@pytest.mark.parametrize(
    "layout, legacy_shape, double",
    [("V1", True, False), ("V2", False, False), ("V2", True, True), ("V1", False, True)],
    ids=["V1-nchw-float", "V2-shape-float", "V2-nchw-double", "V1-shape-double"],
)
def test_caffe_layers_read_back_exactly(tmp_path, layout, legacy_shape, double):
    layers = random_layers(SMALL)
    file = write_caffemodel(tmp_path / "net.caffemodel", layers, layout, legacy_shape, double)
    net = to_net(convert(file, parse(SMALL)))
    state = net.state_dict()
    for name, weight, bias in weight_items(layers):
        assert torch.equal(state[f"{name}.weight"], torch.from_numpy(weight)), name
        assert torch.equal(state[f"{name}.bias"], torch.from_numpy(bias)), name
    x = torch.randn(2, 3, 16, 16) * 50
    with torch.no_grad():
        assert relative(net.eval()(x), caffe_reference(layers, x)) <= 1e-5


def test_caffe_fc6_is_flattened_channels_first(tmp_path):
    """fc6's input index in a Caffe blob is c·H·W + h·W + w: a value that encodes
    (c, h, w) must land at [c, h, w] of the dense twin's 4×4 conv filter."""
    layers = random_layers(SMALL)
    weight, bias = layers[1]["fc3"]
    channels, size = 8, 4
    c, h, w = np.meshgrid(np.arange(channels), np.arange(size), np.arange(size), indexing="ij")
    code = (100 * c + 10 * h + w).astype(np.float32).reshape(-1)
    layers[1]["fc3"] = (np.stack([code + 1000 * o for o in range(weight.shape[0])]), bias)
    file = write_caffemodel(tmp_path / "net.caffemodel", layers)
    dense = densify(to_net(convert(file, parse(SMALL))))
    filters = dense.state_dict()["fc3.weight"]
    assert filters.shape == (12, channels, size, size)
    assert filters[5, 7, 2, 3].item() == 5000 + 100 * 7 + 10 * 2 + 3
    assert filters[0, 1, 3, 0].item() == 100 + 30


def test_dense_twin_of_a_converted_net_equals_the_classifier(tmp_path):
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL, seed=3))
    net = to_net(convert(file, parse(SMALL))).eval()
    x = torch.randn(3, 3, 16, 16)
    scores = densify(net)(x)
    assert scores.shape == (3, 5, 1, 1)
    torch.testing.assert_close(scores[:, :, 0, 0], net(x), rtol=1e-5, atol=1e-5)


def test_rgb_swaps_conv1_1_so_the_net_reads_rgb(tmp_path):
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL, seed=1))
    bgr = convert(file, parse(SMALL))
    rgb = convert(file, parse(SMALL), rgb=True)
    assert bgr.info.preprocessing.bgr is True and rgb.info.preprocessing.bgr is False
    assert rgb.info.preprocessing.mean_rgb == bgr.info.preprocessing.mean_rgb == CAFFE_MEAN_RGB
    bgr_net, rgb_net = to_net(bgr).eval(), to_net(rgb).eval()
    image_bgr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255 - 120
    # The same sums in another order: float32's rounding, relative to the scores' size (an
    # element-wise 1e-5 failed now and then on a score near 0, unseeded).
    with torch.no_grad():
        assert relative(rgb_net(image_bgr.flip(1)), bgr_net(image_bgr)) <= 1e-5
    assert not torch.allclose(bgr_net(image_bgr), rgb_net(image_bgr), atol=1e-3)


def test_cli_writes_a_net_vggspec_load_reads(cli, tmp_path, small_spec):
    layers = random_layers(SMALL, seed=2)
    file = write_caffemodel(tmp_path / "VGG_small.caffemodel", layers)
    out = tmp_path / "out" / "small.safetensors"
    code, stdout, err = cli("convert", file, "--spec", small_spec, "-o", out)
    assert code == 0, err
    assert "6 weight layers from VGG_small.caffemodel (Caffe V1)" in stdout
    assert "expects BGR pixels 0–255 minus (103.939, 116.779, 123.68)" in stdout
    net = vggspec.load(out)
    for name, weight, bias in weight_items(layers):
        assert torch.equal(getattr(net, name).weight.detach(), torch.from_numpy(weight))
        assert torch.equal(getattr(net, name).bias.detach(), torch.from_numpy(bias))
    caffe = Preprocessing("vggspec", CAFFE_MEAN_RGB, bgr=True)
    assert vggspec.model_info(out) == ModelInfo(caffe, input_size=(16, 16))
    assert read_metadata(out)["converted_from"] == "VGG_small.caffemodel (Caffe V1)"
    # Sealed like weights.save's files: the CRC-32 of the tensor bytes, not the placeholder.
    assert read_metadata(out)["data_crc32"] == data_digest(out) != "00000000"

    code, _, err = cli("convert", file, "--spec", small_spec, "-o", out, "--rgb")
    assert code == 0, err
    swapped = vggspec.load(out)
    conv1_1 = torch.from_numpy(layers[1]["conv1_1"][0])
    assert torch.equal(swapped.conv1_1.weight.detach(), conv1_1.flip(1))
    assert read_model_info(out).preprocessing == Preprocessing("vggspec", CAFFE_MEAN_RGB)


def test_cli_refuses_to_write_a_file_another_writer_holds(cli, tmp_path, small_spec):
    import os

    from vggspec.runtime.io.rundir import output_lock

    file = write_caffemodel(tmp_path / "VGG_small.caffemodel", random_layers(SMALL, seed=2))
    out = tmp_path / "small.safetensors"
    with output_lock(out, "convert"):  # flock: another open file of this process conflicts
        code, _, err = cli("convert", file, "--spec", small_spec, "-o", out)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{out}: in use by another writer (`vggspec convert`, pid {os.getpid()} " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VGG_small.caffemodel", "small.vgg"]


def test_cli_converts_the_builtin_spec_name(cli, tmp_path):
    """--spec takes a built-in spec path from any folder, like the other commands."""
    code, _, err = cli(
        "convert",
        tmp_path / "missing.caffemodel",
        "--spec",
        "specs/D.vgg",
        "-o",
        tmp_path / "o.safetensors",
    )
    assert code == 2
    assert err.strip() == f"{tmp_path / 'missing.caffemodel'}: no such weights file"


def _refused(cli, tmp_path, file, spec, *extra) -> str:
    """The one line `vggspec convert` answers (exit 2), having written nothing."""
    out = tmp_path / "refused.safetensors"
    given = ["--spec", spec] if spec is not None else []
    code, _, err = cli("convert", file, *given, "-o", out, *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    assert not out.with_suffix(".vgg").exists()
    return err.strip()


def test_truncated_caffemodel_is_one_line(cli, tmp_path, small_spec):
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL))
    data = file.read_bytes()
    for cut in (len(data) * 3 // 5, len(data) - 1):
        file.write_bytes(data[:cut])
        err = _refused(cli, tmp_path, file, small_spec)
        assert err.startswith(f"{file}: not a readable .caffemodel (")
        assert "runs past the end" in err


def test_blob_data_of_another_wire_type_is_one_line(cli, tmp_path, small_spec):
    """Blob data (field 5) written as a varint, as one flipped byte makes it: a traceback
    (an int unpacked as a span) before the wire type was checked."""

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited field
        return bytes([number << 3 | 2, len(payload)]) + payload

    blob = bytes([5 << 3 | 0, 1])  # data = varint 1
    layer = field(1, b"conv1_1") + field(2, b"Convolution") + field(7, blob)
    file = tmp_path / "varint.caffemodel"
    tag = 100 << 3 | 2  # NetParameter.layer: a two-byte varint
    file.write_bytes(bytes([tag & 0x7F | 0x80, tag >> 7, len(layer)]) + layer)
    err = _refused(cli, tmp_path, file, small_spec)
    assert err.startswith(f"{file}: not a readable .caffemodel (blob data with wire type 0 at")


def test_not_a_caffemodel_is_one_line(cli, tmp_path, small_spec):
    for i, content in enumerate([b"", b"input 224x224 RGB\nconv3-64\n", bytes(range(256)) * 4]):
        file = tmp_path / f"junk{i}.caffemodel"
        file.write_bytes(content)
        err = _refused(cli, tmp_path, file, small_spec)
        assert err.startswith(f"{file}: not a")


def test_a_file_of_another_kind_names_the_formats_convert_reads(cli, tmp_path, small_spec):
    """Caffe files have no signature, so any other file is read as one: the line says what
    convert reads, and that a .pth or safetensors file needs no conversion, not only "not a
    readable .caffemodel"."""
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "vgg16.pth")
    (tmp_path / "model.onnx").write_bytes(bytes(range(256)) * 4)
    for name in ("vgg16.pth", "model.onnx"):
        file = tmp_path / name
        err = _refused(cli, tmp_path, file, small_spec)
        assert err.startswith(
            f"{file}: not a file `vggspec convert` reads (a Caffe .caffemodel, a MatConvNet "
            ".mat or a Keras .h5): read as a .caffemodel, "
        ), err
        assert ("needs no conversion" in err) == (name == "vgg16.pth")


def test_caffemodel_without_weights_is_one_line(cli, tmp_path, small_spec):
    """Layers but no blobs (a net saved before it had weights): said so, not "its first
    layer takes 0 channels"."""
    layers, _, size = random_layers(SMALL)
    file = write_caffemodel(tmp_path / "bare.caffemodel", (layers, {}, size))
    for spec in (None, small_spec):
        assert _refused(cli, tmp_path, file, spec) == (
            f"{file}: a Caffe V1 file without a layer that has weights"
        )


def test_caffemodel_of_another_net_is_one_line(cli, tmp_path, small_spec):
    file = write_caffemodel(tmp_path / "other.caffemodel", random_layers(OTHER))
    err = _refused(cli, tmp_path, file, small_spec)
    assert err == (
        f"{file}: 5 weight layers (conv1_1 … fc5), but {small_spec} has 6 "
        "(conv1_1 … fc5): weights of another net"
    )


def test_shape_mismatch_names_the_layer_and_both_shapes(cli, tmp_path, small_spec):
    file = write_caffemodel(tmp_path / "wider.caffemodel", random_layers(WIDER), "V2", False)
    err = _refused(cli, tmp_path, file, small_spec)
    assert err == (
        f"{file}: layer conv2_2 (Convolution) has weight (16, 8, 3, 3); "
        "the spec's conv2_2 needs (8, 8, 3, 3)"
    )


def test_a_refused_conversion_leaves_no_folder_and_odd_outputs_are_one_line(cli, tmp_path):
    """-o into folders that do not exist: a refusal removes the ones made for it. A `.vgg`
    beside OUT that is a folder, or not UTF-8, is a line, not a traceback."""
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL))
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(file.read_bytes()[:-1])
    for args in (
        [truncated, "-o", tmp_path / "new" / "deeper" / "x.safetensors"],
        [file, "--spec", tmp_path / "missing.vgg", "-o", tmp_path / "new" / "x.safetensors"],
    ):
        code, _, err = cli("convert", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "new").exists()
    (tmp_path / "folder.vgg").mkdir()
    code, _, err = cli("convert", file, "-o", tmp_path / "folder.safetensors")
    assert code == 2, err
    assert err == (
        f"vggspec: error: {tmp_path / 'folder.vgg'}: is a folder, where the spec the file "
        "implies goes\n"
    )
    (tmp_path / "binary.vgg").write_bytes(b"\xff\xfe\x00 not text")
    code, _, err = cli("convert", file, "-o", tmp_path / "binary.safetensors")
    assert code == 2 and err.strip().endswith("remove it, or give --spec"), err
    for path, said in (
        (tmp_path, "a folder, not a weights file"),
        (Path("/dev/null"), "not a regular file"),
    ):
        code, _, err = cli("convert", path, "-o", tmp_path / "x.safetensors")
        assert (code, err) == (2, f"{path}: {said}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "binary.vgg", "cut.caffemodel", "folder.vgg", "net.caffemodel",
    ]  # fmt: skip


def test_a_spec_too_large_or_too_small_for_the_file_is_its_own_line(cli, tmp_path):
    """A spec at 65536×65536 wants a 32 TiB fc3: refused by shape before any net is made
    (it was a failed allocation's traceback). A given spec that does not compile says its
    own error, not that the file implies it."""
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL))
    huge = tmp_path / "huge.vgg"
    huge.write_text(SMALL.replace("16x16", "65536x65536").replace("FC-12 FC-12", "FC-4096 FC-12"))
    assert _refused(cli, tmp_path, file, huge) == (
        f"{file}: layer fc3 (InnerProduct) has weight (1, 1, 12, 128); the spec's fc3 needs "
        "(4096, 2147483648)"
    )
    tiny = tmp_path / "tiny.vgg"
    tiny.write_text(SMALL.replace("16x16", "1x1"))
    code, _, err = cli("convert", file, "--spec", tiny, "-o", tmp_path / "x.safetensors")
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith(f"{tiny}:2:9: error: pool1 (maxpool): the spatial size collapses"), err


def test_output_must_be_safetensors(cli, tmp_path, small_spec):
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL))
    err = _refused(cli, tmp_path, file, small_spec, "-o", tmp_path / "x.pth")
    assert "give a .safetensors file name" in err


# ---------------------------------------------------------------------------------------
# Caffe: what the file's net computes, against the spec's


A_LRN_LIKE = "input 16x16 RGB\nconv3-4 LRN maxpool\nconv3-8 maxpool\nFC-12 FC-12 FC-5 soft-max\n"


@pytest.mark.parametrize(
    "layout, train", [("V1", True), ("V2", False)], ids=["V1-training-net", "V2-deploy-net"]
)
def test_caffe_lrn_converts_to_caffes_formula_or_is_refused(cli, tmp_path, layout, train):
    """Caffe's LRN (local_size 5, alpha 1e-4, beta 0.75, k left at Caffe's 1) is not the
    notation's LRN (AlexNet's: k 2, alpha not divided by 5): with the A-LRN-like spec it is
    refused; without a spec it converts into LRN(alpha=2e-05,k=1), whose logits are Caffe's."""
    net = random_layers(A_LRN_LIKE, seed=11)
    file = write_caffemodel(tmp_path / "net.caffemodel", net, layout, train=train)
    spec = tmp_path / "a-lrn.vgg"
    spec.write_text(A_LRN_LIKE)
    err = _refused(cli, tmp_path, file, spec)
    assert err == (
        f"{file}: layer norm1 (LRN) is LRN size 5 alpha 2e-05 beta 0.75 k 1 (Caffe: local_size "
        "5, alpha 0.0001, beta 0.75, k 1); the spec's norm1 is LRN size 5 alpha 0.0001 beta "
        "0.75 k 2 (write LRN(alpha=2e-05,k=1) in the spec for this file's)"
    )
    converted = convert(file)
    assert converted.implied
    lines = format_spec(converted.net.spec).splitlines()
    assert lines[1:] == [
        "input 16x16 RGB",
        "conv3-4 LRN(alpha=2e-05,k=1) maxpool",
        "conv3-8 maxpool",
        "FC-12 FC-12 FC-5 soft-max",
    ]
    x = torch.randn(3, 3, 16, 16) * 100  # Caffe's pixel range: the LRN's sum matters
    expected = caffe_reference(net, x)
    given = parse(A_LRN_LIKE.replace("LRN", "LRN(k=1,alpha=2e-5)"))
    with torch.no_grad():
        assert relative(to_net(converted).eval()(x), expected) <= 1e-5
        assert relative(to_net(convert(file, given)).eval()(x), expected) <= 1e-5
        # What the notation's own LRN computes with these weights (what conversion gave
        # before it read the LRN's settings): another function.
        paper = lower(compile_spec(parse(A_LRN_LIKE)), "torch").eval()
        paper.load_state_dict(to_net(converted).state_dict())
        assert relative(paper(x), expected) > 0.1


def test_caffe_lrn_in_alexnets_convention_is_the_notations_lrn(tmp_path):
    """alpha 5e-4 = 5 · 1e-4 and k 2 in Caffe's terms is the paper's LRN exactly."""
    net = random_layers(A_LRN_LIKE, seed=12, lrn={"alpha": 5e-4, "k": 2.0})
    file = write_caffemodel(tmp_path / "net.caffemodel", net, "V2", legacy_shape=False)
    converted = convert(file, parse(A_LRN_LIKE))
    assert "LRN maxpool" in format_spec(convert(file).net.spec)
    x = torch.randn(2, 3, 16, 16) * 100
    with torch.no_grad():
        assert relative(to_net(converted).eval()(x), caffe_reference(net, x)) <= 1e-5


def test_caffe_lrn_within_channel_is_one_line(cli, tmp_path):
    net = random_layers(A_LRN_LIKE, lrn={"within": True})
    file = write_caffemodel(tmp_path / "net.caffemodel", net)
    err = _refused(cli, tmp_path, file, None)
    assert err == (
        f"{file}: layer norm1 (LRN) is LRN WITHIN_CHANNEL (the notation's LRN is across "
        "channels): the notation cannot express it"
    )
    spec = tmp_path / "a.vgg"
    spec.write_text(A_LRN_LIKE)
    assert "layer norm1 (LRN) is LRN WITHIN_CHANNEL" in _refused(cli, tmp_path, file, spec)


@pytest.mark.parametrize(
    "layout, changes, said",
    [
        ("V1", {"pool1": {"method": "AVE"}}, "layer pool1 (Pooling) is average pooling 2×2 "
         "stride 2; the spec's pool1 is max pooling 2×2 stride 2"),
        ("V2", {"conv2_1": {"pad": 0}}, "layer conv2_1 (Convolution) is conv 3×3 stride 1 pad "
         "0; the spec's conv2_1 is conv 3×3 stride 1 pad 1"),
        ("V1", {"conv1_1": {"stride": 2}}, "layer conv1_1 (Convolution) is conv 3×3 stride 2 "
         "pad 1; the spec's conv1_1 is conv 3×3 stride 1 pad 1"),
        ("V2", {"relu2_1": {"slope": 0.1}}, "layer relu2_1 (ReLU) is leaky ReLU (slope 0.1); "
         "the spec's relu2_1 is ReLU"),
        # dilation 2 then 1: height 2, width 1 (it was read as the last value twice)
        ("V1", {"conv2_2": {"dilation": [2, 1], "pad": (2, 1)}}, "layer conv2_2 (Convolution) "
         "is conv 3×3 stride 1 pad 2,2,1,1 dilation 2×1; the spec's conv2_2 is conv 3×3 "
         "stride 1 pad 1"),
    ],
    ids=["pool-AVE", "pad-0", "stride-2", "leaky-relu", "dilation-2x1"],
)  # fmt: skip
def test_caffe_net_of_another_function_is_refused(cli, tmp_path, layout, changes, said):
    file = write_caffemodel(
        tmp_path / "net.caffemodel", random_layers(SMALL, **changes), layout, train=True
    )
    spec = tmp_path / "small.vgg"
    spec.write_text(SMALL)
    assert _refused(cli, tmp_path, file, spec) == f"{file}: {said}"


def test_caffe_file_with_a_layer_the_spec_lacks_is_refused(cli, tmp_path, small_spec):
    """An LRN the spec does not have, or a spec's layer the file does not have."""
    file = write_caffemodel(tmp_path / "lrn.caffemodel", random_layers(A_LRN_LIKE))
    spec = tmp_path / "no-lrn.vgg"
    spec.write_text(A_LRN_LIKE.replace(" LRN", ""))
    assert _refused(cli, tmp_path, file, spec) == (
        f"{file}: layer norm1 (LRN) is LRN size 5 alpha 2e-05 beta 0.75 k 1 (Caffe: local_size "
        "5, alpha 0.0001, beta 0.75, k 1); the spec's pool1 is max pooling 2×2 stride 2"
    )
    layers, weights, size = random_layers(SMALL)
    no_pool = ([la for la in layers if la[1] != "pool2"], weights, size)
    file = write_caffemodel(tmp_path / "no-pool.caffemodel", no_pool)
    assert "layer fc3 (InnerProduct) is fully connected; the spec's pool2 is max pooling" in (
        _refused(cli, tmp_path, file, small_spec)
    )


def test_caffe_blobs_are_followed_from_layer_to_layer(cli, tmp_path, small_spec):
    """A ReLU and a dropout into blobs of their own convert as in place; a ReLU whose
    output no layer reads does nothing in Caffe's net, and a file with one is refused (it
    converted into a net with that ReLU); so is a soft-max over the batch."""
    apart = {"relu2_1": {"in_place": False}, "drop3": {"in_place": False}}
    net = random_layers(SMALL, seed=4, **apart)
    file = write_caffemodel(tmp_path / "apart.caffemodel", net, "V2")
    x = torch.randn(2, 3, 16, 16) * 50
    with torch.no_grad():
        got = to_net(convert(file, parse(SMALL))).eval()(x)
    assert relative(got, caffe_reference(net, x)) <= 1e-5
    NetParameter = source_nets.caffe_messages()
    for layout in ("V1", "V2"):
        file = write_caffemodel(tmp_path / f"{layout}.caffemodel", random_layers(SMALL), layout)
        model = NetParameter.FromString(file.read_bytes())
        (relu,) = [la for la in (model.layers or model.layer) if la.name == "relu2_1"]
        relu.top[0] = "relu2_1"  # conv2_2 still reads conv2_1: this ReLU changes nothing
        file.write_bytes(model.SerializeToString())
        assert _refused(cli, tmp_path, file, small_spec) == (
            f"{file}: layer conv2_2 (Convolution) is fed by conv2_1, not by the output of the "
            "layer before it (relu2_1): vggspec reads nets that are one chain of layers; the "
            "spec's conv2_2 is conv 3×3 stride 1 pad 1"
        )
    file = write_caffemodel(tmp_path / "batch.caffemodel", random_layers(SMALL, prob={"axis": 0}))
    assert _refused(cli, tmp_path, file, None) == (
        f"{file}: layer prob (Softmax) is a soft-max over axis 0: the notation cannot express it"
    )


def test_caffe_rounding_up_differs_only_where_it_changes_a_size(tmp_path):
    """Caffe's pooling rounds its output size up: at 20×20 the third pool sees 5×5 and
    gives 3×3 where the notation's maxpool gives 2×2; at 16×16 (even maps) both agree, and a
    file with round_mode FLOOR fits at 20×20."""
    text = "input {0}x{0} RGB\nconv3-4 maxpool conv3-4 maxpool conv3-4 maxpool FC-6 soft-max\n"
    for size, round_mode, fits in ((16, "CEIL", True), (20, "CEIL", False), (20, "FLOOR", True)):
        changes = {f"pool{i}": {"round": round_mode} for i in (1, 2, 3)}
        net = random_layers(text.format(size), **changes)
        file = write_caffemodel(tmp_path / f"{size}{round_mode}.caffemodel", net)
        if fits:
            converted = convert(file, parse(text.format(size)))
            x = torch.randn(2, 3, size, size) * 50
            with torch.no_grad():
                assert relative(to_net(converted).eval()(x), caffe_reference(net, x)) <= 1e-5
            continue
        with pytest.raises(WeightsError) as refused:
            convert(file, parse(text.format(size)))
        assert str(refused.value) == (
            f"{file}: layer pool3 (Pooling) rounds its output size up: 5×5 pools to 3 where "
            "the spec's pool3 gives 2 (an input size whose maps are even fits both)"
        )


def test_caffe_average_pooling_converts_to_avgpool(tmp_path):
    text = "input 16x16 RGB\nconv3-4 avgpool conv3-8 maxpool FC-6 soft-max\n"
    net = random_layers(text, seed=5)
    file = write_caffemodel(tmp_path / "ave.caffemodel", net, "V2", train=True)
    converted = convert(file)
    assert "conv3-4 avgpool" in format_spec(converted.net.spec)
    x = torch.randn(2, 3, 16, 16) * 50
    with torch.no_grad():
        assert relative(to_net(converted).eval()(x), caffe_reference(net, x)) <= 1e-5


@pytest.mark.parametrize(
    "changes, said",
    [
        ({"conv1_1": {"k": 11, "stride": 4, "pad": 0}}, "layer conv1_1 (Convolution) is conv "
         "11×11 stride 4 pad 0 (the notation's is stride 1, pad 5)"),
        ({"conv2_1": {"group": 2}}, "layer conv2_1 (Convolution) is conv 3×3 stride 1 pad 1 in "
         "2 groups (the notation's is stride 1, pad 1)"),
        ({"pool1": {"k": 3, "stride": 1}}, "layer pool1 (Pooling) is max pooling 3×3 stride 1 "
         "(the notation pools 2×2, stride 2; the notation pools 3×3, stride 2)"),
    ],
    ids=["stride-4", "groups", "pool-3x3-stride-1"],
)  # fmt: skip
def test_a_net_the_notation_cannot_express_is_one_line(cli, tmp_path, changes, said):
    text = "input 32x32 RGB\nconv3-8 maxpool conv3-8 maxpool FC-6 soft-max\n"
    file = write_caffemodel(tmp_path / "alexnet-ish.caffemodel", random_layers(text, **changes))
    err = _refused(cli, tmp_path, file, None)
    assert err == f"{file}: {said}: the notation cannot express it"


def test_convert_without_spec_writes_the_spec_beside_the_weights(cli, tmp_path):
    net = random_layers(A_LRN_LIKE, seed=3)
    file = write_caffemodel(tmp_path / "VGG_CNN_small.caffemodel", net, "V2")
    code, printed, err = cli("convert", file, "--emit", "spec")
    assert code == 0, err
    assert printed.splitlines()[1:] == [
        "input 16x16 RGB", "conv3-4 LRN(alpha=2e-05,k=1) maxpool", "conv3-8 maxpool",
        "FC-12 FC-12 FC-5 soft-max",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VGG_CNN_small.caffemodel"]
    out = tmp_path / "out" / "small.safetensors"
    code, stdout, err = cli("convert", file, "-o", out)
    assert code == 0, err
    assert stdout.splitlines()[:2] == [
        f"{out}: 5 weight layers from VGG_CNN_small.caffemodel (Caffe V2)",
        f"{out.with_suffix('.vgg')}: the spec it implies",
    ]
    assert (tmp_path / "out" / "small.vgg").read_text() == printed
    assert vggspec.load(out).spec == parse(printed)
    code, stdout, err = cli("compile", out.with_suffix(".vgg"), "--json")
    assert code == 0, err
    # Written again over the same spec: fine; over another spec: refused, nothing written.
    assert cli("convert", file, "-o", out)[0] == 0
    out.with_suffix(".vgg").write_text(SMALL)
    before = out.read_bytes()
    code, _, err = cli("convert", file, "-o", out)
    assert code == 2 and err.strip().endswith("remove it, or give --spec"), err
    assert out.read_bytes() == before and out.with_suffix(".vgg").read_text() == SMALL


def test_run_eval_and_features_refuse_a_file_of_another_function(cli, tmp_path):
    from eval_helpers import CLASSES, SPEC_32, write_images

    spec = tmp_path / "net.vgg"
    spec.write_text(SPEC_32)
    data = write_images(tmp_path / "data", {c: [(40, 36)] for c in CLASSES})
    net = random_layers(SPEC_32, pool2={"method": "AVE"})
    file = write_caffemodel(tmp_path / "net.caffemodel", net)
    said = (
        f"{file}: layer pool2 (Pooling) is average pooling 2×2 stride 2; the spec's pool2 is "
        "max pooling 2×2 stride 2"
    )
    out = tmp_path / "features"
    for command in (["eval"], ["features", "--layer", "fc4", "--out", out]):
        code, _, err = cli(
            "run", *command, "--weights", file, "--spec", spec, "--data", data,
            "--workers", "0", "--threads", "1",
        )  # fmt: skip
        assert code == 2 and err.strip().endswith(said), err
        assert len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())  # the folder is checked first


# ---------------------------------------------------------------------------------------
# MatConvNet


def write_matconvnet(path, net, **kwargs):
    layers, weights, size = net
    return source_nets.write_matconvnet(path, layers, weights, size, **kwargs)


def matconvnet_reference(net, filters, image_hwc: np.ndarray) -> np.ndarray:
    layers, weights, _ = net
    scores = [layer for layer in layers if layer[0] != "softmax"]
    return source_nets.matconvnet_forward(scores, weights, filters, image_hwc).reshape(-1)


@pytest.mark.parametrize("old_fields", [False, True], ids=["weights-cell", "filters-biases"])
def test_matconvnet_reads_back_by_value(tmp_path, old_fields):
    layers = random_layers(SMALL, seed=5)
    file = tmp_path / "imagenet-small.mat"
    filters = write_matconvnet(file, layers, old_fields=old_fields)
    converted = convert(file, parse(SMALL))
    assert converted.info.preprocessing.mean_rgb == (120.0, 115.0, 100.0)
    assert converted.info.preprocessing.bgr is False
    net = to_net(converted).eval()
    for name, weight, bias in weight_items(layers):
        assert torch.equal(getattr(net, name).weight.detach(), torch.from_numpy(weight)), name
        assert torch.equal(getattr(net, name).bias.detach(), torch.from_numpy(bias)), name
    image = np.random.default_rng(0).standard_normal((16, 16, 3)).astype(np.float32) * 50
    expected = matconvnet_reference(layers, filters, image)
    as_torch = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        scores = net(as_torch)[0]
        assert relative(scores, torch.from_numpy(expected)) <= 1e-5
        dense = densify(net)(as_torch)
    torch.testing.assert_close(dense[0, :, 0, 0], scores, rtol=1e-5, atol=1e-5)


MATCONVNET_LRN = (
    "input 24x24 RGB\nconv3-4 LRN maxpool\nconv3-8 avgpool\nFC-10 FC-10 FC-4 soft-max\n"
)


@pytest.mark.parametrize(
    "param, spelled",
    [([5, 2, 1e-4, 0.75], "LRN"), ([5, 1, 2e-5, 0.75], "LRN(alpha=2e-05,k=1)"),
     ([3, 1.5, 3e-4, 0.5], "LRN(size=3,alpha=0.0003,beta=0.5,k=1.5)")],
    ids=["alexnet", "vgg-f", "other"],
)  # fmt: skip
def test_matconvnet_lrn_and_pools_convert_to_matconvnets_formulas(tmp_path, param, spelled):
    """MatConvNet's [N κ α β] is AlexNet's convention as it is (no division by N): the
    implied spec spells it, and the converted net's scores are vl_simplenn's."""
    net = random_layers(MATCONVNET_LRN, seed=9, lrn={"param": param})
    file = tmp_path / "imagenet-lrn.mat"
    filters = write_matconvnet(file, net)
    converted = convert(file)
    assert format_spec(converted.net.spec).splitlines()[1:3] == [
        "input 24x24 RGB",
        f"conv3-4 {spelled} maxpool",
    ]
    image = np.random.default_rng(1).standard_normal((24, 24, 3)).astype(np.float32) * 100
    expected = torch.from_numpy(matconvnet_reference(net, filters, image))
    with torch.no_grad():
        scores = to_net(converted).eval()(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])
    assert relative(scores[0], expected) <= 1e-5
    if spelled != "LRN":  # the paper's LRN is another function: refused
        with pytest.raises(WeightsError, match="layer norm1 \\(lrn\\) is LRN size"):
            convert(file, parse(MATCONVNET_LRN))


def test_matconvnet_net_of_another_function_is_refused(cli, tmp_path, small_spec):
    for changes, said in (
        ({"pool1": {"method": "AVE"}}, "layer pool1 (pool) is average pooling 2×2 stride 2; "
         "the spec's pool1 is max pooling 2×2 stride 2"),
        ({"conv2_1": {"pad": 0}}, "layer conv2_1 (conv) is conv 3×3 stride 1 pad 0; the "
         "spec's conv2_1 is conv 3×3 stride 1 pad 1"),
    ):  # fmt: skip
        file = tmp_path / "other.mat"
        write_matconvnet(file, random_layers(SMALL, **changes))
        assert _refused(cli, tmp_path, file, small_spec) == f"{file}: {said}"


def test_matconvnet_cli_records_rgb_minus_the_average_image(cli, tmp_path, small_spec):
    layers = random_layers(SMALL, seed=6)
    file = tmp_path / "net.mat"
    write_matconvnet(file, layers, average_rgb=(123.68, 116.779, 103.939))
    out = tmp_path / "net.safetensors"
    code, stdout, err = cli("convert", file, "--spec", small_spec, "-o", out, "--rgb")
    assert code == 0, err
    assert "MatConvNet simplenn" in stdout and "already takes RGB" in stdout
    net = vggspec.load(out)
    preprocessing = read_model_info(out).preprocessing
    assert not preprocessing.bgr and preprocessing.std_rgb == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(preprocessing.mean_rgb, (123.68, 116.779, 103.939), rtol=1e-6)
    assert torch.equal(net.conv1_1.weight.detach(), torch.from_numpy(layers[1]["conv1_1"][0]))


def test_matconvnet_of_another_net_and_bad_files_are_one_line(cli, tmp_path, small_spec):
    other = tmp_path / "other.mat"
    layers = random_layers(WIDER)
    write_matconvnet(other, layers)
    err = _refused(cli, tmp_path, other, small_spec)
    assert err == (
        f"{other}: layer conv2_2 has filters 3×3×8×16 (H×W×C×K); the spec's conv2_2 needs 3×3×8×8"
    )
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    assert _refused(cli, tmp_path, junk, small_spec).startswith(f"{junk}: not a")
    empty = tmp_path / "empty.mat"
    from scipy.io import savemat

    savemat(str(empty), {"x": np.zeros(3)})
    err = _refused(cli, tmp_path, empty, small_spec)
    assert err == f"{empty}: not a MatConvNet simplenn net (no `layers`)"


def test_damaged_matconvnet_files_are_one_line_not_a_crash(cli, tmp_path, small_spec):
    """One byte changed in an uncompressed .mat (0x10 → 0xBC, 17,145th byte of this net as
    scipy 1.17 writes it) makes scipy's reader die of SIGSEGV, taking vggspec with it;
    a conv layer without filters, or a setting that is a struct, were tracebacks."""
    from scipy.io import savemat

    file = tmp_path / "damaged.mat"
    write_matconvnet(file, random_layers(SMALL))
    data = bytearray(file.read_bytes())
    assert data[17144] == 0x10, "scipy writes this net otherwise: find another damage"
    data[17144] = 0xBC
    file.write_bytes(bytes(data))
    # In a process of its own: whether the damage crashes depends on what lies in memory.
    out = tmp_path / "damaged.safetensors"
    run = vggspec_cmd("convert", file, "--spec", small_spec, "-o", out)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run
    assert run.stderr.startswith(f"{file}: not a readable MATLAB file ("), run.stderr
    assert not out.exists()
    filters = source_nets._cell([np.zeros((3, 3, 3, 4), np.float32), np.zeros((1, 4), np.float32)])
    for layer, said in (
        ({"name": "conv1", "type": "conv"}, "a conv layer without filters"),
        ({"name": "conv1", "type": "conv", "weights": filters, "stride": {"a": 1}},
         "float() argument must be a string or a real number, not 'mat_struct'"),
    ):  # fmt: skip
        odd = tmp_path / "odd.mat"
        savemat(str(odd), {"layers": source_nets._cell([layer])})
        assert _refused(cli, tmp_path, odd, None) == f"{odd}: layer conv1: {said}"


def test_matconvnet_fc_filters_need_the_transpose(tmp_path):
    """fc6 stored 4×4×8×12 (H×W×C×K): a filter value encoding (h, w, c) must land at
    fc3.weight[k, c·16 + h·4 + w]: torch's C×H×W flatten, not MATLAB's column order."""
    layers = random_layers(SMALL, seed=7)
    file = tmp_path / "net.mat"
    h, w, c, k = np.meshgrid(*(np.arange(n) for n in (4, 4, 8, 12)), indexing="ij")
    fc6 = (1000 * k + 100 * c + 10 * h + w).astype(np.float32)
    torch_order = fc6.transpose(3, 2, 0, 1).reshape(12, -1)
    layers[1]["fc3"] = (np.ascontiguousarray(torch_order), layers[1]["fc3"][1])
    filters = write_matconvnet(file, layers)
    np.testing.assert_array_equal(filters["fc3"], fc6)
    weight = convert(file, parse(SMALL)).arrays["fc3.weight"]
    assert weight[5, 7 * 16 + 2 * 4 + 3] == 5000 + 700 + 20 + 3
    assert weight[11, 0 * 16 + 3 * 4 + 1] == 11000 + 31


# ---------------------------------------------------------------------------------------
# `run eval --weights FILE.caffemodel`: converted in memory, its pixel convention applied


def test_run_eval_takes_a_caffemodel_directly(cli, tmp_path):
    from eval_helpers import CLASSES, SPEC_32, write_images

    torch_threads = torch.get_num_threads()
    spec = tmp_path / "net.vgg"
    spec.write_text(SPEC_32)
    data = write_images(tmp_path / "data", {c: [(40, 36), (33, 45)] for c in CLASSES})
    caffemodel = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SPEC_32, seed=8))
    common = ["--data", data, "--workers", "0", "--threads", "1", "--scales", "36", "--json"]
    runs = {
        "direct": ["--weights", caffemodel, "--spec", spec],
        "converted": ["--checkpoint", tmp_path / "bgr.safetensors"],
        "rgb": ["--checkpoint", tmp_path / "rgb.safetensors"],
    }
    for name, extra in (("bgr", []), ("rgb", ["--rgb"])):
        out = tmp_path / f"{name}.safetensors"
        assert cli("convert", caffemodel, "--spec", spec, "-o", out, *extra)[0] == 0
    posteriors = {}
    try:
        for name, args in runs.items():
            file = tmp_path / f"{name}.npz"
            code, out, err = cli("run", "eval", *args, *common, "--posteriors", file)
            assert code == 0, err
            posteriors[name] = np.load(file)["dense@36"]
    finally:
        torch.set_num_threads(torch_threads)
    np.testing.assert_array_equal(posteriors["direct"], posteriors["converted"])
    # BGR net fed BGR == channel-swapped net fed RGB: the recorded convention is applied.
    np.testing.assert_allclose(posteriors["rgb"], posteriors["direct"], rtol=1e-5, atol=1e-6)
    assert posteriors["direct"].shape == (12, 6)


def test_matconvnet_full_average_image_is_recorded_as_its_mean_pixel(tmp_path):
    """Older files (the neural-style favourite imagenet-vgg-verydeep-19.mat) keep a whole
    H×W×3 average image, at the top level: its mean pixel is recorded, with a note."""
    from scipy.io import loadmat, savemat

    file = tmp_path / "old.mat"
    write_matconvnet(file, random_layers(SMALL), old_fields=True)
    content = loadmat(str(file))
    average = np.stack([np.full((4, 4), v, np.float32) for v in (10.0, 20.0, 30.0)], axis=-1)
    average[0, 0] = (50.0, 60.0, 70.0)
    normalization = {"averageImage": average}
    savemat(str(file), {"layers": content["layers"], "normalization": normalization})
    converted = convert(file, parse(SMALL))
    np.testing.assert_allclose(converted.info.preprocessing.mean_rgb, (12.5, 22.5, 32.5))
    assert converted.notes == ["its average image (4×4×3) is recorded as its mean pixel"]
