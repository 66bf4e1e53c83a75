"""One command for a CUDA machine: every kernel config, the conv layers, the training step,
dense evaluation and every spec, measured, each piece under its own guard.

    python bench/gpu_check.py OUT [--spec specs/D.vgg] [--only SECTION ...]
    python bench/gpu_check.py OUT --dry-run      # the same code on the CPU, toy sizes
    python bench/gpu_check.py OUT --plan [--target sm_90|h200|sm_80]    # no GPU needed

Sections, in order; every unit of each (one kernel config on one shape and dtype, one
layer's pass, one step, one spec) runs in its own guard, and gpu_check.json and .md are
written after each, so an error is one row of the report and a kill keeps what was done:
  plan     every kernel launch the check makes, recorded on shape-only tensors and compiled
           ahead of time for this GPU (OUT/plan.json); a unit with a kernel over the GPU's
           shared memory or registers is not launched, and the report says why;
  kernels  every kernel configuration against torch (the kernel tests' shapes, bf16 and
           TF32; tolerances in bench/gpu_sweep.py: bf16 1.5e-2, TF32 5e-3 of max|ref|,
           pooling exact);
  layers   per conv layer of the spec (D) at batch 64, bf16 and TF32: Triton fwd/dgrad/wgrad
           TFLOP/s against cuDNN (torch conv2d + ReLU, channels-last, cudnn.benchmark), with
           the ahead-of-time roofline bound and estimate beside each (the estimate needs
           the compiled kernels: only with the plan section);
  step     the training step (bf16 autocast, SGD as in the paper) at batch 64 and 128:
           images/s of the triton, torch and auto backends against the roofline bound and
           the estimate of the same step (see compiler/kernels/aot.py);
  dense    dense evaluation (the FC layers as convs) at Q = 384: images/s, both backends;
  specs    every spec of specs/ through auto against torch at its own size (training forward
           and backward, the dense twin's prediction; fp32 without TF32, so that a wrong
           kernel stands out from rounding), each ok or not;
  and the peak GPU memory of each case. Not yet timed on a GPU (the plan's compiles: 8.6 min
  on a shared 2-core CPU, none when a plan made beforehand is carried along; the estimates
  of the layers and step sections compile D's 51 training kernels into this machine's
  compile cache, which the plan does not carry).

An error a unit raises (out of resources, a device-side assert or an illegal address seen at
the synchronisation that ends every unit, out of memory) is recorded with its section, unit,
config and message, and the next unit runs. A fault that leaves the CUDA context unusable
restarts the check in a fresh process (--resume), which skips the units already done. The
exit status is 0 only when every unit ran and passed (units the plan keeps off the GPU are
reported, not failed).

On a GPU machine with Python 3.12, torch >= 2.11 and triton >= 3.6 preinstalled and no
network, nothing needs installing: carry this tree and lark's wheel (pure Python, imported
straight from the .whl), and run from the tree's root

    PYTHONPATH=lark-1.3.1-py3-none-any.whl python3 bench/gpu_check.py /tmp/gpu-check

(bench/_tree.py maps vggspec.compiler / vggspec.runtime onto the tree's folders). Nothing
here imports pytest, tests/, pyyaml, safetensors, pillow, scipy or matplotlib; numpy only for
the dry run (Triton's interpreter). A plan made beforehand on any machine with
`--plan OUT --target T` is reused when OUT is carried along.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._tree import use_this_tree  # noqa: E402

use_this_tree(ROOT)

import torch  # noqa: E402

# Without a GPU the kernels run in Triton's interpreter, chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
from vggspec.compiler import compile_spec, load_spec  # noqa: E402
from vggspec.compiler.errors import VggspecError  # noqa: E402
from vggspec.compiler.lowering.autotune import (  # noqa: E402
    Autotuner,
    stand_in_timer,
    wall_clock_ms,
)
from vggspec.compiler.lowering.autotune_cache import DecisionCache  # noqa: E402
from vggspec.compiler.targets import GPUS  # noqa: E402
from vggspec.runtime.io.atomic import atomic_write, cannot_create_in  # noqa: E402

from bench.gpu_plan import build_plan, read_plan, write_plan  # noqa: E402
from bench.gpu_report import markdown  # noqa: E402
from bench.gpu_sections import dense_units, layer_units, spec_units, step_units  # noqa: E402
from bench.gpu_sweep import sweep_units  # noqa: E402
from bench.toy_specs import spec_files  # noqa: E402

SECTIONS = ("plan", "kernels", "layers", "step", "dense", "specs")
# Toy net for --dry-run's layers, step and dense sections: every op kind D has, at 8×8.
TOY_SPEC = "input 8x8 RGB\nconv3-4 conv3-4 maxpool\nFC-8 FC-5 soft-max\n"
# A CUDA context that faulted is lost for the process: at most this many fresh starts.
MAX_RESTARTS = 3


class Sizes:
    """What each section runs at: the real check, or toy sizes for --dry-run."""

    def __init__(self, dry: bool):
        self.dtypes = ("bf16", "tf32")  # the sweep's
        self.layer_dtypes = ("bf16", "tf32")
        self.sweep_cases = 1 if dry else 2
        self.sweep_configs = 1 if dry else None  # all
        self.layer_batch = 1 if dry else 64
        self.layers = 2 if dry else None  # all
        self.step_batches = (2,) if dry else (64, 128)
        self.steps, self.warmup = (1, 0) if dry else (10, 3)
        self.dense_q, self.dense_batch = (12, 1) if dry else (384, 32)


def device_target(device: str) -> str:
    """The GPU table's entry for this device: sm_80 (A100), h200, or sm_90 (H100, and the
    default without a GPU)."""
    if device != "cuda" or not torch.cuda.is_available():
        return "sm_90"
    if torch.cuda.get_device_capability()[0] == 8:
        return "sm_80"
    return "h200" if "H200" in torch.cuda.get_device_name() else "sm_90"


def not_in_table(device: str) -> str | None:
    """What the report says of a GPU that is not one of the table's (an A10, an L4, an
    RTX card, a B200: other shared memory per block and SMs), or None."""
    if device != "cuda" or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) in ((8, 0), (9, 0)):
        return None
    return f"{torch.cuda.get_device_name()} (sm_{major}{minor}) is not in the GPU table"


class InjectedFailure(RuntimeError):
    """--inject-failure: the first unit of a section raises this, to prove the guard."""


class Check:
    """The sections' units, their guards, and the report written after every unit."""

    def __init__(self, args, device: str, spec: Path):
        self.out, self.dry_run, self.device, self.spec = args.out, args.dry_run, device, spec
        self.args = args
        self.target = args.target or device_target(device)
        self.sizes = Sizes(args.dry_run)
        timer = stand_in_timer("triton") if args.dry_run else wall_clock_ms(5)
        self.tuner = Autotuner(DecisionCache(args.out / "autotune.json"), timer)
        self.inject = set(args.inject_failure or ())
        self.spec_names = set(args.specs or ())
        self.verdicts = None  # unit id → {"launched", "why"} once the plan is made
        self.planned = False  # the plan compiled every kernel: estimates can be read
        self.current = None  # the unit running (for Ctrl-C's line)
        self.result = self._start(args.resume)

    def _start(self, resume: bool) -> dict:
        path = self.out / "gpu_check.json"
        if resume and path.exists():
            result = json.loads(path.read_text())
            result["restarts"] = result.get("restarts", 0) + 1
            return result
        on_gpu = self.device == "cuda" and torch.cuda.is_available()
        gpu = torch.cuda.get_device_name() if on_gpu else platform.processor()
        spec = GPUS[self.target]
        other = not_in_table(self.device)
        if other:
            other += (
                f": the plan's limits and the roofline are {self.target}'s ({spec.name}); a "
                "kernel over this GPU's own limits fails in its guard"
            )
            print(f"gpu-check: warning: {other}", file=sys.stderr, flush=True)
        return {
            "dry_run": self.dry_run,
            "not_in_table": other,
            "environment": {
                "gpu": gpu or "cpu",
                "torch": torch.__version__,
                "triton": triton.__version__,
                "python": platform.python_version(),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "roofline_target": f"{self.target} ({spec.name}, {spec.bandwidth / 1e12:.2f} TB/s)",
                "spec": str(self.spec),
            },
            "seconds": {},
            "failures": [],
            "skipped": [],
            "done": [],
            "restarts": 0,
        }

    # -- units ---------------------------------------------------------------------------

    def units(self, section: str) -> list:
        if section == "kernels":
            s = self.sizes
            return [
                u
                for dtype in s.dtypes
                for u in sweep_units(self.device, dtype, s.sweep_cases, s.sweep_configs)
            ]
        return {
            "layers": layer_units,
            "step": step_units,
            "dense": dense_units,
            "specs": spec_units,
        }[section](self)

    def measured_sections(self) -> list[str]:
        return [s for s in SECTIONS if s != "plan" and s in self.args.only]

    # -- running -------------------------------------------------------------------------

    def run(self) -> int:
        for section in SECTIONS:
            if section in self.args.only:
                print(f"gpu-check: {section} …", flush=True)
                start = time.perf_counter()
                self.run_section(section)
                seconds = self.result["seconds"]
                seconds[section] = seconds.get(section, 0.0) + time.perf_counter() - start
                self.write()
        print(self.write(), end="")
        return 0 if self.passed() else 1

    def run_section(self, section: str) -> None:
        try:
            if section == "plan":
                self.make_plan()
                return
            units = self.units(section)
        except Exception as err:  # the section could not even be set up
            self.fail(section, "(setting up the section)", "-", err)
            return
        self.result.setdefault(section, [])
        for unit in units:
            if unit.id not in self.result["done"]:
                self.run_unit(unit)

    def make_plan(self) -> None:
        self.current = "plan"
        self._guard_injected("plan", "plan")
        units = [u for section in self.measured_sections() for u in self.units(section)]
        plan = read_plan(self.out, self.target, units)
        if plan is None:
            plan = build_plan(units, self.target)
            write_plan(plan, self.out)
        self.verdicts = plan["units"]
        self.planned = True
        launches = plan["launches"]
        self.result["plan"] = {
            "target": plan["target"],
            "gpu": plan["gpu"],
            "launches": len(launches),
            "distinct kernels": len({json.dumps(r["shape"]) + r["kernel"] for r in launches}),
            "unfit": sum(not r["fits"] for r in launches),
            "units kept off": sum(not v["launched"] for v in plan["units"].values()),
            "file": str(self.out / "plan.json"),
        }

    def run_unit(self, unit) -> None:
        self.current = unit.id
        verdict = (self.verdicts or {}).get(unit.id)
        if verdict is not None and verdict.get("failed"):  # its launches could not be known
            self.fail(unit.section, unit.name, unit.config, RuntimeError(verdict["why"]))
        elif verdict is not None and not verdict["launched"]:
            self.result["skipped"].append(
                {"section": unit.section, "unit": unit.name, "why": verdict["why"]}
            )
        else:
            # On disk while it runs: a kill -9, or a hang the GPU's lease ends, names it.
            self.result["running"] = unit.id
            self.write()
            try:
                self._guard_injected(unit.section, unit.name)
                rows = unit.run()
                self.synchronize()  # an asynchronous fault surfaces here, inside the guard
                self.result[unit.section] += rows
            except Exception as err:
                del self.result["running"]
                self.fail(unit.section, unit.name, unit.config, err)
                self.result["done"].append(unit.id)  # a fresh process does not retry it
                if self.device == "cuda" and not cuda_context_alive():
                    self.restart()
                self.write()
                return
        self.result.pop("running", None)
        self.result["done"].append(unit.id)
        self.write()

    def _guard_injected(self, section: str, name: str) -> None:
        if section in self.inject:
            self.inject.discard(section)
            raise InjectedFailure(f"injected into {section} ({name}) by --inject-failure")

    def fail(self, section: str, unit: str, config: str, err: BaseException) -> None:
        message = f"{type(err).__name__}: {err}".strip().splitlines()[0][:500]
        print(f"gpu-check: {section}: {unit}: {message}", file=sys.stderr, flush=True)
        self.result["failures"].append(
            {"section": section, "unit": unit, "config": config, "error": message}
        )
        if self.device == "cuda":
            with contextlib.suppress(Exception):  # a lost context raises here too
                torch.cuda.empty_cache()

    def interrupted(self) -> str:
        """Ctrl-C: the report says where it stopped (the units done are in it already)."""
        where = f"in {self.current}" if self.current else "before the first unit"
        self.result["interrupted"] = where
        self.result.pop("running", None)
        with contextlib.suppress(OSError):
            self.write()
        return where

    def restart(self) -> None:
        """The CUDA context is lost: go on in a fresh process that skips what is done."""
        self.write()
        if self.result["restarts"] >= MAX_RESTARTS:
            raise SystemExit(f"gpu-check: CUDA context lost {MAX_RESTARTS + 1} times; stopping")
        argv = [a for a in sys.argv[1:] if a != "--resume"]
        print("gpu-check: the CUDA context is lost; continuing in a fresh process", flush=True)
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv, "--resume"])

    def passed(self) -> bool:
        rows = self.result.get("kernels", []) + self.result.get("specs", [])
        return not self.result["failures"] and all(r["ok"] for r in rows)

    # -- device helpers ------------------------------------------------------------------

    def time_ms(self, fn) -> float:
        """Median milliseconds of `fn` (CUDA events, L2 flushed; one wall-clock run on the CPU)."""
        if self.device == "cuda":
            import triton.testing

            return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device == "cuda" else None

    def reset_peak(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def write(self) -> str:
        """Both files, each replaced whole: a kill or a full disk while writing leaves the
        report of the units before (the json is rewritten after every unit)."""
        self.result["autotune"] = dict(self.tuner.chosen)
        text = markdown(self.result)
        report = json.dumps(self.result, indent=1) + "\n"
        atomic_write(self.out / "gpu_check.json", lambda tmp: Path(tmp).write_text(report))
        atomic_write(self.out / "gpu_check.md", lambda tmp: Path(tmp).write_text(text))
        return text


def cuda_context_alive() -> bool:
    try:
        torch.cuda.synchronize()
        return torch.ones(1, device="cuda").add_(1).item() == 2.0
    except Exception:
        return False


def plan_only(args, spec: Path) -> int:
    """--plan: no GPU needed; OUT/plan.json for the full check (or the dry run's)."""
    check = Check(args, "cpu" if args.dry_run else "cuda", spec)
    units = [u for section in check.measured_sections() for u in check.units(section)]
    plan = build_plan(units, check.target)
    path = write_plan(plan, args.out)
    rows = plan["launches"]
    launched = [r for r in rows if r["launched"]]
    print(
        f"{path}: {len(rows)} launches for {plan['target']} ({plan['gpu']}), "
        f"{sum(not r['fits'] for r in rows)} do not fit, {len(launched)} launched"
    )
    for unit, verdict in plan["units"].items():
        if not verdict["launched"]:
            print(f"  kept off the GPU: {unit}: {verdict['why']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json, .md and plan.json")
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "D.vgg")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, toy sizes")
    parser.add_argument(
        "--plan", action="store_true", help="only write OUT/plan.json (compiles; no GPU needed)"
    )
    parser.add_argument("--target", choices=sorted(GPUS), help="the plan's GPU (default: this one)")
    parser.add_argument(
        "--inject-failure",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help="make the first unit of each SECTION raise (to prove the guards)",
    )
    parser.add_argument(
        "--specs", nargs="+", metavar="NAME", help="the specs section runs these (A.vgg …) only"
    )
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # A user's mistake is one line and exit 2, found before anything is compiled or written.
    if not (args.dry_run or args.plan or torch.cuda.is_available()):
        print("bench/gpu_check.py: no CUDA device here (use --dry-run or --plan on the CPU).")
        return 2
    if not args.dry_run:
        try:
            compile_spec(load_spec(args.spec))  # parsed and its shapes checked
        except VggspecError as err:
            print(err, file=sys.stderr)  # "file:line:col: error: …", as vggspec compile
            return 2
    unknown = sorted(set(args.specs or ()) - {path.name for path in spec_files()})
    if unknown:
        print(f"gpu-check: error: --specs: not in specs/: {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        why = cannot_create_in(args.out)
    except OSError as err:
        why = err.strerror or type(err).__name__
    if why:
        print(f"gpu-check: error: cannot write the report in {args.out}: {why}", file=sys.stderr)
        return 2
    spec = args.spec
    if args.dry_run:
        spec = args.out / "toy.vgg"
        spec.write_text(TOY_SPEC)
    # cuDNN as a user would run it: autotuned algorithms, TF32 allowed for fp32 (the
    # Triton kernels follow the same flags, so the plan records them as they will run).
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    check = None
    try:
        if args.plan:
            return plan_only(args, spec)
        check = Check(args, "cpu" if args.dry_run else "cuda", spec)
        return check.run()
    except KeyboardInterrupt:
        if check is None:  # --plan: no plan written; the compiles done are cached
            print("gpu-check: interrupted while planning; no plan written", file=sys.stderr)
        else:
            where = check.interrupted()
            print(f"gpu-check: interrupted {where}; the report so far: {args.out}", file=sys.stderr)
        return 130
    except OSError as err:  # the report or the plan could not be written (a full disk)
        print(f"gpu-check: error: {err} (the last whole report is kept)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
