"""`vggspec export`: onnxruntime's output equals vggspec's, classifier and dense twin."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import SPECS
from vggspec.compiler.lowering.net import densify
from vggspec.runtime.data.preprocessing import Preprocessing
from vggspec.runtime.io.model_info import ModelInfo, read_model_info

import vggspec

# Two pools at 16×16: the first FC sees 4×4, so its dense twin is a 4×4 conv. Small, as
# the exporter's time grows with the layers.
SPEC = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 maxpool\nFC-16 FC-16 FC-10 soft-max\n"
INFO = ModelInfo(Preprocessing.trained((120.0, 115.0, 100.0)), tuple("abcdefghij"))


def saved_net(folder, spec_text, seed=0):
    spec = folder / "net.vgg"
    spec.write_text(spec_text)
    torch.manual_seed(seed)
    net = vggspec.build_net(spec, backend="torch", init="glorot").eval()
    # save refuses class names that do not match the net's classes (D has 1000).
    names = tuple(f"c{i}" for i in range(net.num_classes))
    info = INFO if net.num_classes == len(INFO.class_names) else replace(INFO, class_names=names)
    vggspec.save(net, folder / "model.safetensors", info=info)
    return net


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})[0]


def test_classifier_and_dense_twin_match_onnxruntime(cli, tmp_path):
    net = saved_net(tmp_path, SPEC)
    classifier, dense = tmp_path / "net.onnx", tmp_path / "dense.onnx"
    code, out, err = cli("export", tmp_path, "-o", classifier)  # a run folder
    assert code == 0, err
    assert "classifier: class scores, input 16x16" in out
    x = torch.randn(3, 3, 16, 16) * 50
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(classifier, x), net(x).numpy(), rtol=1e-4, atol=1e-4)

    code, out, err = cli("export", tmp_path / "model.safetensors", "-o", dense, "--dense")
    assert code == 0, err
    twin = densify(net).eval()
    for batch, height, width, score_map in ((2, 32, 48, (5, 9)), (1, 24, 16, (3, 1))):
        x = torch.randn(batch, 3, height, width) * 50
        got = run_onnx(dense, x)
        assert got.shape == (batch, 10, *score_map)
        with torch.no_grad():
            np.testing.assert_allclose(got, twin(x).numpy(), rtol=1e-4, atol=1e-4)
    x = torch.randn(2, 3, 16, 16) * 50
    with torch.no_grad():  # at the input size the twin is the classifier
        np.testing.assert_allclose(run_onnx(dense, x)[:, :, 0, 0], net(x).numpy(), atol=1e-4)

    meta = {p.key: p.value for p in onnx.load(str(dense), load_external_data=False).metadata_props}
    assert meta["vggspec.spec"] == net.spec_text()
    saved = ModelInfo.from_json(meta["vggspec.preprocess"], str(dense))
    assert saved == INFO.with_input_size((16, 16)) == read_model_info(tmp_path)


def test_export_mistakes_are_one_line(cli, tmp_path):
    saved_net(tmp_path, SPEC)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10" + bytes(40))
    for args, message in (
        ([tmp_path / "missing"], "no such checkpoint file or run folder"),
        ([tmp_path, "-o", tmp_path / "x.pth"], "give a .onnx file name"),
        ([tmp_path / "net.vgg"], "export a finished run's model.safetensors"),
        ([tmp_path / "bad.safetensors"], "not a readable safetensors file"),
    ):
        out = ["-o", tmp_path / "x.onnx"] if "-o" not in args else []
        code, _, err = cli("export", *args, *out)
        assert code == 2, err
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_d_classifier_at_224_and_dense_twin_at_paper_sizes(cli, tmp_path):
    """Configuration D: the classifier at 224, the dense twin at 384×512 and 256×352
    (score maps 6×10 and 2×5), onnxruntime within 1e-4 of vggspec."""
    net = saved_net(tmp_path, (SPECS / "D.vgg").read_text())
    assert cli("export", tmp_path, "-o", tmp_path / "d.onnx")[0] == 0
    assert cli("export", tmp_path, "-o", tmp_path / "d-dense.onnx", "--dense")[0] == 0
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        np.testing.assert_allclose(
            run_onnx(tmp_path / "d.onnx", x), net(x).numpy(), rtol=1e-4, atol=1e-4
        )
    twin = densify(net).eval()
    for height, width, score_map in ((384, 512, (6, 10)), (256, 352, (2, 5))):
        x = torch.randn(1, 3, height, width) * 50
        got = run_onnx(tmp_path / "d-dense.onnx", x)
        assert got.shape == (1, 1000, *score_map)
        with torch.no_grad():
            np.testing.assert_allclose(got, twin(x).numpy(), rtol=1e-4, atol=1e-4)
