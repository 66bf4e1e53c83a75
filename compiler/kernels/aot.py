"""Ahead-of-time compile of every kernel launch for a GPU that is not present, with a roofline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ..targets import GPUS, KERNEL_DTYPE, LAUNCH_GAP_S, RESERVED_SHARED_PER_BLOCK, GpuSpec
from . import aot_cache
from .plan import KernelPlan, Ptr, interpreting
from .shapes import Launch


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


def plan_job(plan: KernelPlan) -> dict:
    """What compiling `plan` needs, as JSON: the kernel (module and name), its
    specialisation as the JIT would make it, and the launch options. UPCAST, the
    interpreter's aid, is off: a GPU never upcasts."""
    signature, constants, attrs = _signature(plan)
    if "UPCAST" in constants:
        constants["UPCAST"] = False
    return {
        "kernel": f"{plan.fn.fn.__module__}:{plan.fn.__name__}",
        "signature": signature,
        "constants": constants,
        "attrs": sorted([list(index), value] for index, value in attrs.items()),
        "num_warps": plan.num_warps,
        "num_stages": plan.num_stages,
    }


def _compile_job(job: dict, capability: int) -> dict:
    """Compile one job for sm_<capability> and read back its resources (needs triton's
    compiler: not under the interpreter)."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name = job["kernel"].split(":")
    fn = getattr(importlib.import_module(module), name)
    attrs = {tuple(index): value for index, value in job["attrs"]}
    src = ASTSource(fn, job["signature"], job["constants"], attrs)
    kernel = triton.compile(
        src,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": job["num_warps"], "num_stages": job["num_stages"]},
    )
    ptx = kernel.asm["ptx"]
    arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    usage = _resource_usage(ptx, kernel.asm["cubin"], capability, arch)
    return {
        "shared_bytes": int(kernel.metadata.shared),
        "tensor_cores": _tensor_core_kind(ptx, usage),
        **usage,
    }


def compile_plan(plan: KernelPlan, target: str) -> dict:
    """Compile one launch for ``target`` and read back its resources (cached on disk)."""
    return compile_jobs([plan_job(plan)], target)[0]


# Runs a list of jobs in a fresh process: with the parent's vggspec.compiler even when that
# is a checkout's folder mapped onto the name (bench/_tree.py), not an installed package.
_CHILD = """
import importlib.abc, importlib.util, json, sys
folder = sys.argv[1]

class Tree(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "vggspec.compiler":
            return None
        return importlib.util.spec_from_file_location(
            name, folder + "/__init__.py", submodule_search_locations=[folder])

sys.meta_path.insert(0, Tree())
from vggspec.compiler.kernels.aot import _compile_and_store
with open(sys.argv[2]) as f:
    request = json.load(f)
json.dump([_compile_and_store(job, request["capability"]) for job in request["jobs"]], sys.stdout)
"""


# A parent started without site-packages (python -S) has its children start so too.
_SITE_FLAG = ["-S"] if sys.flags.no_site else []


def _compile_and_store(job: dict, capability: int) -> dict:
    """Compile one job and put its figures in the disk cache at once (a run cut short keeps
    what it compiled)."""
    figures = _compile_job(job, capability)
    aot_cache.store(aot_cache.job_key(job, capability), figures)
    return figures


def _compile_elsewhere(jobs: list[dict], capability: int, workers: int) -> list[dict]:
    """Compile in `workers` fresh processes (without TRITON_INTERPRET), in order."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    folder = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder.parent), env.get("PYTHONPATH")]))
    chunks = [jobs[i::workers] for i in range(workers)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            for i, chunk in enumerate(chunks):
                request = Path(tmp, f"jobs{i}.json")
                request.write_text(json.dumps({"jobs": chunk, "capability": capability}))
                procs.append(
                    subprocess.Popen(
                        [sys.executable, *_SITE_FLAG, "-c", _CHILD, str(folder), str(request)],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env=env,
                    )
                )
            for proc in procs:  # all run at once; each writes its output at its end
                out, err = proc.communicate()
                if proc.returncode != 0:
                    last = (err.strip().splitlines() or ["?"])[-1]
                    raise RuntimeError(f"ahead-of-time compile failed: {last}\n{err[-4000:]}")
                results.append(json.loads(out))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    # chunk i holds jobs i, i + workers, …: put them back in order
    ordered = [None] * len(jobs)
    for i, figures in enumerate(results):
        ordered[i::workers] = figures
    return ordered


def compile_jobs(jobs: list[dict], target: str, workers: int | None = None) -> list[dict]:
    """The compiled figures of each job for ``target``: from the disk cache (aot_cache),
    else compiled, the distinct ones only, in up to `workers` processes (default: one per
    CPU). Under the interpreter every compile runs in a fresh process."""
    capability = GPUS[target].capability
    keys = [aot_cache.job_key(job, capability) for job in jobs]
    found = {key: aot_cache.load(key) for key in dict.fromkeys(keys)}
    missing = {key: job for key, job in zip(keys, jobs, strict=True) if found[key] is None}
    if missing:
        todo = list(missing.values())
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        if workers == 1 and not interpreting():
            figures = [_compile_job(job, capability) for job in todo]
        else:
            figures = _compile_elsewhere(todo, capability, workers)
        for key, result in zip(missing, figures, strict=True):
            aot_cache.store(key, result)  # (the child processes have stored theirs already)
            found[key] = result
    return [found[key] for key in keys]


def fits(figures: dict, num_warps: int, gpu: GpuSpec) -> bool:
    """A compiled kernel can launch on `gpu`: its shared memory within the per-block limit
    and its registers within what one block may hold."""
    registers = figures["registers"] * 32 * num_warps
    return figures["shared_bytes"] <= gpu.shared_per_block and registers <= gpu.registers_per_sm


def blocks_per_sm(figures: dict, num_warps: int, gpu: GpuSpec) -> int:
    """Occupancy: how many blocks of a compiled kernel one SM holds at once, by its
    registers (allocated per warp in units of 256), shared memory and threads."""
    warp_registers = -(-figures["registers"] * 32 // 256) * 256
    by_registers = gpu.registers_per_sm // max(1, warp_registers * num_warps)
    per_block = figures["shared_bytes"] + RESERVED_SHARED_PER_BLOCK
    by_shared = gpu.shared_per_sm // per_block
    by_threads = gpu.threads_per_sm // (32 * num_warps)
    return max(0, min(by_registers, by_shared, by_threads, gpu.blocks_per_sm))


def estimated_seconds(roofline: float, programs: int, blocks: int, gpu: GpuSpec) -> float:
    """The roofline time stretched by wave quantisation, plus the launch gap.

    A wave is every SM holding `blocks` programs; a kernel takes whole waves. Each SM is
    taken to reach its share of the roof only with all its `blocks` slots busy, so a
    kernel of `programs` runs for roofline × (waves × slots) / programs, plus LAUNCH_GAP_S.
    """
    slots = gpu.sms * max(1, blocks)
    waves = -(-programs // slots)
    return roofline * waves * slots / max(1, programs) + LAUNCH_GAP_S


def _report_rows(launches, target: str, dtype: str, training: bool) -> list[dict]:
    gpu = GPUS[target]
    plans = [(launch, plan) for launch in launches for plan in launch.plans(dtype, training)]
    compiled = compile_jobs([plan_job(plan) for _, plan in plans], target)
    rows = []
    for (launch, plan), res in zip(plans, compiled, strict=True):
        seconds, bound = roofline_seconds(plan, dtype, gpu)
        blocks = blocks_per_sm(res, plan.num_warps, gpu)
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
                "fits": fits(res, plan.num_warps, gpu),
                "blocks_per_sm": blocks,
                "flops": plan.flops,
                "min_bytes": plan.min_bytes,
                "roofline_s": seconds,
                "estimate_s": estimated_seconds(seconds, plan.programs, blocks, gpu),
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
    """Compile every kernel the launches need for ``target`` ("sm_90", "h200" or "sm_80").

    One row per kernel launch: tile config, registers/thread, spill bytes, shared memory
    (and whether it fits the GPU's limits), tensor-core instructions ("wgmma", "mma" or
    "none"), FLOPs, minimum DRAM bytes, the roofline time and the estimate. Runs without a
    GPU; under the interpreter (whose kernels cannot be compiled) the compiles run in
    fresh processes.
    """
    if target not in GPUS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(GPUS)}")
    kdtype = KERNEL_DTYPE[dtype]
    for launch in launches:  # shapes the kernels cannot index: a ValueError, here
        launch.check()
    return _report_rows(launches, target, kdtype, training)


def predicted_step_time(rows: list[dict]) -> float:
    """The roofline bound: seconds per step if every kernel ran at its roof, back to back."""
    return sum(r["roofline_s"] for r in rows)


def estimated_step_time(rows: list[dict]) -> float:
    """The estimate: every kernel's roofline time stretched by wave quantisation at its
    compiled occupancy, plus a launch gap each (see estimated_seconds)."""
    return sum(r["estimate_s"] for r in rows)


def describe_estimate(target: str) -> str:
    gpu = GPUS[target]
    return (
        f"wave quantisation over {gpu.sms} SMs at the blocks per SM the compiled registers "
        f"and shared memory allow, {LAUNCH_GAP_S * 1e6:.0f} us launch gap per kernel"
    )


def format_aot_report(rows: list[dict]) -> str:
    """A fixed-width table of ``aot_report`` rows with the roofline bound and the estimate."""
    head = (
        f"{'layer':<8} {'kernel':<17} {'config':<26} {'progs':>7} {'regs':>4} {'spill':>5} "
        f"{'smem KB':>7} {'occ':>3} {'TC':<5} {'GFLOP':>8} {'MB':>8} {'roof us':>9} "
        f"{'est us':>9} bound"
    )
    lines = []
    if rows:
        r0 = rows[0]
        gpu = GPUS[r0["target"]]
        lines.append(
            f"target {r0['target']} ({r0['gpu']}, {gpu.bandwidth / 1e12:.2f} TB/s), {r0['dtype']}"
        )
    lines += [head, "-" * len(head)]
    for r in rows:
        spill = r["spill_stores"] + r["spill_loads"]
        smem = f"{r['shared_bytes'] / 1024:.1f}" + ("" if r["fits"] else "!")
        tc = r["tensor_cores"] if r["uses_dot"] else "-"
        lines.append(
            f"{r['layer']:<8} {r['kernel']:<17} {r['config']:<26} {r['programs']:>7} "
            f"{r['registers']:>4} {spill:>5} {smem:>7} {r['blocks_per_sm']:>3} {tc:<5} "
            f"{r['flops'] / 1e9:>8.2f} {r['min_bytes'] / 1e6:>8.1f} "
            f"{r['roofline_s'] * 1e6:>9.1f} {r['estimate_s'] * 1e6:>9.1f} {r['bound']}"
        )
    flops = sum(r["flops"] for r in rows if r["uses_dot"])
    lines.append("-" * len(head))
    lines.append(
        f"roofline bound (each kernel at its FLOP or byte roof, back to back): "
        f"{predicted_step_time(rows) * 1e3:.2f} ms for {flops / 1e12:.2f} TFLOP of GEMM work"
    )
    if rows:
        lines.append(
            f"estimate ({describe_estimate(rows[0]['target'])}): "
            f"{estimated_step_time(rows) * 1e3:.2f} ms"
        )
    if any(not r["fits"] for r in rows):
        lines.append("! does not fit this GPU's shared memory or registers: it cannot launch")
    return "\n".join(lines)
