"""bench/gpu_check.py cannot rot while no GPU is around: its --dry-run runs every section's
code on the CPU (Triton interpreter, toy sizes) on a Python without pytest, pyyaml,
safetensors, pillow, scipy or matplotlib; a failing unit is one row of the report; and its
plan compiles every launch ahead of time and keeps what does not fit off the GPU."""

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from vggspec.compiler.kernels.aot import plan_job

from bench.gpu_check import Check, main
from bench.gpu_plan import build_plan, recorded_launches, unit_launches
from bench.gpu_sections import dense_units, layer_units, spec_units, step_units
from bench.gpu_sweep import sweep_units
from bench.kernel_cases import CONV_CASES

ROOT = Path(__file__).resolve().parent.parent
# A bare GPU machine: torch (with what it installs), triton, numpy, and lark's wheel.
BARE = {"torch", "torchgen", "functorch", "triton", "numpy", "lark", "typing_extensions"}
BARE |= {"filelock", "fsspec", "jinja2", "markupsafe", "networkx", "sympy", "mpmath", "setuptools"}


def _bare_python(tmp_path) -> tuple[list[str], dict]:
    """A command and environment for a Python that sees only BARE: `python -S` (no
    site-packages, no .pth hooks, so no editable install of this project) with a folder of
    links to BARE's packages on PYTHONPATH; pytest, pyyaml, pillow, … are not there."""
    import os

    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "bare-site"
    farm.mkdir()
    for entry in site.iterdir():
        name = entry.name.split("-")[0].removesuffix(".py").removesuffix(".libs")
        if name in BARE:
            (farm / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    return [sys.executable, "-S"], {**env, "PYTHONPATH": str(farm)}


def test_the_bare_python_has_torch_triton_numpy_lark_only(tmp_path):
    python, env = _bare_python(tmp_path)
    code = (
        "import importlib.util as u, torch, triton, numpy, lark\n"
        "gone = ['pytest', 'yaml', 'safetensors', 'PIL', 'scipy', 'matplotlib', 'hypothesis']\n"
        "print([m for m in gone + ['vggspec'] if u.find_spec(m)])"
    )
    done = subprocess.run([*python, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


_COMPILE_ONE = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"  # as in a dry run: the compile runs in a fresh process
sys.path.insert(0, sys.argv[1])
from bench._tree import use_this_tree
use_this_tree(__import__("pathlib").Path(sys.argv[1]))
from vggspec.compiler.kernels.aot import compile_plan
from vggspec.compiler.kernels.splitk import splitk_sum_plan
print(compile_plan(splitk_sum_plan(1000, 3, "fp32"), "sm_90")["registers"])
"""


def test_the_plan_compiles_on_a_bare_python(tmp_path):
    """The plan's compiles run in fresh processes that find vggspec.compiler in the tree."""
    python, env = _bare_python(tmp_path)
    env["VGGSPEC_AOT_CACHE"] = str(tmp_path / "aot")  # empty: a real compile
    done = subprocess.run([*python, "-c", _COMPILE_ONE, str(ROOT)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip()) > 0 and len(list((tmp_path / "aot").glob("*.json"))) == 1


def test_dry_run_on_a_bare_python_survives_an_injected_failure(tmp_path):
    """Every measured section on a Python with only torch, triton, numpy and lark; one unit
    of the layers section raises, is reported with its section and unit, and the rest runs.
    (The plan section compiles: it has its own tests below; the full dry run is slow.)"""
    out = tmp_path / "out"
    python, env = _bare_python(tmp_path)
    done = subprocess.run(
        [
            *python, str(ROOT / "bench" / "gpu_check.py"), str(out), "--dry-run",
            "--only", "kernels", "layers", "step", "dense", "specs",
            "--specs", "demo.vgg", "--inject-failure", "layers",
        ],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]  # the injected failure, nothing else
    result = json.loads((out / "gpu_check.json").read_text())
    (failure,) = result["failures"]
    assert failure["section"] == "layers" and failure["unit"] == "conv1_1 fwd bf16"
    assert "InjectedFailure: injected into layers" in failure["error"]
    assert set(result["seconds"]) == {"kernels", "layers", "step", "dense", "specs"}
    families = {(r["family"], r["dtype"]) for r in result["kernels"]}
    assert {("conv wgrad", "bf16"), ("conv wgrad", "tf32"), ("max pool fwd+bwd", "tf32")} <= (
        families
    )
    assert all(r["ok"] for r in result["kernels"])
    # The first layer has no data gradient (its input is the image); its fwd bf16 failed.
    passes = {(r["layer"], r["kernel"], r["dtype"]) for r in result["layers"]}
    assert len(passes) == 2 * 5 - 1 and ("conv1_1", "fwd", "tf32") in passes
    # Without the plan section nothing is compiled: the roofline bound, and no estimate.
    assert all(r["roofline_tflops"] > 0 and r["estimate_tflops"] is None for r in result["layers"])
    assert [r["backend"] for r in result["step"]] == ["torch", "triton", "auto"]
    assert all(r["images_per_s"] > 0 for r in result["step"])
    assert [r["backend"] for r in result["dense"]] == ["torch", "triton"]
    assert [(r["spec"], r["backend"], r["ok"]) for r in result["specs"]] == [
        ("demo.vgg", "auto", True)
    ]
    assert result["autotune"]  # auto measured its calls
    table = (out / "gpu_check.md").read_text()
    assert table in done.stdout and "| layers | conv1_1 fwd bf16 | - | InjectedFailure" in table
    assert "| demo.vgg | 32x32 |" in table


def _args(tmp_path, **extra):
    fields = {"out": tmp_path, "dry_run": True, "target": None, "inject_failure": None}
    fields.update(specs=None, resume=False, only=["kernels"], plan=False)
    return argparse.Namespace(**{**fields, **extra})


def test_a_unit_the_plan_keeps_off_the_gpu_is_reported_not_run(tmp_path, one_thread):
    check = Check(_args(tmp_path), "cpu", tmp_path / "toy.vgg")
    units = check.units("kernels")
    kept_off = units[0]
    check.verdicts = {kept_off.id: {"launched": False, "why": "262144 B shared > 232448"}}
    ran = []
    kept_off.run = lambda: ran.append(kept_off) or []
    check.run_section("kernels")
    assert not ran and check.result["skipped"] == [
        {"section": "kernels", "unit": kept_off.name, "why": "262144 B shared > 232448"}
    ]
    assert len(check.result["kernels"]) == len(units) - 1 and not check.result["failures"]


def test_a_lost_cuda_context_continues_in_a_fresh_process(tmp_path, monkeypatch, one_thread):
    """A fault that leaves the CUDA context unusable: the report is written, the check
    starts again with --resume (os.execv), and the fresh process skips what is done,
    the faulting unit included. (No GPU here: the fault and the lost context are stand-ins.)"""
    import bench.gpu_check as gpu_check

    check = Check(_args(tmp_path), "cpu", tmp_path / "toy.vgg")
    first, second, *_ = check.units("kernels")
    check.device = "cuda"  # as on a GPU: the context is probed after a failure

    def fault():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    first.run = fault
    started = []
    monkeypatch.setattr(gpu_check, "cuda_context_alive", lambda: False)
    monkeypatch.setattr(gpu_check.sys, "argv", ["gpu_check.py", str(tmp_path), "--dry-run"])
    monkeypatch.setattr(gpu_check.os, "execv", lambda exe, argv: started.append(argv))
    check.result["kernels"] = []
    check.run_unit(first)
    assert started and started[0][-3:] == [str(tmp_path), "--dry-run", "--resume"]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["done"] == [first.id] and "illegal memory access" in saved["failures"][0]["error"]

    again = Check(_args(tmp_path, resume=True), "cpu", tmp_path / "toy.vgg")
    assert again.result["restarts"] == 1 and again.result["failures"] == saved["failures"]
    ran, units = [], again.units("kernels")[:2]
    for unit in units:
        unit.run = lambda unit=unit: ran.append(unit.id) or []
    monkeypatch.setattr(again, "units", lambda section: units)
    again.run_section("kernels")
    assert ran == [second.id]


def _wgrad_unit(config: str, dtype="tf32"):
    (unit,) = [
        u
        for u in sweep_units("cpu", dtype, 1)
        if u.section == "kernels" and u.name.startswith(f"conv wgrad {config} ")
    ]
    return unit


def test_the_plan_keeps_a_config_over_the_h100s_shared_memory_off(tmp_path):
    """Compiled for sm_90: the fp32 (TF32) 128×128×64 weight-gradient tile needs 256 KB of
    shared memory (the H100's per-block limit is 227 KB); the 64×64×32 tile fits."""
    big, small = _wgrad_unit("wgrad_128x128x64_w8_s3"), _wgrad_unit("wgrad_64x64x32_w4_s4")
    plan = build_plan([big, small], "sm_90")
    assert plan["limits"]["shared_per_block"] == 227 * 1024
    assert plan["units"][big.id]["launched"] is False
    assert "wgrad_128x128x64_w8_s3: 262144 B shared" in plan["units"][big.id]["why"]
    assert plan["units"][small.id] == {"launched": True, "why": ""}
    rows = {(r["unit"], r["kernel"]): r for r in plan["launches"]}
    # The forward kernel the weight gradient needs is in the plan too, at the case's shape.
    assert {k for u, k in rows if u == big.name} == {"conv_fwd", "conv_wgrad"}
    wgrad = rows[big.name, "conv_wgrad"]
    assert (wgrad["fits"], wgrad["launched"], wgrad["shared_bytes"]) == (False, False, 262144)
    assert wgrad["shape"]["C"] == CONV_CASES[0].c_in and wgrad["dtype"] == "tf32"
    assert all(r["registers"] > 0 for r in plan["launches"])
    assert not any(r["launched"] and not r["fits"] for r in plan["launches"])


def test_the_plan_records_what_the_units_launch(tmp_path, monkeypatch, one_thread):
    """What the check launches when it runs a unit (interpreter, CPU) is what the plan
    recorded for it on shape-only tensors: the same kernels, specialised the same way,
    auto's trials included (their output gradient is channels-last where the net's, after
    the last pool, is not; a spec whose last pool leaves more than 1x1 shows it)."""
    import bench.gpu_sections as sections

    only = ["kernels", "layers", "step", "dense", "specs"]
    (tmp_path / "toy.vgg").write_text("input 8x8 RGB\nconv3-4 conv3-4 maxpool\nFC-8 FC-5\n")
    specs = [ROOT / "specs" / "demo.vgg", tmp_path / "toy.vgg"]
    monkeypatch.setattr(sections, "spec_files", lambda: specs)
    check = Check(_args(tmp_path, only=only), "cpu", tmp_path / "toy.vgg")
    units = sweep_units("cpu", "tf32", 1, 1) + layer_units(check)[:3] + step_units(check)[1:3]
    units += dense_units(check)[1:] + spec_units(check)
    for unit in units:
        planned = {json.dumps(job, sort_keys=True) for _, job in unit_launches(unit)}
        with recorded_launches(observe_only=True) as seen:
            unit.run()
        launched = {json.dumps(plan_job(p), sort_keys=True) for p in seen}
        assert launched and launched <= planned, unit.id
        # auto measures a signature once per process: a later unit meeting it again
        # launches no trial (demo.vgg's and toy.vgg's 32x32 layers share some)
        auto = unit.section == "specs" or unit.name.endswith(" auto")
        assert launched == planned or (auto and unit.name == "toy.vgg"), unit.id


@pytest.mark.slow  # ~4 min on the 2-core machine with a cold compile cache
def test_the_full_dry_run_exits_0_and_runs_every_spec(tmp_path):
    assert main([str(tmp_path), "--dry-run"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(result["seconds"]) == {"plan", "kernels", "layers", "step", "dense", "specs"}
    assert not result["failures"]
    names = sorted(p.name for p in (ROOT / "specs").glob("*.vgg"))
    assert [(r["spec"], r["backend"], r["ok"]) for r in result["specs"]] == [
        (name, "auto", True) for name in names
    ]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["target"] == "sm_90" and not any(
        r["launched"] and not r["fits"] for r in plan["launches"]
    )
    skipped = {f"{r['section']}: {r['unit']}" for r in result["skipped"]}
    assert skipped == {u for u, v in plan["units"].items() if not v["launched"]}
    assert any("wgrad_128x128x64_w8_s3" in u and u.endswith("tf32") for u in skipped)


@pytest.mark.slow  # every launch of the full check compiled: minutes per target, cold
@pytest.mark.parametrize("target", ["sm_90", "sm_80"])
def test_the_full_check_plan_for_each_target(tmp_path, target, capsys):
    assert main([str(tmp_path), "--plan", "--target", target]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    rows = plan["launches"]
    assert {r["section"] for r in rows} == {"kernels", "layers", "step", "dense", "specs"}
    assert all(r["registers"] > 0 for r in rows)
    assert not any(r["launched"] and not r["fits"] for r in rows)
    limit = {"sm_90": 227 * 1024, "sm_80": 163 * 1024}[target]
    assert all(r["shared_bytes"] <= limit for r in rows if r["launched"])
    kept_off = {u for u, v in plan["units"].items() if not v["launched"]}
    # The offenders: the TF32 128×128×64 weight gradient, on both GPUs.
    assert any("conv wgrad wgrad_128x128x64_w8_s3" in u and u.endswith("tf32") for u in kept_off)
    # Production choices (layers, step, dense, specs) all fit.
    assert all(u.startswith("kernels: ") for u in kept_off)
    assert "kept off the GPU" in capsys.readouterr().out


_PLAIN_PYTHON = """
import sys
sys.path.append(sys.argv[2])  # site-packages, for torch and lark, without its .pth hooks
sys.path.insert(0, sys.argv[1] + "/bench")
import _tree
_tree.use_this_tree(__import__("pathlib").Path(sys.argv[1]))
import vggspec.compiler.lowering.autotune as m
print(m.__file__)
"""


def test_the_tree_runs_without_an_install():
    """python -S: no site-packages hooks, so no editable install; the tree must map itself."""
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", _PLAIN_PYTHON, str(ROOT), site],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == ROOT / "compiler" / "lowering" / "autotune.py"


def test_a_users_mistake_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    """A spec that is missing or does not parse, an OUT that is a file or lies under one,
    --specs naming a file not in specs/ (it ran no spec, and passed), and (without
    --dry-run or --plan) no CUDA: one line each (a spec's error as the
    compiler writes it: the line, then where), exit 2, before anything is compiled or
    written (not a traceback, nor a kernel sweep run before the spec is read)."""
    bad = tmp_path / "bad.vgg"
    bad.write_text("input 224x224 RGB\nconv3-64 blah\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    collapses = tmp_path / "collapses.vgg"
    collapses.write_text("input 8x8 RGB\nconv3-4 maxpool maxpool maxpool maxpool\nFC-5\n")
    cases = [
        ([str(tmp_path / "o0"), "--plan", "--spec", str(collapses)], "collapses.vgg"),
        ([str(tmp_path / "o1"), "--plan", "--spec", str(tmp_path / "nope.vgg")], "nope.vgg"),
        ([str(tmp_path / "o2"), "--plan", "--spec", str(bad)], "bad.vgg"),
        ([str(a_file), "--plan"], "a-file"),
        ([str(tmp_path / "o4"), "--dry-run", "--specs", "demo.vgg", "Z.vgg"], "Z.vgg"),
        ([str(a_file / "under"), "--plan"], "a-file"),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(tmp_path / "o3")], "no CUDA"))
    for argv, named in cases:
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        lines = (out + err).strip().splitlines()
        assert named in lines[0] and "Traceback" not in out + err, lines
        assert len(lines) == 1 or lines[1].lstrip().startswith("conv3-"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "bad.vgg", "collapses.vgg"]


def test_a_malformed_spec_in_specs_fails_its_own_unit_only(tmp_path, monkeypatch, one_thread):
    """A spec of specs/ that does not parse is one failed unit of the specs section: the
    plan is still made (it was the plan's and the section's set-up that failed, whole) and
    the other specs run."""
    import bench.gpu_sections as sections

    bad = tmp_path / "bad.vgg"
    bad.write_text("input 224x224 RGB\nconv3-64 blah\n")
    monkeypatch.setattr(sections, "spec_files", lambda: [ROOT / "specs" / "demo.vgg", bad])
    check = Check(_args(tmp_path, only=["specs"]), "cpu", tmp_path / "toy.vgg")
    units = check.units("specs")
    assert [u.name for u in units] == ["demo.vgg", "bad.vgg"]
    plan = build_plan(units[1:], "sm_90")  # the bad spec records nothing: no compile
    assert plan["units"]["specs: bad.vgg"] == {"launched": True, "why": ""}
    assert unit_launches(units[0])  # the good spec's launches are recorded
    row = {"spec": "demo.vgg", "input": "32x32", "measured": 0, "error": 0.0, "worst": "-"}
    row.update(tol=1e-3, ok=True)
    units[0].run = lambda: [row]
    monkeypatch.setattr(check, "units", lambda section: units)
    check.run_section("specs")
    (failure,) = check.result["failures"]
    assert failure["unit"] == "bad.vgg" and "unknown word 'blah'" in failure["error"]
    assert check.result["specs"] == [row]


def test_a_unit_whose_launches_cannot_be_recorded_is_failed_not_launched(tmp_path):
    """The plan records every unit on shape-only tensors; one that raises there is kept off
    the GPU (its kernels are unchecked) and counted as failed, and the plan is still made."""
    check = Check(_args(tmp_path), "cpu", tmp_path / "toy.vgg")
    unit = check.units("kernels")[0]

    def broken(where):
        raise RuntimeError("cannot run on meta")

    unit.triton = broken
    plan = build_plan([unit], "sm_90")
    assert plan["units"][unit.id]["launched"] is False and plan["units"][unit.id]["failed"]
    check.verdicts, ran = plan["units"], []
    unit.run = lambda: ran.append(unit) or []
    check.result["kernels"] = []
    check.run_unit(unit)
    assert not ran and "cannot run on meta" in check.result["failures"][0]["error"]
    assert not check.passed()


def test_a_report_write_cut_short_keeps_the_report_before(tmp_path, monkeypatch, one_thread):
    """gpu_check.json is rewritten after every unit: a write cut short (a full disk here; a
    kill is the same) leaves the report of the units before, not a torn file."""
    check = Check(_args(tmp_path), "cpu", tmp_path / "toy.vgg")
    check.result["kernels"] = []
    check.write()
    before = json.loads((tmp_path / "gpu_check.json").read_text())
    row = {"family": "conv fwd", "config": "c", "case": "x", "dtype": "bf16", "error": 0.0}
    check.result["kernels"].append({**row, "tol": 1e-2, "ok": True})
    written = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        written(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        check.write()
    monkeypatch.undo()
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md"]


def test_ctrl_c_is_one_line_and_keeps_the_report(tmp_path, monkeypatch, capsys):
    """Ctrl-C in a unit: one line naming it, exit 130 (as vggspec's), no traceback, and
    gpu_check.json holds the units done and says where it stopped."""
    import bench.gpu_check as gpu_check
    from bench.gpu_plan import Unit

    row = {"family": "f", "config": "c", "case": "x", "dtype": "bf16", "error": 0.0}
    row.update(tol=1e-2, ok=True)

    def ctrl_c():
        raise KeyboardInterrupt

    units = [
        Unit("kernels", "first", "bf16", triton=None, run=lambda: [row]),
        Unit("kernels", "second", "bf16", triton=None, run=ctrl_c),
        Unit("kernels", "third", "bf16", triton=None, run=lambda: [row]),
    ]
    monkeypatch.setattr(gpu_check, "sweep_units", lambda *args: units if args[1] == "bf16" else [])
    assert main([str(tmp_path), "--dry-run", "--only", "kernels"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"gpu-check: interrupted in kernels: second; the report so far: {tmp_path}"
    ]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["kernels"] == [row] and result["done"] == ["kernels: first"]
    assert result["interrupted"] == "in kernels: second"
    assert "Interrupted in kernels: second" in (tmp_path / "gpu_check.md").read_text()


def test_a_plan_made_for_sm_90_serves_an_h200(tmp_path):
    """`make gpu-plan` (sm_90 by default) carried to an H200: the same compiled kernels and
    limits, so the plan is reused, not compiled again on the GPU's time; an A100 compiles
    its own, and a plan.json that is not a plan is ignored, not a crash."""
    import triton
    from vggspec.compiler.kernels.version import kernels_version

    from bench.gpu_plan import read_plan, write_plan

    check = Check(_args(tmp_path), "cpu", tmp_path / "toy.vgg")
    units = check.units("kernels")[:2]
    plan = {"target": "sm_90", "kernels": kernels_version(), "triton": triton.__version__}
    plan.update(units={u.id: {"launched": True, "why": ""} for u in units}, launches=[])
    write_plan(plan, tmp_path)
    assert read_plan(tmp_path, "h200", units) == plan
    assert read_plan(tmp_path, "sm_90", units) == plan
    assert read_plan(tmp_path, "sm_80", units) is None
    assert read_plan(tmp_path, "sm_90", units[:1]) is None
    for junk in ("[]", '{"target": "sm_75"}', '{"target": "sm_90"}'):
        (tmp_path / "plan.json").write_text(junk)
        assert read_plan(tmp_path, "sm_90", units) is None


def test_the_report_names_the_unit_running(tmp_path, one_thread):
    """While a unit runs, gpu_check.json and .md name it (a kill -9, or a hang that ends
    with the GPU's lease, leaves a report saying where); once done, they no longer do."""
    check = Check(_args(tmp_path), "cpu", tmp_path / "toy.vgg")
    unit = check.units("kernels")[0]
    seen = []

    def run():
        seen.append(json.loads((tmp_path / "gpu_check.json").read_text()).get("running"))
        seen.append(f"Running {unit.id} when" in (tmp_path / "gpu_check.md").read_text())
        return []

    unit.run = run
    check.result["kernels"] = []
    check.run_unit(unit)
    assert seen == [unit.id, True]
    assert "running" not in json.loads((tmp_path / "gpu_check.json").read_text())


def test_make_gpu_check_runs_the_python_it_is_told(tmp_path):
    """README: `make gpu-check PYTHON=python3 …` on a machine with torch preinstalled. A
    tree carried with a .venv (of another machine: a CPU torch, or a dangling link) ran
    that instead of the PYTHON named; without PYTHON, the .venv is still preferred."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())

    def dry(*args):
        done = subprocess.run(["make", "-n", "gpu-check", "GPU_CHECK_OUT=o", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
        return done.stdout.split()

    assert "python3" in dry("PYTHON=python3", "LARK=lark.whl")
    assert ".venv/bin/python" in dry()


def test_a_gpu_not_in_the_table_is_said_to_be(tmp_path, monkeypatch, capsys):
    """An L4 (sm_89: 99 KB of shared memory per block) is planned and costed as the
    table's A100 (163 KB): the report and one warning line say so (no GPU here: the
    device queries are stand-ins). An H100 is in the table: nothing said."""
    from bench.gpu_report import markdown

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, capability, warned in [("NVIDIA L4", (8, 9), True), ("NVIDIA H100", (9, 0), False)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability: c)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, n=name: n)
        check = Check(_args(tmp_path), "cuda", tmp_path / "toy.vgg")
        said = check.result["not_in_table"]
        err = capsys.readouterr().err
        if warned:
            assert check.target == "sm_80" and said.startswith("NVIDIA L4 (sm_89) is not in")
            assert "A100" in said and said in err and said in markdown(check.result)
        else:
            assert check.target == "sm_90" and said is None and not err
