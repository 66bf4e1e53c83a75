"""Ahead-of-time compile for sm_90 and sm_80 on this GPU-less machine: resources and roofline."""

import pytest
from vggspec.compiler.kernels.aot import aot_report, format_aot_report, predicted_step_time
from vggspec.compiler.kernels.shapes import (
    ConvLaunch,
    LinearLaunch,
    PoolLaunch,
    SoftmaxLaunch,
    SpatialMeanLaunch,
    vgg16_conv_launches,
)
from vggspec.compiler.targets import GPUS

LAUNCHES = [
    ConvLaunch("conv1_1", 2, 3, 16, 12, 16, 3, 3, 1, 1, input_grad=False),
    ConvLaunch("conv1_2", 2, 16, 16, 12, 32, 3, 3, 1, 1),
    PoolLaunch("pool1", 2, 32, 16, 12),
    ConvLaunch("fc6", 2, 32, 8, 6, 64, 7, 5, 0, 0),
    LinearLaunch("fc7", 2, 64, 48),
    LinearLaunch("fc8", 2, 48, 10, relu=False),
    SoftmaxLaunch("prob", 2, 10),
    SoftmaxLaunch("dense_prob", 2, 10, loss=False),
    SpatialMeanLaunch("mean", 2, 10, 2, 2),
]
SHARED_LIMIT = {"sm_90": 227 * 1024, "sm_80": 163 * 1024}


# sm_80 compiles the same kernels again for another target (~12 s each here): slow tier.
TARGETS = ["sm_90", pytest.param("sm_80", marks=pytest.mark.slow)]


@pytest.mark.parametrize("target", TARGETS)
def test_aot_report_compiles_every_kernel_without_a_gpu(target):
    rows = aot_report(LAUNCHES, target=target, dtype="bfloat16")
    kinds = {r["kernel"] for r in rows}
    assert {
        "conv_fwd",
        "conv_dgrad",
        "conv_wgrad",
        "maxpool_fwd",
        "maxpool_bwd",
        "linear_fwd",
        "linear_dgrad",
        "linear_wgrad",
        "softmax_xent_fwd",
        "softmax_xent_bwd",
        "spatial_mean_fwd",
    } <= kinds
    assert not any(r["kernel"] == "conv_dgrad" and r["layer"] == "conv1_1" for r in rows)
    for r in rows:
        where = f"{r['layer']} {r['kernel']} {r['config']}"
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, where
        assert 0 < r["registers"] <= 255, where
        assert r["shared_bytes"] <= SHARED_LIMIT[target] and r["shared_ok"], where
        # Never faster than its bytes at the bandwidth or its FLOPs at the fastest peak.
        gpu = GPUS[target]
        assert r["roofline_s"] >= r["min_bytes"] / gpu.bandwidth, where
        assert r["roofline_s"] >= r["flops"] / gpu.bf16_flops, where
        if r["uses_dot"]:
            assert r["tensor_cores"] in ("wgmma", "mma"), where
    conv1_2 = next(r for r in rows if (r["layer"], r["kernel"]) == ("conv1_2", "conv_fwd"))
    # bf16: it reads its 2×16×16×12 input and 32×16×3×3 weight, writes 2×32×16×12
    assert conv1_2["min_bytes"] >= 2 * (2 * 16 * 16 * 12 + 32 * 16 * 9 + 2 * 32 * 16 * 12)
    assert conv1_2["flops"] == 2 * (2 * 16 * 12) * 32 * (16 * 9)
    big = [r for r in rows if r["kernel"].startswith("conv") and r["config"].startswith("conv_")]
    if target == "sm_90":
        assert any(r["tensor_cores"] == "wgmma" for r in big)
    else:
        assert all(r["tensor_cores"] == "mma" for r in rows if r["uses_dot"])
    table = format_aot_report(rows)
    assert "conv1_2" in table and "roofline bound" in table and "estimate (wave" in table


# Table 1, configuration D (VGG-16): conv widths by stage ("M" = maxpool), then the FC sizes.
TABLE_1_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
TABLE_1_D += [512, 512, 512, "M"]
FC_D = [4096, 4096, 1000]


def _vgg16_counts(size=224):
    """(MACs, conv1_1's MACs, parameters, activation elements) of one 224×224 image,
    counted from Table 1 alone (3×3 convs, same padding, 2×2 pools)."""
    macs, params, c, side, acts, first = 0, 0, 3, size, 3 * size * size, None
    for item in TABLE_1_D:
        if item == "M":
            side //= 2
        else:
            layer = 9 * c * item * side * side
            first = layer if first is None else first
            macs, params, c = macs + layer, params + (9 * c + 1) * item, item
        acts += c * side * side
    fan_in = c * side * side
    for n in FC_D:
        macs, params, acts, fan_in = macs + fan_in * n, params + (fan_in + 1) * n, acts + n, n
    return macs, first, params, acts


@pytest.mark.parametrize("target", ["sm_90", "sm_80"])
def test_predicted_training_step_of_vgg16_against_table_1(target):
    """The roofline sum for a bf16 training step of D at batch 256 is at least what the
    FLOPs and the DRAM traffic alone force, and within 1.5x of it. The bound: fwd, dgrad
    and wgrad each 2 x MACs (no dgrad for conv1_1), every weight and activation crossing
    DRAM at least once, on the GPU table's peaks."""
    from vggspec.compiler import compile_spec, load_spec
    from vggspec.compiler.kernels.aot import roofline_seconds
    from vggspec.compiler.lowering.launches import graph_launches
    from vggspec.compiler.targets import GPUS

    batch, gpu = 256, GPUS[target]
    macs, conv1_1, params, acts = _vgg16_counts()
    assert macs == 15_470_264_320  # the well-known 15.5 GMACs of VGG-16
    flops = 2 * batch * (3 * macs - conv1_1)
    dram = 2 * (params + batch * acts)
    bound = max(flops / gpu.bf16_flops, dram / gpu.bandwidth)

    launches, _ = graph_launches(compile_spec(load_spec("specs/D.vgg")), batch, training=True)
    rows = [
        {"roofline_s": roofline_seconds(plan, "bf16", gpu)[0]}
        for launch in launches
        for plan in launch.plans("bf16", training=True)
    ]
    predicted = predicted_step_time(rows)
    assert bound <= predicted <= 1.5 * bound, (predicted, bound)


def test_fp32_small_tiles_do_not_spill_on_sm_80():
    """fp32 (TF32) weight gradients at ≤ 64 channels: the K-64 tile spilled 120-140 bytes."""
    launches = [ConvLaunch("conv3_1", 8, 32, 8, 8, 32, 3, 3, 1, 1), LinearLaunch("fc", 8, 512, 64)]
    rows = aot_report(launches, target="sm_80", dtype="float32")
    grads = [r for r in rows if r["kernel"] in ("conv_wgrad", "linear_wgrad")]
    assert len(grads) == 2 and all(
        r["config"].startswith(("wgrad_64x64x32", "mm_64x64x32")) for r in grads
    )
    for r in rows:
        assert r["spill_stores"] == r["spill_loads"] == 0, (
            f"{r['layer']} {r['kernel']} {r['config']}"
        )


def test_aot_report_rejects_unknown_target():
    with pytest.raises(ValueError, match="sm_75"):
        aot_report(LAUNCHES[:1], target="sm_75")


@pytest.mark.parametrize("target", TARGETS)
def test_vgg16_convs_compile_to_tensor_cores_without_spills(target):
    """The acceptance check on configuration D's 13 conv layers, batch 256 at 224×224, bf16:
    every conv kernel (fwd, dgrad, wgrad) on tensor cores, nothing spilled, shared memory
    within the per-block limit, and a roofline step time (≈15 s per target, cold cache)."""
    rows = aot_report(vgg16_conv_launches(256, 224), target=target, dtype="bfloat16")
    convs = [r for r in rows if r["kernel"].startswith("conv_")]
    assert len(convs) == 13 * 3 - 1  # conv1_1 needs no data gradient
    for r in rows:
        where = f"{r['layer']} {r['kernel']} {r['config']}"
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, where
        assert r["shared_bytes"] <= SHARED_LIMIT[target], where
    for r in convs:
        assert r["tensor_cores"] in ("wgmma", "mma"), r
    if target == "sm_90":
        # All but conv1_1's weight gradient, whose 32-row flat tile is below wgmma's 64.
        assert [r["layer"] for r in convs if r["tensor_cores"] != "wgmma"] == ["conv1_1"]
    # The GEMM work, counted here from Table 1 rather than read from the report: D's conv
    # layers hold 15,346,630,656 MACs per 224 image (the compiler's 15,470,264,320 less the
    # FC layers' 123,633,664); a training step does each three times (forward, data and
    # weight gradient) but for conv1_1's data gradient (224·224·64·27 MACs).
    flops = 2 * 256 * (3 * 15_346_630_656 - 224 * 224 * 64 * 27)
    assert sum(r["flops"] for r in convs) == flops
    peak = {"sm_90": 989e12, "sm_80": 312e12}[target]
    bandwidth = {"sm_90": 3.35e12, "sm_80": 2.0e12}[target]
    step = predicted_step_time(rows)
    # Each kernel's roofline lies between its compute time and compute + memory time.
    assert flops / peak <= step <= flops / peak + sum(r["min_bytes"] for r in rows) / bandwidth
