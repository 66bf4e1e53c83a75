"""`vggspec convert`: Caffe (V1 and current layouts) and MatConvNet weights read back by value."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SPECS
from vggspec.compiler import compile_spec, parse
from vggspec.compiler.lowering.net import densify, lower
from vggspec.runtime.data.preprocessing import CAFFE_MEAN_RGB, Preprocessing
from vggspec.runtime.io.convert import convert, to_net
from vggspec.runtime.io.model_info import ModelInfo, read_model_info
from vggspec.runtime.io.weights import read_metadata

import vggspec

SMALL = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 conv3-8 maxpool\nFC-12 FC-12 FC-5 soft-max\n"
# The same depth with conv2_2 wider: every layer count matches, one shape does not.
WIDER = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 conv3-16 maxpool\nFC-12 FC-12 FC-5 soft-max\n"
OTHER = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 maxpool\nFC-12 FC-12 FC-5 soft-max\n"
# V1LayerParameter.LayerType values from caffe.proto.
V1_CONVOLUTION, V1_DATA, V1_INNER_PRODUCT, V1_POOLING, V1_RELU = 4, 5, 14, 17, 18


# ---------------------------------------------------------------------------------------
# An encoder independent of vggspec's reader: the official protobuf package, with message
# classes built from descriptors that carry caffe.proto's field numbers.


@functools.cache
def caffe_messages():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="vggspec_test_caffe.proto", package="caffe", syntax="proto2"
    )

    def message(name, *fields):
        m = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name, packed in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True
        return m

    opt, rep = fd.LABEL_OPTIONAL, fd.LABEL_REPEATED
    message("BlobShape", ("dim", 1, fd.TYPE_INT64, rep, "", True))
    message(
        "BlobProto",
        ("num", 1, fd.TYPE_INT32, opt, "", False),
        ("channels", 2, fd.TYPE_INT32, opt, "", False),
        ("height", 3, fd.TYPE_INT32, opt, "", False),
        ("width", 4, fd.TYPE_INT32, opt, "", False),
        ("data", 5, fd.TYPE_FLOAT, rep, "", True),
        ("diff", 6, fd.TYPE_FLOAT, rep, "", True),
        ("shape", 7, fd.TYPE_MESSAGE, opt, ".caffe.BlobShape", False),
        ("double_data", 8, fd.TYPE_DOUBLE, rep, "", True),
    )
    v1 = message(
        "V1LayerParameter",
        ("bottom", 2, fd.TYPE_STRING, rep, "", False),
        ("top", 3, fd.TYPE_STRING, rep, "", False),
        ("name", 4, fd.TYPE_STRING, opt, "", False),
        ("type", 5, fd.TYPE_ENUM, opt, ".caffe.V1LayerParameter.LayerType", False),
        ("blobs", 6, fd.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
        ("blobs_lr", 7, fd.TYPE_FLOAT, rep, "", False),
    )
    kinds = v1.enum_type.add(name="LayerType")
    for name, number in [
        ("NONE", 0),
        ("CONVOLUTION", V1_CONVOLUTION),
        ("DATA", V1_DATA),
        ("INNER_PRODUCT", V1_INNER_PRODUCT),
        ("POOLING", V1_POOLING),
        ("RELU", V1_RELU),
    ]:
        kinds.value.add(name=name, number=number)
    message(
        "LayerParameter",
        ("name", 1, fd.TYPE_STRING, opt, "", False),
        ("type", 2, fd.TYPE_STRING, opt, "", False),
        ("bottom", 3, fd.TYPE_STRING, rep, "", False),
        ("top", 4, fd.TYPE_STRING, rep, "", False),
        ("blobs", 7, fd.TYPE_MESSAGE, rep, ".caffe.BlobProto", False),
    )
    message(
        "NetParameter",
        ("name", 1, fd.TYPE_STRING, opt, "", False),
        ("layers", 2, fd.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False),
        ("input", 3, fd.TYPE_STRING, rep, "", False),
        ("input_dim", 4, fd.TYPE_INT32, rep, "", False),
        ("layer", 100, fd.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return get_class(pool.FindMessageTypeByName("caffe.NetParameter"))


def random_layers(spec_text: str, seed: int = 0):
    """(name, kind, weight, bias) per weight layer, in Caffe's shapes (conv K×C×H×W, FC
    out×in with `in` flattened C×H×W), random float32 values of order 0.1."""
    state = lower(compile_spec(parse(spec_text)), "torch").state_dict()
    rng = np.random.default_rng(seed)
    layers = []
    for key in [k for k in state if k.endswith(".weight")]:
        name = key.removesuffix(".weight")
        w, b = state[key].shape, state[f"{name}.bias"].shape
        kind = "conv" if len(w) == 4 else "fc"
        layers.append(
            (
                name,
                kind,
                (rng.standard_normal(w) * 0.2).astype(np.float32),
                (rng.standard_normal(b) * 0.1).astype(np.float32),
            )
        )
    return layers


def write_caffemodel(path, layers, layout="V1", legacy_shape=True, double=False):
    """A .caffemodel as Caffe writes it: the VGG release is V1 with num/channels/height/
    width blobs; the current layout uses BlobShape. Layers without weights in between."""
    NetParameter = caffe_messages()
    net = NetParameter(name="VGG_test")
    net.input.append("data")
    net.input_dim.extend([10, 3, 16, 16])

    def add_blob(layer, array):
        blob = layer.blobs.add()
        if legacy_shape:
            blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
        else:
            blob.shape.dim.extend(array.shape)
        values, flat = blob.double_data if double else blob.data, array.ravel()
        for start in range(0, flat.size, 1 << 20):  # lists of 1 M floats: D's fc6 is 103 M
            values.extend(flat[start : start + (1 << 20)].tolist())
        blob.diff.extend([1.0] * min(array.size, 7))  # gradients: to be skipped

    for name, kind, weight, bias in layers:
        if layout == "V1":
            layer = net.layers.add(name=name, bottom=["x"], top=["y"])
            layer.type = V1_CONVOLUTION if kind == "conv" else V1_INNER_PRODUCT
            layer.blobs_lr.extend([1.0, 2.0])
            relu = net.layers.add(name=f"relu_{name}", type=V1_RELU)
        else:
            layer = net.layer.add(
                name=name, type="Convolution" if kind == "conv" else "InnerProduct"
            )
            relu = net.layer.add(name=f"relu_{name}", type="ReLU")
        relu.bottom.append(name)
        add_blob(layer, weight)
        add_blob(layer, bias)
    path.write_bytes(net.SerializeToString())
    return path


def caffe_reference(layers, x: torch.Tensor) -> torch.Tensor:
    """SMALL's forward pass with Caffe's blobs used as Caffe uses them: convolution
    weights K×C×H×W, InnerProduct on the blob flattened row-major (C×H×W)."""
    (_, _, w1, b1), (_, _, w2, b2), (_, _, w3, b3), *fcs = layers
    x = F.max_pool2d(F.relu(F.conv2d(x, torch.from_numpy(w1), torch.from_numpy(b1), padding=1)), 2)
    x = F.relu(F.conv2d(x, torch.from_numpy(w2), torch.from_numpy(b2), padding=1))
    x = F.max_pool2d(F.relu(F.conv2d(x, torch.from_numpy(w3), torch.from_numpy(b3), padding=1)), 2)
    x = x.reshape(x.shape[0], -1)
    for i, (_, _, w, b) in enumerate(fcs):
        x = x @ torch.from_numpy(w).T + torch.from_numpy(b)
        x = F.relu(x) if i < len(fcs) - 1 else x
    return x


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
    for name, _, weight, bias in layers:
        assert torch.equal(state[f"{name}.weight"], torch.from_numpy(weight)), name
        assert torch.equal(state[f"{name}.bias"], torch.from_numpy(bias)), name
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net.eval()(x), caffe_reference(layers, x), rtol=1e-5, atol=1e-5)


def test_caffe_fc6_is_flattened_channels_first(tmp_path):
    """fc6's input index in a Caffe blob is c·H·W + h·W + w: a value that encodes
    (c, h, w) must land at [c, h, w] of the dense twin's 4×4 conv filter."""
    layers = random_layers(SMALL)
    name, kind, weight, bias = layers[3]
    channels, size = 8, 4
    c, h, w = np.meshgrid(np.arange(channels), np.arange(size), np.arange(size), indexing="ij")
    code = (100 * c + 10 * h + w).astype(np.float32).reshape(-1)
    weight = np.stack([code + 1000 * o for o in range(weight.shape[0])])
    layers[3] = (name, kind, weight, bias)
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
    image_bgr = torch.rand(2, 3, 16, 16) * 255 - 120
    torch.testing.assert_close(bgr_net(image_bgr), rgb_net(image_bgr.flip(1)), rtol=1e-5, atol=1e-5)
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
    for name, _, weight, bias in layers:
        assert torch.equal(getattr(net, name).weight.detach(), torch.from_numpy(weight))
        assert torch.equal(getattr(net, name).bias.detach(), torch.from_numpy(bias))
    caffe = Preprocessing("vggspec", CAFFE_MEAN_RGB, bgr=True)
    assert vggspec.model_info(out) == ModelInfo(caffe, input_size=(16, 16))
    assert read_metadata(out)["converted_from"] == "VGG_small.caffemodel (Caffe V1)"

    code, _, err = cli("convert", file, "--spec", small_spec, "-o", out, "--rgb")
    assert code == 0, err
    swapped = vggspec.load(out)
    assert torch.equal(swapped.conv1_1.weight.detach(), torch.from_numpy(layers[0][2]).flip(1))
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
    out = tmp_path / "refused.safetensors"
    code, _, err = cli("convert", file, "--spec", spec, "-o", out, *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    return err.strip()


def test_truncated_caffemodel_is_one_line(cli, tmp_path, small_spec):
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL))
    data = file.read_bytes()
    for cut in (len(data) * 3 // 5, len(data) - 1):
        file.write_bytes(data[:cut])
        err = _refused(cli, tmp_path, file, small_spec)
        assert err.startswith(f"{file}: not a readable .caffemodel (")
        assert "runs past the end" in err


def test_not_a_caffemodel_is_one_line(cli, tmp_path, small_spec):
    for i, content in enumerate([b"", b"input 224x224 RGB\nconv3-64\n", bytes(range(256)) * 4]):
        file = tmp_path / f"junk{i}.caffemodel"
        file.write_bytes(content)
        err = _refused(cli, tmp_path, file, small_spec)
        assert err.startswith(f"{file}: not a")


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


def test_output_must_be_safetensors(cli, tmp_path, small_spec):
    file = write_caffemodel(tmp_path / "net.caffemodel", random_layers(SMALL))
    err = _refused(cli, tmp_path, file, small_spec, "-o", tmp_path / "x.pth")
    assert "give a .safetensors file name" in err


@pytest.mark.slow
def test_caffe_d_shapes_read_back_exactly(tmp_path):
    """VGG-16's shapes (configuration D), random weights, in the release's V1 layout."""
    spec = (SPECS / "D.vgg").read_text()
    layers = random_layers(spec, seed=4)
    file = write_caffemodel(tmp_path / "VGG_ILSVRC_16_layers.caffemodel", layers)
    converted = convert(file, parse(spec))
    assert list(converted.arrays)[-1] == "fc8.bias"
    for name, _, weight, bias in layers:
        np.testing.assert_array_equal(converted.arrays[f"{name}.weight"], weight)
        np.testing.assert_array_equal(converted.arrays[f"{name}.bias"], bias)


# ---------------------------------------------------------------------------------------
# MatConvNet


def _struct_cell(items) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def write_matconvnet(path, layers, average_rgb=(120.0, 115.0, 100.0), old_fields=False):
    """A simplenn net as MatConvNet saves it (`save(file, '-struct', 'net')`): a cell
    array of layer structs, FC layers as convs with H×W×C×K filters; returns the filters."""
    from scipy.io import savemat

    structs, filters = [], []
    for name, kind, weight, bias in layers:
        if kind == "conv":
            f = weight.transpose(2, 3, 1, 0)  # K×C×H×W → H×W×C×K
        elif name == layers[3][0]:  # the first FC sees 8×4×4: a 4×4 conv
            f = weight.reshape(-1, 8, 4, 4).transpose(2, 3, 1, 0)
        else:
            f = weight.T[None, None]
        f = np.ascontiguousarray(f)
        filters.append(f)
        layer = {"name": name, "type": "conv", "stride": np.array([[1.0, 1.0]])}
        if old_fields:
            layer.update(filters=f, biases=bias[None, :])
        else:
            layer["weights"] = _struct_cell([f, bias[None, :]])
        layer["pad"] = np.array([[1.0] * 4]) if kind == "conv" else np.array([[0.0] * 4])
        structs.append(layer)
        structs.append({"name": f"relu_{name}", "type": "relu", "weights": _struct_cell([])})
        if name in ("conv1_1", "conv2_2"):
            structs.append({"name": f"pool_{name}", "type": "pool", "method": "max"})
    structs.append({"name": "prob", "type": "softmax"})
    content = {"layers": _struct_cell(structs)}
    if average_rgb is not None:
        average = np.array(average_rgb, dtype=np.float32).reshape(1, 1, 3)
        normalization = {"averageImage": average, "imageSize": np.array([[16.0, 16, 3]])}
        if old_fields:
            content["normalization"] = normalization
        else:
            content["meta"] = {"normalization": normalization, "classes": {"name": "x"}}
    savemat(str(path), content)
    return filters


def matconvnet_reference(filters, biases, image_hwc: np.ndarray) -> np.ndarray:
    """SMALL's forward pass the way vl_nnconv computes it, on an H×W×C image with the
    H×W×C×K filters as they are (float64): out[i,j,k] = Σ x[i+u, j+v, c]·f[u,v,c,k] + b[k]."""

    def conv(x, f, b, pad):
        x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(x, f.shape[:2], axis=(0, 1))
        return np.einsum("ijcuv,uvck->ijk", windows, f.astype(np.float64)) + b

    def pool(x):
        h, w, c = x.shape
        return x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))

    x = image_hwc.astype(np.float64)
    for i, (f, b) in enumerate(zip(filters, biases, strict=True)):
        x = conv(x, f, b, 1 if i < 3 else 0)
        x = np.maximum(x, 0) if i < len(filters) - 1 else x
        x = pool(x) if i in (0, 2) else x
    return x.reshape(-1)


@pytest.mark.parametrize("old_fields", [False, True], ids=["weights-cell", "filters-biases"])
def test_matconvnet_reads_back_by_value(tmp_path, old_fields):
    layers = random_layers(SMALL, seed=5)
    file = tmp_path / "imagenet-small.mat"
    filters = write_matconvnet(file, layers, old_fields=old_fields)
    converted = convert(file, parse(SMALL))
    assert converted.info.preprocessing.mean_rgb == (120.0, 115.0, 100.0)
    assert converted.info.preprocessing.bgr is False
    net = to_net(converted).eval()
    for name, _, weight, bias in layers:
        assert torch.equal(getattr(net, name).weight.detach(), torch.from_numpy(weight)), name
        assert torch.equal(getattr(net, name).bias.detach(), torch.from_numpy(bias)), name
    image = np.random.default_rng(0).standard_normal((16, 16, 3)).astype(np.float32)
    expected = matconvnet_reference(filters, [b for *_, b in layers], image)
    scores = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[0]
    np.testing.assert_allclose(scores.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)
    dense = densify(net)(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])
    torch.testing.assert_close(dense[0, :, 0, 0], scores, rtol=1e-5, atol=1e-5)


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
    assert torch.equal(net.conv1_1.weight.detach(), torch.from_numpy(layers[0][2]))


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


def test_matconvnet_fc_filters_need_the_transpose(tmp_path):
    """fc6 stored 4×4×8×12 (H×W×C×K): a filter value encoding (h, w, c) must land at
    fc3.weight[k, c·16 + h·4 + w]: torch's C×H×W flatten, not MATLAB's column order."""
    layers = random_layers(SMALL, seed=7)
    file = tmp_path / "net.mat"
    filters = write_matconvnet(file, layers)
    h, w, c, k = np.meshgrid(*(np.arange(n) for n in (4, 4, 8, 12)), indexing="ij")
    filters[3] = (1000 * k + 100 * c + 10 * h + w).astype(np.float32)
    name, kind, _, bias = layers[3]
    torch_order = filters[3].transpose(3, 2, 0, 1).reshape(12, -1)
    layers[3] = (name, kind, np.ascontiguousarray(torch_order), bias)
    write_matconvnet(file, layers)
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
