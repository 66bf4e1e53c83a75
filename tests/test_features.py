"""Very deep features (Appendix B): the penultimate map, dense descriptors, linear classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import SPEC_32, save_net, write_images
from vggspec.runtime.data.image_folder import scan_image_folder
from vggspec.runtime.eval.classify.evaluate import single_process
from vggspec.runtime.eval.features.extract import (
    dense_descriptor,
    extract_features,
    penultimate_net,
)
from vggspec.runtime.eval.features.linear_probe import fit_and_score
from vggspec.runtime.eval.models import load_checkpoint_model

import vggspec

pytestmark = pytest.mark.usefixtures("one_thread")


def twin_of(spec_text: str, seed: int = 0):
    torch.manual_seed(seed)
    net = vggspec.build_net(vggspec.parse_spec(spec_text), backend="torch", init="glorot")
    return vggspec.densify(net.eval())


def test_penultimate_map_is_what_the_last_layer_reads():
    twin = twin_of(SPEC_32)
    head = penultimate_net(twin)
    assert head.fc4.weight is twin.fc4.weight  # shared, not copied (fc3 fc4 fc5 here)
    x = torch.randn(2, 3, 48, 40) * 50
    with torch.inference_mode():
        features = head(x)
        scores = twin(x)
        last = F.conv2d(features, twin.fc5.weight, twin.fc5.bias)
    assert features.shape == (2, 32, 5, 3)  # 48×40 → 12×10 after two pools → 8×8 fc3 → 5×3
    assert (features >= 0).all()  # after the ReLU
    torch.testing.assert_close(last, scores, rtol=1e-5, atol=1e-5)


def test_unfused_and_single_fc_specs():
    twin = twin_of("input 16x16 RGB\nconv3-4 maxpool conv3-6 FC-5 soft-max\n")
    head = penultimate_net(twin)
    with torch.inference_mode():
        out = head(torch.randn(1, 3, 20, 16))
    assert out.shape == (1, 6, 10, 8)  # the last conv (+ReLU), before the FC
    with pytest.raises(vggspec.VggspecError, match="two weight layers"):
        penultimate_net(twin_of("input 8x8 RGB\nFC-5 soft-max\n"))


def test_descriptor_is_mirror_invariant_with_flip():
    head = penultimate_net(twin_of(SPEC_32))
    x = torch.randn(2, 3, 40, 56) * 50
    a = dense_descriptor(head, x, flip=True)
    b = dense_descriptor(head, x.flip(-1), flip=True)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    one, mirrored = dense_descriptor(head, x, False), dense_descriptor(head, x.flip(-1), False)
    torch.testing.assert_close(a, (one + mirrored) / 2, rtol=1e-6, atol=1e-9)  # the mean
    assert not torch.allclose(
        dense_descriptor(head, x, False), dense_descriptor(head, x.flip(-1), False)
    )


def test_stacked_and_pooled_features(tmp_path):
    path = save_net(tmp_path / "m.safetensors", SPEC_32, 3)
    data = write_images(tmp_path / "d", {"a": [(40, 40), (60, 40)], "b": [(40, 52)]})
    model = load_checkpoint_model(path, "torch")
    folder = scan_image_folder(data, "val", classes=model.class_names)
    stacked = extract_features([model], folder, single_process(), aggregate="stack")
    pooled = extract_features([model], folder, single_process(), aggregate="pool")
    assert stacked.descriptors.shape == (3, 96) and pooled.descriptors.shape == (3, 32)
    for f in (stacked, pooled):
        np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1, rtol=1e-5)
    # Pooling is the mean of the per-scale parts, normalised. The stacked descriptor holds
    # those parts, all scaled by one factor per image, which normalising removes.
    mean = stacked.descriptors.reshape(3, 3, 32).mean(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled.descriptors, mean, rtol=1e-5, atol=1e-7)
    assert stacked.labels.tolist() == [0, 0, 1]


@pytest.mark.parametrize("kind", ["ridge", "logistic", "svm"])
def test_linear_classifiers_separate_separable_data(kind):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 20)) * 3
    labels = np.repeat(np.arange(4), 30)
    x = centres[labels] + rng.normal(size=(120, 20))
    train, test = np.arange(120) % 2 == 0, np.arange(120) % 2 == 1
    result = fit_and_score(kind, x[train], labels[train], x[test], labels[test], 4, reg=1e-2)
    assert result["train_accuracy"] == 1.0
    assert result["test_accuracy"] >= 0.95 and result["mean_class_recall"] >= 0.95


def test_ridge_in_the_dual_matches_the_primal():
    from vggspec.runtime.eval.features.linear_probe import _ridge, _with_bias

    rng = np.random.default_rng(1)
    y = torch.from_numpy(rng.integers(0, 3, 10))
    wide = _with_bias(rng.normal(size=(10, 30)))
    w_dual = _ridge(wide, y, 3, 0.5)
    d = wide.shape[1]
    w_primal = torch.linalg.solve(
        wide.T @ wide + 0.5 * torch.eye(d, dtype=wide.dtype),
        wide.T @ (2 * F.one_hot(y, 3).double() - 1),
    )
    torch.testing.assert_close(w_dual, w_primal)


def test_named_activations_from_one_pass_that_stops_early(monkeypatch):
    from vggspec.compiler import parse
    from vggspec.compiler.ir.ops.fc import FullyConnected
    from vggspec.compiler.lowering.net import build

    torch.manual_seed(0)
    text = "input 16x16 RGB\nconv3-4 BN conv3-4 BN maxpool\nconv3-8 maxpool\nFC-6 FC-3 soft-max"
    net = build(parse(text), backend="torch").eval()
    x = torch.randn(2, 3, 16, 16)
    ran = []
    forward = FullyConnected.forward
    monkeypatch.setattr(
        FullyConnected,
        "forward",
        lambda self, y, run: ran.append(run.node) or forward(self, y, run),
    )
    got = vggspec.features(net, x, ["relu1_2", "conv1_1", "pool2"])
    assert list(got) == ["relu1_2", "conv1_1", "pool2"] and ran == []  # stopped at pool2
    conv1_1 = F.conv2d(x, net.conv1_1.weight, net.conv1_1.bias, padding=1)
    torch.testing.assert_close(got["conv1_1"], conv1_1)  # before its BN and ReLU
    assert got["relu1_2"].shape == (2, 4, 16, 16) and got["relu1_2"].min() >= 0
    assert got["pool2"].shape == (2, 8, 4, 4)
    logits = vggspec.features(net, x, ["fc4"])["fc4"]
    torch.testing.assert_close(logits, net(x))
    folded = vggspec.fold_batch_norm(net)  # a folded net: bn1_1 is its conv's output
    again = vggspec.features(folded, x, ["bn1_1", "relu1_2", "pool2"])
    torch.testing.assert_close(again["pool2"], got["pool2"], atol=1e-5, rtol=1e-5)
    with pytest.raises(vggspec.VggspecError) as err:
        vggspec.features(net, x, ["relu1_2", "relu5_3"])
    assert "no layer named 'relu5_3'; the layers are: conv1_1, bn1_1, relu1_1," in str(err.value)
    # A folded net has no conv1_1 output, which `compile --no-fuse` lists: it says why.
    with pytest.raises(vggspec.VggspecError) as err:
        vggspec.features(folded, x, ["conv1_1"])
    assert str(err.value).startswith("conv1_1 is folded into bn1_1 in this net")
