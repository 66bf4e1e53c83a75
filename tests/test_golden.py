"""Golden figures from the paper: params, MACs and receptive fields of A–E at 224."""

import json

import pytest
from helpers import SPECS
from vggspec.compiler import compile_spec, dense_graph, launch_count, load_spec

# Params: Table 2 (133/133/134/138/144 M), exact. MACs: conv + FC multiply-accumulates.
GOLDEN = {
    "A": (132_863_336, 7_609_090_048, 342),
    "A-LRN": (132_863_336, 7_609_090_048, 342),
    "B": (133_047_848, 11_308_466_176, 348),
    "C": (133_638_952, 11_770_888_192, 348),
    "D": (138_357_544, 15_470_264_320, 404),
    "E": (143_667_240, 19_632_062_464, 460),
}
# After fusion: one launch per conv(+ReLU), pool, FC(+ReLU+dropout), LRN and soft-max.
LAUNCHES = {"A": 17, "A-LRN": 18, "B": 19, "C": 22, "D": 22, "E": 25}
UNFUSED = {"A": 29, "A-LRN": 30, "B": 33, "C": 39, "D": 39, "E": 45}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_compile_json_matches_paper(cli, name):
    code, out, err = cli("compile", SPECS / f"{name}.vgg", "--json")
    assert code == 0, err
    report = json.loads(out)
    params, macs, rf = GOLDEN[name]
    assert report["name"] == name
    assert report["input"] == [3, 224, 224]
    assert report["params"] == params
    assert report["macs"] == macs
    assert report["flops"] == 2 * macs
    assert report["receptive_field"] == rf
    assert sum(layer["params"] for layer in report["layers"]) == params
    assert sum(layer["macs"] for layer in report["layers"]) == macs
    first = report["layers"][1]
    assert (first["name"], first["shape"], first["params"]) == ("conv1_1", [64, 224, 224], 1792)
    assert [layer["name"] for layer in report["layers"][-4:]] == ["fc6", "fc7", "fc8", "prob"]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_launch_counts_before_and_after_fusion(name):
    spec = load_spec(SPECS / f"{name}.vgg")
    assert launch_count(compile_spec(spec, fused=False)) == UNFUSED[name]
    assert launch_count(compile_spec(spec)) == LAUNCHES[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_fuse_and_densify_keep_the_parameter_count(name):
    spec = load_spec(SPECS / f"{name}.vgg")
    unfused = compile_spec(spec, fused=False)
    fused = compile_spec(spec)
    dense = dense_graph(fused, (384, 384))
    counts = {g.graph["totals"].params for g in (unfused, fused, dense)}
    assert counts == {GOLDEN[name][0]}
    assert fused.graph["totals"].macs == unfused.graph["totals"].macs


def test_memory_figures_scale_with_batch_and_dtype():
    spec = load_spec(SPECS / "D.vgg")
    one = compile_spec(spec, batch=1, dtype="float32").graph["totals"]
    many = compile_spec(spec, batch=8, dtype="bfloat16").graph["totals"]
    assert one.param_bytes == 4 * 138_357_544
    assert many.param_bytes == 2 * 138_357_544
    # conv1_2 reads and writes 64x224x224 floats: the forward peak.
    assert one.forward_bytes == 2 * 64 * 224 * 224 * 4
    assert many.forward_bytes == 8 * 2 * 64 * 224 * 224 * 2
    assert many.training_bytes > many.forward_bytes
