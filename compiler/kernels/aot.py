"""Ahead-of-time compile of every kernel launch for a GPU that is not present, with a roofline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ..targets import GPUS, KERNEL_DTYPE, GpuSpec
from .conv import check_index_range, conv_dgrad_plan, conv_fwd_plan, conv_wgrad_plan
from .cross_entropy import cross_entropy_bwd_plan, cross_entropy_fwd_plan
from .linear import linear_dgrad_plan, linear_fwd_plan, linear_wgrad_plan
from .plan import KernelPlan, Ptr, interpreting
from .pool import maxpool_bwd_plan, maxpool_fwd_plan
from .score_mean import spatial_mean_fwd_plan
from .shapes import (
    ConvLaunch,
    Launch,
    LinearLaunch,
    PoolLaunch,
    SoftmaxLaunch,
    SpatialMeanLaunch,
    launch_from_json,
    launch_to_json,
)
from .softmax_rows import softmax_fwd_plan
from .splitk import splitk_sum_plan


def kernel_plans(launch: Launch, dtype: str, training: bool = True) -> list[KernelPlan]:
    """The kernel launches one layer costs: forward, and for training dgrad and wgrad.

    fp32 GEMMs are planned on TF32 tensor cores (torch.backends.*.allow_tf32 = True),
    the only fp32 mode worth reporting against a tensor-core roofline.
    """
    plans: list[KernelPlan] = []
    gemm = {"upcast": False, "allow_tf32": True}
    if isinstance(launch, ConvLaunch):
        plans.append(conv_fwd_plan(launch, dtype, **gemm))
        if training:
            if launch.input_grad:
                plans.append(conv_dgrad_plan(launch, dtype, **gemm))
            wgrad = conv_wgrad_plan(launch, dtype, **gemm)
            plans.append(wgrad)
            splits = wgrad.notes["splits"]
            if splits > 1:
                weights = launch.c_out * launch.c_in * launch.kh * launch.kw
                plans.append(splitk_sum_plan(weights, splits, dtype))
                plans.append(splitk_sum_plan(launch.c_out, splits, dtype))
    elif isinstance(launch, PoolLaunch):
        plans.append(maxpool_fwd_plan(launch.batch, launch.c, launch.h, launch.w, dtype))
        if training:
            plans.append(maxpool_bwd_plan(launch.batch, launch.c, launch.h, launch.w, dtype))
    elif isinstance(launch, LinearLaunch):
        m, k, n = launch.m, launch.k, launch.n
        fwd = linear_fwd_plan(launch, dtype, **gemm)
        plans += [fwd, *_splitk_followers(fwd, m * n, dtype, bias_period=n, relu=launch.relu)]
        if training:
            if launch.input_grad:
                dgrad = linear_dgrad_plan(launch, dtype, **gemm)
                plans += [dgrad, *_splitk_followers(dgrad, m * k, dtype)]
            wgrad = linear_wgrad_plan(launch, dtype, **gemm)
            plans += [wgrad, *_splitk_followers(wgrad, n * k, dtype)]
            if wgrad.notes["splits"] > 1:
                plans.append(splitk_sum_plan(n, wgrad.notes["splits"], dtype))
    elif isinstance(launch, SoftmaxLaunch):
        if launch.loss:
            plans.append(cross_entropy_fwd_plan(launch.batch, launch.classes, dtype))
            plans.append(splitk_sum_plan(1, launch.batch, "fp32"))
            if training:
                plans.append(cross_entropy_bwd_plan(launch.batch, launch.classes, dtype))
        else:
            plans.append(softmax_fwd_plan(launch.batch, launch.classes, 1, dtype))
    elif isinstance(launch, SpatialMeanLaunch):
        plans.append(spatial_mean_fwd_plan(launch.batch, launch.c, launch.h, launch.w, dtype))
    else:
        raise TypeError(f"unknown launch {launch!r}")
    return plans


def _splitk_followers(
    plan: KernelPlan, length: int, dtype: str, bias_period: int = 1, relu: bool = False
) -> list[KernelPlan]:
    splits = plan.notes["splits"]
    if splits == 1:
        return []
    bias = dtype if plan.constexprs.get("HAS_BIAS") else None
    return [splitk_sum_plan(length, splits, dtype, bias, bias_period, relu)]


def _signature(plan: KernelPlan):
    """Types, constants and alignment hints as the JIT would specialise this launch.

    Mirrors triton's launcher: an int equal to 1 becomes a constant, one divisible by 16
    carries that hint (so loads vectorise and cp.async/TMA pipelines apply), values past
    int32 are i64, and freshly allocated tensors are 16-byte aligned.
    """
    names = plan.fn.arg_names
    signature, constants, attrs = {}, dict(plan.constexprs), {}
    for i, name in enumerate(names):
        if name in plan.constexprs:
            signature[name] = "constexpr"
            continue
        value = plan.args[name]
        if isinstance(value, Ptr):
            signature[name] = f"*{value.dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1:
            signature[name] = "constexpr"
            constants[name] = 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, constants, attrs


def _nvidia_tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _ptxas_for(capability: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(capability).path


def _resource_usage(ptx: str, cubin: bytes, capability: int, arch: str) -> dict:
    """Registers and spills from ptxas -v (the same ptxas and flags triton used)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        log = subprocess.run(
            [
                _ptxas_for(capability),
                "-lineinfo",
                "-v",
                "--regAllocOptLevel=2",
                f"--gpu-name={arch}",
                str(src),
                "-o",
                str(Path(tmp, "k.o")),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        binary = Path(tmp, "k.cubin")
        binary.write_bytes(cubin)
        usage = subprocess.run(
            [_nvidia_tool("cuobjdump"), "--dump-resource-usage", str(binary)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sass = subprocess.run(
            [_nvidia_tool("cuobjdump"), "-sass", str(binary)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    return {
        "registers": int(regs.group(1)),
        "spill_stores": int(spills.group(1)),
        "spill_loads": int(spills.group(2)),
        "stack_bytes": int(stack.group(1)),
        "sass_hgmma": len(re.findall(r"\bHGMMA\b", sass)),
        "sass_hmma": len(re.findall(r"\bHMMA\b", sass)),
    }


def _tensor_core_kind(ptx: str, usage: dict) -> str:
    if "wgmma.mma_async" in ptx and usage["sass_hgmma"]:
        return "wgmma"
    if "mma.sync" in ptx and usage["sass_hmma"]:
        return "mma"
    return "none"


def roofline_seconds(plan: KernelPlan, dtype: str, gpu: GpuSpec) -> tuple[float, str]:
    """max(compute time, memory time) at peak rates, and which one bounds the kernel."""
    if not plan.uses_dot:
        peak = gpu.fp32_flops
    elif dtype == "bf16":
        peak = gpu.bf16_flops
    elif plan.constexprs.get("PRECISION") == "tf32":
        peak = gpu.tf32_flops
    else:
        peak = gpu.fp32_flops
    compute = plan.flops / peak
    memory = plan.min_bytes / gpu.bandwidth
    return max(compute, memory), "compute" if compute >= memory else "memory"


def compile_plan(plan: KernelPlan, target: str) -> dict:
    """Compile one launch for ``target`` and read back its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    gpu = GPUS[target]
    signature, constants, attrs = _signature(plan)
    src = ASTSource(plan.fn, signature, constants, attrs)
    kernel = triton.compile(
        src,
        target=GPUTarget("cuda", gpu.capability, 32),
        options={"num_warps": plan.num_warps, "num_stages": plan.num_stages},
    )
    ptx = kernel.asm["ptx"]
    arch = f"sm_{gpu.capability}a" if gpu.capability >= 90 else f"sm_{gpu.capability}"
    usage = _resource_usage(ptx, kernel.asm["cubin"], gpu.capability, arch)
    return {
        "shared_bytes": int(kernel.metadata.shared),
        "tensor_cores": _tensor_core_kind(ptx, usage),
        **usage,
    }


def _plan_key(plan: KernelPlan) -> str:
    signature, constants, attrs = _signature(plan)
    return json.dumps(
        [
            plan.fn.__name__,
            signature,
            sorted(constants.items()),
            sorted(map(str, attrs)),
            plan.num_warps,
            plan.num_stages,
        ],
        default=str,
    )


def _report_in_process(launches, target: str, dtype: str, training: bool) -> list[dict]:
    gpu = GPUS[target]
    compiled: dict[str, dict] = {}
    rows = []
    for launch in launches:
        for plan in kernel_plans(launch, dtype, training):
            key = _plan_key(plan)
            if key not in compiled:
                compiled[key] = compile_plan(plan, target)
            res = compiled[key]
            seconds, bound = roofline_seconds(plan, dtype, gpu)
            rows.append(
                {
                    "layer": launch.name,
                    "kernel": plan.kind,
                    "config": getattr(plan.config, "name", "-"),
                    "num_warps": plan.num_warps,
                    "num_stages": plan.num_stages,
                    "programs": plan.programs,
                    "splits": plan.notes.get("splits", 1),
                    "uses_dot": plan.uses_dot,
                    **res,
                    "shared_ok": res["shared_bytes"] <= gpu.shared_per_block,
                    "flops": plan.flops,
                    "min_bytes": plan.min_bytes,
                    "roofline_s": seconds,
                    "bound": bound,
                    "target": target,
                    "gpu": gpu.name,
                    "dtype": dtype,
                }
            )
    return rows


def aot_report(
    launches: list[Launch], target: str = "sm_90", dtype: str = "bfloat16", training: bool = True
) -> list[dict]:
    """Compile every kernel the launches need for ``target`` ("sm_90" or "sm_80").

    One row per kernel launch: tile config, registers/thread, spill bytes, shared memory
    (and whether it fits the GPU's per-block limit), tensor-core instructions ("wgmma",
    "mma" or "none"), FLOPs, minimum DRAM bytes and the roofline time. Runs without a GPU.
    Under the interpreter (whose kernels cannot be compiled) it runs in a subprocess.
    """
    if target not in GPUS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(GPUS)}")
    kdtype = KERNEL_DTYPE[dtype]
    for launch in launches:  # shapes the kernels cannot index: a ValueError, here
        if isinstance(launch, ConvLaunch):
            check_index_range(launch)
    if not interpreting():
        return _report_in_process(launches, target, kdtype, training)
    request = {
        "launches": [launch_to_json(x) for x in launches],
        "target": target,
        "dtype": kdtype,
        "training": training,
    }
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "vggspec.compiler.kernels.aot"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ahead-of-time compile failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def predicted_step_time(rows: list[dict]) -> float:
    """Seconds per step if every kernel ran at its roofline, back to back."""
    return sum(r["roofline_s"] for r in rows)


def format_aot_report(rows: list[dict]) -> str:
    """A fixed-width table of ``aot_report`` rows with the predicted step time."""
    head = (
        f"{'layer':<8} {'kernel':<17} {'config':<26} {'progs':>7} {'regs':>4} {'spill':>5} "
        f"{'smem KB':>7} {'TC':<5} {'GFLOP':>8} {'MB':>8} {'t us':>9} bound"
    )
    lines = []
    if rows:
        r0 = rows[0]
        lines.append(f"target {r0['target']} ({r0['gpu']}), {r0['dtype']}")
    lines += [head, "-" * len(head)]
    for r in rows:
        spill = r["spill_stores"] + r["spill_loads"]
        smem = f"{r['shared_bytes'] / 1024:.1f}" + ("" if r["shared_ok"] else "!")
        tc = r["tensor_cores"] if r["uses_dot"] else "-"
        lines.append(
            f"{r['layer']:<8} {r['kernel']:<17} {r['config']:<26} {r['programs']:>7} "
            f"{r['registers']:>4} {spill:>5} {smem:>7} {tc:<5} {r['flops'] / 1e9:>8.2f} "
            f"{r['min_bytes'] / 1e6:>8.1f} {r['roofline_s'] * 1e6:>9.1f} {r['bound']}"
        )
    total = predicted_step_time(rows)
    flops = sum(r["flops"] for r in rows if r["uses_dot"])
    lines.append("-" * len(head))
    lines.append(
        f"predicted step (roofline sum): {total * 1e3:.2f} ms for {flops / 1e12:.2f} "
        f"TFLOP of GEMM work"
    )
    return "\n".join(lines)


def _main() -> None:
    request = json.load(sys.stdin)
    launches = [launch_from_json(x) for x in request["launches"]]
    rows = _report_in_process(launches, request["target"], request["dtype"], request["training"])
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    _main()
