"""Tile-config sets and the pure selection helpers: GPU-legal tiles, budgets, split-K choices."""

import dataclasses

import pytest
from vggspec.compiler.kernels import configs
from vggspec.compiler.kernels.configs import (
    CONV_CONFIGS,
    MATMUL_CONFIGS,
    WGRAD_CONFIGS,
    select_conv_config,
    select_matmul_config,
    select_wgrad_config,
    split_count,
)
from vggspec.compiler.kernels.conv import conv_fwd_plan, conv_wgrad_plan
from vggspec.compiler.kernels.linear import linear_dgrad_plan, linear_fwd_plan, linear_wgrad_plan
from vggspec.compiler.kernels.shapes import (
    ConvLaunch,
    LinearLaunch,
    PoolLaunch,
    launch_from_json,
    launch_to_json,
    vgg16_conv_launches,
    vgg16_launches,
)

ALL_SETS = [
    configs.CONV_CONFIGS,
    configs.WGRAD_CONFIGS,
    configs.MATMUL_CONFIGS,
    configs.POOL_CONFIGS,
    configs.REDUCE_CONFIGS,
    configs.SOFTMAX_CONFIGS,
    configs.MEAN_CONFIGS,
]


def _pow2(v):
    return v > 0 and v & (v - 1) == 0


@pytest.mark.parametrize("config_set", ALL_SETS, ids=lambda s: type(s[0]).__name__)
def test_config_names_are_unique_and_tiles_gpu_legal(config_set):
    assert len({c.name for c in config_set}) == len(config_set)
    for cfg in config_set:
        assert cfg.num_warps in (1, 2, 4, 8)
        blocks = [v for k, v in dataclasses.asdict(cfg).items() if k.startswith("block")]
        assert blocks and all(_pow2(b) for b in blocks), cfg
        if cfg in CONV_CONFIGS + WGRAD_CONFIGS + MATMUL_CONFIGS:
            assert min(blocks) >= 16, f"tl.dot needs every dimension >= 16 on GPU: {cfg}"


def test_every_config_set_has_an_eight_warp_member_under_test():
    """PyTorch #173068: a template was wrong only at num_warps >= 8. Each GEMM set has one."""
    for config_set in (CONV_CONFIGS, WGRAD_CONFIGS, MATMUL_CONFIGS):
        assert any(c.num_warps == 8 for c in config_set)


def test_first_layer_walks_k_flat():
    assert select_conv_config(256 * 224 * 224, 64, 3, "bf16").flat_k
    assert select_wgrad_config(27, 3, 64, 256 * 224 * 224, "bf16").flat_k
    assert not select_conv_config(256 * 224 * 224, 64, 64, "bf16").flat_k


def test_gated_kernels_use_the_k32_tile():
    assert select_conv_config(10**6, 256, 128, "bf16", gated=True).block_k == 32
    assert select_matmul_config(256, 25088, 4096, "bf16", gated=True).block_k == 32


def test_split_count_fills_the_gpu_but_keeps_steps():
    assert split_count(output_tiles=1000, reduction_steps=10**6, num_sms=132) == 1
    assert split_count(output_tiles=9, reduction_steps=10**6, num_sms=132) == 30
    assert split_count(output_tiles=9, reduction_steps=8, num_sms=132) == 2
    assert split_count(output_tiles=9, reduction_steps=3, num_sms=132) == 1


def test_vgg16_weight_gradients_do_not_serialise_on_few_tiles():
    """Every wgrad launch of VGG-16 at batch 256 has at least one program per SM."""
    for layer in vgg16_conv_launches(256, 224):
        plan = conv_wgrad_plan(layer, "bf16")
        assert plan.programs >= configs.DEFAULT_NUM_SMS, (layer.name, plan.grid)
        assert plan.notes["splits"] > 1


def test_linear_plans_split_the_long_fc6_reduction():
    fc6 = LinearLaunch("fc6", 256, 25088, 4096)
    fwd = linear_fwd_plan(fc6, "bf16")
    assert fwd.notes["splits"] > 1 and fwd.programs >= configs.DEFAULT_NUM_SMS
    assert linear_wgrad_plan(fc6, "bf16").notes["splits"] == 1
    assert linear_dgrad_plan(fc6, "bf16").constexprs["HAS_GATE"]


def test_vgg16_launches_match_the_paper():
    launches = vgg16_launches(256, 224)
    convs = [x for x in launches if isinstance(x, ConvLaunch)]
    fcs = [x for x in launches if isinstance(x, LinearLaunch)]
    assert len(convs) == 13 and len([x for x in launches if isinstance(x, PoolLaunch)]) == 5
    assert [c.name for c in convs][-1] == "conv5_3" and convs[-1].h == 14
    assert fcs[0].k == 512 * 7 * 7
    params = sum(c.c_out * (c.c_in * 9 + 1) for c in convs) + sum(f.n * (f.k + 1) for f in fcs)
    assert params == 138_357_544  # Table 2, configuration D
    macs = sum(c.c_out * c.c_in * 9 * c.h * c.w for c in convs) + sum(f.n * f.k for f in fcs)
    assert round(macs / 1e9, 2) == 15.47  # per 224×224 image
    assert not convs[0].input_grad and all(c.input_grad for c in convs[1:])


def test_launch_json_round_trip():
    for launch in vgg16_launches(2, 32):
        assert launch_from_json(launch_to_json(launch)) == launch


def test_dense_512_batch_stays_within_int32_per_image_indexing():
    """A 512×512 dense batch passes 2^31 elements in total (the image base is int64)
    while each image, the row count and the filter stay within int32."""
    layer = ConvLaunch("conv1_2", 256, 64, 512, 512, 64, 3, 3, 1, 1)
    assert layer.batch * layer.h * layer.w * layer.c_in > 2**31
    assert conv_fwd_plan(layer, "bf16").args["sxn"] == 512 * 512 * 64


def test_shapes_past_int32_indexing_are_refused():
    with pytest.raises(ValueError, match="past int32"):
        conv_fwd_plan(ConvLaunch("huge", 1, 512, 2048, 2048, 64, 3, 3, 1, 1), "bf16")
