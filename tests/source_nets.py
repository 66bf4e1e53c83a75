"""Nets as other tools write and compute them, for the conversion tests, independent of
vggspec: a small net description read from the notation's words by a regex, Caffe files
written with the official protobuf encoder from caffe.proto's field numbers, and forward
passes that follow Caffe's own formulas (caffe/src/caffe/layers/*.cpp) in numpy."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import torch
import torch.nn.functional as F

# V1LayerParameter.LayerType values from caffe.proto.
V1 = {
    "Accuracy": 1, "Convolution": 4, "Data": 5, "Dropout": 6, "InnerProduct": 14, "LRN": 15,
    "Pooling": 17, "ReLU": 18, "Softmax": 20, "SoftmaxWithLoss": 21,
}  # fmt: skip
TRAIN, TEST = 0, 1


# ---------------------------------------------------------------------------------------
# A net as a list of layers: (kind, name, settings), written from the notation's words.


def layers_of(text: str, lrn=None) -> list[tuple[str, str, dict]]:
    """The layers a simple spec text means, named as the VGG release names them: conv<k>-<c>
    (same padding, ReLU), maxpool/avgpool (2×2, stride 2), LRN (Caffe's settings `lrn`,
    local_size 5, alpha 1e-4, beta 0.75, k 1 by default), FC-<n> (ReLU and dropout after
    the hidden ones), soft-max."""
    words = re.findall(r"conv\d*-\d+|maxpool|avgpool|LRN|FC-\d+|soft-max", text)
    fcs = [w for w in words if w.startswith("FC")]
    layers, stage, index, fc = [], 1, 0, 0
    for word in words:
        if word.startswith("conv"):
            k, c = re.fullmatch(r"conv(\d*)-(\d+)", word).groups()
            k, index = int(k or 3), index + 1
            name = f"conv{stage}_{index}"
            layers.append(("conv", name, {"k": k, "pad": k // 2, "stride": 1, "out": int(c)}))
            layers.append(("relu", f"relu{stage}_{index}", {}))
        elif word in ("maxpool", "avgpool"):
            method = "MAX" if word == "maxpool" else "AVE"
            layers.append(("pool", f"pool{stage}", {"method": method, "k": 2, "stride": 2}))
            stage, index = stage + 1, 0
        elif word == "LRN":
            settings = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0, **(lrn or {})}
            layers.append(("lrn", f"norm{stage}", settings))
        elif word.startswith("FC"):
            fc += 1
            name = f"fc{stage + fc - 1}"
            layers.append(("fc", name, {"out": int(word[3:])}))
            if fc < len(fcs):
                layers.append(("relu", name.replace("fc", "relu"), {}))
                if fc <= 2:
                    layers.append(("dropout", name.replace("fc", "drop"), {"ratio": 0.5}))
        else:
            layers.append(("softmax", "prob", {}))
    return layers


def caffe_pooled(size: int, k: int, stride: int, pad: int = 0, ceil: bool = True) -> int:
    """pooling_layer.cpp's output size."""
    span = (size + 2 * pad - k) / stride
    out = (math.ceil(span) if ceil else math.floor(span)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_pairs(s: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """A conv's (pad, dilation), each (height, width): `pad` one number or two, `dilation`
    a list of one or two (caffe.proto's repeated fields), 1 when absent."""
    pad = s["pad"] if isinstance(s["pad"], (tuple, list)) else (s["pad"],) * 2
    dilation = s.get("dilation") or [1]
    return tuple(pad), (dilation[0], dilation[-1])


def random_weights(layers, channels: int, size: tuple[int, int], seed: int = 0) -> dict:
    """name → (weight, bias) in Caffe's shapes (conv K×C×kh×kw, FC out×in flattened C×H×W),
    random float32 of order 0.1; sizes followed through the layers as Caffe does."""
    rng = np.random.default_rng(seed)
    h, w = size
    weights = {}
    for kind, name, s in layers:
        if kind == "conv":
            shape = (s["out"], channels // s.get("group", 1), s["k"], s["k"])
            (ph, pw), (dh, dw) = conv_pairs(s)
            h = (h + 2 * ph - dh * (s["k"] - 1) - 1) // s["stride"] + 1
            w = (w + 2 * pw - dw * (s["k"] - 1) - 1) // s["stride"] + 1
            channels = s["out"]
        elif kind == "pool":
            ceil = s.get("round", "CEIL") == "CEIL"
            h = caffe_pooled(h, s["k"], s["stride"], s.get("pad", 0), ceil)
            w = caffe_pooled(w, s["k"], s["stride"], s.get("pad", 0), ceil)
            continue
        elif kind == "fc":
            shape = (s["out"], channels * h * w)
            channels, h, w = s["out"], 1, 1
        else:
            continue
        scale = 0.5 / math.sqrt(np.prod(shape[1:]))  # keeps activations of order 1
        weights[name] = (
            (rng.standard_normal(shape) * scale * 3).astype(np.float32),
            (rng.standard_normal(shape[0]) * 0.1).astype(np.float32),
        )
    return weights


# ---------------------------------------------------------------------------------------
# Caffe's forward pass, from its layer implementations.


def caffe_lrn(x: np.ndarray, local_size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """lrn_layer.cpp, ACROSS_CHANNELS: scale = k + alpha/size · Σ x² over the channels
    c − (size−1)/2 … c + (size−1)/2 inside the map; top = x · scale^−beta."""
    channels = x.shape[1]
    pre_pad = (local_size - 1) // 2
    out = np.empty_like(x)
    for c in range(channels):
        low, high = max(0, c - pre_pad), min(channels, c - pre_pad + local_size)
        scale = k + alpha / local_size * (x[:, low:high] ** 2).sum(axis=1)
        out[:, c] = x[:, c] * scale**-beta
    return out


def caffe_pool(x: np.ndarray, method: str, k: int, stride: int, pad: int = 0, ceil=True):
    """pooling_layer.cpp: windows from ph·stride − pad, clipped to the map; MAX takes the
    largest value inside the map, AVE divides the sum by the window clipped to H + pad."""
    n, c, h, w = x.shape
    oh, ow = (caffe_pooled(s, k, stride, pad, ceil) for s in (h, w))
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * stride - pad, pw * stride - pad
            he, we = min(hs + k, h + pad), min(ws + k, w + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if method == "MAX":
                out[:, :, ph, pw] = window.max(axis=(2, 3))
            else:
                out[:, :, ph, pw] = window.sum(axis=(2, 3)) / size
    return out


def caffe_forward(layers, weights, x: np.ndarray) -> np.ndarray:
    """The net's output for N×C×H×W input `x`, in float64, layer by layer as Caffe runs it
    (dropout is the identity at test time; soft-max over the channels)."""
    x = x.astype(np.float64)
    for kind, name, s in layers:
        if kind == "conv":
            w, b = (torch.from_numpy(a.astype(np.float64)) for a in weights[name])
            pad, dilation = conv_pairs(s)
            y = F.conv2d(torch.from_numpy(x), w, b, stride=s["stride"], padding=pad,
                         dilation=dilation, groups=s.get("group", 1))  # fmt: skip
            x = y.numpy()
        elif kind == "relu":
            x = np.where(x > 0, x, x * s.get("slope", 0.0))
        elif kind == "pool":
            ceil = s.get("round", "CEIL") == "CEIL"
            x = caffe_pool(x, s["method"], s["k"], s["stride"], s.get("pad", 0), ceil)
        elif kind == "lrn":
            x = caffe_lrn(x, s["local_size"], s["alpha"], s["beta"], s["k"])
        elif kind == "fc":
            w, b = weights[name]
            x = x.reshape(x.shape[0], -1) @ w.astype(np.float64).T + b
        elif kind == "softmax":
            e = np.exp(x - x.max(axis=1, keepdims=True))
            x = e / e.sum(axis=1, keepdims=True)
    return x


# ---------------------------------------------------------------------------------------
# Caffe files: message classes built from descriptors with caffe.proto's field numbers.


@functools.cache
def caffe_messages():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="vggspec_test_caffe_full.proto", package="caffe", syntax="proto2"
    )
    opt, rep = fd.LABEL_OPTIONAL, fd.LABEL_REPEATED
    u32, i64, flt, dbl, boolean = (
        fd.TYPE_UINT32, fd.TYPE_INT64, fd.TYPE_FLOAT, fd.TYPE_DOUBLE, fd.TYPE_BOOL,
    )  # fmt: skip
    string, msg, enum = fd.TYPE_STRING, fd.TYPE_MESSAGE, fd.TYPE_ENUM

    def message(name, *fields, enums=()):
        m = proto.message_type.add(name=name)
        for enum_name, values in enums:
            e = m.enum_type.add(name=enum_name)
            for value_name, number in values:
                e.value.add(name=value_name, number=number)
        for field_name, number, kind, label, *rest in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if rest and rest[0]:
                f.type_name = rest[0]
            if len(rest) > 1 and rest[1]:
                f.options.packed = True
        return m

    message("BlobShape", ("dim", 1, i64, rep, "", True))
    message(
        "BlobProto",
        ("num", 1, fd.TYPE_INT32, opt), ("channels", 2, fd.TYPE_INT32, opt),
        ("height", 3, fd.TYPE_INT32, opt), ("width", 4, fd.TYPE_INT32, opt),
        ("data", 5, flt, rep, "", True), ("diff", 6, flt, rep, "", True),
        ("shape", 7, msg, opt, ".caffe.BlobShape"), ("double_data", 8, dbl, rep, "", True),
    )  # fmt: skip
    message("NetStateRule", ("phase", 1, enum, opt, ".caffe.Phase"))
    proto.enum_type.add(name="Phase").value.extend(
        [descriptor_pb2.EnumValueDescriptorProto(name=n, number=v) for n, v in
         (("TRAIN", TRAIN), ("TEST", TEST))]
    )  # fmt: skip
    message(
        "ConvolutionParameter",
        ("num_output", 1, u32, opt), ("bias_term", 2, boolean, opt), ("pad", 3, u32, rep),
        ("kernel_size", 4, u32, rep), ("group", 5, u32, opt), ("stride", 6, u32, rep),
        ("pad_h", 9, u32, opt), ("pad_w", 10, u32, opt), ("kernel_h", 11, u32, opt),
        ("kernel_w", 12, u32, opt), ("dilation", 18, u32, rep),
    )  # fmt: skip
    message(
        "PoolingParameter",
        ("pool", 1, enum, opt, ".caffe.PoolingParameter.PoolMethod"),
        ("kernel_size", 2, u32, opt), ("stride", 3, u32, opt), ("pad", 4, u32, opt),
        ("global_pooling", 12, boolean, opt),
        ("round_mode", 13, enum, opt, ".caffe.PoolingParameter.RoundMode"),
        enums=[("PoolMethod", [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)]),
               ("RoundMode", [("CEIL", 0), ("FLOOR", 1)])],
    )  # fmt: skip
    message(
        "LRNParameter",
        ("local_size", 1, u32, opt), ("alpha", 2, flt, opt), ("beta", 3, flt, opt),
        ("norm_region", 4, enum, opt, ".caffe.LRNParameter.NormRegion"), ("k", 5, flt, opt),
        enums=[("NormRegion", [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)])],
    )  # fmt: skip
    message("ReLUParameter", ("negative_slope", 1, flt, opt))
    message("SoftmaxParameter", ("axis", 2, i64, opt))
    message("InnerProductParameter", ("num_output", 1, u32, opt))
    message("DropoutParameter", ("dropout_ratio", 1, flt, opt))
    message("TransformationParameter", ("mirror", 2, boolean, opt), ("crop_size", 3, u32, opt))
    message("DataParameter", ("source", 1, string, opt), ("batch_size", 4, u32, opt))
    message("InputParameter", ("shape", 1, msg, rep, ".caffe.BlobShape"))
    params = [
        ("convolution_param", "ConvolutionParameter", 10, 106),
        ("pooling_param", "PoolingParameter", 19, 121),
        ("lrn_param", "LRNParameter", 18, 118),
        ("relu_param", "ReLUParameter", 30, 123),
        ("softmax_param", "SoftmaxParameter", 39, 125),
        ("inner_product_param", "InnerProductParameter", 17, 117),
        ("dropout_param", "DropoutParameter", 12, 108),
        ("transform_param", "TransformationParameter", 36, 100),
        ("data_param", "DataParameter", 11, 107),
    ]
    v1 = message(
        "V1LayerParameter",
        ("bottom", 2, string, rep), ("top", 3, string, rep), ("name", 4, string, opt),
        ("type", 5, enum, opt, ".caffe.V1LayerParameter.LayerType"),
        ("blobs", 6, msg, rep, ".caffe.BlobProto"), ("blobs_lr", 7, flt, rep),
        ("include", 32, msg, rep, ".caffe.NetStateRule"),
        *[(f, v1n, msg, opt, f".caffe.{m}") for f, m, v1n, _ in params],
        enums=[("LayerType", [("NONE", 0), *sorted((k.upper(), v) for k, v in V1.items())])],
    )  # fmt: skip
    del v1
    message(
        "LayerParameter",
        ("name", 1, string, opt), ("type", 2, string, opt), ("bottom", 3, string, rep),
        ("top", 4, string, rep), ("blobs", 7, msg, rep, ".caffe.BlobProto"),
        ("include", 8, msg, rep, ".caffe.NetStateRule"),
        ("input_param", 143, msg, opt, ".caffe.InputParameter"),
        *[(f, v2n, msg, opt, f".caffe.{m}") for f, m, _, v2n in params],
    )  # fmt: skip
    message(
        "NetParameter",
        ("name", 1, string, opt), ("layers", 2, msg, rep, ".caffe.V1LayerParameter"),
        ("input", 3, string, rep), ("input_dim", 4, i64, rep),
        ("input_shape", 8, msg, rep, ".caffe.BlobShape"),
        ("layer", 100, msg, rep, ".caffe.LayerParameter"),
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return get_class(pool.FindMessageTypeByName("caffe.NetParameter"))


_TYPES = {
    "conv": "Convolution", "relu": "ReLU", "pool": "Pooling", "lrn": "LRN",
    "fc": "InnerProduct", "dropout": "Dropout", "softmax": "Softmax",
}  # fmt: skip


def _fill(layer, kind: str, s: dict) -> None:
    """The layer's parameter message, as a prototxt would set it."""
    if kind == "conv":
        p = layer.convolution_param
        p.num_output = s["out"]
        p.kernel_size.append(s["k"])
        if s["stride"] != 1:
            p.stride.append(s["stride"])
        if s["pad"]:
            p.pad.extend(s["pad"] if isinstance(s["pad"], (tuple, list)) else [s["pad"]])
        if s.get("group", 1) != 1:
            p.group = s["group"]
        p.dilation.extend(s.get("dilation", []))  # one value, or height then width
    elif kind == "pool":
        p = layer.pooling_param
        p.pool, p.kernel_size, p.stride = {"MAX": 0, "AVE": 1}[s["method"]], s["k"], s["stride"]
        if s.get("pad"):
            p.pad = s["pad"]
        if s.get("round") == "FLOOR":
            p.round_mode = 1
    elif kind == "lrn":
        p = layer.lrn_param
        p.local_size, p.alpha, p.beta = s["local_size"], s["alpha"], s["beta"]
        if s["k"] != 1.0:  # Caffe's default k is 1
            p.k = s["k"]
        if s.get("within"):
            p.norm_region = 1
    elif kind == "relu" and s.get("slope"):
        layer.relu_param.negative_slope = s["slope"]
    elif kind == "softmax" and "axis" in s:
        layer.softmax_param.axis = s["axis"]
    elif kind == "fc":
        layer.inner_product_param.num_output = s["out"]
    elif kind == "dropout":
        layer.dropout_param.dropout_ratio = s["ratio"]


def write_caffemodel(
    path, layers, weights, layout="V1", legacy_shape=True, double=False, train=False,
    input_size=(16, 16), channels=3,
):  # fmt: skip
    """A .caffemodel as Caffe writes it: every layer of the net in order (those without
    weights too), blobs with num/channels/height/width (the VGG release) or BlobShape.
    `train`: the training net (data layers per phase, a loss, accuracy in TEST); else the
    deploy net (input_dim for V1, an Input layer for V2)."""
    NetParameter = caffe_messages()
    net = NetParameter(name="VGG_test")
    v1 = layout == "V1"

    def add(kind: str, name: str):
        if v1:
            layer = net.layers.add(name=name)
            layer.type = V1[kind]
        else:
            layer = net.layer.add(name=name, type=kind)
        return layer

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

    if train:
        for phase, batch in ((TRAIN, 256), (TEST, 50)):
            data = add("Data", f"data_{phase}")
            data.top.extend(["data", "label"])
            data.include.add().phase = phase
            data.transform_param.crop_size = input_size[0]
            data.transform_param.mirror = phase == TRAIN
            data.data_param.batch_size = batch
    elif v1:
        net.input.append("data")
        net.input_dim.extend([10, channels, *input_size])
    else:
        data = add("Input", "data")
        data.input_param.shape.add().dim.extend([10, channels, *input_size])
    bottom = "data"
    for kind, name, s in layers:
        if train and kind == "softmax":
            continue  # the training net ends in the loss
        layer = add(_TYPES[kind], name)
        layer.bottom.append(bottom)
        in_place = kind in ("relu", "dropout") and s.get("in_place", True)
        layer.top.append(bottom if in_place else name)
        bottom = bottom if in_place else name
        _fill(layer, kind, s)
        if name in weights:
            if v1:
                layer.blobs_lr.extend([1.0, 2.0])
            for array in weights[name]:
                add_blob(layer, array)
    if train:
        loss = add("SoftmaxWithLoss", "loss")
        loss.bottom.extend([bottom, "label"])
        accuracy = add("Accuracy", "accuracy")
        accuracy.bottom.extend([bottom, "label"])
        accuracy.include.add().phase = TEST
    path.write_bytes(net.SerializeToString())
    return path


# ---------------------------------------------------------------------------------------
# MatConvNet: simplenn files written with scipy, and vl_simplenn's forward pass (vl_nnconv,
# vl_nnpool, vl_nnnormalize as their documentation defines them) on H×W×C arrays.


def _cell(items) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def matconvnet_lrn_param(settings: dict) -> list[float]:
    """[N κ α β]: given as `param`, or Caffe's settings as MatConvNet's importer writes
    them (α = Caffe's alpha / N, vl_nnnormalize not dividing by N)."""
    if "param" in settings:
        return list(settings["param"])
    n = settings["local_size"]
    return [n, settings["k"], settings["alpha"] / n, settings["beta"]]


def matconvnet_structs(layers, weights, size, channels=3, old_fields=False):
    """(simplenn layer structs, H×W×C×K filters by name): FC layers as convs over the map
    they see (fc6: 7×7×512×4096)."""
    structs, filters = [], {}
    h, w = size
    for kind, name, s in layers:
        layer = {"name": name, "type": kind}
        if kind in ("conv", "fc"):
            weight, bias = weights[name]
            if kind == "conv":
                f = weight.transpose(2, 3, 1, 0)  # K×C×H×W → H×W×C×K
                pad, stride = s["pad"], s["stride"]
                h, w = ((n + 2 * pad - s["k"]) // stride + 1 for n in (h, w))
            else:
                f = weight.reshape(weight.shape[0], channels, h, w).transpose(2, 3, 1, 0)
                pad, stride, h, w = 0, 1, 1, 1
            f = np.ascontiguousarray(f)
            filters[name], channels = f, f.shape[3]
            layer.update(type="conv", stride=np.array([[stride, stride]], dtype=float))
            layer["pad"] = np.array([[pad] * 4], dtype=float)
            if old_fields:
                layer.update(filters=f, biases=bias[None, :])
            else:
                layer["weights"] = _cell([f, bias[None, :]])
        elif kind == "relu":
            layer.update(weights=_cell([]), leak=float(s.get("slope", 0.0)))
        elif kind == "pool":
            method = {"MAX": "max", "AVE": "avg"}[s["method"]]
            pad = s.get("pad", 0)
            layer.update(method=method, pool=np.array([[s["k"], s["k"]]], dtype=float))
            layer.update(stride=np.array([[s["stride"]] * 2], dtype=float))
            layer["pad"] = np.array([[pad] * 4], dtype=float)
            h, w = ((n + 2 * pad - s["k"]) // s["stride"] + 1 for n in (h, w))
        elif kind == "lrn":
            layer["param"] = np.array([matconvnet_lrn_param(s)], dtype=float)
        elif kind == "dropout":
            layer["rate"] = s["ratio"]
        structs.append(layer)
    return structs, filters


def write_matconvnet(
    path, layers, weights, size, average_rgb=(120.0, 115.0, 100.0), old_fields=False
):  # fmt: skip
    """A simplenn net as MatConvNet saves it (`save(file, '-struct', 'net')`): a cell array
    of layer structs and meta.normalization (or, before beta-17, a top-level normalization);
    returns the H×W×C×K filters by name."""
    from scipy.io import savemat

    structs, filters = matconvnet_structs(layers, weights, size, old_fields=old_fields)
    content = {"layers": _cell(structs)}
    normalization = {"imageSize": np.array([[size[0], size[1], 3]], dtype=float)}
    if average_rgb is not None:
        normalization["averageImage"] = np.array(average_rgb, dtype=np.float32).reshape(1, 1, 3)
    if old_fields:
        content["normalization"] = normalization
    else:
        content["meta"] = {"normalization": normalization, "classes": {"name": "x"}}
    savemat(str(path), content)
    return filters


def matconvnet_forward(layers, weights, filters, image_hwc: np.ndarray) -> np.ndarray:
    """vl_simplenn's output for one H×W×C image (float64): vl_nnconv out[i,j,k] =
    Σ x[s·i+u−pad, s·j+v−pad, c]·f[u,v,c,k] + b[k]; vl_nnpool over floor((H−p)/s)+1
    windows; vl_nnnormalize x / (κ + α Σ_{q∈Q(k)} x_q²)^β with Q(k) = [k − ⌊(N−1)/2⌋,
    k + ⌈(N−1)/2⌉] (no division by N); vl_nnsoftmax over the channels."""
    x = image_hwc.astype(np.float64)
    for kind, name, s in layers:
        if kind in ("conv", "fc"):
            f = filters[name].astype(np.float64)
            pad, stride = (s["pad"], s["stride"]) if kind == "conv" else (0, 1)
            x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(x, f.shape[:2], axis=(0, 1))
            windows = windows[::stride, ::stride]
            x = np.einsum("ijcuv,uvck->ijk", windows, f) + weights[name][1]
        elif kind == "relu":
            x = np.where(x > 0, x, x * s.get("slope", 0.0))
        elif kind == "pool":
            k, stride = s["k"], s["stride"]
            windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))
            windows = windows[::stride, ::stride]
            x = windows.max(axis=(3, 4)) if s["method"] == "MAX" else windows.mean(axis=(3, 4))
        elif kind == "lrn":
            n, kappa, alpha, beta = matconvnet_lrn_param(s)
            depth, out = x.shape[2], np.empty_like(x)
            for c in range(depth):
                low = max(0, c - (n - 1) // 2)
                high = min(depth, c + math.ceil((n - 1) / 2) + 1)
                out[:, :, c] = (
                    x[:, :, c] / (kappa + alpha * (x[:, :, low:high] ** 2).sum(2)) ** beta
                )
            x = out
        elif kind == "softmax":
            e = np.exp(x - x.max(axis=2, keepdims=True))
            x = e / e.sum(axis=2, keepdims=True)
    return x
