"""The inference net (BN folded, weights stored once in the compute dtype and layout) and
how `precision="auto"` reads the CPU."""

from __future__ import annotations

import types

import pytest
import torch
from vggspec.compiler.lowering import inference
from vggspec.compiler.lowering.inference import inference_net, resolve_precision
from vggspec.compiler.lowering.net import densify
from vggspec.compiler.targets import cpu_has_native_bf16

import vggspec

SPEC = "input 32x32 RGB\nconv3-8 BN maxpool\nconv3-16 BN maxpool\nFC-32 FC-32 FC-6 soft-max\n"


@pytest.fixture
def trained_bn_net(tmp_path):
    """A net whose BN layers hold running statistics and affine parameters far from their
    initial ones (so folding them is not a no-op)."""
    spec = tmp_path / "bn.vgg"
    spec.write_text(SPEC)
    torch.manual_seed(0)
    net = vggspec.build_net(spec, backend="torch", init="glorot")
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            if name.startswith("bn"):
                tensor.uniform_(0.5, 1.5)
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32) * 3 + 1)
    return net


def test_fp32_computes_what_the_eval_net_computes(trained_bn_net):
    net = trained_bn_net
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = net.eval()(x)  # BN run as BN, on its running statistics
    net.train()
    got = inference_net(net, precision="fp32")(x)
    assert net.training  # the caller's net keeps its mode
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not any("bn" in name for name in dict(inference_net(net).named_children()))


def test_fp32_dense_twin_is_the_folded_twin_bit_for_bit_and_shares_its_weights(tmp_path):
    spec = tmp_path / "plain.vgg"
    spec.write_text(SPEC.replace(" BN", ""))
    torch.manual_seed(1)
    net = vggspec.build_net(spec, backend="torch").eval()
    twin = inference_net(net, precision="fp32", dense=True)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(twin(x), densify(net)(x))
    assert twin.conv1_1.weight.data_ptr() == net.conv1_1.weight.data_ptr()  # not a copy
    assert twin.fc4.weight.data_ptr() == net.fc4.weight.data_ptr()  # a view of the FC weight
    assert all(p.requires_grad for p in net.parameters())  # the net's own are untouched


def test_bf16_stores_weights_once_in_bf16_nhwc_and_agrees(trained_bn_net):
    net = trained_bn_net.eval()
    twin = inference_net(net, precision="bf16", dense=True)
    for name, tensor in twin.named_parameters():
        assert tensor.dtype == torch.bfloat16, name
        assert not tensor.requires_grad, name
        if tensor.dim() == 4:
            assert tensor.is_contiguous(memory_format=torch.channels_last), name
    x = torch.randn(8, 3, 40, 44)
    with torch.no_grad():
        reference = densify(net)(x)
    got = twin(x)
    assert got.dtype == torch.float32
    error = (got - reference).abs().max() / reference.abs().max()
    assert 0 < error < 2e-2  # bf16 rounding, not another function
    assert torch.equal(twin.predict(x).argmax(1), densify(net).predict(x).argmax(1))
    # The forward casts the input only: every conv/linear runs on the stored tensors.
    with torch.profiler.profile() as prof:
        twin(x)
    copies = [e for e in prof.key_averages() if e.key == "aten::_to_copy"]
    assert sum(e.count for e in copies) == 2  # the input to bf16, the output to fp32


@pytest.mark.parametrize(
    "flags, native",
    [
        ("fpu avx512f avx512_vnni avx512_bf16 sha_ni", True),  # Zen 4/5, Cooper Lake
        ("fpu avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
        ("fpu avx2 avx512f avx512_vnni", False),  # AVX-512 without bf16: emulated
        ("fpu avx2 fma", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nvendor_id\t: X\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(str(info)) is native


def test_other_systems_fall_back_to_fp32(tmp_path, monkeypatch):
    arm = tmp_path / "cpuinfo"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # ARM lists Features
    assert not cpu_has_native_bf16(str(arm))
    assert not cpu_has_native_bf16(str(tmp_path / "absent"))  # macOS, Windows
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(vggspec.VggspecError, match="unknown precision"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("major, native", [(7, False), (8, True), (9, True)])
def test_a_gpu_has_native_bf16_from_ampere_on(monkeypatch, major, native):
    """A V100 or T4 (7.x) makes bf16 tensors, emulated: `auto` must stay fp32 there."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(major=major)
    )
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    assert inference.native_bf16("cuda") is native
    assert resolve_precision("auto", "cuda") == ("bf16" if native else "fp32")
