"""LRN with its parameters: the notation, AlexNet's formula, and ONNX's LRN node."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vggspec.compiler import Lrn, SpecError, compile_spec, format_spec, parse
from vggspec.compiler.ir.graph import nodes, op
from vggspec.compiler.lowering.net import lower


def test_paper_lrn_prints_as_before_and_others_name_what_differs():
    assert format_spec(parse("conv3-4 LRN maxpool")).splitlines()[1] == "conv3-4 LRN maxpool"
    assert format_spec(parse("conv3-4 lrn(k=2,SIZE=5) maxpool")).splitlines()[1] == (
        "conv3-4 LRN maxpool"
    )
    spec = parse("conv3-4 LRN(k = 1, alpha=2e-5) maxpool")
    assert spec.layers[1] == Lrn(alpha=2e-5, k=1)
    assert repr(spec.layers[1]) == "Lrn(alpha=2e-05, k=1.0)" and repr(Lrn()) == "Lrn()"
    assert format_spec(spec).splitlines()[1] == "conv3-4 LRN(alpha=2e-05,k=1) maxpool"
    norm = next(op(g, n) for g in [compile_spec(spec)] for n in nodes(g) if n == "norm1")
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 2e-5, 0.75, 1.0)
    assert norm.describe() == "lrn size 5 alpha 2e-05 beta 0.75 k 1"


@pytest.mark.parametrize(
    "word, said",
    [
        ("LRN(size=4)", "LRN size must be odd (a window centred on its channel), got 4"),
        ("LRN(k=0)", "LRN k must be > 0, got 0.0"),
        ("LRN(n=3)", "'n=3' is not a parameter: write name=value with name one of size, "
         "alpha, beta, k"),
        ("LRN(k=1,k=2)", "k is given twice"),
        ("LRN()", "LRN() has no parameters: write LRN, or LRN(k=1)"),
        ("LRN(alpha=-1)", "LRN alpha must be ≥ 0, got -1.0"),
        ("LRN(beta=x)", "beta='x' is not a number"),
    ],
)  # fmt: skip
def test_bad_lrn_parameters_are_located_errors(word, said):
    with pytest.raises(SpecError) as error:
        parse(f"conv3-4 {word} maxpool")
    text = str(error.value)
    assert f"1:9: error: {word}: {said}" in text and "^" * len(word) in text


def alexnet_lrn(a: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Krizhevsky et al. (2012), Sect. 3.3: b_c = a_c / (k + alpha Σ_{j=c−n/2}^{c+n/2} a_j²)^beta
    over the channels that exist (float64)."""
    out = np.empty_like(a)
    channels = a.shape[1]
    for c in range(channels):
        low, high = max(0, c - size // 2), min(channels - 1, c + size // 2)
        out[:, c] = a[:, c] / (k + alpha * (a[:, low : high + 1] ** 2).sum(axis=1)) ** beta
    return out


@pytest.mark.parametrize(
    "word, params", [("LRN", (5, 1e-4, 0.75, 2.0)), ("LRN(size=3,alpha=0.01,beta=0.6,k=1.5)",
                                                      (3, 0.01, 0.6, 1.5))]
)  # fmt: skip
def test_the_op_computes_alexnets_formula(word, params):
    net = lower(compile_spec(parse(f"input 6x6 RGB\nconv1-7 {word}\n")), "torch").eval()
    x = torch.randn(2, 7, 6, 6, dtype=torch.float64) * 30
    with torch.no_grad():
        got = net.backend.lrn(x, *params)
    np.testing.assert_allclose(got.numpy(), alexnet_lrn(x.numpy(), *params), rtol=1e-12)


def test_onnx_export_writes_one_lrn_node_with_onnxs_alpha(tmp_path):
    """ONNX's LRN divides alpha by the window, as Caffe does: alpha 2e-05 is 1e-4 there."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from vggspec.runtime.io.onnx_export import export_onnx

    spec = parse("input 12x12 RGB\nconv3-6 LRN(alpha=2e-05,k=1) maxpool FC-4 soft-max\n")
    torch.manual_seed(0)
    net = lower(compile_spec(spec), "torch").eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, 0, 0.2)
    backend = net.backend
    export_onnx(net, tmp_path / "lrn.onnx")
    assert net.backend is backend  # the caller's net is left as it was
    graph = onnx.load(tmp_path / "lrn.onnx").graph
    lrn = [n for n in graph.node if n.op_type == "LRN"]
    assert len(lrn) == 1 and "Pow" not in {n.op_type for n in graph.node}
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in lrn[0].attribute}
    assert attributes["size"] == 5
    np.testing.assert_allclose(
        [attributes["alpha"], attributes["beta"], attributes["bias"]], [1e-4, 0.75, 1.0], rtol=1e-6
    )
    x = torch.randn(3, 3, 12, 12) * 100
    session = onnxruntime.InferenceSession(str(tmp_path / "lrn.onnx"))
    got = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-4)
