"""Weights in and out: safetensors with the spec, torchvision's layout, init_from."""

import json
from pathlib import Path

import pytest
import torch
from helpers import SPECS
from reference_vgg import ReferenceVGG
from vggspec.runtime.eval.runs import training_data
from vggspec.runtime.io.weights import WeightsError

import vggspec

INFO = vggspec.ModelInfo(
    vggspec.Preprocessing.trained([120.5, 115.25, 100.0]),
    tuple("abcdefghij"),
    vggspec.TrainScale(72, 96),
)


@pytest.fixture
def demo_net():
    torch.manual_seed(0)
    return vggspec.build_net(SPECS / "demo.vgg", backend="torch", init="glorot")


def test_safetensors_round_trip_is_bit_exact_and_carries_the_spec(demo_net, tmp_path):
    path = vggspec.save(demo_net, tmp_path / "m.safetensors", INFO)
    loaded = vggspec.load(path, backend="torch")
    before, after = demo_net.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert loaded.spec == demo_net.spec
    assert loaded.spec_text() == (SPECS / "demo.vgg").read_text()
    info = vggspec.model_info(path)
    assert info.preprocessing.mean_rgb == (120.5, 115.25, 100.0)
    assert info.preprocessing.std_rgb == (1.0, 1.0, 1.0) and not info.preprocessing.bgr
    assert info.class_names == tuple("abcdefghij")
    assert info.train_scale == vggspec.TrainScale(72, 96)
    assert info.input_size == (32, 32)  # the net's, filled in by save
    assert info == vggspec.ModelInfo(*INFO.__dict__.values()).with_input_size((32, 32))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(demo_net.eval()(x), loaded.eval()(x))


def test_save_leaves_no_temporary_files(demo_net, tmp_path):
    vggspec.save(demo_net, tmp_path / "m.safetensors")
    vggspec.save(demo_net, tmp_path / "m.safetensors")  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_truncated_and_corrupt_files_are_clear_errors(demo_net, tmp_path):
    path = vggspec.save(demo_net, tmp_path / "m.safetensors")
    data = path.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "header.safetensors": data[:8] + b"{not json" + data[17:],
        "empty.safetensors": b"",
        "text.safetensors": b"hello world, not weights",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(WeightsError) as info:
            vggspec.load(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(WeightsError, match="no such weights file"):
        vggspec.load(tmp_path / "missing.safetensors")


def test_a_net_file_with_a_changed_byte_is_refused_by_every_reader(demo_net, tmp_path, cli):
    """safetensors keeps no checksum: a model.safetensors with bytes changed on disk loaded,
    and `run eval` scored a net nobody trained. Each file vggspec writes carries the CRC-32
    of its tensors' bytes, checked by vggspec.load and by run eval."""
    path = vggspec.save(demo_net, tmp_path / "m.safetensors", INFO)
    vggspec.load(path)  # intact: loads
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"bad\.safetensors: damaged: .*CRC-32"):
        vggspec.load(bad)
    from vggspec.runtime.data.demo import make_demo_dataset

    make_demo_dataset(tmp_path / "data", seed=0, train_per_class=1, val_per_class=1)
    code, _, err = cli("run", "eval", "--checkpoint", bad, "--data", tmp_path / "data")
    assert code == 2 and "damaged" in err and err.count("\n") == 1, err


def test_a_file_whose_spec_does_not_match_its_weights(demo_net, tmp_path):
    from safetensors.torch import load_file, save_file

    path = vggspec.save(demo_net, tmp_path / "m.safetensors")
    tensors = load_file(path)
    tensors["fc6.weight"] = tensors["fc6.weight"][:, :-1].contiguous()
    metadata = {"format": "vggspec-net/1", "spec": demo_net.spec_text(), "preprocess": "{}"}
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(
        WeightsError, match=r"fc6.weight has shape \(256, 255\), the spec needs \(256, 256\)"
    ):
        vggspec.load(tmp_path / "bad.safetensors")
    other = {"format": "vggspec-net/1", "spec": "input 64x64 RGB\nconv3-8 FC-10"}
    save_file(load_file(path), tmp_path / "other.safetensors", metadata=other)
    with pytest.raises(WeightsError, match="do not match the spec: missing"):
        vggspec.load(tmp_path / "other.safetensors")
    save_file(load_file(path), tmp_path / "plain.safetensors")
    with pytest.raises(WeightsError, match="not a vggspec net"):
        vggspec.load(tmp_path / "plain.safetensors")
    broken = {"format": "vggspec-net/1", "spec": "conv3-8 conv4-8"}
    save_file(load_file(path), tmp_path / "broken.safetensors", metadata=broken)
    with pytest.raises(WeightsError, match="must be odd"):
        vggspec.load(tmp_path / "broken.safetensors")


@pytest.mark.parametrize("config", ["A", "B", "D", "E"])
def test_torchvision_round_trip(config):
    torch.manual_seed(1)
    reference = ReferenceVGG(config).eval()
    net = vggspec.build_net(SPECS / f"{config}.vgg", backend="torch").eval()
    vggspec.load_torchvision(net, reference.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(net(x), reference(x), rtol=1e-5, atol=1e-6)
    exported = vggspec.to_torchvision(net)
    theirs = reference.state_dict()
    assert exported.keys() == theirs.keys()
    assert all(torch.equal(exported[k], theirs[k]) for k in theirs)


def test_torchvision_vgg16_bn_gives_the_same_logits_in_eval():
    torch.manual_seed(3)
    reference = ReferenceVGG("D", batch_norm=True)
    with torch.no_grad():  # random statistics, so that loading them matters
        for module in reference.features:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    reference.eval()
    theirs = reference.state_dict()
    assert "features.1.running_mean" in theirs and "features.3.weight" in theirs
    net = vggspec.build_net(SPECS / "D-BN.vgg", backend="torch").eval()
    vggspec.load_torchvision(net, theirs)
    assert int(net.bn1_1.num_batches_tracked) == 7
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            vggspec.fold_batch_norm(net)(x), reference(x), rtol=1e-5, atol=1e-5
        )
    exported = vggspec.to_torchvision(net)
    assert exported.keys() == theirs.keys()
    assert all(torch.equal(exported[k], theirs[k]) for k in theirs)
    with pytest.raises(WeightsError, match="a batch-norm net"):
        vggspec.load_torchvision(vggspec.build_net(SPECS / "D.vgg", backend="torch"), theirs)


def test_torchvision_file_and_wrong_layouts(tmp_path):
    reference = ReferenceVGG("A")
    path = tmp_path / "vgg11.pth"
    torch.save(reference.state_dict(), path)
    net = vggspec.build_net(SPECS / "A.vgg", backend="torch")
    vggspec.load_torchvision(net, path)
    assert torch.equal(net.conv1_1.weight, reference.features[0].weight)
    with pytest.raises(WeightsError, match="unexpected keys"):
        vggspec.load_torchvision(
            vggspec.build_net(SPECS / "B.vgg", backend="torch"), reference.state_dict()
        )
    with pytest.raises(WeightsError, match="LRN"):
        vggspec.to_torchvision(vggspec.build_net(SPECS / "A-LRN.vgg", backend="torch"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    torch.save({"features.0.weight": torch.zeros(1), "code": print}, tmp_path / "code.pth")
    for name in ("junk.pth", "code.pth"):
        with pytest.raises(WeightsError, match="cannot read") as info:
            vggspec.load_torchvision(net, tmp_path / name)
        assert "\n" not in str(info.value)  # one line, not torch's page of advice


def test_init_from_a_bn_net_takes_each_layer_with_its_bn():
    torch.manual_seed(0)
    a = "input 32x32 RGB\nconv3-4 BN maxpool conv3-8 BN maxpool FC-16 BN FC-16 BN FC-5 soft-max"
    d = "input 32x32 RGB\nconv3-4 BN conv3-4 BN maxpool conv3-8 BN maxpool "
    d += "FC-16 BN FC-16 BN FC-5 soft-max"
    source = vggspec.build_net(vggspec.parse_spec(a), backend="torch")
    target = vggspec.build_net(vggspec.parse_spec(d), backend="torch")
    with torch.no_grad():
        source.bn1_1.running_var.fill_(3.0)
    copied = vggspec.init_from(target, source, convs=1, fcs=2)
    assert copied == ["conv1_1", "bn1_1", "fc4", "bn4", "fc5"]
    assert torch.equal(target.bn1_1.running_var, source.bn1_1.running_var)
    assert torch.equal(target.fc4.weight, source.fc4.weight)


def test_init_from_net_a():
    torch.manual_seed(0)
    source = vggspec.build_net(SPECS / "A.vgg", backend="torch")
    target = vggspec.build_net(SPECS / "D.vgg", backend="torch")
    untouched = target.conv1_2.weight.clone()
    copied = vggspec.init_from(target, source)
    assert copied == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    for name in copied:
        assert torch.equal(getattr(target, name).weight, getattr(source, name).weight)
    assert torch.equal(target.conv1_2.weight, untouched)
    ten = vggspec.build_net(SPECS / "D.vgg", backend="torch", num_classes=10)
    with pytest.raises(WeightsError, match=r"fc8 is \(1000, 4096\) in the source"):
        vggspec.init_from(ten, source)


def test_metadata_is_json(demo_net, tmp_path):
    from vggspec.runtime.io.weights import read_metadata

    info = vggspec.ModelInfo(class_names=("x",) * 10)
    path = vggspec.save(demo_net, tmp_path / "m.safetensors", info)
    metadata = read_metadata(path)
    assert json.loads(metadata["preprocess"]) == {"class_names": ["x"] * 10, "input_size": [32, 32]}
    assert vggspec.model_info(path).preprocessing is None  # no mean: convention unknown
    assert metadata["spec"].startswith("# A small VGG-style net")


def test_files_written_before_model_info_still_load(demo_net, tmp_path):
    """The `preprocess` JSON as the code before ModelInfo wrote it (its key order, a fixed
    S as an int, std only with normalise=mean-std)."""
    from safetensors.torch import save_file

    old = {
        "mean_rgb": [126.5, 125.25, 124.0],
        "class_names": list("abcdefghij"),
        "input_size": [32, 32],
        "train_scale": 80,
        "pixel_range": 255,
        "std_rgb": [73.5, 74.0, 74.25],
    }
    metadata = {
        "format": "vggspec-net/1",
        "spec": demo_net.spec_text(),
        "name": "demo",
        "preprocess": json.dumps(old),
    }
    save_file(demo_net.state_dict(), str(tmp_path / "old.safetensors"), metadata=metadata)
    loaded = vggspec.load(tmp_path / "old.safetensors", backend="torch")
    assert all(torch.equal(v, demo_net.state_dict()[k]) for k, v in loaded.state_dict().items())
    info = vggspec.model_info(tmp_path / "old.safetensors")
    assert info.preprocessing == vggspec.Preprocessing(
        "vggspec", (126.5, 125.25, 124.0), (73.5, 74.0, 74.25)
    )
    assert info.train_scale == vggspec.TrainScale(80, 80) and info.train_scale.single == 80
    assert info.class_names == tuple("abcdefghij") and info.input_size == (32, 32)
    # and the same information written again reads back equal
    vggspec.save(loaded, tmp_path / "new.safetensors", info)
    assert vggspec.model_info(tmp_path / "new.safetensors") == info


def test_model_info_that_is_not_json_is_one_error(demo_net, tmp_path):
    from safetensors.torch import save_file
    from vggspec.runtime.data.preprocessing import PreprocessingError

    metadata = {"format": "vggspec-net/1", "spec": demo_net.spec_text(), "preprocess": "{"}
    save_file(demo_net.state_dict(), str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(
        PreprocessingError, match=r"bad\.safetensors: its preprocessing metadata is not JSON"
    ):
        vggspec.model_info(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"mean_rgb": [1, 2, 3], "std_rgb": 5}, r"std_rgb 5 is not three positive numbers"),
        ({"mean_rgb": ["a", 2, 3]}, r"mean_rgb \['a', 2, 3\] is not three numbers"),
        ({"input_size": ["x", "y"]}, r"input_size \['x', 'y'\] is not \[height, width\]"),
        ([1, 2], r"its preprocess metadata is not a JSON object"),
    ],
)
def test_a_malformed_model_info_block_is_one_error(demo_net, tmp_path, cli, block, message):
    from safetensors.torch import save_file
    from vggspec.runtime.data.preprocessing import PreprocessingError

    metadata = {
        "format": "vggspec-net/1",
        "spec": demo_net.spec_text(),
        "preprocess": json.dumps(block),
    }
    bad = tmp_path / "bad.safetensors"
    save_file(demo_net.state_dict(), str(bad), metadata=metadata)
    with pytest.raises(PreprocessingError, match=r"bad\.safetensors: " + message):
        vggspec.model_info(bad)
    from eval_helpers import write_images

    data = write_images(tmp_path / "data", {"a": [(40, 40)], "b": [(40, 40)]})
    code, out, err = cli("run", "eval", "--checkpoint", bad, "--data", data, "--workers", "0")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "bad.safetensors" in err and "Traceback" not in err


@pytest.mark.parametrize("block", ["mean", [1, 2, 3], 7])
def test_a_checkpoint_whose_model_info_is_not_an_object_is_one_error(tmp_path, block):
    from vggspec.runtime.data.preprocessing import PreprocessingError
    from vggspec.runtime.io.checkpoint import FORMAT, save_checkpoint
    from vggspec.runtime.io.model_info import KEY

    path = tmp_path / "last.pt"
    save_checkpoint({"format": FORMAT, KEY: block}, path)
    with pytest.raises(PreprocessingError, match=r"last\.pt: its preprocess metadata is not"):
        vggspec.model_info(path)


def test_save_refuses_class_names_that_do_not_match_the_net(demo_net, tmp_path):
    info = vggspec.ModelInfo(class_names=("cat", "dog"))
    with pytest.raises(
        WeightsError, match=r"m\.safetensors: 2 class names for a net of 10 classes"
    ):
        vggspec.save(demo_net, tmp_path / "m.safetensors", info)
    assert not (tmp_path / "m.safetensors").exists()
    two = vggspec.build_net(SPECS / "demo.vgg", backend="torch", num_classes=2)
    vggspec.save(two, tmp_path / "m.safetensors", info)
    assert vggspec.model_info(tmp_path / "m.safetensors").class_names == ("cat", "dog")


def test_run_dir_owns_the_paths_of_a_run_folder(tmp_path, monkeypatch):
    run = vggspec.RunDir(tmp_path / "r")
    names = [run.config, run.log, run.metrics, run.last, run.best, run.model, run.summary]
    assert [str(p.relative_to(run.path)) for p in [*names, run.curves]] == [
        "config.yaml",
        "train.log",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "model.safetensors",
        "summary.json",
        "curves.png",
    ]
    assert vggspec.RunDir.containing(run.path) is None  # no config.yaml: not a run (yet)
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("data: /some/images\nseed: 3\n")
    run.last.write_bytes(b"x")
    for inside in (run.path, run.last, run.config):
        assert vggspec.RunDir.containing(inside) == run
    assert run.holds_run() and run.trained_model() == run.last
    run.model.write_bytes(b"x")
    assert run.trained_model() == run.model  # the finished net before the last checkpoint
    assert training_data(str(run.last)) == "/some/images"
    run.config.write_text("seed: 3\n")
    monkeypatch.setenv("VGGSPEC_DEMO_DATA", str(tmp_path / "demo"))
    assert training_data(str(run.path)) == str(tmp_path / "demo")
    monkeypatch.chdir(tmp_path)
    default = vggspec.RunDir.default("specs/E.vgg")
    assert default.path.parent == Path("runs")
    assert default.path.name.startswith("E-") and len(default.path.name) == len("E-20261201-215500")
