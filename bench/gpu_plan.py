"""The kernel launches a gpu-check makes, recorded on shape-only tensors and compiled: plan.json.

Each unit of the check (one kernel config on one shape and dtype, one layer's pass, one
training step, one spec, …) runs its Triton side on "meta" tensors, where torch runs only
the host code: every KernelPlan it would launch is recorded instead (plan.LAUNCH_OBSERVER).
Each distinct launch is compiled ahead of time for the target (compiler/kernels/aot.py,
cached on disk), and a unit is launched only if every kernel it launches fits the target's
shared memory and registers.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vggspec.compiler.kernels import plan as plans
from vggspec.compiler.kernels.aot import compile_jobs, fits, plan_job
from vggspec.compiler.kernels.plan import Ptr
from vggspec.compiler.kernels.version import kernels_version
from vggspec.compiler.targets import GPUS
from vggspec.runtime.io.atomic import atomic_write


@dataclass
class Unit:
    """One guarded piece of the check. `triton(device)` runs its Triton side on `device`
    (on "meta": host code only, for the plan); `run()` measures it on the check's device
    and returns its report rows."""

    section: str
    name: str
    dtype: str
    triton: object
    run: object
    config: str = "-"
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.section}: {self.name}"


@contextmanager
def recorded_launches(observe_only: bool = False):
    """Every KernelPlan launched inside, in order; none of them runs (with `observe_only`,
    each runs as well)."""
    seen = []

    def record(plan) -> bool:
        seen.append(plan)
        return not observe_only

    before, plans.LAUNCH_OBSERVER = plans.LAUNCH_OBSERVER, record
    try:
        yield seen
    finally:
        plans.LAUNCH_OBSERVER = before


def unit_launches(unit: Unit) -> list:
    """The distinct kernel launches of a unit's Triton side, by compile job, in order."""
    with recorded_launches() as seen:
        unit.triton("meta")
    distinct = {}
    for plan in seen:
        job = plan_job(plan)
        distinct.setdefault(json.dumps([job, plan.grid], sort_keys=True), (plan, job))
    return list(distinct.values())


def _shape(plan) -> dict:
    """The sizes and strides a launch passes (its pointers left out), and its grid."""
    sizes = {k: v for k, v in plan.args.items() if not isinstance(v, Ptr)}
    return {**sizes, "grid": list(plan.grid)}


def build_plan(units: list[Unit], target: str, workers: int | None = None) -> dict:
    """plan.json's content: every launch of every unit, compiled for `target`, whether it
    fits, and whether the check launches it (its unit fits whole)."""
    gpu = GPUS[target]
    recorded, unrecorded = [], {}
    for unit in units:
        try:
            recorded.append((unit, unit_launches(unit)))
        except Exception as err:  # kept off (unchecked) and failed, the others planned
            unrecorded[unit.id] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    jobs = [job for _, launches in recorded for _, job in launches]
    figures = iter(compile_jobs(jobs, target, workers))
    rows, verdicts = [], {}
    for unit, launches in recorded:
        unit_rows = []
        for plan, _ in launches:
            res = next(figures)
            unit_rows.append(
                {
                    "section": unit.section,
                    "unit": unit.name,
                    "kernel": plan.kind,
                    "config": getattr(plan.config, "name", "-"),
                    "dtype": unit.dtype,
                    "shape": _shape(plan),
                    "num_warps": plan.num_warps,
                    "num_stages": plan.num_stages,
                    "shared_bytes": res["shared_bytes"],
                    "registers": res["registers"],
                    "spills": res["spill_stores"] + res["spill_loads"],
                    "fits": fits(res, plan.num_warps, gpu),
                }
            )
        launched = all(r["fits"] for r in unit_rows)
        for r in unit_rows:
            r["launched"] = launched
        unfit = [r for r in unit_rows if not r["fits"]]
        verdicts[unit.id] = {
            "launched": launched,
            "why": "; ".join(
                f"{r['kernel']} {r['config']}: {r['shared_bytes']} B shared, "
                f"{r['registers']} registers x {32 * r['num_warps']} threads "
                f"(limits {gpu.shared_per_block} B, {gpu.registers_per_sm})"
                for r in unfit
            ),
        }
        rows += unit_rows
    for unit_id, error in unrecorded.items():
        verdicts[unit_id] = {"launched": False, "why": f"not recorded: {error}", "failed": True}
    import triton

    return {
        "target": target,
        "gpu": gpu.name,
        "limits": {"shared_per_block": gpu.shared_per_block, "registers": gpu.registers_per_sm},
        "triton": triton.__version__,
        "kernels": kernels_version(),
        "launches": rows,
        "units": verdicts,
    }


def write_plan(plan: dict, out: Path) -> Path:
    path, text = out / "plan.json", json.dumps(plan, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def _compiled_alike(target: str) -> tuple:
    """What a plan's figures and verdicts depend on: the compile target and the limits
    (sm_90's plan serves an H200, which differs only in bandwidth)."""
    gpu = GPUS[target]
    return gpu.capability, gpu.shared_per_block, gpu.registers_per_sm


def read_plan(out: Path, target: str, units: list[Unit]) -> dict | None:
    """OUT/plan.json when it was made for `target` (or a GPU compiled and limited alike)
    and these units with these kernels and this triton (a plan prepared on another machine
    with `--plan` is reused), else None."""
    import triton

    try:
        plan = json.loads((out / "plan.json").read_text())
        made_for = _compiled_alike(plan["target"])
        same = (made_for, plan["kernels"], plan["triton"])
        ids = set(plan["units"])
    except (OSError, ValueError, KeyError, TypeError):  # none, torn, or not a plan
        return None
    if same != (_compiled_alike(target), kernels_version(), triton.__version__):
        return None
    return plan if ids == {unit.id for unit in units} else None
