"""`vggspec convert` of Keras VGG weights: every HDF5 layout Keras wrote, checked against
Keras' own forward pass (Keras 3 on the torch backend)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import numpy as np
import pytest
import torch
from helpers import SPECS
from vggspec.compiler import format_spec, parse
from vggspec.compiler.lowering.net import densify
from vggspec.runtime.data.preprocessing import CAFFE_MEAN_RGB
from vggspec.runtime.io.convert import convert, to_net
from vggspec.runtime.io.weights import WeightsError

import vggspec

h5py = pytest.importorskip("h5py")  # the keras extra; keras and h5py are in dev
keras = pytest.importorskip("keras")

# keras.applications.VGG16's layout at a small width: blocks of (convs, width).
BLOCKS = [(2, 4), (2, 8), (3, 8)]
SMALL_SPEC = (
    "input 40x40 RGB\nconv3-4 conv3-4 maxpool\nconv3-8 conv3-8 maxpool\n"
    "conv3-8 conv3-8 conv3-8 maxpool\nFC-16 FC-16 FC-7 soft-max\n"
)


def vgg_like(input_shape=(40, 40, 3), blocks=BLOCKS, fc=16, classes=7, top=True, seed=0):
    """A Keras model named and built as keras.applications.vgg16 builds VGG16 (Conv2D
    3×3 'same' ReLU, MaxPooling2D 2×2, Flatten, fc1, fc2, predictions), narrower, with
    weights large enough that its posteriors are far from uniform."""
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block, (convs, width) in enumerate(blocks, start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(
                width, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}"
            )(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    if top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(fc, activation="relu", name="fc1")(x)
        x = layers.Dense(fc, activation="relu", name="fc2")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="vgg16")
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():  # He's scale keeps the activations' size through ReLUs
        scale = np.sqrt(2 / np.prod(w.shape[:-1])) if w.ndim > 1 else 0.05
        weights.append((rng.standard_normal(w.shape) * scale).astype(np.float32))
    if top:
        weights[-2] *= 0.1  # the inputs are pixels (±128): logits of order 10
    model.set_weights(weights)
    return model


def _h5py_legacy(model, path, suffix, keras1=False):
    """The legacy layout written with h5py as Keras 1 and 2 wrote it (`save_weights` to a
    .h5): top-level `layer_names`, each layer's group with `weight_names`."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"1.1.0" if keras1 else b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = []
            for weight, kind in zip(layer.get_weights(), ("kernel", "bias"), strict=False):
                if keras1:  # Keras 1: block1_conv1_W_1:0 beside block1_conv1_b_1:0
                    name = f"{layer.name}_{'W' if kind == 'kernel' else 'b'}_1{suffix}"
                else:  # Keras 2: block1_conv1/kernel:0 (a subgroup)
                    name = f"{layer.name}/{kind}{suffix}"
                group.create_dataset(name, data=weight)
                names.append(name.encode())
            group.attrs["weight_names"] = names
    return path


def save(model, folder, layout: str):
    """The model's weights as one of the layouts Keras wrote."""
    from keras.src.legacy.saving import legacy_h5_format

    if layout == "keras3":
        path = folder / "vgg.weights.h5"
        model.save_weights(path)
    elif layout == "keras3-legacy":  # Keras 3's own writer of the legacy layout
        path = folder / "vgg_legacy.h5"
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    elif layout == "keras2":
        path = _h5py_legacy(model, folder / "vgg16_weights_tf_dim_ordering_tf_kernels.h5", ":0")
    elif layout == "keras2-no-suffix":
        path = _h5py_legacy(model, folder / "vgg_nosuffix.h5", "")
    elif layout == "keras1":
        path = _h5py_legacy(model, folder / "vgg_keras1.h5", ":0", keras1=True)
    else:  # a whole model, its config with it: model.save("x.h5")
        path = folder / "vgg_model.h5"
        model.save(path)
    return path


def images(shape=(3, 40, 40, 3), seed=1) -> np.ndarray:
    """BGR images with the VGG mean pixel taken off, as keras' preprocess_input gives."""
    return np.random.default_rng(seed).uniform(-120, 135, shape).astype(np.float32)


def ours(net, x: np.ndarray, predict=True) -> np.ndarray:
    with torch.no_grad():
        batch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        return (net.predict(batch) if predict else net(batch)).numpy()


LAYOUTS = ["keras3", "keras3-legacy", "keras2", "keras2-no-suffix", "keras1", "model"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keras_posteriors_equal_keras_predict(tmp_path, layout):
    model = vgg_like()
    file = save(model, tmp_path, layout)
    x = images()
    expected = model.predict(x, verbose=0)
    assert expected.max() > 0.5  # posteriors far from uniform: the check means something
    converted = convert(file)
    assert format_spec(converted.net.spec).splitlines()[1:] == SMALL_SPEC.splitlines()
    assert converted.info.preprocessing.bgr and converted.info.preprocessing.mean_rgb == (
        CAFFE_MEAN_RGB
    )
    net = to_net(converted).eval()
    np.testing.assert_allclose(ours(net, x), expected, rtol=0, atol=1e-4)
    given = to_net(convert(file, parse(SMALL_SPEC))).eval()
    np.testing.assert_allclose(ours(given, x), expected, rtol=0, atol=1e-4)
    # The dense twin at a larger image: the same weights, Keras' FC read as convs.
    assert densify(net)(torch.zeros(1, 3, 80, 96)).shape == (1, 7, 6, 8)


def test_keras_net_of_a_non_square_input(tmp_path):
    """40×48: a whole-model file says its input size; a weights-only one cannot (its fc1
    takes 8 × 30 inputs), so it needs the spec, and then matches Keras too."""
    model = vgg_like((40, 48, 3))
    x = images((2, 40, 48, 3))
    expected = model.predict(x, verbose=0)
    whole = convert(save(model, tmp_path, "model"))
    assert format_spec(whole.net.spec).splitlines()[1] == "input 40x48 RGB"
    np.testing.assert_allclose(ours(to_net(whole).eval(), x), expected, rtol=0, atol=1e-4)
    file = save(model, tmp_path, "keras3")
    with pytest.raises(WeightsError) as refused:
        convert(file)
    assert str(refused.value) == (
        f"{file} does not say its input size, and its first FC layer fc1 takes 240 inputs, "
        "not 8 channels of a square map: give --spec"
    )
    given = convert(file, parse(SMALL_SPEC.replace("40x40", "40x48")))
    np.testing.assert_allclose(ours(to_net(given).eval(), x), expected, rtol=0, atol=1e-4)


def test_keras_notop_gives_the_bodys_features(cli, tmp_path):
    body = vgg_like(top=False)
    x = images()
    expected = body.predict(x, verbose=0).transpose(0, 3, 1, 2)  # N×H×W×C → N×C×H×W
    spec = tmp_path / "d.vgg"
    spec.write_text(SMALL_SPEC)
    for layout in ("keras2", "keras3"):
        file = save(body, tmp_path, layout)
        converted = convert(file)
        assert format_spec(converted.net.spec).splitlines()[1:] == [
            "input 224x224 RGB", "conv3-4 conv3-4 maxpool", "conv3-8 conv3-8 maxpool",
            "conv3-8 conv3-8 conv3-8 maxpool",
        ]  # fmt: skip
        net = to_net(converted).eval()
        with torch.no_grad():
            got = vggspec.features(net, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                   ["pool3"])["pool3"].numpy()  # fmt: skip
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
        out = tmp_path / "refused.safetensors"
        code, _, err = cli("convert", file, "--spec", spec, "-o", out)
        assert code == 2 and not out.exists()
        assert err.strip() == (
            f"{file} has no FC layers (a convolutional body, like Keras' _notop files): give "
            f"a spec without them ({spec} has 3)"
        )


def test_keras_file_of_another_function_is_refused(tmp_path):
    """A whole-model file says what its layers compute: 'valid' padding or average
    pooling where the spec says otherwise is refused, naming the layer."""
    from keras import layers

    inputs = keras.Input(shape=(16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu", padding="valid", name="block1_conv1")(inputs)
    x = layers.AveragePooling2D(2, name="block1_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(5, activation="softmax", name="predictions")(x)
    file = save(keras.Model(inputs, x), tmp_path, "model")
    spec = parse("input 16x16 RGB\nconv3-4 maxpool FC-5 soft-max\n")
    with pytest.raises(WeightsError) as refused:
        convert(file, spec)
    assert str(refused.value) == (
        f"{file}: layer block1_conv1 (Conv2D) is conv 3×3 stride 1 pad 0; the spec's conv1_1 "
        "is conv 3×3 stride 1 pad 1"
    )


def test_weights_only_keras_file_of_unknown_layers_is_one_line(cli, tmp_path):
    from keras import layers

    inputs = keras.Input(shape=(8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2d")(inputs)
    model = keras.Model(inputs, x)
    for layout, said in (
        ("keras2", "layer conv2d (Keras) is a layer whose settings the file does not record"),
        ("keras3", "layer conv2d: a Keras 3 weights file records neither the order of its "
         "layers nor what they compute"),
    ):  # fmt: skip
        file = save(model, tmp_path, layout)
        code, _, err = cli("convert", file, "-o", tmp_path / "x.safetensors")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert said in err


def test_missing_h5py_is_one_line(cli, tmp_path, monkeypatch):
    file = save(vgg_like(), tmp_path, "keras2")
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    code, _, err = cli("convert", file, "-o", tmp_path / "x.safetensors")
    assert code == 2
    assert err.strip() == f"{file}: reading Keras weights needs h5py: pip install 'vggspec[keras]'"


def test_run_features_takes_a_keras_file_directly(cli, tmp_path):
    from eval_helpers import CLASSES, write_images

    body = vgg_like(top=False)
    file = save(body, tmp_path, "keras3")
    spec = tmp_path / "body.vgg"
    # A body takes any size: the spec's is the smallest test scale (Q ≥ input).
    spec.write_text(format_spec(convert(file).net.spec).replace("224x224", "40x40"))
    data = write_images(tmp_path / "data", {c: [(48, 40)] for c in CLASSES[:2]})
    out = tmp_path / "features"
    code, _, err = cli(
        "run", "features", "--weights", file, "--spec", spec, "--data", data, "--out", out,
        "--layer", "pool3", "--workers", "0", "--threads", "1", "--scales", "40",
    )  # fmt: skip
    assert code == 0, err
    assert np.load(out / "val.npy").shape == (2, 8)


@pytest.mark.slow
def test_keras_applications_vgg16_at_another_size_and_at_224(cli, tmp_path):
    """keras.applications.VGG16 itself: at 64×64 its posteriors are ours; at 224×224 the
    file converts without a spec into configuration D (138,357,544 parameters)."""
    from keras.applications import VGG16

    model = VGG16(weights=None, input_shape=(64, 64, 3), classes=10)
    weights = model.get_weights()
    weights[-2] *= 30  # predictions: posteriors far from uniform
    model.set_weights(weights)
    x = images((2, 64, 64, 3))
    expected = model.predict(x, verbose=0)
    assert expected.max() > 0.5
    for layout in ("keras2", "keras3"):
        net = to_net(convert(save(model, tmp_path, layout))).eval()
        np.testing.assert_allclose(ours(net, x), expected, rtol=0, atol=1e-4)
    del model, net
    full = VGG16(weights=None)
    for layout in ("keras2", "keras3"):
        out = tmp_path / f"vgg16-{layout}.safetensors"
        code, stdout, err = cli("convert", save(full, tmp_path, layout), "-o", out)
        assert code == 0, err
        assert "configuration D (specs/D.vgg)" in stdout
        code, stdout, err = cli("compile", out.with_suffix(".vgg"), "--json")
        assert code == 0, err
        import json

        assert json.loads(stdout)["params"] == 138_357_544
        assert (
            parse(out.with_suffix(".vgg").read_text()).layers
            == parse((SPECS / "D.vgg").read_text()).layers
        )


def _edit_config(file, edit) -> None:
    """A whole-model file with its model config changed by `edit(layer name → config)`."""
    import json

    with h5py.File(file, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit({layer["config"]["name"]: layer["config"] for layer in config["config"]["layers"]})
        f.attrs["model_config"] = json.dumps(config)


def test_keras_activations_serialised_as_objects_are_read(tmp_path):
    """An activation may be written as a serialised function ({"class_name": "function",
    "config": "relu"}: it was a traceback) or as a layer (Dense(activation=ReLU())): both
    are the ReLU, and the net is Keras' own."""
    model = vgg_like()
    file = save(model, tmp_path, "model")

    def as_objects(layers):
        layers["fc1"]["activation"] = {
            "module": "builtins", "class_name": "function", "config": "relu",
            "registered_name": "function",
        }  # fmt: skip
        layers["fc2"]["activation"] = {
            "module": "keras.layers", "class_name": "ReLU", "registered_name": None,
            "config": {"name": "re_lu", "max_value": None, "negative_slope": 0.0,
                       "threshold": 0.0},
        }  # fmt: skip

    _edit_config(file, as_objects)
    x = images()
    net = to_net(convert(file, parse(SMALL_SPEC))).eval()
    np.testing.assert_allclose(ours(net, x), model.predict(x, verbose=0), rtol=0, atol=1e-4)


def test_keras_channels_first_flatten_or_pool_and_odd_settings_are_one_line(cli, tmp_path):
    """Flatten(data_format='channels_first') after channels-last convs gives fc1 its rows
    in C×H×W order: converted as H×W×C, its posteriors were not Keras' (0.17 apart).
    A channels-first pooling, a soft-max over another axis and settings of odd types are
    refused too, each in one line."""
    from keras import layers

    def model(flatten="channels_last", pool="channels_last", softmax_axis=None):
        inputs = keras.Input(shape=(8, 8, 3))
        x = layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv1")(inputs)
        x = layers.MaxPooling2D(2, name="block1_pool", data_format=pool)(x)
        x = layers.Flatten(name="flatten", data_format=flatten)(x)
        if softmax_axis is None:
            x = layers.Dense(5, activation="softmax", name="predictions")(x)
        else:
            x = layers.Dense(5, name="predictions")(x)
            x = layers.Softmax(axis=softmax_axis, name="prob")(x)
        return keras.Model(inputs, x)

    spec = tmp_path / "small.vgg"
    spec.write_text("input 8x8 RGB\nconv3-4 maxpool FC-5 soft-max\n")
    for built, said in (
        (model(flatten="channels_first"), "layer flatten (Flatten) is a channels-first "
         "Flatten in a channels-last net"),
        (model(pool="channels_first"), "layer block1_pool (MaxPooling2D) is a channels-first "
         "MaxPooling2D in a channels-last net"),
        (model(softmax_axis=0), "layer prob (Softmax) is a soft-max over axis 0"),
    ):  # fmt: skip
        file = save(built, tmp_path, "model")
        for given in ([], ["--spec", spec]):
            out = tmp_path / "x.safetensors"
            code, _, err = cli("convert", file, *given, "-o", out)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"{file}: {said}" in err and not out.exists()
    file = save(model(), tmp_path, "model")
    _edit_config(file, lambda layers: layers["block1_conv1"].update(groups="two"))
    code, _, err = cli("convert", file, "-o", tmp_path / "x.safetensors")
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (
        f"{file}: layer block1_conv1: settings vggspec cannot read (ValueError: invalid "
        "literal for int() with base 10: 'two')"
    )


def test_odd_hdf5_files_are_one_line(cli, tmp_path):
    """A model config of another shape was an AttributeError's traceback; a file without a
    layer that has weights was "its first layer takes 0 channels"."""
    import json

    def write(name, attrs):
        with h5py.File(tmp_path / name, "w") as f:
            f.attrs.update(attrs)
        return tmp_path / name

    for file, said in (
        (write("list.h5", {"layer_names": [], "model_config": json.dumps({"config": [1]})}),
         "not readable Keras weights ('int' object has no attribute 'get')"),
        (write("array.h5", {"layer_names": [], "model_config": json.dumps([1])}),
         "not readable Keras weights ('list' object has no attribute 'get')"),
        (write("empty.h5", {"layer_names": []}),
         "a Keras HDF5 file without a layer that has weights"),
        (write("plain.h5", {"x": 1}), "an HDF5 file, but not Keras weights (no layer_names)"),
    ):  # fmt: skip
        for args in (["-o", tmp_path / "x.safetensors"], ["--emit", "spec"]):
            code, out, err = cli("convert", file, *args)
            assert (code, out, err) == (2, "", f"{file}: {said}\n")
    assert not (tmp_path / "x.safetensors").exists()


def test_hdf5_errors_of_a_damaged_file_are_one_line(cli, tmp_path, monkeypatch):
    """h5py answers some damage with RuntimeError (14 of 600 random changes of 1–4 bytes to
    a legacy file: "Object visitation failed (bad heap free list)", "bad symbol table node
    signature"): one line, like its OSErrors."""
    file = _h5py_legacy(vgg_like(), tmp_path / "vgg.h5", ":0")
    with h5py.File(file, "r+") as f:  # no weight_names: the groups are visited
        for name in f.attrs["layer_names"]:
            f[name].attrs.pop("weight_names", None)

    def damaged(self, visit):
        raise RuntimeError("Object visitation failed (bad heap free list)")

    monkeypatch.setattr(h5py.Group, "visititems", damaged)
    code, _, err = cli("convert", file, "-o", tmp_path / "x.safetensors")
    assert (code, err) == (
        2, f"{file}: not readable Keras weights (Object visitation failed (bad heap free list))\n"
    )  # fmt: skip


def test_a_same_pooling_is_caffes_rounding_up_only_where_it_pads_nothing_before():
    """Keras' 'same' pooling pads to ceil(size / stride) with half of the padding before the
    map: 2×2/2 is Caffe's (and torch's ceil_mode) rounding up, 3×3/2 is not (at 5×5 it
    gives 3×3 windows centred one pixel earlier): it is refused, not read as rounding up."""
    from keras import layers
    from vggspec.runtime.io.keras import layer_steps

    x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    for size, stride, same_as_caffe in ((2, 2, True), (3, 2, False), (3, 3, False)):
        theirs = np.asarray(layers.MaxPooling2D(size, stride, padding="same")(x))
        ceil = torch.nn.functional.max_pool2d(
            torch.from_numpy(x).permute(0, 3, 1, 2), size, stride, ceil_mode=True
        ).permute(0, 2, 3, 1)
        agrees = theirs.shape == ceil.shape and np.array_equal(theirs, ceil.numpy())
        assert agrees == same_as_caffe
        config = {"class_name": "MaxPooling2D", "pool_size": [size, size],
                  "strides": [stride, stride], "padding": "same"}  # fmt: skip
        (step,) = layer_steps("pool1", config, None)
        if same_as_caffe:
            assert (step.kind, step.kernel, step.stride, step.ceil) == (
                "pool",
                (2, 2),
                (2, 2),
                True,
            )
        else:
            assert step.kind == "unknown"
            assert step.why == "a 'same' pooling whose padding falls unlike Caffe's rounding up"
