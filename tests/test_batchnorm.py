"""BN: the `_bn` nets' counts, names, misplaced BN, and training/eval against torch.nn."""

import json

import pytest
import torch
from helpers import SPECS
from torch import nn
from vggspec.compiler import SpecError, compile_spec, load_spec, parse
from vggspec.compiler.ir.graph import nodes
from vggspec.compiler.lowering.launches import graph_launches, torch_reasons
from vggspec.compiler.lowering.net import build, densify, fold_batch_norm

# torchvision's vgg11_bn … vgg19_bn parameter counts; MACs those of the plain nets.
BN_NETS = {
    "A": 132_868_840,
    "B": 133_053_736,
    "D": 138_365_992,
    "E": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(BN_NETS))
def test_bn_nets_match_torchvision_counts_and_keep_the_macs(cli, name):
    code, out, err = cli("compile", SPECS / f"{name}-BN.vgg", "--json")
    assert code == 0, err
    report = json.loads(out)
    plain = compile_spec(load_spec(SPECS / f"{name}.vgg")).graph["totals"]
    assert report["params"] == BN_NETS[name]
    assert report["macs"] == plain.macs
    bn_channels = (BN_NETS[name] - plain.params) // 2  # weight and bias per channel
    # running_mean and running_var per channel, one counter per BN layer.
    layers = [layer for layer in report["layers"] if layer["name"].startswith("bn")]
    assert report["buffers"] == 2 * bn_channels + len(layers)
    assert report["buffer_bytes"] == 8 * bn_channels + 8 * len(layers)
    assert report["param_bytes"] == 4 * BN_NETS[name] + report["buffer_bytes"]
    assert report["elementwise"] == sum(
        layer["shape"][0] * layer["shape"][1] * layer["shape"][2] for layer in layers
    )


def test_nodes_are_named_as_caffe_does():
    spec = parse("input 32x32 RGB\nconv3-8 BN conv3-8 BN maxpool\nFC-16 BN FC-16 FC-4 soft-max")
    assert nodes(compile_spec(spec, fused=False)) == [
        "data",
        *("conv1_1", "bn1_1", "relu1_1", "conv1_2", "bn1_2", "relu1_2", "pool1"),
        *("fc2", "bn2", "relu2", "drop2", "fc3", "relu3", "drop3", "fc4", "prob"),
    ]
    fused = compile_spec(spec)
    assert nodes(fused) == [
        *("data", "conv1_1", "bn1_1", "conv1_2", "bn1_2", "pool1"),
        *("fc2", "bn2", "fc3", "fc4", "prob"),
    ]
    assert fused.nodes["bn2"]["op"].describe() == "bn+relu+dropout"
    assert fused.nodes["conv1_1"]["op"].describe() == "conv3x3-8 pad 1"  # ReLU after BN


@pytest.mark.parametrize(
    "text, column, message",
    [
        ("BN conv3-8", 1, "BN cannot start the net"),
        ("conv3-8 maxpool BN", 17, "not maxpool"),
        ("conv3-8 BN BN", 12, "not BN"),
        ("conv3-8 LRN BN", 13, "not LRN"),
        ("conv3-8 FC-4 soft-max BN", 23, "after soft-max"),
    ],
)
def test_misplaced_bn_is_a_located_error(text, column, message):
    with pytest.raises(SpecError) as err:
        parse("input 32x32 RGB\n" + text)
    assert (err.value.loc.line, err.value.loc.column) == (2, column)
    assert message in str(err.value)


def _reference(net) -> nn.Sequential:
    """The same net written with torch.nn, torchvision's order: conv, BN, ReLU."""
    ref = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 3),
    )
    ours = ["conv1_1", "bn1_1", None, None, None, "fc2", "bn2", None, "fc3"]
    with torch.no_grad():
        for module, name in zip(ref, ours, strict=True):
            if name is not None:
                module.load_state_dict(getattr(net, name).state_dict())
    return ref


SMALL = "input 8x8 RGB\nconv3-4 BN maxpool\nFC-6 BN FC-3 soft-max"


def _small_net(backend: str):
    torch.manual_seed(0)
    net = build(parse(SMALL), backend=backend, dropout=0.0)
    with torch.no_grad():
        for name in ("bn1_1", "bn2"):
            bn = getattr(net, name)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net


def test_training_uses_batch_statistics_and_eval_the_running_ones():
    net = _small_net("torch")
    assert [n for n, _ in net.named_buffers()] == [
        f"{bn}.{b}"
        for bn in ("bn1_1", "bn2")
        for b in ("running_mean", "running_var", "num_batches_tracked")
    ]
    assert all(not n.startswith("bn") or "running" not in n for n, _ in net.named_parameters())
    ref = _reference(net)
    x = torch.randn(5, 3, 8, 8)
    for _ in range(3):
        net.train(), ref.train()
        torch.testing.assert_close(net(x), ref(x), atol=1e-5, rtol=1e-5)
        x = x * 1.5 + 0.3
    torch.testing.assert_close(
        dict(net.named_buffers())["bn2.running_var"], ref[6].running_var, atol=1e-6, rtol=1e-6
    )
    assert int(net.bn1_1.num_batches_tracked) == int(ref[1].num_batches_tracked) == 3
    net.eval(), ref.eval()
    torch.testing.assert_close(net(x), ref(x), atol=1e-5, rtol=1e-5)


def test_triton_backend_matches_torch_on_a_bn_net_forward_and_backward():
    results = {}
    x = torch.randn(4, 3, 8, 8)
    for backend in ("torch", "triton"):
        net = _small_net(backend).train()
        out = net(x)
        out.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        net.eval()
        results[backend] = (out.detach(), net(x).detach(), grads, dict(net.named_buffers()))
    (t_train, t_eval, t_grads, t_buf), (k_train, k_eval, k_grads, k_buf) = results.values()
    torch.testing.assert_close(k_train, t_train, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(k_eval, t_eval, atol=1e-4, rtol=1e-4)
    for name in t_grads:
        torch.testing.assert_close(k_grads[name], t_grads[name], atol=1e-4, rtol=1e-4)
    for name in t_buf:
        torch.testing.assert_close(k_buf[name], t_buf[name], atol=1e-5, rtol=1e-5)


def test_triton_report_lists_bn_as_a_torch_fallback_and_says_why():
    graph = compile_spec(load_spec(SPECS / "A-BN.vgg"))
    _, fallbacks = graph_launches(graph, 2, training=True)
    assert fallbacks[:2] == ["bn1_1 (bn+relu)", "bn2_1 (bn+relu)"]
    assert len(fallbacks) == 8
    assert torch_reasons(graph, training=True) == [
        "BN in training: batch statistics have no Triton kernel yet"
    ]
    assert torch_reasons(compile_spec(load_spec(SPECS / "A.vgg")), training=True) == []


def _with_statistics(net):
    with torch.no_grad():
        for name, module in net.named_children():
            if name.startswith("bn"):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_folded_net_equals_the_unfolded_one_in_eval(backend):
    torch.manual_seed(1)
    text = "input 16x16 RGB\nconv3-4 BN conv3-4 BN maxpool\nFC-6 BN FC-5 BN FC-3 soft-max"
    net = _with_statistics(build(parse(text), backend=backend, init="glorot"))
    folded = fold_batch_norm(net)
    assert not any(name.startswith("bn") for name, _ in folded.named_children())
    assert [n for n, _ in folded.layers()] == ["conv1_1", "conv1_2", "pool1", "fc2", "fc3", "fc4"]
    assert not folded.training and fold_batch_norm(folded) is folded
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    big = torch.randn(1, 3, 32, 32)  # the dense twins: of the net, and of its folded copy
    twin = densify(net).eval()
    torch.testing.assert_close(densify(folded)(big), twin(big), atol=1e-5, rtol=1e-5)
    assert twin(big).shape == (1, 3, 9, 9)


def test_folding_a_net_without_bn_gives_it_back():
    net = build(parse("input 8x8 RGB conv3-4 maxpool FC-3 soft-max"), backend="torch")
    assert fold_batch_norm(net) is net


def test_saved_bn_net_keeps_its_statistics_and_evaluates_folded(tmp_path):
    from vggspec.runtime.eval.models import load_checkpoint_model

    import vggspec

    torch.manual_seed(2)
    text = "input 16x16 RGB\nconv3-4 BN maxpool\nFC-6 BN FC-3 soft-max"
    net = _with_statistics(build(parse(text), backend="torch"))
    info = vggspec.ModelInfo(vggspec.Preprocessing.trained([120.0, 110.0, 100.0]))
    vggspec.save(net, tmp_path / "bn.safetensors", info)
    again = vggspec.load(tmp_path / "bn.safetensors", backend="torch").eval()
    for name, tensor in net.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    assert "bn1_1.running_var" in again.state_dict()
    model = load_checkpoint_model(tmp_path / "bn.safetensors", backend="torch")
    for folded in (model.net, model.twin):
        assert not any(name.startswith("bn") for name, _ in folded.named_children())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.net(x), net(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.twin.predict(x), net.predict(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [(6, 3, 5, 4), (7, 3)])
def test_global_batch_norm_on_one_process_is_torchs(dims):
    # Summed "across" one process (the identity), the global statistics are the batch's:
    # output, gradients and running statistics as F.batch_norm gives them.
    from vggspec.compiler.ir.ops.batchnorm import global_batch_norm

    torch.manual_seed(4)
    x = (torch.randn(dims) * 3 + 1).requires_grad_()
    ours, theirs = nn.BatchNorm1d(3) if len(dims) == 2 else nn.BatchNorm2d(3), None
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    theirs = type(ours)(3)
    theirs.load_state_dict(ours.state_dict())
    y = global_batch_norm(x, ours, lambda t: t * 1, 0.1, 1e-5)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    x2 = x.detach().requires_grad_()
    y2 = theirs(x2)
    (gx2,) = torch.autograd.grad(y2.square().sum(), x2)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.running_var, theirs.running_var, atol=1e-6, rtol=1e-6)
