"""Every tile the selection can return, compiled (not modelled) for each GPU of the table:
within its shared memory per block and its registers, at the shapes of every spec."""

import itertools

import pytest
from vggspec.compiler import compile_spec, load_spec
from vggspec.compiler.kernels.aot import compile_jobs, fits, plan_job
from vggspec.compiler.kernels.configs import (
    select_conv_config,
    select_matmul_config,
    select_wgrad_config,
)
from vggspec.compiler.kernels.conv import conv_wgrad_plan
from vggspec.compiler.kernels.shapes import ConvLaunch
from vggspec.compiler.lowering.launches import graph_launches
from vggspec.compiler.targets import GPUS

from bench.toy_specs import spec_files

COMPILE_TARGETS = ["sm_90", "sm_80"]  # h200 compiles as sm_90


def selectable() -> set[tuple[str, str]]:
    """(config, dtype) of every tile the selection functions can return, over a grid of
    GEMM sizes wide enough to reach each branch."""
    sizes = [1, 8, 16, 32, 48, 64, 96, 128, 512, 4096, 10**6]
    found = set()
    for dtype, gated in itertools.product(("bf16", "fp32"), (False, True)):
        for m, n, c in itertools.product(sizes, sizes, [3, 16, 64]):
            found.add((select_conv_config(m, n, c, dtype, gated).name, dtype))
            found.add((select_matmul_config(m, n, c, dtype, gated).name, dtype))
            rows = 9 * c
            found.add((select_wgrad_config(rows, c, n, m, dtype).name, dtype))
    return found


def production_plans(dtype: str):
    """The training kernels of every spec in specs/ at its own size and at 32×32, at batch
    256 and 2: the launches the triton backend makes in training."""
    for path, (size, batch) in itertools.product(spec_files(), [(None, 256), ((32, 32), 2)]):
        graph = compile_spec(load_spec(path), size)
        launches, _ = graph_launches(graph, batch, training=True)
        for launch in launches:
            yield from launch.plans(dtype, training=True)


@pytest.mark.slow  # a few hundred compiles per target (minutes, cold)
@pytest.mark.parametrize("target", COMPILE_TARGETS)
def test_every_production_choice_fits_every_gpu(target):
    gpu = GPUS[target]
    plans = [plan for dtype in ("bf16", "fp32") for plan in production_plans(dtype)]
    jobs = {}
    for plan in plans:
        jobs.setdefault(str(plan_job(plan)), plan)
    figures = compile_jobs([plan_job(p) for p in jobs.values()], target)
    unfit = [
        f"{p.kind} {p.config.name}: {f['shared_bytes']} B, {f['registers']} registers"
        for p, f in zip(jobs.values(), figures, strict=True)
        if not fits(f, p.num_warps, gpu)
    ]
    assert unfit == []
    # The specs reach every tile the selection can return, in both dtypes.
    used = {(p.config.name, "fp32" if p.constexprs.get("PRECISION") == "tf32" else "bf16")
            for p in jobs.values() if p.uses_dot}  # fmt: skip
    assert selectable() <= used


def test_the_tf32_weight_gradient_tile_fits_the_a100(tmp_path):
    """fp32 (TF32) weight gradients at VGG widths take 128×128×32 over 4 stages: a model of
    the pipeline's operand tiles said 128 KB; compiled it is ~148 KB on sm_80 (limit 163 KB)
    and ~176 KB on sm_90 (limit 227 KB). The K-64 tile the selection avoids needs 256 KB."""
    layer = ConvLaunch("conv3_2", 64, 256, 56, 56, 256, 3, 3, 1, 1)
    plan = conv_wgrad_plan(layer, "fp32")
    assert plan.config.name == "wgrad_128x128x32_w8_s4"
    for target in COMPILE_TARGETS:
        (figures,) = compile_jobs([plan_job(plan)], target)
        assert fits(figures, plan.num_warps, GPUS[target]), (target, figures["shared_bytes"])
        assert figures["shared_bytes"] > 128 * 1024  # more than the model counted
