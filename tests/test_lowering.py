"""lower/build_net/densify: parameter counts, the dense twin, formats and autocast."""

import pytest
import torch
from helpers import SPECS
from hypothesis import example, given, settings
from hypothesis import strategies as st
from vggspec.compiler import compile_spec, load_spec, parse
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.lowering.net import GlobalBatch, lower

import vggspec


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b| / max|b|; 0 when both are all zeros (a tiny random net whose ReLUs all
    died, which hypothesis finds), inf when only b is."""
    diff, scale = (a.float() - b.float()).abs().max(), b.float().abs().max()
    if scale == 0:
        return 0.0 if diff == 0 else float("inf")
    return (diff / scale).item()


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.vgg")), ids=lambda p: p.stem)
def test_parameter_count_equals_the_compile_report(path):
    graph = compile_spec(load_spec(path))
    net = lower(graph, "torch")  # uninitialised: counting needs no init
    assert sum(p.numel() for p in net.parameters()) == graph.graph["totals"].params
    names = dict(net.named_parameters())
    assert "conv1_1.weight" in names and "conv1_1.bias" in names


def test_parameter_names_follow_the_graph():
    net = vggspec.build_net(SPECS / "D.vgg", backend="torch")
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == ["conv1_1.weight", "conv1_1.bias", "conv1_2.weight", "conv1_2.bias"]
    assert names[-6:] == [
        "fc6.weight",
        "fc6.bias",
        "fc7.weight",
        "fc7.bias",
        "fc8.weight",
        "fc8.bias",
    ]
    assert net.fc6.weight.shape == (4096, 25088)


@pytest.mark.parametrize("name", ["A", "C", "E", "demo"])
def test_dense_twin_equals_the_net_at_the_spec_size(name):
    torch.manual_seed(0)
    net = vggspec.build_net(SPECS / f"{name}.vgg", backend="torch").eval()
    x = torch.randn(2, 3, *net.input_size)
    dense = vggspec.densify(net)
    with torch.no_grad():
        scores, score_map = net(x), dense(x)
    assert score_map.shape == (2, net.num_classes, 1, 1)
    assert rel_err(score_map[:, :, 0, 0], scores) < 1e-5
    assert torch.allclose(dense.predict(x), net.predict(x), rtol=1e-5, atol=1e-7)
    # The twin shares the net's weights: the FC weight is viewed, not copied.
    assert dense.fc6.weight.data_ptr() == net.fc6.weight.data_ptr()


@pytest.mark.parametrize("size, expected", [(256, 2), (384, 6), (512, 10), (300, 3)])
def test_dense_score_map_of_D(size, expected):
    net = vggspec.build_net(SPECS / "D.vgg", backend="torch").eval()
    with torch.no_grad():
        score_map = vggspec.densify(net)(torch.randn(1, 3, size, size))
    assert score_map.shape == (1, 1000, expected, expected)


def _pooled(size: int, pools: int) -> int:
    for _ in range(pools):
        size //= 2  # 2x2 max-pool, stride 2, floor mode
    return size


@settings(max_examples=25, deadline=None)
@example([[1, 1]], 8, 0, 0, 17)  # every ReLU dead: both outputs all zeros (found by CI)
@given(
    st.lists(st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=2), min_size=1, max_size=3),
    st.integers(8, 24),
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 2**31 - 1),
)
def test_dense_twin_property(stages, side, extra_h, extra_w, seed):
    """Random spec shapes and image sizes: at the spec size the twin equals the net;
    on larger images its map has the floor-mode size."""
    text = (
        f"input {side}x{side} RGB\n"
        + "\n".join(
            " ".join(f"conv{k}-{3 + 2 * i}" for k in stage) + " maxpool"
            for i, stage in enumerate(stages)
        )
        + "\nFC-12 FC-12 FC-5 soft-max"
    )
    spec = parse(text)
    try:
        compile_spec(spec)
    except vggspec.SpecError:
        return  # too many pools for this input: the compiler said so
    torch.manual_seed(seed)
    net = vggspec.build_net(spec, backend="torch", init="glorot").eval()
    dense = vggspec.densify(net)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert rel_err(dense(x)[:, :, 0, 0], net(x)) < 1e-5
        big = torch.randn(1, 3, side + extra_h, side + extra_w)
        score_map = dense(big)
    pools = len(stages)
    fc_kernel = _pooled(side, pools)  # the first FC saw this map at the spec size
    assert score_map.shape[2:] == (
        _pooled(side + extra_h, pools) - fc_kernel + 1,
        _pooled(side + extra_w, pools) - fc_kernel + 1,
    )


def test_channels_last_gives_the_same_scores():
    torch.manual_seed(0)
    net = vggspec.build_net(SPECS / "demo.vgg", backend="torch", init="glorot").eval()
    x = torch.randn(3, 3, *net.input_size)
    with torch.no_grad():
        expected = net(x)
        net = net.to(memory_format=torch.channels_last)
        got = net(x.contiguous(memory_format=torch.channels_last))
    assert rel_err(got, expected) < 1e-5


def test_autocast_bfloat16_on_cpu():
    torch.manual_seed(0)
    net = vggspec.build_net(SPECS / "demo.vgg", backend="torch", init="glorot").eval()
    x = torch.randn(2, 3, *net.input_size)
    with torch.no_grad():
        expected = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x)
            posteriors = net.predict(x)
    assert got.dtype == torch.bfloat16
    assert posteriors.dtype == torch.float32
    assert rel_err(got, expected) < 0.05  # bf16 keeps 8 bits of mantissa


def test_training_mode_applies_dropout_and_gradients_flow():
    torch.manual_seed(0)
    net = vggspec.build_net(SPECS / "demo.vgg", backend="torch", init="glorot")
    x = torch.randn(4, 3, *net.input_size)
    a, b = net(x), net(x)
    assert not torch.equal(a, b)  # dropout on fc layers differs between calls
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_init_and_num_classes():
    torch.manual_seed(0)
    net = vggspec.build_net(SPECS / "A.vgg", backend="torch", num_classes=10)
    assert net.fc8.weight.shape == (10, 4096) and net.num_classes == 10
    assert abs(net.fc6.weight.std().item() - 0.01) < 1e-4
    assert abs(net.fc6.weight.mean().item()) < 1e-5
    assert all(p.abs().sum() == 0 for n, p in net.named_parameters() if n.endswith("bias"))
    glorot = vggspec.build_net(SPECS / "demo.vgg", backend="torch", init="glorot")
    fan_in, fan_out = 3 * 9, glorot.conv1_1.weight.shape[0] * 9
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert glorot.conv1_1.weight.abs().max() <= bound
    assert glorot.conv1_1.weight.abs().max() > 0.9 * bound


def test_backend_choice():
    net = vggspec.build_net(SPECS / "demo.vgg", backend="auto")
    assert net.backend_name == ("auto" if torch.cuda.is_available() else "torch")
    with pytest.raises(VggspecError, match="unknown backend"):
        vggspec.build_net(SPECS / "demo.vgg", backend="cudnn")
    with pytest.raises(VggspecError, match="unknown init"):
        vggspec.build_net(SPECS / "demo.vgg", init="he")


class _AtenLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Every ATen op a block of code dispatches, by name."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_torch_backend_dispatches_exactly_what_a_hand_written_net_does(fmt):
    # The noise-free half of bench/lowering.py's "no slower": a training step of the
    # lowered net runs the same ATen ops, in the same order, as nn.Sequential.
    from torch import nn

    spec = parse("input 32x32 RGB\nconv3-8 conv3-8 maxpool\nconv3-16 maxpool\nFC-32 FC-32 FC-10\n")
    ours = vggspec.build_net(spec, backend="torch")
    hand = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(True), nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(True), nn.MaxPool2d(2, 2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(True),
        nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(True),
        nn.Dropout(0.5), nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(32, 10),
    )  # fmt: skip
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=fmt)
    target = torch.tensor([1, 2])
    logs = []
    for net in (ours, hand):
        net.to(memory_format=fmt).train()
        with _AtenLog() as log:
            torch.nn.functional.cross_entropy(net(x), target).backward()
        logs.append(log.ops)
    assert logs[0] == logs[1]
    assert logs[0].count("convolution_backward") == 3 and logs[0].count("addmm") == 3


def test_dropout_masks_do_not_depend_on_how_the_batch_is_split():
    net = vggspec.build_net(parse("input 8x8 RGB\nconv3-4 maxpool\nFC-16 FC-16 FC-3\n"), "torch")
    net.train()
    x = torch.randn(6, 3, 8, 8)
    whole = net(x, batch=GlobalBatch(1234, 0, 6))
    parts = []
    for first in (0, 2, 4):
        parts.append(net(x[first : first + 2], batch=GlobalBatch(1234, first, 6)))
    # Equal up to GEMM rounding (batch 2 and 6 block differently); other masks would differ
    # by the dropped units' whole contribution.
    assert torch.allclose(torch.cat(parts), whole, rtol=1e-5, atol=0)
    other = net(x, batch=GlobalBatch(1235, 0, 6))
    assert not torch.allclose(other, whole, rtol=1e-2, atol=0)  # another step, other masks
    net.eval()
    assert torch.equal(net(x), net(x))  # no dropout at test time


def test_a_net_carries_no_runtime_state():
    """What the weights expect of an image (ModelInfo) and how a step's dropout masks are
    drawn (GlobalBatch) belong to the runtime and the call, not to the compiled module."""
    net = vggspec.build_net(SPECS / "demo.vgg", backend="torch", num_classes=10)
    for name in ("preprocess", "batch_rows"):
        assert not hasattr(net, name) and not hasattr(vggspec.densify(net), name)
