"""The Triton backend plugged into lower(): whole nets train like the torch backend.

Under the interpreter (no GPU here) these are slow; config A is in the slow tier
(`make test-slow`), the demo specs in the default one.
"""

import json

import pytest
import torch
from helpers import ROOT, SPECS
from vggspec.compiler import compile_spec, load_spec
from vggspec.compiler.lowering.net import init_weights, lower
from vggspec.compiler.targets import GPUS, LAUNCH_GAP_S


def train_three_steps(backend: str, spec_path, size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    graph = compile_spec(load_spec(spec_path), (size, size))
    net = init_weights(lower(graph, backend, dropout=0.0), "glorot")
    optimizer = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
    data = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = 50 * torch.randn(2, 3, size, size, generator=data)
        y = torch.randint(0, net.num_classes, (2,), generator=data)
        loss = net.loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def worst_relative_difference(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in a)


def biases_before_batch_norm(state: dict) -> set[str]:
    """convX_Y.bias / fcN.bias of the layers a BN follows (bnX_Y / bnN): BN takes the mean
    out, so they get no gradient and stay at their initial zero up to rounding."""
    layers = {k.split(".")[0][2:] for k in state if k.startswith("bn")}
    return {f"{kind}{n}.bias" for n in layers for kind in ("conv", "fc")} & state.keys()


# The demo net (batch norm after every conv: BN in training falls back to torch) and the
# 64x64 demo net of 2026-12-02 (no BN: the fused conv + bias + ReLU path A-E take).
@pytest.mark.parametrize(
    "spec, size, has_bn",
    [
        (SPECS / "demo.vgg", 32, True),
        (ROOT / "bench" / "parity-demo.vgg", 32, False),
        pytest.param(SPECS / "A.vgg", 32, False, marks=pytest.mark.slow),
    ],
    ids=["demo", "parity-demo", "A"],
)
def test_three_sgd_steps_match_the_torch_backend(spec, size, has_bn):
    reference = train_three_steps("torch", spec, size)
    triton = train_three_steps("triton", spec, size)
    assert reference.keys() == triton.keys()
    before_bn = biases_before_batch_norm(reference)
    assert len(before_bn) == sum(k.endswith(".running_mean") for k in reference)
    assert bool(before_bn) == has_bn
    assert max(((triton[k] - reference[k]).abs().max().item() for k in before_bn), default=0) < 1e-7
    rest = {k: v for k, v in reference.items() if k not in before_bn}
    assert worst_relative_difference({k: triton[k] for k in rest}, rest) < 1e-4


def test_dense_twin_on_the_triton_backend():
    import vggspec

    torch.manual_seed(0)
    graph = compile_spec(load_spec(SPECS / "demo.vgg"), (32, 32))
    net = init_weights(lower(graph, "triton"), "glorot").eval()
    dense = vggspec.densify(net)
    x = 50 * torch.randn(1, 3, 48, 64)
    reference = vggspec.densify(lower(graph, "torch"))
    reference.load_state_dict(dense.state_dict())
    with torch.no_grad():
        got, expected = dense(x), reference.eval()(x)
        assert got.shape == expected.shape == (1, 10, 2, 3)
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-5
        posteriors = dense.predict(x)
    assert torch.allclose(posteriors.sum(dim=1), torch.ones(1))


def test_compile_target_report(cli):
    code, out, err = cli(
        "compile",
        SPECS / "A-LRN.vgg",
        "--input",
        "32x32",
        "--batch",
        "8",
        "--target",
        "sm_80",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["torch_fallbacks"] == ["norm1 (lrn size 5)"]
    assert report["auto_measures"][:2] == [
        "conv 8x3x32x32 -> 64 k3x3 p1x1 relu",
        "max_pool 8x64x32x32",
    ]
    convs = [r for r in report["kernels"] if r["kernel"].startswith("conv")]
    assert {r["layer"] for r in convs} >= {"conv1_1", "conv5_2"}
    assert all(r["spill_stores"] + r["spill_loads"] == 0 for r in report["kernels"])
    assert all(r["shared_ok"] for r in report["kernels"])
    assert all(r["tensor_cores"] == "mma" for r in convs if r["uses_dot"])
    # At least its GEMM work (three GEMMs of 2 x MACs per weight layer, but conv1_1's
    # dgrad) at the A100's fastest peak.
    graph = compile_spec(load_spec(SPECS / "A-LRN.vgg"), (32, 32))
    conv1_1 = graph.nodes["conv1_1"]["meta"].macs
    gemm_flops = 8 * 2 * (3 * graph.graph["totals"].macs - conv1_1)
    assert sum(r["flops"] for r in report["kernels"] if r["uses_dot"]) >= gemm_flops
    assert report["roofline_step_seconds"] >= gemm_flops / GPUS["sm_80"].bf16_flops
    # The estimate adds wave quantisation and a launch gap per kernel to the same roofs.
    gaps = len(report["kernels"]) * LAUNCH_GAP_S
    assert report["estimated_step_seconds"] >= report["roofline_step_seconds"] + gaps * 0.999
